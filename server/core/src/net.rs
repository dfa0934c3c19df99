//! Client addresses: IP networks (an address or a CIDR block, IPv4 or IPv6), the proxies whose
//! `X-Forwarded-For` is believed, and the client's address behind them. One setting
//! (`CLOUDROUTER_TRUSTED_PROXIES`) serves the console's throttles and the gateway's per-key IP
//! allow-lists. `X-Forwarded-For` is written by whoever sends the request, so it is read only when
//! the connection comes from a trusted proxy, and then only up to the first address that is not
//! one of those proxies, read from the right: everything left of it came from the client.

use http::HeaderMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// An address or a CIDR block ("192.0.2.0/24", "2001:db8::/32", "198.51.100.7").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    bits: u8,
}

impl IpNet {
    /// Parses "ip" or "ip/bits"; IPv4-mapped IPv6 addresses count as IPv4.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let (ip, bits) = s.split_once('/').unwrap_or((s, ""));
        let addr = ip.parse::<IpAddr>().map_err(|_| format!("\"{s}\" is not an IP address or CIDR block"))?.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = if bits.is_empty() { max } else { bits.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| format!("\"{s}\" has a bad prefix length"))? };
        Ok(IpNet { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(u32::from(n) as u128, u32::from(a) as u128, 32, self.bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(u128::from(n), u128::from(a), 128, self.bits),
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.bits == max { write!(f, "{}", self.addr) } else { write!(f, "{}/{}", self.addr, self.bits) }
    }
}

fn prefix_eq(net: u128, addr: u128, width: u32, bits: u8) -> bool {
    let shift = width - u32::from(bits);
    shift >= width || (net >> shift) == (addr >> shift)
}

/// Addresses and CIDR blocks of the proxies in front of this server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// A comma-separated list of IPs and CIDRs ("10.0.0.0/8, 192.0.2.7, fd00::/8"); empty: none.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| IpNet::parse(item).map_err(|e| format!("CLOUDROUTER_TRUSTED_PROXIES: {e}")))
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client behind `peer`: `peer` itself unless it is a trusted proxy; then the right-most
    /// `X-Forwarded-For` entry that is not a trusted proxy (or the left-most, if all are).
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        // Several header lines make one list, in order.
        let hops = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let hop = hop.trim();
            let Some(ip) = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip())) else {
                // Not an address: the trusted hop to its right is the best we know.
                return client;
            };
            client = ip.to_canonical();
            if !self.contains(client) {
                return client;
            }
        }
        client
    }
}

/// The client's address, put on each request by the server's layer (see `server::client_addr`).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub IpAddr);

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let none = TrustedProxies::default();
        assert_eq!(none.client_addr(ip("203.0.113.1"), &xff(&["198.51.100.7"])), ip("203.0.113.1"), "untrusted peer: its own address");

        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.0.2.7 ,fd00::/8").unwrap();
        let proxy = ip("10.1.2.3");
        assert_eq!(trusted.client_addr(proxy, &xff(&["198.51.100.7"])), ip("198.51.100.7"));
        // The client wrote the left part; the proxy appended the real address.
        assert_eq!(trusted.client_addr(proxy, &xff(&["1.1.1.1, 198.51.100.7"])), ip("198.51.100.7"));
        assert_eq!(trusted.client_addr(proxy, &xff(&["1.1.1.1", "198.51.100.7, 192.0.2.7"])), ip("198.51.100.7"), "two header lines, two proxies");
        assert_eq!(trusted.client_addr(proxy, &xff(&["garbage, 10.9.9.9"])), ip("10.9.9.9"));
        assert_eq!(trusted.client_addr(proxy, &HeaderMap::new()), proxy, "no header: the proxy itself");
        assert_eq!(trusted.client_addr(ip("::ffff:10.0.0.1"), &xff(&["[2001:db8::1]:443"])), ip("2001:db8::1"));
        assert_eq!(trusted.client_addr(ip("fd12::1"), &xff(&["198.51.100.9"])), ip("198.51.100.9"));
    }

    #[test]
    fn bad_lists_are_refused() {
        assert_eq!(TrustedProxies::parse(" ").unwrap(), TrustedProxies::default());
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.example.com").is_err());
        assert!(TrustedProxies::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    }

    #[test]
    fn networks_match_their_addresses() {
        let v4 = IpNet::parse("192.0.2.0/24").unwrap();
        assert!(v4.contains(ip("192.0.2.200")) && v4.contains(ip("::ffff:192.0.2.1")) && !v4.contains(ip("192.0.3.1")));
        let one = IpNet::parse(" 198.51.100.7 ").unwrap();
        assert!(one.contains(ip("198.51.100.7")) && !one.contains(ip("198.51.100.8")));
        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")) && !v6.contains(ip("192.0.2.1")));
        assert_eq!((v4.to_string(), one.to_string()), ("192.0.2.0/24".to_string(), "198.51.100.7".to_string()));
        assert!(IpNet::parse("192.0.2.0/40").is_err() && IpNet::parse("example.com").is_err());
    }
}
