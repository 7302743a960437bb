//! Caps on what one wallet, and one network, may take: leases held at once, and leases
//! granted per second (issue 19: hostile volunteers cannot hoard units).
//!
//! Counted in memory, per process: a lease is held here from the moment it is granted
//! until its result or hand-back comes, its connection goes, or its deadline passes
//! (then the unit is someone else's to take, and the holder's slot is free again). After
//! a restart every lease is void anyway (`Scheduler::recover`), so nothing is lost by
//! not storing these counts.
//!
//! The shape is load → decide → apply under one lock: [`decide`] is pure and sees the
//! counts and the wallet's bucket; [`LeaseCaps::hold`] applies what it allows.

use crate::storage::PeerId;
use starling_protocol::{LeaseId, WalletAddress};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The caps, as configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseLimits {
    /// Leases one wallet may hold at once, over all its connections. The volunteer
    /// client asks for one unit at a time; four leave room for a few tabs of one person.
    pub per_wallet: usize,
    /// Leases all the wallets of one network (an IPv4 address, or an IPv6 /64) may hold
    /// at once: wallets cost nothing to make, addresses do. Generous, because a campus
    /// or an office behind one NAT is many honest volunteers.
    pub per_network: usize,
    /// Leases per second a wallet regains (a token bucket); 0 turns the rate cap off.
    pub per_second: f64,
    /// Leases a wallet may take in one burst.
    pub burst: f64,
    /// Whether every loopback connection counts as one network. Off by default: a whole
    /// test network (relay and volunteers) on one machine is loopback, and each of its
    /// connections then counts as a network of its own.
    pub loopback_is_one_network: bool,
}

impl Default for LeaseLimits {
    fn default() -> Self {
        Self {
            per_wallet: 4,
            per_network: 64,
            // A lease costs the relay a database write; 50 a second from one wallet is
            // noise, while a wallet churning through units (to see which exist, or to
            // waste them) is slowed to that. An honest volunteer asks once per unit, and
            // units are sized to take it far longer than 20 ms.
            per_second: 50.0,
            burst: 50.0,
            loopback_is_one_network: false,
        }
    }
}

/// Where a connection comes from, as the caps count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    /// An IPv4 address, or an IPv6 address's /64 (one host or household is given a whole
    /// /64, so counting single IPv6 addresses would count nothing).
    Address(IpAddr),
    /// One connection on its own: a loopback peer on a relay that counts loopback
    /// connections apart, or a peer whose address the relay does not know.
    Connection(PeerId),
}

impl Network {
    /// The network of `peer`, connected from `address`.
    pub fn of(address: Option<IpAddr>, peer: PeerId, loopback_is_one_network: bool) -> Self {
        let Some(address) = address else {
            return Self::Connection(peer);
        };
        let address = match address {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    IpAddr::V6(prefix.into())
                }
            },
            v4 => v4,
        };
        if address.is_loopback() && !loopback_is_one_network {
            Self::Connection(peer)
        } else {
            Self::Address(address)
        }
    }
}

/// Why a lease was not granted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The wallet holds its cap of leases.
    Wallet,
    /// The wallet's network holds its cap of leases.
    Network,
    /// The wallet took leases faster than its rate.
    Rate,
}

#[derive(Debug, Clone, Copy)]
struct Hold {
    peer: PeerId,
    wallet: WalletAddress,
    network: Network,
    until: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, limits: &LeaseLimits, now: Instant) -> f64 {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * limits.per_second;
        (self.tokens + gained).min(limits.burst)
    }
}

/// What the caps count now.
#[derive(Debug, Default)]
struct Holds {
    leases: HashMap<LeaseId, Hold>,
    by_wallet: HashMap<WalletAddress, usize>,
    by_network: HashMap<Network, usize>,
    buckets: HashMap<WalletAddress, Bucket>,
    /// When holds past their deadline are next swept out.
    sweep_at: Option<Instant>,
}

/// How often holds past their deadline are swept out: a lease that expired counts for
/// up to this long more, which costs its holder at most that much waiting.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Whether `wallet` on `network` may take one more lease at `now`.
fn decide(
    holds: &Holds,
    limits: &LeaseLimits,
    wallet: &WalletAddress,
    network: &Network,
    now: Instant,
) -> Result<(), Refusal> {
    if holds.by_wallet.get(wallet).copied().unwrap_or(0) >= limits.per_wallet {
        return Err(Refusal::Wallet);
    }
    if holds.by_network.get(network).copied().unwrap_or(0) >= limits.per_network {
        return Err(Refusal::Network);
    }
    if limits.per_second > 0.0 {
        let tokens = holds
            .buckets
            .get(wallet)
            .map_or(limits.burst, |b| b.refilled(limits, now));
        if tokens < 1.0 {
            return Err(Refusal::Rate);
        }
    }
    Ok(())
}

fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Holds {
    fn drop_hold(&mut self, lease: &LeaseId) -> Option<Hold> {
        let hold = self.leases.remove(lease)?;
        decrement(&mut self.by_wallet, &hold.wallet);
        decrement(&mut self.by_network, &hold.network);
        Some(hold)
    }

    /// Drops holds past their deadline, and buckets full again (a bucket not kept is
    /// full), at most every [`SWEEP_EVERY`].
    fn sweep(&mut self, limits: &LeaseLimits, now: Instant) {
        if self.sweep_at.is_some_and(|at| now < at) {
            return;
        }
        self.sweep_at = Some(now + SWEEP_EVERY);
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, h)| h.until <= now)
            .map(|(l, _)| *l)
            .collect();
        for lease in expired {
            self.drop_hold(&lease);
        }
        self.buckets
            .retain(|_, b| b.refilled(limits, now) < limits.burst);
    }
}

/// Leases held and taken, per wallet and per network.
#[derive(Debug)]
pub struct LeaseCaps {
    limits: LeaseLimits,
    holds: Mutex<Holds>,
}

impl LeaseCaps {
    /// Caps of `limits`, nothing held yet.
    pub fn new(limits: LeaseLimits) -> Self {
        Self {
            limits,
            holds: Mutex::default(),
        }
    }

