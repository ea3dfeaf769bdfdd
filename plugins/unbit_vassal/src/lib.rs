//! `unbit_vassal`: the domain shortcuts' part inside a customer vassal.
//!
//! `shortcuts/shortcuts.ini` loads it (from the platform dir, `/opt/unbit/plugins`) when a
//! vassal uses `domain = ...` or another domain shortcut, and calls its one option:
//!
//! ```ini
//! unbit-vassal-domain = ID ROUTERS HOME NAME [KEY CRT [CA]]
//! ```
//!
//! `ID` is the vassal's `%J`, `ROUTERS` `http` or `fastrouter,http`, `HOME` the container's
//! home, `NAME` the domain as the customer wrote it, then the SNI files. The option adds what
//! a stock config cannot compute inside a `declare-option` template: the socket, named by
//! [`domain_names::socket_file`] (readable when short, bounded whatever the name's length),
//! and the subscriptions announcing it; plus the defaults real apps need.

use uwsgi::Registry;

/// Where the container's routers listen for announces (`/subscribe` on the host).
const SUBSCRIBE_DIR: &str = "/run/subscribe";
/// Request headers up to 64 KB reach the app (uWSGI's default is 4 KB, and the uwsgi packet
/// the router sends cannot be larger: its size is 16 bits).
pub const BUFFER_SIZE: &str = "65535";

/// The options one `unbit-vassal-domain` line stands for, in order. `buffer_size_set`: the
/// vassal's config sets `buffer-size` itself (its value wins).
pub fn expand(value: &str, buffer_size_set: bool) -> Result<Vec<(&'static str, String)>, String> {
    let words: Vec<&str> = value.split_whitespace().collect();
    if let Some(w) = words.iter().find(|w| is_placeholder(w)) {
        return Err(format!(
            "the shortcut is missing a value ({w} was not given): ssl-domain takes NAME KEY CRT, ssl-ca-domain NAME KEY CRT CA"
        ));
    }
    let (id, routers, home, name, sni) = match words.as_slice() {
        [id, routers, home, name, sni @ ..] if matches!(sni.len(), 0 | 2 | 3) => (*id, *routers, *home, *name, sni),
        _ => return Err(format!("expected ID ROUTERS HOME NAME [KEY CRT [CA]], got {value:?}")),
    };
    let routers: Vec<&str> = routers.split(',').collect();
    if let Some(r) = routers.iter().find(|r| !matches!(**r, "http" | "fastrouter")) {
        return Err(format!("unknown router {r:?} (http, fastrouter)"));
    }
    if !home.starts_with('/') {
        return Err(format!("home {home:?} is not an absolute path"));
    }
    for (what, v) in [("home", home), ("domain", name)].into_iter().chain(sni.iter().map(|s| ("SNI file", *s))) {
        if let Some(c) = v.chars().find(|c| *c == ',' || c.is_control()) {
            return Err(format!("{what} {v:?}: {c:?} cannot be passed in a subscription"));
        }
    }
    let file = domain_names::socket_file(name, id).map_err(|e| format!("domain {name}: {e}"))?;
    let announced = format!("{home}/run/{file}");
    let mut sni_vars = String::new();
    for (var, v) in ["sni_key", "sni_crt", "sni_ca"].iter().zip(sni) {
        sni_vars.push_str(&format!(",{var}={v}"));
    }

    let mut out = vec![
        ("socket", format!("/run/{file}")),
        // The router (another user) connects to it.
        ("chmod-socket", "666".to_string()),
        // The validator's verdicts on this vassal's announces land in its log.
        ("notify-socket", format!("{home}/run/notify_{id}.socket")),
    ];
    if !buffer_size_set {
        out.push(("buffer-size", BUFFER_SIZE.to_string()));
    }
    for r in routers {
        out.push((
            "subscribe2",
            format!(
                "server={SUBSCRIBE_DIR}/{r},key={name},addr={announced},sign=SHA256:{home}/etc/uwsgi.key{sni_vars}"
            ),
        ));
    }
    Ok(out)
}

