//! `trusted-proxies`: the addresses whose forwarding headers (`Forwarded`,
//! `X-Forwarded-Host`, `X-Forwarded-Proto`) are believed. Every other peer is a
//! client, and a client's headers never decide what the mirror writes into a
//! response body (config.json's `dl` is where cargo sends its token).

use std::net::IpAddr;

/// One address block: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    addr: IpAddr,
    bits: u8,
}

impl Block {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(net.to_bits().into(), ip.to_bits().into(), 32, self.bits)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(net.to_bits(), ip.to_bits(), 128, self.bits)
            }
            _ => false,
        }
    }
}

/// Whether the first `bits` of two `width`-bit numbers agree.
fn masked(net: u128, ip: u128, width: u32, bits: u8) -> bool {
    let shift = width - u32::from(bits);
    if shift >= width {
        return true;
    }
    (net >> shift) == (ip >> shift)
}

/// An IPv4 peer seen on a dual-stack socket arrives as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose forwarding headers are trusted; empty trusts none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Block>,
}

impl TrustedProxies {
    /// Parses `10.0.0.5, 10.1.0.0/16, ::1` (addresses or CIDR blocks, comma-separated).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut blocks = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, bits) = match item.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or CIDR block"))?;
            let addr = canonical(addr);
            let width = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => width,
                Some(bits) => match bits.parse::<u8>() {
                    Ok(b) if b <= width => b,
                    _ => return Err(format!("{item:?}: prefix length must be 0..={width}")),
                },
            };
            blocks.push(Block { addr, bits });
        }
        Ok(Self { blocks })
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Whether a connection from `peer` may tell the mirror how it was reached.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_blocks() {
        let set = TrustedProxies::parse("10.0.0.5, 192.168.0.0/16,::1, fd00::/8").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(set.trusts(ip("10.0.0.5")));
        assert!(!set.trusts(ip("10.0.0.6")));
        assert!(set.trusts(ip("192.168.44.1")));
        assert!(!set.trusts(ip("192.169.0.1")));
        assert!(set.trusts(ip("::1")));
        assert!(set.trusts(ip("fd12::1")));
        assert!(!set.trusts(ip("fe80::1")));
        // IPv4 peers on a dual-stack socket.
        assert!(set.trusts(ip("::ffff:10.0.0.5")));
        assert!(TrustedProxies::parse("0.0.0.0/0")
            .unwrap()
            .trusts(ip("8.8.8.8")));
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(!TrustedProxies::default().trusts(ip("127.0.0.1")));
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.example.com").is_err());
        assert!(TrustedProxies::parse("::/129").is_err());
        assert!(TrustedProxies::parse("10.0.0.1/x").is_err());
    }
}
