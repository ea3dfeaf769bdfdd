//! `unbit-api serve ...` runs the control API; `unbit-api admin ...` is the supplier's tool.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use unbit_api::admin::{self, AdminCommand};
use unbit_api::auth::Authenticator;
use unbit_api::dns_proof::DnsProof;
use unbit_api::ldap::LdapBackend;
use unbit_api::revisions::Revisions;
use unbit_api::server::{self, TlsFiles};
use unbit_api::state::AppState;
use unbit_api::store::Db;

#[derive(Parser, Debug)]
#[command(name = "unbit-api", version, about = "The uwsgi.it control API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serves the customer API under /api/ and the node endpoints under /api/node/v1/.
    Serve(ServeArgs),
    /// Supplier administration straight on the database.
    Admin {
        /// SQLite file path or postgres:// URL.
        #[arg(long)]
        db: String,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// SQLite file path (created if missing) or postgres:// URL.
    #[arg(long)]
    db: String,
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA that signs the nodes' client certificates (mTLS node identity).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// DNS server for the domain TXT proof (default: the system resolver).
    #[arg(long)]
    dns_resolver: Option<SocketAddr>,
    /// LDAP URL for customers without a local password, e.g. ldap://127.0.0.1:389.
    #[arg(long, requires = "ldap_dn_template")]
    ldap_url: Option<String>,
    /// Bind DN with {} for the user name, e.g. uid={},ou=people,dc=example,dc=org.
    #[arg(long, requires = "ldap_url")]
    ldap_dn_template: Option<String>,
    /// Seconds a node's long poll is held when nothing changes.
    #[arg(long, default_value_t = 25)]
    long_poll_secs: u64,
    /// Database connections in the pool.
    #[arg(long, default_value_t = 16)]
    db_connections: u32,
    /// Metric samples are kept for today and this many UTC days before it; older ones are
    /// deleted at start and then daily. 0 keeps them forever.
    #[arg(long, default_value_t = unbit_api::retention::DEFAULT_DAYS)]
    metrics_retention_days: u32,
}

fn main() {
    let cli = Cli::parse();
    // Admin commands print values for scripts: only warnings go to stderr.
    let is_admin = matches!(cli.command, Command::Admin { .. });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UNBIT_API_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if is_admin { "warn" } else { "info" })),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Admin { db, command } => {
                let db = Db::open_with(&db, 2).await?;
                admin::run(&db, command).await
            }
        }
    });
    if let Err(e) = result {
        eprintln!("unbit-api: {e}");
        std::process::exit(1);
    }
}

async fn serve(args: ServeArgs) -> unbit_api::crypto::anyhow_free::Result<()> {
    let db = Db::open_with(&args.db, args.db_connections).await?;
    let ldap = match (args.ldap_url, args.ldap_dn_template) {
        (Some(url), Some(template)) => Some(LdapBackend::new(url, template)?),
        _ => None,
    };
    let db = Arc::new(db);
    tokio::spawn(unbit_api::retention::daily(db.clone(), args.metrics_retention_days));
    let state = AppState {
        db,
        auth: Arc::new(Authenticator::new(ldap)),
        dns: Arc::new(DnsProof::new(args.dns_resolver)?),
        revisions: Arc::new(Revisions::default()),
        long_poll: Duration::from_secs(args.long_poll_secs),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(server::tls_acceptor(&TlsFiles { cert, key, client_ca: args.client_ca.as_deref() })?)
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        tls = tls.is_some(),
        "unbit-api listening"
    );
    let app = unbit_api::routes::router(state);
    tokio::select! {
        _ = server::serve(listener, tls, app) => {}
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
