//! Schema migrations, applied in order at start-up inside one transaction each. A migration is
//! written once with `{id}` for the auto-increment primary key, which is the only type that
//! differs between SQLite and PostgreSQL here (SQLite's AUTOINCREMENT also guarantees a
//! deleted container's uid is never handed out again).

use super::{Backend, Db};
use crate::crypto::anyhow_free::Result;

const MIGRATIONS: &[(i64, &str)] = &[(1, V1), (2, V2), (3, V3), (4, V4)];

const V1: &str = r#"
CREATE TABLE customers (
    id {id},
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    email TEXT NOT NULL DEFAULT '',
    company TEXT NOT NULL DEFAULT '',
    vat TEXT NOT NULL DEFAULT '',
    uuid TEXT NOT NULL UNIQUE,
    rsa_private_pem TEXT NOT NULL,
    rsa_public_pem TEXT NOT NULL,
    ctime BIGINT NOT NULL,
    mtime BIGINT NOT NULL
);
CREATE TABLE servers (
    id {id},
    name TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL UNIQUE,
    memory BIGINT NOT NULL,
    storage BIGINT NOT NULL,
    owner_id BIGINT REFERENCES customers(id),
    node_token_sha256 TEXT NOT NULL,
    cert_sha256 TEXT UNIQUE,
    etc_hosts TEXT NOT NULL DEFAULT '',
    etc_resolv_conf TEXT NOT NULL DEFAULT '',
    revision BIGINT NOT NULL DEFAULT 1,
    portmappings_revision BIGINT NOT NULL DEFAULT 1,
    uuid TEXT NOT NULL UNIQUE,
    ctime BIGINT NOT NULL
);
CREATE TABLE legions (
    id {id},
    name TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL,
    uuid TEXT NOT NULL UNIQUE
);
CREATE TABLE legion_nodes (
    legion_id BIGINT NOT NULL REFERENCES legions(id) ON DELETE CASCADE,
    server_id BIGINT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    PRIMARY KEY (legion_id, server_id)
);
CREATE TABLE distros (
    id {id},
    name TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL UNIQUE,
    uuid TEXT NOT NULL UNIQUE
);
CREATE TABLE containers (
    id {id},
    name TEXT NOT NULL,
    customer_id BIGINT NOT NULL REFERENCES customers(id),
    server_id BIGINT NOT NULL REFERENCES servers(id),
    memory BIGINT NOT NULL,
    storage BIGINT NOT NULL,
    distro_id BIGINT REFERENCES distros(id),
    custom_distro_id BIGINT,
    ssh_keys TEXT NOT NULL DEFAULT '[]',
    note TEXT NOT NULL DEFAULT '',
    quota_threshold BIGINT NOT NULL DEFAULT 90,
    alarm_freq BIGINT NOT NULL DEFAULT 60,
    jid TEXT,
    jid_secret TEXT,
    jid_destinations TEXT,
    pushover_user TEXT,
    pushover_token TEXT,
    pushover_sound TEXT,
    pushbullet_token TEXT,
    slack_webhook TEXT,
    nofollow BIGINT NOT NULL DEFAULT 0,
    custom_distros_storage BIGINT NOT NULL DEFAULT 0,
    dmz BIGINT NOT NULL DEFAULT 0,
    max_alarms BIGINT NOT NULL DEFAULT 100,
    alarm_key_sha256 TEXT,
    reboot_generation BIGINT NOT NULL DEFAULT 0,
    uuid TEXT NOT NULL UNIQUE,
    ctime BIGINT NOT NULL,
    mtime BIGINT NOT NULL
);
CREATE INDEX containers_customer ON containers(customer_id);
CREATE INDEX containers_server ON containers(server_id);
CREATE TABLE custom_distros (
    id {id},
    container_id BIGINT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    uuid TEXT NOT NULL UNIQUE,
    UNIQUE (container_id, name),
    UNIQUE (container_id, path)
);
CREATE TABLE container_links (
    container_id BIGINT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    to_id BIGINT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    PRIMARY KEY (container_id, to_id)
);
CREATE TABLE tags (
    id {id},
    customer_id BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    UNIQUE (customer_id, name)
);
CREATE TABLE domains (
    id {id},
    name TEXT NOT NULL UNIQUE,
    customer_id BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    note TEXT NOT NULL DEFAULT '',
    uuid TEXT NOT NULL UNIQUE,
    ctime BIGINT NOT NULL,
    mtime BIGINT NOT NULL
);
CREATE INDEX domains_customer ON domains(customer_id);
CREATE TABLE loopboxes (
    id {id},
    container_id BIGINT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    filename TEXT NOT NULL,
    mountpoint TEXT NOT NULL,
    ro BIGINT NOT NULL DEFAULT 0,
    UNIQUE (container_id, filename),
    UNIQUE (container_id, mountpoint)
);
CREATE TABLE container_tags (
    tag_id BIGINT NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
    container_id BIGINT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    PRIMARY KEY (tag_id, container_id)
);
CREATE INDEX container_tags_container ON container_tags(container_id);
CREATE TABLE domain_tags (
    tag_id BIGINT NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
    domain_id BIGINT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    PRIMARY KEY (tag_id, domain_id)
);
CREATE INDEX domain_tags_domain ON domain_tags(domain_id);
CREATE TABLE loopbox_tags (
    tag_id BIGINT NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
    loopbox_id BIGINT NOT NULL REFERENCES loopboxes(id) ON DELETE CASCADE,
    PRIMARY KEY (tag_id, loopbox_id)
);
CREATE INDEX loopbox_tags_loopbox ON loopbox_tags(loopbox_id);
CREATE TABLE alarms (
    id {id},
    container_id BIGINT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    customer_id BIGINT NOT NULL,
    unix BIGINT NOT NULL,
    level BIGINT NOT NULL,
    color TEXT NOT NULL DEFAULT '#ffffff',
    msg TEXT NOT NULL,
    line BIGINT,
    func TEXT,
    filename TEXT,
    class TEXT,
    vassal TEXT
);
CREATE INDEX alarms_container_time ON alarms(container_id, unix, id);
CREATE INDEX alarms_customer_time ON alarms(customer_id, unix, id);
CREATE TABLE container_metrics (
    container_id BIGINT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    unix BIGINT NOT NULL,
    value BIGINT NOT NULL
);
CREATE INDEX container_metrics_lookup ON container_metrics(container_id, metric, unix);
CREATE TABLE domain_metrics (
    domain_id BIGINT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    container_id BIGINT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    unix BIGINT NOT NULL,
    value BIGINT NOT NULL
);
CREATE INDEX domain_metrics_lookup ON domain_metrics(domain_id, metric, unix);
CREATE TABLE news (
    id {id},
    content TEXT NOT NULL,
    public BIGINT NOT NULL DEFAULT 0,
    ctime BIGINT NOT NULL
);
CREATE TABLE portmaps (
    id {id},
    server_id BIGINT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    container_id BIGINT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    proto TEXT NOT NULL,
    public_port BIGINT NOT NULL,
    private_port BIGINT NOT NULL,
    UNIQUE (server_id, proto, public_port)
);
"#;

