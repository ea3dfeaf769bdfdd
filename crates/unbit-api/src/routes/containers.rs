//! `/api/containers/`: list, detail, update, and creation by dedicated-server owners.

use super::common::{bind_tag_filter, created, ok, owned_container, page_of, path_uid, QueryMap, Tagged};
use crate::auth::Customer;
use crate::body::{Fields, Patch, RawBody};
use crate::error::{ApiError, ApiResult};
use crate::revisions::{bump_server_of_container, bump_servers};
use crate::specs::{container_id_of, uid_of};
use crate::state::AppState;
use crate::store::{now, Backend, RowExt, WriteTx};
use crate::validate;
use axum::extract::{Path, State};
use axum::response::Response;
use container_spec::{hostname_of, ip_of};
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

pub const MEMORY_RANGE: (i64, i64) = (16, 1 << 20);
pub const STORAGE_RANGE: (i64, i64) = (1, 1 << 24);

const SELECT: &str = "SELECT c.*, d.name AS distro_name, cd.name AS custom_distro_name, \
     s.name AS server_name, s.address AS server_address \
     FROM containers c JOIN servers s ON s.id = c.server_id \
     LEFT JOIN distros d ON d.id = c.distro_id \
     LEFT JOIN custom_distros cd ON cd.id = c.custom_distro_id";

/// Lists read only the columns of [`summary`]: every row goes through sqlx's `Any` value
/// conversion, so unused columns (keys, notes, settings) cost real time on 1000-row pages.
const LIST_SELECT: &str = "SELECT c.id, c.name, c.memory, c.storage, c.uuid, c.distro_id, c.custom_distro_id, \
     d.name AS distro_name, cd.name AS custom_distro_name, s.name AS server_name, s.address AS server_address \
     FROM containers c JOIN servers s ON s.id = c.server_id \
     LEFT JOIN distros d ON d.id = c.distro_id \
     LEFT JOIN custom_distros cd ON cd.id = c.custom_distro_id";

/// The fields shown in lists (the original's list shape).
fn summary(row: &AnyRow, tags: Vec<String>) -> Value {
    let uid = uid_of(row.i64("id"));
    let mut v = json!({
        "uid": uid,
        "name": row.str("name"),
        "hostname": hostname_of(&row.str("name"), uid as u32),
        "ip": ip_of(uid as u32).to_string(),
        "memory": row.i64("memory"),
        "storage": row.i64("storage"),
        "uuid": row.str("uuid"),
        "distro": row.opt_i64("distro_id"),
        "distro_name": row.opt_str("distro_name"),
        "custom_distro": row.opt_i64("custom_distro_id"),
        "server": row.str("server_name"),
        "server_address": row.str("server_address"),
        "tags": tags,
    });
    if let Some(name) = row.opt_str("custom_distro_name") {
        v["custom_distro_name"] = name.into();
    }
    v
}

/// The full container object (`GET /containers/<uid>`). Secrets (`jid_secret`,
/// `pushover_token`, `pushbullet_token`, `slack_webhook`) are write-only: the answer says
/// whether each is set, never its value.
pub async fn detail(conn: &mut AnyConnection, container_id: i64) -> ApiResult<Value> {
    let row = sqlx::query(&format!("{SELECT} WHERE c.id = $1"))
        .bind(container_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let tags = Tagged::Container.names_of(conn, &[container_id]).await?.remove(&container_id).unwrap_or_default();
    let mut v = summary(&row, tags);
    let linked_to: Vec<i64> = sqlx::query("SELECT to_id FROM container_links WHERE container_id = $1 ORDER BY to_id")
        .bind(container_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| uid_of(r.i64("to_id")))
        .collect();
    let legion_address: Vec<String> = sqlx::query(
        "SELECT l.address FROM legions l JOIN legion_nodes n ON n.legion_id = l.id \
         WHERE n.server_id = $1 ORDER BY l.id",
    )
    .bind(row.i64("server_id"))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.str("address"))
    .collect();
    let ssh_keys: Vec<String> = serde_json::from_str(&row.str("ssh_keys")).unwrap_or_default();
    let text = |col: &str| row.opt_str(col).unwrap_or_default();
    let set = |col: &str| row.opt_str(col).is_some();
    let extra = json!({
        "note": row.str("note"),
        "quota_threshold": row.i64("quota_threshold"),
        "alarm_freq": row.i64("alarm_freq"),
        "jid": text("jid"),
        "jid_destinations": text("jid_destinations"),
        "jid_secret_set": set("jid_secret"),
        "pushover_user": text("pushover_user"),
        "pushover_sound": text("pushover_sound"),
        "pushover_token_set": set("pushover_token"),
        "pushbullet_token_set": set("pushbullet_token"),
        "slack_webhook_set": set("slack_webhook"),
        "nofollow": row.flag("nofollow"),
        "custom_distros_storage": row.flag("custom_distros_storage"),
        "ssh_keys": ssh_keys,
        "linked_to": linked_to,
        "legion_address": legion_address,
        "reboot_generation": row.i64("reboot_generation"),
        "deployable": (row.opt_i64("distro_id").is_some() || row.opt_i64("custom_distro_id").is_some())
            && row.str("ssh_keys") != "[]",
    });
    if let (Value::Object(into), Value::Object(from)) = (&mut v, extra) {
        into.extend(from);
    }
    Ok(v)
}

