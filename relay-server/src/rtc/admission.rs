//! What an offer may cost before its peer proves a wallet: the checks on the offer's text
//! and the count of peers answered but not yet proved.
//!
//! Answering an offer binds a UDP socket, starts ICE checks towards every candidate it
//! lists, and keeps both until the peer opens its channel and sends its hello (or times
//! out). Anyone can post offers, so each of those costs is bounded here: the SDP's size,
//! its number of candidates, the addresses the relay will send checks to, and how many
//! such peers one address, and everyone together, may have pending at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Largest offer SDP answered. Browsers' and the native volunteer's offers for one data
/// channel are 0.5-3 KiB (a few host and server-reflexive candidates); 16 KiB leaves room
/// for many interfaces and long attribute lists.
pub const MAX_OFFER_SDP_BYTES: usize = 16 * 1024;
/// Largest `POST /rtc/offer` body read: the SDP above inside `{"sdp": ...}`, where JSON
/// escaping of line ends adds a few bytes a line. Applied as the route's body limit, so a
/// bigger body is refused after this many bytes instead of being buffered whole.
pub const MAX_OFFER_BODY_BYTES: usize = 2 * MAX_OFFER_SDP_BYTES;
/// Most candidates an offer may list. The relay sends connectivity checks to each, so
/// this bounds the traffic one offer makes it send (a host, a server-reflexive and a
/// relayed candidate per interface and address family are far fewer).
pub const MAX_OFFER_CANDIDATES: usize = 8;
/// Peers answered but not yet proved (channel not open, or no valid hello yet) across
/// all clients: each holds a socket and a driver task, ~250 KB.
pub const MAX_PENDING_PEERS: usize = 256;
/// The same, per client address: a browser tab reconnecting, or a few native volunteers
/// behind one address, need one or two at a time.
pub const MAX_PENDING_PER_ADDRESS: usize = 8;

/// Why an offer is not answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OfferError {
    /// The SDP is over [`MAX_OFFER_SDP_BYTES`].
    #[error(
        "the offer's SDP is {0} bytes, over the {MAX_OFFER_SDP_BYTES}-byte limit; \
         offer one data channel with fewer candidates"
    )]
    TooLarge(usize),
    /// More than [`MAX_OFFER_CANDIDATES`] candidates.
    #[error(
        "the offer lists {0} candidates, over the limit of {MAX_OFFER_CANDIDATES}; \
         gather fewer (e.g. one interface) or disable extra network interfaces"
    )]
    TooManyCandidates(usize),
    /// A carriage return not followed by a line feed: no stack writes one, and lines
    /// could then be read differently here and by the WebRTC stack.
    #[error("the offer has a bare carriage return; end lines with CRLF or LF")]
    BareCarriageReturn,
    /// The per-address cap of pending peers is reached.
    #[error(
        "this address already has {MAX_PENDING_PER_ADDRESS} pending peers (answered, \
         not yet proved by a hello); open or close those first"
    )]
    AddressBusy,
    /// The global cap of pending peers is reached.
    #[error("the relay has {MAX_PENDING_PEERS} pending peers; retry in a few seconds")]
    RelayBusy,
}

/// Checks an offer before it is parsed and returns it with the candidates the relay
/// cannot or should not reach removed (see [`reachable_from`]). Stripped, not refused:
/// a browser on a LAN offers its private addresses next to its public one, and the
/// public one is what a public relay needs; the relay also learns the peer's address
/// from its checks (a peer-reflexive candidate), so an offer left with none still
/// connects.
pub fn screen_offer(sdp: &str, bind_ip: IpAddr) -> Result<String, OfferError> {
    if sdp.len() > MAX_OFFER_SDP_BYTES {
        return Err(OfferError::TooLarge(sdp.len()));
    }
    if sdp.replace("\r\n", "\n").contains('\r') {
        return Err(OfferError::BareCarriageReturn);
    }
    let is_candidate = |line: &str| line.trim_start().starts_with("a=candidate:");
    let candidates = sdp.lines().filter(|l| is_candidate(l)).count();
    if candidates > MAX_OFFER_CANDIDATES {
        return Err(OfferError::TooManyCandidates(candidates));
    }
    let mut kept = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if is_candidate(line) && !candidate_reachable(line, bind_ip) {
            tracing::debug!("stripping an offer candidate the relay will not check");
            continue;
        }
        kept.push_str(line);
    }
    Ok(kept)
}

/// `a=candidate:foundation component transport priority address port typ ...`: whether
/// its address is an IP the relay may send checks to. Host names (mDNS `.local` names
/// that browsers use to hide local addresses) are not resolved by the relay.
fn candidate_reachable(line: &str, bind_ip: IpAddr) -> bool {
    line.split_whitespace()
        .nth(4)
        .and_then(|address| address.parse::<IpAddr>().ok())
        .is_some_and(|address| reachable_from(bind_ip, address))
}

