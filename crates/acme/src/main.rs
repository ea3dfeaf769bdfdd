//! `unbit-acme --settings FILE [--domains-file FILE] [--store DIR] [--challenge-socket PATH]
//!   [--socket-group GROUP] [--containers-dir DIR] [--retry-base SECS] [--retry-max SECS]
//!   [--order-timeout SECS] [--retire-after DAYS] [--once]`
//!
//! `unbit-acme renew --store DIR NAME`: orders a new certificate for NAME at the running
//! issuer's next look (within a second), whatever its dates say.
//!
//! Defaults: `--domains-file /var/lib/unbit/domains.json`, `--store /var/lib/unbit/acme`,
//! `--challenge-socket /run/unbit-acme/http-01.sock`, `--retry-base 300`, `--retry-max 21600`,
//! `--order-timeout 120`, `--retire-after 30`.

use acme::daemon::{self, Config};
use acme::settings;
use acme::store::Store;
use std::path::PathBuf;
use std::time::Duration;

fn fail(msg: &str) -> ! {
    daemon::log(msg);
    std::process::exit(2)
}

fn renew(args: &[String]) -> Result<(), String> {
    let (mut store, mut name) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--store" => store = Some(PathBuf::from(it.next().ok_or("--store needs a value")?)),
            other if name.is_none() && !other.starts_with('-') => name = Some(other.to_ascii_lowercase()),
            other => return Err(format!("renew: unexpected argument {other}")),
        }
    }
    let store = Store::open(&store.unwrap_or_else(|| PathBuf::from("/var/lib/unbit/acme")))?;
    let name = name.ok_or("renew: which name?")?;
    if !domain_table_name(&name) || !store.name_dir(&name).join(acme::store::CURRENT).exists() {
        return Err(format!("renew: no certificate for {name} in {}", store.root().display()));
    }
    store.request_renewal(&name)?;
    println!("{name}: renewal requested");
    Ok(())
}

fn domain_table_name(name: &str) -> bool {
    !name.starts_with('.') && domain_table::is_domain_name(name)
}

fn group_id(name: &str) -> Result<u32, String> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("--socket-group {name}: no such group")),
        Err(e) => Err(format!("--socket-group {name}: {e}")),
    }
}

fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut settings_file = None;
    let mut cfg = Config {
        settings: Default::default(),
        domains_file: domain_table::DEFAULT_PATH.into(),
        store: "/var/lib/unbit/acme".into(),
        socket: "/run/unbit-acme/http-01.sock".into(),
        socket_gid: None,
        containers_dir: None,
        retry_base: Duration::from_secs(300),
        retry_max: Duration::from_secs(6 * 3600),
        order_timeout: Duration::from_secs(120),
        retire_grace: Duration::from_secs(30 * 86_400),
        once: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        let secs = |v: String| v.parse::<u64>().map(Duration::from_secs).map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--settings" => settings_file = Some(PathBuf::from(value()?)),
            "--domains-file" => cfg.domains_file = value()?.into(),
            "--store" => cfg.store = value()?.into(),
            "--challenge-socket" => cfg.socket = value()?.into(),
            "--socket-group" => cfg.socket_gid = Some(group_id(&value()?)?),
            "--containers-dir" => cfg.containers_dir = Some(value()?.into()),
            "--retry-base" => cfg.retry_base = secs(value()?)?,
            "--retry-max" => cfg.retry_max = secs(value()?)?,
            "--order-timeout" => cfg.order_timeout = secs(value()?)?,
            "--retire-after" => cfg.retire_grace = secs(value()?)? * 86_400,
            "--once" => cfg.once = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let file = settings_file.ok_or("--settings FILE is required (the CA: directory = URL or off)")?;
    cfg.settings = settings::read(&file)?;
    if cfg.retry_base.is_zero() || cfg.retry_max < cfg.retry_base {
        return Err("--retry-base must be at least 1 and at most --retry-max".into());
    }
    Ok(cfg)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("renew") {
        if let Err(e) = renew(&args[1..]) {
            fail(&e);
        }
        return;
    }
    let cfg = parse_args(&args).unwrap_or_else(|e| fail(&e));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("async runtime: {e}")));
    if let Err(e) = runtime.block_on(daemon::run(cfg)) {
        fail(&e);
    }
}
