//! A valid spec for tests (feature `fixtures`), so every crate's tests start from the same
//! sound container and change only what they test.

use crate::{AlarmSettings, ContainerSpec, Distro, KeyPair};

/// A deployable container `uid` named `c<uid>` on the `bookworm` distro, with one ssh key.
pub fn spec(uid: u32) -> ContainerSpec {
    ContainerSpec {
        uid,
        name: format!("c{uid}"),
        memory_mb: 500,
        storage_mb: 1000,
        cpu_weight: 100,
        pids_limit: 512,
        distro: Distro::Platform { path: "bookworm".into() },
        ssh_keys: vec!["ssh-ed25519 AAAA test@example".into()],
        subscription_key: KeyPair {
            private_pem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
            public_pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into(),
        },
        alarms: AlarmSettings { freq: 60, quota_threshold: 90, ..Default::default() },
        links: vec![],
        nofollow: false,
        dmz: false,
        reboot_generation: 0,
        etc_hosts: vec!["127.0.0.1 localhost".into()],
        etc_resolv_conf: vec!["nameserver 127.0.0.1".into()],
        custom_distros_storage: false,
        customer: 0,
    }
}
