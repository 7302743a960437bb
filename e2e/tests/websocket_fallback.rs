//! The WebSocket fallback end to end: volunteers that cannot use WebRTC reach the relay
//! over `/api/v1/ws` and work exactly like the others. On a quorum-2 job one native
//! volunteer on WebRTC and one on the WebSocket compute every unit, agree, and are both
//! paid; the result is the CPU reference's; each says which transport it used.

use starling_e2e::{MatmulJob, Relay, TempDir, Volunteer};
use starling_protocol::WalletKey;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webrtc_and_a_websocket_volunteer_agree_on_a_quorum_and_are_both_paid(
) -> anyhow::Result<()> {
    let data = TempDir::new("ws-mixed")?;
    let relay = Relay::start_with(data.path(), 1, &["--price-per-gflop", "1"])?;
    let api = relay.api();
    let mut volunteers = Vec::new();
    let mut wallets = Vec::new();
    let mut logs = Vec::new();
    for transport in ["webrtc", "websocket"] {
        let key = WalletKey::from_seed(rand::random());
        let file = data.path().join(format!("wallet-{transport}.key"));
        std::fs::write(&file, key.to_hex())?;
        let log = data.path().join(format!("volunteer-{transport}.log"));
        volunteers.push(Volunteer::start_logged(
            &relay.url(),
            &[
                "--cpu",
                "--transport",
                transport,
                "--key-file",
                &file.display().to_string(),
            ],
            &log,
        )?);
        wallets.push(key.address().to_string());
        logs.push(log);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.stats().await?.volunteers < 2 {
        anyhow::ensure!(Instant::now() < deadline, "volunteers did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = MatmulJob::random(256, 64, 64, 11);
    let id = api.submit_with_quorum(&job.body, 2).await?;
    api.wait_done(&id, Duration::from_secs(120)).await?;
    job.check(&api.result(&id).await?.1)?;

    // Every unit was settled by both: one replica per transport.
    let units = api.units(&id).await?;
    assert!(!units.is_empty());
    for unit in &units {
        for wallet in &wallets {
            assert!(
                unit.valid_wallets.contains(wallet),
                "unit {} lacks {wallet}: {:?}",
                unit.index,
                unit.valid_wallets
            );
        }
    }
    // Both are paid, in the ledger and by a signed receipt on their own transport.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (wallet, log) in wallets.iter().zip(&logs) {
        loop {
            let paid = api.wallet(wallet).await?.balance_micro > 0;
            let text = std::fs::read_to_string(log)?;
            if paid && text.contains("signed receipt") {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{wallet} was not paid (paid in the ledger: {paid}); its log:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let webrtc_log = std::fs::read_to_string(&logs[0])?;
    let websocket_log = std::fs::read_to_string(&logs[1])?;
    assert!(
        webrtc_log.contains("WebRTC (direct)") && !webrtc_log.contains("WebSocket fallback"),
        "{webrtc_log}"
    );
    assert!(
        websocket_log.contains("WebSocket fallback") && !websocket_log.contains("WebRTC"),
        "{websocket_log}"
    );
    drop(volunteers);
    assert!(starling_e2e::audit(data.path())?.contains("ledger ok"));
    Ok(())
}
