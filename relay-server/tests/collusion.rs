//! Wallets cost nothing, so the relay must not believe a quorum of wallets it knows
//! nothing about, nor let a record earned on one kernel vouch for another. Driven over
//! real WebRTC against the real router, with attackers on the project's own crates: they
//! speak the protocol exactly, and compute (or lie) as they choose.

mod common;

use common::loopback::{join, receive, relay, send};
use common::TempDir;
use starling_kernels::{Catalog, NamedInputs};
use starling_protocol::{Assignment, JobId, ToRelay, ToVolunteer, WalletKey};
use starling_relay::scheduler::Scheduler;
use starling_relay::storage::JobState;
use starling_webrtc_native::PeerLink;
use std::time::{Duration, Instant};

const MAX_MESSAGE: usize = 1 << 20;

/// A volunteer the test drives by hand.
struct Hand {
    key: WalletKey,
    link: PeerLink,
}

impl Hand {
    async fn join(url: &str, seed: u8) -> anyhow::Result<Self> {
        let key = WalletKey::from_seed([seed; 32]);
        let link = join(url, &key, "attacker/0").await?;
        Ok(Self { key, link })
    }

    /// Asks for one unit and waits for it (skipping receipts).
    async fn unit(&mut self) -> anyhow::Result<Assignment> {
        send(&self.link, &ToRelay::Ready { slots: 1 }).await?;
        loop {
            match receive(&mut self.link, MAX_MESSAGE).await? {
                ToVolunteer::Assign(a) => return Ok(a),
                ToVolunteer::Receipt(_) => {}
                other => anyhow::bail!("expected work, got {other:?}"),
            }
        }
    }

    /// Asks for units until one is a replica of `of` (a unit with its kernel and
    /// parameters), computing any other honestly: the relay may hand a known-answer unit
    /// (2% of leases) or a probe to anyone at any time, and a volunteer cannot tell.
    async fn replica(&mut self, of: &Assignment) -> anyhow::Result<Assignment> {
        for _ in 0..20 {
            let unit = self.unit().await?;
            if unit.kernel == of.kernel && unit.params_json == of.params_json {
                return Ok(unit);
            }
            self.compute(&unit).await?;
        }
        anyhow::bail!("twenty units and none a replica of {}", of.params_json)
    }

    /// Sends `output` for `unit` and returns whether the relay accepted it.
    async fn answer(&mut self, unit: &Assignment, output: Vec<u8>) -> anyhow::Result<bool> {
        send(
            &self.link,
            &ToRelay::Result {
                lease: unit.lease,
                output,
                elapsed_ms: 1,
                more: 0,
            },
        )
        .await?;
        loop {
            match receive(&mut self.link, MAX_MESSAGE).await? {
                ToVolunteer::Ack {
                    lease, accepted, ..
                } if lease == unit.lease => return Ok(accepted),
                ToVolunteer::Ack { .. } | ToVolunteer::Receipt(_) => {}
                other => anyhow::bail!("expected an ack, got {other:?}"),
            }
        }
    }

    /// Computes `unit` honestly and returns whether the relay accepted it.
    async fn compute(&mut self, unit: &Assignment) -> anyhow::Result<bool> {
        let output = honest(unit)?;
        self.answer(unit, output).await
    }
}

/// What the CPU reference says `unit` outputs.
fn honest(unit: &Assignment) -> anyhow::Result<Vec<u8>> {
    Ok(Catalog::builtin()
        .get(&unit.kernel)?
        .run_cpu(&unit.params_json, &unit.input)?)
}

/// The same wrong answer every colluder sends: the honest one with its first byte changed.
fn lie(unit: &Assignment) -> anyhow::Result<Vec<u8>> {
    let mut output = honest(unit)?;
    if let Some(first) = output.first_mut() {
        *first ^= 0x5a;
    }
    Ok(output)
}

/// A montecarlo job with the relay's default quorum (2), which trust may stand in for.
async fn submit_montecarlo(scheduler: &Scheduler, samples: u64) -> anyhow::Result<JobId> {
    Ok(scheduler
        .submit(
            "montecarlo",
            serde_json::json!({"samples": samples, "seed": 7}),
            &NamedInputs::new(),
            None,
            None,
            None,
        )
        .await?)
}

