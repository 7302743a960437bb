//! The unit, lease and result state machine against a real SQLite file and a real
//! PostgreSQL server (each test runs on both): quorums of
//! distinct wallets, results that count once, lost leases that go back to the queue,
//! late results that still count, known-answer leases, quarantine, and restarts. A
//! property test drives random event orders and checks the invariants after each.

mod common;

use common::TempDir;
use proptest::prelude::*;
use starling_protocol::{JobId, LeaseId, WalletAddress, WalletKey};
use starling_relay::ledger::{Account, MicroCredits, Reason};
use starling_relay::storage::{
    Billing, Comparison, Judging, LeaseRequest, LeaseTerms, LeasedUnit, NewJob, NewProbe, PeerId,
    Pricing, ProbeUnit, Recorded, ReturnedResult, Storage, StorageError, REPEAT_AFTER_MS,
};
use starling_relay::validation::{NetworkRule, Reference};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

fn job(units: usize, quorum: u32) -> NewJob {
    NewJob {
        id: JobId::from_uuid(uuid::Uuid::new_v4()),
        kernel: "matmul".into(),
        params: serde_json::json!({"m": 1, "k": 1, "n": 1}),
        input: vec![0; 8],
        units: (0..units).map(|i| format!("{{\"i\":{i}}}")).collect(),
        unit_flops: (0..units as u64).map(|i| 1_000_000 * (i + 1)).collect(),
        flops: 2,
        quorum,
        quorum_explicit: false,
        submitter: None,
        max_active: None,
        idempotency: None,
    }
}

/// Which database a test runs on: every transition test runs on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// The storage for `dir`: its SQLite file, or (on PostgreSQL) a database of the test's
    /// own, the same one each time `dir` is opened again.
    async fn open(self, dir: &std::path::Path) -> anyhow::Result<Storage> {
        match self {
            Self::Sqlite => Ok(Storage::open(dir).await?),
            Self::Postgres => Ok(Storage::open_postgres(&self.url(dir).await?, dir).await?),
        }
    }

    async fn url(self, dir: &std::path::Path) -> anyhow::Result<String> {
        std::fs::create_dir_all(dir)?;
        let file = dir.join("postgres-url");
        if let Ok(url) = std::fs::read_to_string(&file) {
            return Ok(url);
        }
        let url = common::postgres::Postgres::shared()?.database()?;
        std::fs::write(&file, &url)?;
        Ok(url)
    }

    /// Two integers from a query on `dir`'s database, read behind the relay's back.
    async fn pair(self, dir: &std::path::Path, sql: &str) -> anyhow::Result<(i64, i64)> {
        use sqlx::Connection as _;
        Ok(match self {
            Self::Sqlite => {
                let db = rusqlite::Connection::open(dir.join("starling.sqlite3"))?;
                db.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))?
            }
            Self::Postgres => {
                let mut db = sqlx::PgConnection::connect(&self.url(dir).await?).await?;
                sqlx::query_as(sql).fetch_one(&mut db).await?
            }
        })
    }
}

/// A `#[tokio::test]` per engine for each transition test.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test]
            async fn $name() -> anyhow::Result<()> {
                super::$name(super::Engine::Sqlite).await
            })*
        }
        mod on_postgres {
            $(#[tokio::test]
            async fn $name() -> anyhow::Result<()> {
                super::$name(super::Engine::Postgres).await
            })*
        }
    };
}

on_both_engines!(
    a_job_of_any_size_stores_each_unit_once_with_its_own_parameters,
    a_tiny_unit_of_a_priced_job_pays_its_volunteer,
    lease_deadlines_follow_unit_cost_within_bounds,
    a_result_counts_once_and_only_for_its_wallet,
    a_settled_units_output_is_stored_once_and_the_audit_still_shows_it,
    small_outputs_are_compared_on_the_writer_and_large_ones_off_it,
    lost_leases_are_requeued_and_a_late_result_still_counts,
    known_answer_leases_catch_a_lying_wallet_which_ends_quarantined,
    a_reopened_database_keeps_settled_units_and_voids_leases,
    a_wallet_that_hands_back_more_than_it_computes_is_cut_off,
    a_quorum_the_submitter_named_is_never_lowered_by_trust,
    a_purged_jobs_units_are_never_sent_again_as_known_answer_tests,
    vetting_two_fresh_wallets_agreeing_on_a_lie_settle_nothing,
    vetting_trust_earned_on_one_kernel_does_not_settle_another_alone,
    one_network_holds_one_replica_of_a_unit,
    vetting_compares_large_outputs_with_the_reference_off_the_writer,
    replicas_go_to_distinct_wallets_and_connections_and_the_majority_wins,
    a_unit_meant_for_a_trusted_wallet_alone_still_needs_a_quorum_from_anyone_else,
    a_handed_back_unit_goes_to_another_wallet_and_a_fresh_wallet_cannot_fail_it,
    vetting_a_wallet_with_a_record_anchors_a_newcomer_without_a_reference,
    a_probes_units_go_as_known_answer_tests_newest_probe_first_each_to_one_wallet,
    results_arriving_together_count_as_if_one_after_another,
    replicas_arriving_together_settle_as_if_one_after_another,
    leases_asked_for_together_keep_every_rule_of_who_may_have_a_unit,
    a_wallet_kept_from_the_oldest_units_still_gets_one_further_on,
    a_payout_to_many_wallets_pays_each_what_it_earned_in_a_few_reads,
);

fn temp_dir(name: &str) -> TempDir {
    TempDir::new(name)
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a == b
}

/// One volunteer: a connection and a wallet.
#[derive(Clone, Copy)]
struct Vol {
    peer: PeerId,
    wallet: WalletAddress,
}

impl Vol {
    fn new(seed: u8) -> Self {
        Self {
            peer: PeerId::new(),
            wallet: WalletKey::from_seed([seed; 32]).address(),
        }
    }

    fn request(&self, deadline: i64) -> LeaseRequest {
        LeaseRequest {
            custom_ok: true,
            peer: self.peer,
            wallet: self.wallet,
            site: None,
            lease: LeaseId::from_uuid(uuid::Uuid::new_v4()),
            terms: LeaseTerms::until(deadline),
            network: None,
            // The oldest unit it may have, as before draws: the tests name units by age.
            draw: 0.0,
        }
    }

    async fn lease(&self, storage: &Storage) -> anyhow::Result<Option<LeasedUnit>> {
        self.lease_at(storage, i64::MAX / 2).await
    }

    /// A lease asked for at `time_ms` (and lasting until then).
    async fn lease_at(
        &self,
        storage: &Storage,
        time_ms: i64,
    ) -> anyhow::Result<Option<LeasedUnit>> {
        Ok(storage
            .lease_work(&self.request(time_ms), |_, job_quorum| job_quorum)
            .await?)
    }

    async fn answer(
        &self,
        storage: &Storage,
        lease: LeaseId,
        output: &[u8],
        spot_check: Option<bool>,
    ) -> anyhow::Result<Recorded> {
        self.answer_comparing(storage, lease, output, spot_check, Arc::new(same))
            .await
    }

    async fn answer_comparing(
        &self,
        storage: &Storage,
        lease: LeaseId,
        output: &[u8],
        spot_check: Option<bool>,
        compare: Comparison,
    ) -> anyhow::Result<Recorded> {
        Ok(storage
            .record_result(
                ReturnedResult {
                    lease,
                    wallet: self.wallet,
                    output,
                    spot_check,
                },
                // Vetting has tests of its own (`vetting_*` below): these follow
                // transitions, with wallets that start out unknown.
                Judging {
                    max_results: 6,
                    vet_newcomers: false,
                },
                compare,
                Reference::NotRun,
            )
            .await?)
    }
}

/// Units are inserted many to a statement: every size, whatever rows its last statements
/// hold, stores each unit once, at its position, with its own parameters and cost.
async fn a_job_of_any_size_stores_each_unit_once_with_its_own_parameters(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("unit-rows");
    let storage = engine.open(&dir).await?;
    // 293 = 256 + 32 + 4 + 1: one statement of each shape.
    for units in [1, 3, 5, 37, 293] {
        let j = job(units, 1);
        storage.insert_job(&j).await?;
        let (stored, right) = engine
            .pair(
                &dir,
                &format!(
                    "SELECT COUNT(*), COALESCE(SUM(CASE WHEN params = '{{\"i\":' || idx || '}}'
                         AND flops = 1000000 * (idx + 1) AND state = 'queued' THEN 1 ELSE 0 END), 0)
                     FROM units WHERE job_id = '{}'",
                    j.id
                ),
            )
            .await?;
        assert_eq!(
            stored, units as i64,
            "a job of {units} units stored {stored}"
        );
        assert_eq!(
            right, units as i64,
            "a job of {units} units: {right} stored right"
        );
        let (positions, last) = engine
            .pair(
                &dir,
                &format!(
                    "SELECT COUNT(DISTINCT idx), MAX(idx) FROM units WHERE job_id = '{}'",
                    j.id
                ),
            )
            .await?;
        assert_eq!((positions, last), (units as i64, units as i64 - 1));
    }
    Ok(())
}

/// Results that arrive at once (on PostgreSQL one writer group judges them together, with
/// what each changes carried to the next in memory) count as if judged one after another:
/// each wallet's record counts every result of its own, each job every unit once, each
/// volunteer is owed every share; a repeated, misdirected or unknown answer among them
/// changes nothing, and replicas judged alone beside them settle by their quorum.
async fn results_arriving_together_count_as_if_one_after_another(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("together");
    let storage = open_billed(engine, &dir).await?;
    let (submitter, _) = storage
        .create_account(&billing().key, MicroCredits(10_000_000), None)
        .await?;
    let single = NewJob {
        submitter: Some(submitter),
        ..job(40, 1)
    };
    let double = NewJob {
        submitter: Some(submitter),
        ..job(4, 2)
    };
    storage.insert_job(&single).await?;
    storage.insert_job(&double).await?;
    let vols: Vec<Vol> = (1..=8).map(Vol::new).collect();
    // Leases asked for at once too (on PostgreSQL, drawn together).
    let mut leased = Vec::new();
    for _ in 0..10 {
        let round = futures::future::join_all(vols.iter().map(|vol| vol.lease(&storage))).await;
        for (vol, unit) in vols.iter().zip(round) {
            leased.extend(unit?.map(|unit| (*vol, unit)));
        }
    }
    assert_eq!(leased.len(), 48, "40 units and 4 units' two replicas");
    let mut holders: BTreeMap<_, Vec<WalletAddress>> = BTreeMap::new();
    for (vol, unit) in &leased {
        holders.entry(unit.unit).or_default().push(vol.wallet);
    }
    for (unit, wallets) in &holders {
        let mut distinct = wallets.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            wallets.len(),
            "one wallet holds two replicas of {unit}"
        );
    }
    let replicas: Vec<usize> = holders.values().map(Vec::len).collect();
    assert_eq!(
        (
            replicas.iter().filter(|&&n| n == 1).count(),
            replicas.iter().filter(|&&n| n == 2).count()
        ),
        (40, 4),
        "units leased once (quorum 1) and twice (quorum 2)"
    );
    let (first_vol, first) = &leased[0];
    let stranger = Vol::new(99);
    let answers = leased
        .iter()
        .map(|(vol, unit)| vol.answer(&storage, unit.lease, unit.unit_params.as_bytes(), None));
    let (recorded, again, misdirected, unknown) = tokio::join!(
        futures::future::join_all(answers),
        first_vol.answer(&storage, first.lease, first.unit_params.as_bytes(), None),
        stranger.answer(
            &storage,
            leased[1].1.lease,
            leased[1].1.unit_params.as_bytes(),
            None
        ),
        first_vol.answer(
            &storage,
            LeaseId::from_uuid(uuid::Uuid::new_v4()),
            b"made up",
            None
        ),
    );
    let mut completed = Vec::new();
    for answer in recorded {
        match answer? {
            Recorded::Valid { job, job_complete } => completed.extend(job_complete.then_some(job)),
            Recorded::Pending { .. } => {}
            other => panic!("an honest result was not counted: {other:?}"),
        }
    }
    completed.sort();
    let mut jobs = vec![single.id, double.id];
    jobs.sort();
    // The job's count carried from result to result: its last unit, and only that, completes it.
    assert_eq!(completed, jobs, "the jobs their last results completed");
    for (what, answer) in [
        ("repeated", again?),
        ("misdirected", misdirected?),
        ("unknown", unknown?),
    ] {
        assert!(
            matches!(answer, Recorded::Stale(_)),
            "a {what} answer counted: {answer:?}"
        );
    }
    check(&storage, single.id, 1, &stranger.wallet).await?;
    check(&storage, double.id, 2, &stranger.wallet).await?;
    for (job, units) in [(single.id, 40), (double.id, 4)] {
        let record = storage.job(job).await?.expect("job");
        assert_eq!(record.progress.units_done, units, "units counted done");
    }
    for vol in vols.iter().chain([&stranger]) {
        let results = leased
            .iter()
            .filter(|(v, _)| v.wallet == vol.wallet)
            .count();
        let record = storage.touch_wallet(&vol.wallet).await?;
        assert_eq!(
            (
                record.reliability.valid as usize,
                record.reliability.invalid
            ),
            (results, 0),
            "a wallet's record of valid results"
        );
    }
    let accruals = storage.accruals().await?;
    let owed: u64 = accruals.iter().map(|a| a.amount.0).sum();
    // Each unit's whole price (its volunteers', the platform's) is owed, once.
    let price: u64 = single
        .unit_flops
        .iter()
        .chain(&double.unit_flops)
        .map(|flops| flops / 1_000)
        .sum();
    assert_eq!(owed, price, "what the units' prices owe");
    storage.pay_out_all().await?;
    storage
        .audit(&billing().key.address())
        .await
        .map_err(|e| anyhow::anyhow!("audit: {e}"))?;
    Ok(())
}

