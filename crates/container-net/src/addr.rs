//! IPv4 addresses and prefixes. The original's tuntap router computed a netmask as
//! `0xffffffff << (n - 32)` (a negative shift), so its "10.0.0.0/8 deny" matched only
//! 10.0.0.0/24; [`Ipv4Prefix::mask`] is defined for every length 0..=32 and property-tested.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// `address/length`, 0 <= length <= 32. The address may have host bits set (an interface
/// address such as 10.0.0.3/8); [`Ipv4Prefix::network`] clears them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Prefix {
    /// `None` when `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Ipv4Prefix> {
        (len <= 32).then_some(Ipv4Prefix { addr, len })
    }

    /// For constants; `len` must be at most 32 (checked at compile time in const use).
    pub const fn new_unchecked(addr: Ipv4Addr, len: u8) -> Ipv4Prefix {
        assert!(len <= 32);
        Ipv4Prefix { addr, len }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The netmask: `len` leading one bits. Length 0 is the empty mask, 32 the full one.
    pub fn mask(&self) -> u32 {
        mask_of(self.len)
    }

    /// The prefix with its host bits cleared (10.0.0.3/8 -> 10.0.0.0/8).
    pub fn network(&self) -> Ipv4Prefix {
        Ipv4Prefix { addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()), len: self.len }
    }

    /// Whether `ip` lies in the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) ^ u32::from(self.addr)) & self.mask() == 0
    }
}

/// `len` leading ones; `None`-free for every `len <= 32`, saturating above.
pub fn mask_of(len: u8) -> u32 {
    match len {
        0 => 0,
        l if l >= 32 => u32::MAX,
        l => u32::MAX << (32 - u32::from(l)),
    }
}

/// The prefix length of a netmask, `None` unless it is contiguous ones then zeros.
pub fn prefix_len_of(mask: u32) -> Option<u8> {
    let ones = mask.leading_ones() as u8;
    (mask_of(ones) == mask).then_some(ones)
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixError(pub String);

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PrefixError {}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;

    /// `a.b.c.d/n` with `n` in 0..=32 written in plain decimal (no sign, no leading zero, no
    /// space), or a bare address meaning `/32`.
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let bad = |why: &str| PrefixError(format!("{s:?} is not an IPv4 prefix: {why}"));
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let addr = parse_ipv4(ip).ok_or_else(|| bad("bad address"))?;
        let len = match len {
            None => 32,
            Some(l) => {
                let plain = !l.is_empty()
                    && l.len() <= 2
                    && l.bytes().all(|b| b.is_ascii_digit())
                    && !(l.len() > 1 && l.starts_with('0'));
                let n: u8 = l.parse().ok().filter(|_| plain).ok_or_else(|| bad("bad prefix length"))?;
                if n > 32 {
                    return Err(bad("prefix length above 32"));
                }
                n
            }
        };
        Ok(Ipv4Prefix { addr, len })
    }
}

/// A dotted-quad IPv4 address in plain decimal: four parts, no leading zeros (which some
/// parsers read as octal), no sign, no space.
pub fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0'))
        {
            return None;
        }
        *o = p.parse().ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_original_bug_class() {
        let net: Ipv4Prefix = "10.0.0.0/8".parse().unwrap();
        assert_eq!(net.mask(), 0xff00_0000);
        assert!(net.contains(Ipv4Addr::new(10, 200, 3, 4)), "a /8 covers far beyond 10.0.0.0/24");
        assert!(!net.contains(Ipv4Addr::new(11, 0, 0, 1)));
        assert_eq!(mask_of(0), 0);
        assert_eq!(mask_of(32), u32::MAX);
        assert_eq!(mask_of(1), 0x8000_0000);
    }

    #[test]
    fn rejects_what_is_not_a_plain_prefix() {
        for s in [
            "10.0.0.0/33",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/08",
            "10.0.0.0/",
            "010.0.0.0/8",
            "10.0.0/8",
            "10.0.0.0.0/8",
            "10.0.0.256/8",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "10.0.0.0/8/8",
            "",
            "/8",
            "1e1.0.0.0/8",
        ] {
            assert!(s.parse::<Ipv4Prefix>().is_err(), "{s:?} parsed");
        }
        assert_eq!("10.0.0.3".parse::<Ipv4Prefix>().unwrap().prefix_len(), 32);
        assert_eq!("0.0.0.0/0".parse::<Ipv4Prefix>().unwrap().mask(), 0);
    }

    proptest! {
        #[test]
        fn mask_is_len_leading_ones(len in 0u8..=32) {
            let m = mask_of(len);
            prop_assert_eq!(m.leading_ones(), u32::from(len));
            prop_assert_eq!(m.count_ones(), u32::from(len));
            prop_assert_eq!(prefix_len_of(m), Some(len));
        }

        #[test]
        fn display_parse_round_trip(a: u32, len in 0u8..=32) {
            let p = Ipv4Prefix::new(Ipv4Addr::from(a), len).unwrap();
            prop_assert_eq!(p.to_string().parse::<Ipv4Prefix>().unwrap(), p);
        }

        #[test]
        fn contains_iff_the_top_bits_agree(a: u32, b: u32, len in 0u8..=32) {
            let p = Ipv4Prefix::new(Ipv4Addr::from(a), len).unwrap();
            let agree = len == 0 || (a >> (32 - u32::from(len))) == (b >> (32 - u32::from(len)));
            prop_assert_eq!(p.contains(Ipv4Addr::from(b)), agree);
            prop_assert!(p.network().contains(Ipv4Addr::from(a)));
        }

        #[test]
        fn every_container_address_is_in_10_slash_8(low in 0u32..0x0100_0000) {
            prop_assert!(crate::CONTAINER_NET.contains(Ipv4Addr::from(0x0a00_0000 | low)));
            prop_assert!(!crate::CONTAINER_NET.contains(Ipv4Addr::from(0x0b00_0000 | low)));
        }

        #[test]
        fn non_contiguous_masks_have_no_length(m: u32) {
            let contiguous = m.leading_ones() + m.trailing_zeros() == 32 || m == u32::MAX;
            prop_assert_eq!(prefix_len_of(m).is_some(), contiguous);
        }

        #[test]
        fn parse_ipv4_agrees_with_std_on_canonical_text(a: u32) {
            let ip = Ipv4Addr::from(a);
            prop_assert_eq!(parse_ipv4(&ip.to_string()), Some(ip));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<Ipv4Prefix>();
        }
    }
}
