//! The subscription key rule.
//!
//! A key as a customer writes it (`domain = NAME`, or `key=` of a hand-written `subscribe2`)
//! becomes the key the router gets:
//!
//! 1. a trailing `:port` is dropped: the router ignores the port of a request's `Host`, so a
//!    port can never select an app (a port that is not 1-65535 is refused);
//! 2. one trailing `.` is dropped (`example.org.` is the fully qualified `example.org`);
//! 3. a leading `.` marks a wildcard (`.example.org` serves every name below `example.org`)
//!    and is kept;
//! 4. the name is converted with IDNA (UTS #46, `idna::domain_to_ascii_strict`, as the control
//!    API stores domains): letters are lowercased and a Unicode name becomes its `xn--` form;
//! 5. the result must follow the API's grammar: at most 253 bytes, at least two labels of 1-63
//!    letters, digits and `-`, none starting or ending with `-`, a top label not all digits.
//!
//! A key that fails gets the reason, in words a customer can act on.

/// Longest domain name, in bytes, without the wildcard's leading `.` (RFC 1035).
pub const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// The key the router gets for `raw`, or why `raw` cannot be a domain.
pub fn normalize_key(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty name".into());
    }
    let host = match raw.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty() => {
            match port.parse::<u16>() {
                Ok(p) if p > 0 => host,
                _ => return Err(format!("{port} is not a port (1-65535)")),
            }
        }
        Some(_) => return Err("':' may only separate a port (1-65535) from the name".into()),
        None => raw,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let (wildcard, name) = match host.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    if name.is_empty() {
        return Err("empty name".into());
    }
    // Plain ASCII is checked before IDNA so a customer reads which rule a name breaks, not
    // only that IDNA refused it.
    if name.is_ascii() {
        grammar(&name.to_ascii_lowercase())?;
    }
    let ascii = idna::domain_to_ascii_strict(name)
        .map_err(|_| "not a valid internationalised domain name (IDNA, UTS #46)".to_string())?;
    grammar(&ascii)?;
    Ok(if wildcard { format!(".{ascii}") } else { ascii })
}

/// Whether `name` is already in the form [`normalize_key`] gives (what the control API
/// stores, and what `domains.json` must hold).
pub fn is_canonical(name: &str) -> bool {
    normalize_key(name).is_ok_and(|n| n == name)
}

/// The control API's grammar for a lowercase ASCII name (no wildcard dot).
fn grammar(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME {
        return Err(format!("longer than {MAX_NAME} bytes ({} in its ASCII form)", name.len()));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err("a domain has at least two labels (example.org)".into());
    }
    for label in &labels {
        if label.is_empty() {
            return Err("an empty label (two dots in a row, or a dot at either end)".into());
        }
        if label.len() > MAX_LABEL {
            return Err(format!("a label is longer than {MAX_LABEL} bytes"));
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(format!("{label:?}: labels are letters, digits and '-'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("{label:?}: a label cannot start or end with '-'"));
        }
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err("the top label is all digits (an IP address is not a domain)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_ports_trailing_dots_and_unicode_become_the_apis_form() {
        for (raw, want) in [
            ("example.org", "example.org"),
            ("Example.ORG", "example.org"),
            ("example.org:80", "example.org"),
            ("example.org:8000", "example.org"),
            ("example.org.", "example.org"),
            ("EXAMPLE.org.:443", "example.org"),
            (".Example.org", ".example.org"),
            (".example.org.", ".example.org"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("BÜCHER.example", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            (".bücher.example", ".xn--bcher-kva.example"),
            ("münchen.de:8080", "xn--mnchen-3ya.de"),
            ("a-b.c0.example", "a-b.c0.example"),
        ] {
            assert_eq!(normalize_key(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    /// The control API's own examples (crates/unbit-api/src/validate.rs): what it stores is
    /// what a customer's `domain =` line becomes, and what it refuses the validator refuses.
    #[test]
    fn the_apis_accepted_and_refused_names_agree() {
        assert_eq!(normalize_key("Example.ORG").unwrap(), "example.org");
        assert_eq!(normalize_key("bücher.de").unwrap(), "xn--bcher-kva.de");
        assert_eq!(normalize_key(".example.org").unwrap(), ".example.org");
        let long_label = format!("{}.com", "a".repeat(64));
        for bad in ["localhost", "a..b", "-a.com", "a-.com", "1.2.3.4", "a_b.com", "ex ample.com", "..example.com"] {
            assert!(normalize_key(bad).is_err(), "{bad} accepted");
        }
        assert!(normalize_key(&long_label).is_err());
        assert!(normalize_key("x\n.com").is_err());
    }

    #[test]
    fn refusals_say_which_rule_a_name_breaks() {
        for (raw, why) in [
            ("", "empty"),
            (".", "empty"),
            (":80", "empty"),
            ("example.org:0", "not a port"),
            ("example.org:70000", "not a port"),
            ("example.org:http", "may only separate a port"),
            ("[::1]:80", "at least two labels"),
            ("localhost", "at least two labels"),
            ("org.", "at least two labels"),
            ("a..example.org", "empty label"),
            ("example.org..", "empty label"),
            ("a_b.example.org", "\"a_b\": labels are letters"),
            ("-a.example.org", "cannot start or end with '-'"),
            ("10.0.0.3", "IP address"),
            ("exa mple.org", "labels are letters"),
            ("bü cher.example", "IDNA"),
            ("a\u{202e}b.example", "IDNA"),
        ] {
            let err = normalize_key(raw).unwrap_err();
            assert!(err.contains(why), "{raw:?}: {err} (wanted {why:?})");
        }
        let label = "a".repeat(63);
        let long = [label.as_str(); 4].join(".") + ".example";
        assert!(normalize_key(&long).unwrap_err().contains("longer than 253 bytes"));
        assert!(normalize_key(&format!("{}.org", "a".repeat(64))).unwrap_err().contains("longer than 63"));
        // The longest name there is still fits, as a wildcard too.
        let longest = [label.as_str(), &label, &label, &"b".repeat(61)].join(".");
        assert_eq!(longest.len(), 253);
        assert_eq!(normalize_key(&longest).unwrap(), longest);
        assert_eq!(normalize_key(&format!(".{longest}")).unwrap(), format!(".{longest}"));
    }

    #[test]
    fn only_the_normal_form_is_canonical() {
        assert!(is_canonical("example.org") && is_canonical(".example.org") && is_canonical("xn--bcher-kva.de"));
        for not in ["Example.org", "example.org.", "example.org:80", "bücher.de", "org", "Bad Name"] {
            assert!(!is_canonical(not), "{not}");
        }
    }
}
