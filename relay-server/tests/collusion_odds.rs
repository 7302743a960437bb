//! How often colluders get every replica of a unit, measured through the relay's real
//! lease path (its SQL draw from the oldest units a wallet may have) against the formula
//! the README states: with a fraction f of the waiting wallets colluding and replicas
//! drawn at random, all q replicas of a unit go to colluders with probability about f^q.
//!
//! The colluders here are the strongest kind: vetted (they did honest work first), each
//! on a network of its own, and free to choose when to ask. Two strategies are measured:
//! asking like everyone else, and asking right after a fellow colluder got a unit, to
//! catch its replica.

mod common;

use common::TempDir;
use starling_protocol::{JobId, LeaseId, WalletAddress, WalletKey};
use starling_relay::storage::{
    Judging, LeaseRequest, LeaseTerms, LeasedUnit, NewJob, PeerId, Recorded, ReturnedResult,
    Storage,
};
use starling_relay::validation::Reference;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const WALLETS: usize = 50;
const UNITS: usize = 1500;

/// A tiny deterministic generator, so that the figures are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }

    fn unit(&mut self) -> f64 {
        self.next() as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// How colluders time their asks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Strategy {
    /// Like everyone: a random idle wallet asks next.
    Random,
    /// Right after one of them got a unit, another idle one asks at once.
    BackToBack,
    /// Back to back, against the rule before the draw: every lease the oldest unit the
    /// wallet may have (what the relay did before issue 19).
    BackToBackOldestFirst,
}

/// The fraction of units whose two replicas both went to colluders, when `colluders` of
/// the wallets collude.
async fn measure(colluders: usize, strategy: Strategy, seed: u64) -> anyhow::Result<f64> {
    let dir = TempDir::new("collusion-odds");
    let storage = Storage::open(&dir).await?;
    storage
        .insert_job(&NewJob {
            id: JobId::from_uuid(uuid::Uuid::new_v4()),
            kernel: "montecarlo".into(),
            params: serde_json::json!({}),
            input: Vec::new(),
            units: (0..UNITS).map(|i| format!("{{\"i\":{i}}}")).collect(),
            unit_flops: vec![1; UNITS],
            flops: UNITS as u64,
            quorum: 2,
            quorum_explicit: true,
            submitter: None,
            max_active: None,
            idempotency: None,
        })
        .await?;
    let wallets: Vec<(PeerId, WalletAddress)> = (0..WALLETS)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            (PeerId::new(), WalletKey::from_seed(seed).address())
        })
        .collect();
    let colluding: BTreeSet<WalletAddress> = wallets[..colluders].iter().map(|(_, w)| *w).collect();
    let mut rng = Rng(seed);
    // Each wallet holds at most one lease; a step either hands one out or returns one.
    let mut held: BTreeMap<usize, LeasedUnit> = BTreeMap::new();
    let mut replicas: BTreeMap<String, Vec<WalletAddress>> = BTreeMap::new();
    let mut next_asker: Option<usize> = None;
    for _ in 0..UNITS * 20 {
        let idle: Vec<usize> = (0..WALLETS).filter(|i| !held.contains_key(i)).collect();
        let ask = !idle.is_empty() && (held.len() < WALLETS / 2 || rng.unit() < 0.5);
        if ask {
            let i = next_asker
                .take()
                .filter(|i| idle.contains(i))
                .unwrap_or_else(|| idle[rng.below(idle.len())]);
            let (peer, wallet) = wallets[i];
            let request = LeaseRequest {
                custom_ok: true,
                peer,
                wallet,
                site: None,
                lease: LeaseId::from_uuid(uuid::Uuid::now_v7()),
                terms: LeaseTerms::until(i64::MAX / 2),
                network: None,
                draw: if strategy == Strategy::BackToBackOldestFirst {
                    0.0
                } else {
                    rng.unit()
                },
            };
            let Some(leased) = storage.lease_work(&request, |_, q| q).await? else {
                if held.is_empty() {
                    break;
                }
                continue;
            };
            replicas
                .entry(leased.unit.to_string())
                .or_default()
                .push(wallet);
            if strategy != Strategy::Random && colluding.contains(&wallet) {
                next_asker = idle
                    .iter()
                    .copied()
                    .find(|&j| j != i && colluding.contains(&wallets[j].1));
            }
            held.insert(i, leased);
        } else if let Some(&i) = held.keys().nth(rng.below(held.len().max(1))) {
            let leased = held.remove(&i).ok_or_else(|| anyhow::anyhow!("held"))?;
            let recorded = storage
                .record_result(
                    ReturnedResult {
                        lease: leased.lease,
                        wallet: wallets[i].1,
                        output: b"ok",
                        spot_check: None,
                    },
                    // Every wallet vetted: the colluders' best case.
                    Judging {
                        max_results: 6,
                        vet_newcomers: false,
                    },
                    Arc::new(|a: &[u8], b: &[u8]| a == b),
                    Reference::NotRun,
                )
                .await?;
            anyhow::ensure!(
                matches!(recorded, Recorded::Valid { .. } | Recorded::Pending { .. }),
                "{recorded:?}"
            );
        }
    }
    anyhow::ensure!(replicas.len() == UNITS, "{} units leased", replicas.len());
    let captured = replicas
        .values()
        .filter(|w| w.len() >= 2 && w.iter().all(|w| colluding.contains(w)))
        .count();
    Ok(captured as f64 / UNITS as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colluders_get_both_replicas_about_f_squared_of_the_time() -> anyhow::Result<()> {
    eprintln!(
        "colluding share f | f^2   | random asks | back to back | back to back, oldest unit first"
    );
    for (colluders, seed) in [(5usize, 1u64), (10, 2), (15, 3)] {
        let f = colluders as f64 / WALLETS as f64;
        let random = measure(colluders, Strategy::Random, seed).await?;
        let chasing = measure(colluders, Strategy::BackToBack, seed).await?;
        let before = measure(colluders, Strategy::BackToBackOldestFirst, seed).await?;
        eprintln!(
            "{f:>17.2} | {:.3} | {random:>11.3} | {chasing:>12.3} | {before:>31.3}",
            f * f
        );
        // Sampling error on 1,500 units is a few thousandths at these rates.
        assert!(
            random <= f * f * 1.5 + 0.01,
            "random asks: {random} vs f^2 {}",
            f * f
        );
        assert!(
            chasing <= f * f * 3.0 + 0.02,
            "back to back: {chasing} vs f^2 {}",
            f * f
        );
        // The draw is what makes the difference: without it, chasing pays.
        assert!(
            before > chasing,
            "oldest first: {before}, with the draw: {chasing}"
        );
    }
    Ok(())
}
