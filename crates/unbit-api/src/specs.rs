//! From rows to the typed `ContainerSpec` a node runs. Only deployable containers (a distro or
//! custom distro, and at least one ssh key) are handed out, as the customer contract says.

use crate::store::{placeholders, RowExt};
use container_spec::{AlarmSettings, ContainerSpec, Distro, KeyPair, BASE_UID};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use std::collections::HashMap;

pub fn uid_of(container_id: i64) -> i64 {
    BASE_UID as i64 + container_id
}

/// Container id from a uid typed by a customer; `None` for anything outside the uid range, so
/// overflowing or negative numbers are just "not found".
pub fn container_id_of(uid: i64) -> Option<i64> {
    let id = uid.checked_sub(BASE_UID as i64)?;
    (1..=(container_spec::MAX_UID - BASE_UID) as i64).contains(&id).then_some(id)
}

pub fn lines(text: &str) -> Vec<String> {
    text.replace('\r', "\n").split('\n').filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

const DEPLOYABLE: &str = "(c.distro_id IS NOT NULL OR c.custom_distro_id IS NOT NULL) AND c.ssh_keys <> '[]'";

/// The specs of every deployable container on a server, ordered by uid.
pub async fn specs_for_server(conn: &mut AnyConnection, server_id: i64) -> Result<Vec<ContainerSpec>, sqlx::Error> {
    let sql = format!(
        "SELECT c.id, c.name, c.memory, c.storage, c.ssh_keys, c.quota_threshold, c.alarm_freq, \
                c.jid, c.jid_secret, c.jid_destinations, c.pushover_user, c.pushover_token, \
                c.pushover_sound, c.pushbullet_token, c.slack_webhook, c.nofollow, c.dmz, \
                c.reboot_generation, c.custom_distros_storage, c.customer_id, cu.rsa_private_pem, cu.rsa_public_pem, \
                d.path AS distro_path, cd.path AS custom_path, cd.container_id AS custom_storage_id, \
                s.etc_hosts, s.etc_resolv_conf \
         FROM containers c \
         JOIN customers cu ON cu.id = c.customer_id \
         JOIN servers s ON s.id = c.server_id \
         LEFT JOIN distros d ON d.id = c.distro_id \
         LEFT JOIN custom_distros cd ON cd.id = c.custom_distro_id \
         WHERE c.server_id = $1 AND {DEPLOYABLE} ORDER BY c.id"
    );
    let rows = sqlx::query(&sql).bind(server_id).fetch_all(&mut *conn).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.i64("id")).collect();
    let links = links_of(conn, &ids).await?;
    let mut specs = Vec::with_capacity(rows.len());
    for row in &rows {
        let spec = spec_from_row(row, links.get(&row.i64("id")).cloned().unwrap_or_default());
        match spec {
            Some(spec) => match spec.validate() {
                Ok(()) => specs.push(spec),
                // The API validates every field on the way in, so this means a row was edited
                // by hand; the node keeps its last good state for this container.
                Err(e) => tracing::error!(error = %e, "stored container does not validate"),
            },
            None => tracing::error!(id = row.i64("id"), "stored container has no distro"),
        }
    }
    Ok(specs)
}

async fn links_of(conn: &mut AnyConnection, ids: &[i64]) -> Result<HashMap<i64, Vec<u32>>, sqlx::Error> {
    let mut links: HashMap<i64, Vec<u32>> = HashMap::new();
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT container_id, to_id FROM container_links WHERE container_id IN ({}) \
             ORDER BY container_id, to_id",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut *conn).await? {
            links.entry(row.i64("container_id")).or_default().push(uid_of(row.i64("to_id")) as u32);
        }
    }
    Ok(links)
}

fn spec_from_row(row: &AnyRow, links: Vec<u32>) -> Option<ContainerSpec> {
    let id = row.i64("id");
    let distro = match (row.opt_str("custom_path"), row.opt_i64("custom_storage_id")) {
        // Whether the image's storage container is the owner's, on this node, and a storage
        // container is checked by the node itself, which falls back to `fallback` with an alarm.
        (Some(path), Some(storage)) => {
            Distro::Custom { storage_uid: uid_of(storage) as u32, path, fallback: row.opt_str("distro_path") }
        }
        _ => Distro::Platform { path: row.opt_str("distro_path")? },
    };
    let ssh_keys: Vec<String> = serde_json::from_str(&row.str("ssh_keys")).unwrap_or_default();
    Some(ContainerSpec {
        uid: uid_of(id) as u32,
        name: row.str("name"),
        memory_mb: row.i64("memory") as u64,
        storage_mb: row.i64("storage") as u64,
        cpu_weight: 100,
        pids_limit: 1024,
        distro,
        ssh_keys,
        subscription_key: KeyPair { private_pem: row.str("rsa_private_pem"), public_pem: row.str("rsa_public_pem") },
        alarms: AlarmSettings {
            freq: row.i64("alarm_freq") as u32,
            quota_threshold: row.i64("quota_threshold") as u8,
            jid: row.opt_str("jid"),
            jid_secret: row.opt_str("jid_secret"),
            jid_destinations: row.opt_str("jid_destinations"),
            pushover_user: row.opt_str("pushover_user"),
            pushover_token: row.opt_str("pushover_token"),
            pushover_sound: row.opt_str("pushover_sound"),
            pushbullet_token: row.opt_str("pushbullet_token"),
            slack_webhook: row.opt_str("slack_webhook"),
        },
        links,
        nofollow: row.flag("nofollow"),
        dmz: row.flag("dmz"),
        reboot_generation: row.i64("reboot_generation") as u64,
        etc_hosts: lines(&row.str("etc_hosts")),
        etc_resolv_conf: lines(&row.str("etc_resolv_conf")),
        custom_distros_storage: row.flag("custom_distros_storage"),
        customer: row.i64("customer_id") as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_outside_the_range_map_to_no_container() {
        assert_eq!(container_id_of(30009), Some(9));
        assert_eq!(container_id_of(30000), None);
        assert_eq!(container_id_of(-1), None);
        assert_eq!(container_id_of(i64::MAX), None);
        assert_eq!(uid_of(9), 30009);
    }
}
