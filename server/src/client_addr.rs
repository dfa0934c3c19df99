//! The client's address, for throttling. `X-Forwarded-For` is written by whoever sends the
//! request, so it is read only when the connection comes from a proxy the operator trusts
//! (`CLOUDROUTER_TRUSTED_PROXIES`), and then only up to the first address that is not one of
//! those proxies, read from the right: everything left of it came from the client.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Addresses and CIDR blocks of the proxies in front of the console.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// A comma-separated list of IPs and CIDRs ("10.0.0.0/8, 192.0.2.7, fd00::/8"); empty: none.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let mut nets = vec![];
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (ip, bits) = item.split_once('/').unwrap_or((item, ""));
            let ip: IpAddr = ip.parse().map_err(|_| format!("CLOUDROUTER_TRUSTED_PROXIES: \"{item}\" is not an IP address or CIDR block"))?;
            let ip = ip.to_canonical();
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = if bits.is_empty() { max } else { bits.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| format!("CLOUDROUTER_TRUSTED_PROXIES: \"{item}\" has a bad prefix length"))? };
            nets.push((ip, bits));
        }
        Ok(TrustedProxies(nets))
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|&(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(u32::from(n) as u128, u32::from(a) as u128, 32, bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(u128::from(n), u128::from(a), 128, bits),
            _ => false,
        })
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

fn prefix_eq(net: u128, addr: u128, width: u32, bits: u8) -> bool {
    let shift = width - u32::from(bits);
    shift >= width || (net >> shift) == (addr >> shift)
}

/// Puts the client's address ([`app::ssr::ClientAddr`]) on every console request.
pub async fn layer(State(trusted): State<Arc<TrustedProxies>>, mut req: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let client = trusted.client_addr(peer.ip(), req.headers());
        req.extensions_mut().insert(app::ssr::ClientAddr(client));
    }
    next.run(req).await
}

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
}