/// Leases asked for at once (on PostgreSQL, one writer group draws them from units it
/// loads once, each draw seeing the group's earlier leases in memory) keep every rule of
/// who may have a unit, as if drawn one after another: no unit goes out beyond its quorum,
/// no wallet (on two connections), connection (with two wallets) or network holds or
/// answers two replicas of one, a unit handed back does not go straight back, and a volunteer that runs built-in kernels only
/// gets none of a registered kernel's units. The askers draw the oldest unit they may
/// have, so each rule is met inside one group; and every replica still goes out.
async fn leases_asked_for_together_keep_every_rule_of_who_may_have_a_unit(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("leases-together");
    let storage = engine.open(&dir).await?;
    // Oldest first: a registered kernel's units (its id a 64-digit content address).
    let custom = NewJob {
        kernel: "ab".repeat(32),
        ..job(2, 1)
    };
    let shared = job(6, 4);
    storage.insert_job(&custom).await?;
    storage.insert_job(&shared).await?;
    let builtin_only = |vol: &Vol| LeaseRequest {
        custom_ok: false,
        ..vol.request(i64::MAX / 2)
    };
    // A wallet that took the oldest built-in unit and handed it back.
    let quitter = Vol::new(7);
    let taken = storage
        .lease_work(&builtin_only(&quitter), |_, q| q)
        .await?
        .expect("a unit to hand back");
    assert_eq!(taken.job, shared.id);
    storage.release_lease(taken.lease, quitter.peer).await?;
    let rule = NetworkRule {
        loopback_is_one_network: true,
        ..NetworkRule::default()
    };
    let twice = Vol::new(1);
    // Each asker's connection and wallet, network, whether it runs registered kernels, and
    // whether its draws go past the oldest unit it may have. Those that may not have a
    // unit the others would draw it first.
    let askers: Vec<(Vol, Option<&str>, bool, bool)> = vec![
        (Vol::new(6), None, false, false),
        (Vol::new(3), Some("203.0.113.99"), false, false),
        (quitter, None, false, false),
        // A second connection of a wallet that holds the oldest built-in unit (below).
        (
            Vol {
                peer: PeerId::new(),
                wallet: twice.wallet,
            },
            None,
            false,
            false,
        ),
        // Another wallet on that wallet's first connection.
        (
            Vol {
                peer: twice.peer,
                wallet: Vol::new(8).wallet,
            },
            None,
            false,
            false,
        ),
        (Vol::new(4), Some("198.51.100.7"), false, false),
        (twice, None, true, false),
        (Vol::new(2), Some("203.0.113.5"), true, false),
        (Vol::new(5), Some("198.51.100.8"), true, true),
    ];
    let request =
        |(vol, network, custom_ok, further): &(Vol, Option<&str>, bool, bool)| LeaseRequest {
            custom_ok: *custom_ok,
            network: network.and_then(|a| a.parse().ok().and_then(|a| rule.network_of(a))),
            draw: if *further { 0.5 } else { 0.0 },
            ..vol.request(i64::MAX / 2)
        };
    // The oldest built-in unit held by a wallet of the fourth asker, and two answers to it
    // waiting for the rest of its quorum: the first asker's and a wallet's of the second
    // asker's network. None of them may have it again.
    let mut leased: Vec<(usize, LeasedUnit)> = Vec::new();
    for n in [6, 0, 7] {
        let answering = LeaseRequest {
            custom_ok: false,
            ..request(&askers[n])
        };
        let answered = storage
            .lease_work(&answering, |_, q| q)
            .await?
            .expect("a unit to answer");
        assert_eq!(answered.unit, taken.unit);
        if n == 6 {
            leased.push((n, answered));
            continue;
        }
        let recorded = askers[n]
            .0
            .answer(
                &storage,
                answered.lease,
                answered.unit_params.as_bytes(),
                None,
            )
            .await?;
        assert_eq!(recorded, Recorded::Pending { job: shared.id });
        leased.push((n, answered));
    }
    for _ in 0..12 {
        let requests = askers.iter().map(|asker| {
            let request = request(asker);
            let storage = &storage;
            async move { storage.lease_work(&request, |_, q| q).await }
        });
        let before = leased.len();
        for (n, unit) in futures::future::join_all(requests)
            .await
            .into_iter()
            .enumerate()
        {
            leased.extend(unit?.map(|unit| (n, unit)));
        }
        if leased.len() == before {
            break;
        }
    }
    let mut holders: BTreeMap<_, Vec<usize>> = BTreeMap::new();
    for (n, unit) in &leased {
        holders.entry((unit.job, unit.unit)).or_default().push(*n);
        let (_, _, custom_ok, _) = askers[*n];
        assert!(
            custom_ok || unit.job != custom.id,
            "a volunteer for built-in kernels only got a registered kernel's unit"
        );
        assert!(
            askers[*n].0.wallet != quitter.wallet || unit.unit != taken.unit,
            "the unit handed back went straight back to its wallet"
        );
    }
    for ((job, unit), held) in &holders {
        let quorum = if *job == custom.id { 1 } else { 4 };
        assert_eq!(
            held.len(),
            quorum,
            "replicas of {unit} out (its quorum {quorum})"
        );
        let mut wallets: Vec<_> = held.iter().map(|n| askers[*n].0.wallet).collect();
        wallets.sort_unstable();
        wallets.dedup();
        assert_eq!(
            wallets.len(),
            held.len(),
            "one wallet holds two replicas of {unit}"
        );
        let mut peers: Vec<_> = held.iter().map(|n| askers[*n].0.peer.to_string()).collect();
        peers.sort_unstable();
        peers.dedup();
        assert_eq!(
            peers.len(),
            held.len(),
            "one connection holds two replicas of {unit}"
        );
        let networks: Vec<_> = held
            .iter()
            .filter_map(|n| askers[*n].1)
            .map(|a| a.rsplit_once('.').map_or(a, |(net, _)| net))
            .collect();
        let mut distinct = networks.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            networks.len(),
            "one network holds two replicas of {unit}"
        );
    }
    assert_eq!(holders.len(), 8, "every unit went out");
    Ok(())
}

/// A wallet that may not have any of the oldest units (it holds a replica of each) still
/// gets one further on when it asks together with others: on PostgreSQL a group draws from
/// the oldest units it loaded, and a draw they cannot settle goes on alone, past them.
async fn a_wallet_kept_from_the_oldest_units_still_gets_one_further_on(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("leases-further-on");
    let storage = engine.open(&dir).await?;
    let units = 80;
    storage.insert_job(&job(units, 2)).await?;
    let (busy, other) = (Vol::new(1), Vol::new(2));
    let mut held = Vec::new();
    for _ in 0..units - 1 {
        held.push(busy.lease(&storage).await?.expect("a unit").unit);
    }
    let (further, second) = tokio::join!(busy.lease(&storage), other.lease(&storage));
    let further = further?.expect("the one unit it may still have");
    assert!(
        !held.contains(&further.unit),
        "a second replica went to one wallet"
    );
    assert!(
        second?.is_some(),
        "a unit's second replica for another wallet"
    );
    Ok(())
}

/// Replicas that arrive at once (on PostgreSQL judged together, each unit's earlier
/// results loaded for all of them in one statement) settle as if judged one after
/// another: each agreeing pair is rated and paid once; a lie leaves its unit wanting a
/// third replica, which honest wallets give; the liar is rated down, never paid.
async fn replicas_arriving_together_settle_as_if_one_after_another(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("replicas-together");
    let storage = open_billed(engine, &dir).await?;
    let (submitter, _) = storage
        .create_account(&billing().key, MicroCredits(10_000_000), None)
        .await?;
    let j = NewJob {
        submitter: Some(submitter),
        ..job(16, 2)
    };
    storage.insert_job(&j).await?;
    let vols: Vec<Vol> = (1..=8).map(Vol::new).collect();
    let liar = vols[7];
    // Per wallet: results that are right, and lies.
    let mut sent: BTreeMap<WalletAddress, (u32, u32)> = BTreeMap::new();
    // First, one wallet's eight results are the replicas that four others' results are
    // judged against at once: its standing carried from one to the next.
    let mut first = Vec::new();
    for _ in 0..8 {
        first.push(vols[0].lease(&storage).await?.expect("a unit"));
    }
    let answers = first
        .iter()
        .map(|unit| vols[0].answer(&storage, unit.lease, unit.unit_params.as_bytes(), None));
    for answer in futures::future::join_all(answers).await {
        assert_eq!(answer?, Recorded::Pending { job: j.id });
    }
    sent.insert(vols[0].wallet, (8, 0));
    let mut seconds = Vec::new();
    for vol in &vols[1..5] {
        for _ in 0..2 {
            seconds.push((*vol, vol.lease(&storage).await?.expect("a replica")));
        }
        sent.insert(vol.wallet, (2, 0));
    }
    let answers = seconds
        .iter()
        .map(|(vol, unit)| vol.answer(&storage, unit.lease, unit.unit_params.as_bytes(), None));
    for answer in futures::future::join_all(answers).await {
        assert!(matches!(answer?, Recorded::Valid { .. }));
    }
    for _ in 0..8 {
        // Each volunteer asks for two units at once, then all answer at once.
        let mut leased = Vec::new();
        for _ in 0..2 {
            let got = futures::future::join_all(vols.iter().map(|vol| vol.lease(&storage))).await;
            for (vol, unit) in vols.iter().zip(got) {
                leased.extend(unit?.map(|unit| (*vol, unit)));
            }
        }
        if leased.is_empty() {
            break;
        }
        // Answered in two waves, each at once: a unit's first replica of the round, then
        // the others, which are judged with the results before them.
        let mut seen = std::collections::HashSet::new();
        let (first, others): (Vec<_>, Vec<_>) =
            leased.iter().partition(|(_, unit)| seen.insert(unit.unit));
        for wave in [first, others] {
            let answers = wave.iter().map(|(vol, unit)| {
                let lie = vol.wallet == liar.wallet;
                let output = if lie {
                    b"a lie".as_slice()
                } else {
                    unit.unit_params.as_bytes()
                };
                let tally = sent.entry(vol.wallet).or_default();
                if lie {
                    tally.1 += 1;
                } else {
                    tally.0 += 1;
                }
                vol.answer(&storage, unit.lease, output, None)
            });
            for answer in futures::future::join_all(answers).await {
                let answer = answer?;
                assert!(
                    matches!(
                        answer,
                        Recorded::Valid { .. }
                            | Recorded::Pending { .. }
                            | Recorded::Invalid { .. }
                    ),
                    "{answer:?}"
                );
            }
        }
    }
    let record = storage.job(j.id).await?.expect("job");
    assert_eq!(record.progress.units_done, 16, "every unit settled");
    assert!(sent[&liar.wallet].1 > 0, "the liar lied");
    let right: Vec<Vec<u8>> = j.units.iter().map(|u| u.as_bytes().to_vec()).collect();
    assert_eq!(
        storage.unit_outputs(j.id).await?,
        right,
        "each unit holds the honest output"
    );
    check(&storage, j.id, 2, &liar.wallet).await?;
    for vol in &vols {
        let record = storage.touch_wallet(&vol.wallet).await?;
        assert_eq!(
            (record.reliability.valid, record.reliability.invalid),
            sent[&vol.wallet],
            "a wallet's record: its right results valid, its lies invalid"
        );
        // Its record on the kernel, which vetting reads, counts the same.
        let on_kernel = engine
            .pair(
                &dir,
                &format!(
                    "SELECT CAST(valid AS BIGINT), CAST(invalid AS BIGINT) FROM wallet_kernels \
                     WHERE wallet = '{}' AND kernel = 'matmul'",
                    vol.wallet
                ),
            )
            .await?;
        let (valid, invalid) = sent[&vol.wallet];
        assert_eq!(
            on_kernel,
            (i64::from(valid), i64::from(invalid)),
            "a wallet's record on the kernel"
        );
    }
    let owed: u64 = storage.accruals().await?.iter().map(|a| a.amount.0).sum();
    let price: u64 = j.unit_flops.iter().map(|flops| flops / 1_000).sum();
    assert_eq!(owed, price, "what the units' prices owe");
    storage.pay_out_all().await?;
    storage
        .audit(&billing().key.address())
        .await
        .map_err(|e| anyhow::anyhow!("audit: {e}"))?;
    Ok(())
}

/// What leasing and judging cost the database does not grow with the network's history:
/// the buffers PostgreSQL reads for a round of leases and results (all of the database's
/// statements), a result, are about the same after 2 000 results as after 200. Each round
/// is a new job's last units (so a draw reaching past them counts what is left) and a
/// known-answer test from the history. Plans made while the tables were nearly empty,
/// and kept as they grew, once read every lease: a group's results loaded (2 ms at 3 000
/// leases), its leases written (3 ms at 20 000), a draw's count at a job's end (16 ms).
#[tokio::test]
async fn leasing_and_judging_cost_the_same_however_long_the_history() -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let dir = temp_dir("history");
    let engine = Engine::Postgres;
    let storage = open_billed(engine, &dir).await?;
    let mut db = sqlx::PgConnection::connect(&engine.url(&dir).await?).await?;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut db)
        .await?;
    let (submitter, _) = storage
        .create_account(&billing().key, MicroCredits(1_000_000_000), None)
        .await?;
    let history = History {
        storage: &storage,
        vols: (1..=8).map(Vol::new).collect(),
        auditor: Vol::new(9),
        submitter,
    };
    let (short, long) = (200, 2_000);
    let mut answered = 0;
    let mut figures = Vec::new();
    for until in [short, long] {
        while answered < until {
            history.round(&mut db).await?;
            answered += history.vols.len();
        }
        // The least of three rounds: a statement's first run also reads the catalog.
        let mut least = f64::MAX;
        for _ in 0..3 {
            least = least.min(history.round(&mut db).await?);
            answered += history.vols.len();
        }
        figures.push(least);
    }
    assert!(
        figures[1] < figures[0] * 1.5,
        "buffers read a result: {} after {short} results, {} after {long}",
        figures[0],
        figures[1]
    );
    Ok(())
}

