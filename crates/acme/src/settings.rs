//! `--settings FILE` (`/etc/unbit/acme.conf`, root's): which CA the node uses. Kept out of the
//! Emperor's command line so `emperor.ini` is the same on every node and under `make run`.
//!
//! ```text
//! directory = https://acme-v02.api.letsencrypt.org/directory   # or `off`
//! contact = mailto:hostmaster@example.net                      # optional
//! ca-root = /etc/unbit/acme-test-ca.pem                        # optional: trust only this root
//! ```
//!
//! `directory = off` keeps the issuer from ordering anything (the responder still runs and the
//! index is still written from what the store holds). Configuring a directory agrees to that
//! CA's terms of service on the node's behalf. `ca-root` is for test CAs (pebble): the CA's
//! HTTPS certificate must then chain to that root, and no public root is trusted.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `None` = `off`.
    pub directory: Option<String>,
    pub contact: Option<String>,
    pub ca_root: Option<PathBuf>,
}

pub fn parse(text: &str, file: &str) -> Result<Settings, String> {
    let mut s = Settings::default();
    let mut seen: Vec<&str> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let bad = |why: String| format!("{file} line {}: {why}", n + 1);
        let Some((key, value)) = line.split_once('=') else {
            return Err(bad(format!("expected `key = value`, got `{line}`")));
        };
        let (key, value) = (key.trim(), value.trim());
        if value.is_empty() {
            return Err(bad(format!("`{key}` has no value")));
        }
        if seen.contains(&key) {
            return Err(bad(format!("`{key}` is given twice")));
        }
        match key {
            "directory" if value == "off" => {}
            "directory" if value.starts_with("https://") => s.directory = Some(value.into()),
            "directory" => return Err(bad(format!("`directory` must be an https:// URL or `off`, got `{value}`"))),
            "contact" if value.starts_with("mailto:") && !value.contains(char::is_whitespace) => {
                s.contact = Some(value.into())
            }
            "contact" => return Err(bad(format!("`contact` must be a mailto: URL, got `{value}`"))),
            "ca-root" if value.starts_with('/') => s.ca_root = Some(value.into()),
            "ca-root" => return Err(bad(format!("`ca-root` must be an absolute path, got `{value}`"))),
            other => return Err(bad(format!("unknown setting `{other}` (known: directory, contact, ca-root)"))),
        }
        seen.push(key);
    }
    if !seen.contains(&"directory") {
        return Err(format!("{file}: no `directory` (the CA's ACME directory URL, or `off`)"));
    }
    Ok(s)
}

/// Reads the file, refusing one that others than its owner may write: whoever writes it picks
/// the CA this node trusts with its domains.
pub fn read(path: &Path) -> Result<Settings, String> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| format!("--settings {name}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("--settings {name}: not a regular file"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "--settings {name}: group or others may write it (mode {:o}); whoever can write it picks the CA (chmod go-w)",
            meta.mode() & 0o7777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("--settings {name}: {e}"))?;
    parse(&text, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_production_file_and_an_off_switch() {
        let s = parse(
            "# CA\ndirectory = https://acme-v02.api.letsencrypt.org/directory\ncontact = mailto:ops@example.net\n",
            "f",
        )
        .unwrap();
        assert_eq!(s.directory.as_deref(), Some("https://acme-v02.api.letsencrypt.org/directory"));
        assert_eq!(s.contact.as_deref(), Some("mailto:ops@example.net"));
        assert_eq!(parse("directory = off\n", "f").unwrap(), Settings::default());
    }

    #[test]
    fn mistakes_name_the_line() {
        let cases = [
            ("directory = http://ca/dir\n", "f line 1: `directory` must be an https:// URL or `off`"),
            ("\ndirectory = off\ndirectory = off\n", "f line 3: `directory` is given twice"),
            ("directory = off\ncontact = ops@example.net\n", "f line 2: `contact` must be a mailto: URL"),
            ("directory = off\nca-root = ca.pem\n", "f line 2: `ca-root` must be an absolute path"),
            ("directory = off\nemail = x\n", "f line 2: unknown setting `email`"),
            ("directory\n", "f line 1: expected `key = value`"),
            ("contact = mailto:a@b\n", "f: no `directory`"),
        ];
        for (text, want) in cases {
            let e = parse(text, "f").unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_file_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("acme.conf");
        std::fs::write(&p, "directory = off\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read(&p).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o620)).unwrap();
        assert!(read(&p).unwrap_err().contains("group or others may write it (mode 620)"));
    }
}
