//! `uwsgi_selftest`: a plugin whose only job is to be tested. It uses every facility of the
//! `uwsgi` crate (typed options, hooks, alarms, an imperial monitor, vassal callbacks, the
//! panic guard) so the integration tests can check each against a real server.

use std::path::PathBuf;
use uwsgi::{Alarm, Emperor, ImperialMonitor, ListSetting, Registry, Setting, Vassal};

static GREETING: Setting<String> = Setting::new();
static PORTS: ListSetting<u16> = ListSetting::new();
static REPORT: Setting<bool> = Setting::new();
static PANIC_IN_CYCLE: Setting<bool> = Setting::new();

struct SelfTest;

impl uwsgi::Plugin for SelfTest {
    const NAME: &'static std::ffi::CStr = c"uwsgi_selftest";

    fn on_load(reg: &mut Registry) {
        reg.option("selftest-greeting", "text the selftest hook prints", &GREETING)
            .list_option("selftest-port", "a TCP port (repeatable)", &PORTS)
            .flag("selftest-report", "log what the plugin reads from struct uwsgi_server", &REPORT)
            .flag("selftest-panic-in-cycle", "panic in the first master cycle", &PANIC_IN_CYCLE)
            .hook("selftest-hook", |arg| {
                uwsgi::log!("hook ran with arg={arg} pid={}", std::process::id());
                Ok(())
            })
            .hook("selftest-fail", |arg| Err(format!("asked to fail ({arg})")))
            .hook("selftest-panic", |arg| panic!("hook asked to panic ({arg})"))
            .alarm("selftest", |instance, arg| Ok(Box::new(LogAlarm { instance: instance.into(), arg: arg.into() })))
            .imperial_monitor("selftest", |arg| {
                let path = arg.strip_prefix("selftest://").unwrap_or_default();
                if path.is_empty() {
                    return Err("usage: emperor = selftest:///path/to/vassal.ini".into());
                }
                Ok(Box::new(OneFileMonitor { path: PathBuf::from(path) }))
            });
    }

    fn init() {
        if REPORT.get_or(false) {
            uwsgi::log!(
                "report: binary_path={} master={} generic_plugins={} greeting={} ports={:?}",
                uwsgi::server::binary_path().unwrap_or_default(),
                uwsgi::server::has_master(),
                uwsgi::server::generic_plugins(),
                GREETING.get().unwrap_or_default(),
                PORTS.get()
            );
        }
    }

    fn master_cycle() {
        if PANIC_IN_CYCLE.get_or(false) {
            PANIC_IN_CYCLE.set(false);
            panic!("master cycle asked to panic");
        }
    }

    fn vassal(v: &Vassal) -> Result<(), String> {
        uwsgi::log!("vassal callback for {} in pid {}", v.name(), std::process::id());
        Ok(())
    }

    fn vassal_before_exec(v: &Vassal) -> Result<(), String> {
        uwsgi::log!("vassal_before_exec callback for {}", v.name());
        Ok(())
    }
}

uwsgi::plugin!(uwsgi_selftest_plugin: SelfTest);

struct LogAlarm {
    instance: String,
    arg: String,
}

impl Alarm for LogAlarm {
    fn raise(&self, msg: &[u8]) {
        let msg = String::from_utf8_lossy(msg);
        if msg.contains("panic") {
            panic!("alarm asked to panic");
        }
        uwsgi::log!("alarm {} (arg={}) raised: {}", self.instance, self.arg, msg.trim_end());
    }
}

/// Feeds one vassal, `selftest.ini`, from a file; reloads it when the file changes and stops
/// it when the file goes away.
struct OneFileMonitor {
    path: PathBuf,
}

impl ImperialMonitor for OneFileMonitor {
    fn scan(&mut self, emperor: &mut Emperor<'_>) {
        let name = "selftest.ini";
        match std::fs::read_to_string(&self.path) {
            Ok(config) => {
                let mtime = std::fs::metadata(&self.path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs() as i64);
                if let Err(e) = emperor.feed(name, &config, mtime, 0, 0) {
                    uwsgi::log!("{e}");
                }
            }
            Err(_) => {
                if emperor.stop(name) {
                    uwsgi::log!("{} is gone: stopped {name}", self.path.display());
                }
            }
        }
    }
}
