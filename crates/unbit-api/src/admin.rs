//! `unbit-api admin ...`: what the supplier does, straight on the database. Output is meant for
//! scripts: a single value (token, uid) on its own line, or `key=value` lines.

use crate::auth::hash_password;
use crate::crypto::{anyhow_free::Result, generate_subscription_key, random_hex, sha256_hex};
use crate::error::ApiError;
use crate::revisions::{bump_servers, bump_servers_of_customer};
use crate::routes::common::new_uuid;
use crate::routes::containers::{insert_container, MEMORY_RANGE, STORAGE_RANGE};
use crate::store::{now, Db, RowExt};
use crate::validate;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Servers (nodes).
    #[command(subcommand)]
    Server(ServerCommand),
    /// Platform distros.
    #[command(subcommand)]
    Distro(DistroCommand),
    /// Customers and their credentials.
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// Containers.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Domains mapped by the supplier (no DNS proof needed).
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Legions (clusters of servers sharing a floating address).
    #[command(subcommand)]
    Legion(LegionCommand),
    /// News shown to customers.
    #[command(subcommand)]
    News(NewsCommand),
}

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// Adds a server; prints its node token (dev-mode authentication on loopback).
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        address: String,
        #[arg(long)]
        memory: i64,
        #[arg(long)]
        storage: i64,
        /// Customer owning the whole server (dedicated server).
        #[arg(long)]
        owner: Option<String>,
        /// Lines seeding every container's etc/hosts.
        #[arg(long)]
        etc_hosts: Option<String>,
        /// Lines seeding every container's etc/resolv.conf.
        #[arg(long)]
        etc_resolv_conf: Option<String>,
    },
    /// Binds the node's TLS client certificate (PEM file or SHA-256 hex fingerprint).
    BindCert {
        #[arg(long)]
        name: String,
        #[arg(long, conflicts_with = "fingerprint")]
        cert: Option<std::path::PathBuf>,
        #[arg(long)]
        fingerprint: Option<String>,
    },
    /// Issues a new node token; the old one stops working.
    NewToken {
        #[arg(long)]
        name: String,
    },
    /// Sets the node's identity in its Legions' members file (served to every member's
    /// node-sync): its Ed25519 public key and, for ssl-cluster-domains, its X25519 one (raw,
    /// 64 hex digits each: `openssl pkey -in KEY -pubout -outform DER | tail -c 32 | od -An
    /// -tx1 | tr -d ' \n'`), and its inter-node address if not --address.
    SetClusterKeys {
        #[arg(long)]
        name: String,
        #[arg(long)]
        public_key: String,
        #[arg(long)]
        x25519_key: Option<String>,
        #[arg(long)]
        cluster_address: Option<String>,
    },
    /// Sets the node's WireGuard public key in its Legions' links members file (served to
    /// every member's node-sync, for links between containers on different nodes): base64 of
    /// 32 bytes, as `unbit-links pubkey < /etc/unbit/links/node.key` prints it. Its endpoint
    /// is the node's cluster address (set-cluster-keys), port 51820.
    SetLinksKey {
        #[arg(long)]
        name: String,
        #[arg(long)]
        public_key: String,
    },
    /// Sets or clears (no --customer) the owner of a server.
    SetOwner {
        #[arg(long)]
        name: String,
        #[arg(long)]
        customer: Option<String>,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum DistroCommand {
    /// Adds a distro; prints its id.
    Add {
        #[arg(long)]
        name: String,
        /// Directory name under the nodes' distros folder.
        #[arg(long)]
        path: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum CustomerCommand {
    /// Adds a customer with a fresh subscription key pair. Without --password one is generated
    /// and printed; with --ldap the customer authenticates against the directory only.
    Add {
        #[arg(long)]
        username: String,
        #[arg(long, conflicts_with = "ldap")]
        password: Option<String>,
        #[arg(long)]
        ldap: bool,
        #[arg(long, default_value = "")]
        email: String,
        #[arg(long, default_value = "")]
        company: String,
        #[arg(long, default_value = "")]
        vat: String,
    },
    SetPassword {
        #[arg(long)]
        username: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Prints the customer's subscription public key (PEM).
    PublicKey {
        #[arg(long)]
        username: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Adds a container; prints its uid.
    Add {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        server: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        memory: i64,
        #[arg(long)]
        storage: i64,
    },
    /// Deletes a container (supplier only; customers cannot).
    Delete {
        #[arg(long)]
        uid: i64,
    },
    /// Sets how many alarms the container keeps.
    SetMaxAlarms {
        #[arg(long)]
        uid: i64,
        #[arg(long)]
        max_alarms: i64,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum DomainCommand {
    /// Maps a domain to a customer; prints its id.
    Map {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        name: String,
    },
    Unmap {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum LegionCommand {
    /// Adds a legion; prints its id.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        address: String,
    },
    /// Adds a server to a legion.
    AddNode {
        #[arg(long)]
        legion: String,
        #[arg(long)]
        server: String,
    },
    RemoveNode {
        #[arg(long)]
        legion: String,
        #[arg(long)]
        server: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
pub enum NewsCommand {
    Add {
        #[arg(long)]
        content: String,
        #[arg(long)]
        public: bool,
    },
}

fn check(r: std::result::Result<(), ApiError>) -> Result<()> {
    r.map_err(|e| format!("{}: {}", e.field.unwrap_or_default(), e.reason.unwrap_or_default()).into())
}

async fn id_by(db: &Db, sql: &str, key: &str, what: &str) -> Result<i64> {
    sqlx::query(sql)
        .bind(key)
        .fetch_optional(&db.pool)
        .await?
        .map(|r| r.i64("id"))
        .ok_or_else(|| format!("no {what} named '{key}'").into())
}

async fn customer_id(db: &Db, username: &str) -> Result<i64> {
    id_by(db, "SELECT id FROM customers WHERE username = $1", username, "customer").await
}

async fn server_id(db: &Db, name: &str) -> Result<i64> {
    id_by(db, "SELECT id FROM servers WHERE name = $1 OR address = $1", name, "server").await
}

/// The supplier's own policy decides initial passwords (the quickstart's are six and seven
/// characters); only the one-line rule applies. Customers choosing one get the 8+ rule.
fn supplier_password(p: &str) -> std::result::Result<(), ApiError> {
    validate::line("password", p, 1024)?;
    if p.is_empty() {
        return Err(ApiError::invalid("password", "must not be empty"));
    }
    Ok(())
}

fn generated_password() -> String {
    random_hex(12)
}

pub async fn run(db: &Db, cmd: AdminCommand) -> Result<()> {
    match cmd {
        AdminCommand::Server(c) => server(db, c).await,
        AdminCommand::Distro(c) => distro(db, c).await,
        AdminCommand::Customer(c) => customer(db, c).await,
        AdminCommand::Container(c) => container(db, c).await,
        AdminCommand::Domain(c) => domain(db, c).await,
        AdminCommand::Legion(c) => legion(db, c).await,
        AdminCommand::News(NewsCommand::Add { content, public }) => {
            check(validate::note("content", &content))?;
            sqlx::query("INSERT INTO news (content, public, ctime) VALUES ($1, $2, $3)")
                .bind(content)
                .bind(public as i64)
                .bind(now())
                .execute(&db.pool)
                .await?;
            Ok(())
        }
    }
}

async fn server(db: &Db, cmd: ServerCommand) -> Result<()> {
    match cmd {
        ServerCommand::Add { name, address, memory, storage, owner, etc_hosts, etc_resolv_conf } => {
            check(validate::name("name", &name))?;
            let address = validate::ip_address("address", &address).map_err(|e| e.to_string())?;
            if memory < 1 || storage < 1 {
                return Err("memory and storage must be positive (MB)".into());
            }
            for (field, text) in [("etc_hosts", &etc_hosts), ("etc_resolv_conf", &etc_resolv_conf)] {
                if let Some(t) = text {
                    for line in t.lines() {
                        check(validate::line(field, line, 1024))?;
                    }
                }
            }
            let owner_id = match owner {
                Some(u) => Some(customer_id(db, &u).await?),
                None => None,
            };
            let token = random_hex(32);
            sqlx::query(
                "INSERT INTO servers (name, address, memory, storage, owner_id, node_token_sha256, \
                 etc_hosts, etc_resolv_conf, uuid, ctime) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&name)
            .bind(&address)
            .bind(memory)
            .bind(storage)
            .bind(owner_id)
            .bind(sha256_hex(token.as_bytes()))
            .bind(etc_hosts.unwrap_or_default())
            .bind(etc_resolv_conf.unwrap_or_default())
            .bind(new_uuid())
            .bind(now())
            .execute(&db.pool)
            .await?;
            println!("{token}");
        }
        ServerCommand::BindCert { name, cert, fingerprint } => {
            let fp = match (cert, fingerprint) {
                (Some(path), _) => crate::server::certificate_fingerprint(&std::fs::read(path)?)?,
                (None, Some(fp)) => {
                    let fp = fp.replace(':', "").to_ascii_lowercase();
                    if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err("a SHA-256 fingerprint is 64 hex digits".into());
                    }
                    fp
                }
                (None, None) => return Err("give --cert or --fingerprint".into()),
            };
            let id = server_id(db, &name).await?;
            sqlx::query("UPDATE servers SET cert_sha256 = $1 WHERE id = $2")
                .bind(&fp)
                .bind(id)
                .execute(&db.pool)
                .await?;
            println!("{fp}");
        }
        ServerCommand::NewToken { name } => {
            let id = server_id(db, &name).await?;
            let token = random_hex(32);
            sqlx::query("UPDATE servers SET node_token_sha256 = $1 WHERE id = $2")
                .bind(sha256_hex(token.as_bytes()))
                .bind(id)
                .execute(&db.pool)
                .await?;
            println!("{token}");
        }
        ServerCommand::SetClusterKeys { name, public_key, x25519_key, cluster_address } => {
            let id = server_id(db, &name).await?;
            let hex_key = |field: &str, v: &str| -> Result<String> {
                let v = v.to_ascii_lowercase();
                if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("{field}: a raw public key is 64 hex digits").into());
                }
                Ok(v)
            };
            let key = hex_key("public-key", &public_key)?;
            let x25519 = x25519_key.map(|k| hex_key("x25519-key", &k)).transpose()?;
            let address = cluster_address
                .map(|a| validate::ip_address("cluster_address", &a).map_err(|e| e.to_string()))
                .transpose()?;
            sqlx::query(
                "UPDATE servers SET cluster_key = $1, cluster_x25519_key = $2, cluster_address = $3 WHERE id = $4",
            )
            .bind(key)
            .bind(x25519)
            .bind(address)
            .bind(id)
            .execute(&db.pool)
            .await?;
        }
        ServerCommand::SetLinksKey { name, public_key } => {
            let id = server_id(db, &name).await?;
            let key = validate::wireguard_key("public-key", &public_key).map_err(|e| e.to_string())?;
            sqlx::query("UPDATE servers SET links_key = $1 WHERE id = $2").bind(key).bind(id).execute(&db.pool).await?;
        }
        ServerCommand::SetOwner { name, customer } => {
            let id = server_id(db, &name).await?;
            let owner = match customer {
                Some(u) => Some(customer_id(db, &u).await?),
                None => None,
            };
            sqlx::query("UPDATE servers SET owner_id = $1 WHERE id = $2")
                .bind(owner)
                .bind(id)
                .execute(&db.pool)
                .await?;
        }
        ServerCommand::List => {
            for r in sqlx::query("SELECT * FROM servers ORDER BY id").fetch_all(&db.pool).await? {
                println!(
                    "name={} address={} memory={} storage={} revision={} cert_sha256={}",
                    r.str("name"),
                    r.str("address"),
                    r.i64("memory"),
                    r.i64("storage"),
                    r.i64("revision"),
                    r.opt_str("cert_sha256").unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

async fn distro(db: &Db, cmd: DistroCommand) -> Result<()> {
    match cmd {
        DistroCommand::Add { name, path } => {
            check(validate::name("name", &name))?;
            if !container_spec::is_path_component(&path) {
                return Err("path must be 1-64 characters of A-Z a-z 0-9 . _ - (one directory name)".into());
            }
            let id = sqlx::query("INSERT INTO distros (name, path, uuid) VALUES ($1, $2, $3) RETURNING id")
                .bind(name)
                .bind(path)
                .bind(new_uuid())
                .fetch_one(&db.pool)
                .await?
                .i64("id");
            println!("{id}");
        }
        DistroCommand::List => {
            for r in sqlx::query("SELECT * FROM distros ORDER BY id").fetch_all(&db.pool).await? {
                println!("id={} path={} name={}", r.i64("id"), r.str("path"), r.str("name"));
            }
        }
    }
    Ok(())
}

async fn customer(db: &Db, cmd: CustomerCommand) -> Result<()> {
    match cmd {
        CustomerCommand::Add { username, password, ldap, email, company, vat } => {
            check(validate::username("username", &username))?;
            check(validate::email("email", &email))?;
            check(validate::line("company", &company, 255))?;
            check(validate::line("vat", &vat, 64))?;
            let (password, generated) = match (password, ldap) {
                (_, true) => (None, false),
                (Some(p), false) => {
                    check(supplier_password(&p))?;
                    (Some(p), false)
                }
                (None, false) => (Some(generated_password()), true),
            };
            let hash = password.as_deref().map(hash_password);
            let keys = generate_subscription_key()?;
            let uuid = new_uuid();
            let t = now();
            sqlx::query(
                "INSERT INTO customers (username, password_hash, email, company, vat, uuid, \
                 rsa_private_pem, rsa_public_pem, ctime, mtime) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
            )
            .bind(&username)
            .bind(hash)
            .bind(email)
            .bind(company)
            .bind(vat)
            .bind(&uuid)
            .bind(keys.private_pem)
            .bind(keys.public_pem)
            .bind(t)
            .execute(&db.pool)
            .await?;
            println!("username={username}");
            if generated {
                println!("password={}", password.unwrap_or_default());
            }
            println!("uuid={uuid}");
        }
        CustomerCommand::SetPassword { username, password } => {
            let id = customer_id(db, &username).await?;
            let (password, generated) = match password {
                Some(p) => {
                    check(supplier_password(&p))?;
                    (p, false)
                }
                None => (generated_password(), true),
            };
            sqlx::query("UPDATE customers SET password_hash = $1, mtime = $2 WHERE id = $3")
                .bind(hash_password(&password))
                .bind(now())
                .bind(id)
                .execute(&db.pool)
                .await?;
            if generated {
                println!("password={password}");
            }
        }
        CustomerCommand::PublicKey { username } => {
            let id = customer_id(db, &username).await?;
            let pem = sqlx::query("SELECT rsa_public_pem FROM customers WHERE id = $1")
                .bind(id)
                .fetch_one(&db.pool)
                .await?
                .str("rsa_public_pem");
            print!("{pem}");
        }
        CustomerCommand::List => {
            for r in sqlx::query("SELECT * FROM customers ORDER BY id").fetch_all(&db.pool).await? {
                println!("username={} uuid={} email={}", r.str("username"), r.str("uuid"), r.str("email"));
            }
        }
    }
    Ok(())
}

async fn container(db: &Db, cmd: ContainerCommand) -> Result<()> {
    match cmd {
        ContainerCommand::Add { customer, server, name, memory, storage } => {
            check(validate::name("name", &name))?;
            if !(MEMORY_RANGE.0..=MEMORY_RANGE.1).contains(&memory) {
                return Err(format!("memory must be {}..={} MB", MEMORY_RANGE.0, MEMORY_RANGE.1).into());
            }
            if !(STORAGE_RANGE.0..=STORAGE_RANGE.1).contains(&storage) {
                return Err(format!("storage must be {}..={} MB", STORAGE_RANGE.0, STORAGE_RANGE.1).into());
            }
            let customer_id = customer_id(db, &customer).await?;
            let server_id = server_id(db, &server).await?;
            let mut tx = db.write().await?;
            let id = insert_container(&mut tx, customer_id, server_id, &name, memory, storage)
                .await
                .map_err(|e| e.to_string())?;
            tx.commit().await?;
            println!("{}", crate::specs::uid_of(id));
        }
        ContainerCommand::Delete { uid } => {
            let id = crate::specs::container_id_of(uid).ok_or("not a container uid")?;
            let mut tx = db.write().await?;
            let server = sqlx::query("SELECT server_id FROM containers WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or("no such container")?
                .i64("server_id");
            for sql in [
                "UPDATE containers SET custom_distro_id = NULL WHERE custom_distro_id IN (SELECT id FROM custom_distros WHERE container_id = $1)",
                "DELETE FROM containers WHERE id = $1",
            ] {
                sqlx::query(sql).bind(id).execute(&mut **tx).await?;
            }
            bump_servers(&mut tx, &[server]).await?;
            tx.commit().await?;
        }
        ContainerCommand::SetMaxAlarms { uid, max_alarms } => {
            let id = crate::specs::container_id_of(uid).ok_or("not a container uid")?;
            if !(1..=100_000).contains(&max_alarms) {
                return Err("max-alarms must be 1..=100000".into());
            }
            sqlx::query("UPDATE containers SET max_alarms = $1 WHERE id = $2")
                .bind(max_alarms)
                .bind(id)
                .execute(&db.pool)
                .await?;
        }
        ContainerCommand::List => {
            for r in sqlx::query(
                "SELECT c.id, c.name, cu.username, s.name AS server FROM containers c \
                 JOIN customers cu ON cu.id = c.customer_id JOIN servers s ON s.id = c.server_id ORDER BY c.id",
            )
            .fetch_all(&db.pool)
            .await?
            {
                println!(
                    "uid={} customer={} server={} name={}",
                    crate::specs::uid_of(r.i64("id")),
                    r.str("username"),
                    r.str("server"),
                    r.str("name")
                );
            }
        }
    }
    Ok(())
}

async fn domain(db: &Db, cmd: DomainCommand) -> Result<()> {
    match cmd {
        DomainCommand::Map { customer, name } => {
            let name = validate::domain("name", &name).map_err(|e| e.to_string())?;
            let customer_id = customer_id(db, &customer).await?;
            let mut tx = db.write().await?;
            let t = now();
            let id = sqlx::query(
                "INSERT INTO domains (name, customer_id, uuid, ctime, mtime) VALUES ($1, $2, $3, $4, $4) RETURNING id",
            )
            .bind(&name)
            .bind(customer_id)
            .bind(new_uuid())
            .bind(t)
            .fetch_one(&mut **tx)
            .await?
            .i64("id");
            bump_servers_of_customer(&mut tx, customer_id).await?;
            tx.commit().await?;
            println!("{id}");
        }
        DomainCommand::Unmap { name } => {
            let name = validate::domain("name", &name).map_err(|e| e.to_string())?;
            let mut tx = db.write().await?;
            let customer_id = sqlx::query("SELECT customer_id FROM domains WHERE name = $1")
                .bind(&name)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or("no such domain")?
                .i64("customer_id");
            sqlx::query("DELETE FROM domains WHERE name = $1").bind(&name).execute(&mut **tx).await?;
            bump_servers_of_customer(&mut tx, customer_id).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

async fn legion(db: &Db, cmd: LegionCommand) -> Result<()> {
    match cmd {
        LegionCommand::Add { name, address } => {
            check(validate::name("name", &name))?;
            let address = validate::ip_address("address", &address).map_err(|e| e.to_string())?;
            let id = sqlx::query("INSERT INTO legions (name, address, uuid) VALUES ($1, $2, $3) RETURNING id")
                .bind(name)
                .bind(address)
                .bind(new_uuid())
                .fetch_one(&db.pool)
                .await?
                .i64("id");
            println!("{id}");
        }
        LegionCommand::AddNode { legion, server } => {
            let legion_id = id_by(db, "SELECT id FROM legions WHERE name = $1", &legion, "legion").await?;
            let server_id = server_id(db, &server).await?;
            sqlx::query("INSERT INTO legion_nodes (legion_id, server_id) VALUES ($1, $2)")
                .bind(legion_id)
                .bind(server_id)
                .execute(&db.pool)
                .await?;
        }
        LegionCommand::RemoveNode { legion, server } => {
            let legion_id = id_by(db, "SELECT id FROM legions WHERE name = $1", &legion, "legion").await?;
            let server_id = server_id(db, &server).await?;
            sqlx::query("DELETE FROM legion_nodes WHERE legion_id = $1 AND server_id = $2")
                .bind(legion_id)
                .bind(server_id)
                .execute(&db.pool)
                .await?;
        }
        LegionCommand::List => {
            for l in sqlx::query("SELECT * FROM legions ORDER BY id").fetch_all(&db.pool).await? {
                let nodes: Vec<String> = sqlx::query(
                    "SELECT s.name FROM legion_nodes n JOIN servers s ON s.id = n.server_id WHERE n.legion_id = $1 ORDER BY s.id",
                )
                .bind(l.i64("id"))
                .fetch_all(&db.pool)
                .await?
                .iter()
                .map(|r| r.str("name"))
                .collect();
                println!("name={} address={} nodes={}", l.str("name"), l.str("address"), nodes.join(","));
            }
        }
    }
    Ok(())
}
