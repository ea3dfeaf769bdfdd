//! The socket a vassal binds for one of its domains: `/run/<file>` inside its container,
//! announced as `/containers/<uid>/run/<file>`.
//!
//! * `<name>_<id>.socket` when the name in the router's form ([`crate::normalize_key`]) is at
//!   most [`READABLE_MAX`] bytes: `domain = Example.ORG` binds `example.org_1a2b3c4d.socket`;
//! * `<first 32 bytes of it>-<16 hex digits of its SHA-256>_<id>.socket` when it is longer, or
//!   when the validator cannot accept the name (then the first 32 characters made file-safe,
//!   and the hash of the name as written; the validator tells the customer why).
//!
//! `<id>` is the vassal's `%J` (8 hex digits, from its config path), so every vassal of a
//! domain binds its own socket and the router balances between them. A readable base is at
//! most 48 bytes and a hashed one exactly 49, so the two forms never meet, and distinct names
//! get distinct files. The longest file is [`MAX_SOCKET_FILE`] bytes: both paths fit the 102
//! bytes uWSGI allows a unix socket (`bind_to_unix`, `core/socket.c`), whatever the domain.

use sha2::{Digest, Sha256};

/// Longest name kept whole in the file name.
pub const READABLE_MAX: usize = 48;
/// How much of a longer name is kept in front of its hash.
pub const PREFIX_LEN: usize = 32;
const HASH_HEX: usize = 16;
const MAX_ID: usize = 16;
const SUFFIX: &str = ".socket";
/// Longest file name [`socket_file`] returns (73 bytes).
pub const MAX_SOCKET_FILE: usize = PREFIX_LEN + 1 + HASH_HEX + 1 + MAX_ID + SUFFIX.len();

/// Checks a vassal id (`%J`: hex digits, at most 16).
pub fn vassal_id(id: &str) -> Result<&str, String> {
    if id.is_empty() || id.len() > MAX_ID || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{id:?} is not a vassal id (the vassal's %J, hex digits); the shortcut must be read while the vassal's own config is"
        ));
    }
    Ok(id)
}

/// The file name, in the container's `run/`, of the socket for domain `name` in vassal `id`.
pub fn socket_file(name: &str, id: &str) -> Result<String, String> {
    let id = vassal_id(id)?;
    let base = match crate::normalize_key(name) {
        Ok(key) if key.len() <= READABLE_MAX => key,
        Ok(key) => hashed(&key, &key),
        Err(_) => hashed(&file_safe(name), name),
    };
    Ok(format!("{base}_{id}{SUFFIX}"))
}

/// `<first 32 bytes of shown>-<hash of name>`; `shown` is ASCII.
fn hashed(shown: &str, name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().take(HASH_HEX / 2).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", &shown[..shown.len().min(PREFIX_LEN)])
}