/// Automatic certificates (issue 12): `off` (the default, HTTPS only with the customer's own
/// `ssl-domain` files) or `auto` (the node's issuer gets one through ACME).
const V2: &str = r#"
ALTER TABLE domains ADD COLUMN tls TEXT NOT NULL DEFAULT 'off'
"#;

/// The Legion's members file (issue 17, `GET /api/node/v1/legion/members`): a server's
/// inter-node address (NULL: its `address`) and its cluster keys, raw public keys in hex
/// (Ed25519: signs its announces; X25519: certificates are sealed to it). NULL until the
/// supplier sets them (`admin server set-cluster-keys`).
const V3: &str = r#"
ALTER TABLE servers ADD COLUMN cluster_address TEXT;
ALTER TABLE servers ADD COLUMN cluster_key TEXT;
ALTER TABLE servers ADD COLUMN cluster_x25519_key TEXT
"#;

/// The links members file (issue 17, links across nodes, `GET /api/node/v1/links/members`): a
/// server's WireGuard public key (base64, as `unbit-links pubkey` prints it). NULL until the
/// supplier sets it (`admin server set-links-key`); its endpoint is its cluster address.
const V4: &str = r#"
ALTER TABLE servers ADD COLUMN links_key TEXT
"#;

fn render(sql: &str, backend: Backend) -> String {
    let id = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGSERIAL PRIMARY KEY",
    };
    sql.replace("{id}", id)
}

pub async fn run(db: &Db) -> Result<()> {
    let mut tx = db.pool.begin().await?;
    if db.backend == Backend::Postgres {
        // Several API hosts may start at once: one migrates, the others wait here.
        sqlx::query("SELECT pg_advisory_xact_lock(7369221)").execute(&mut *tx).await?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)").execute(&mut *tx).await?;
    tx.commit().await?;
    for (version, sql) in MIGRATIONS {
        let mut tx = db.pool.begin().await?;
        if db.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7369221)").execute(&mut *tx).await?;
        }
        let applied: Option<(i64,)> = sqlx::query_as("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(*version)
            .fetch_optional(&mut *tx)
            .await?;
        if applied.is_some() {
            continue;
        }
        for statement in render(sql, db.backend).split(';') {
            if !statement.trim().is_empty() {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
        }
        sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)").bind(*version).execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::info!(version, "applied schema migration");
    }
    Ok(())
}
