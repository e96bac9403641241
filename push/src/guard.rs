//! Where webhooks may not go (server-side request forgery): loopback, private, link-local,
//! shared, multicast and other special addresses are refused unless a configured network allows
//! them. The check is made on the addresses a host resolves to, by the resolver the HTTP client
//! connects with, so a name that later resolves elsewhere (DNS rebinding) gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A network in CIDR notation: `127.0.0.1/32`, `10.0.0.0/8`, `::1/128` (an address alone is
/// one host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `address[/prefix]`.
    pub fn parse(text: &str) -> Result<Network, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = address.trim().parse().map_err(|_| format!("{text:?}: not an IP address or network"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => {
                p.trim().parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(|| format!("{text:?}: bad prefix"))?
            }
            None => bits,
        };
        Ok(Network { address, prefix })
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_matches(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_matches(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_matches(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    net[..whole] == ip[..whole] && (rest == 0 || (net[whole] ^ ip[whole]) >> (8 - rest) == 0)
}

/// Why `ip` is not a public address, if it is not.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => special_v4(v4),
            None => special_v6(v6),
        },
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast or reserved")
    } else if ip.is_documentation() || (a == 198 && (b == 18 || b == 19)) || (a == 192 && b == 0) {
        Some("reserved")
    } else {
        None
    }
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Some("reserved")
    } else {
        None
    }
}

/// Which addresses webhooks may reach: public ones, and special ones in `allowed`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Networks allowed although special (e.g. `127.0.0.1/32` for a test receiver).
    pub allowed: Vec<Network>,
}

impl AddressPolicy {
    /// `Err(reason)` when a webhook may not go to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        match special(ip) {
            Some(kind) if !self.allowed.iter().any(|n| n.contains(ip)) => Err(format!(
                "{ip} is a {kind} address; webhooks go to public addresses unless [push] webhook_allowed_networks names it"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let policy = AddressPolicy::default();
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(policy.check(ip(internal)).is_err(), "{internal}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1", "100.128.0.1"] {
            assert!(policy.check(ip(public)).is_ok(), "{public}");
        }
        let tests = AddressPolicy { allowed: vec![Network::parse("127.0.0.1/32").unwrap()] };
        assert!(tests.check(ip("127.0.0.1")).is_ok());
        assert!(tests.check(ip("127.0.0.2")).is_err());
        assert!(tests.check(ip("169.254.169.254")).is_err());
    }

    #[test]
    fn networks_parse_and_match_by_prefix() {
        let net = Network::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.1.1")) && !net.contains(ip("11.0.0.1")));
        let odd = Network::parse("192.168.4.0/22").unwrap();
        assert!(odd.contains(ip("192.168.7.255")) && !odd.contains(ip("192.168.8.0")));
        assert!(Network::parse("::1").unwrap().contains(ip("::1")));
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        for bad in ["10.0.0.0/33", "localhost", "10.0.0/8", "::1/129"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }
}