pub async fn list(State(state): State<AppState>, customer: Customer, query: QueryMap) -> ApiResult<Response> {
    let page = query.page()?;
    let tags = query.tags()?;
    let mut conn = state.db.pool.acquire().await?;
    let filter = tags.as_ref().map(|t| Tagged::Container.filter_sql("c", 2, t.len())).unwrap_or_default();
    let count_sql = format!("SELECT COUNT(*) AS n FROM containers c WHERE c.customer_id = $1{filter}");
    let total = bind_tag_filter(sqlx::query(&count_sql).bind(customer.id), customer.id, &tags)
        .fetch_one(&mut *conn)
        .await?
        .i64("n");
    let list_sql = format!(
        "{LIST_SELECT} WHERE c.customer_id = $1{filter} ORDER BY c.id LIMIT {} OFFSET {}",
        page.limit, page.offset
    );
    let rows =
        bind_tag_filter(sqlx::query(&list_sql).bind(customer.id), customer.id, &tags).fetch_all(&mut *conn).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.i64("id")).collect();
    let mut tag_names = Tagged::Container.names_of(&mut conn, &ids).await?;
    let items = rows.iter().map(|r| summary(r, tag_names.remove(&r.i64("id")).unwrap_or_default())).collect();
    Ok(page_of(items, total))
}

pub async fn get_one(
    State(state): State<AppState>,
    customer: Customer,
    Path(uid): Path<String>,
) -> ApiResult<Response> {
    let id = path_uid(&uid)?;
    let mut conn = state.db.pool.acquire().await?;
    owned_container(&mut conn, customer.id, id).await?;
    Ok(ok(detail(&mut conn, id).await?))
}

/// Capacity check: the server's containers, this one at its new size, must fit.
async fn check_capacity(
    tx: &mut WriteTx<'_>,
    server_id: i64,
    except_container: Option<i64>,
    memory: i64,
    storage: i64,
) -> ApiResult<()> {
    if tx.backend == Backend::Postgres {
        // Two API hosts sizing containers on one server at once: the second waits here and
        // then sees the first one's container in the sums below. (SQLite writers are serial.)
        sqlx::query("SELECT id FROM servers WHERE id = $1 FOR UPDATE").bind(server_id).execute(&mut ***tx).await?;
    }
    let row = sqlx::query(
        "SELECT s.memory AS cap_memory, s.storage AS cap_storage, \
         CAST(COALESCE((SELECT SUM(c.memory) FROM containers c WHERE c.server_id = s.id AND c.id <> $2), 0) AS BIGINT) AS used_memory, \
         CAST(COALESCE((SELECT SUM(c.storage) FROM containers c WHERE c.server_id = s.id AND c.id <> $2), 0) AS BIGINT) AS used_storage \
         FROM servers s WHERE s.id = $1",
    )
    .bind(server_id)
    .bind(except_container.unwrap_or(0))
    .fetch_one(&mut ***tx)
    .await?;
    let free_memory = row.i64("cap_memory") - row.i64("used_memory");
    let free_storage = row.i64("cap_storage") - row.i64("used_storage");
    if memory > free_memory {
        return Err(
            ApiError::conflict(format!("not enough memory: {free_memory} MB free on the server")).field("memory")
        );
    }
    if storage > free_storage {
        return Err(
            ApiError::conflict(format!("not enough storage: {free_storage} MB free on the server")).field("storage")
        );
    }
    Ok(())
}

