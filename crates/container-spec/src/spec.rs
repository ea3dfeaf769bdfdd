use crate::grammar::{is_relative_path, Checker, ValidationError};
use serde::{Deserialize, Serialize};

/// uid of the first customer container; `uid - BASE_UID` is the container's number.
pub const BASE_UID: u32 = 30_000;
/// The highest uid whose derived 10.x.y.z address does not wrap (the original's bug B14).
pub const MAX_UID: u32 = BASE_UID + 0x00ff_fffd;

/// uids inside `BASE_UID..=MAX_UID` that are never a container's: `nobody` (65534), which host
/// daemons run as, and 65535, the 16-bit `(uid_t)-1`. A container with one of them would share
/// its identity with host processes (the ssh broker trusts the kernel's word on a peer's uid).
pub const RESERVED_UIDS: [u32; 2] = [65_534, 65_535];

/// Whether `uid` may be a container's: in range and not reserved.
pub fn is_container_uid(uid: u32) -> bool {
    (BASE_UID..=MAX_UID).contains(&uid) && !RESERVED_UIDS.contains(&uid)
}

/// Everything a node needs to run one container. Serialized as JSON by the control API
/// (node endpoint) and as `<uid>.json` files in a node's spec folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub uid: u32,
    /// Free text chosen by the customer; the hostname is derived from it.
    pub name: String,
    pub memory_mb: u64,
    pub storage_mb: u64,
    #[serde(default = "default_cpu_weight")]
    pub cpu_weight: u32,
    #[serde(default = "default_pids_limit")]
    pub pids_limit: u32,
    pub distro: Distro,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// The owner's subscription key pair (PEM), written to `etc/uwsgi.key` / `etc/uwsgi.pubkey`.
    pub subscription_key: KeyPair,
    #[serde(default)]
    pub alarms: AlarmSettings,
    /// uids this container accepts traffic from (links are one-directional, both ends agree).
    #[serde(default)]
    pub links: Vec<u32>,
    #[serde(default)]
    pub nofollow: bool,
    #[serde(default)]
    pub dmz: bool,
    /// Bumped by the API on an explicit reboot request.
    #[serde(default)]
    pub reboot_generation: u64,
    /// Seed for `etc/hosts` and `etc/resolv.conf` (written only when missing, as promised to
    /// customers, who may edit them).
    #[serde(default)]
    pub etc_hosts: Vec<String>,
    #[serde(default)]
    pub etc_resolv_conf: Vec<String>,
    /// A container that stores custom distro images for the owner's other containers on this
    /// node, in `~/distros/` (custom-distros.md). Never itself boots from one.
    #[serde(default, skip_serializing_if = "is_false")]
    pub custom_distros_storage: bool,
    /// The owning customer's id (the control API's). A custom distro is usable only from a
    /// storage container with the same owner; 0 on hand-written specs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub customer: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum Distro {
    /// A platform distro: a directory under the node's distros folder.
    Platform { path: String },
    /// A customer image stored in another container of the same customer on the same node:
    /// `/containers/<storage_uid>/distros/<path>`. When the node finds the image unusable it
    /// boots the container on `fallback` (a platform distro path, the container's default
    /// distro) and raises a `distro` alarm.
    Custom {
        storage_uid: u32,
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmSettings {
    /// Seconds between two alarms (at least 60, as the original enforced).
    pub freq: u32,
    /// Percentage of the quota that raises the quota alarm.
    pub quota_threshold: u8,
    pub jid: Option<String>,
    pub jid_secret: Option<String>,
    pub jid_destinations: Option<String>,
    pub pushover_user: Option<String>,
    pub pushover_token: Option<String>,
    pub pushover_sound: Option<String>,
    pub pushbullet_token: Option<String>,
    pub slack_webhook: Option<String>,
}

fn default_cpu_weight() -> u32 {
    100
}
fn default_pids_limit() -> u32 {
    1024
}

impl ContainerSpec {
    /// Parses and validates a spec; the error names the container (when it could be read) and
    /// every field that is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        let spec: ContainerSpec = serde_json::from_slice(bytes).map_err(|e| SpecError::Syntax(e.to_string()))?;
        spec.validate().map_err(SpecError::Invalid)?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut c = Checker::default();
        c.range("uid", self.uid, BASE_UID, MAX_UID);
        if RESERVED_UIDS.contains(&self.uid) {
            c.fail("uid", "is reserved for the host (nobody, (uid_t)-1), never a container's");
        }
        c.text("name", &self.name, 255);
        if self.name.trim().is_empty() {
            c.fail("name", "must not be empty");
        }
        c.range("memory_mb", self.memory_mb, 16, 1 << 20);
        c.range("storage_mb", self.storage_mb, 1, 1 << 24);
        c.range("cpu_weight", self.cpu_weight, 1, 10_000);
        c.range("pids_limit", self.pids_limit, 16, 4_194_304);
        match &self.distro {
            Distro::Platform { path } => c.path_component("distro.path", path),
            Distro::Custom { storage_uid, path, fallback } => {
                c.range("distro.storage_uid", *storage_uid, BASE_UID, MAX_UID);
                if *storage_uid == self.uid {
                    c.fail("distro.storage_uid", "a container cannot boot from its own image store");
                }
                if self.custom_distros_storage {
                    c.fail("distro", "a custom_distros_storage container cannot use a custom distro");
                }
                c.path_component("distro.path", path);
                if let Some(f) = fallback {
                    c.path_component("distro.fallback", f);
                }
            }
        }
        if self.ssh_keys.len() > 256 {
            c.fail("ssh_keys", "more than 256 keys");
        }
        for (i, key) in self.ssh_keys.iter().enumerate() {
            let field = format!("ssh_keys[{i}]");
            c.text(&field, key, 16 * 1024);
            if key.trim().is_empty() {
                c.fail(&field, "empty key");
            }
        }
        check_pem(&mut c, "subscription_key.private_pem", &self.subscription_key.private_pem);
        check_pem(&mut c, "subscription_key.public_pem", &self.subscription_key.public_pem);
        let a = &self.alarms;
        c.range("alarms.freq", a.freq, 60, 86_400);
        c.range("alarms.quota_threshold", a.quota_threshold, 1, 100);
        for (field, value) in [
            ("alarms.jid", &a.jid),
            ("alarms.jid_secret", &a.jid_secret),
            ("alarms.jid_destinations", &a.jid_destinations),
            ("alarms.pushover_user", &a.pushover_user),
            ("alarms.pushover_token", &a.pushover_token),
            ("alarms.pushover_sound", &a.pushover_sound),
            ("alarms.pushbullet_token", &a.pushbullet_token),
            ("alarms.slack_webhook", &a.slack_webhook),
        ] {
            if let Some(v) = value {
                c.text(field, v, 512);
            }
        }
        if self.links.len() > 4096 {
            c.fail("links", "more than 4096 links");
        }
        for (i, peer) in self.links.iter().enumerate() {
            c.range(&format!("links[{i}]"), *peer, BASE_UID, MAX_UID);
            if *peer == self.uid {
                c.fail(&format!("links[{i}]"), "a container cannot link to itself");
            }
        }
        for (i, line) in self.etc_hosts.iter().enumerate() {
            c.text(&format!("etc_hosts[{i}]"), line, 1024);
        }
        for (i, line) in self.etc_resolv_conf.iter().enumerate() {
            c.text(&format!("etc_resolv_conf[{i}]"), line, 1024);
        }
        if c.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { uid: self.uid, errors: c.errors })
        }
    }

    /// The container's hostname: the name with every character outside `[A-Za-z0-9-]`
    /// replaced by `-`, cut to 63 bytes (a DNS label).
    pub fn hostname(&self) -> String {
        hostname_of(&self.name, self.uid)
    }

    /// `10.0.0.0 | (n + 2)`: 10.0.0.1 is the host gateway, 10.0.0.2 the API container.
    pub fn ip(&self) -> std::net::Ipv4Addr {
        ip_of(self.uid)
    }

    /// The part of the spec whose change requires a restart: everything except the ssh keys,
    /// which are rewritten in place (the original's §4.3 rule), and the alarm settings, which
    /// the node's alarm relay reads from the spec folder at every alarm (the original restarted
    /// the container for them: its vassal config held the secrets). Two specs with equal boot
    /// identities run identically.
    pub fn boot_identity(&self) -> String {
        let mut boot = self.clone();
        boot.ssh_keys.clear();
        boot.alarms = AlarmSettings::default();
        serde_json::to_string(&boot).expect("a spec always serializes")
    }

    /// Whether going from `self` to `next` needs the container to restart.
    pub fn needs_restart_for(&self, next: &ContainerSpec) -> bool {
        self.boot_identity() != next.boot_identity()
    }

    /// A container runs only with a distro and at least one ssh key (the customer contract).
    pub fn is_deployable(&self) -> bool {
        !self.ssh_keys.is_empty()
    }
}