/// Anyone can make wallets for free, and each fresh wallet may hand a unit back a few
/// times before it is cut off: so a pile of thousands of hand-backs on the oldest unit
/// costs one person nothing. Every draw passes that unit first. The buffers the
/// database reads for a draw, alone and two at once (a group), after 20 hand-backs and
/// after 1 020, stay about the same: a draw reads the unit's recent hand-backs
/// (`leases_handed_back`), never the whole pile. Before, it read them all.
#[tokio::test]
async fn a_pile_of_hand_backs_on_the_oldest_unit_costs_a_draw_no_more() -> anyhow::Result<()> {
    use sqlx::Connection as _;
    const READ: &str = "SELECT COALESCE(SUM(shared_blks_hit + shared_blks_read), 0)::bigint
         FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query NOT LIKE '%pg_stat_statements%'";
    let dir = temp_dir("hand-back-pile");
    let engine = Engine::Postgres;
    let storage = engine.open(&dir).await?;
    let mut db = sqlx::PgConnection::connect(&engine.url(&dir).await?).await?;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&mut db)
        .await?;
    storage.insert_job(&job(4, 1)).await?;
    let wallet = |i: u32| {
        let mut seed = [7u8; 32];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        Vol {
            peer: PeerId::new(),
            wallet: WalletKey::from_seed(seed).address(),
        }
    };
    let piled_at = 1_000_000;
    let drawn_at = piled_at + REPEAT_AFTER_MS + 1;
    let mut next = 0;
    let mut figures = Vec::new();
    for pile in [20, 1_020] {
        while next < pile {
            let vol = wallet(next);
            let leased = vol
                .lease_at(&storage, piled_at)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no unit to hand back"))?;
            storage.release_lease(leased.lease, vol.peer).await?;
            next += 1;
        }
        // What autovacuum does in its own time: the pile's dead row versions (each hand-back
        // updated its lease and its unit) are not what is measured.
        sqlx::query("VACUUM ANALYZE units, leases")
            .execute(&mut db)
            .await?;
        // The least of three: a statement's first run also reads the catalog.
        let mut least = i64::MAX;
        for _ in 0..3 {
            let (one, two, three) = (wallet(next), wallet(next + 1), wallet(next + 2));
            next += 3;
            let before: i64 = sqlx::query_scalar(READ).fetch_one(&mut db).await?;
            let alone = one.lease_at(&storage, drawn_at).await?;
            let (a, b) = tokio::join!(
                two.lease_at(&storage, drawn_at),
                three.lease_at(&storage, drawn_at)
            );
            let after: i64 = sqlx::query_scalar(READ).fetch_one(&mut db).await?;
            least = least.min(after - before);
            for (vol, leased) in [(one, alone), (two, a?), (three, b?)] {
                let leased = leased.ok_or_else(|| anyhow::anyhow!("no unit drawn"))?;
                storage.release_lease(leased.lease, vol.peer).await?;
            }
        }
        figures.push(least);
    }
    eprintln!("buffers read by three draws: {figures:?} (20 and 1 020 hand-backs)");
    assert!(
        (figures[1] as f64) < figures[0] as f64 * 1.5,
        "buffers read by three draws: {} with 20 hand-backs on the oldest unit, {} with 1 020",
        figures[0],
        figures[1]
    );
    Ok(())
}

/// The volunteers of [`leasing_and_judging_cost_the_same_however_long_the_history`].
struct History<'a> {
    storage: &'a Storage,
    vols: Vec<Vol>,
    /// A wallet that only takes known-answer tests.
    auditor: Vol,
    submitter: starling_relay::ledger::AccountId,
}

impl History<'_> {
    /// A new job of one unit for each volunteer, all leased (drawing as far as they
    /// may) and answered at once, with a known-answer test beside them, and the job
    /// finished; the buffers the database's statements read meanwhile, a result.
    async fn round(&self, db: &mut sqlx::PgConnection) -> anyhow::Result<f64> {
        const READ: &str = "SELECT COALESCE(SUM(shared_blks_hit + shared_blks_read), 0)::bigint
             FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND query NOT LIKE '%pg_stat_statements%'";
        let storage = self.storage;
        let new = NewJob {
            submitter: Some(self.submitter),
            ..job(self.vols.len(), 1)
        };
        storage.insert_job(&new).await?;
        let before: i64 = sqlx::query_scalar(READ).fetch_one(&mut *db).await?;
        let requests: Vec<LeaseRequest> = self
            .vols
            .iter()
            .map(|vol| LeaseRequest {
                draw: 0.99,
                ..vol.request(i64::MAX / 2)
            })
            .collect();
        let leases = requests
            .iter()
            .map(|request| storage.lease_work(request, |_, quorum| quorum));
        let audited = self.auditor.request(i64::MAX / 2);
        let (leased, canary) = tokio::join!(
            futures::future::join_all(leases),
            storage.lease_canary(&audited, 0.5)
        );
        let answers = self.vols.iter().zip(leased).map(|(vol, unit)| async move {
            let unit = unit?.ok_or_else(|| anyhow::anyhow!("no unit for a volunteer"))?;
            vol.answer(storage, unit.lease, unit.unit_params.as_bytes(), None)
                .await
        });
        let audit = async {
            match canary? {
                Some(unit) => {
                    self.auditor
                        .answer(storage, unit.lease, unit.unit_params.as_bytes(), None)
                        .await
                }
                None => Ok(Recorded::Stale("no known answer yet")),
            }
        };
        let (answers, audit) = tokio::join!(futures::future::join_all(answers), audit);
        for answer in answers {
            assert!(matches!(answer?, Recorded::Valid { .. }));
        }
        audit?;
        // As the relay does once it merged the outputs: the job is done and paid out.
        storage.finish_job(new.id, b"merged").await?;
        let after: i64 = sqlx::query_scalar(READ).fetch_one(&mut *db).await?;
        Ok((after - before) as f64 / self.vols.len() as f64)
    }
}

/// Many free wallets each earn from one job, and one payout pays them all: each gets
/// exactly what it was owed, the chain audits, and on PostgreSQL the payout reads the
/// database a few times however many wallets it pays. It used to read each entry's
/// balances and the chain's head before writing it (five round trips an entry inside the
/// writer's turn), so anyone with a thousand free wallets could make every payout stall
/// every relay's writes for a second.
async fn a_payout_to_many_wallets_pays_each_what_it_earned_in_a_few_reads(
    engine: Engine,
) -> anyhow::Result<()> {
    const WALLETS: u8 = 120;
    let dir = temp_dir("many-payees");
    let storage = open_billed(engine, &dir).await?;
    let (submitter, _) = storage
        .create_account(&billing().key, MicroCredits(1_000_000_000), None)
        .await?;
    let j = NewJob {
        submitter: Some(submitter),
        ..job(usize::from(WALLETS), 1)
    };
    storage.insert_job(&j).await?;
    for seed in 1..=WALLETS {
        let vol = Vol::new(seed);
        let leased = vol
            .lease(&storage)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no unit for wallet {seed}"))?;
        vol.answer(&storage, leased.lease, leased.unit_params.as_bytes(), None)
            .await?;
    }
    let owed = storage.accruals().await?;
    let mut expected: BTreeMap<Account, u64> = BTreeMap::new();
    for accrual in &owed {
        *expected.entry(accrual.account).or_default() += accrual.amount.0;
    }
    let wallets_owed = expected
        .keys()
        .filter(|a| matches!(a, Account::Wallet(_)))
        .count();
    anyhow::ensure!(
        wallets_owed >= usize::from(WALLETS) / 2,
        "only {wallets_owed} wallets earned anything: {owed:?}"
    );
    for (account, amount) in expected.iter_mut() {
        *amount += storage.balance(account).await?.0;
    }
    let trips = storage.writer_round_trips();
    let paid = storage.pay_out_all().await?;
    let trips = storage.writer_round_trips() - trips;
    assert_eq!(
        paid.len(),
        owed.iter().filter(|a| !a.amount.is_zero()).count(),
        "one entry an accrual"
    );
    for (account, amount) in &expected {
        assert_eq!(
            storage.balance(account).await?,
            MicroCredits(*amount),
            "{account} holds what it held and what it was owed"
        );
    }
    assert!(
        storage.accruals().await?.is_empty(),
        "nothing is owed twice"
    );
    storage
        .audit(&billing().key.address())
        .await
        .map_err(|e| anyhow::anyhow!("audit: {e}"))?;
    // The ledger's lock, the rows, the escrow, two reads of balances, the chain's head,
    // the writes sent with the commit, and the first use of each statement on this
    // connection (preparing it is a round trip): 18 here, however many wallets.
    anyhow::ensure!(
        engine == Engine::Sqlite || trips <= 24,
        "paying {} accruals took {trips} round trips to the server",
        owed.len()
    );
    Ok(())
}

async fn a_tiny_unit_of_a_priced_job_pays_its_volunteer(engine: Engine) -> anyhow::Result<()> {
    let dir = temp_dir("tiny-unit");
    let storage = open_billed(engine, &dir).await?;
    let (submitter, _) = storage
        .create_account(&billing().key, MicroCredits(1_000), None)
        .await?;
    // 100 FLOP at 1 credit per GFLOP is a tenth of a micro-credit per unit.
    let j = NewJob {
        submitter: Some(submitter),
        unit_flops: vec![100, 100],
        ..job(2, 1)
    };
    storage.insert_job(&j).await?;
    let escrow: Account = storage
        .job(j.id)
        .await?
        .and_then(|record| record.escrow)
        .ok_or_else(|| anyhow::anyhow!("a billed job has a named escrow"))?
        .account
        .parse()?;
    // What the submission escrowed is what the units pay: one micro-credit each.
    assert_eq!(storage.balance(&escrow).await?, MicroCredits(2));
    let (a, b) = (Vol::new(1), Vol::new(2));
    for vol in [a, b] {
        let leased = vol.lease(&storage).await?.expect("a unit to lease");
        vol.answer(&storage, leased.lease, leased.unit_params.as_bytes(), None)
            .await?;
    }
    storage.pay_out_all().await?;
    for vol in [a, b] {
        assert!(
            storage.balance(&Account::Wallet(vol.wallet)).await? >= MicroCredits(1),
            "a volunteer was paid nothing for a tiny unit"
        );
    }
    assert!(storage.finish_job(j.id, b"merged").await?, "job finishes");
    assert!(storage.balance(&escrow).await?.is_zero());
    assert_eq!(
        storage.balance(&Account::Submitter(submitter)).await?,
        MicroCredits(1_000 - 2)
    );
    storage
        .audit(&billing().key.address())
        .await
        .map_err(|e| anyhow::anyhow!("audit: {e}"))?;
    Ok(())
}

async fn lease_deadlines_follow_unit_cost_within_bounds(engine: Engine) -> anyhow::Result<()> {
    let dir = temp_dir("deadlines");
    let storage = engine.open(&dir).await?;
    storage.insert_job(&job(3, 1)).await?; // units of 1, 2 and 3 MFLOP
    let v = Vol::new(1);
    let terms = LeaseTerms {
        start_ms: 10_000,
        min_ms: 1_500,
        max_ms: 2_500,
        slack_ms: 500,
        ms_per_flop: 1e-3, // 1 s per MFLOP
    };
    let mut deadlines = Vec::new();
    for _ in 0..3 {
        let request = LeaseRequest {
            custom_ok: true,
            terms,
            ..v.request(0)
        };
        let leased = storage.lease_work(&request, |_, q| q).await?.expect("unit");
        deadlines.push((leased.flops, leased.deadline_ms));
    }
    // 500 + 1000 = 1500; 500 + 2000 = 2500; 500 + 3000 = 3500, capped at 2500.
    assert_eq!(
        deadlines,
        [
            (1_000_000, 11_500),
            (2_000_000, 12_500),
            (3_000_000, 12_500)
        ]
    );
    Ok(())
}

async fn a_result_counts_once_and_only_for_its_wallet(engine: Engine) -> anyhow::Result<()> {
    let dir = temp_dir("once");
    let storage = engine.open(&dir).await?;
    let j = job(2, 1);
    storage.insert_job(&j).await?;
    let (a, b) = (Vol::new(1), Vol::new(2));
    let l1 = a.lease(&storage).await?.expect("a queued unit").lease;
    assert_eq!(
        b.answer(&storage, l1, b"x", None).await?,
        Recorded::Stale("the lease was issued to another wallet")
    );
    assert_eq!(
        a.answer(&storage, l1, b"out1", None).await?,
        Recorded::Valid {
            job: j.id,
            job_complete: false
        }
    );
    assert!(matches!(
        a.answer(&storage, l1, b"out1", None).await?,
        Recorded::Stale(_)
    ));
    let l2 = a.lease(&storage).await?.expect("second unit").lease;
    assert!(a.lease(&storage).await?.is_none());
    assert_eq!(
        a.answer(&storage, l2, b"out2", None).await?,
        Recorded::Valid {
            job: j.id,
            job_complete: true
        }
    );
    assert_eq!(
        storage.unit_outputs(j.id).await?,
        vec![b"out1".to_vec(), b"out2".to_vec()]
    );
    assert!(storage.finish_job(j.id, b"merged").await?);
    assert!(
        !storage.finish_job(j.id, b"again").await?,
        "a job finishes once"
    );
    assert_eq!(
        storage.job(j.id).await?.expect("job").progress.units_done,
        2
    );
    Ok(())
}

