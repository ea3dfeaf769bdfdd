//! The request side of the rule: a `Host` header value as a routing key.
//!
//! [`normalize_key`](crate::normalize_key) is the announce side: it refuses what is not a
//! domain. A request's `Host` is not refused here, only brought to the same form (lowercase,
//! no port, no trailing dot), so a name that is not a domain simply matches nothing. Browsers
//! send IDNA names already in their ASCII form, so no IDNA step is needed.

/// Normalises a Host value in place and returns its new length: ASCII letters lowercased, a
/// numeric port (`:80`, `:8000`, or an empty one, `:`) removed, then one trailing dot (the
/// fully qualified form, `example.test.`). `[::1]:8080` keeps its brackets; any other byte is
/// kept as it is.
///
/// The router runs this on every request: one pass over at most 255 bytes, no allocation.
pub fn host_key_in_place(key: &mut [u8]) -> usize {
    key.make_ascii_lowercase();
    let mut len = key.len();
    if let Some(colon) = key.iter().rposition(|&b| b == b':') {
        if key[colon + 1..].iter().all(u8::is_ascii_digit) {
            len = colon;
        }
    }
    if len > 0 && key[len - 1] == b'.' {
        len -= 1;
    }
    len
}

/// [`host_key_in_place`] on a copy, for lookups off the hot path.
pub fn host_key(host: &[u8]) -> Vec<u8> {
    let mut key = host.to_vec();
    let len = host_key_in_place(&mut key);
    key.truncate(len);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(host: &str) -> String {
        String::from_utf8(host_key(host.as_bytes())).unwrap()
    }

    #[test]
    fn case_port_and_trailing_dot_never_change_the_key() {
        for host in [
            "example.test",
            "EXAMPLE.test",
            "Example.Test:80",
            "example.test:8000",
            "example.test.",
            "example.test.:443",
        ] {
            assert_eq!(norm(host), "example.test", "{host}");
        }
        assert_eq!(norm("A.Wild.Test:8080"), "a.wild.test");
        assert_eq!(norm("example.test:"), "example.test");
    }

    #[test]
    fn a_host_reaches_the_key_its_announce_got() {
        for raw in ["Example.ORG", "example.org:8080", "example.org.", ".Wild.example.org"] {
            assert_eq!(norm(raw), crate::normalize_key(raw).unwrap(), "{raw}");
        }
    }

    #[test]
    fn what_is_not_a_port_stays() {
        assert_eq!(norm("[::1]"), "[::1]");
        assert_eq!(norm("[::1]:8080"), "[::1]");
        assert_eq!(norm("example.test:http"), "example.test:http");
        assert_eq!(norm("example.test.."), "example.test.");
        // Nothing left: the router answers 400 instead of looking up an empty key.
        assert_eq!(norm(":80"), "");
        assert_eq!(norm("."), "");
        assert_eq!(norm(""), "");
    }
}
