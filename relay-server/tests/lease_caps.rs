//! Leases cannot be hoarded (issue 19): a wallet holds at most its cap of leases however
//! many it asks for (by `Ready`, or by a `Result` asking for more), the wallets of one network hold at most the network's cap all
//! together, and a wallet that measures slow cannot stretch its leases past what the
//! network allows for. Driven over real WebRTC against the real router, with the
//! attacker on the project's own crates, and through the scheduler for the deadline.

mod common;

use common::loopback::{join, receive, relay_with, send};
use common::TempDir;
use starling_kernels::{Catalog, NamedInputs};
use starling_protocol::{ToRelay, ToVolunteer, WalletKey};
use starling_relay::scheduler::caps::LeaseLimits;
use starling_relay::scheduler::{Scheduler, SchedulerConfig, Speed};
use starling_relay::storage::{PeerId, Storage};
use starling_webrtc_native::PeerLink;
use std::sync::Arc;
use std::time::Duration;

const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
const RECEIVE_LIMIT: usize = 1024 * 1024;

/// A config with small units, so one job has far more units than any cap.
fn small_units(caps: LeaseLimits) -> SchedulerConfig {
    SchedulerConfig {
        unit_flops: 1_000_000,
        // Known-answer leases need settled units; there are none here.
        canary_rate: 0.0,
        caps,
        ..SchedulerConfig::default()
    }
}

/// A Monte Carlo job of about 1000 one-MFLOP units.
async fn many_units(scheduler: &Scheduler) -> anyhow::Result<()> {
    scheduler
        .submit(
            "montecarlo",
            serde_json::json!({"samples": 2_000_000u64, "seed": 7}),
            &NamedInputs::new(),
            None,
            None,
            None,
        )
        .await?;
    Ok(())
}

/// A volunteer of `key` on the relay at `url`, welcomed, that asked for `slots` units.
async fn greedy(url: &str, key: &WalletKey, slots: u32) -> anyhow::Result<PeerLink> {
    let link = join(url, key, "greedy/1").await?;
    send(&link, &ToRelay::Ready { slots }).await?;
    Ok(link)
}

