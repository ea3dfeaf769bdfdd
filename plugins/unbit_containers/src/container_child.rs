//! The Emperor's child for one container: already in new mount/pid/ipc/uts/net namespaces
//! (`emperor-use-clone`), still root, about to exec the container master.
//!
//! `vassal` joins the cgroup and builds and pivots into the container's root; `before_exec`
//! points stdout/stderr at the container's own log (never the operator's), drops to the
//! container uid for good and replaces the whole environment with [`CONTAINER_ENV`]. Nothing
//! from the guest rootfs runs before the drop.

use crate::{running_specs, settings, vassal_config::uid_of};
use container_spec::Distro;
use std::os::fd::RawFd;
use uwsgi::Vassal;

/// The container this vassal is, if it is one of ours.
fn container_uid(v: &Vassal) -> Option<u32> {
    (v.monitor_scheme().as_deref() == Some("unbit")).then(|| uid_of(&v.name())).flatten()
}

pub fn setup(v: &Vassal) -> Result<(), String> {
    let Some(uid) = container_uid(v) else { return Ok(()) };
    let spec = running_specs::get(uid).ok_or_else(|| format!("container {uid}: no spec known to the Emperor"))?;
    if settings::network() {
        // Before the jail: the child still sees the host's /proc, and nothing of the
        // customer runs until the network is whole.
        crate::network::child_setup(&spec)?;
    }
    jail::enter_jail(&settings::node_paths(), &spec).map_err(|e| e.to_string())
}

/// Where a value of [`CONTAINER_ENV`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvValue {
    /// The same on every node and in every container.
    Fixed(&'static str),
    /// The container's home, `/containers/<uid>` as seen inside.
    Home,
    /// The container's uid, which is also its user name.
    Uid,
    /// Set by the node Emperor for this very child (uWSGI's vassal protocol, core/emperor.c):
    /// passed on as the Emperor set it, if it did.
    FromEmperor,
}

/// The complete environment of a container master, and so what every customer vassal, its
/// workers and `rc.local` start from. Nothing else of the node Emperor's environment crosses
/// the exec: not the operator's shell and build variables, not a credential the operator
/// happened to export, and not `UWSGI_*` options (uWSGI turns the operator's
/// `UWSGI_VASSAL_<OPTION>` into `UWSGI_<OPTION>` for every vassal; a container master is
/// configured by its generated config alone, see `vassal_config`).
///
/// The two `UWSGI_EMPEROR_*` entries are the vassal protocol: the numbers of the vassal's ends
/// of the Emperor pipe and of the config pipe (`emperor://` configs, which is how the monitor
/// feeds them); the master drops the config pipe's once it has read its config (`unenv` in
/// `vassal_config`). uWSGI's other Emperor variables are not needed here: `UWSGI_BROODLORD_NUM` is
/// only for zerg vassals, `UWSGI_EMPEROR_PROXY` only for vassals started outside the Emperor,
/// `UWSGI_VASSALS_DIR` only for the Emperor's own hook commands. uWSGI itself then adds
/// `UWSGI_RELOADS` and `UWSGI_ORIGINAL_PROC_NAME` in every instance it starts, and the
/// container's sub-Emperor gives each customer vassal its own `UWSGI_EMPEROR_FD`.
pub const CONTAINER_ENV: &[(&str, EnvValue)] = &[
    ("HOME", EnvValue::Home),
    ("USER", EnvValue::Uid),
    ("LOGNAME", EnvValue::Uid),
    // /usr/local is the home again inside the jail: ~/bin comes first.
    ("PATH", EnvValue::Fixed("/usr/local/bin:/usr/bin:/bin")),
    // Built into glibc: every distro has it, and customers' programs get UTF-8 by default.
    ("LANG", EnvValue::Fixed("C.UTF-8")),
    ("UWSGI_EMPEROR_FD", EnvValue::FromEmperor),
    ("UWSGI_EMPEROR_FD_CONFIG", EnvValue::FromEmperor),
];