/// The first characters of a name the validator will refuse, as letters, digits, `.` and
/// `-` (anything else becomes `_`), so the vassal still binds a socket and starts.
fn file_safe(name: &str) -> String {
    name.chars()
        .take(PREFIX_LEN)
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ID: &str = "1a2b3c4d";
    /// uWSGI's limit for a unix socket path (`core/socket.c`, `bind_to_unix`).
    const SUN_PATH_USED: usize = 102;

    fn file(name: &str) -> String {
        socket_file(name, ID).unwrap()
    }

    #[test]
    fn short_names_stay_readable_in_the_routers_form() {
        assert_eq!(file("example.org"), "example.org_1a2b3c4d.socket");
        assert_eq!(file("Example.ORG"), "example.org_1a2b3c4d.socket");
        assert_eq!(file("example.org:8080"), "example.org_1a2b3c4d.socket");
        assert_eq!(file(".example.org"), ".example.org_1a2b3c4d.socket");
        assert_eq!(file("bücher.example"), "xn--bcher-kva.example_1a2b3c4d.socket");
        let exactly = format!("{}.example.org", "a".repeat(READABLE_MAX - 12));
        assert_eq!(file(&exactly), format!("{exactly}_1a2b3c4d.socket"));
    }

    #[test]
    fn long_names_keep_a_readable_prefix_and_a_hash() {
        let name = format!("{}.{}.example.org", "a".repeat(60), "b".repeat(27));
        assert_eq!(name.len(), 100);
        assert!(crate::normalize_key(&name).is_ok());
        let f = file(&name);
        let (base, rest) = f.split_once('_').unwrap();
        assert_eq!(rest, "1a2b3c4d.socket");
        let (prefix, hash) = base.split_once('-').unwrap();
        assert_eq!(prefix, "a".repeat(PREFIX_LEN));
        assert_eq!(hash.len(), HASH_HEX);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        // The same name in another case or with a port is the same domain: the same socket.
        assert_eq!(file(&name.to_uppercase()), f);
        assert_eq!(file(&format!("{name}:80")), f);
    }

    #[test]
    fn names_the_validator_refuses_still_get_a_bounded_file_safe_socket() {
        for bad in ["localhost", "a_b.example.org", "exa mple.org", "x/../../etc.org", &"ü".repeat(300)] {
            let f = file(bad);
            assert!(f.len() <= MAX_SOCKET_FILE, "{bad}: {f}");
            assert!(f.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{bad}: {f}");
        }
        assert_ne!(file("a_b.example.org"), file("a b.example.org"), "file-safe names are told apart by the hash");
    }

    #[test]
    fn the_vassal_id_must_be_a_config_hash() {
        assert!(socket_file("example.org", "").unwrap_err().contains("%J"));
        assert!(socket_file("example.org", "1a2b/../x").is_err());
        assert!(socket_file("example.org", &"a".repeat(17)).is_err());
        assert_eq!(socket_file("example.org", "ABCDEF01").unwrap(), "example.org_ABCDEF01.socket");
    }

    /// Valid random domains from a fixed seed, so a failure names a reproducible case.
    struct Domains(fastrand::Rng);

    impl Domains {
        fn below(&mut self, n: usize) -> usize {
            self.0.usize(..n)
        }
        /// A valid label of `len` bytes (1-63): no `-` at either end, nor in the 3rd and 4th
        /// places (IDNA keeps `ab--` for `xn--`).
        fn label(&mut self, len: usize) -> String {
            const INNER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
            (0..len)
                .map(|i| {
                    let set = if i == 0 || i == 3 || i == len - 1 { &INNER[..36] } else { INNER };
                    set[self.below(set.len())] as char
                })
                .collect()
        }
        /// A valid domain of exactly `len` bytes (4-253), maybe a wildcard, maybe in capitals.
        fn domain(&mut self, len: usize) -> String {
            let tld_len = 2 + self.below(5.min(len - 3));
            let tld: String = (0..tld_len).map(|_| self.0.lowercase()).collect();
            let mut labels = vec![tld];
            let mut remaining = len - tld_len - 1;
            while remaining > 63 {
                let l = 1 + self.below(63.min(remaining - 2));
                labels.push(self.label(l));
                remaining -= l + 1;
            }
            labels.push(self.label(remaining));
            labels.reverse();
            let name = labels.join(".");
            match self.below(4) {
                0 => format!(".{name}"),
                1 => name.to_uppercase(),
                _ => name,
            }
        }
    }

    #[test]
    fn every_valid_domain_fits_a_socket_path_and_distinct_domains_get_distinct_files() {
        let mut rng = Domains(fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15));
        let mut seen: HashMap<String, String> = HashMap::new();
        // Many share a long prefix, so the hash (not the readable part) must tell them apart.
        let shared = format!("{}.{}", "s".repeat(40), "t".repeat(20));
        for i in 0..20_000 {
            let len = 4 + rng.below(250);
            let mut name = rng.domain(len);
            if i % 3 == 0 && name.len() + shared.len() < 250 {
                name = format!("{name}.{shared}");
            }
            let key = crate::normalize_key(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
            let f = file(&name);
            for path in [format!("/run/{f}"), format!("/containers/{}/run/{f}", u32::MAX)] {
                assert!(path.len() <= SUN_PATH_USED, "{name}: {path} is {} bytes", path.len());
            }
            if let Some(other) = seen.insert(f.clone(), key.clone()) {
                assert_eq!(other, key, "{other} and {key} share {f}");
            }
        }
        assert!(seen.len() > 15_000, "the sample has {} distinct domains", seen.len());
    }
}
