//! `--settings FILE`: the node's connection to the control API, in a file the operator writes
//! (`/etc/unbit/node-sync.conf`, root-owned). The Emperor's `attach-daemon2` line that starts
//! `unbit-node-sync` is then the same on every node and under `make run`; only this file differs
//! (production: https and the node's mTLS certificate; `make run`: http on loopback and the dev
//! token file), and no credential or key path is templated into a command line.
//!
//! One `key = value` a line; blank lines and lines starting with `#` or `;` are ignored. The
//! keys are the flags of the same name: `api`, `cert`, `key`, `ca`, `token-file`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One value and the line it came from (for errors that name it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub line: usize,
}

/// What a settings file says; `None` where it says nothing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub api: Option<Setting>,
    pub cert: Option<Setting>,
    pub key: Option<Setting>,
    pub ca: Option<Setting>,
    pub token_file: Option<Setting>,
}

const KEYS: [&str; 5] = ["api", "cert", "key", "ca", "token-file"];

impl Settings {
    fn slot(&mut self, key: &str) -> Option<&mut Option<Setting>> {
        Some(match key {
            "api" => &mut self.api,
            "cert" => &mut self.cert,
            "key" => &mut self.key,
            "ca" => &mut self.ca,
            "token-file" => &mut self.token_file,
            _ => return None,
        })
    }
}

/// Parses the text of a settings file; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Settings, String> {
    let mut settings = Settings::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let at = |what: String| format!("{file} line {line}: {what}");
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let (key, value) =
            trimmed.split_once('=').ok_or_else(|| at(format!("expected `key = value`, got `{trimmed}`")))?;
        let (key, value) = (key.trim(), value.trim());
        let slot =
            settings.slot(key).ok_or_else(|| at(format!("unknown setting `{key}` (known: {})", KEYS.join(", "))))?;
        if let Some(earlier) = slot {
            return Err(at(format!("`{key}` is already set on line {}", earlier.line)));
        }
        if value.is_empty() {
            return Err(at(format!("`{key}` has no value")));
        }
        if key == "api" && !(value.starts_with("https://") || value.starts_with("http://")) {
            return Err(at(format!("`api` must be an http:// or https:// URL, got `{value}`")));
        }
        // The daemon's working directory is whatever the Emperor's is: a relative path would
        // silently point elsewhere.
        if key != "api" && !value.starts_with('/') {
            return Err(at(format!("`{key}` must be an absolute path, got `{value}`")));
        }
        *slot = Some(Setting { value: value.to_string(), line });
    }
    Ok(settings)
}

/// Reads and parses a settings file, refusing one that others than its owner may write:
/// whoever can write it decides which API this node obeys.
pub fn read(path: &Path) -> Result<Settings, String> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| format!("--settings {name}: {e}"))?;
    check_mode(&name, meta.is_file(), meta.mode())?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("--settings {name}: {e}"))?;
    parse(&text, &name)
}

/// The API URL and the node's credentials a settings file gives, for the node's daemons that
/// take nothing but `--settings` (`unbit-metrics`): `api`, and `token-file` or `cert`, `key`
/// and `ca`.
pub fn connection(path: &Path) -> Result<(String, crate::client::NodeAuth), String> {
    use crate::client::NodeAuth;
    let s = read(path)?;
    let name = path.display();
    let api = s.api.ok_or_else(|| format!("--settings {name}: no `api`"))?.value;
    let load = |setting: Setting| std::fs::read(&setting.value).map_err(|e| format!("{}: {e}", setting.value));
    let auth = match (s.token_file, s.cert, s.key, s.ca) {
        (Some(t), None, None, None) => NodeAuth::Token(String::from_utf8_lossy(&load(t)?).trim().to_string()),
        (None, Some(c), Some(k), Some(a)) => NodeAuth::Tls { cert_pem: load(c)?, key_pem: load(k)?, ca_pem: load(a)? },
        _ => return Err(format!("--settings {name}: give either `token-file`, or `cert`, `key` and `ca`")),
    };
    Ok((api, auth))
}

fn check_mode(name: &str, is_file: bool, mode: u32) -> Result<(), String> {
    if !is_file {
        return Err(format!("--settings {name}: not a regular file"));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "--settings {name}: writable by group or others (mode {:o}); whoever can write it \
             decides which API this node obeys (chmod go-w)",
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(value: &str, line: usize) -> Option<Setting> {
        Some(Setting { value: value.into(), line })
    }

    #[test]
    fn a_production_file_with_comments_and_blank_lines() {
        let text = "# the node's link to the API\n\napi = https://api.example.net\n; mTLS\ncert=/etc/unbit/node.crt\n  key =  /etc/unbit/node.key  \nca = /etc/unbit/api-ca.crt\n";
        let s = parse(text, "node-sync.conf").unwrap();
        assert_eq!(
            s,
            Settings {
                api: set("https://api.example.net", 3),
                cert: set("/etc/unbit/node.crt", 5),
                key: set("/etc/unbit/node.key", 6),
                ca: set("/etc/unbit/api-ca.crt", 7),
                token_file: None,
            }
        );
    }

    #[test]
    fn a_local_file_with_a_token_file() {
        let s = parse("api = http://127.0.0.1:8080\ntoken-file = /run/x/node.token\n", "f").unwrap();
        assert_eq!((s.api, s.token_file), (set("http://127.0.0.1:8080", 1), set("/run/x/node.token", 2)));
    }

    #[test]
    fn bad_lines_are_refused_naming_the_file_and_the_line() {
        let cases = [
            ("api https://x\n", "f line 1: expected `key = value`, got `api https://x`"),
            ("\n\ntoken = abc\n", "f line 3: unknown setting `token` (known: api, cert, key, ca, token-file)"),
            ("api = https://a\napi = https://b\n", "f line 2: `api` is already set on line 1"),
            ("cert =\n", "f line 1: `cert` has no value"),
            ("api = api.example.net\n", "f line 1: `api` must be an http:// or https:// URL, got `api.example.net`"),
            ("# c\nkey = node.key\n", "f line 2: `key` must be an absolute path, got `node.key`"),
            ("[uwsgi]\n", "f line 1: expected `key = value`, got `[uwsgi]`"),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text, "f").unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn a_file_others_may_write_is_refused() {
        assert!(check_mode("f", true, 0o100600).is_ok());
        assert!(check_mode("f", true, 0o100644).is_ok());
        let e = check_mode("f", true, 0o100664).unwrap_err();
        assert!(e.contains("writable by group or others (mode 664)"), "{e}");
        assert!(check_mode("f", true, 0o100602).is_err());
        assert_eq!(check_mode("f", false, 0o40700).unwrap_err(), "--settings f: not a regular file");
    }

    #[test]
    fn read_checks_the_real_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-sync.conf");
        std::fs::write(&path, "api = https://api.example.net\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&path).unwrap().api, set("https://api.example.net", 1));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read(&path).unwrap_err().contains("writable by group or others"));
        let missing = read(&dir.path().join("nope")).unwrap_err();
        assert!(missing.starts_with("--settings ") && missing.contains("nope"), "{missing}");
    }
}