/// [`CONTAINER_ENV`] with this container's values, reading the Emperor's from `inherited`.
pub fn container_env(uid: u32, inherited: impl Fn(&str) -> Option<String>) -> Vec<(&'static str, String)> {
    CONTAINER_ENV
        .iter()
        .filter_map(|&(name, value)| {
            let value = match value {
                EnvValue::Fixed(v) => v.to_string(),
                EnvValue::Home => format!("/containers/{uid}"),
                EnvValue::Uid => uid.to_string(),
                EnvValue::FromEmperor => inherited(name)?,
            };
            Some((name, value))
        })
        .collect()
}

pub fn before_exec(v: &Vassal) -> Result<(), String> {
    let Some(uid) = container_uid(v) else { return Ok(()) };
    let env = container_env(uid, |k| std::env::var(k).ok());
    // The pipes of uWSGI's vassal protocol are the only descriptors that cross the exec.
    let keep: Vec<RawFd> = CONTAINER_ENV
        .iter()
        .filter(|(_, value)| *value == EnvValue::FromEmperor)
        .filter_map(|(name, _)| env.iter().find(|(k, _)| k == name)?.1.parse().ok())
        .collect();
    jail::drop_privileges_keeping(uid, &keep).map_err(|e| e.to_string())?;
    let home = format!("/containers/{uid}");
    // Opened as the container uid: whatever the customer put at that path, we can only reach
    // what the container itself can.
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(format!("{home}/logs/emperor.log"))
        .map_err(|e| format!("container {uid}: cannot open {home}/logs/emperor.log: {e}"))?;
    redirect_output(&log).map_err(|e| format!("container {uid}: cannot redirect output: {e}"))?;
    jail::replace_environment(&env).map_err(|e| format!("container {uid}: {e}"))?;
    let custom = running_specs::get(uid).is_some_and(|s| matches!(s.distro, Distro::Custom { .. }));
    if custom {
        exec_custom_master(uid, &v.name(), &env);
    }
    Ok(())
}

/// A container on a custom distro: its master is the first uWSGI of the search order
/// (`vassal_config::CUSTOM_UWSGI_SEARCH`), exec'd here with the arguments uWSGI's Emperor gives
/// a config-fed vassal, already as the container uid: the image's binaries, its dynamic loader
/// and libraries included, never run with more than the container's own rights. With none, this
/// process, still the platform's code, stays as the container's init ([`rc_local_init`]).
fn exec_custom_master(uid: u32, vassal: &str, env: &[(&str, String)]) -> ! {
    use crate::vassal_config::PLATFORM_PLUGINS_ENV;
    use std::os::unix::process::CommandExt;
    // This process is a copy of the node Emperor, and its command line (the operator's paths
    // and options) is readable by any process that sees it: the build check below runs the
    // image's code, and with no uWSGI in the image this process stays as the container's pid
    // 1. The container's /proc (hidepid=2) hides it, as it is not dumpable; replaced anyway
    // before anything of the image runs, so a looser /proc would show nothing of the node's.
    if let Err(e) = uwsgi::process::set_cmdline(&format!("[{uid}] init")) {
        println!("[unbit node] container {uid}: cannot replace the init's command line: {e}");
    }
    let config = format!("emperor://{vassal}");
    let search = crate::vassal_config::custom_uwsgi_search(uid);
    let mut tried = Vec::new();
    for bin in &search {
        let build = match platform_build(bin) {
            Ok(build) => build,
            // Not executable (ENOENT, EACCES, ENOEXEC, a missing ELF interpreter...): the
            // exec would fail the same way.
            Err(e) => {
                tried.push(format!("{bin} ({e})"));
                continue;
            }
        };
        let mut master = std::process::Command::new(bin);
        master.args(["--ini", &config]);
        match build {
            Ok(()) => {
                println!("[unbit node] container {uid}: {bin} is the platform's uWSGI build: platform plugins loaded");
                master.env(PLATFORM_PLUGINS_ENV, "1");
            }
            Err(why) => println!(
                "[unbit node] container {uid}: {bin}: {why}: no platform plugin loaded (no container alarms, \
                 ~/etc/rc.local started by the image's /bin/sh)"
            ),
        }
        // exec only returns on failure.
        let e = master.exec();
        tried.push(format!("{bin} ({e})"));
    }
    println!(
        "[unbit node] container {uid}: no uWSGI in the custom distro or the home (tried {}): \
         running ~/etc/rc.local under the platform's init",
        tried.join(", ")
    );
    let pipe = env.iter().find(|(k, _)| *k == "UWSGI_EMPEROR_FD").and_then(|(_, v)| v.parse().ok());
    rc_local_init(uid, pipe)
}

