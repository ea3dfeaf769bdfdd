//! The original platform's container vassal (`uwsgi_it_api/templates/vassal.ini` at
//! unbit/uwsgi.it@a07bc74, described hook by hook in original-platform.md §4.4), rendered for
//! stock uWSGI with only built-in options, in the original's order, for a platform distro on
//! a host with separately mounted v1 controllers (the template's `server.systemd` branch).
//!
//! Left out, because they need components this project does not have (see the README):
//! `plugins = tuntap,quota,eventfd,console_broadcast,alarm_chain,rand_pid,openat_alarm` and
//! everything using them: `setquota`, `openat-alarm-dir`, the console/jsonfile/combo alarms,
//! `alarm-eventfd`, `alarm-quota`, `rand_pid`, `tuntap-device*`, `console_broadcast` on
//! emperor stop/reload/lost; and the three network `exec:` hooks (`ifconfig lo up`,
//! `ifconfig uwsgi0 ...`, `route add default gw`): `uwsgi0` comes from tuntap and the distro
//! has no `ifconfig`. Each of those costs the original a fork and two execs, so leaving them
//! out makes this anchor faster than the original was.
//!
//! Adapted, same syscalls: `chown` (names resolved by the original's nss-unbit module) is
//! `chown2` (numbers); the host paths live in a temp dir instead of `/containers`, `/ns`,
//! `/subscribe`, `/sys/fs/cgroup/<uid>`; `put_old` is the distro's empty `/mnt` instead of a
//! `/.old_root` every original distro carried (so `/.old_root/x` reads `/mnt/x`).

use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Host-side locations of one stock node.
pub struct HostPaths {
    /// Parent of the homes (the original's `/containers`).
    pub containers: PathBuf,
    /// The distro directory (the original's `/distros/<path>`).
    pub distro: PathBuf,
    /// The mount point the distro is bound on before `pivot_root` (the original's `/ns`).
    pub ns: PathBuf,
    /// The routers' subscription dir (the original's `/subscribe`).
    pub subscribe: PathBuf,
    /// The container's cgroup, relative to each controller (the original's `<cgroup_uid>`).
    pub cgroup_parent: String,
}

/// What the container is told (the template's inputs that matter on a platform distro).
pub struct Container<'a> {
    pub uid: u32,
    pub hostname: &'a str,
    pub memory_bytes: u64,
    pub ssh_keys: &'a [&'a str],
    pub rsa_private_pem: &'a str,
    pub rsa_public_pem: &'a str,
    pub etc_hosts: &'a [&'a str],
    pub etc_resolv_conf: &'a [&'a str],
}

/// The original remounts `/` and the home `nosuid` without `MS_BIND`: that reconfigures the
/// host filesystem's superblock, which syncs it. `Skip` renders the chain without those two
/// hooks, to show what the rest of the chain costs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SuperblockRemounts {
    Keep,
    Skip,
}

/// Where the old root is put by `pivot_root` (an empty directory every Debian distro has).
const OLD_ROOT: &str = "/mnt";

struct Ini {
    text: String,
    uid: u32,
    /// The home as the host sees it (asap and pre-jail hooks run in the host mount view).
    host_home: String,
    /// The home as the container sees it (as-root hooks run after `pivot_root`).
    jail_home: String,
}

impl Ini {
    fn line(&mut self, l: &str) {
        let _ = writeln!(self.text, "{l}");
    }

    /// `mkdir` only when missing (the hook fails on an existing directory), evaluated when the
    /// config is parsed, as the original does.
    fn mkdir_if_missing(&mut self, dir: &str) {
        self.line(&format!("if-not-dir = {dir}"));
        self.line(&format!("hook-asap = mkdir:{dir}"));
        self.line("endif =");
    }

    fn chown_to_container(&mut self, path: &str) {
        let uid = self.uid;
        self.line(&format!("hook-asap = chown2:{path} {uid} {uid}"));
    }

    /// A home subdirectory created if missing, then owned by the container.
    fn owned_dir(&mut self, rel: &str) {
        let dir = format!("{}/{rel}", self.host_home);
        self.mkdir_if_missing(&dir);
        self.chown_to_container(&dir);
    }

    /// A file seeded line by line when missing (`appendn`), then owned by the container.
    fn seeded_file(&mut self, rel: &str, lines: &[&str], private: bool) {
        let file = format!("{}/{rel}", self.host_home);
        let hide = if private { "!" } else { "" };
        self.line(&format!("if-not-file = {file}"));
        for l in lines {
            self.line(&format!("hook-asap = {hide}appendn:{file} {l}"));
        }
        self.line("endif =");
    }

    /// A file rewritten at every start: unlinked, then appended line by line (root-owned).
    fn rewritten_file(&mut self, rel: &str, pem: &str) {
        let file = format!("{}/{rel}", self.host_home);
        self.line(&format!("if-file = {file}"));
        self.line(&format!("hook-asap = unlink:{file}"));
        self.line("endif =");
        for l in pem.lines() {
            self.line(&format!("hook-asap = !appendn:{file} {l}"));
        }
    }

