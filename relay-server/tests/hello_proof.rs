//! A volunteer proves its wallet once per connection: its hello signs the connection's
//! two DTLS certificate fingerprints. Over real WebRTC to a real relay, a hello signed by
//! another key, or for another connection, or in an old protocol version, is refused
//! with a clear reason and leaves no trace; a proper one is welcomed, and its results
//! count for its wallet without any signature of their own.

mod common;

use common::loopback::{compute_one, connect, receive, refusal, relay, send};
use common::TempDir;
use starling_kernels::NamedInputs;
use starling_protocol::{
    encode, Chunker, DeviceInfo, Signature, ToRelay, ToVolunteer, WalletAddress, WalletKey,
    PROTOCOL_VERSION,
};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(15);
/// Largest message a test reads from the relay.
const RECEIVE_LIMIT: usize = 1 << 20;

fn hello(wallet: WalletAddress, proof: Signature) -> ToRelay {
    ToRelay::Hello {
        version: PROTOCOL_VERSION,
        client: "test/0".into(),
        device: DeviceInfo {
            adapter: "CPU".into(),
            backend: "cpu".into(),
            fallback: true,
        },
        wallet,
        site: None,
        proof,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_must_prove_the_wallet_for_this_very_connection() -> anyhow::Result<()> {
    let dir = TempDir::new("hello-proof");
    let (url, scheduler) = relay(&dir, PATIENCE).await?;
    let storage = scheduler.storage().clone();
    let job = scheduler
        .submit(
            "montecarlo",
            serde_json::json!({"samples": 1000, "seed": 3}),
            &NamedInputs::new(),
            Some(1),
            None,
            None,
        )
        .await?;
    let honest = WalletKey::from_seed([1; 32]);
    let thief = WalletKey::from_seed([2; 32]);

    // Another key's signature over this connection, claiming the honest wallet.
    let (mut link, binding) = connect(&url).await?;
    send(
        &link,
        &hello(honest.address(), thief.sign_channel(&binding)),
    )
    .await?;
    let reason = refusal(&mut link, RECEIVE_LIMIT).await?;
    assert!(
        reason.contains("proof") && reason.contains(&honest.address().to_string()),
        "{reason}"
    );
    link.close().await;

    // The honest wallet's real proof, for an earlier connection, replayed on a new one
    // (what a relay in the middle would forward).
    let (mut link, _) = connect(&url).await?;
    send(
        &link,
        &hello(honest.address(), honest.sign_channel(&binding)),
    )
    .await?;
    let reason = refusal(&mut link, RECEIVE_LIMIT).await?;
    assert!(reason.contains("proof"), "{reason}");
    link.close().await;

    // A hello in the previous protocol version: refused, naming both versions.
    let (mut link, binding) = connect(&url).await?;
    let mut old = encode(&hello(honest.address(), honest.sign_channel(&binding)));
    old[2..4].copy_from_slice(&(PROTOCOL_VERSION - 1).to_be_bytes());
    for frame in Chunker::frames(&old) {
        link.send(frame).await?;
    }
    let reason = refusal(&mut link, RECEIVE_LIMIT).await?;
    assert!(
        reason.contains(&format!("version {}", PROTOCOL_VERSION - 1))
            && reason.contains(&format!("version {PROTOCOL_VERSION}")),
        "{reason}"
    );
    link.close().await;

    // None of that reached the database.
    for wallet in [honest.address(), thief.address()] {
        assert!(storage.wallet(&wallet).await?.is_none(), "{wallet} stored");
    }
    assert!(storage.audit_units(job).await?[0].result_wallets.is_empty());

    // A proper hello: welcomed, given work, and its unsigned result counts for it.
    let (mut link, binding) = connect(&url).await?;
    send(
        &link,
        &hello(honest.address(), honest.sign_channel(&binding)),
    )
    .await?;
    assert!(matches!(
        receive(&mut link, RECEIVE_LIMIT).await?,
        ToVolunteer::Welcome {
            version: PROTOCOL_VERSION
        }
    ));
    compute_one(&mut link, RECEIVE_LIMIT).await?;
    link.close().await;
    let units = storage.audit_units(job).await?;
    assert_eq!(units[0].result_wallets, vec![honest.address().to_string()]);
    Ok(())
}