async fn replicas_go_to_distinct_wallets_and_connections_and_the_majority_wins(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("quorum");
    let storage = engine.open(&dir).await?;
    let j = job(1, 2);
    storage.insert_job(&j).await?;
    let (a, b, c) = (Vol::new(1), Vol::new(2), Vol::new(3));
    let la = a.lease(&storage).await?.expect("first replica").lease;
    assert!(
        a.lease(&storage).await?.is_none(),
        "a wallet gets one replica"
    );
    let same_connection = Vol {
        peer: a.peer,
        wallet: Vol::new(9).wallet,
    };
    assert!(
        same_connection.lease(&storage).await?.is_none(),
        "a connection gets one replica, whatever wallet it names"
    );
    let lb = b.lease(&storage).await?.expect("second replica").lease;
    assert!(c.lease(&storage).await?.is_none(), "two replicas are out");
    assert_eq!(
        a.answer(&storage, la, b"right", None).await?,
        Recorded::Pending { job: j.id }
    );
    // Disagreement: a third replica is wanted.
    assert_eq!(
        b.answer(&storage, lb, b"wrong", None).await?,
        Recorded::Pending { job: j.id }
    );
    let lc = c.lease(&storage).await?.expect("tie-breaker").lease;
    assert_eq!(
        c.answer(&storage, lc, b"right", None).await?,
        Recorded::Valid {
            job: j.id,
            job_complete: true
        }
    );
    assert_eq!(storage.unit_outputs(j.id).await?, vec![b"right".to_vec()]);
    let rel = |v: Vol| {
        let storage = storage.clone();
        async move {
            let w = storage.wallet(&v.wallet).await?.expect("wallet");
            anyhow::Ok((w.reliability.valid, w.reliability.invalid))
        }
    };
    assert_eq!(rel(a).await?, (1, 0));
    assert_eq!(rel(b).await?, (0, 1));
    assert_eq!(rel(c).await?, (1, 0));
    Ok(())
}

/// A settled unit holds its output; the result it came from keeps no second copy, and the
/// audit still shows every valid result's bytes.
async fn a_settled_units_output_is_stored_once_and_the_audit_still_shows_it(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("stored-once");
    let storage = engine.open(&dir).await?;
    let output = vec![7u8; 16 * 1024];
    // Quorum 1: the only result is the unit's. Quorum 2: of two agreeing replicas, the
    // unit takes one's bytes and the other keeps its own.
    let (single, pair) = (job(1, 1), job(1, 2));
    storage.insert_job(&single).await?;
    storage.insert_job(&pair).await?;
    let (a, b) = (Vol::new(1), Vol::new(2));
    let l1 = a.lease(&storage).await?.expect("the single unit").lease;
    assert_eq!(
        a.answer(&storage, l1, &output, None).await?,
        Recorded::Valid {
            job: single.id,
            job_complete: true
        }
    );
    let l2 = a.lease(&storage).await?.expect("first replica").lease;
    let l3 = b.lease(&storage).await?.expect("second replica").lease;
    assert_eq!(
        a.answer(&storage, l2, &output, None).await?,
        Recorded::Pending { job: pair.id }
    );
    assert_eq!(
        b.answer(&storage, l3, &output, None).await?,
        Recorded::Valid {
            job: pair.id,
            job_complete: true
        }
    );
    for (j, valid) in [(&single, 1), (&pair, 2)] {
        assert_eq!(storage.unit_outputs(j.id).await?, vec![output.clone()]);
        let audit = storage.audit_units(j.id).await?;
        assert_eq!(audit[0].valid_outputs, vec![output.clone(); valid]);
    }
    let (without, bytes) = engine
        .pair(
            &dir,
            "SELECT COUNT(*) FILTER (WHERE output IS NULL),
                    CAST(COALESCE(SUM(length(output)), 0) AS BIGINT)
             FROM leases WHERE verdict IS NOT NULL",
        )
        .await?;
    assert_eq!(without, 2, "each unit's own result keeps no copy");
    assert_eq!(
        bytes,
        output.len() as i64,
        "only the other replica keeps its bytes"
    );
    Ok(())
}

/// Replicas' outputs are compared inside the result's transaction when they are small,
/// and by the caller, off the writer thread every write waits for, when they are large;
/// either way the majority wins.
async fn small_outputs_are_compared_on_the_writer_and_large_ones_off_it(
    engine: Engine,
) -> anyhow::Result<()> {
    for (size, on_writer) in [(64, true), (100 * 1024, false)] {
        let dir = temp_dir("compare");
        let storage = engine.open(&dir).await?;
        let j = job(1, 2);
        storage.insert_job(&j).await?;
        let (a, b, c) = (Vol::new(1), Vol::new(2), Vol::new(3));
        let threads = Arc::new(Mutex::new(Vec::<String>::new()));
        let compare: Comparison = {
            let threads = threads.clone();
            Arc::new(move |x: &[u8], y: &[u8]| {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                threads.lock().unwrap_or_else(|p| p.into_inner()).push(name);
                x == y
            })
        };
        let right = vec![1u8; size];
        let mut wrong = right.clone();
        wrong[size - 1] = 2;
        let la = a.lease(&storage).await?.expect("first replica").lease;
        let lb = b.lease(&storage).await?.expect("second replica").lease;
        let pending = Recorded::Pending { job: j.id };
        assert_eq!(
            a.answer_comparing(&storage, la, &right, None, compare.clone())
                .await?,
            pending
        );
        assert_eq!(
            b.answer_comparing(&storage, lb, &wrong, None, compare.clone())
                .await?,
            pending,
            "{size} bytes: a disagreement wants a third replica"
        );
        let lc = c.lease(&storage).await?.expect("tie-breaker").lease;
        assert_eq!(
            c.answer_comparing(&storage, lc, &right, None, compare.clone())
                .await?,
            Recorded::Valid {
                job: j.id,
                job_complete: true
            },
            "{size} bytes"
        );
        assert_eq!(storage.unit_outputs(j.id).await?, vec![right]);
        let threads = threads.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert!(!threads.is_empty(), "{size} bytes: outputs were compared");
        let writer = threads.iter().filter(|t| *t == "starling-writer").count();
        if on_writer {
            assert_eq!(writer, threads.len(), "{size} bytes: {threads:?}");
        } else {
            assert_eq!(writer, 0, "{size} bytes: {threads:?}");
        }
    }
    Ok(())
}

/// A wallet made trusted by fourteen valid results of a job of its own.
async fn trusted_wallet(storage: &Storage, seed: u8) -> anyhow::Result<Vol> {
    storage.insert_job(&job(14, 1)).await?;
    let trusted = Vol::new(seed);
    for _ in 0..14 {
        let l = trusted.lease(storage).await?.expect("unit").lease;
        trusted.answer(storage, l, b"ok", None).await?;
    }
    let standing = storage.wallet(&trusted.wallet).await?.expect("wallet");
    anyhow::ensure!(standing.reliability.trusted(), "{standing:?}");
    Ok(trusted)
}

async fn a_unit_meant_for_a_trusted_wallet_alone_still_needs_a_quorum_from_anyone_else(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("adaptive");
    let storage = engine.open(&dir).await?;
    let trusted = trusted_wallet(&storage, 1).await?;

    let j = job(1, 2);
    storage.insert_job(&j).await?;
    // Adaptive replication gives the trusted wallet the unit alone...
    let lost = storage
        .lease_work(&trusted.request(i64::MAX / 2), |_, _| 1)
        .await?
        .expect("unit");
    // ...but it disconnects, and a newcomer gets the unit: one result is not enough.
    storage.release_peer(trusted.peer).await?;
    let newcomer = Vol::new(2);
    let l = newcomer.lease(&storage).await?.expect("requeued").lease;
    assert_eq!(
        newcomer.answer(&storage, l, b"x", None).await?,
        Recorded::Pending { job: j.id }
    );
    // The trusted wallet's own late result settles it alone.
    assert!(matches!(
        trusted.answer(&storage, lost.lease, b"x", None).await?,
        Recorded::Valid { .. }
    ));
    Ok(())
}

async fn lost_leases_are_requeued_and_a_late_result_still_counts(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("requeue");
    let storage = engine.open(&dir).await?;
    let j = job(2, 1);
    storage.insert_job(&j).await?;
    let (a, b) = (Vol::new(1), Vol::new(2));
    let expired = storage
        .lease_work(&a.request(1_000), |_, q| q)
        .await?
        .expect("unit")
        .lease;
    let orphaned = b.lease(&storage).await?.expect("unit").lease;
    assert_eq!(
        storage.release_lease(orphaned, a.peer).await?,
        None,
        "only the holder can hand a lease back"
    );
    assert_eq!(storage.expire_leases(2_000).await?, 1);
    assert_eq!(storage.release_peer(b.peer).await?, 1);
    // Both units are back in the queue...
    let c = Vol::new(3);
    let again = c.lease(&storage).await?.expect("requeued");
    // ...but the expired lease's result arrives first and is right: it settles the unit,
    // and the reissued lease's answer is then stale.
    assert!(matches!(
        a.answer(&storage, expired, b"late", None).await?,
        Recorded::Valid { .. }
    ));
    assert!(matches!(
        c.answer(&storage, again.lease, b"late", None).await?,
        Recorded::Stale(_)
    ));
    assert_eq!(
        storage.job(j.id).await?.expect("job").progress.units_done,
        1
    );
    Ok(())
}

async fn known_answer_leases_catch_a_lying_wallet_which_ends_quarantined(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("canary");
    let storage = engine.open(&dir).await?;
    let j = job(5, 1);
    storage.insert_job(&j).await?;
    let honest = Vol::new(1);
    for i in 0..5u8 {
        let l = honest.lease(&storage).await?.expect("unit").lease;
        honest.answer(&storage, l, &[i], None).await?;
    }
    let liar = Vol::new(2);
    for round in 0..3 {
        let canary = storage
            .lease_canary(&liar.request(i64::MAX), 0.5)
            .await?
            .expect("a settled unit the liar never saw");
        assert!(canary.canary);
        assert_eq!(
            liar.answer(&storage, canary.lease, b"lie", None).await?,
            Recorded::Canary { passed: false },
            "round {round}"
        );
    }
    let record = storage.wallet(&liar.wallet).await?.expect("wallet");
    assert_eq!(record.reliability.invalid, 3);
    assert!(record.quarantined, "{record:?}");
    // An honest wallet passes its known-answer test.
    let newcomer = Vol::new(3);
    let canary = storage
        .lease_canary(&newcomer.request(i64::MAX), 0.0)
        .await?
        .expect("canary");
    let known = storage.unit_outputs(j.id).await?;
    let idx: usize = serde_json::from_str::<serde_json::Value>(&canary.unit_params)?["i"]
        .as_u64()
        .unwrap_or(0) as usize;
    assert_eq!(
        newcomer
            .answer(&storage, canary.lease, &known[idx], None)
            .await?,
        Recorded::Canary { passed: true }
    );
    Ok(())
}

async fn a_probes_units_go_as_known_answer_tests_newest_probe_first_each_to_one_wallet(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("probes");
    let storage = engine.open(&dir).await?;
    // A real job's settled unit, which no canary may take while a probe has one left.
    let j = job(1, 1);
    storage.insert_job(&j).await?;
    let honest = Vol::new(1);
    let l = honest.lease(&storage).await?.expect("unit").lease;
    honest.answer(&storage, l, b"real", None).await?;
    let probe = |units: usize| NewProbe {
        id: JobId::from_uuid(uuid::Uuid::new_v4()),
        kernel: "matmul".into(),
        params: serde_json::json!({}),
        input: Vec::new(),
        units: (0..units)
            .map(|idx| ProbeUnit {
                idx,
                params: format!("{{\"i\":{idx}}}"),
                flops: 1_000,
                output: vec![idx as u8],
            })
            .collect(),
    };
    let (older, newer) = (probe(2), probe(1));
    let (older_id, newer_id) = (older.id, newer.id);
    storage.insert_probe(older).await?;
    storage.insert_probe(newer).await?;
    let mut leased = Vec::new();
    for seed in 2..5u8 {
        let canary = storage
            .lease_canary(&Vol::new(seed).request(i64::MAX), 0.0)
            .await?
            .expect("a probe's unit");
        assert!(canary.canary);
        leased.push((canary.job, canary.unit));
    }
    assert_eq!(leased[0].0, newer_id, "the newest probe first");
    assert_eq!((leased[1].0, leased[2].0), (older_id, older_id));
    assert_ne!(leased[1].1, leased[2].1, "a probe's unit went twice");
    // Probes spent: a settled unit of a real job the wallet never saw.
    let canary = storage
        .lease_canary(&Vol::new(5).request(i64::MAX), 0.0)
        .await?
        .expect("the real job's unit");
    assert_eq!(canary.job, j.id);
    Ok(())
}