/// Assignments `link` receives until none has come for `quiet`.
async fn assignments(link: &mut PeerLink, quiet: Duration) -> usize {
    let mut n = 0;
    while let Ok(Ok(message)) = tokio::time::timeout(quiet, receive(link, RECEIVE_LIMIT)).await {
        if matches!(message, ToVolunteer::Assign(_)) {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volunteer_asking_for_100_slots_holds_at_most_its_wallets_cap() -> anyhow::Result<()> {
    let dir = TempDir::new("lease-caps-wallet");
    let caps = LeaseLimits::default();
    let (url, scheduler) = relay_with(&dir, OPEN_TIMEOUT, small_units(caps)).await?;
    many_units(&scheduler).await?;
    let key = WalletKey::from_seed(rand::random());
    let mut link = greedy(&url, &key, 100).await?;
    let held = assignments(&mut link, Duration::from_secs(2)).await;
    // A second connection of the same wallet gets nothing more.
    let mut second = greedy(&url, &key, 100).await?;
    let more = assignments(&mut second, Duration::from_secs(2)).await;
    eprintln!("asked for 100 slots: {held} leases, then {more} on a second connection");
    // Before: 64 (the session's own limit on slots), and 64 more on the second.
    assert_eq!(held, caps.per_wallet, "leases held by one connection");
    assert_eq!(more, 0, "leases on a second connection of the same wallet");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_asking_for_u32_max_more_units_holds_at_most_the_wallets_cap() -> anyhow::Result<()>
{
    let dir = TempDir::new("lease-caps-more");
    let caps = LeaseLimits::default();
    let (url, scheduler) = relay_with(&dir, OPEN_TIMEOUT, small_units(caps)).await?;
    many_units(&scheduler).await?;
    let key = WalletKey::from_seed(rand::random());
    let mut link = greedy(&url, &key, 1).await?;
    let unit = loop {
        if let ToVolunteer::Assign(unit) = receive(&mut link, RECEIVE_LIMIT).await? {
            break unit;
        }
    };
    let output = Catalog::builtin()
        .get(&unit.kernel)?
        .run_cpu(&unit.params_json, &unit.input)?;
    send(
        &link,
        &ToRelay::Result {
            lease: unit.lease,
            output,
            elapsed_ms: 1,
            more: u32::MAX,
        },
    )
    .await?;
    // The first rides on the verdict; the rest come as assignments, up to the cap.
    let mut held = 0;
    while let Ok(Ok(message)) =
        tokio::time::timeout(Duration::from_secs(2), receive(&mut link, RECEIVE_LIMIT)).await
    {
        match message {
            ToVolunteer::Ack { next, .. } => held += usize::from(next.is_some()),
            ToVolunteer::Assign(_) => held += 1,
            _ => {}
        }
    }
    assert_eq!(
        held, caps.per_wallet,
        "leases held after asking for u32::MAX"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_wallets_from_one_network_hold_at_most_its_cap() -> anyhow::Result<()> {
    let dir = TempDir::new("lease-caps-network");
    let caps = LeaseLimits {
        per_network: 6,
        loopback_is_one_network: true,
        ..LeaseLimits::default()
    };
    let (url, scheduler) = relay_with(&dir, OPEN_TIMEOUT, small_units(caps)).await?;
    many_units(&scheduler).await?;
    let mut links = Vec::new();
    for _ in 0..5 {
        let key = WalletKey::from_seed(rand::random());
        links.push(greedy(&url, &key, 100).await?);
    }
    let mut total = 0;
    for link in &mut links {
        total += assignments(link, Duration::from_secs(1)).await;
    }
    eprintln!("5 wallets on one network asking for 100 slots each: {total} leases");
    // Before: 64 each, 320 in all.
    assert_eq!(total, caps.per_network, "leases held by one network");

    // Leases are given back with the connection: the next wallet gets its cap again.
    for link in links {
        link.close().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let key = WalletKey::from_seed(rand::random());
    let mut link = greedy(&url, &key, 100).await?;
    assert_eq!(
        assignments(&mut link, Duration::from_secs(2)).await,
        caps.per_wallet
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_measured_slow_cannot_hold_a_lease_longer_than_the_bound() -> anyhow::Result<()> {
    let dir = TempDir::new("lease-caps-deadline");
    let config = SchedulerConfig {
        canary_rate: 0.0,
        ..SchedulerConfig::default()
    };
    let (min, slowest) = (config.lease, config.slowest_flops_per_s);
    let scheduler = Scheduler::new(
        Storage::open(&dir).await?,
        Arc::new(Catalog::builtin()),
        config,
    );
    many_units(&scheduler).await?;
    // Speed is measured from how long results take: a wallet that sits on every unit
    // for an hour measures as slow as the relay's estimate goes.
    let mut slow = Speed::NEWCOMER;
    for _ in 0..20 {
        slow = slow.observe(1, Duration::from_secs(3600));
    }
    let key = WalletKey::from_seed(rand::random());
    let (assignment, flops) = scheduler
        .next_assignment(PeerId::new(), key.address(), None, slow, None)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no lease"))?;
    let bound = (2_000.0 + flops as f64 * 4e3 / slowest).max(min.as_millis() as f64);
    eprintln!(
        "a wallet measured at {:.1} MFLOP/s got a {} ms lease of a {flops}-FLOP unit \
         (bound {bound:.0} ms)",
        slow.flops_per_s() / 1e6,
        assignment.deadline_ms
    );
    // Before: 258 s for this 64 MFLOP unit (4 x its FLOPs at 1 MFLOP/s), up to the
    // longest lease there is (600 s) for larger ones.
    assert!(
        f64::from(assignment.deadline_ms) <= bound + 50.0,
        "a {} ms lease",
        assignment.deadline_ms
    );
    Ok(())
}
