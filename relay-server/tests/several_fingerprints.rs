//! RFC 8122 lets an offer name its one DTLS certificate under several hash algorithms,
//! as aiortc does (sha-256, sha-384 and sha-512). Over real WebRTC to a real relay, such
//! a volunteer proves its hello and computes; an offer naming two certificates is refused
//! with a 422 when its text shows it (two fingerprints under one algorithm, or one the
//! relay cannot check), and otherwise (one certificate's sha-256 beside another's
//! sha-384) once the handshake shows which certificate is presented, before its hello is
//! read.

mod common;

use common::attacker::post_offer;
use common::loopback::{compute_one, hello, receive, refusal, relay, send};
use common::TempDir;
use starling_kernels::NamedInputs;
use starling_protocol::{ChannelBinding, ToVolunteer, WalletKey};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(15);
/// Largest message a test reads from the relay.
const RECEIVE_LIMIT: usize = 1 << 20;
/// Stands for a certificate other than the one the volunteer presents.
const OTHER_CERTIFICATE: &[u8] = b"the DER of a middleman's certificate";

/// `sdp` naming `der` also under each of `algorithms`, after its fingerprint line.
fn with_fingerprints(sdp: &str, der: &[u8], algorithms: &[&str]) -> String {
    starling_protocol::with_fingerprints(sdp, der, algorithms, false).expect("a fingerprint line")
}

fn signal_url(url: &str) -> String {
    format!("{url}/api/v1/rtc/offer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_certificate_under_three_algorithms_proves_its_hello_and_computes() -> anyhow::Result<()>
{
    let dir = TempDir::new("several-fingerprints");
    let (url, scheduler) = relay(&dir, PATIENCE).await?;
    let storage = scheduler.storage().clone();
    let job = scheduler
        .submit(
            "montecarlo",
            serde_json::json!({"samples": 1000, "seed": 5}),
            &NamedInputs::new(),
            Some(1),
            None,
            None,
        )
        .await?;
    let key = WalletKey::from_seed([3; 32]);
    let mut link =
        starling_webrtc_native::connect_rewriting_offer(&signal_url(&url), |offer, der| {
            with_fingerprints(&offer, der, &["sha-384", "sha-512"])
        })
        .await?;
    let offer = &link.descriptions().offer;
    assert_eq!(offer.matches("a=fingerprint:").count(), 3, "{offer}");
    // Both ends sign the sha-256 fingerprint, as for an offer naming only that one.
    let binding = ChannelBinding::from_descriptions(offer, &link.descriptions().answer)?;
    assert_eq!(binding.volunteer.algorithm(), "sha-256");

    send(&link, &hello(&key, &binding, "aiortc-like/0".into())).await?;
    assert!(matches!(
        receive(&mut link, RECEIVE_LIMIT).await?,
        ToVolunteer::Welcome { .. }
    ));
    compute_one(&mut link, RECEIVE_LIMIT).await?;
    link.close().await;
    let units = storage.audit_units(job).await?;
    assert_eq!(units[0].result_wallets, vec![key.address().to_string()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_naming_two_certificates_is_never_served() -> anyhow::Result<()> {
    let dir = TempDir::new("two-certificates");
    let (url, scheduler) = relay(&dir, PATIENCE).await?;
    let storage = scheduler.storage().clone();

    // Seen in the text: two sha-256 fingerprints, or one under an algorithm no one here
    // can check. Refused before any ICE or DTLS work.
    let offer = starling_webrtc_native::make_offer([127, 0, 0, 1].into()).await?;
    let two_sha256 = with_fingerprints(&offer, OTHER_CERTIFICATE, &["sha-256"]);
    let (status, body) = post_offer(&url, &two_sha256).await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("/problems/invalid-value") && body.contains("more than one DTLS certificate"),
        "{body}"
    );
    let sha1 = offer.replacen(
        "a=fingerprint:",
        "a=fingerprint:sha-1 AB:CD\r\na=fingerprint:",
        1,
    );
    let (status, body) = post_offer(&url, &sha1).await?;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("sha-1"), "{body}");

    // Seen only at the handshake: the volunteer's certificate's sha-256 beside another's
    // sha-384. The stack checks the sha-256 one and opens the channel; the relay checks
    // the rest and refuses the peer, saying why, before reading its hello.
    let key = WalletKey::from_seed([4; 32]);
    let mut link =
        starling_webrtc_native::connect_rewriting_offer(&signal_url(&url), |offer, _| {
            with_fingerprints(&offer, OTHER_CERTIFICATE, &["sha-384"])
        })
        .await?;
    let d = link.descriptions();
    let binding = ChannelBinding::from_descriptions(&d.offer, &d.answer)?;
    // The relay need not wait for it: its refusal may close the channel before the hello
    // is sent, and then the send fails, which is the relay doing its job.
    let _ = send(&link, &hello(&key, &binding, "two-certificates/0".into())).await;
    let reason = refusal(&mut link, RECEIVE_LIMIT).await?;
    assert!(
        reason.contains("certificate") && reason.contains("sha-384"),
        "{reason}"
    );
    assert_eq!(
        tokio::time::timeout(PATIENCE, link.recv()).await?,
        None,
        "the relay closes the connection"
    );
    assert!(storage.wallet(&key.address()).await?.is_none());
    Ok(())
}