async fn a_reopened_database_keeps_settled_units_and_voids_leases(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("reopen");
    let j = job(3, 1);
    let v = Vol::new(1);
    let held;
    {
        let storage = engine.open(&dir).await?;
        storage.insert_job(&j).await?;
        let done = v.lease(&storage).await?.expect("unit").lease;
        v.answer(&storage, done, b"kept", None).await?;
        held = v.lease(&storage).await?.expect("unit").lease;
    }
    let storage = engine.open(&dir).await?;
    assert_eq!(storage.recover_leases().await?, 1);
    let record = storage.job(j.id).await?.expect("job survives");
    assert_eq!(
        (record.progress.units_done, record.progress.units_leased),
        (1, 0)
    );
    let units = storage.audit_units(j.id).await?;
    assert_eq!(units[0].output, Some(b"kept".to_vec()));
    assert_eq!(units[0].valid_outputs, vec![b"kept".to_vec()]);
    // The lease was voided, but its unit is still open: a signed result that turns up
    // now still counts (a relay restart loses no work that reaches it).
    assert!(matches!(
        v.answer(&storage, held, b"late", None).await?,
        Recorded::Valid { .. }
    ));
    Ok(())
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Step {
    /// Volunteer `v` asks for work.
    Lease(usize),
    /// Every volunteer asks for work at once (on PostgreSQL, drawn together).
    LeaseTogether,
    /// Volunteer `v` answers its oldest held lease (honestly unless it is a cheater).
    Answer(usize),
    /// Volunteer `v` answers its oldest held lease twice.
    Duplicate(usize),
    /// Volunteer `v` disconnects.
    Leave(usize),
    /// Every lease expires.
    Expire,
    /// The relay restarts.
    Restart,
    /// What settled units earned is paid into the ledger.
    PayOut,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..5usize).prop_map(Step::Lease),
        2 => Just(Step::LeaseTogether),
        4 => (0..5usize).prop_map(Step::Answer),
        1 => (0..5usize).prop_map(Step::Duplicate),
        1 => (0..5usize).prop_map(Step::Leave),
        1 => Just(Step::Expire),
        1 => Just(Step::Restart),
        1 => Just(Step::PayOut),
    ]
}

fn billing() -> Billing {
    Billing {
        key: WalletKey::from_seed([42; 32]),
        pricing: Pricing {
            // 1 credit per GFLOP: units of 1 to 4 MFLOP cost 1000 to 4000 micro-credits.
            price_per_gflop: MicroCredits(1_000_000),
            site_share_ppm: 100_000,
            platform_fee_ppm: 50_000,
        },
    }
}

/// Opens the database with billing on, as the relay does.
async fn open_billed(engine: Engine, dir: &std::path::Path) -> anyhow::Result<Storage> {
    Ok(engine.open(dir).await?.with_billing(billing()))
}

/// Invariants checked after every step.
async fn check(
    storage: &Storage,
    job: JobId,
    quorum: usize,
    cheater: &WalletAddress,
) -> anyhow::Result<()> {
    // The ledger's chain, signatures and conservation hold.
    storage
        .audit(&billing().key.address())
        .await
        .map_err(|e| anyhow::anyhow!("audit: {e}"))?;
    // Every settled unit earned each of its valid wallets an equal, positive share, and
    // what each wallet earned is in the ledger (paid out, referencing its escrow) or still
    // accrued: no more, no less.
    let entries = storage.ledger_page(0, 100_000).await?;
    let audit = storage.audit_units(job).await?;
    let accruals = storage.accruals().await?;
    let mut earned: BTreeMap<String, u64> = BTreeMap::new();
    for unit in &audit {
        anyhow::ensure!(
            unit.valid_wallets.is_empty() != unit.done,
            "unit {}: valid results {:?} but done {}",
            unit.idx,
            unit.valid_wallets,
            unit.done
        );
        anyhow::ensure!(
            unit.valid_paid_micro.iter().all(|&m| m > 0)
                && unit.valid_paid_micro.windows(2).all(|w| w[0] == w[1]),
            "unit {}: shares {:?}",
            unit.idx,
            unit.valid_paid_micro
        );
        for (wallet, micro) in unit.valid_wallets.iter().zip(&unit.valid_paid_micro) {
            *earned.entry(format!("wallet:{wallet}")).or_default() += micro;
        }
    }
    // Payments name the job's escrow, not the job (its public name keeps the ledger from
    // saying whose job it is).
    let escrow = storage
        .job(job)
        .await?
        .and_then(|record| record.escrow)
        .map_or_else(|| job.to_string(), |e| e.account.replacen("escrow:", "", 1));
    let mut credited: BTreeMap<String, u64> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| e.reason == Reason::Pay && e.reference == escrow)
    {
        *credited.entry(e.credit.to_string()).or_default() += e.amount.0;
    }
    for a in accruals
        .iter()
        .filter(|a| a.reason == Reason::Pay && a.job == job)
    {
        *credited.entry(a.account.to_string()).or_default() += a.amount.0;
    }
    anyhow::ensure!(
        credited == earned,
        "paid or owed {credited:?}, earned {earned:?}"
    );
    if quorum >= 2 {
        let balance = storage.balance(&Account::Wallet(*cheater)).await?;
        anyhow::ensure!(balance.is_zero(), "a wrong result was paid: {balance}");
    }
    let done = audit.iter().filter(|u| u.done).count();
    let record = storage.job(job).await?.expect("job");
    anyhow::ensure!(
        record.progress.units_done as usize == done,
        "units_done drifted"
    );
    for unit in &audit {
        let mut wallets = unit.result_wallets.clone();
        wallets.sort();
        wallets.dedup();
        anyhow::ensure!(
            wallets.len() == unit.result_wallets.len(),
            "one wallet answered unit {} twice",
            unit.idx
        );
        if unit.done {
            anyhow::ensure!(
                unit.valid_outputs.len() >= quorum,
                "unit {} settled with {} valid results",
                unit.idx,
                unit.valid_outputs.len()
            );
            anyhow::ensure!(
                unit.valid_outputs
                    .iter()
                    .all(|o| Some(o) == unit.output.as_ref()),
                "unit {} settled on an output its valid results do not share",
                unit.idx
            );
        } else {
            anyhow::ensure!(
                unit.valid_outputs.is_empty(),
                "open unit with valid results"
            );
        }
        anyhow::ensure!(unit.active_leases <= 5, "unit {} over-leased", unit.idx);
    }
    Ok(())
}

/// Random interleavings of leases, honest and wrong answers, duplicates, departures,
/// expiries and restarts never settle a unit without a quorum of agreeing results
/// from distinct wallets, never count a unit twice, and with one cheater among five
/// wallets never settle on a wrong output; after the chaos, honest volunteers finish
/// the job with the right outputs.
async fn random_event_orders(engine: Engine, steps: Vec<Step>, quorum: u32) -> anyhow::Result<()> {
    let dir = temp_dir("prop");
    let mut storage = open_billed(engine, &dir).await?;
    let (submitter, _) = storage
        .create_account(&billing().key, MicroCredits(1_000_000), None)
        .await?;
    let j = NewJob {
        submitter: Some(submitter),
        ..job(4, quorum)
    };
    storage.insert_job(&j).await?;
    // Volunteer 0 cheats: it answers every unit wrongly.
    let mut vols: Vec<Vol> = (0..5).map(|i| Vol::new(i as u8 + 1)).collect();
    let mut held: Vec<Vec<(LeaseId, String)>> = vec![Vec::new(); 5];
    let answer_for = |v: usize, params: &str| -> Vec<u8> {
        let mut out = params.as_bytes().to_vec();
        if v == 0 && quorum >= 2 {
            out.push(b'!');
        }
        out
    };
    // The units (by parameters) each volunteer answered: it may never have them again.
    let mut answered: Vec<Vec<String>> = vec![Vec::new(); 5];
    for s in steps {
        match s {
            Step::Lease(v) => {
                if let Some(l) = vols[v].lease(&storage).await? {
                    held[v].push((l.lease, l.unit_params));
                }
            }
            Step::LeaseTogether => {
                let asks = futures::future::join_all(vols.iter().map(|vol| vol.lease(&storage)));
                for (v, leased) in asks.await.into_iter().enumerate() {
                    if let Some(l) = leased? {
                        held[v].push((l.lease, l.unit_params));
                    }
                }
            }
            Step::Answer(v) | Step::Duplicate(v) => {
                if !held[v].is_empty() {
                    let (lease, params) = held[v].remove(0);
                    answered[v].push(params.clone());
                    let out = answer_for(v, &params);
                    vols[v].answer(&storage, lease, &out, None).await?;
                    if matches!(s, Step::Duplicate(_)) {
                        let again = vols[v].answer(&storage, lease, &out, None).await?;
                        anyhow::ensure!(matches!(again, Recorded::Stale(_)), "{again:?}");
                    }
                }
            }
            Step::Leave(v) => {
                storage.release_peer(vols[v].peer).await?;
                held[v].clear();
                vols[v].peer = PeerId::new();
            }
            Step::Expire => {
                storage.expire_leases(i64::MAX).await?;
            }
            Step::PayOut => {
                storage.pay_out_all().await?;
            }
            Step::Restart => {
                drop(storage);
                storage = open_billed(engine, &dir).await?;
                storage.recover_leases().await?;
                for (v, h) in held.iter_mut().enumerate() {
                    h.clear();
                    vols[v].peer = PeerId::new();
                }
            }
        }
        check(&storage, j.id, quorum as usize, &vols[0].wallet).await?;
        // A wallet never holds two replicas of a unit, nor one it answered.
        for (v, held) in held.iter().enumerate() {
            let mut units: Vec<&String> = held.iter().map(|(_, params)| params).collect();
            anyhow::ensure!(
                !units.iter().any(|u| answered[v].contains(u)),
                "volunteer {v} was leased a unit it answered"
            );
            units.sort();
            units.dedup();
            anyhow::ensure!(
                units.len() == held.len(),
                "volunteer {v} holds a unit twice"
            );
        }
    }
    // Leases still held run out, and honest volunteers 1-4 finish the job, later:
    // a unit a wallet handed back goes to it again only after a while.
    storage.expire_leases(i64::MAX).await?;
    let later = i64::MAX / 2 + 2 * starling_relay::storage::REPEAT_AFTER_MS;
    for _ in 0..40 {
        for (v, vol) in vols.iter().enumerate().skip(1) {
            if let Some(l) = vol.lease_at(&storage, later).await? {
                let out = answer_for(v, &l.unit_params);
                vol.answer(&storage, l.lease, &out, None).await?;
            }
        }
    }
    check(&storage, j.id, quorum as usize, &vols[0].wallet).await?;
    let record = storage.job(j.id).await?.expect("job");
    anyhow::ensure!(
        record.progress.units_done == 4,
        "job did not finish: {record:?}"
    );
    for (i, out) in storage.unit_outputs(j.id).await?.iter().enumerate() {
        anyhow::ensure!(
            out == &format!("{{\"i\":{i}}}").into_bytes(),
            "unit {i} wrong"
        );
    }
    // Finishing refunds what escrow has left: the submitter paid exactly the
    // units' prices (1 + 2 + 3 + 4 MFLOP at 1 credit per GFLOP).
    anyhow::ensure!(storage.finish_job(j.id, b"merged").await?, "job finishes");
    let escrow: Account = record
        .escrow
        .as_ref()
        .map(|e| e.account.parse())
        .transpose()?
        .ok_or_else(|| anyhow::anyhow!("a billed job has a named escrow"))?;
    anyhow::ensure!(storage.balance(&escrow).await?.is_zero(), "escrow left");
    let left = storage.balance(&Account::Submitter(submitter)).await?;
    anyhow::ensure!(
        left == MicroCredits(1_000_000 - 10_000),
        "submitter holds {left}"
    );
    check(&storage, j.id, quorum as usize, &vols[0].wallet).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn run_random_event_orders(
    engine: Engine,
    steps: Vec<Step>,
    quorum: u32,
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(random_event_orders(engine, steps, quorum))
        .map_err(|e| TestCaseError::fail(e.to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_event_orders_keep_the_state_machine_legal_on_sqlite(
        steps in proptest::collection::vec(step(), 1..50),
        quorum in 1u32..=2,
    ) {
        run_random_event_orders(Engine::Sqlite, steps, quorum)?;
    }
}

proptest! {
    // Fewer cases: each one makes a database of its own on the server.
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn random_event_orders_keep_the_state_machine_legal_on_postgres(
        steps in proptest::collection::vec(step(), 1..50),
        quorum in 1u32..=2,
    ) {
        run_random_event_orders(Engine::Postgres, steps, quorum)?;
    }
}

/// A database file in `dir` with every migration before 0013 applied and no rows.
async fn database_before_0013(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    // The schema as it was: every migration before 0013.
    let old = dir.join("migrations");
    std::fs::create_dir_all(&old)?;
    let mut copied = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name
            .as_bytes()
            .get(..4)
            .is_some_and(|v| v < b"0013".as_slice())
        {
            std::fs::copy(&path, old.join(name))?;
            copied += 1;
        }
    }
    assert_eq!(copied, 12);
    let file = dir.join("starling.sqlite3");
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await?;
        sqlx::migrate::Migrator::new(old.as_path())
            .await?
            .run(&pool)
            .await?;
        pool.close().await;
    }
    Ok(file)
}

/// A database from before results moved into their leases' rows (migration 0013) keeps
/// every result: the audit still shows them, a wallet that answered a unit is still never
/// given it again, and a result left pending still counts towards its unit's quorum.
#[tokio::test]
async fn results_stored_before_the_upgrade_still_count() -> anyhow::Result<()> {
    let dir = temp_dir("upgrade");
    let file = database_before_0013(&dir).await?;
    let (one, two, newcomer) = (Vol::new(1), Vol::new(2), Vol::new(3));
    let job = JobId::from_uuid(uuid::Uuid::new_v4());
    let output = vec![7u8; 16];
    let id = || uuid::Uuid::new_v4().to_string();
    let (u0, u1) = (id(), id());
    let (l0, l1, l2) = (id(), id(), id());
    {
        let db = rusqlite::Connection::open(&file)?;
        db.execute(
            "INSERT INTO jobs (id, kernel, params, state, units_total, units_done, flops, quorum,
                               created_ms, updated_ms)
             VALUES (?1, 'matmul', '{\"m\":1,\"k\":1,\"n\":1}', 'running', 2, 1, 2, 2, 0, 0)",
            [job.to_string()],
        )?;
        // Unit 0 settled on two agreeing results (the canonical one kept no copy); unit 1
        // has one result waiting for its replica.
        db.execute(
            "INSERT INTO units (id, job_id, idx, params, flops, state, quorum, wanted, output)
             VALUES (?3, ?1, 0, '{\"i\":0}', 1000, 'done', 2, 2, ?2),
                    (?4, ?1, 1, '{\"i\":1}', 1000, 'queued', 2, 2, NULL)",
            rusqlite::params![job.to_string(), output, u0, u1],
        )?;
        for (lease, unit, vol) in [(&l0, &u0, one), (&l1, &u0, two), (&l2, &u1, one)] {
            db.execute(
                "INSERT INTO leases (id, unit_id, peer, wallet, kind, state, issued_ms, deadline_ms)
                 VALUES (?1, ?2, ?3, ?4, 'work', 'returned', 0, 1)",
                rusqlite::params![lease, unit, vol.peer.to_string(), vol.wallet.to_string()],
            )?;
        }
        db.execute(
            "INSERT INTO results (lease_id, unit_id, wallet, output, trusted, state, received_ms)
             VALUES (?4, ?7, ?1, NULL, 0, 'valid', 1),
                    (?5, ?7, ?2, ?3, 0, 'valid', 2),
                    (?6, ?8, ?1, ?3, 0, 'pending', 3)",
            rusqlite::params![
                one.wallet.to_string(),
                two.wallet.to_string(),
                output,
                l0,
                l1,
                l2,
                u0,
                u1
            ],
        )?;
    }

    let storage = Storage::open(&dir).await?;
    let audit = storage.audit_units(job).await?;
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].valid_outputs, vec![output.clone(); 2]);
    assert_eq!(
        audit[0].valid_wallets,
        vec![one.wallet.to_string(), two.wallet.to_string()]
    );
    assert_eq!(audit[1].result_wallets, vec![one.wallet.to_string()]);
    assert!(audit[1].valid_outputs.is_empty());
    // Wallet one answered unit 1 before the upgrade: it gets nothing; wallet two does.
    assert!(one.lease(&storage).await?.is_none());
    let leased = two.lease(&storage).await?.expect("unit 1 needs a replica");
    assert!(
        newcomer.lease(&storage).await?.is_none(),
        "one replica is enough"
    );
    assert_eq!(
        two.answer(&storage, leased.lease, &output, None).await?,
        Recorded::Valid {
            job,
            job_complete: true
        }
    );
    let audit = storage.audit_units(job).await?;
    assert_eq!(audit[1].valid_outputs, vec![output.clone(); 2]);
    assert_eq!(storage.unit_outputs(job).await?, vec![output.clone(); 2]);
    Ok(())
}

