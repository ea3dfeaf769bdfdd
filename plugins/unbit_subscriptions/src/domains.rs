//! Who owns which domain on this node: the domains file and its table live in the
//! `domain-table` crate, shared with the router's front door (`plugins/unbit_router`); what
//! only the validator needs, the grammar of a subscription key, is here.

pub use domain_table::{is_domain_name, Domain, DomainTable, Loaded};

/// A subscription key: a domain name, optionally followed by `:port` (the router matches the
/// Host header with its port).
pub fn is_subscription_key(key: &str) -> bool {
    match key.rsplit_once(':') {
        Some((host, port)) => is_domain_name(host) && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => is_domain_name(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_keys_follow_the_domain_grammar() {
        for ok in ["example.org", ".example.org", "a-b.example.org:8080", "xn--bcher-kva.example"] {
            assert!(is_subscription_key(ok), "{ok}");
        }
        for bad in
            ["", "org", "Example.org", "a..org", "-a.org", "a.org:", "a.org:0", "a.org:99999", "a/b.org", "..org"]
        {
            assert!(!is_subscription_key(bad), "{bad}");
        }
    }
}
