//! The relay's command line. No secret is ever on it: the API connection comes from the
//! node's `node-sync.conf` (root-owned, the same file `unbit-node-sync` reads), the
//! customers' secrets from the spec folder (root, 0600).

use crate::retry::Policy;
use crate::services::Bases;
use crate::xmpp;
use jail::NodePaths;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "unbit-alarmd --settings FILE --specs DIR --containers-dir DIR --socket PATH \
[--node-name NAME] [--slack-base URL] [--pushover-base URL] [--pushbullet-base URL] \
[--xmpp-server HOST:PORT] [--xmpp-ca FILE] [--dns-server IP[:PORT]] [--timeout SECS] [--quota-interval SECS] \
[--cgroup-name NAME] [--memory-threshold PERCENT]";

#[derive(Debug, Clone)]
pub struct Config {
    pub specs: PathBuf,
    pub containers: PathBuf,
    pub socket: PathBuf,
    pub node_name: String,
    pub bases: Bases,
    pub xmpp: xmpp::Connect,
    pub timeout: Duration,
    pub quota_interval: Duration,
    /// The platform's cgroup subtree (`unbit-cgroup-name`), for the memory alarm.
    pub cgroup_name: String,
    /// Working set over this % of `memory_mb` raises `memory`; 0 turns it off.
    pub memory_threshold: u64,
    pub policy: Policy,
    pub api_base: String,
    pub node_token: Option<String>,
    /// mTLS: (certificate PEM, key PEM, CA PEM).
    pub node_tls: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

fn url(flag: &str, v: String) -> Result<String, String> {
    if v.starts_with("https://") || v.starts_with("http://") {
        Ok(v.trim_end_matches('/').to_string())
    } else {
        Err(format!("{flag}: expected an http:// or https:// URL, got `{v}`"))
    }
}

fn secs(flag: &str, v: &str) -> Result<Duration, String> {
    match v.parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!("{flag}: expected seconds between 1 and 3600, got `{v}`")),
    }
}

/// `IP:PORT`, `[IPv6]:PORT`, or an IP alone (port 53).
fn dns_server(flag: &str, v: &str) -> Result<SocketAddr, String> {
    v.parse::<SocketAddr>()
        .or_else(|_| v.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{flag}: expected IP:PORT or an IP address, got `{v}`"))
}

impl Config {
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Config, String> {
        let mut it = args.into_iter();
        let (mut settings, mut specs, mut containers, mut socket, mut node_name) = (None, None, None, None, None);
        let mut bases = Bases::default();
        let mut xmpp = xmpp::Connect { timeout: Duration::from_secs(10), ..Default::default() };
        let (mut timeout, mut quota_interval) = (Duration::from_secs(10), Duration::from_secs(60));
        let (mut cgroup_name, mut memory_threshold) = ("unbit".to_string(), 90);
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--settings" => settings = Some(PathBuf::from(value()?)),
                "--specs" => specs = Some(PathBuf::from(value()?)),
                "--containers-dir" => containers = Some(PathBuf::from(value()?)),
                "--socket" => socket = Some(PathBuf::from(value()?)),
                "--node-name" => node_name = Some(value()?),
                "--slack-base" => bases.slack = url(&flag, value()?)?,
                "--pushover-base" => bases.pushover = url(&flag, value()?)?,
                "--pushbullet-base" => bases.pushbullet = url(&flag, value()?)?,
                "--xmpp-server" => xmpp.server = Some(value()?),
                "--xmpp-ca" => xmpp.ca_file = Some(PathBuf::from(value()?)),
                "--dns-server" => xmpp.dns_server = Some(dns_server(&flag, &value()?)?),
                "--timeout" => timeout = secs(&flag, &value()?)?,
                "--quota-interval" => quota_interval = secs(&flag, &value()?)?,
                "--cgroup-name" => cgroup_name = value()?,
                "--memory-threshold" => {
                    let v = value()?;
                    memory_threshold = v
                        .parse()
                        .ok()
                        .filter(|p| *p <= 100)
                        .ok_or(format!("{flag}: expected a percentage (0 to 100, 0 = off), got `{v}`"))?;
                }
                "--help" | "-h" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
            }
        }
        xmpp.timeout = timeout;
        let settings = settings.ok_or("--settings is required (the node's node-sync.conf)")?;
        let s = node_sync::settings::read(&settings)?;
        let api_base = url("api", s.api.ok_or(format!("{}: no `api`", settings.display()))?.value)?;
        let (node_token, node_tls) = match (s.token_file, s.cert, s.key, s.ca) {
            (Some(t), None, None, None) => {
                let text = String::from_utf8(read(&t.value)?).map_err(|_| format!("{}: not text", t.value))?;
                (Some(text.trim().to_string()), None)
            }
            (None, Some(c), Some(k), Some(a)) => (None, Some((read(&c.value)?, read(&k.value)?, read(&a.value)?))),
            _ => return Err(format!("{}: give either token-file, or cert, key and ca", settings.display())),
        };
        let absolute = |name: &str, p: Option<PathBuf>| {
            p.filter(|p| p.is_absolute()).ok_or(format!("--{name} (an absolute path) is required\n{USAGE}"))
        };
        let node_name = match node_name {
            Some(n) => n,
            None => nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        Ok(Config {
            specs: absolute("specs", specs)?,
            containers: absolute("containers-dir", containers)?,
            socket: absolute("socket", socket)?,
            node_name,
            bases,
            xmpp,
            timeout,
            quota_interval,
            cgroup_name,
            memory_threshold,
            policy: Policy::default(),
            api_base,
            node_token,
            node_tls,
        })
    }

    /// The client for the API: only the platform's CA when mTLS is configured (a public CA
    /// must not be able to stand in for the API).
    pub fn api_client(&self) -> Result<reqwest::Client, String> {
        let mut b = reqwest::Client::builder().connect_timeout(self.timeout).timeout(self.timeout);
        if let Some((cert, key, ca)) = &self.node_tls {
            let identity =
                reqwest::Identity::from_pkcs8_pem(cert, key).map_err(|e| format!("node certificate/key: {e}"))?;
            let ca = reqwest::Certificate::from_pem(ca).map_err(|e| format!("API CA: {e}"))?;
            b = b.identity(identity).add_root_certificate(ca).tls_built_in_root_certs(false);
        }
        b.build().map_err(|e| format!("API client: {e}"))
    }

    /// Only `containers` is used: the jail's symlink-safe append into homes.
    pub fn node_paths(&self) -> NodePaths {
        NodePaths { containers: self.containers.clone(), ..NodePaths::default() }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_dns_server_is_an_address_with_port_53_by_default() {
        let parse = |v: &str| super::dns_server("--dns-server", v);
        assert_eq!(parse("127.0.0.1:5353").unwrap().to_string(), "127.0.0.1:5353");
        assert_eq!(parse("::1").unwrap().to_string(), "[::1]:53");
        assert_eq!(
            parse("dns.example:53").unwrap_err(),
            "--dns-server: expected IP:PORT or an IP address, got `dns.example:53`"
        );
    }
}