/// An upgrade that leaves a row pointing at nothing (the migrations run with foreign keys
/// off) stops the relay at start with an error naming the table, instead of running on.
#[tokio::test]
async fn an_upgrade_that_leaves_a_dangling_row_refuses_to_start() -> anyhow::Result<()> {
    let dir = temp_dir("upgrade-dangling");
    let file = database_before_0013(&dir).await?;
    {
        let db = rusqlite::Connection::open(&file)?;
        // As a bug in a migration could leave it: a lease of a unit that does not exist.
        db.pragma_update(None, "foreign_keys", "OFF")?;
        db.execute(
            "INSERT INTO leases (id, unit_id, peer, wallet, kind, state, issued_ms, deadline_ms)
             VALUES (?1, ?2, 'p', 'w', 'work', 'active', 0, 1)",
            [
                uuid::Uuid::new_v4().to_string(),
                uuid::Uuid::new_v4().to_string(),
            ],
        )?;
    }
    let refused = Storage::open(&dir).await.err().map(|e| e.to_string());
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("leases")),
        "{refused:?}"
    );
    Ok(())
}

async fn a_handed_back_unit_goes_to_another_wallet_and_a_fresh_wallet_cannot_fail_it(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("hand-back");
    let storage = engine.open(&dir).await?;
    storage.insert_job(&job(1, 1)).await?;
    let (a, b) = (Vol::new(1), Vol::new(2));
    storage.touch_wallet(&a.wallet).await?;
    let leased = a.lease(&storage).await?.expect("a unit to lease");
    let lost = storage.release_lease(leased.lease, a.peer).await?;
    assert_eq!(
        lost.map(|(_, attempts)| attempts),
        Some(0),
        "a fresh wallet's hand-back does not count toward failing the job"
    );
    assert!(
        a.lease(&storage).await?.is_none(),
        "the unit does not go straight back to the wallet that handed it back"
    );
    let again = b.lease(&storage).await?.expect("another wallet gets it");
    assert_eq!(again.unit, leased.unit);
    let record = storage.wallet(&a.wallet).await?.expect("a known wallet");
    assert_eq!(record.handbacks, 1);
    assert!(!record.quarantined);
    Ok(())
}

async fn a_wallet_that_hands_back_more_than_it_computes_is_cut_off(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("cut-off");
    let storage = engine.open(&dir).await?;
    storage.insert_job(&job(12, 1)).await?;
    let a = Vol::new(3);
    storage.touch_wallet(&a.wallet).await?;
    // Read once, so the standings cache holds the wallet and must learn of the cut-off.
    assert!(!storage.standing(&a.wallet).await?.1);
    for handed_back in 1..=9 {
        let leased = a.lease(&storage).await?.expect("a unit to lease");
        storage.release_lease(leased.lease, a.peer).await?;
        let quarantined = storage.standing(&a.wallet).await?.1;
        assert_eq!(
            quarantined,
            handed_back > 8,
            "after {handed_back} hand-backs"
        );
    }
    Ok(())
}

async fn a_quorum_the_submitter_named_is_never_lowered_by_trust(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("explicit-quorum");
    let storage = engine.open(&dir).await?;
    let trusted = trusted_wallet(&storage, 1).await?;

    // The submitter asked for two wallets per unit: adaptive replication would give a
    // trusted wallet the unit alone, and a passed spot check would settle it.
    let j = NewJob {
        quorum_explicit: true,
        ..job(1, 2)
    };
    storage.insert_job(&j).await?;
    let alone = storage
        .lease_work(&trusted.request(i64::MAX / 2), |_, _| 1)
        .await?
        .expect("unit");
    assert_eq!(
        trusted
            .answer(&storage, alone.lease, b"x", Some(true))
            .await?,
        Recorded::Pending { job: j.id },
        "one trusted, checked result does not settle a unit whose job asked for two"
    );
    let second = Vol::new(2);
    let l = second
        .lease(&storage)
        .await?
        .expect("the unit's second replica")
        .lease;
    assert!(matches!(
        second.answer(&storage, l, b"x", None).await?,
        Recorded::Valid { .. }
    ));
    Ok(())
}

async fn a_purged_jobs_units_are_never_sent_again_as_known_answer_tests(
    engine: Engine,
) -> anyhow::Result<()> {
    use starling_relay::storage::job_queries::{Erase, Purged};
    let dir = temp_dir("purged-canary");
    let storage = engine.open(&dir).await?;
    let j = job(1, 1);
    storage.insert_job(&j).await?;
    let worker = Vol::new(1);
    let l = worker.lease(&storage).await?.expect("unit").lease;
    worker.answer(&storage, l, b"ok", None).await?;
    assert!(storage.finish_job(j.id, b"merged").await?, "job finishes");
    let other = Vol::new(2);
    // While the job's data is kept, its settled unit can come back as a known answer...
    let canary = storage
        .lease_canary(&other.request(i64::MAX / 2), 0.0)
        .await?
        .expect("a settled unit to test with");
    storage.release_lease(canary.lease, other.peer).await?;
    // ...and once its inputs are purged (by retention, or with everything), never again.
    assert_eq!(
        storage.purge_job_data(j.id, Erase::Inputs).await?,
        Purged::Now
    );
    let third = Vol::new(3);
    assert!(storage
        .lease_canary(&third.request(i64::MAX / 2), 0.0)
        .await?
        .is_none());
    Ok(())
}

/// Judging as a relay does by default: a quorum needs an anchor.
const VETTING: Judging = Judging {
    max_results: 6,
    vet_newcomers: true,
};

impl Vol {
    /// A result judged as a relay with vetting judges it, with `reference` as its run.
    async fn answer_vetted(
        &self,
        storage: &Storage,
        lease: LeaseId,
        output: &[u8],
        reference: Reference,
    ) -> anyhow::Result<Recorded> {
        let result = ReturnedResult {
            lease,
            wallet: self.wallet,
            output,
            spot_check: None,
        };
        Ok(storage
            .record_result(result, VETTING, Arc::new(same), reference)
            .await?)
    }

    /// A lease from `network`.
    async fn lease_from(
        &self,
        storage: &Storage,
        network: &str,
    ) -> anyhow::Result<Option<LeasedUnit>> {
        let rule = NetworkRule {
            loopback_is_one_network: true,
            ..NetworkRule::default()
        };
        let request = LeaseRequest {
            custom_ok: true,
            network: rule.network_of(network.parse()?),
            ..self.request(i64::MAX / 2)
        };
        Ok(storage.lease_work(&request, |_, q| q).await?)
    }
}

async fn vetting_two_fresh_wallets_agreeing_on_a_lie_settle_nothing(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("vetting-colluders");
    let storage = engine.open(&dir).await?;
    let j = job(1, 2);
    storage.insert_job(&j).await?;
    let (a, b) = (Vol::new(1), Vol::new(2));
    let la = a.lease(&storage).await?.expect("unit");
    let lb = b.lease(&storage).await?.expect("replica");
    assert_eq!(
        a.answer_vetted(&storage, la.lease, b"pi=4", Reference::NotRun)
            .await?,
        Recorded::Pending { job: j.id }
    );
    // The second lie would complete a quorum of newcomers: the relay's run decides.
    assert_eq!(
        b.answer_vetted(&storage, lb.lease, b"pi=4", Reference::NotRun)
            .await?,
        Recorded::NeedsReference
    );
    let judged = b
        .answer_vetted(
            &storage,
            lb.lease,
            b"pi=4",
            Reference::Output(b"pi=3".to_vec()),
        )
        .await?;
    assert!(matches!(judged, Recorded::Invalid { .. }), "{judged:?}");
    let units = storage.audit_units(j.id).await?;
    assert!(!units[0].done, "the lie settled the unit");
    for wallet in [a.wallet, b.wallet] {
        let record = storage.wallet(&wallet).await?.expect("judged");
        assert_eq!(record.reliability.invalid, 1, "{record:?}");
    }
    // The unit goes out again, and an honest newcomer checked by the reference settles it.
    let c = Vol::new(3);
    let lc = c.lease(&storage).await?.expect("the unit again");
    let d = Vol::new(4);
    let ld = d.lease(&storage).await?.expect("its replica");
    c.answer_vetted(&storage, lc.lease, b"pi=3", Reference::NotRun)
        .await?;
    assert_eq!(
        d.answer_vetted(&storage, ld.lease, b"pi=3", Reference::NotRun)
            .await?,
        Recorded::NeedsReference
    );
    let settled = d
        .answer_vetted(
            &storage,
            ld.lease,
            b"pi=3",
            Reference::Output(b"pi=3".to_vec()),
        )
        .await?;
    assert!(
        matches!(
            settled,
            Recorded::Valid {
                job_complete: true,
                ..
            }
        ),
        "{settled:?}"
    );
    Ok(())
}

async fn vetting_a_wallet_with_a_record_anchors_a_newcomer_without_a_reference(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("vetting-anchor");
    let storage = engine.open(&dir).await?;
    let (veteran, newcomer) = (Vol::new(1), Vol::new(2));
    // Three units checked by the reference vet the first wallet on this kernel.
    for _ in 0..3 {
        storage.insert_job(&job(1, 1)).await?;
        let leased = veteran.lease(&storage).await?.expect("unit");
        let recorded = veteran
            .answer_vetted(
                &storage,
                leased.lease,
                b"ok",
                Reference::Output(b"ok".to_vec()),
            )
            .await?;
        assert!(matches!(recorded, Recorded::Valid { .. }), "{recorded:?}");
    }
    let j = job(1, 2);
    storage.insert_job(&j).await?;
    let first = newcomer.lease(&storage).await?.expect("unit");
    let second = veteran.lease(&storage).await?.expect("replica");
    newcomer
        .answer_vetted(&storage, first.lease, b"ok", Reference::NotRun)
        .await?;
    let recorded = veteran
        .answer_vetted(&storage, second.lease, b"ok", Reference::NotRun)
        .await?;
    assert!(
        matches!(
            recorded,
            Recorded::Valid {
                job_complete: true,
                ..
            }
        ),
        "a vetted wallet anchors the quorum: {recorded:?}"
    );
    Ok(())
}

async fn vetting_trust_earned_on_one_kernel_does_not_settle_another_alone(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("vetting-per-kernel");
    let storage = engine.open(&dir).await?;
    let w = Vol::new(1);
    // Trusted on matmul: valid results checked by the reference until trusted there.
    for _ in 0..20 {
        storage.insert_job(&job(1, 1)).await?;
        let leased = w.lease(&storage).await?.expect("unit");
        w.answer_vetted(
            &storage,
            leased.lease,
            b"ok",
            Reference::Output(b"ok".to_vec()),
        )
        .await?;
    }
    assert!(storage
        .wallet(&w.wallet)
        .await?
        .expect("known")
        .reliability
        .trusted());
    // A montecarlo job of quorum 2, its unit leased as to a trusted wallet (quorum 1).
    let j = NewJob {
        kernel: "montecarlo".into(),
        ..job(1, 2)
    };
    storage.insert_job(&j).await?;
    let leased = storage
        .lease_work(&w.request(i64::MAX / 2), |_, _| 1)
        .await?
        .expect("unit");
    let recorded = w
        .answer_vetted(&storage, leased.lease, b"pi=4", Reference::NotRun)
        .await?;
    assert_eq!(
        recorded,
        Recorded::Pending { job: j.id },
        "a matmul record settled a montecarlo unit alone"
    );
    Ok(())
}