/// Whether the relay, bound to `bind_ip`, should send connectivity checks to `candidate`.
/// Never to unspecified, multicast or broadcast addresses. A relay on loopback (tests,
/// a single host) reaches everything else on its host. A relay on a private or
/// link-local address serves its LAN: not loopback, which would be the relay's own host.
/// A relay on a public address serves the internet: only public addresses, so an offer
/// cannot turn it into a prober of its own host or network.
pub fn reachable_from(bind_ip: IpAddr, candidate: IpAddr) -> bool {
    let candidate = canonical(candidate);
    if candidate.is_unspecified() || candidate.is_multicast() || is_broadcast(candidate) {
        return false;
    }
    let bind_ip = canonical(bind_ip);
    if bind_ip.is_loopback() {
        return true;
    }
    if candidate.is_loopback() {
        return false;
    }
    local_scope(bind_ip) || !local_scope(candidate)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// Private, shared (CGNAT), link-local or unique-local addresses: not reachable across
/// the internet.
fn local_scope(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Counts of peers answered but not yet proved, globally and per client address.
#[derive(Debug, Default)]
pub struct PendingPeers {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl PendingPeers {
    /// Takes a slot for a peer from `address` (none when the connection's address is
    /// unknown, as in router tests), or says which cap is reached.
    pub fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Result<PendingSlot, OfferError> {
        let mut counts = self.lock();
        if counts.total >= MAX_PENDING_PEERS {
            return Err(OfferError::RelayBusy);
        }
        if let Some(ip) = address {
            let count = counts.by_address.entry(ip).or_insert(0);
            if *count >= MAX_PENDING_PER_ADDRESS {
                return Err(OfferError::AddressBusy);
            }
            *count += 1;
        }
        counts.total += 1;
        Ok(PendingSlot {
            peers: self.clone(),
            address,
        })
    }

    /// Peers pending now.
    pub fn count(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every update is one step.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One pending peer's place under the caps; dropping it (once the hello is proved, or
/// the peer is gone) frees the place.
#[derive(Debug)]
pub struct PendingSlot {
    peers: Arc<PendingPeers>,
    address: Option<IpAddr>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut counts = self.peers.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(ip) = self.address {
            if let Some(count) = counts.by_address.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    counts.by_address.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn candidates_are_reachable_only_within_the_relays_scope() {
        // A relay on loopback (tests) reaches its own host's addresses, private included.
        for c in ["127.0.0.1", "10.0.0.5", "192.168.1.2", "8.8.8.8", "::1"] {
            assert!(reachable_from(ip("127.0.0.1"), ip(c)), "{c}");
        }
        // A public relay: only public addresses.
        for c in [
            "127.0.0.1",
            "10.0.0.5",
            "172.16.3.4",
            "192.168.1.2",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.251",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!reachable_from(ip("203.0.113.7"), ip(c)), "{c}");
        }
        assert!(reachable_from(ip("203.0.113.7"), ip("198.51.100.9")));
        assert!(reachable_from(ip("2001:db8::1"), ip("2606:4700::1")));
        // A LAN relay: its LAN and the internet, not loopback.
        assert!(reachable_from(ip("192.168.1.1"), ip("192.168.1.2")));
        assert!(reachable_from(ip("192.168.1.1"), ip("198.51.100.9")));
        assert!(!reachable_from(ip("192.168.1.1"), ip("127.0.0.1")));
    }

    const OFFER: &str = "v=0\r\n\
        a=fingerprint:sha-256 AB:CD\r\n\
        a=candidate:1 1 udp 2130706431 10.0.0.5 5000 typ host\r\n\
        a=candidate:2 1 udp 2130706431 198.51.100.9 5001 typ srflx\r\n\
        a=candidate:3 1 udp 2130706431 abcd.local 5002 typ host\r\n\
        a=sctp-port:5000\r\n";

    #[test]
    fn offers_are_screened_before_parsing() {
        // A public relay strips the private and the mDNS candidate, keeps the rest.
        let kept = screen_offer(OFFER, ip("203.0.113.7")).expect("answerable");
        assert!(
            !kept.contains("10.0.0.5") && !kept.contains(".local"),
            "{kept}"
        );
        assert!(kept.contains("198.51.100.9") && kept.contains("a=sctp-port"));
        // On loopback the IP candidates stay.
        let kept = screen_offer(OFFER, ip("127.0.0.1")).expect("answerable");
        assert!(kept.contains("10.0.0.5"));
        let many: String = (0..9)
            .map(|i| format!("a=candidate:{i} 1 udp 1 127.0.0.1 {i} typ host\r\n"))
            .collect();
        assert_eq!(
            screen_offer(&format!("v=0\r\n{many}"), ip("127.0.0.1")),
            Err(OfferError::TooManyCandidates(9))
        );
        let big = "a".repeat(MAX_OFFER_SDP_BYTES + 1);
        assert_eq!(
            screen_offer(&big, ip("127.0.0.1")),
            Err(OfferError::TooLarge(big.len()))
        );
        assert_eq!(
            screen_offer(
                "v=0\ra=candidate:1 1 udp 1 127.0.0.1 1 typ host\r\n",
                ip("127.0.0.1")
            ),
            Err(OfferError::BareCarriageReturn)
        );
    }

    #[test]
    fn pending_peers_are_capped_per_address_and_freed_on_drop() {
        let peers = Arc::new(PendingPeers::default());
        let a = Some(ip("192.0.2.1"));
        let slots: Vec<_> = (0..MAX_PENDING_PER_ADDRESS)
            .map(|_| peers.admit(a).expect("under the cap"))
            .collect();
        assert_eq!(peers.admit(a).err(), Some(OfferError::AddressBusy));
        assert!(peers.admit(Some(ip("192.0.2.2"))).is_ok());
        drop(slots);
        assert_eq!(peers.count(), 0);
        assert!(peers.admit(a).is_ok());
    }
}
