//! `unbit-ssh-broker --socket PATH [--max-sessions N]`: starts ssh
//! sessions inside running containers for the enter tool (see `ssh_session::broker`). Run by
//! the node Emperor (`attach-daemon2` in emperor.ini): it finds containers among its parent's
//! children and stops when that parent goes away.

use ssh_session::broker::{log, serve, Settings};

fn parse(args: &[String]) -> Result<Settings, String> {
    let mut settings = Settings { socket: "/run/unbit-ssh/broker.sock".into(), max_sessions: 32 };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--socket" => settings.socket = value()?.into(),
            "--max-sessions" => {
                settings.max_sessions =
                    value()?.parse().ok().filter(|n| *n > 0).ok_or("--max-sessions needs a positive number")?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(settings)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = parse(&args).unwrap_or_else(|e| {
        log(&format!("{e}; usage: unbit-ssh-broker --socket PATH [--max-sessions N]"));
        std::process::exit(2)
    });
    if let Err(e) = serve(&settings) {
        log(&e);
        std::process::exit(1);
    }
}