    /// The caps.
    pub fn limits(&self) -> &LeaseLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Holds> {
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long until `wallet` regains a lease under the rate cap, when it has none left
    /// at `now`; `None` when it has one (or there is no rate cap). A session refused by
    /// the rate asks again then, not at its next idle poll a second later.
    pub fn rate_wait(&self, wallet: &WalletAddress, now: Instant) -> Option<Duration> {
        let limits = &self.limits;
        if limits.per_second <= 0.0 {
            return None;
        }
        let tokens = self.lock().buckets.get(wallet)?.refilled(limits, now);
        (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) / limits.per_second))
    }

    /// Holds a place for `lease` of `wallet` on `peer` until `until`, or says which cap
    /// refuses it. The caller leases the unit next, then [`Self::granted`] or
    /// [`Self::not_granted`].
    pub fn hold(
        &self,
        lease: LeaseId,
        peer: PeerId,
        wallet: WalletAddress,
        network: Network,
        now: Instant,
        until: Instant,
    ) -> Result<(), Refusal> {
        let limits = self.limits;
        let mut holds = self.lock();
        holds.sweep(&limits, now);
        decide(&holds, &limits, &wallet, &network, now)?;
        if limits.per_second > 0.0 {
            let tokens = holds
                .buckets
                .get(&wallet)
                .map_or(limits.burst, |b| b.refilled(&limits, now));
            holds.buckets.insert(
                wallet,
                Bucket {
                    tokens: tokens - 1.0,
                    at: now,
                },
            );
        }
        *holds.by_wallet.entry(wallet).or_default() += 1;
        *holds.by_network.entry(network).or_default() += 1;
        holds.leases.insert(
            lease,
            Hold {
                peer,
                wallet,
                network,
                until,
            },
        );
        Ok(())
    }

    /// The lease held for was granted, lasting until `until`.
    pub fn granted(&self, lease: LeaseId, until: Instant) {
        if let Some(hold) = self.lock().leases.get_mut(&lease) {
            hold.until = until;
        }
    }

    /// No unit was leased after all: the place is free and the token given back (a
    /// volunteer polling an empty queue is not taking leases).
    pub fn not_granted(&self, lease: LeaseId) {
        let limits = self.limits;
        let mut holds = self.lock();
        if let Some(hold) = holds.drop_hold(&lease) {
            if let Some(bucket) = holds.buckets.get_mut(&hold.wallet) {
                bucket.tokens = (bucket.tokens + 1.0).min(limits.burst);
            }
        }
    }

    /// `lease` ended: its result came, or it was handed back.
    pub fn ended(&self, lease: LeaseId) {
        self.lock().drop_hold(&lease);
    }

    /// `peer`'s connection is gone, and with it every lease it held.
    pub fn peer_gone(&self, peer: PeerId) {
        let mut holds = self.lock();
        let gone: Vec<LeaseId> = holds
            .leases
            .iter()
            .filter(|(_, h)| h.peer == peer)
            .map(|(l, _)| *l)
            .collect();
        for lease in gone {
            holds.drop_hold(&lease);
        }
    }

    /// Leases held now by `wallet`.
    pub fn held_by(&self, wallet: &WalletAddress) -> usize {
        self.lock().by_wallet.get(wallet).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_protocol::WalletKey;

    fn lease(n: u128) -> LeaseId {
        LeaseId::from_uuid(uuid::Uuid::from_u128(n))
    }

    fn limits() -> LeaseLimits {
        LeaseLimits {
            per_wallet: 2,
            per_network: 3,
            per_second: 0.0,
            burst: 0.0,
            loopback_is_one_network: false,
        }
    }

    #[test]
    fn a_wallet_and_a_network_hold_at_most_their_caps_and_get_places_back() {
        let caps = LeaseCaps::new(limits());
        let (a, b) = (
            WalletKey::from_seed([1; 32]).address(),
            WalletKey::from_seed([2; 32]).address(),
        );
        let peer = PeerId::new();
        let net = Network::of(
            Some("203.0.113.9".parse().expect("an address")),
            peer,
            false,
        );
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        assert_eq!(caps.hold(lease(1), peer, a, net, now, later), Ok(()));
        assert_eq!(caps.hold(lease(2), peer, a, net, now, later), Ok(()));
        assert_eq!(
            caps.hold(lease(3), peer, a, net, now, later),
            Err(Refusal::Wallet)
        );
        assert_eq!(caps.hold(lease(4), peer, b, net, now, later), Ok(()));
        assert_eq!(
            caps.hold(lease(5), peer, b, net, now, later),
            Err(Refusal::Network),
            "a's two and b's one fill the network's three"
        );
        caps.ended(lease(1));
        assert_eq!(caps.hold(lease(6), peer, b, net, now, later), Ok(()));
        caps.peer_gone(peer);
        assert_eq!(caps.held_by(&a), 0);
        assert_eq!(caps.held_by(&b), 0);
    }

    #[test]
    fn a_hold_past_its_deadline_frees_its_place() {
        let caps = LeaseCaps::new(limits());
        let a = WalletKey::from_seed([1; 32]).address();
        let peer = PeerId::new();
        let net = Network::Connection(peer);
        let now = Instant::now();
        let soon = now + Duration::from_secs(1);
        caps.hold(lease(1), peer, a, net, now, soon)
            .expect("under every cap");
        caps.hold(lease(2), peer, a, net, now, soon)
            .expect("under every cap");
        let after = soon + SWEEP_EVERY;
        assert_eq!(caps.hold(lease(3), peer, a, net, after, after), Ok(()));
        assert_eq!(caps.held_by(&a), 1);
    }

    #[test]
    fn a_wallet_takes_leases_no_faster_than_its_rate() {
        let caps = LeaseCaps::new(LeaseLimits {
            per_wallet: 100,
            per_network: 100,
            per_second: 2.0,
            burst: 3.0,
            loopback_is_one_network: false,
        });
        let a = WalletKey::from_seed([1; 32]).address();
        let peer = PeerId::new();
        let net = Network::Connection(peer);
        let now = Instant::now();
        let until = now + Duration::from_secs(60);
        for n in 0..3 {
            caps.hold(lease(n), peer, a, net, now, until)
                .expect("under every cap");
            caps.ended(lease(n));
        }
        assert_eq!(
            caps.hold(lease(9), peer, a, net, now, until),
            Err(Refusal::Rate)
        );
        // Out of tokens at 2 a second: the next comes in half a second, not at a poll.
        let wait = caps.rate_wait(&a, now).expect("no token left");
        assert!(
            wait.abs_diff(Duration::from_millis(500)) < Duration::from_millis(1),
            "{wait:?}"
        );
        let other = WalletKey::from_seed([2; 32]).address();
        assert_eq!(caps.rate_wait(&other, now), None, "a wallet that took none");
        assert_eq!(caps.rate_wait(&a, now + wait), None);
        // A lease asked for and not granted costs no token.
        let half = now + Duration::from_millis(500);
        caps.hold(lease(10), peer, a, net, half, until)
            .expect("under every cap");
        caps.not_granted(lease(10));
        assert_eq!(caps.hold(lease(11), peer, a, net, half, until), Ok(()));
    }

    #[test]
    fn loopback_is_one_network_only_when_asked_and_ipv6_counts_by_64() {
        let (p, q) = (PeerId::new(), PeerId::new());
        let lo = Some("127.0.0.1".parse().expect("an address"));
        assert_ne!(Network::of(lo, p, false), Network::of(lo, q, false));
        assert_eq!(Network::of(lo, p, true), Network::of(lo, q, true));
        let v6 = |s: &str| Network::of(Some(s.parse().expect("an address")), p, false);
        assert_eq!(v6("2001:db8:1:2::1"), v6("2001:db8:1:2:ffff::9"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(v6("::ffff:198.51.100.7"), v6("198.51.100.7"));
    }
}
