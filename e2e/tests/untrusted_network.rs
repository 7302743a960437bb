//! Thirty native volunteers, real processes over real WebRTC: 6 return wrong results on
//! every unit, 6 drop their connection mid-unit on 30% of units, 18 are honest. Four jobs
//! of four kernels run with the default verification (two agreeing replicas from
//! distinct wallets; one for wallets that earned trust) while the relay is killed with
//! SIGKILL three times. Every job must finish with the CPU reference's output, no unit
//! may be settled by a cheater's result or twice, every cheater must end quarantined and
//! no honest wallet may.

use starling_api::UnitState;
use starling_e2e::{KernelJob, MatmulJob, Relay, RenderJob, TempDir, Volunteer};
use starling_protocol::WalletKey;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const HONEST: usize = 18;
const CHEATERS: usize = 6;
const DROPPERS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_volunteers_with_cheaters_and_crashes_still_get_every_job_right(
) -> anyhow::Result<()> {
    let data = TempDir::new("untrusted")?;
    let mut relay = Relay::start_with(
        data.path(),
        1,
        &["--lease-secs", "3", "--canary-rate", "0.05"],
    )?;
    let api = relay.api();

    // Each volunteer gets a wallet key file, so the test knows who is who.
    let mut volunteers = Vec::new();
    let mut cheaters = Vec::new();
    let mut honest = Vec::new();
    for i in 0..HONEST + CHEATERS + DROPPERS {
        let key = WalletKey::from_seed(rand::random());
        let key_file = data.path().join(format!("wallet-{i}.key"));
        std::fs::write(&key_file, key.to_hex())?;
        let key_arg = key_file.display().to_string();
        let mut args = vec!["--cpu", "--key-file", key_arg.as_str()];
        if i < CHEATERS {
            args.extend(["--fault", "wrong", "--fault-rate", "1"]);
            cheaters.push(key.address().to_string());
        } else {
            if i < CHEATERS + DROPPERS {
                args.extend(["--fault", "drop", "--fault-rate", "0.3"]);
            }
            honest.push(key.address().to_string());
        }
        let log = data.path().join(format!("volunteer-{i}.log"));
        volunteers.push(Volunteer::start_logged(&relay.url(), &args, &log)?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.stats().await?.volunteers < 30 {
        anyhow::ensure!(Instant::now() < deadline, "30 volunteers did not connect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let matmul = MatmulJob::random(2048, 64, 64, 41);
    let render = RenderJob::new(96, 64, 8, 3)?;
    let mlp = KernelJob::mlp(&[32, 48, 10], 2000, 17)?;
    let montecarlo = KernelJob::montecarlo(400_000, 5)?;
    let ids = [
        api.submit(&matmul.body).await?,
        api.submit(&render.body).await?,
        api.submit(&mlp.body).await?,
        api.submit(&montecarlo.body).await?,
    ];
    let mut total_units = 0;
    for id in &ids {
        total_units += api.job(id).await?.progress.units_total;
    }
    anyhow::ensure!(
        total_units >= 120,
        "only {total_units} units: make the jobs bigger"
    );

    // Crash the relay three times while the jobs run, each time once a few more units
    // have settled; nothing settled may be lost.
    let mut last_done = 0;
    for crash in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(90);
        let done = loop {
            let mut done = 0;
            for id in &ids {
                done += api.job(id).await?.progress.units_done;
            }
            if done >= last_done + total_units / 8 || done == total_units {
                break done;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no progress before crash {crash}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        relay.kill();
        relay.restart()?;
        let mut after = 0;
        for id in &ids {
            after += api.job(id).await?.progress.units_done;
        }
        anyhow::ensure!(after >= done, "crash {crash} lost units: {done} -> {after}");
        eprintln!("crash {crash}: {after}/{total_units} units settled survived SIGKILL");
        last_done = after;
    }

    for id in &ids {
        let done = api.wait_done(id, Duration::from_secs(240)).await?;
        eprintln!("job done: {:?}", done.progress);
    }
    let result = |id: &str| {
        let api = &api;
        let id = id.to_owned();
        async move {
            let (status, bytes) = api.result(&id).await?;
            anyhow::ensure!(status == 200, "result answered {status}");
            anyhow::Ok(bytes)
        }
    };
    matmul.check(&result(&ids[0]).await?)?;
    render.check(&result(&ids[1]).await?)?;
    mlp.check(&result(&ids[2]).await?)?;
    montecarlo.check(&result(&ids[3]).await?)?;

    // Every unit settled once, on results from distinct wallets, none of them a cheater.
    let cheater_set: HashSet<&str> = cheaters.iter().map(String::as_str).collect();
    let mut single = 0;
    for (id, kernel) in ids.iter().zip(["matmul", "render", "mlp", "montecarlo"]) {
        for unit in api.units(id).await? {
            anyhow::ensure!(unit.state == UnitState::Done, "unit not done: {unit:?}");
            let wallets: Vec<&str> = unit.valid_wallets.iter().map(String::as_str).collect();
            anyhow::ensure!(
                !wallets.is_empty(),
                "settled without a valid result: {unit:?}"
            );
            let distinct: HashSet<&str> = wallets.iter().copied().collect();
            anyhow::ensure!(
                distinct.len() == wallets.len(),
                "one wallet counted twice: {unit:?}"
            );
            anyhow::ensure!(
                wallets.iter().all(|w| !cheater_set.contains(w)),
                "a cheater's result was accepted for a {kernel} unit: {unit:?}"
            );
            if wallets.len() == 1 {
                single += 1;
            }
        }
    }
    eprintln!("{single}/{total_units} units settled by one trusted wallet's result");

    let mut invalid_by_cheaters = 0;
    for wallet in &cheaters {
        let standing = api.wallet(wallet).await?;
        anyhow::ensure!(standing.quarantined, "cheater free: {standing:?}");
        invalid_by_cheaters += u64::from(standing.invalid_results);
    }
    let mut trusted = 0;
    for wallet in &honest {
        let standing = api.wallet(wallet).await?;
        anyhow::ensure!(
            !standing.quarantined,
            "honest wallet quarantined: {standing:?}"
        );
        anyhow::ensure!(
            standing.invalid_results == 0,
            "honest result refused: {standing:?}"
        );
        trusted += usize::from(standing.trusted);
    }
    eprintln!(
        "cheaters quarantined after {invalid_by_cheaters} wrong results in all; {trusted}/{} honest wallets trusted",
        honest.len()
    );
    drop(volunteers);
    Ok(())
}
