//! The names this module answers for, as pure functions: `<uid>.local` to the container's
//! address and back. Nothing here allocates, reads a file or panics on any input.

use container_spec::{ip_of, is_container_uid};
use std::net::Ipv4Addr;

/// The longest name [`format`] writes: `MAX_UID` has 8 digits, the longest u32 10.
pub const MAX_NAME: usize = 10 + ".local".len();

/// The container uid named by `name`: ASCII decimal digits without a leading zero (one
/// address, one spelling: `030902.local` is nobody), then `.local` in any case, then at most
/// one trailing dot (the root, as in a fully qualified name). Only uids that may be a
/// container's ([`is_container_uid`]) are names.
pub fn uid_of_name(name: &[u8]) -> Option<u32> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let digits_len = name.len().checked_sub(".local".len())?;
    let (digits, suffix) = name.split_at(digits_len);
    if !suffix.eq_ignore_ascii_case(b".local") || !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
    }
    let mut uid: u32 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        uid = uid.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
    }
    is_container_uid(uid).then_some(uid)
}

/// The address of the container `name` names, IPv4 only.
pub fn addr_of_name(name: &[u8]) -> Option<Ipv4Addr> {
    uid_of_name(name).map(ip_of)
}

/// The container whose address is `addr`: the inverse of [`ip_of`] over container uids, so
/// the gateway 10.0.0.1, 10.0.0.0 and anything outside 10/8 are nobody's.
pub fn uid_of_addr(addr: Ipv4Addr) -> Option<u32> {
    let a = u32::from(addr);
    if a >> 24 != 10 {
        return None;
    }
    let uid = (a & 0x00ff_ffff).checked_sub(2)?.checked_add(container_spec::BASE_UID)?;
    (is_container_uid(uid) && ip_of(uid) == addr).then_some(uid)
}

/// `<uid>.local` into `out`, returning its length (no allocation: the module answers from
/// inside any program's lookup, where an allocation failure would abort the program).
pub fn format(uid: u32, out: &mut [u8; MAX_NAME]) -> usize {
    let mut digits = [0u8; 10];
    let mut n = uid;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = &digits[i..];
    out[..digits.len()].copy_from_slice(digits);
    out[digits.len()..digits.len() + 6].copy_from_slice(b".local");
    digits.len() + 6
}

#[cfg(test)]
mod tests {
    use super::*;
    use container_spec::{BASE_UID, MAX_UID};
    use proptest::prelude::*;

    #[test]
    fn names_of_containers() {
        assert_eq!(uid_of_name(b"30902.local"), Some(30902));
        assert_eq!(addr_of_name(b"30902.local"), Some(ip_of(30902)));
        assert_eq!(addr_of_name(b"30001.local"), Some(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(uid_of_name(b"30902.LOCAL"), Some(30902));
        assert_eq!(uid_of_name(b"30902.LoCaL."), Some(30902));
        assert_eq!(uid_of_name(format!("{MAX_UID}.local").as_bytes()), Some(MAX_UID));
        assert_eq!(uid_of_name(format!("{BASE_UID}.local").as_bytes()), Some(BASE_UID));
    }

    #[test]
    fn other_names_are_nobody() {
        for name in [
            "30902abc.local",
            "030902.local",
            "0.local",
            ".local",
            "local",
            "",
            ".",
            "30902.local..",
            "30902..local",
            "30902.locals",
            "30902.lokal",
            "30902",
            "30902.",
            "+30902.local",
            "-30902.local",
            " 30902.local",
            "30902 .local",
            "3 0902.local",
            "30902.local ",
            "29999.local",
            "65534.local",
            "65535.local",
            "4294967295.local",
            "4294967296.local",
            "99999999999999999999.local",
            "30902.example.local",
            "x.30902.local",
            "٣٠٩٠٢.local",
            "30902.ｌocal",
        ] {
            assert_eq!(uid_of_name(name.as_bytes()), None, "{name:?}");
        }
        assert_eq!(uid_of_name(format!("{}.local", MAX_UID + 1).as_bytes()), None);
        assert_eq!(uid_of_name(b"30902.local\0"), None);
    }

    #[test]
    fn addresses_back_to_names() {
        assert_eq!(uid_of_addr(ip_of(30902)), Some(30902));
        assert_eq!(uid_of_addr(Ipv4Addr::new(10, 0, 0, 2)), Some(BASE_UID));
        assert_eq!(uid_of_addr(Ipv4Addr::new(10, 255, 255, 255)), Some(MAX_UID));
        for nobody in [
            Ipv4Addr::new(10, 0, 0, 0),
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(11, 0, 0, 3),
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(192, 168, 0, 3),
            ip_of(65534),
            ip_of(65535),
        ] {
            assert_eq!(uid_of_addr(nobody), None, "{nobody}");
        }
    }

    proptest! {
        /// Every container uid's name, in any case and with or without the root's dot, names
        /// that uid; formatting and parsing agree.
        #[test]
        fn every_container_name_round_trips(uid in BASE_UID..=MAX_UID, upper in any::<[bool; 5]>(), dot in any::<bool>()) {
            let mut buf = [0u8; MAX_NAME];
            let n = format(uid, &mut buf);
            let want_text = format!("{uid}.local");
            prop_assert_eq!(&buf[..n], want_text.as_bytes());
            let mut name = buf[..n].to_vec();
            for (c, up) in name[n - 5..].iter_mut().zip(upper) {
                if up { c.make_ascii_uppercase(); }
            }
            if dot { name.push(b'.'); }
            let want = is_container_uid(uid).then_some(uid);
            prop_assert_eq!(uid_of_name(&name), want);
            prop_assert_eq!(uid_of_addr(ip_of(uid)), want);
        }

        /// Any u32 outside the containers' range, with or without leading zeros, is nobody;
        /// so is any number with a leading zero.
        #[test]
        fn only_container_uids_in_canonical_form(n in any::<u32>(), zeros in 0usize..3) {
            let name = format!("{}{n}.local", "0".repeat(zeros));
            let want = (zeros == 0 && is_container_uid(n)).then_some(n);
            prop_assert_eq!(uid_of_name(name.as_bytes()), want);
        }

        /// Arbitrary bytes never panic, and whatever parses is exactly a canonical name.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Some(uid) = uid_of_name(&bytes) {
                let lower = String::from_utf8(bytes.to_ascii_lowercase()).unwrap();
                prop_assert!(lower == format!("{uid}.local") || lower == format!("{uid}.local."), "{:?}", lower);
            }
        }

        /// An address maps back to a uid exactly when that uid's address is it.
        #[test]
        fn addresses_invert_ip_of(a in any::<u32>()) {
            let addr = Ipv4Addr::from(a);
            if let Some(uid) = uid_of_addr(addr) {
                prop_assert!(is_container_uid(uid));
                prop_assert_eq!(ip_of(uid), addr);
            } else if a >> 24 == 10 && a & 0x00ff_ffff >= 2 {
                // In 10/8 and not the network or the gateway: the uid it would be is reserved.
                let uid = (a & 0x00ff_ffff) - 2 + BASE_UID;
                prop_assert!(!is_container_uid(uid), "{} is container {}'s", addr, uid);
            }
        }
    }
}