async fn one_network_holds_one_replica_of_a_unit(engine: Engine) -> anyhow::Result<()> {
    let dir = temp_dir("networks");
    let storage = engine.open(&dir).await?;
    storage.insert_job(&job(1, 2)).await?;
    let (a, b, c) = (Vol::new(1), Vol::new(2), Vol::new(3));
    assert!(a.lease_from(&storage, "203.0.113.5").await?.is_some());
    // Another wallet of the same /24 (or the same machine, with loopback one network).
    assert!(
        b.lease_from(&storage, "203.0.113.99").await?.is_none(),
        "two replicas went to one network"
    );
    assert!(c.lease_from(&storage, "198.51.100.7").await?.is_some());
    // Loopback counts as one network when the rule says so.
    storage.insert_job(&job(1, 2)).await?;
    assert!(a.lease_from(&storage, "127.0.0.1").await?.is_some());
    assert!(b.lease_from(&storage, "127.0.0.2").await?.is_none());
    Ok(())
}

async fn vetting_compares_large_outputs_with_the_reference_off_the_writer(
    engine: Engine,
) -> anyhow::Result<()> {
    let dir = temp_dir("vetting-large");
    let storage = engine.open(&dir).await?;
    let j = job(1, 2);
    storage.insert_job(&j).await?;
    let (a, b) = (Vol::new(1), Vol::new(2));
    let la = a.lease(&storage).await?.expect("unit");
    let lb = b.lease(&storage).await?.expect("replica");
    // Over the 64 KiB compared on the writer thread: the caller compares these.
    let lie = vec![7u8; 100 * 1024];
    a.answer_vetted(&storage, la.lease, &lie, Reference::NotRun)
        .await?;
    assert_eq!(
        b.answer_vetted(&storage, lb.lease, &lie, Reference::NotRun)
            .await?,
        Recorded::NeedsReference
    );
    let truth = vec![8u8; 100 * 1024];
    let judged = b
        .answer_vetted(&storage, lb.lease, &lie, Reference::Output(truth.clone()))
        .await?;
    assert!(matches!(judged, Recorded::Invalid { .. }), "{judged:?}");
    // And the truth, from two more newcomers, settles it.
    let (c, d) = (Vol::new(3), Vol::new(4));
    let lc = c.lease(&storage).await?.expect("unit again");
    let ld = d.lease(&storage).await?.expect("replica again");
    c.answer_vetted(&storage, lc.lease, &truth, Reference::NotRun)
        .await?;
    let settled = d
        .answer_vetted(&storage, ld.lease, &truth, Reference::Output(truth.clone()))
        .await?;
    assert!(
        matches!(
            settled,
            Recorded::Valid {
                job_complete: true,
                ..
            }
        ),
        "{settled:?}"
    );
    Ok(())
}

/// `count` volunteers (wallets seeded from `first_seed` on) spread over `relays`, each
/// leasing and answering correctly at once until it found nothing 20 times in a row (or a
/// minute passed); the first `paying` of them pay out after every step, as the relays'
/// housekeeping does.
async fn volunteers_until_idle(
    relays: &[Storage],
    count: u8,
    first_seed: u8,
    paying: u8,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for v in 0..count {
        let storage = relays[usize::from(v) % relays.len()].clone();
        tasks.push(tokio::spawn(async move {
            let vol = Vol::new(v + first_seed);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let mut idle = 0;
            while idle < 20 && std::time::Instant::now() < deadline {
                match vol.lease(&storage).await? {
                    Some(l) => {
                        idle = 0;
                        vol.answer(&storage, l.lease, l.unit_params.as_bytes(), None)
                            .await?;
                    }
                    None => {
                        idle += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
                if v < paying {
                    storage.pay_out_all().await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Every unit of a quorum-2 job got exactly two work leases, and each valid result's pay
/// reached its wallet once: what the ledger credited each wallet equals what its results
/// were paid.
async fn assert_each_unit_leased_twice_and_each_result_paid_once(
    db: &mut sqlx::PgConnection,
) -> anyhow::Result<()> {
    let overleased: Vec<(String, i64)> = sqlx::query_as(
        "SELECT unit_id, COUNT(*) FROM leases WHERE kind = 'work'
         GROUP BY unit_id HAVING COUNT(*) <> 2",
    )
    .fetch_all(&mut *db)
    .await?;
    assert!(
        overleased.is_empty(),
        "units leased other than twice: {overleased:?}"
    );
    let unpaid: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT r.wallet, r.paid, COALESCE(l.credited, 0) FROM
           (SELECT wallet, CAST(SUM(paid_micro) AS BIGINT) AS paid FROM leases
            WHERE verdict = 'valid' GROUP BY wallet) AS r
         LEFT JOIN
           (SELECT substr(credit, 8) AS wallet, CAST(SUM(amount) AS BIGINT) AS credited
            FROM ledger WHERE reason = 'pay' GROUP BY credit) AS l
         ON l.wallet = r.wallet
         WHERE r.paid <> COALESCE(l.credited, 0)",
    )
    .fetch_all(&mut *db)
    .await?;
    assert!(unpaid.is_empty(), "paid other than earned: {unpaid:?}");
    Ok(())
}

/// Two relays on one PostgreSQL database, each with volunteers drawing the same oldest
/// units at once and paying out as they go: every unit gets exactly its quorum of leases
/// (none handed out beyond it), every result is paid once, and the ledger is one chain
/// whose balances add up (the audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_on_one_postgres_never_overlease_fork_the_ledger_or_pay_twice(
) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let dir = temp_dir("two-relays");
    let url = Engine::Postgres.url(&dir).await?;
    let relays = [
        Storage::open_postgres(&url, &dir)
            .await?
            .with_billing(billing()),
        Storage::open_postgres(&url, &dir)
            .await?
            .with_billing(billing()),
    ];
    let (submitter, _) = relays[0]
        .create_account(&billing().key, MicroCredits(10_000_000), None)
        .await?;
    let units = 60;
    let j = NewJob {
        submitter: Some(submitter),
        ..job(units, 2)
    };
    relays[0].insert_job(&j).await?;
    volunteers_until_idle(&relays, 8, 1, 2).await?;
    for relay in &relays {
        relay.pay_out_all().await?;
    }
    let record = relays[1].job(j.id).await?.expect("the job");
    assert_eq!(record.progress.units_done, units as i64, "{record:?}");
    let mut db = sqlx::PgConnection::connect(&url).await?;
    assert_each_unit_leased_twice_and_each_result_paid_once(&mut db).await?;
    let summary = relays[0].audit(&billing().key.address()).await?;
    assert!(summary.entries > 2, "{summary:?}");
    Ok(())
}

/// Three relays on one PostgreSQL database judge results and draw leases at once (they
/// share the write turn for that): the replicas of a unit returned to two relays at once
/// still meet and settle it, each unit goes out to exactly its quorum, and a wallet
/// judged on two relays at once keeps every valid result in its standing, overall and
/// on the kernel, and payouts made meanwhile pay each result once. Fails if the groups
/// judging or drawing lock no rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_judging_and_drawing_at_once_settle_every_unit_and_lose_no_standing(
) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let dir = temp_dir("judging-at-once");
    let url = Engine::Postgres.url(&dir).await?;
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(
            Storage::open_postgres(&url, &dir)
                .await?
                .with_billing(billing()),
        );
    }
    let (submitter, _) = relays[0]
        .create_account(&billing().key, MicroCredits(100_000_000), None)
        .await?;
    let units = 150;
    let j = NewJob {
        submitter: Some(submitter),
        ..job(units, 2)
    };
    relays[0].insert_job(&j).await?;
    // Payouts share the turn with the others' groups, in transactions of their own.
    volunteers_until_idle(&relays, 12, 40, 1).await?;
    relays[0].pay_out_all().await?;
    let record = relays[2].job(j.id).await?.expect("the job");
    assert_eq!(record.progress.units_done, units as i64, "{record:?}");
    let mut db = sqlx::PgConnection::connect(&url).await?;
    let unsettled: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM units WHERE state <> 'done'")
        .fetch_one(&mut db)
        .await?;
    assert_eq!(unsettled, 0, "units left unsettled");
    assert_each_unit_leased_twice_and_each_result_paid_once(&mut db).await?;
    // Every valid result counted once in its wallet's standing, overall and on the kernel.
    let miscounted: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT r.wallet, r.valid, COALESCE(w.valid, 0), COALESCE(k.valid, 0) FROM
           (SELECT wallet, COUNT(*) AS valid FROM leases WHERE verdict = 'valid'
            GROUP BY wallet) AS r
         LEFT JOIN wallets AS w ON w.address = r.wallet
         LEFT JOIN wallet_kernels AS k ON k.wallet = r.wallet
         WHERE r.valid <> COALESCE(w.valid, 0) OR r.valid <> COALESCE(k.valid, 0)",
    )
    .fetch_all(&mut db)
    .await?;
    assert!(
        miscounted.is_empty(),
        "standings that lost or doubled a valid result (wallet, results, overall, on the \
         kernel): {miscounted:?}"
    );
    let summary = relays[1].audit(&billing().key.address()).await?;
    assert!(summary.entries > 2, "{summary:?}");
    Ok(())
}

/// A job whose last units were settled where no result saw it complete (two relays'
/// groups each reading the other's progress from before) is merged by the housekeeping
/// within a beat or two, not left running until a relay restarts. The job's units are
/// settled here past the scheduler, which then never hears that the job completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_no_result_saw_complete_is_merged_by_the_housekeeping() -> anyhow::Result<()> {
    use starling_kernels::{Catalog, NamedInputs};
    use starling_relay::scheduler::{Scheduler, SchedulerConfig};
    let dir = temp_dir("complete-unseen");
    let storage = Storage::open(&dir).await?;
    let scheduler = Scheduler::new(
        storage.clone(),
        Arc::new(Catalog::builtin()),
        SchedulerConfig {
            merge_missed_after: std::time::Duration::from_secs(1),
            ..SchedulerConfig::default()
        },
    );
    let job = scheduler
        .submit(
            "montecarlo",
            serde_json::json!({"samples": 200_000u64, "seed": 7}),
            &NamedInputs::new(),
            Some(1),
            None,
            None,
        )
        .await?;
    let vol = Vol::new(61);
    while let Some(leased) = vol.lease(&storage).await? {
        let output = Catalog::builtin()
            .get(&leased.kernel)?
            .run_cpu(&leased.unit_params, &[])?;
        vol.answer(&storage, leased.lease, &output, None).await?;
    }
    let record = storage.job(job).await?.expect("the job");
    assert_eq!(record.progress.units_done, record.progress.units_total);
    let _housekeeping = scheduler.spawn_housekeeping();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let state = loop {
        let state = storage.job(job).await?.expect("the job").state;
        if state != starling_api::JobState::Running || std::time::Instant::now() > deadline {
            break state;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        state,
        starling_api::JobState::Done,
        "every unit settled, never merged"
    );
    Ok(())
}

/// Two relays' groups that settle a job's last units at once each load the other's
/// progress from before; the one whose write of the progress comes second still tells its
/// result that the job is complete, so the job is merged at once, not a housekeeping
/// sweep later. The job's row is held from outside until both groups wait on it.
#[tokio::test]
async fn two_groups_settling_a_jobs_last_units_at_once_tell_one_result_it_completed(
) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let dir = temp_dir("complete-at-once");
    let url = Engine::Postgres.url(&dir).await?;
    let a = Storage::open_postgres(&url, &dir).await?;
    let b = Storage::open_postgres(&url, &dir).await?;
    let j = job(2, 1);
    a.insert_job(&j).await?;
    let (on_a, on_b) = (Vol::new(1), Vol::new(2));
    let la = on_a.lease(&a).await?.expect("a unit on relay A").lease;
    let lb = on_b.lease(&b).await?.expect("a unit on relay B").lease;

    let mut holder = sqlx::PgConnection::connect(&url).await?;
    let mut held = holder.begin().await?;
    sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(j.id.to_string())
        .execute(&mut *held)
        .await?;
    let (ta, tb) = (a.clone(), b.clone());
    let from_a = tokio::spawn(async move { on_a.answer(&ta, la, b"out", None).await });
    let from_b = tokio::spawn(async move { on_b.answer(&tb, lb, b"out", None).await });
    // Both groups have loaded and judged, and one waits on the job's row (the other on
    // it or on the first one's rows).
    let mut watcher = sqlx::PgConnection::connect(&url).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE application_name = 'starling-relay' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await?;
        if waiting >= 2 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the two groups never waited on the job's row together ({waiting} waiting)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    held.commit().await?;
    let answers = [from_a.await??, from_b.await??];
    let complete = answers
        .iter()
        .filter(|r| {
            matches!(
                r,
                Recorded::Valid {
                    job_complete: true,
                    ..
                }
            )
        })
        .count();
    assert!(
        answers.iter().all(|r| matches!(r, Recorded::Valid { .. })),
        "{answers:?}"
    );
    assert_eq!(complete, 1, "{answers:?}");
    let record = a.job(j.id).await?.expect("the job");
    assert_eq!(record.progress.units_done, 2);
    Ok(())
}

/// Two relays on one PostgreSQL database: a relay that starts leaves a live relay's
/// leases alone, and once a relay stops beating its volunteers' leases are requeued by
/// the other relay's heartbeat, so the units go out again within seconds.
#[tokio::test]
async fn a_stopped_relays_leases_go_out_again_and_a_live_relays_stay() -> anyhow::Result<()> {
    let dir = temp_dir("relay-gone");
    let url = Engine::Postgres.url(&dir).await?;
    let a = Storage::open_postgres(&url, &dir).await?;
    a.insert_job(&job(2, 1)).await?;
    let now = starling_relay::storage::now_ms();
    a.heartbeat(now).await?;
    let (on_a, on_b) = (Vol::new(1), Vol::new(2));
    let held = on_a
        .lease(&a)
        .await?
        .expect("a unit for relay A's volunteer");

    // Relay B starts while A is alive: A's volunteer keeps its lease.
    let b = Storage::open_postgres(&url, &dir).await?;
    assert_eq!(
        b.recover_leases().await?,
        0,
        "a live relay's lease was voided"
    );
    let other = on_b.lease(&b).await?.expect("the other unit");
    assert_ne!(other.unit, held.unit);
    assert!(on_b.lease(&b).await?.is_none(), "every unit is out");

    // A stops beating; B's next heartbeat past the limit takes A's lease for lost.
    let later = now + starling_relay::storage::RELAY_GONE_AFTER_MS + 1_000;
    assert_eq!(
        b.heartbeat(later - 2_000).await?,
        0,
        "too early to call A gone"
    );
    assert_eq!(b.heartbeat(later).await?, 1, "A's one lease requeued");
    let again = Vol::new(3)
        .lease(&b)
        .await?
        .expect("A's unit goes out again");
    assert_eq!(again.unit, held.unit);
    // B's own lease, beaten for at `later`, is untouched.
    assert!(matches!(
        on_b.answer(&b, other.lease, other.unit_params.as_bytes(), None)
            .await?,
        Recorded::Valid { .. }
    ));
    Ok(())
}

/// Two relays on one PostgreSQL database: a payout one relay makes reaches the other
/// relay's feed of payments (where its volunteers' receipts come from).
#[tokio::test]
async fn a_payment_one_relay_makes_reaches_the_other_relays_volunteers() -> anyhow::Result<()> {
    let dir = temp_dir("relay-feed");
    let url = Engine::Postgres.url(&dir).await?;
    let a = Storage::open_postgres(&url, &dir)
        .await?
        .with_billing(billing());
    let b = Storage::open_postgres(&url, &dir)
        .await?
        .with_billing(billing());
    let mut feed = b.ledger_feed();
    let (submitter, _) = a
        .create_account(&billing().key, MicroCredits(1_000_000), None)
        .await?;
    let j = NewJob {
        submitter: Some(submitter),
        ..job(1, 1)
    };
    a.insert_job(&j).await?;
    let vol = Vol::new(7);
    let leased = vol.lease(&a).await?.expect("the unit");
    vol.answer(&a, leased.lease, leased.unit_params.as_bytes(), None)
        .await?;
    let paid = a.pay_out_all().await?;
    assert!(!paid.is_empty(), "relay A paid the volunteer");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let entry = tokio::time::timeout_at(deadline, feed.recv()).await??;
        if entry.credit == Account::Wallet(vol.wallet) {
            break;
        }
    }
    Ok(())
}