/// The hostname derived from a container name (see [`ContainerSpec::hostname`]); the control
/// API shows customers the same value the node sets.
pub fn hostname_of(name: &str, uid: u32) -> String {
    let mut h: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).take(63).collect();
    if h.trim_matches('-').is_empty() {
        h = format!("container-{uid}");
    }
    h
}

/// The name of the container's interface on the node's side (the host end of its veth; the
/// container's end is `uwsgi0`). At most 12 bytes for any uid, within `IFNAMSIZ` (16 with the
/// NUL). The subscription validator accepts a container's IP announce only when the node
/// routes that address through this interface.
pub fn host_interface(uid: u32) -> String {
    format!("uw{uid}")
}

/// The container's address on the inter-container network (see [`ContainerSpec::ip`]).
pub fn ip_of(uid: u32) -> std::net::Ipv4Addr {
    let n = uid.wrapping_sub(BASE_UID);
    std::net::Ipv4Addr::from(0x0a00_0000 | (n.wrapping_add(2) & 0x00ff_ffff))
}

fn check_pem(c: &mut Checker, field: &str, pem: &str) {
    let ok = pem.starts_with("-----BEGIN ")
        && pem.trim_end().ends_with("-----")
        && pem.len() <= 16 * 1024
        && pem.bytes().all(|b| b == b'\n' || (0x20..0x7f).contains(&b));
    if !ok {
        c.fail(field, "not a PEM block");
    }
}

