//! The chaos run of issue 19: forty native volunteers, real processes over real WebRTC,
//! each with its own wallet key: 8 return an independently wrong result on every unit,
//! 4 collude (each sends the group's one wrong result for every unit, so any two of them
//! holding a unit agree on the lie), 4 drop their
//! connection on every unit, 24 are honest. Four jobs of four kernels run with the
//! default verification while the relay is killed with SIGKILL twice. What a submitter
//! and an honest volunteer need: every job finishes with the CPU reference's output, no
//! unit is settled by a cheater's or a colluder's result, neither is paid anything, the
//! ledger audit is clean, cheaters and colluders end quarantined, droppers are cut off,
//! and no honest wallet is.
//!
//! The test gathers every figure before judging, so one run tells all that went wrong.
//!
//! Colluders who lie only on units the group holds every replica of, and work honestly
//! otherwise (`volunteer --collude-with DIR`), are the stronger adversary the README's
//! f^q figure describes: they build a clean record and settle about f^2 of the units they
//! could capture. That is measured in `relay-server/tests/collusion_odds.rs`, not
//! asserted away here.

use starling_api::UnitState;
use starling_e2e::{KernelJob, MatmulJob, Relay, RenderJob, TempDir, Volunteer};
use starling_protocol::WalletKey;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// What a volunteer does with its units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Honest,
    /// `--fault wrong`: its own random lie on every unit.
    Cheater,
    /// `--fault collude`: the group's shared lie on every unit.
    Colluder,
    /// `--fault drop`: takes every unit and disconnects instead of answering.
    Dropper,
}

