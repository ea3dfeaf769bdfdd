//! The Host header as a routing key, the way browsers and HTTP clients mean it.
//!
//! Stock uWSGI looks the Host value up byte for byte, so `EXAMPLE.test`, `example.test:80`
//! and `example.test.` miss the vassal of `domain = example.test`, and a port defeats a
//! wildcard. Names on the node are lowercase (the control API stores lowercase IDNA ASCII, the
//! validator refuses anything else), so the key is brought to that form before the lookup.

/// Normalises a Host value in place and returns its new length: ASCII letters lowercased, a
/// numeric port (`:80`, `:8000`, or an empty one, `:`) removed, then one trailing dot (the
/// fully qualified form, `example.test.`). `[::1]:8080` keeps its brackets; any other byte is
/// kept as it is, so a name that is not a domain simply matches nothing.
///
/// This runs on every request: one pass over at most 255 bytes, no allocation.
pub fn normalise(key: &mut [u8]) -> usize {
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

/// The key of a Host value, as an owned string (the error backend's lookups; not the hot path).
pub fn normalised(host: &[u8]) -> Vec<u8> {
    let mut key = host.to_vec();
    let len = normalise(&mut key);
    key.truncate(len);
    key
}

/// The uwsgi packet size limit: the router turns a request's header block into one packet.
const PACKET_MAX: usize = 0xffff;

/// Whether the stock router's uwsgi packet for this complete header block would pass 64 KB
/// (then the block is "too large", 431, rather than malformed, 400). An upper estimate of what
/// `http_headers_parse` builds: the request line becomes five variables (method, URI, path,
/// query, protocol: three copies of the URI at most), each header `HTTP_NAME` plus value with
/// two 2-byte lengths, and the router adds about 300 bytes of its own variables.
pub fn exceeds_packet(header_block: &[u8]) -> bool {
    const ROUTER_VARS: usize = 300;
    let mut lines = header_block.split(|&b| b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    let mut size = ROUTER_VARS + 3 * (request_line.len() + 4) + 5 * 4 + 50;
    for line in lines {
        // "Name: value\r" -> 2 + 5 + name + 2 + value
        size += line.len() + 9;
    }
    size > PACKET_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(host: &str) -> String {
        String::from_utf8(normalised(host.as_bytes())).unwrap()
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
    fn what_is_not_a_port_stays() {
        assert_eq!(norm("[::1]"), "[::1]");
        assert_eq!(norm("[::1]:8080"), "[::1]");
        assert_eq!(norm("example.test:http"), "example.test:http");
        assert_eq!(norm("example.test.."), "example.test.");
        // Nothing left: the mapper answers 400 instead of looking up an empty key.
        assert_eq!(norm(":80"), "");
        assert_eq!(norm("."), "");
        assert_eq!(norm(""), "");
    }

    #[test]
    fn only_a_block_near_64_kb_is_too_large() {
        let block = |cookie: usize| format!("GET / HTTP/1.1\r\nHost: a.test\r\nCookie: {}\r\n\r", "a".repeat(cookie));
        assert!(!exceeds_packet(block(10).as_bytes()));
        assert!(!exceeds_packet(block(32 * 1024).as_bytes()));
        assert!(exceeds_packet(block(65_400).as_bytes()));
    }
}