/// `$3`: what uWSGI leaves of a template argument the customer did not give.
fn is_placeholder(word: &str) -> bool {
    word.strip_prefix('$').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn apply(value: &str) -> Result<(), String> {
    let buffer_size_set = uwsgi::config::value("buffer-size").is_some();
    for (key, v) in expand(value, buffer_size_set)? {
        uwsgi::config::add(key, &v)?;
    }
    Ok(())
}

struct UnbitVassal;

impl uwsgi::Plugin for UnbitVassal {
    const NAME: &'static std::ffi::CStr = c"unbit_vassal";

    fn on_load(reg: &mut Registry) {
        reg.action(
            "unbit-vassal-domain",
            "ID ROUTERS HOME NAME [KEY CRT [CA]]: the socket and subscriptions of a domain shortcut (shortcuts.ini)",
            apply,
        );
    }
}

uwsgi::plugin!(unbit_vassal_plugin: UnbitVassal);

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(value: &str, buffer_size_set: bool) -> Vec<String> {
        expand(value, buffer_size_set).unwrap().into_iter().map(|(k, v)| format!("{k} = {v}")).collect()
    }

    #[test]
    fn a_domain_is_a_socket_its_subscription_and_the_defaults() {
        assert_eq!(
            pairs("1a2b3c4d http /containers/30001 Example.ORG", false),
            [
                "socket = /run/example.org_1a2b3c4d.socket",
                "chmod-socket = 666",
                "notify-socket = /containers/30001/run/notify_1a2b3c4d.socket",
                "buffer-size = 65535",
                "subscribe2 = server=/run/subscribe/http,key=Example.ORG,addr=/containers/30001/run/example.org_1a2b3c4d.socket,sign=SHA256:/containers/30001/etc/uwsgi.key",
            ]
        );
    }

    #[test]
    fn the_vassals_own_buffer_size_wins() {
        let p = pairs("1a2b3c4d http /containers/30001 example.org", true);
        assert!(!p.iter().any(|l| l.starts_with("buffer-size")), "{p:?}");
    }

    #[test]
    fn cluster_and_sni_variants_subscribe_each_router_with_the_files() {
        let p = pairs("1a2b3c4d fastrouter,http /containers/30001 example.org /k.pem /c.pem !/ca.pem", true);
        let subs: Vec<&String> = p.iter().filter(|l| l.starts_with("subscribe2")).collect();
        assert_eq!(subs.len(), 2);
        assert!(subs[0].starts_with("subscribe2 = server=/run/subscribe/fastrouter,key=example.org,"));
        assert!(subs[1].starts_with("subscribe2 = server=/run/subscribe/http,key=example.org,"));
        for s in subs {
            assert!(s.ends_with(",sni_key=/k.pem,sni_crt=/c.pem,sni_ca=!/ca.pem"), "{s}");
        }
    }

    #[test]
    fn a_long_domain_binds_a_bounded_socket() {
        let name = format!("{}.{}.example.org", "a".repeat(60), "b".repeat(27));
        let p = pairs(&format!("1a2b3c4d http /containers/30001 {name}"), false);
        let socket = p[0].strip_prefix("socket = ").unwrap();
        assert!(socket.len() <= 102 && socket.starts_with(&format!("/run/{}-", "a".repeat(32))), "{socket}");
        let file = socket.strip_prefix("/run/").unwrap();
        assert!(p[4].contains(&format!("key={name},addr=/containers/30001/run/{file},")), "{}", p[4]);
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        for (value, why) in [
            ("1a2b3c4d http /containers/30001 example.org $3 $4", "missing a value ($3"),
            ("1a2b3c4d http /containers/30001", "expected ID ROUTERS HOME NAME"),
            ("1a2b3c4d http /containers/30001 example.org /k.pem", "expected ID ROUTERS HOME NAME"),
            ("1a2b3c4d smtp /containers/30001 example.org", "unknown router \"smtp\""),
            ("1a2b3c4d http containers/30001 example.org", "not an absolute path"),
            ("1a2b3c4d http /containers/30001 example.org,addr=/x", "',' cannot be passed"),
            ("1a2b3c4d http /containers/30001 example.org /k,x.pem /c.pem", "SNI file"),
            (" http /containers/30001 example.org", "expected ID"),
            ("%J http /containers/30001 example.org", "not a vassal id"),
        ] {
            let err = expand(value, false).unwrap_err();
            assert!(err.contains(why), "{value:?}: {err} (wanted {why:?})");
        }
    }
}
