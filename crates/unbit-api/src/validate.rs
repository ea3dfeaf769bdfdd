//! Strict grammars for everything a customer (or the supplier) can type. Values that pass are
//! safe to hand to a node: bounded, no control characters, and in the shape the consumer
//! expects (a domain is lowercase ASCII/IDNA, an ssh key is one `type base64 [comment]` line).

use crate::error::{ApiError, ApiResult};
use base64::Engine;

/// Free text on one line: at most `max` bytes, no control character.
pub fn line(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.len() > max {
        return Err(ApiError::invalid(field, format!("longer than {max} bytes")));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(ApiError::invalid(field, format!("contains the control character U+{:04X}", c as u32)));
    }
    Ok(())
}

/// A note: multi-line text that never reaches a config, so newlines and tabs are allowed.
pub fn note(field: &str, value: &str) -> ApiResult<()> {
    const MAX: usize = 8192;
    if value.len() > MAX {
        return Err(ApiError::invalid(field, format!("longer than {MAX} bytes")));
    }
    if let Some(c) = value.chars().find(|c| c.is_control() && *c != '\n' && *c != '\t') {
        return Err(ApiError::invalid(field, format!("contains the control character U+{:04X}", c as u32)));
    }
    Ok(())
}

/// A display name (container, distro, server...): 1-255 bytes, one line, not blank.
pub fn name(field: &str, value: &str) -> ApiResult<()> {
    line(field, value, 255)?;
    if value.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    Ok(())
}

/// A login name: `[A-Za-z0-9._@+-]{1,150}` (Django's user name alphabet).
pub fn username(field: &str, value: &str) -> ApiResult<()> {
    let ok = !value.is_empty()
        && value.len() <= 150
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "must be 1-150 characters of A-Z a-z 0-9 . _ @ + -"))
    }
}

/// A password: 8-1024 bytes, no control character. Any other character, `:` included, is fine.
pub fn password(field: &str, value: &str) -> ApiResult<()> {
    line(field, value, 1024)?;
    if value.chars().count() < 8 {
        return Err(ApiError::invalid(field, "must be at least 8 characters"));
    }
    Ok(())
}

pub fn email(field: &str, value: &str) -> ApiResult<()> {
    line(field, value, 254)?;
    if value.is_empty() {
        return Ok(());
    }
    let bad = || ApiError::invalid(field, "not an e-mail address");
    let (local, domain) = value.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || value.chars().any(char::is_whitespace)
    {
        return Err(bad());
    }
    Ok(())
}

/// A tag name: 1-64 bytes, no control character, no comma (the `?tags=a,b` separator), no
/// surrounding blanks.
pub fn tag(field: &str, value: &str) -> ApiResult<()> {
    line(field, value, 64)?;
    if value.is_empty() || value.trim() != value || value.contains(',') {
        return Err(ApiError::invalid(field, "must be 1-64 characters without commas or surrounding blanks"));
    }
    Ok(())
}

/// Normalises a domain to its lowercase ASCII (IDNA) form and checks it with the node's rule
/// (`domain_names::normalize_key`, which the subscription validator applies to every announce,
/// so what is stored here is what a customer's `domain =` line reaches): at most 253 bytes, at
/// least two labels of 1-63 `[a-z0-9-]` not starting or ending with `-`, a non-numeric top
/// label. One leading `.` is kept: `.example.org` is the wildcard for `*.example.org`. A port
/// or a final dot, which an announce may carry and loses, is refused here: a name is stored
/// in one form only.
pub fn domain(field: &str, value: &str) -> ApiResult<String> {
    line(field, value, 253)?;
    let bad = |why: &str| ApiError::invalid(field, format!("not a valid domain name: {why}"));
    if value.contains(':') {
        return Err(bad("a domain has no port"));
    }
    if value.ends_with('.') {
        return Err(bad("a domain has no final dot"));
    }
    domain_names::normalize_key(value).map_err(|why| bad(&why))
}

const SSH_KEY_TYPES: &[&str] = &[
    "ssh-rsa",
    "ssh-ed25519",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// One OpenSSH public key line: `type base64 [comment]`. The blob must decode and name the
/// same type, which is how OpenSSH itself recognises a key; no options prefix is accepted.
pub fn ssh_key(field: &str, value: &str) -> ApiResult<()> {
    line(field, value, 16 * 1024)?;
    let mut parts = value.trim().splitn(3, ' ');
    let kind = parts.next().unwrap_or("");
    let blob = parts.next().unwrap_or("");
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err(ApiError::invalid(
            field,
            format!("unknown key type, expected one of {}", SSH_KEY_TYPES.join(", ")),
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| ApiError::invalid(field, "the key is not valid base64"))?;
    let named = decoded
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| decoded.get(4..4 + n));
    if named != Some(kind.as_bytes()) {
        return Err(ApiError::invalid(field, format!("the key blob is not a {kind} key")));
    }
    Ok(())
}

/// `#rrggbb`.
pub fn color(field: &str, value: &str) -> ApiResult<()> {
    let ok = value.len() == 7 && value.starts_with('#') && value[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "must be a colour like #ff0000"))
    }
}

