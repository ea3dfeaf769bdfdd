//! `/api/node/v1/...`: what a node's container manager reads and reports. The caller is a
//! [`Node`] (client certificate, or the dev-mode token on loopback) and only ever sees its own
//! server's objects.

use super::common::{created, ok, path_uid, QueryMap};
use super::metrics::{CONTAINER_METRICS, DOMAIN_METRICS};
use super::node_metrics::{insert_container_sample, insert_domain_sample, owners_domain};
use crate::body::{parse_int, Fields, RawBody};
use crate::error::{ApiError, ApiResult};
use crate::node_auth::Node;
use crate::routes::alarms::{alarm_message, insert_alarm, NewAlarm, MAX_UNIX};
use crate::specs::{specs_for_server, uid_of};
use crate::state::AppState;
use crate::store::{now, RowExt};
use crate::validate;
use axum::extract::{Path, State};
use axum::response::Response;
use container_spec::{ip_of, LoopboxSpec};
use serde_json::json;
use sqlx::any::AnyRow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a waiting long poll re-reads its revision even without an in-process wake-up
/// (changes made by another API host or by the admin CLI).
const RECHECK: Duration = Duration::from_millis(500);

async fn revision(state: &AppState, server_id: i64) -> ApiResult<i64> {
    Ok(sqlx::query("SELECT revision FROM servers WHERE id = $1")
        .bind(server_id)
        .fetch_one(&state.db.pool)
        .await?
        .i64("revision"))
}

/// `GET /api/node/v1/containers?since=<revision>`: the node's deployable container specs. With
/// `since` equal to the current revision the request is held until the revision moves or the
/// long-poll period ends.
pub async fn containers(State(state): State<AppState>, node: Node, query: QueryMap) -> ApiResult<Response> {
    let since = query.get("since").map(|s| parse_int("since", s, 0, i64::MAX)).transpose()?;
    let deadline = Instant::now() + state.long_poll;
    let mut wake = state.revisions.subscribe();
    loop {
        wake.borrow_and_update();
        let current = revision(&state, node.server_id).await?;
        let now = Instant::now();
        if since != Some(current) || now >= deadline {
            break;
        }
        let wait = RECHECK.min(deadline - now);
        tokio::select! {
            _ = wake.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // Revision first, then the specs: a change landing in between shows up in these specs and
    // again, harmlessly, on the next poll.
    let mut conn = state.db.pool.acquire().await?;
    let current = sqlx::query("SELECT revision FROM servers WHERE id = $1")
        .bind(node.server_id)
        .fetch_one(&mut *conn)
        .await?
        .i64("revision");
    let specs = specs_for_server(&mut conn, node.server_id).await?;
    Ok(ok(json!({"revision": current, "containers": specs})))
}

pub async fn loopboxes(State(state): State<AppState>, node: Node) -> ApiResult<Response> {
    let rows = sqlx::query(
        "SELECT l.* FROM loopboxes l JOIN containers c ON c.id = l.container_id \
         WHERE c.server_id = $1 ORDER BY l.id",
    )
    .bind(node.server_id)
    .fetch_all(&state.db.pool)
    .await?;
    let specs: Vec<LoopboxSpec> = rows
        .iter()
        .map(|r| LoopboxSpec {
            id: r.i64("id") as u64,
            uid: uid_of(r.i64("container_id")) as u32,
            filename: r.str("filename"),
            mountpoint: r.str("mountpoint"),
            ro: r.flag("ro"),
        })
        .filter(|l| l.validate().is_ok())
        .collect();
    Ok(ok(json!(specs)))
}

/// Every domain of every customer with a container on this node, with the uids of that
/// customer's containers here and the public key its subscriptions are signed with.
pub async fn domains(State(state): State<AppState>, node: Node) -> ApiResult<Response> {
    let mut conn = state.db.pool.acquire().await?;
    let mut owners: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in sqlx::query("SELECT id, customer_id FROM containers WHERE server_id = $1 ORDER BY id")
        .bind(node.server_id)
        .fetch_all(&mut *conn)
        .await?
    {
        owners.entry(r.i64("customer_id")).or_default().push(uid_of(r.i64("id")));
    }
    let rows = sqlx::query(
        "SELECT d.name, d.customer_id, d.tls, cu.rsa_public_pem FROM domains d \
         JOIN customers cu ON cu.id = d.customer_id \
         WHERE d.customer_id IN (SELECT customer_id FROM containers WHERE server_id = $1) ORDER BY d.name",
    )
    .bind(node.server_id)
    .fetch_all(&mut *conn)
    .await?;
    let list: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "name": r.str("name"),
                "owner_uids": owners.get(&r.i64("customer_id")).cloned().unwrap_or_default(),
                "public_key_pem": r.str("rsa_public_pem"),
                "tls": r.str("tls"),
            })
        })
        .collect();
    Ok(ok(json!(list)))
}