    fn as_root_mount(&mut self, fs: &str, src: &str, dst: &str, flags: &str) {
        self.line(&format!("hook-as-root = mount:{fs} {src} {dst} {flags}"));
    }
}

pub fn render(c: &Container, host: &HostPaths, remounts: SuperblockRemounts) -> String {
    let host_home = host.containers.join(c.uid.to_string()).to_string_lossy().into_owned();
    let jail_home = format!("/containers/{}", c.uid);
    let mut ini = Ini { text: String::new(), uid: c.uid, host_home, jail_home };
    header(&mut ini);
    asap_home(&mut ini);
    asap_cgroups(&mut ini, c, host);
    asap_etc_and_keys(&mut ini, c);
    pre_jail(&mut ini, host);
    as_root(&mut ini, c, host, remounts);
    runtime(&mut ini, c);
    ini.text
}

fn header(ini: &mut Ini) {
    let uid = ini.uid;
    ini.line("[uwsgi]");
    ini.line(&format!("; container {uid}: the original platform's vassal.ini (uwsgi.it@a07bc74), stock options only"));
    ini.line("strict = true");
    ini.line("vassals-set = inject-before=/opt/unbit/uwsgi/shortcuts.ini");
    ini.line("auto-procname = true");
    ini.line(&format!("procname-prefix-spaced = [{uid}]"));
    ini.line(&format!("hook-asap = putenv:HOME={}", ini.jail_home));
}

/// §4.4 steps 3, 4, 6 and 7: the home and its directories.
fn asap_home(ini: &mut Ini) {
    let home = ini.host_home.clone();
    ini.mkdir_if_missing(&home);
    ini.chown_to_container(&home);
    ini.line(&format!("hook-asap = chmod:{home} 755"));
    ini.owned_dir("run");
    ini.mkdir_if_missing(&format!("{home}/run/resolvconf"));
    for d in ["run/spool", "run/shm", "run/php"] {
        ini.owned_dir(d);
    }
}

/// §4.4 step 5 and the in-jail placement: cpu and memory cgroups, the memory limit.
fn asap_cgroups(ini: &mut Ini, c: &Container, host: &HostPaths) {
    let home = ini.host_home.clone();
    let cg = |controller: &str| format!("/sys/fs/cgroup/{controller}/{}/{}", host.cgroup_parent, c.uid);
    ini.mkdir_if_missing(&cg("cpu"));
    ini.mkdir_if_missing(&cg("memory"));
    ini.line(&format!("hook-asap = write:{}/memory.limit_in_bytes {}", cg("memory"), c.memory_bytes));
    ini.line(&format!("hook-asap = write:{}/memory.swappiness 0", cg("memory")));
    for d in ["run/subscribe", "run/cgroup", "run/cgroup/cpu", "run/cgroup/memory"] {
        ini.mkdir_if_missing(&format!("{home}/{d}"));
    }
    ini.line("cgroup-dir-mode = 755");
    ini.line(&format!("cgroup = {}/", cg("cpu")));
    ini.line(&format!("cgroup = {}/", cg("memory")));
    // The one alarm of the original that needs no external plugin.
    ini.line("alarm = emperorlog log:");
    ini.line("alarm-freq = 60");
    ini.owned_dir("vassals");
    ini.owned_dir(".old_root");
    ini.owned_dir(&format!(".old_root/{}", c.uid));
    ini.owned_dir("tmp");
    ini.owned_dir("logs");
    let lastlog = format!("{home}/logs/lastlog");
    ini.line(&format!("if-not-file = {lastlog}"));
    ini.line(&format!("hook-asap = creat:{lastlog}"));
    ini.line("endif =");
}

/// §4.4 steps 8-12: etc files, the customer's key pair, ssh keys, the hostname.
fn asap_etc_and_keys(ini: &mut Ini, c: &Container) {
    let home = ini.host_home.clone();
    ini.owned_dir("etc");
    ini.seeded_file("etc/hosts", c.etc_hosts, false);
    ini.chown_to_container(&format!("{home}/etc/hosts"));
    ini.seeded_file("etc/resolv.conf", c.etc_resolv_conf, false);
    ini.chown_to_container(&format!("{home}/etc/resolv.conf"));
    ini.line(&format!("hook-asap = writen:{home}/etc/hostname {}", c.hostname));
    ini.chown_to_container(&format!("{home}/etc/hostname"));
    ini.owned_dir("etc/nullmailer");
    ini.rewritten_file("etc/uwsgi.key", c.rsa_private_pem);
    ini.rewritten_file("etc/uwsgi.pubkey", c.rsa_public_pem);
    ini.owned_dir(".ssh");
    ini.seeded_file(".ssh/uwsgi_authorized_keys", c.ssh_keys, true);
    ini.line(&format!("hook-asap = hostname:{}", c.hostname));
    ini.line("jailed = true");
    ini.line("exit-on-reload = true");
}