/// Ten volunteers' roles, repeated four times (so each kind connects throughout the
/// start-up, not in one block): 6 honest, 2 cheaters, 1 colluder, 1 dropper.
const PATTERN: [Role; 10] = [
    Role::Honest,
    Role::Cheater,
    Role::Honest,
    Role::Colluder,
    Role::Honest,
    Role::Dropper,
    Role::Honest,
    Role::Cheater,
    Role::Honest,
    Role::Honest,
];
const VOLUNTEERS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_volunteers_with_cheaters_colluders_droppers_and_crashes() -> anyhow::Result<()> {
    let started = Instant::now();
    let data = TempDir::new("chaos")?;
    let mut relay = Relay::start_with(
        data.path(),
        1,
        &[
            "--lease-secs",
            "3",
            "--canary-rate",
            "0.05",
            // A unit is 1 MFLOP: at the default price it would earn less than a
            // micro-credit, and "paid nothing" would prove nothing.
            "--price-per-gflop",
            "1",
        ],
    )?;
    let api = relay.api();

    let mut volunteers = Vec::new();
    let mut role_of: HashMap<String, Role> = HashMap::new();
    for i in 0..VOLUNTEERS {
        let role = PATTERN[i % PATTERN.len()];
        let key = WalletKey::from_seed(rand::random());
        let key_file = data.path().join(format!("wallet-{i}.key"));
        std::fs::write(&key_file, key.to_hex())?;
        let key_arg = key_file.display().to_string();
        let mut args = vec!["--cpu", "--key-file", key_arg.as_str()];
        match role {
            Role::Honest => {}
            Role::Cheater => args.extend(["--fault", "wrong", "--fault-rate", "1"]),
            Role::Colluder => args.extend(["--fault", "collude", "--fault-rate", "1"]),
            Role::Dropper => args.extend(["--fault", "drop", "--fault-rate", "1"]),
        }
        role_of.insert(key.address().to_string(), role);
        let log = data.path().join(format!("volunteer-{i}.log"));
        volunteers.push(Volunteer::start_logged(&relay.url(), &args, &log)?);
    }
    let of = |role: Role| -> Vec<&str> {
        role_of
            .iter()
            .filter(|(_, r)| **r == role)
            .map(|(w, _)| w.as_str())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.stats().await?.volunteers < VOLUNTEERS as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{VOLUNTEERS} volunteers did not connect: {:?}",
            api.stats().await?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{VOLUNTEERS} volunteers connected after {:?}",
        started.elapsed()
    );

    // Enough work that plenty is left after the second crash (volunteers take some ten
    // seconds to notice a dead relay): droppers must have time to use up their hand-back
    // allowance, and colluders to meet on a unit. The CPU references take most of the
    // test's own time: built on both cores at once.
    let reference = Instant::now();
    let (matmul, render, mlp, montecarlo) = std::thread::scope(|s| {
        let matmul = s.spawn(|| MatmulJob::random(4096, 64, 128, 41));
        let render = s.spawn(|| RenderJob::new(200, 150, 12, 3));
        let mlp = s.spawn(|| KernelJob::mlp(&[32, 48, 10], 12_000, 17));
        let montecarlo = KernelJob::montecarlo(12_000_000, 5);
        let joined = |what: &str| anyhow::anyhow!("building the {what} job panicked");
        anyhow::Ok((
            matmul.join().map_err(|_| joined("matmul"))?,
            render.join().map_err(|_| joined("render"))??,
            mlp.join().map_err(|_| joined("mlp"))??,
            montecarlo?,
        ))
    })?;
    eprintln!("CPU references took {:?}", reference.elapsed());
    let kernels = ["matmul", "render", "mlp", "montecarlo"];
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
        total_units >= 100,
        "only {total_units} units: make the jobs bigger"
    );
    eprintln!("{total_units} units in {} jobs", ids.len());

    // Crash the relay twice while the jobs run, each time once an eighth more of the
    // units have settled; nothing settled may be lost.
    let settled = || async {
        let mut done = 0;
        for id in &ids {
            done += api.job(id).await?.progress.units_done;
        }
        anyhow::Ok(done)
    };
    let mut last_done = 0;
    for crash in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(90);
        let done = loop {
            let done = settled().await?;
            if done >= last_done + total_units / 8 || done == total_units {
                break done;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no progress before crash {crash}: {done}/{total_units} settled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        relay.kill();
        relay.restart()?;
        let after = settled().await?;
        anyhow::ensure!(after >= done, "crash {crash} lost units: {done} -> {after}");
        eprintln!(
            "crash {crash} at {:?}: {after}/{total_units} units settled survived SIGKILL",
            started.elapsed()
        );
        last_done = after;
    }

    // Everything below is gathered first and judged at the end.
    let mut failures: Vec<String> = Vec::new();
    for (id, kernel) in ids.iter().zip(kernels) {
        match api.wait_done(id, Duration::from_secs(150)).await {
            Ok(done) => eprintln!("{kernel} job done: {:?}", done.progress),
            Err(e) => failures.push(format!("{kernel} job did not finish: {e:#}")),
        }
    }
    eprintln!("jobs ended after {:?}", started.elapsed());
    let result = |id: &str| {
        let api = &api;
        let id = id.to_owned();
        async move {
            let (status, bytes) = api.result(&id).await?;
            anyhow::ensure!(status == 200, "result answered {status}");
            anyhow::Ok(bytes)
        }
    };
    let checks = [
        match result(&ids[0]).await {
            Ok(bytes) => matmul.check(&bytes),
            Err(e) => Err(e),
        },
        match result(&ids[1]).await {
            Ok(bytes) => render.check(&bytes),
            Err(e) => Err(e),
        },
        match result(&ids[2]).await {
            Ok(bytes) => mlp.check(&bytes),
            Err(e) => Err(e),
        },
        match result(&ids[3]).await {
            Ok(bytes) => montecarlo.check(&bytes),
            Err(e) => Err(e),
        },
    ];
    for (check, kernel) in checks.into_iter().zip(kernels) {
        if let Err(e) = check {
            failures.push(format!("{kernel} result wrong: {e:#}"));
        }
    }

    // Every unit settled once, on results from distinct wallets, none of them a lie: a
    // cheater's result is always one, colluders lie where two of them hold the unit (one
    // colluder alone answers honestly, and may be trusted to settle a unit by itself).
    let mut settled_by: HashMap<Role, usize> = HashMap::new();
    let (mut colluders_only, mut colluders_lie) = (0, 0);
    let mut single = 0;
    for (id, kernel) in ids.iter().zip(kernels) {
        for unit in api.units(id).await? {
            if unit.state != UnitState::Done {
                failures.push(format!("{kernel} unit not done: {unit:?}"));
                continue;
            }
            // Known-answer tests send settled units again: their agreeing answers are
            // listed too, so one unit may name many wallets.
            let wallets: Vec<&str> = unit.valid_wallets.iter().map(String::as_str).collect();
            let distinct: HashSet<&str> = wallets.iter().copied().collect();
            if wallets.is_empty() || distinct.len() != wallets.len() {
                failures.push(format!("{kernel} unit settled wrongly: {unit:?}"));
            }
            let roles: HashSet<Role> = wallets
                .iter()
                .map(|w| role_of.get(*w).copied().unwrap_or(Role::Honest))
                .collect();
            for role in &roles {
                *settled_by.entry(*role).or_default() += 1;
            }
            let colluders_lied = roles == HashSet::from([Role::Colluder]) && wallets.len() > 1;
            if roles == HashSet::from([Role::Colluder]) {
                colluders_only += 1;
                colluders_lie += usize::from(colluders_lied);
            }
            if roles.contains(&Role::Cheater) || colluders_lied {
                failures.push(format!(
                    "a {kernel} unit was settled on a dishonest result ({roles:?}): {unit:?}"
                ));
            }
            single += usize::from(wallets.len() == 1);
        }
    }
    eprintln!(
        "units settled with a result from: honest {}, cheaters {}, colluders {} ({colluders_only} by colluders alone, {colluders_lie} of them by two or more: their lie), droppers {}; {single}/{total_units} by one wallet's result",
        settled_by.get(&Role::Honest).unwrap_or(&0),
        settled_by.get(&Role::Cheater).unwrap_or(&0),
        settled_by.get(&Role::Colluder).unwrap_or(&0),
        settled_by.get(&Role::Dropper).unwrap_or(&0),
    );

    // What the public ledger credited each wallet, every page of it.
    let credited = api.credited_wallets().await?;

    // Each wallet's standing, by role.
    for role in [Role::Honest, Role::Cheater, Role::Colluder, Role::Dropper] {
        let (mut paid, mut quarantined, mut trusted, mut valid, mut invalid, mut handbacks) =
            (0u64, 0, 0, 0u64, 0u64, 0u64);
        let wallets = of(role);
        for wallet in &wallets {
            let standing = api.wallet(wallet).await?;
            let balance = standing.balance_micro;
            let credit = credited.get(*wallet).copied().unwrap_or(0);
            paid += credit;
            quarantined += usize::from(standing.quarantined);
            trusted += usize::from(standing.trusted);
            valid += u64::from(standing.valid_results);
            invalid += u64::from(standing.invalid_results);
            handbacks += standing.handbacks;
            let wrong = match role {
                Role::Honest => (standing.quarantined || standing.invalid_results != 0)
                    .then_some("honest wallet quarantined or refused"),
                Role::Cheater | Role::Colluder if credit > 0 || balance > 0 => {
                    Some("dishonest wallet paid")
                }
                Role::Cheater | Role::Colluder | Role::Dropper if !standing.quarantined => {
                    Some("misbehaving wallet not quarantined")
                }
                _ => None,
            };
            if let Some(wrong) = wrong {
                failures.push(format!(
                    "{role:?} {wallet}: {wrong} (ledger credited {credit} micro): {standing:?}"
                ));
            }
        }
        eprintln!(
            "{role:?} x{}: paid {paid} micro-credits in all; {quarantined} quarantined, {trusted} trusted; {valid} valid and {invalid} invalid results, {handbacks} hand-backs",
            wallets.len()
        );
    }

    match starling_e2e::audit(data.path()) {
        Ok(summary) if summary.contains("ledger ok") => {}
        Ok(summary) => failures.push(format!("ledger audit: {summary}")),
        Err(e) => failures.push(format!("ledger audit: {e:#}")),
    }
    eprintln!("chaos run took {:?}", started.elapsed());
    drop(volunteers);
    anyhow::ensure!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}
