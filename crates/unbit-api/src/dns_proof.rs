//! Domain ownership proof: a TXT record whose text is exactly `uwsgi:<customer uuid>` on the
//! domain or on one of its parents (down to two labels), as the quickstart documents. The
//! resolver is configurable (`--dns-resolver 127.0.0.1:5353`) so tests and providers with their
//! own recursive resolver can point it anywhere; otherwise the system configuration is used.

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::TokioAsyncResolver;
use std::net::SocketAddr;
use std::time::Duration;

pub struct DnsProof {
    resolver: TokioAsyncResolver,
}

impl DnsProof {
    pub fn new(server: Option<SocketAddr>) -> Result<Self, String> {
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 1;
        // A TXT record added a minute ago must be seen now: no answers are kept.
        opts.cache_size = 0;
        let resolver = match server {
            Some(addr) => {
                let group = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                TokioAsyncResolver::tokio(ResolverConfig::from_parts(None, vec![], group), opts)
            }
            None => {
                let (config, _) = hickory_resolver::system_conf::read_system_conf()
                    .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?;
                TokioAsyncResolver::tokio(config, opts)
            }
        };
        Ok(DnsProof { resolver })
    }

    /// The names whose TXT records may prove `domain`: itself, then each parent with at least
    /// two labels. A wildcard `.example.org` is proven like `example.org`.
    pub fn candidate_names(domain: &str) -> Vec<String> {
        let name = domain.trim_start_matches('.');
        let labels: Vec<&str> = name.split('.').collect();
        (0..labels.len().saturating_sub(1)).map(|skip| labels[skip..].join(".")).collect()
    }

    /// Whether a TXT record `uwsgi:<uuid>` exists on the domain or a parent. Resolver errors
    /// (NXDOMAIN, refused, timeout) on one name just move on to its parent.
    pub async fn proves(&self, domain: &str, customer_uuid: &str) -> bool {
        let expected = format!("uwsgi:{customer_uuid}");
        for name in Self::candidate_names(domain) {
            let Ok(answer) = self.resolver.txt_lookup(format!("{name}.")).await else {
                continue;
            };
            let found = answer.iter().any(|txt| {
                let text: Vec<u8> = txt.txt_data().iter().flat_map(|p| p.iter().copied()).collect();
                String::from_utf8_lossy(&text).trim() == expected
            });
            if found {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_tried_down_to_two_labels() {
        assert_eq!(DnsProof::candidate_names("a.b.example.org"), ["a.b.example.org", "b.example.org", "example.org"]);
        assert_eq!(DnsProof::candidate_names(".example.org"), ["example.org"]);
    }
}
