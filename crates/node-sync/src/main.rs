//! `unbit-node-sync [--settings FILE] --api URL --state-dir DIR [--domains-file FILE]
//!   (--cert PEM --key PEM --ca PEM | --token-file FILE | --token TOKEN) [--max-removals N]
//!   [--long-poll SECS] [--ssh-keys-dir DIR] [--users-dir DIR] [--portmappings-file FILE]
//!   [--legion-members-file FILE] [--links-members-file FILE] [--once]`
//!
//! `--settings FILE` gives the API connection (`api`, `cert`, `key`, `ca`, `token-file`) from a
//! file instead (see [`node_sync::settings`]), so the Emperor's command line is the same on
//! every node; a value may come from the file or the command line, not both. `--token-file`
//! keeps the dev-mode token out of the command line, which every local user can read in `ps`.
//! `--ssh-keys-dir` and `--users-dir` (`/var/lib/unbit/ssh-keys`, `/var/lib/extrausers`) keep
//! the customer sshd's keys and users in step with the folder (see [`node_sync::access`]).
//! `--portmappings-file` (`/var/lib/unbit/portmappings.json`) keeps this node's port mappings
//! (dedicated servers: public port -> container address and port) for the containers plugin's
//! firewall, polled like the domains. `--legion-members-file` (`/etc/unbit/legion/members.json`,
//! on the nodes of a Legion) keeps the Legion's members file (names, addresses, public keys)
//! for the cluster instance, polled the same way; `--links-members-file`
//! (`/etc/unbit/links/members.json`) the links members file (each member's WireGuard endpoint,
//! public key and containers) for `unbit-links` (vassals-examples/legion/links.ini). The
//! node's loopboxes are polled the same way into the state dir's `loopboxes.json`, which the
//! containers plugin mounts from.
//! Run by the node Emperor (`attach-daemon2`), which restarts it if it dies.

use node_sync::access;
use node_sync::client::{Answer, Api, MembersFile, NodeAuth};
use node_sync::folder;
use node_sync::settings::{self, Setting};
use std::path::PathBuf;
use std::time::Duration;

struct Args {
    api: String,
    state_dir: PathBuf,
    domains_file: Option<PathBuf>,
    portmappings_file: Option<PathBuf>,
    legion_members_file: Option<PathBuf>,
    links_members_file: Option<PathBuf>,
    ssh_keys_dir: Option<PathBuf>,
    users_dir: Option<PathBuf>,
    auth: NodeAuth,
    max_removals: usize,
    long_poll: Duration,
    once: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut api, mut state_dir, mut domains_file, mut token) = (None, None, None, None);
    let (mut cert, mut key, mut ca, mut token_file, mut settings_file) = (None, None, None, None, None);
    let (mut max_removals, mut long_poll, mut once) = (5, 25, false);
    let (mut ssh_keys_dir, mut users_dir, mut portmappings_file) = (None, None, None);
    let (mut legion_members_file, mut links_members_file) = (None, None);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--settings" => settings_file = Some(PathBuf::from(value()?)),
            "--api" => api = Some(value()?),
            "--state-dir" => state_dir = Some(PathBuf::from(value()?)),
            "--domains-file" => domains_file = Some(PathBuf::from(value()?)),
            "--portmappings-file" => portmappings_file = Some(PathBuf::from(value()?)),
            "--legion-members-file" => legion_members_file = Some(PathBuf::from(value()?)),
            "--links-members-file" => links_members_file = Some(PathBuf::from(value()?)),
            "--ssh-keys-dir" => ssh_keys_dir = Some(PathBuf::from(value()?)),
            "--users-dir" => users_dir = Some(PathBuf::from(value()?)),
            "--token" => token = Some(value()?),
            "--token-file" => token_file = Some(value()?),
            "--cert" => cert = Some(value()?),
            "--key" => key = Some(value()?),
            "--ca" => ca = Some(value()?),
            "--max-removals" => max_removals = value()?.parse().map_err(|e| format!("--max-removals: {e}"))?,
            "--long-poll" => long_poll = value()?.parse().map_err(|e| format!("--long-poll: {e}"))?,
            "--once" => once = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if let Some(path) = &settings_file {
        let file = settings::read(path)?;
        let merge = |slot: &mut Option<String>, from: Option<Setting>, name: &str| match (&slot, from) {
            (Some(_), Some(s)) => Err(format!(
                "{} line {}: `{name}` is also given as --{name}; give it in one place",
                path.display(),
                s.line
            )),
            (None, Some(s)) => {
                *slot = Some(s.value);
                Ok(())
            }
            (_, None) => Ok(()),
        };
        merge(&mut api, file.api, "api")?;
        merge(&mut cert, file.cert, "cert")?;
        merge(&mut key, file.key, "key")?;
        merge(&mut ca, file.ca, "ca")?;
        merge(&mut token_file, file.token_file, "token-file")?;
    }
    if let Some(path) = token_file {
        if token.is_some() {
            return Err("give either --token-file or --token, not both".into());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("--token-file {path}: {e}"))?;
        token = Some(text.trim().to_string());
    }
    let read = |p: String| std::fs::read(&p).map_err(|e| format!("{p}: {e}"));
    let auth = match (token, cert, key, ca) {
        (Some(t), None, None, None) => NodeAuth::Token(t),
        (None, Some(c), Some(k), Some(a)) => NodeAuth::Tls { cert_pem: read(c)?, key_pem: read(k)?, ca_pem: read(a)? },
        _ => return Err(
            "give either --token-file (or --token), or --cert, --key and --ca (on the command line or in --settings)"
                .into(),
        ),
    };
    Ok(Args {
        api: api.ok_or("--api is required")?,
        state_dir: state_dir.ok_or("--state-dir is required")?,
        domains_file,
        portmappings_file,
        legion_members_file,
        links_members_file,
        ssh_keys_dir,
        users_dir,
        auth,
        max_removals,
        long_poll: Duration::from_secs(long_poll),
        once,
    })
}

