//! Names: what a client may ask for, and which entries may answer.
//!
//! A wildcard entry `.example.org` serves `shop.example.org` and no other name: not
//! `example.org`, not `a.shop.example.org`, as an X.509 `*.example.org` certificate does. An
//! entry for the exact name wins over the wildcard.

/// The longest DNS name.
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// The entry name for a server name a client sent (TLS SNI, or a request's Host): lowercased,
/// without one trailing dot; `None` when it is not a DNS name (so it can never name a file
/// outside the index: no `/`, no empty label, no leading dot).
pub fn server_name(raw: &[u8]) -> Option<String> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    if raw.is_empty() || raw.len() > MAX_NAME {
        return None;
    }
    let name: String = raw.iter().map(|b| b.to_ascii_lowercase() as char).collect();
    let plain = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    });
    plain.then_some(name)
}

/// Whether `name` may be an entry's file name: a server name, or a wildcard (`.` + a server
/// name of at least two labels).
pub fn is_entry_name(name: &str) -> bool {
    match name.strip_prefix('.') {
        Some(rest) => rest.contains('.') && server_name(rest.as_bytes()).as_deref() == Some(rest),
        None => server_name(name.as_bytes()).as_deref() == Some(name),
    }
}

/// The wildcard entry that may serve `name` (one label up), if any: `shop.example.org` →
/// `.example.org`. A name of two labels has none (`.org` is nobody's).
pub fn wildcard_of(name: &str) -> Option<String> {
    let (_, parent) = name.split_once('.')?;
    parent.contains('.').then(|| format!(".{parent}"))
}

/// The entries that may serve `name`, best first: the exact one, then the wildcard.
pub fn candidates(name: &str) -> impl Iterator<Item = String> {
    std::iter::once(name.to_string()).chain(wildcard_of(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_lowercase_dns_names_or_nothing() {
        assert_eq!(server_name(b"Shop.Example.ORG.").as_deref(), Some("shop.example.org"));
        assert_eq!(server_name(b"xn--bcher-kva.example").as_deref(), Some("xn--bcher-kva.example"));
        for bad in
            [&b""[..], b".", b".example.org", b"a..b", b"../../etc/passwd", b"a/b", b"a b", b"a\0b", b"@client-ca"]
        {
            assert_eq!(server_name(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(server_name(format!("{}.org", "a".repeat(64)).as_bytes()), None);
        assert_eq!(server_name("a.".repeat(128).as_bytes()), None);
    }

    #[test]
    fn a_wildcard_serves_one_label_below_and_the_exact_name_comes_first() {
        assert_eq!(candidates("shop.example.org").collect::<Vec<_>>(), ["shop.example.org", ".example.org"]);
        assert_eq!(candidates("example.org").collect::<Vec<_>>(), ["example.org"]);
        assert_eq!(wildcard_of("a.shop.example.org").as_deref(), Some(".shop.example.org"));
        assert!(is_entry_name(".example.org") && is_entry_name("example.org"));
        assert!(!is_entry_name(".org") && !is_entry_name("Example.org") && !is_entry_name("@client-ca"));
    }
}
