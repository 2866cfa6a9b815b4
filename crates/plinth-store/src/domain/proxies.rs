//! `PLINTH_TRUSTED_PROXIES`: the balancers whose `X-Forwarded-For` Plinth believes.
//!
//! Only when the connection comes from one of these networks is the client's address read from
//! `X-Forwarded-For`: the rightmost address that is not itself a trusted proxy (addresses further
//! left were written by the client and prove nothing). From anyone else the header is ignored,
//! so a client cannot choose the address that throttling and the audit log see.

use std::net::IpAddr;

/// A network, `10.0.0.0/8` or `::1/128` (a bare address is one host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or network (10.0.0.0/8, ::1)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    /// A comma-separated list.
    pub fn parse_list(text: &str) -> Result<Vec<Cidr>, String> {
        text.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Cidr::parse)
            .collect()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the rightmost address
/// in `X-Forwarded-For` that is not a trusted proxy.
pub fn client_addr(
    peer: Option<IpAddr>,
    forwarded_for: &[&str],
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    let hops = forwarded_for
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            // Something that is not an address: stop at the last one we could trust.
            Err(_) => break,
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        let n = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(n.contains(ip("10.1.2.3")));
        assert!(!n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("::ffff:10.0.0.9")), "v4-mapped v6");
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("proxy").is_err());
        assert_eq!(
            Cidr::parse_list(" 127.0.0.1, 10.0.0.0/8 ,").unwrap().len(),
            2
        );
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let trusted = Cidr::parse_list("127.0.0.1,10.0.0.0/8").unwrap();
        // From the balancer: the address it appended, not what the client wrote before it.
        assert_eq!(
            client_addr(Some(ip("127.0.0.1")), &["6.6.6.6, 203.0.113.7"], &trusted),
            Some(ip("203.0.113.7"))
        );
        // Through two trusted hops.
        assert_eq!(
            client_addr(Some(ip("127.0.0.1")), &["203.0.113.7, 10.0.0.5"], &trusted),
            Some(ip("203.0.113.7"))
        );
        // From anyone else the header is ignored.
        assert_eq!(
            client_addr(Some(ip("198.51.100.1")), &["1.2.3.4"], &trusted),
            Some(ip("198.51.100.1"))
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(
            client_addr(Some(ip("127.0.0.1")), &["nonsense"], &trusted),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(
            client_addr(Some(ip("127.0.0.1")), &[], &[]),
            Some(ip("127.0.0.1"))
        );
    }
}