/// §4.4 steps 13-14 and the pivot: the distro bound (read-write, as the original) on `/ns`.
fn pre_jail(ini: &mut Ini, host: &HostPaths) {
    let ns = host.ns.display();
    ini.line("hook-pre-jail = callret:chdir /");
    ini.line(&format!("hook-pre-jail = mount:none {} {ns} bind", host.distro.display()));
    ini.line(&format!("pivot_root = {ns} {ns}{OLD_ROOT}"));
}

/// §4.4 steps 15-31: the container's view, built from inside the new root.
fn as_root(ini: &mut Ini, c: &Container, host: &HostPaths, remounts: SuperblockRemounts) {
    let old = |p: &Path| format!("{OLD_ROOT}{}", p.display());
    let host_home = PathBuf::from(&ini.host_home);
    let jail = ini.jail_home.clone();
    ini.line("hook-as-root = mount:proc none /proc nodev hidepid=2");
    ini.as_root_mount("none", &format!("{OLD_ROOT}/dev"), "/dev", "bind");
    ini.as_root_mount("none", &format!("{OLD_ROOT}/dev/pts"), "/dev/pts", "bind");
    ini.as_root_mount("none", &old(&host_home.join(".old_root")), "/containers", "bind");
    ini.as_root_mount("none", &old(&host_home), &jail, "bind");
    ini.as_root_mount("none", &format!("{jail}/run"), "/run", "bind,nosuid");
    ini.as_root_mount("tmpfs", "none", "/run/shm", "nodev");
    ini.as_root_mount("none", &format!("{jail}/tmp"), "/tmp", "bind,nosuid");
    ini.as_root_mount("none", &format!("{jail}/tmp"), "/var/tmp", "bind,nosuid");
    ini.as_root_mount("none", &old(&host.subscribe), "/run/subscribe", "bind");
    for controller in ["cpu", "memory"] {
        let cg = format!("{OLD_ROOT}/sys/fs/cgroup/{controller}/{}/{}", host.cgroup_parent, c.uid);
        ini.as_root_mount("none", &cg, &format!("/run/cgroup/{controller}"), "bind");
    }
    ini.line(&format!("hook-as-root = umount:{OLD_ROOT} rec,detach"));
    if remounts == SuperblockRemounts::Keep {
        ini.as_root_mount("none", "none", "/", "remount,nosuid");
        ini.as_root_mount("none", &jail, &jail, "remount,nosuid");
    }
    ini.as_root_mount("none", &format!("{jail}/etc"), "/run/resolvconf", "bind");
    if_distro_dir(ini, host, "etc/nullmailer", &format!("{jail}/etc/nullmailer"), "/etc/nullmailer", "bind");
    ini.as_root_mount("none", &format!("{jail}/logs"), "/var/log", "bind,nosuid");
    ini.as_root_mount("none", &format!("{jail}/run/spool"), "/var/spool", "bind,nosuid");
    for php in ["var/lib/php5", "var/lib/php"] {
        if_distro_dir(ini, host, php, &format!("{jail}/run/php"), &format!("/{php}"), "bind,nosuid");
    }
    ini.as_root_mount("none", &jail, "/usr/local", "bind,nosuid");
    ini.line(&format!("hook-as-root = write:/proc/sys/kernel/shmmax {}", c.memory_bytes));
    ini.line(&format!("hook-as-root = chown2:{jail}/logs/emperor.log {} {}", c.uid, c.uid));
}

/// A bind done only if the distro has the directory (checked at parse time, host view).
fn if_distro_dir(ini: &mut Ini, host: &HostPaths, rel: &str, src: &str, dst: &str, flags: &str) {
    ini.line(&format!("if-dir = {}/{rel}", host.distro.display()));
    ini.as_root_mount("none", src, dst, flags);
    ini.line("endif =");
}

/// The privilege drop and the container master's runtime options.
fn runtime(ini: &mut Ini, c: &Container) {
    let uid = c.uid;
    let (host_home, jail) = (ini.host_home.clone(), ini.jail_home.clone());
    ini.line(&format!("uid = {uid}"));
    ini.line(&format!("gid = {uid}"));
    // Opened right after the asap hooks, in the host view (the original's host and container
    // paths were the same).
    ini.line(&format!("logto = {host_home}/logs/emperor.log"));
    ini.line("log-maxsize = 209715200");
    ini.line(&format!("emperor = {jail}/vassals"));
    ini.line("emperor-stats-server = 127.0.0.1:5000");
    ini.line("setns-socket = /run/ns.socket");
    ini.line("setns-preopen = true");
    ini.line("subscriptions-use-credentials = true");
    ini.line("notify-socket = /run/notify.socket");
    ini.line("hook-master-start = chmod:/run/notify.socket 666");
    ini.line(&format!("if-file = {host_home}/etc/rc.local"));
    ini.line(&format!("hook-as-user = safeexec:/bin/sh {jail}/etc/rc.local &"));
    ini.line("endif =");
    ini.line(&format!("emperor-wrapper-override = {jail}/bin/uwsgi"));
    ini.line("emperor-wrapper-override = /usr/local/bin/uwsgi");
}