/// Why a spec could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    Syntax(String),
    Invalid(ValidationError),
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::Syntax(e) => write!(f, "unreadable spec: {e}"),
            SpecError::Invalid(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SpecError {}

/// A loopbox: an ext4 image in the home mounted at a home-relative mountpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopboxSpec {
    pub id: u64,
    pub uid: u32,
    pub filename: String,
    pub mountpoint: String,
    #[serde(default)]
    pub ro: bool,
}

/// Home folders the platform manages; a loopbox may not be mounted on them.
pub const RESERVED_HOME_DIRS: &[&str] = &["etc", "logs", "run", "tmp", "vassals", ".ssh", "bin", "distros"];

impl LoopboxSpec {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut c = Checker::default();
        if !is_relative_path(&self.filename) || self.filename.len() > 64 {
            c.fail("filename", "must be a relative path of at most 64 bytes without '.' or '..' components");
        }
        if !is_relative_path(&self.mountpoint) {
            c.fail("mountpoint", "must be a relative path without '.' or '..' components");
        } else if let Some(first) = self.mountpoint.split('/').next() {
            if RESERVED_HOME_DIRS.contains(&first) {
                c.fail("mountpoint", format!("'{first}' is managed by the platform"));
            }
        }
        if c.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { uid: self.uid, errors: c.errors })
        }
    }
}

#[cfg(test)]
mod tests;