async fn container_on_node(state: &AppState, node: &Node, uid: &str) -> ApiResult<i64> {
    let id = path_uid(uid)?;
    sqlx::query("SELECT id FROM containers WHERE id = $1 AND server_id = $2")
        .bind(id)
        .bind(node.server_id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(id)
}

/// `POST /api/node/v1/alarms/<uid>[?unix=N][&class=KIND]`: a platform alarm (level 0), raw
/// text body; `class` is the alarm's kind as the node's relay names it (`oom`, `quota`, ...).
pub async fn alarm(
    State(state): State<AppState>,
    node: Node,
    Path(uid): Path<String>,
    query: QueryMap,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let id = container_on_node(&state, &node, &uid).await?;
    let msg = alarm_message(&body)?;
    let unix = query.get("unix").map(|u| parse_int("unix", u, 0, MAX_UNIX)).transpose()?.unwrap_or_else(now);
    let class = query.get("class").map(|c| validate::line("class", c, 255).map(|_| c.to_string())).transpose()?;
    let alarm = NewAlarm {
        unix,
        level: 0,
        color: "#ffffff".into(),
        msg,
        line: None,
        func: None,
        filename: None,
        class,
        vassal: None,
    };
    let mut tx = state.db.write().await?;
    let alarm_id = insert_alarm(&mut tx, id, alarm).await?;
    tx.commit().await?;
    Ok(created(json!({"message": "Created", "id": alarm_id})))
}

/// `POST /api/node/v1/metrics/<metric>/<uid>` with `{unix, value}` (domain metrics also carry
/// `domain`, which must belong to the container's customer).
pub async fn metric(
    State(state): State<AppState>,
    node: Node,
    Path((metric, uid)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let is_domain = DOMAIN_METRICS.contains(&metric.as_str());
    if !is_domain && !CONTAINER_METRICS.contains(&metric.as_str()) {
        return Err(ApiError::not_found());
    }
    let id = container_on_node(&state, &node, &uid).await?;
    let mut f = Fields::parse(&body)?;
    let unix = f.required_int("unix", 0, MAX_UNIX)?;
    let value = f.required_int("value", i64::MIN, i64::MAX)?;
    let domain = if is_domain { Some(validate::domain("domain", &f.required_string("domain")?)?) } else { None };
    f.finish()?;
    let mut tx = state.db.write().await?;
    match domain {
        None => insert_container_sample(&mut tx, id, &metric, unix, value).await?,
        Some(name) => {
            let domain_id = owners_domain(&mut tx, &name, id)
                .await?
                .ok_or_else(|| ApiError::invalid("domain", "not a domain of this container's owner"))?;
            insert_domain_sample(&mut tx, (domain_id, id), &metric, unix, value).await?;
        }
    }
    tx.commit().await?;
    Ok(created(json!({"message": "Created"})))
}

/// `GET /api/node/v1/portmappings`: `{revision, mappings}` for this node's firewall.
pub async fn portmappings(State(state): State<AppState>, node: Node) -> ApiResult<Response> {
    let mut conn = state.db.pool.acquire().await?;
    let revision = sqlx::query("SELECT portmappings_revision FROM servers WHERE id = $1")
        .bind(node.server_id)
        .fetch_one(&mut *conn)
        .await?
        .i64("portmappings_revision");
    let rows = sqlx::query("SELECT * FROM portmaps WHERE server_id = $1 ORDER BY id")
        .bind(node.server_id)
        .fetch_all(&mut *conn)
        .await?;
    let mappings: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "proto": r.str("proto"),
                "public_ip": node.address,
                "public_port": r.i64("public_port"),
                "private_ip": ip_of(uid_of(r.i64("container_id")) as u32).to_string(),
                "private_port": r.i64("private_port"),
            })
        })
        .collect();
    Ok(ok(json!({"revision": revision, "mappings": mappings})))
}

/// The ports of a member's cluster listener and fastrouter, as `vassals-examples/legion/
/// fastrouter.ini` binds them on its inter-node address.
const CLUSTER_PORT: u16 = 3022;
const FASTROUTER_PORT: u16 = 1999;

/// The servers sharing a Legion with `server_id` (itself included), with `SELECT`ed columns
/// `name`, `ip` (the inter-node address: `cluster_address`, else `address`), `id` and the
/// keys, ordered by id.
const LEGION_SERVERS: &str = "SELECT s.id, s.name, COALESCE(s.cluster_address, s.address) AS ip, s.cluster_key, \
     s.cluster_x25519_key, s.links_key FROM servers s WHERE s.id IN (SELECT n.server_id FROM legion_nodes n \
     WHERE n.legion_id IN (SELECT legion_id FROM legion_nodes WHERE server_id = $1)) ORDER BY s.id";

/// A server of [`LEGION_SERVERS`] whose key (of the file asked for) is set, with its
/// inter-node address.
struct LegionServer<'a> {
    row: &'a AnyRow,
    key: String,
    ip: IpAddr,
}

