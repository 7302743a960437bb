//! Which network a volunteer's data comes from, so that one network never holds two
//! replicas of a unit: wallets are free, addresses within one network are cheap, but
//! networks are not. The address is the one ICE selected for the connection (where the
//! data actually flows), never a header the peer could write.

use std::fmt;
use std::net::IpAddr;

/// How addresses group into networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkRule {
    /// Leading bits of an IPv4 address that name its network (24 by default: a /24 is
    /// what one household, office or small cloud allocation gets).
    pub v4_prefix: u8,
    /// Leading bits of an IPv6 address that name its network (48: a site's allocation).
    pub v6_prefix: u8,
    /// Whether loopback addresses are one network. Off by default, so that a whole
    /// network run on one machine (development, the test suite) keeps its replicas;
    /// tests of this rule turn it on.
    pub loopback_is_one_network: bool,
}

impl Default for NetworkRule {
    fn default() -> Self {
        Self {
            v4_prefix: 24,
            v6_prefix: 48,
            loopback_is_one_network: false,
        }
    }
}

/// One network: an address cut to its rule's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl NetworkRule {
    /// The network `address` belongs to; `None` where it counts as its own (a loopback
    /// address, unless the rule makes loopback one network).
    pub fn network_of(&self, address: IpAddr) -> Option<Network> {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if address.is_loopback() && !self.loopback_is_one_network {
            return None;
        }
        Some(match address {
            IpAddr::V4(v4) => {
                let prefix = self.v4_prefix.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                Network {
                    base: IpAddr::V4((u32::from(v4) & mask).into()),
                    prefix,
                }
            }
            IpAddr::V6(v6) => {
                let prefix = self.v6_prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                Network {
                    base: IpAddr::V6((u128::from(v6) & mask).into()),
                    prefix,
                }
            }
        })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(rule: &NetworkRule, address: &str) -> Option<String> {
        rule.network_of(address.parse().expect("an address"))
            .map(|n| n.to_string())
    }

    #[test]
    fn addresses_group_by_prefix_and_loopback_is_distinct_unless_asked() {
        let rule = NetworkRule::default();
        assert_eq!(
            net(&rule, "203.0.113.77").as_deref(),
            Some("203.0.113.0/24")
        );
        assert_eq!(net(&rule, "203.0.113.77"), net(&rule, "203.0.113.1"));
        assert_ne!(net(&rule, "203.0.113.77"), net(&rule, "203.0.114.77"));
        assert_eq!(
            net(&rule, "2001:db8:1:2::7").as_deref(),
            Some("2001:db8:1::/48")
        );
        assert_eq!(
            net(&rule, "2001:db8:1:ffff::1"),
            net(&rule, "2001:db8:1::9")
        );
        // An IPv4 peer seen on a dual-stack socket is the same network.
        assert_eq!(net(&rule, "::ffff:203.0.113.9"), net(&rule, "203.0.113.1"));
        assert_eq!(net(&rule, "127.0.0.1"), None);
        assert_eq!(net(&rule, "::1"), None);
        let one = NetworkRule {
            loopback_is_one_network: true,
            ..rule
        };
        assert_eq!(net(&one, "127.0.0.1"), net(&one, "127.0.0.2"));
        assert!(net(&one, "127.0.0.1").is_some());
        // Whole-address rules (a private cluster) and the degenerate /0.
        let exact = NetworkRule {
            v4_prefix: 32,
            ..rule
        };
        assert_ne!(net(&exact, "10.0.0.1"), net(&exact, "10.0.0.2"));
        let all = NetworkRule {
            v4_prefix: 0,
            ..rule
        };
        assert_eq!(net(&all, "10.0.0.1").as_deref(), Some("0.0.0.0/0"));
    }
}