/// Inserts a container (no distro, no keys: not deployed yet) after the capacity check.
/// Shared by the owners' `POST /containers/` and the supplier's `admin container add`.
pub async fn insert_container(
    tx: &mut WriteTx<'_>,
    customer_id: i64,
    server_id: i64,
    name: &str,
    memory: i64,
    storage: i64,
) -> ApiResult<i64> {
    check_capacity(tx, server_id, None, memory, storage).await?;
    let t = now();
    let mut skipped = Vec::new();
    let id = loop {
        let id = sqlx::query(
            "INSERT INTO containers (name, customer_id, server_id, memory, storage, uuid, ctime, mtime) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
        )
        .bind(name)
        .bind(customer_id)
        .bind(server_id)
        .bind(memory)
        .bind(storage)
        .bind(super::common::new_uuid())
        .bind(t)
        .fetch_one(&mut ***tx)
        .await?
        .i64("id");
        if container_id_of(uid_of(id)).is_none() {
            return Err(ApiError::conflict("the platform has run out of container uids"));
        }
        // A reserved uid (the host's nobody) is never handed out: take the next id, and only
        // then drop the skipped row, so the database cannot give its id out again.
        if !container_spec::is_container_uid(uid_of(id) as u32) {
            skipped.push(id);
            continue;
        }
        break id;
    };
    for id in skipped {
        sqlx::query("DELETE FROM containers WHERE id = $1").bind(id).execute(&mut ***tx).await?;
    }
    bump_servers(tx, &[server_id]).await?;
    Ok(id)
}

pub async fn create(State(state): State<AppState>, customer: Customer, RawBody(body): RawBody) -> ApiResult<Response> {
    let mut f = Fields::parse(&body)?;
    let server = f.required_string("server")?;
    let name = f.required_string("name")?;
    validate::name("name", &name)?;
    let memory = f.required_int("memory", MEMORY_RANGE.0, MEMORY_RANGE.1)?;
    let storage = f.required_int("storage", STORAGE_RANGE.0, STORAGE_RANGE.1)?;
    f.finish()?;
    let mut tx = state.db.write().await?;
    let server_id = sqlx::query("SELECT id FROM servers WHERE (address = $1 OR name = $1) AND owner_id = $2")
        .bind(&server)
        .bind(customer.id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.i64("id"))
        .ok_or_else(|| {
            ApiError::forbidden("only the owner of a dedicated server can create containers on it").field("server")
        })?;
    let id = insert_container(&mut tx, customer.id, server_id, &name, memory, storage).await?;
    let body = detail(&mut tx, id).await?;
    state.commit(tx).await?;
    Ok(created(body))
}

enum Col {
    Int(i64),
    /// A NULL for an integer column (PostgreSQL wants the type of a bound NULL).
    NullInt,
    Text(Option<String>),
}