fn log(msg: &str) {
    eprintln!("[unbit-node-sync] {msg}");
}

fn apply(args: &Args, answer: &Answer) {
    let mut removed = Vec::new();
    for (uid, why) in &answer.unreadable {
        log(&format!(
            "container {}: unusable spec from the API, keeping its last good one: {why}",
            uid.map_or("?".into(), |u| u.to_string())
        ));
    }
    let keep: Vec<u32> = answer.unreadable.iter().filter_map(|(uid, _)| *uid).collect();
    match folder::apply(&args.state_dir, &answer.specs, &keep, args.max_removals) {
        Ok(r) => {
            for uid in &r.written {
                log(&format!("container {uid}: spec updated"));
            }
            for uid in &r.removed {
                log(&format!("container {uid}: no longer on this node, spec removed"));
            }
            removed = r.removed;
            if !r.held_back.is_empty() {
                log(&format!(
                    "holding back the removal of {:?} (empty answer, or over {} removals in one pass)",
                    r.held_back, args.max_removals
                ));
            }
            for why in &r.invalid {
                log(&format!("{why}; keeping its last good spec"));
            }
        }
        Err(e) => log(&format!("cannot update {}: {e}", args.state_dir.display())),
    }
    sync_access(args, &removed);
}

/// The customer sshd's keys and users, from the folder as it now is; `removed` are the
/// containers this pass removed from it.
fn sync_access(args: &Args, removed: &[u32]) {
    if args.ssh_keys_dir.is_none() && args.users_dir.is_none() {
        return;
    }
    let logins = match access::logins(&args.state_dir) {
        Ok(l) => l,
        Err(e) => {
            // Keys stay as they were: the folder they come from could not be read at all.
            log(&format!("ssh access: cannot read {}: {e}", args.state_dir.display()));
            return;
        }
    };
    for why in &logins.problems {
        log(why);
    }
    if let Some(dir) = &args.ssh_keys_dir {
        match access::write_keys(dir, &logins) {
            Ok(r) => {
                for uid in &r.written {
                    log(&format!("container {uid}: ssh keys updated"));
                }
                for uid in &r.removed {
                    log(&format!("container {uid}: ssh keys removed (container removed or not deployable)"));
                }
            }
            Err(e) => log(&format!("ssh keys: {e}")),
        }
    }
    if let Some(dir) = &args.users_dir {
        let present = logins.keys.keys().copied().collect();
        match access::write_users(dir, &present, removed) {
            Ok(files) if !files.is_empty() => log(&format!("container users updated in {} ({files:?})", dir.display())),
            Ok(_) => {}
            Err(e) => log(&format!("container users: {e}")),
        }
    }
}