/// The job's merged result once it is done; an error after 30 s.
async fn finished(scheduler: &Scheduler, job: JobId) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = scheduler.storage().job_result(job).await?;
        if let Some(output) =
            output.filter(|o| o.state != JobState::Queued && o.state != JobState::Running)
        {
            anyhow::ensure!(
                output.state == JobState::Done,
                "job ended {:?}",
                output.state
            );
            return output.result.ok_or_else(|| anyhow::anyhow!("no result"));
        }
        anyhow::ensure!(Instant::now() < deadline, "job {job} did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the job's result must be: its units by the CPU reference, merged.
fn expected_montecarlo(samples: u64) -> anyhow::Result<Vec<u8>> {
    let kernel = Catalog::builtin();
    let kernel = kernel.get("montecarlo")?;
    let params = serde_json::json!({"samples": samples, "seed": 7});
    let plan = kernel.plan(&params, &NamedInputs::new(), 64_000_000)?;
    let outputs = plan
        .units
        .iter()
        .map(|u| kernel.run_cpu(u, &[]))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(kernel.merge(&params, &outputs)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fresh_wallets_agreeing_on_a_lie_get_nothing_accepted() -> anyhow::Result<()> {
    let dir = TempDir::new("collusion-fresh");
    let (url, scheduler) = relay(&dir, Duration::from_secs(5)).await?;
    const SAMPLES: u64 = 100_000;
    let job = submit_montecarlo(&scheduler, SAMPLES).await?;
    // Two wallets of one attacker ask one after the other: the job's one unit, twice.
    let mut a = Hand::join(&url, 1).await?;
    let mut b = Hand::join(&url, 2).await?;
    let unit_a = a.unit().await?;
    let unit_b = b.replica(&unit_a).await?;
    a.answer(&unit_a, lie(&unit_a)?).await?;
    let accepted = b.answer(&unit_b, lie(&unit_b)?).await?;
    assert!(!accepted, "the relay accepted the colluders' lie");
    for hand in [&a, &b] {
        let record = scheduler
            .storage()
            .wallet(&hand.key.address())
            .await?
            .ok_or_else(|| anyhow::anyhow!("wallet unknown"))?;
        assert_eq!(
            (record.reliability.valid, record.reliability.invalid),
            (0, 1),
            "{record:?}"
        );
    }
    // Two honest newcomers then settle it, checked the same way.
    let mut c = Hand::join(&url, 3).await?;
    let mut d = Hand::join(&url, 4).await?;
    let unit_c = c.replica(&unit_a).await?;
    let unit_d = d.replica(&unit_a).await?;
    assert!(c.compute(&unit_c).await?);
    assert!(d.compute(&unit_d).await?);
    assert_eq!(
        finished(&scheduler, job).await?,
        expected_montecarlo(SAMPLES)?
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_earned_on_matmul_does_not_vouch_for_montecarlo() -> anyhow::Result<()> {
    let dir = TempDir::new("collusion-kernel");
    let (url, scheduler) = relay(&dir, Duration::from_secs(5)).await?;
    let mut liar = Hand::join(&url, 1).await?;
    // Honest matmul work until trusted there: twenty small jobs of one unit each.
    let (m, k) = (4u32, 4u32);
    let mut inputs = NamedInputs::new();
    inputs.insert("a".into(), vec![0u8; (m * k * 4) as usize]);
    inputs.insert("b".into(), vec![0u8; (k * k * 4) as usize]);
    for _ in 0..20 {
        let matmul = scheduler
            .submit(
                "matmul",
                serde_json::json!({"m": m, "k": k, "n": k}),
                &inputs,
                Some(1),
                None,
                None,
            )
            .await;
        if let Err(e) = matmul {
            anyhow::bail!("matmul job refused: {e}");
        }
        let unit = liar.unit().await?;
        assert!(liar.compute(&unit).await?);
    }
    let record = scheduler
        .storage()
        .wallet(&liar.key.address())
        .await?
        .ok_or_else(|| anyhow::anyhow!("wallet unknown"))?;
    assert!(record.reliability.trusted(), "{record:?}");

    // Then it lies on every montecarlo unit.
    const SAMPLES: u64 = 100_000;
    let job = submit_montecarlo(&scheduler, SAMPLES).await?;
    let mut montecarlo = liar.unit().await?;
    for _ in 0..20 {
        if montecarlo.kernel == "montecarlo" {
            break;
        }
        liar.compute(&montecarlo).await?;
        montecarlo = liar.unit().await?;
    }
    liar.answer(&montecarlo, lie(&montecarlo)?).await?;
    let mut honest_hands = Vec::new();
    for seed in [10, 11] {
        let mut hand = Hand::join(&url, seed).await?;
        let unit = hand.replica(&montecarlo).await?;
        hand.compute(&unit).await?;
        honest_hands.push(hand);
    }
    assert_eq!(
        finished(&scheduler, job).await?,
        expected_montecarlo(SAMPLES)?
    );
    let record = scheduler
        .storage()
        .wallet(&liar.key.address())
        .await?
        .ok_or_else(|| anyhow::anyhow!("wallet unknown"))?;
    assert_eq!(
        record.reliability.invalid, 1,
        "the lie was caught: {record:?}"
    );
    Ok(())
}