/// Two relays on one PostgreSQL database, relay B reading what others changed only once
/// an hour: it still hears of a job relay A stored (its idle volunteers wake) and of
/// that job's end (a watcher on B sees it) within seconds, because A tells it (NOTIFY).
/// A relay not listening hears nothing in that time: that is what the read every 250 ms
/// is for.
#[tokio::test]
async fn relays_tell_each_other_of_new_work_and_ended_jobs_at_once() -> anyhow::Result<()> {
    use starling_relay::storage::{Changed, Following};
    let dir = temp_dir("relay-notify");
    let url = Engine::Postgres.url(&dir).await?;
    let a = Storage::open_postgres(&url, &dir).await?;
    let hourly = |notified| Following {
        notified,
        read_every: std::time::Duration::from_secs(3600),
    };
    // Each follower reads once as it starts; let that pass.
    let b = Storage::open_postgres_following(&url, &dir, hourly(true)).await?;
    let deaf = Storage::open_postgres_following(&url, &dir, hourly(false)).await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (mut heard, mut unheard) = (b.others_changes(), deaf.others_changes());
    let within = std::time::Duration::from_secs(5);

    let j = job(1, 1);
    a.insert_job(&j).await?;
    let told = tokio::time::timeout(within, heard.recv()).await;
    assert!(
        matches!(told, Ok(Ok(Changed::NewWork))),
        "B was not told of A's new job: {told:?}"
    );
    // The job ends on A.
    let vol = Vol::new(11);
    let leased = vol.lease(&a).await?.expect("the unit");
    vol.answer(&a, leased.lease, leased.unit_params.as_bytes(), None)
        .await?;
    assert!(a.finish_job(j.id, b"merged").await?);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, heard.recv()).await {
            Ok(Ok(Changed::Jobs(jobs))) if jobs.contains(&j.id) => break,
            Ok(Ok(_)) => {}
            other => panic!("B was not told that A's job ended: {other:?}"),
        }
    }
    // The relay that was not listening heard none of it.
    let missed = tokio::time::timeout(std::time::Duration::from_millis(500), unheard.recv()).await;
    assert!(missed.is_err(), "a relay not listening heard: {missed:?}");
    Ok(())
}

/// A job's progress on relay A reaches relay B's reads after every unit, though most
/// units leave the job's `updated_ms` alone (so that PostgreSQL updates the row without
/// touching its indexes): units settled on A every 400 ms for over three seconds, longer
/// than B's reads look back, are each followed by B announcing the job.
#[tokio::test]
async fn progress_on_one_relay_reaches_another_relays_reads_after_every_unit() -> anyhow::Result<()>
{
    use starling_relay::storage::{Changed, Following};
    let dir = temp_dir("relay-progress");
    let url = Engine::Postgres.url(&dir).await?;
    let a = Storage::open_postgres(&url, &dir).await?;
    // Reads only, every 250 ms: progress is never notified.
    let b = Storage::open_postgres_following(
        &url,
        &dir,
        Following {
            notified: false,
            ..Following::default()
        },
    )
    .await?;
    let units = 8;
    let j = job(units, 1);
    a.insert_job(&j).await?;
    let mut heard = b.others_changes();
    for n in 1..=units {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let vol = Vol::new(40 + n as u8);
        let leased = vol.lease(&a).await?.expect("a unit");
        vol.answer(&a, leased.lease, leased.unit_params.as_bytes(), None)
            .await?;
        // What B announced before this unit settled is stale now.
        while heard.try_recv().is_ok() {}
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match tokio::time::timeout_at(deadline, heard.recv()).await {
                Ok(Ok(Changed::Jobs(jobs))) if jobs.contains(&j.id) => break,
                Ok(Ok(Changed::Everything)) => break,
                Ok(Ok(_)) => {}
                other => panic!("B did not hear of unit {n} of {units}: {other:?}"),
            }
        }
        assert_eq!(
            b.job(j.id).await?.expect("the job").progress.units_done,
            n as i64
        );
    }
    Ok(())
}

/// Relays on one PostgreSQL database on machines of their own (data directories of
/// their own): each opens a job another stored, given the deployment's key for job keys
/// (`job-keys.key`, copied); a relay with another key cannot; after a purge nobody can.
#[tokio::test]
async fn relays_of_one_deployment_open_each_others_jobs_and_nobody_after_a_purge(
) -> anyhow::Result<()> {
    let (dir_a, dir_b, dir_c) = (temp_dir("keys-a"), temp_dir("keys-b"), temp_dir("keys-c"));
    let url = Engine::Postgres.url(&dir_a).await?;
    let a = Storage::open_postgres(&url, &dir_a).await?;
    std::fs::create_dir_all(&*dir_b)?;
    std::fs::copy(dir_a.join("job-keys.key"), dir_b.join("job-keys.key"))?;
    let b = Storage::open_postgres(&url, &dir_b).await?;
    let stranger = Storage::open_postgres(&url, &dir_c).await?;
    let j = NewJob {
        input: b"the submitter's data".to_vec(),
        ..job(1, 1)
    };
    a.insert_job(&j).await?;
    assert_eq!(
        b.job_input(j.id).await?,
        j.input,
        "relay B opens relay A's job"
    );
    let refused = stranger.job_input(j.id).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("does not open")),
        "another deployment's key opened the job: {refused:?}"
    );
    let vol = Vol::new(9);
    let leased = vol.lease(&b).await?.expect("the unit");
    vol.answer(&b, leased.lease, leased.unit_params.as_bytes(), None)
        .await?;
    assert!(b.finish_job(j.id, b"merged").await?);
    let result = a.job_result(j.id).await?.expect("the job");
    assert_eq!(
        result.result.as_deref(),
        Some(&b"merged"[..]),
        "A opens what B sealed"
    );
    a.purge_job_data(j.id, starling_relay::storage::job_queries::Erase::All)
        .await?;
    assert!(
        b.job_input(j.id).await.is_err(),
        "the input opens after the purge"
    );
    Ok(())
}

/// One wallet connected to two relays on one PostgreSQL database (as a volunteer with
/// two tabs, or a cheater on purpose): it never holds two replicas of one unit, so it
/// cannot make up a quorum of two by itself.
#[tokio::test]
async fn one_wallet_on_two_relays_never_gets_two_replicas_of_a_unit() -> anyhow::Result<()> {
    let dir = temp_dir("one-wallet-two-relays");
    let url = Engine::Postgres.url(&dir).await?;
    let a = Storage::open_postgres(&url, &dir).await?;
    let b = Storage::open_postgres(&url, &dir).await?;
    a.insert_job(&job(3, 2)).await?;
    let cheater = Vol::new(11);
    let mut units = std::collections::HashSet::new();
    for relay in [&a, &b, &a, &b, &a, &b] {
        // Each relay its own connection (peer) for the same wallet.
        let tab = Vol {
            peer: PeerId::new(),
            ..cheater
        };
        if let Some(leased) = tab.lease(relay).await? {
            assert!(
                units.insert(leased.unit),
                "the wallet got a second replica of unit {}",
                leased.unit
            );
        }
    }
    assert_eq!(units.len(), 3, "one replica of each unit, no more");
    Ok(())
}

/// Two submissions with one idempotency key reaching two relays at once store one job:
/// the other is told the key is taken and stores nothing (no job, no escrow).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_on_two_relays_at_once_stores_one_job() -> anyhow::Result<()> {
    let dir = temp_dir("idempotency-two-relays");
    let url = Engine::Postgres.url(&dir).await?;
    let a = Storage::open_postgres(&url, &dir).await?;
    let b = Storage::open_postgres(&url, &dir).await?;
    for round in 0..10 {
        let claim = starling_relay::storage::IdempotencyClaim {
            key: format!("retry-{round}"),
            request_sha256: "same request".into(),
        };
        let keyed = |relay: Storage| {
            let j = NewJob {
                idempotency: Some(claim.clone()),
                ..job(20, 1)
            };
            tokio::spawn(async move { relay.insert_job(&j).await.map(|()| j.id) })
        };
        let (first, second) = (keyed(a.clone()), keyed(b.clone()));
        let outcomes = [first.await?, second.await?];
        let stored: Vec<JobId> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .copied()
            .collect();
        assert_eq!(stored.len(), 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, Err(StorageError::IdempotencyKeyTaken))),
            "round {round}: {outcomes:?}"
        );
        let prior = b
            .idempotent_request(&claim.key)
            .await?
            .expect("the key's job");
        assert_eq!(prior.job, stored[0]);
    }
    let mut db = {
        use sqlx::Connection as _;
        sqlx::PgConnection::connect(&url).await?
    };
    let (jobs, units): (i64, i64) =
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM units)")
            .fetch_one(&mut db)
            .await?;
    assert_eq!(
        (jobs, units),
        (10, 200),
        "a losing submission left rows behind"
    );
    Ok(())
}

/// A submitter at its limit of open jobs cannot get past it by sending to two relays at
/// once: the count and the insert are one step across relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_open_jobs_limit_holds_across_relays() -> anyhow::Result<()> {
    let dir = temp_dir("limit-two-relays");
    let url = Engine::Postgres.url(&dir).await?;
    let a = Storage::open_postgres(&url, &dir).await?;
    let b = Storage::open_postgres(&url, &dir).await?;
    let mut stored = 0;
    for round in 0..10u8 {
        let submitter = starling_relay::ledger::AccountId::new();
        let limited = |relay: Storage| {
            let j = NewJob {
                submitter: Some(submitter),
                max_active: Some(1),
                ..job(20, 1)
            };
            tokio::spawn(async move { relay.insert_job(&j).await })
        };
        let (first, second) = (limited(a.clone()), limited(b.clone()));
        let outcomes = [first.await?, second.await?];
        let ok = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {outcomes:?}");
        stored += ok;
    }
    assert_eq!(stored, 10);
    Ok(())
}

/// A wallet another relay caught returning a wrong result stops being trusted here too,
/// within a second: its next unit on this relay is replicated, not taken on its word.
#[tokio::test]
async fn a_wallet_caught_on_one_relay_loses_its_trust_on_the_other() -> anyhow::Result<()> {
    let dir = temp_dir("standing-two-relays");
    let url = Engine::Postgres.url(&dir).await?;
    let a = Storage::open_postgres(&url, &dir).await?;
    let b = Storage::open_postgres(&url, &dir).await?;
    a.insert_job(&job(40, 1)).await?;
    let vol = Vol::new(12);
    // A clean record earns trust (on relay A).
    for _ in 0..30 {
        let leased = vol.lease(&a).await?.expect("a unit");
        vol.answer(&a, leased.lease, leased.unit_params.as_bytes(), Some(true))
            .await?;
        if a.standing(&vol.wallet).await?.0.trusted() {
            break;
        }
    }
    assert!(
        b.standing(&vol.wallet).await?.0.trusted(),
        "relay B trusts the wallet A found honest"
    );
    // Relay A catches it lying.
    let leased = vol.lease(&a).await?.expect("a unit");
    vol.answer(&a, leased.lease, b"a lie", Some(false)).await?;
    assert!(!a.standing(&vol.wallet).await?.0.trusted());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while b.standing(&vol.wallet).await?.0.trusted() {
        assert!(
            std::time::Instant::now() < deadline,
            "relay B still trusts a wallet relay A caught lying"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}
