//! Credit end to end: two native volunteers with key files complete a billed job; each
//! wallet's balance is what the public ledger says it was paid, the submitter paid exactly
//! what the volunteers, the platform and nobody else received, `relay-server audit`
//! accepts the ledger, and a volunteer can spend its credit with a signed transfer that
//! cannot be replayed or forged. Each volunteer receives signed receipts over its channel.

use starling_api::{LedgerEntry, Problem, TransferRequest};
use starling_e2e::{MatmulJob, Relay, TempDir, Volunteer};
use starling_protocol::WalletKey;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volunteers_are_paid_what_the_ledger_says_and_can_spend_it() -> anyhow::Result<()> {
    let data = TempDir::new("credit")?;
    let relay = Relay::start_with(data.path(), 1, &["--price-per-gflop", "1"])?;
    let api = relay.api();
    let keys: Vec<WalletKey> = (0..2)
        .map(|_| WalletKey::from_seed(rand::random()))
        .collect();
    let mut volunteers = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let file = data.path().join(format!("wallet-{i}.key"));
        std::fs::write(&file, key.to_hex())?;
        let file = file.display().to_string();
        let log = data.path().join(format!("volunteer-{i}.log"));
        volunteers.push(Volunteer::start_logged(
            &relay.url(),
            &["--cpu", "--key-file", &file],
            &log,
        )?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.stats().await?.volunteers < 2 {
        anyhow::ensure!(Instant::now() < deadline, "volunteers did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = api.client().account().await?;
    let job = MatmulJob::random(512, 64, 64, 8);
    let id = api.submit(&job.body).await?; // default quorum 2: both wallets compute each unit
    api.wait_done(&id, Duration::from_secs(120)).await?;
    job.check(&api.result(&id).await?.1)?;

    // Every wallet's balance is the sum of what the ledger credited it.
    let mut paid_to_wallets = 0u64;
    for key in &keys {
        let address = key.address().to_string();
        let history = api.client().wallet_history(&address, 0, 500).await?;
        let credited: u64 = history
            .entries
            .iter()
            .filter(|e| e.credit == format!("wallet:{address}"))
            .map(|e| e.amount_micro)
            .sum();
        let standing = api.wallet(&address).await?;
        assert_eq!(standing.balance_micro, credited, "{standing:?}");
        assert!(credited > 0, "wallet {address} was not paid");
        paid_to_wallets += credited;
    }
    // The submitter paid exactly what went to the wallets and the platform.
    let after = api.client().account().await?;
    let spent = before.balance_micro - after.balance_micro;
    let ledger = api.client().ledger(0, 500).await?;
    let fees: u64 = ledger
        .entries
        .iter()
        .filter(|e| e.credit == "platform")
        .map(|e| e.amount_micro)
        .sum();
    assert_eq!(
        spent,
        paid_to_wallets + fees,
        "escrow leaked or was refunded wrongly"
    );
    assert!(
        fees > 0 && fees < spent / 10,
        "platform fee {fees} of {spent}"
    );

    assert!(starling_e2e::audit(data.path())?.contains("ledger ok"));

    // Spend: wallet 0 sends one micro-credit... and more than it has.
    let relay_key: starling_protocol::WalletAddress =
        ledger.relay_key.unwrap_or_default().parse()?;
    let (from, to) = (&keys[0], keys[1].address());
    // Valid for ten minutes: long enough for this test, well inside the relay's day.
    let expires_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )? + 600_000;
    let transfer = |signer: &WalletKey, amount_micro: u64, nonce: u64| {
        let signature = signer.sign_transfer(&relay_key, &to, amount_micro, nonce, expires_ms);
        let hex: String = signature.0.iter().map(|b| format!("{b:02x}")).collect();
        TransferRequest {
            from: from.address().to_string(),
            to: to.to_string(),
            amount: format!("0.{amount_micro:06}"),
            nonce,
            expires_ms,
            signature: hex,
        }
    };
    // Raw posts: the refusals' statuses are what is tested.
    let post = |body: TransferRequest| {
        let api = &api;
        async move {
            let response = api
                .http()
                .post(format!("{}/api/v1/transfers", api.base()))
                .json(&body)
                .send()
                .await?;
            let status = response.status().as_u16();
            anyhow::Ok((status, response.text().await?))
        }
    };
    let (status, entry) = post(transfer(from, 1, 7)).await?;
    assert_eq!(status, 201, "{entry}");
    assert_eq!(
        serde_json::from_str::<LedgerEntry>(&entry)?.reason,
        "transfer"
    );
    let (status, body) = post(transfer(from, 1, 7)).await?;
    assert_eq!(status, 409, "a replay is refused: {body}");
    let (status, body) = post(transfer(&keys[1], 1, 8)).await?;
    let problem: Problem = serde_json::from_str(&body)?;
    assert_eq!(
        (status, problem.field.as_deref()),
        (422, Some("signature")),
        "{body}"
    );
    let (status, body) = post(transfer(from, 999_999, 9)).await?;
    assert_eq!(status, 402, "{body}");
    // The refused transfer spent its nonce: it can never run later.
    let (status, body) = post(transfer(from, 999_999, 9)).await?;
    assert_eq!(status, 409, "{body}");
    // Each volunteer got signed receipts pushed over its channel for what it earned.
    drop(volunteers);
    for i in 0..keys.len() {
        let log = std::fs::read_to_string(data.path().join(format!("volunteer-{i}.log")))?;
        assert!(
            log.contains("signed receipt: credited"),
            "no receipt for volunteer {i}:\n{log}"
        );
    }
    Ok(())
}