/// The servers of `rows` ([`LEGION_SERVERS`]) with `key_column` set, and the members file's
/// `skipped` list (`[{name, reason}]`): those whose inter-node address is not an IP. The admin
/// CLI stores only IP addresses, but a row written before it checked, or by hand, may hold a
/// host name; no member can use it (the files take socket addresses), yet a server that simply
/// vanished from the file would leave its Legion with nothing saying why. So it is listed
/// apart, for the node's log, and in the API's log once per server and address.
fn legion_servers<'a>(rows: &'a [AnyRow], key_column: &str) -> (Vec<LegionServer<'a>>, Vec<serde_json::Value>) {
    let (mut servers, mut skipped) = (Vec::new(), Vec::new());
    for row in rows {
        let Some(key) = row.opt_str(key_column) else { continue };
        let (name, address) = (row.str("name"), row.str("ip"));
        match address.parse() {
            Ok(ip) => servers.push(LegionServer { row, key, ip }),
            Err(_) => {
                let reason = format!(
                    "its inter-node address {address:?} is not an IP address (admin server set-cluster-keys \
                     --cluster-address)"
                );
                if first_time(&name, &address) {
                    tracing::warn!(server = %name, %address, "left out of its Legion's members files: {reason}");
                }
                skipped.push(json!({"name": name, "reason": reason}));
            }
        }
    }
    (servers, skipped)
}

/// Whether `(server, address)` is new to this process's log: every node polls the members
/// files every 2 seconds, which must not write the same warning every time.
fn first_time(server: &str, address: &str) -> bool {
    static SEEN: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    seen.insert((server.to_string(), address.to_string()))
}

/// A members file's answer: `skipped` only when a server was left out, so that a file
/// without one is exactly what its reader takes.
fn members_answer(members: Vec<serde_json::Value>, skipped: Vec<serde_json::Value>) -> Response {
    if skipped.is_empty() {
        ok(json!({"members": members}))
    } else {
        ok(json!({"members": members, "skipped": skipped}))
    }
}

/// `GET /api/node/v1/legion/members`: the members file of this node's Legion(s) (`{"members":
/// [{name, cluster, fastrouter, public_key, x25519_key?}], "skipped"?: [{name, reason}]}`, as
/// `unbit-cluster-members` reads it once node-sync took `skipped` out), every server sharing a
/// Legion with this one (itself included) whose cluster key the supplier has set. Only public
/// keys and addresses: nothing secret.
pub async fn legion_members(State(state): State<AppState>, node: Node) -> ApiResult<Response> {
    let rows = sqlx::query(LEGION_SERVERS).bind(node.server_id).fetch_all(&state.db.pool).await?;
    let (servers, skipped) = legion_servers(&rows, "cluster_key");
    let members = servers
        .into_iter()
        .map(|s| {
            let mut m = json!({
                "name": s.row.str("name"),
                "cluster": SocketAddr::new(s.ip, CLUSTER_PORT).to_string(),
                "fastrouter": SocketAddr::new(s.ip, FASTROUTER_PORT).to_string(),
                "public_key": s.key,
            });
            if let Some(x) = s.row.opt_str("cluster_x25519_key") {
                m["x25519_key"] = json!(x);
            }
            m
        })
        .collect();
    Ok(members_answer(members, skipped))
}

/// The UDP port of a member's `unbit-links` on its inter-node address (WireGuard's usual one).
const LINKS_PORT: u16 = 51820;

/// `GET /api/node/v1/links/members`: the links members file of this node's Legion(s)
/// (`{"members": [{name, endpoint, public_key, containers}], "skipped"?: [{name, reason}]}`, as
/// `unbit-links run --members` reads it once node-sync took `skipped` out): every server
/// sharing a Legion with this one (itself included) whose WireGuard key the supplier has set,
/// with the uids of every container the API places on it (a container has one server, so no
/// uid is listed twice). Only public keys, addresses and uids.
pub async fn links_members(State(state): State<AppState>, node: Node) -> ApiResult<Response> {
    let mut conn = state.db.pool.acquire().await?;
    let rows = sqlx::query(LEGION_SERVERS).bind(node.server_id).fetch_all(&mut *conn).await?;
    let placed = sqlx::query(&format!(
        "SELECT c.id, c.server_id FROM containers c WHERE c.server_id IN (SELECT id FROM ({LEGION_SERVERS}) AS l) \
         ORDER BY c.id"
    ))
    .bind(node.server_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut containers: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for c in &placed {
        containers.entry(c.i64("server_id")).or_default().push(uid_of(c.i64("id")));
    }
    let (servers, skipped) = legion_servers(&rows, "links_key");
    let members = servers
        .into_iter()
        .map(|s| {
            json!({
                "name": s.row.str("name"),
                "endpoint": SocketAddr::new(s.ip, LINKS_PORT).to_string(),
                "public_key": s.key,
                "containers": containers.remove(&s.row.i64("id")).unwrap_or_default(),
            })
        })
        .collect();
    Ok(members_answer(members, skipped))
}