/// Whether the uWSGI at `bin` is the build the platform's plugins are made for: its
/// `--cflags` (every define that changes the layout of uWSGI's structures and the exact
/// version, what each plugin compares at load, see `uwsgi::abi`) equal to theirs. Run as the
/// container uid inside the container, as the master itself is about to be; bounded in time
/// and output. `Err` when `bin` cannot be run at all.
fn platform_build(bin: &str) -> std::io::Result<Result<(), String>> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    use uwsgi::abi::BuildProfile;
    let mut child =
        Command::new(bin).arg("--cflags").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let answered = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => break Err("`--cflags` did not answer within 5 s".to_string()),
            Err(e) => break Err(format!("`--cflags` could not be waited for: {e}")),
        }
    };
    let status = match answered {
        Ok(status) => status,
        Err(why) => {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Err(why));
        }
    };
    // What it wrote before exiting: never waiting for an end of file that a process it left
    // behind, holding the pipe, would keep from coming.
    let mut out = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        use std::os::fd::AsRawFd;
        if fcntl(stdout.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_ok() {
            let _ = stdout.take(64 * 1024).read_to_end(&mut out);
        }
    }
    let out = String::from_utf8_lossy(&out);
    if !status.success() {
        return Ok(Err(format!("`--cflags` failed ({status})")));
    }
    let platform = BuildProfile::compiled();
    let image = BuildProfile { cflags: out.trim().to_string() };
    Ok(match platform.mismatch(&image) {
        None => Ok(()),
        Some(_) => {
            Err(format!("the platform's plugins are built for {}, this is {}", platform.describe(), image.describe()))
        }
    })
}

/// The init of a custom distro container without uWSGI: starts `~/etc/rc.local` with the
/// image's `/bin/sh`, reaps every orphan (it is pid 1 of the container's pid namespace), and
/// exits when the Emperor writes anything on its pipe (stop or reload) or closes it; the kernel
/// then kills every process left in the namespace. Runs as the container uid.
fn rc_local_init(uid: u32, emperor_pipe: Option<RawFd>) -> ! {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    // This process is the Emperor's image, with the node's state in its memory (other
    // containers' specs among it): the privilege drop already made it non-dumpable, so the
    // container uid can neither ptrace it nor read its memory; said again, should a kernel
    // setting ever change that.
    let _ = nix::sys::prctl::set_dumpable(false);
    let rc = format!("/containers/{uid}/etc/rc.local");
    if let Err(e) = crate::in_container::run_rc_local(&rc) {
        println!("[unbit node] container {uid}: {e}");
    }
    let Some(fd) = emperor_pipe else { std::process::exit(1) };
    loop {
        match jail::linux::wait_readable(fd, 1000) {
            Ok(false) => {}
            // A message (stop or reload: either ends this instance), a closed pipe, or a pipe
            // that cannot be watched: the Emperor starts a new one if it wants one.
            Ok(true) | Err(_) => std::process::exit(0),
        }
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
}

fn redirect_output(log: &std::fs::File) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    nix::unistd::dup2(log.as_raw_fd(), 1)?;
    nix::unistd::dup2(log.as_raw_fd(), 2)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_env_holds_the_documented_names_only() {
        let emperor = |k: &str| match k {
            "UWSGI_EMPEROR_FD" => Some("3".to_string()),
            "UWSGI_EMPEROR_FD_CONFIG" => Some("4".to_string()),
            _ => Some("operator's".to_string()),
        };
        let env = container_env(30001, emperor);
        let names: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["HOME", "USER", "LOGNAME", "PATH", "LANG", "UWSGI_EMPEROR_FD", "UWSGI_EMPEROR_FD_CONFIG"]);
        assert_eq!(env[0].1, "/containers/30001");
        assert_eq!(env[1].1, "30001");
        assert!(!env.iter().any(|(_, v)| v == "operator's"));
        // Without a config pipe (a file-based vassal) that variable is simply absent.
        let env = container_env(30001, |k| (k == "UWSGI_EMPEROR_FD").then(|| "3".to_string()));
        assert_eq!(env.len(), 6);
    }
}