/// An XMPP address `local@domain[/resource]`.
pub fn jid(field: &str, value: &str) -> ApiResult<()> {
    line(field, value, 255)?;
    let ok = value
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.starts_with('/') && !d.contains('@'))
        && !value.chars().any(|c| c.is_whitespace() || c == ',');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "must be a jabber id like user@example.org"))
    }
}

pub fn jid_list(field: &str, value: &str) -> ApiResult<()> {
    line(field, value, 1024)?;
    for part in value.split(',') {
        jid(field, part.trim())?;
    }
    Ok(())
}

/// API tokens of alarm services (pushover, pushbullet): `[A-Za-z0-9._:-]{1,255}`.
pub fn token(field: &str, value: &str) -> ApiResult<()> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "must be 1-255 characters of A-Z a-z 0-9 . _ : -"))
    }
}

/// A Slack incoming webhook, `https://hooks.slack.com/services/...`: the relay's own rule
/// (`alarms::services::slack_webhook_path`), so nothing the relay would skip is accepted.
pub fn slack_webhook(field: &str, value: &str) -> ApiResult<()> {
    line(field, value, 512)?;
    match alarms::services::slack_webhook_path(value) {
        Some(_) => Ok(()),
        None => Err(ApiError::invalid(field, "must be a Slack webhook, https://hooks.slack.com/services/...")),
    }
}

/// A WireGuard public key: 32 bytes in standard base64 (44 characters), as `wg pubkey` and
/// `unbit-links pubkey` print it; returned trimmed.
pub fn wireguard_key(field: &str, value: &str) -> ApiResult<String> {
    let value = value.trim();
    match base64::engine::general_purpose::STANDARD.decode(value) {
        Ok(bytes) if bytes.len() == 32 => Ok(value.to_string()),
        _ => Err(ApiError::invalid(field, "a WireGuard public key is 32 bytes in base64 (44 characters)")),
    }
}

/// An IPv4 or IPv6 address, as the supplier types it for servers and legions.
pub fn ip_address(field: &str, value: &str) -> ApiResult<String> {
    value
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| ApiError::invalid(field, "not an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOTDSRGBQ+qWd0PjHGHxsN2PZUE0N2v9tWxlyuhMquiU me@host";

    #[test]
    fn domains_are_lowercased_and_punycoded() {
        assert_eq!(domain("name", "Example.ORG").unwrap(), "example.org");
        assert_eq!(domain("name", "bücher.de").unwrap(), "xn--bcher-kva.de");
        assert_eq!(domain("name", ".example.org").unwrap(), ".example.org");
    }

    #[test]
    fn bad_domains_are_refused() {
        for d in [
            "localhost",
            "a..b",
            "-a.com",
            "a-.com",
            "1.2.3.4",
            "a_b.com",
            "ex ample.com",
            "example.com.",
            "example.com:80",
            "..example.com",
            "x\n.com",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert!(domain("name", d).is_err(), "{d} accepted");
        }
    }

    #[test]
    fn ssh_keys_must_be_real_public_keys() {
        ssh_key("k", ED25519).unwrap();
        assert!(ssh_key("k", "ssh-rsa .........").is_err());
        assert!(ssh_key("k", "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOTDSRGBQ+qWd0PjHGHxsN2PZUE0N2v9tWxlyuhMquiU").is_err());
        assert!(ssh_key("k", &format!("{ED25519}\ncommand=\"id\" {ED25519}")).is_err());
        assert!(ssh_key("k", &format!("command=\"id\" {ED25519}")).is_err());
    }

    #[test]
    fn passwords_may_contain_colons_but_not_newlines() {
        password("password", "a:b:c:d:e").unwrap();
        assert!(password("password", "short").is_err());
        assert!(password("password", "long enough\nbut two lines").is_err());
    }

    #[test]
    fn tags_cannot_contain_the_filter_separator() {
        tag("name", "foobar").unwrap();
        assert!(tag("name", "a,b").is_err());
        assert!(tag("name", " a").is_err());
        assert!(tag("name", "").is_err());
    }
}
