//! `unbit_alarms`: alarm backends that hand alarms to the node's alarm relay
//! (`unbit-alarmd`), which sends them to every channel the container's owner set (console,
//! `~/logs/emperor.log`, the API's records, XMPP, Pushover, Pushbullet, Slack).
//!
//! Loaded in every container master (from `/opt/unbit/plugins`, by the config the node
//! generates) and usable by customer vassals:
//!
//! ```ini
//! plugins-dir = /opt/unbit/plugins
//! plugins = unbit_alarms
//! alarm = mine unbit:myapp
//! alarm-segfault = mine
//! log-alarm = mine ^.*Traceback
//! ```
//!
//! * `alarm = NAME unbit:KIND`: `raise` is one non-blocking connect and write on the relay's
//!   socket; it never waits (a relay that is down or busy loses the alarm and the log says
//!   so), so uWSGI's alarm thread is never held up. KIND (default: NAME) is the alarm's class
//!   and de-duplication key.
//! * `hook-... = unbit-alarm:KIND MESSAGE`: the same, from a hook (the container's restarts).
//! * `hook-master-start = unbit-alarms-console:`: the container master listens for its
//!   container's alarms and shows each on every terminal of the container.

use alarms::protocol::{self, Request};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use uwsgi::{Alarm, Registry, Setting};

static SOCKET: Setting<String> = Setting::new();

fn socket() -> PathBuf {
    PathBuf::from(SOCKET.get().unwrap_or_else(|| protocol::CONTAINER_SOCKET.to_string()))
}

struct UnbitAlarm {
    kind: String,
}

impl Alarm for UnbitAlarm {
    fn raise(&self, msg: &[u8]) {
        send(&self.kind, &protocol::clean_message(msg));
    }
}

/// One non-blocking attempt; an outage is logged once, without the message (a `log-alarm` regexp
/// must not match our own complaint and loop).
fn send(kind: &str, msg: &str) {
    if msg.is_empty() {
        return;
    }
    static RELAY: protocol::RelayHealth = protocol::RelayHealth::new();
    let sent = protocol::send_now(&socket(), &Request::alarm(None, kind, msg));
    if let Some(line) = RELAY.note(&sent, &socket()) {
        uwsgi::log!("alarm {kind}: {line}");
    }
}

fn hook_alarm(arg: &str) -> Result<(), String> {
    let (kind, msg) = arg.trim().split_once(' ').ok_or("expected `unbit-alarm:KIND MESSAGE`")?;
    protocol::check_kind(kind)?;
    send(kind, &protocol::clean_message(msg.as_bytes()));
    Ok(())
}

/// Starts the console listener thread (once per process).
fn hook_console(_: &str) -> Result<(), String> {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let path = socket();
        let spawned = std::thread::Builder::new().name("unbit-alarms-console".into()).spawn(move || listen(&path));
        if let Err(e) = spawned {
            uwsgi::log!("cannot start the alarm console listener: {e}");
        }
    });
    Ok(())
}

/// Watches the relay for this container's alarms and broadcasts each; reconnects after a
/// relay restart.
fn listen(path: &Path) {
    let mut told = false;
    loop {
        match watch_once(path) {
            Ok(()) => told = false,
            Err(e) if !told => {
                uwsgi::log!("alarm console listener: {e} (retrying every 5 s)");
                told = true;
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

fn watch_once(path: &Path) -> Result<(), String> {
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|e| format!("connect {}: {e}", path.display()))?;
    let hello = Request { uid: None, kind: None, msg: None, watch: true };
    stream.write_all(&hello.line()).map_err(|e| format!("write: {e}"))?;
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line.map_err(|e| format!("read: {e}"))?;
        if let Ok(d) = protocol::parse_delivered(line.as_bytes()) {
            alarms::terminals::broadcast(Path::new("/dev/pts"), &format!("ALARM {}: {}", d.kind, d.msg));
        }
    }
    Ok(())
}

struct UnbitAlarms;

impl uwsgi::Plugin for UnbitAlarms {
    const NAME: &'static std::ffi::CStr = c"unbit_alarms";

    fn on_load(reg: &mut Registry) {
        reg.option("unbit-alarms-socket", "the node's alarm relay socket (default /run/subscribe/alarms)", &SOCKET)
            .alarm("unbit", |instance, arg| Ok(Box::new(UnbitAlarm { kind: protocol::kind_for(instance, arg)? })))
            .hook("unbit-alarm", hook_alarm)
            .hook("unbit-alarms-console", hook_console);
    }
}

uwsgi::plugin!(unbit_alarms_plugin: UnbitAlarms);
