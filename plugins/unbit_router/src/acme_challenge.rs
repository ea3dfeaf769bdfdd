//! The HTTP-01 challenges of automatic HTTPS: `GET /.well-known/acme-challenge/<token>` of a
//! name whose domains-file entry says `"tls": "auto"` goes to `unbit-acme`'s challenge socket
//! (a detour of `uwsgi::corerouter` before the lookup), whether or not the name's app runs and
//! whatever the app does with that path. Other names' challenge paths reach their own apps
//! (customers running their own ACME client keep working).
//!
//! Each router process reads the names from the domains file on a challenge request, when the
//! file changed since (a `stat` per challenge request, which are rare; other requests cost a
//! walk over the packet's variables for `PATH_INFO`).

use crate::reload::Reloaded;
use domain_table::auto_tls_names;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use uwsgi::corerouter::Key;

/// Where `unbit-acme` answers (its `--challenge-socket`) unless `unbit-router-acme-socket`
/// says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/unbit-acme/http-01.sock";

/// RFC 8555 §8.3: the path the CA fetches. Matched on `PATH_INFO` (the router's url-decoded
/// path), which is what the issuer reads too.
const PREFIX: &[u8] = b"/.well-known/acme-challenge/";

static NAMES: OnceLock<Mutex<AutoTlsNames>> = OnceLock::new();

/// Reads the names from `domains` (in the master, before the router processes fork; each
/// reads the file itself from then on).
pub fn init(domains: PathBuf, log: fn(&str)) {
    let _ = NAMES.set(Mutex::new(AutoTlsNames::new(domains, log)));
}

/// The detour's predicate: a challenge path and a normalised Host with `tls: auto`.
pub fn wanted(key: &Key<'_>) -> bool {
    key.var(b"PATH_INFO").is_some_and(|path| path.starts_with(PREFIX))
        && NAMES.get().is_some_and(|names| names.lock().unwrap_or_else(|e| e.into_inner()).contains(key.bytes()))
}

/// The domains file's `tls: auto` names as this process last read them.
pub struct AutoTlsNames(Reloaded<HashSet<String>>);

impl AutoTlsNames {
    pub fn new(path: PathBuf, log: fn(&str)) -> AutoTlsNames {
        AutoTlsNames(Reloaded::new(path, "acme challenges: domains file", auto_tls_names, log))
    }

    /// Whether `host` (a normalised Host) is an exact name with `tls: auto`, the file read
    /// again when it changed. A file that cannot be read or parsed keeps the last names.
    pub fn contains(&mut self, host: &[u8]) -> bool {
        let Ok(host) = std::str::from_utf8(host) else { return false };
        self.0.get().is_some_and(|names| names.contains(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &std::path::Path, entries: serde_json::Value) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, entries.to_string()).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn only_exact_tls_auto_names_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("domains.json");
        let mut names = AutoTlsNames::new(path.clone(), |l| eprintln!("{l}"));
        assert!(!names.contains(b"shop.test"), "no file yet: nothing goes to the issuer");
        write(
            &path,
            serde_json::json!([
                {"name": "shop.test", "owner_uids": [1], "public_key_pem": "k", "tls": "auto"},
                {"name": "own.test", "owner_uids": [1], "public_key_pem": "k"},
                {"name": ".wild.test", "owner_uids": [1], "public_key_pem": "k", "tls": "auto"},
            ]),
        );
        assert!(names.contains(b"shop.test"));
        assert!(!names.contains(b"own.test"));
        assert!(!names.contains(b"a.wild.test") && !names.contains(b".wild.test"));
        assert!(!names.contains(b"a.shop.test"));
        // The node sync turns it off: the next challenge goes to the name's app.
        write(&path, serde_json::json!([{"name": "shop.test", "owner_uids": [1], "public_key_pem": "k"}]));
        assert!(!names.contains(b"shop.test"));
        // A broken file keeps the last names.
        write(
            &path,
            serde_json::json!([{"name": "own.test", "owner_uids": [1], "public_key_pem": "k", "tls": "auto"}]),
        );
        assert!(names.contains(b"own.test"));
        std::fs::write(&path, "not json").unwrap();
        assert!(names.contains(b"own.test"));
    }
}
