//! The request's header block as the stock router sees it.
//!
//! The Host key itself is `domain_names::host_key_in_place`: one rule for names on the node.
//! Stock uWSGI looks the Host value up byte for byte, so `EXAMPLE.test`, `example.test:80`
//! and `example.test.` would miss the vassal of `domain = example.test`; the plugin brings
//! the key to the announce's form before the lookup.

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

    #[test]
    fn only_a_block_near_64_kb_is_too_large() {
        let block = |cookie: usize| format!("GET / HTTP/1.1\r\nHost: a.test\r\nCookie: {}\r\n\r", "a".repeat(cookie));
        assert!(!exceeds_packet(block(10).as_bytes()));
        assert!(!exceeds_packet(block(32 * 1024).as_bytes()));
        assert!(exceeds_packet(block(65_400).as_bytes()));
    }
}