/// A nullable secret or setting: `null` or `""` clears it, anything else must pass `check`.
fn optional_setting(
    f: &mut Fields,
    key: &'static str,
    check: fn(&str, &str) -> ApiResult<()>,
    cols: &mut Vec<(&'static str, Col)>,
) -> ApiResult<()> {
    match f.string(key)? {
        Patch::Absent => {}
        Patch::Clear => cols.push((key, Col::Text(None))),
        Patch::Set(s) if s.is_empty() => cols.push((key, Col::Text(None))),
        Patch::Set(s) => {
            check(key, &s)?;
            cols.push((key, Col::Text(Some(s))));
        }
    }
    Ok(())
}

fn jid_secret(field: &str, v: &str) -> ApiResult<()> {
    validate::line(field, v, 255)
}

pub async fn update(
    State(state): State<AppState>,
    customer: Customer,
    Path(uid): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let id = path_uid(&uid)?;
    let mut f = Fields::parse(&body)?;
    if f.is_empty() {
        return Err(ApiError::bad_request("nothing to change: the body is an empty object"));
    }

    // 1. Everything that needs no database: types, ranges, grammars.
    let mut cols: Vec<(&'static str, Col)> = Vec::new();
    if let Some(name) = f.text("name", false, validate::name)? {
        cols.push(("name", Col::Text(Some(name))));
    }
    if let Some(note) = f.text("note", true, validate::note)? {
        cols.push(("note", Col::Text(Some(note))));
    }
    if let Patch::Set(v) = f.int("quota_threshold", 1, 100)? {
        cols.push(("quota_threshold", Col::Int(v)));
    }
    if let Patch::Set(v) = f.int("alarm_freq", 60, 86_400)? {
        cols.push(("alarm_freq", Col::Int(v)));
    }
    optional_setting(&mut f, "jid", validate::jid, &mut cols)?;
    optional_setting(&mut f, "jid_secret", jid_secret, &mut cols)?;
    optional_setting(&mut f, "jid_destinations", validate::jid_list, &mut cols)?;
    optional_setting(&mut f, "pushover_user", validate::token, &mut cols)?;
    optional_setting(&mut f, "pushover_token", validate::token, &mut cols)?;
    optional_setting(&mut f, "pushover_sound", validate::token, &mut cols)?;
    optional_setting(&mut f, "pushbullet_token", validate::token, &mut cols)?;
    optional_setting(&mut f, "slack_webhook", validate::slack_webhook, &mut cols)?;
    if let Some(b) = f.bool("nofollow")? {
        cols.push(("nofollow", Col::Int(b as i64)));
    }
    let custom_distros_storage = f.bool("custom_distros_storage")?;
    if let Some(keys) = f.string_list("ssh_keys", 256)? {
        let mut clean = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            validate::ssh_key(&format!("ssh_keys[{i}]"), key)?;
            clean.push(key.trim().to_string());
        }
        let json = serde_json::to_string(&clean).map_err(|_| ApiError::internal())?;
        cols.push(("ssh_keys", Col::Text(Some(json))));
    }
    let distro = f.int("distro", 1, i64::MAX)?;
    let custom_distro = f.int("custom_distro", 1, i64::MAX)?;
    let memory = f.int("memory", MEMORY_RANGE.0, MEMORY_RANGE.1)?;
    let storage = f.int("storage", STORAGE_RANGE.0, STORAGE_RANGE.1)?;
    if matches!(memory, Patch::Clear) || matches!(storage, Patch::Clear) {
        let field = if matches!(memory, Patch::Clear) { "memory" } else { "storage" };
        return Err(ApiError::invalid(field, "must be an integer"));
    }
    let tags = f.string_list("tags", 100)?;
    let link = match f.int("link", 0, i64::MAX)? {
        Patch::Set(u) => Some(container_id_of(u).ok_or_else(|| ApiError::invalid("link", "no such container"))?),
        Patch::Clear => return Err(ApiError::invalid("link", "must be a container uid")),
        Patch::Absent => None,
    };
    let unlink = match f.int("unlink", 0, i64::MAX)? {
        Patch::Set(u) => Some(container_id_of(u).ok_or_else(|| ApiError::invalid("unlink", "no such container"))?),
        Patch::Clear => return Err(ApiError::invalid("unlink", "must be a container uid")),
        Patch::Absent => None,
    };
    let reboot = f.take("reboot").is_some();
    f.finish()?;

    // 2. Checks against the database and the write, in one transaction.
    let mut tx = state.db.write().await?;
    owned_container(&mut tx, customer.id, id).await?;
    let current = sqlx::query(
        "SELECT c.server_id, c.memory, c.storage, c.custom_distro_id, c.custom_distros_storage, \
         s.owner_id AS server_owner FROM containers c JOIN servers s ON s.id = c.server_id WHERE c.id = $1",
    )
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    let server_id = current.i64("server_id");

    match distro {
        Patch::Absent => {}
        Patch::Clear => cols.push(("distro_id", Col::NullInt)),
        Patch::Set(d) => {
            let exists =
                sqlx::query("SELECT id FROM distros WHERE id = $1").bind(d).fetch_optional(&mut **tx).await?.is_some();
            if !exists {
                return Err(ApiError::invalid("distro", format!("no distro with id {d}: see GET /api/distros/")));
            }
            cols.push(("distro_id", Col::Int(d)));
        }
    }
    let will_store = custom_distros_storage.unwrap_or(current.flag("custom_distros_storage"));
    let will_use_custom = match custom_distro {
        Patch::Absent => current.opt_i64("custom_distro_id").is_some(),
        Patch::Clear => false,
        Patch::Set(_) => true,
    };
    if will_store && will_use_custom {
        return Err(ApiError::invalid(
            if custom_distro.is_absent() { "custom_distros_storage" } else { "custom_distro" },
            "a container that stores custom distros cannot boot from one",
        ));
    }
    match custom_distro {
        Patch::Absent => {}
        Patch::Clear => cols.push(("custom_distro_id", Col::NullInt)),
        Patch::Set(cd) => {
            let usable = sqlx::query(
                "SELECT cd.id FROM custom_distros cd JOIN containers st ON st.id = cd.container_id \
                 WHERE cd.id = $1 AND st.customer_id = $2 AND st.server_id = $3 AND st.id <> $4 \
                 AND st.custom_distros_storage = 1",
            )
            .bind(cd)
            .bind(customer.id)
            .bind(server_id)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .is_some();
            if !usable {
                return Err(ApiError::invalid(
                    "custom_distro",
                    "no such custom distro stored in another of your containers on this server: see GET /api/custom_distros/<uid>",
                ));
            }
            cols.push(("custom_distro_id", Col::Int(cd)));
        }
    }
    if let Some(store) = custom_distros_storage {
        if !store && current.flag("custom_distros_storage") {
            let users = sqlx::query(
                "SELECT COUNT(*) AS n FROM containers c JOIN custom_distros cd ON cd.id = c.custom_distro_id \
                 WHERE cd.container_id = $1",
            )
            .bind(id)
            .fetch_one(&mut **tx)
            .await?
            .i64("n");
            if users > 0 {
                return Err(ApiError::conflict(format!("{users} container(s) boot from custom distros stored here"))
                    .field("custom_distros_storage"));
            }
        }
        cols.push(("custom_distros_storage", Col::Int(store as i64)));
    }
    if let (Patch::Set(_), _) | (_, Patch::Set(_)) = (&memory, &storage) {
        if current.opt_i64("server_owner") != Some(customer.id) {
            let field = if matches!(memory, Patch::Set(_)) { "memory" } else { "storage" };
            return Err(ApiError::forbidden(
                "only the owner of the container's server can resize it; ask your supplier",
            )
            .field(field));
        }
        let new_memory = if let Patch::Set(m) = memory { m } else { current.i64("memory") };
        let new_storage = if let Patch::Set(s) = storage { s } else { current.i64("storage") };
        check_capacity(&mut tx, server_id, Some(id), new_memory, new_storage).await?;
        cols.push(("memory", Col::Int(new_memory)));
        cols.push(("storage", Col::Int(new_storage)));
    }
    let mut restart = reboot;
    if let Some(to) = link {
        if to == id {
            return Err(ApiError::invalid("link", "a container cannot link to itself"));
        }
        let exists =
            sqlx::query("SELECT id FROM containers WHERE id = $1").bind(to).fetch_optional(&mut **tx).await?.is_some();
        if !exists {
            return Err(ApiError::invalid("link", "no such container"));
        }
        let already = sqlx::query("SELECT to_id FROM container_links WHERE container_id = $1 AND to_id = $2")
            .bind(id)
            .bind(to)
            .fetch_optional(&mut **tx)
            .await?
            .is_some();
        if already {
            return Err(ApiError::conflict("already linked").field("link"));
        }
        sqlx::query("INSERT INTO container_links (container_id, to_id) VALUES ($1, $2)")
            .bind(id)
            .bind(to)
            .execute(&mut **tx)
            .await?;
        restart = true;
    }
    if let Some(to) = unlink {
        let removed = sqlx::query("DELETE FROM container_links WHERE container_id = $1 AND to_id = $2")
            .bind(id)
            .bind(to)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if removed == 0 {
            return Err(ApiError::conflict("not linked").field("unlink"));
        }
        restart = true;
    }
    let spec_changed = restart || cols.iter().any(|(c, _)| *c != "note");
    if restart {
        sqlx::query("UPDATE containers SET reboot_generation = reboot_generation + 1 WHERE id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(names) = tags {
        Tagged::Container.set(&mut tx, customer.id, id, &names).await?;
    }
    if !cols.is_empty() {
        let sets: Vec<String> = cols.iter().enumerate().map(|(i, (c, _))| format!("{c} = ${}", i + 1)).collect();
        let sql = format!(
            "UPDATE containers SET {}, mtime = ${} WHERE id = ${}",
            sets.join(", "),
            cols.len() + 1,
            cols.len() + 2
        );
        let mut q = sqlx::query(&sql);
        for (_, v) in cols {
            q = match v {
                Col::Int(i) => q.bind(i),
                Col::NullInt => q.bind(None::<i64>),
                Col::Text(t) => q.bind(t),
            };
        }
        q.bind(now()).bind(id).execute(&mut **tx).await?;
    }
    if spec_changed {
        bump_server_of_container(&mut tx, id).await?;
    }
    let body = detail(&mut tx, id).await?;
    state.commit(tx).await?;
    Ok(ok(body))
}