/// Where the node's loopboxes go in the state dir (the spec folder): the containers plugin
/// reads them there (`unbit_containers::loopboxes::FILE`).
const LOOPBOXES_FILE: &str = "loopboxes.json";

/// One poll of a list the node keeps as a file (domains, port mappings, loopboxes, the
/// Legion's members, the links members): written atomically when it changed; on an API error the last good file
/// stays.
fn sync_file(what: &str, fetched: Result<Vec<u8>, String>, file: &std::path::Path, mode: u32) {
    match fetched {
        Ok(bytes) => match folder::write_if_changed(file, &bytes, mode) {
            Ok(true) => log(&format!("{what} updated in {}", file.display())),
            Ok(false) => {}
            Err(e) => log(&format!("cannot write {}: {e}", file.display())),
        },
        Err(e) => log(&format!("{what}: {e}; keeping the last good list")),
    }
}

/// [`sync_file`] for a members file; the servers the API left out of it are logged when they
/// change (the file is polled every 2 seconds), `said` being what was logged last.
fn sync_members(what: &str, fetched: Result<MembersFile, String>, file: &std::path::Path, said: &mut Vec<String>) {
    let fetched = fetched.map(|m| {
        if m.skipped != *said {
            for s in &m.skipped {
                log(&format!("{what}: the API left a server out of {}: {s}", file.display()));
            }
            *said = m.skipped;
        }
        m.bytes
    });
    sync_file(what, fetched, file, folder::DOMAINS_MODE);
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        log(&e);
        std::process::exit(2)
    });
    let api = Api::new(&args.api, args.auth.clone(), args.long_poll).unwrap_or_else(|e| {
        log(&e);
        std::process::exit(2)
    });
    {
        // None has a long poll: a light poll every 2 s keeps changes "within seconds".
        let lists_api = Api::new(&args.api, args.auth.clone(), args.long_poll).expect("same settings as above");
        let (domains, portmappings) = (args.domains_file.clone(), args.portmappings_file.clone());
        let (members, links) = (args.legion_members_file.clone(), args.links_members_file.clone());
        let loopboxes = args.state_dir.join(LOOPBOXES_FILE);
        // The servers the API left out of each members file, as last logged.
        let (mut members_skipped, mut links_skipped) = (Vec::new(), Vec::new());
        let mut poll = move || {
            sync_file("loopboxes", lists_api.loopboxes(), &loopboxes, folder::SPEC_MODE);
            if let Some(file) = &domains {
                sync_file("domains", lists_api.domains(), file, folder::DOMAINS_MODE);
            }
            if let Some(file) = &portmappings {
                sync_file("port mappings", lists_api.portmappings(), file, folder::DOMAINS_MODE);
            }
            if let Some(file) = &members {
                sync_members("legion members", lists_api.legion_members(), file, &mut members_skipped);
            }
            if let Some(file) = &links {
                sync_members("links members", lists_api.links_members(), file, &mut links_skipped);
            }
        };
        if args.once {
            poll();
        } else {
            std::thread::spawn(move || loop {
                poll();
                std::thread::sleep(Duration::from_secs(2));
            });
        }
    }
    // The folder is the node's last good state: its logins hold while the API is unreachable.
    sync_access(&args, &[]);
    let mut since = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        match api.containers(since) {
            Ok(answer) => {
                apply(&args, &answer);
                since = Some(answer.revision);
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                log(&format!("{e}; the node keeps its last good state, retrying in {}s", backoff.as_secs()));
                if args.once {
                    std::process::exit(1);
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
        if args.once {
            break;
        }
    }
}
