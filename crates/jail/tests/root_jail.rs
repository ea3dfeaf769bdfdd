//! Real jails, as root: each scenario clones a child into new mount/pid/ipc/uts/net
//! namespaces (what uWSGI's `emperor-use-clone = fs,pid,ipc,uts,net` does), the child calls
//! `enter_jail` + `drop_privileges` on a busybox distro built by `scripts/build-distro.sh
//! --minimal`, then runs checks from inside and reports them on its stdout (a pipe): the
//! contest/runtimetest split of youki, with the checker as a function of this binary.
//!
//! `harness = false`: forking from the multi-threaded libtest harness is unsafe, so this
//! binary runs its scenarios one after the other from a single thread. Usage:
//! `cargo test -p jail --test root_jail [-- <name filter>]`.
//!
//! Everything made here (cgroups under a random `unbit-test-*` name, temp dirs, processes)
//! is removed by Drop guards even when a scenario fails; the jail's mounts live in the
//! child's mount namespace and vanish with it.

mod common;

use common::{build_minimal_distro, paths_under, require_root, spec, unique};
use container_spec::ContainerSpec;
use jail::quota::{ImageQuota, NoQuota};
use jail::{drop_privileges, enter_jail, oom_kill_count, prepare_home, release, NodePaths};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Fixture: a node in a temp dir, one container, cleaned up on drop.

struct Fixture {
    tmp: tempfile::TempDir,
    paths: NodePaths,
    spec: ContainerSpec,
    /// A file on the host, outside every container: must be unreachable from the jail.
    host_secret: PathBuf,
    /// Another container's home on the same node.
    neighbour: PathBuf,
    /// Set when the home is a mounted quota image (unmounted on drop).
    image: Option<ImageQuota>,
}

impl Fixture {
    fn new(tweak: impl FnOnce(&mut ContainerSpec)) -> Fixture {
        Fixture::build(tweak, false, None)
    }

    fn with_image(tweak: impl FnOnce(&mut ContainerSpec), image: bool) -> Fixture {
        Fixture::build(tweak, image, None)
    }

    /// `distro`: an existing distro directory to use instead of a fresh minimal one.
    fn build(tweak: impl FnOnce(&mut ContainerSpec), image: bool, distro: Option<&std::path::Path>) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let mut paths = paths_under(tmp.path());
        paths.cgroup_name = unique("unbit-test");
        for d in [&paths.containers, &paths.platform_dir, &paths.jail_root, paths.subscribe_dir.as_ref().unwrap()] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(paths.platform_dir.join("shortcuts.ini"), "[uwsgi]\n").unwrap();
        match distro {
            Some(d) => paths.distros = d.parent().expect("distro has a parent").to_path_buf(),
            None => build_minimal_distro(&paths.distros.join("bookworm")),
        }
        // A random uid per run, so two runs never share a cgroup or a home.
        let n = u32::from_str_radix(&unique("")[1..5], 16).unwrap() % 30_000;
        let mut s = spec(40_000 + n);
        s.pids_limit = 32;
        if let Some(d) = distro {
            let name = d.file_name().unwrap().to_string_lossy().into_owned();
            s.distro = container_spec::Distro::Platform { path: name };
        }
        tweak(&mut s);
        let image = image.then(|| ImageQuota::new(paths.containers.join(".quota-images")));
        match &image {
            Some(q) => drop(prepare_home(&paths, &s, q).unwrap()),
            None => drop(prepare_home(&paths, &s, &NoQuota).unwrap()),
        }
        let host_secret = tmp.path().join("host-secret");
        fs::write(&host_secret, "host only\n").unwrap();
        let neighbour = paths.containers.join((s.uid + 1).to_string());
        fs::create_dir_all(&neighbour).unwrap();
        fs::write(neighbour.join("secret"), "neighbour only\n").unwrap();
        Fixture { tmp, paths, spec: s, host_secret, neighbour, image }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Err(e) = release(&self.paths, self.spec.uid) {
            eprintln!("cleanup: {e}");
        }
        if let Ok(cg) = jail::cgroup::manager(&jail::linux::Linux, &self.paths.cgroup_name) {
            let _ = cg.remove_root_if_empty();
        }
        if let Some(q) = &self.image {
            // The mount holds the loop device; autoclear detaches it with the umount.
            if let Err(e) = q.unmount(&self.paths.containers, self.spec.uid) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running a function inside a fresh jail.

/// What the jailed child printed, line by line.
struct Report {
    lines: Vec<String>,
    status: WaitStatus,
}

impl Report {
    fn failures(&self) -> Vec<&String> {
        self.lines.iter().filter(|l| l.starts_with("FAIL")).collect()
    }
    fn info(&self, key: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| l.strip_prefix(&format!("INFO {key} ")))
    }
    fn count(&self, prefix: &str) -> usize {
        self.lines.iter().filter(|l| l.starts_with(prefix)).count()
    }
}

/// Kills and reaps the child if the scenario bails out early.
struct ChildGuard(Option<Pid>);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = nix::sys::signal::kill(p, Signal::SIGKILL);
            let _ = waitpid(p, None);
        }
    }
}

/// Clones into new namespaces; the child enters the jail, drops privileges (keeping no fd
/// but 0-2; stdout and stderr are the report pipe) and runs `inside`.
fn run_jailed(fx: &Fixture, inherited: RawFd, inside: fn(&Ctx)) -> Report {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut stack = vec![0u8; 8 << 20];
    let ctx = Ctx {
        spec: fx.spec.clone(),
        host_secret: fx.host_secret.clone(),
        neighbour: fx.neighbour.clone(),
        inherited,
        parent_pid: std::process::id() as i32,
    };
    let paths = fx.paths.clone();
    let wfd = w.as_raw_fd();
    let cb = Box::new(move || -> isize {
        let _ = nix::unistd::dup2(wfd, 1);
        let _ = nix::unistd::dup2(wfd, 2);
        let t = Instant::now();
        if let Err(e) = enter_jail(&paths, &ctx.spec) {
            println!("FAIL enter_jail: {e}");
            return 2;
        }
        let entered = t.elapsed();
        if let Err(e) = drop_privileges(ctx.spec.uid) {
            println!("FAIL drop_privileges: {e}");
            return 3;
        }
        println!("INFO enter_jail_us {}", entered.as_micros());
        println!("INFO jail_and_drop_us {}", t.elapsed().as_micros());
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inside(&ctx))) {
            Ok(()) => 0,
            Err(_) => {
                println!("FAIL checker panicked");
                4
            }
        }
    });
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWNET;
    // SAFETY: this binary is single-threaded (harness = false), so the child may allocate;
    // the stack outlives the child's use of it (we wait for the child below).
    let pid = unsafe { nix::sched::clone(cb, &mut stack, flags, Some(libc::SIGCHLD)) }.expect("clone");
    let mut guard = ChildGuard(Some(pid));
    drop(w);
    let mut out = String::new();
    // Read until every writer (the child and what it forked) is gone, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut f = fs::File::from(r);
    nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    out.push_str("FAIL timeout: the jailed child did not finish in 60 s\n");
                    break;
                }
                let mut pfd = libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, 200) };
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    let status = loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(100)),
            WaitStatus::StillAlive => {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                break waitpid(pid, None).unwrap();
            }
            s => break s,
        }
    };
    guard.0 = None;
    drop(stack);
    Report { lines: out.lines().map(str::to_string).collect(), status }
}

// ---------------------------------------------------------------------------------------
// Checks that run inside the jail, after the privilege drop.

struct Ctx {
    spec: ContainerSpec,
    host_secret: PathBuf,
    neighbour: PathBuf,
    inherited: RawFd,
    parent_pid: i32,
}

fn check(name: &str, f: impl FnOnce() -> Result<(), String>) {
    match f() {
        Ok(()) => println!("OK {name}"),
        Err(e) => println!("FAIL {name}: {e}"),
    }
}

fn errno_of<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// An attack must fail; which errno is reported for information.
fn attempt(name: &str, r: Result<(), i32>) {
    match r {
        Err(errno) => println!("DENIED {name} (errno {errno})"),
        Ok(()) => println!("FAIL attack succeeded: {name}"),
    }
}

fn nix_res(r: nix::Result<impl Sized>) -> Result<(), i32> {
    r.map(drop).map_err(|e| e as i32)
}

fn io_res<T>(r: std::io::Result<T>) -> Result<(), i32> {
    r.map(drop).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn mount_options() -> Vec<(String, String)> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[4].to_string(), f[5].to_string())
        })
        .collect()
}

fn status_field(name: &str) -> String {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

fn view_checks(ctx: &Ctx) {
    let uid = ctx.spec.uid;
    let home = PathBuf::from(format!("/containers/{uid}"));
    check("identity", || {
        let u = nix::unistd::getresuid().unwrap();
        let g = nix::unistd::getresgid().unwrap();
        let groups = nix::unistd::getgroups().unwrap();
        if (u.real.as_raw(), u.effective.as_raw(), u.saved.as_raw()) == (uid, uid, uid)
            && (g.real.as_raw(), g.effective.as_raw(), g.saved.as_raw()) == (uid, uid, uid)
            && groups.is_empty()
        {
            Ok(())
        } else {
            Err(format!("uid {u:?} gid {g:?} groups {groups:?}"))
        }
    });
    check("no capabilities, no_new_privs", || {
        let caps: Vec<String> = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
            .iter()
            .map(|c| format!("{c}={}", status_field(c)))
            .collect();
        if caps.iter().all(|c| c.ends_with("=0000000000000000")) && status_field("NoNewPrivs") == "1" {
            Ok(())
        } else {
            Err(format!("{caps:?} NoNewPrivs={}", status_field("NoNewPrivs")))
        }
    });
    check("hostname", || {
        let h = nix::unistd::gethostname().unwrap().into_string().unwrap();
        if h == ctx.spec.hostname() {
            Ok(())
        } else {
            Err(h)
        }
    });
    check("root read-only", || {
        let r1 = errno_of(fs::write("/newfile", "x"));
        let r2 = errno_of(fs::write("/bin/newfile", "x"));
        if r1 == Some(libc::EROFS) && r2 == Some(libc::EROFS) {
            Ok(())
        } else {
            Err(format!("{r1:?} {r2:?}"))
        }
    });
    check("proc shows only the jail", || {
        let pids: BTreeSet<String> = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
            .collect();
        if std::process::id() == 1 && pids == BTreeSet::from(["1".to_string()]) {
            Ok(())
        } else {
            Err(format!("self {} sees {pids:?}", std::process::id()))
        }
    });
    check("home writable", || fs::write(home.join("probe"), "x").map_err(|e| e.to_string()));
    check("tmp and logs are the home's", || {
        fs::write("/tmp/probe", "t").map_err(|e| e.to_string())?;
        let a = fs::read_to_string(home.join("tmp/probe")).map_err(|e| e.to_string())?;
        let b = fs::metadata("/var/log/emperor.log").map_err(|e| e.to_string())?;
        let c = fs::read_to_string("/usr/local/probe").map_err(|e| e.to_string())?;
        if a == "t" && b.is_file() && c == "x" {
            Ok(())
        } else {
            Err("contents differ".into())
        }
    });
    check("customer-writable mounts are nosuid,nodev", || {
        let opts = mount_options();
        let mut bad = Vec::new();
        for m in [
            home.to_str().unwrap(),
            "/usr/local",
            "/tmp",
            "/var/tmp",
            "/var/log",
            "/var/spool",
            "/run",
            "/run/shm",
            "/dev/shm",
            "/etc/hosts",
            "/etc/hostname",
            "/etc/resolv.conf",
        ] {
            match opts.iter().rev().find(|(p, _)| p == m) {
                Some((_, o)) if o.split(',').any(|x| x == "nosuid") && o.split(',').any(|x| x == "nodev") => {}
                other => bad.push(format!("{m}: {other:?}")),
            }
            let v = nix::sys::statvfs::statvfs(m).map_err(|e| format!("{m}: {e}"))?;
            let f = v.flags();
            if !f.contains(nix::sys::statvfs::FsFlags::ST_NOSUID) || !f.contains(nix::sys::statvfs::FsFlags::ST_NODEV) {
                bad.push(format!("{m}: statvfs {f:?}"));
            }
        }
        for (m, ro) in [("/", true), ("/opt/unbit", true)] {
            let o = &opts.iter().rev().find(|(p, _)| p == m).ok_or(format!("{m} not mounted"))?.1;
            if ro && !o.starts_with("ro") {
                bad.push(format!("{m} not read-only: {o}"));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("; "))
        }
    });
    check("host files unreachable", || {
        let mut seen = Vec::new();
        for p in [
            ctx.host_secret.clone(),
            ctx.neighbour.join("secret"),
            PathBuf::from("/containers").join((uid + 1).to_string()),
        ] {
            if fs::symlink_metadata(&p).is_ok() {
                seen.push(p.display().to_string());
            }
        }
        let containers: Vec<String> =
            fs::read_dir("/containers").unwrap().filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        if containers != [uid.to_string()] {
            seen.push(format!("/containers lists {containers:?}"));
        }
        if seen.is_empty() {
            Ok(())
        } else {
            Err(seen.join(", "))
        }
    });
    check("minimal /dev", || {
        let names: BTreeSet<String> =
            fs::read_dir("/dev").unwrap().filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        let want: BTreeSet<String> = [
            "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd", "stdin",
            "stdout", "stderr",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut urandom = [0u8; 8];
        let rnd = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut urandom));
        let null = fs::write("/dev/null", "x");
        let pty = nix::pty::posix_openpt(nix::fcntl::OFlag::O_RDWR);
        if names == want && rnd.is_ok() && null.is_ok() && pty.is_ok() {
            Ok(())
        } else {
            Err(format!("{names:?} urandom {rnd:?} null {null:?} ptmx {:?}", pty.err()))
        }
    });
    check("etc files from the home", || {
        let h = fs::read_to_string("/etc/hostname").map_err(|e| e.to_string())?;
        let hosts = fs::read_to_string("/etc/hosts").map_err(|e| e.to_string())?;
        let sc = fs::read_to_string("/opt/unbit/shortcuts.ini").map_err(|e| e.to_string())?;
        if h == format!("{}\n", ctx.spec.hostname()) && hosts.contains("10.0.0.1 gateway") && sc == "[uwsgi]\n" {
            Ok(())
        } else {
            Err(format!("{h:?} {hosts:?} {sc:?}"))
        }
    });
    check("only fds 0-2 survive", || {
        let fds: Vec<String> = fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.parse::<i32>().unwrap_or(0) > 3)
            .collect();
        // fd 3 is read_dir's own handle.
        if fds.is_empty() {
            Ok(())
        } else {
            Err(format!("open fds {fds:?}"))
        }
    });
    check("own network namespace (only lo)", || {
        let dev = fs::read_to_string("/proc/net/dev").map_err(|e| e.to_string())?;
        let ifs: Vec<&str> = dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
        if ifs == ["lo"] {
            Ok(())
        } else {
            Err(format!("{ifs:?}"))
        }
    });
    check("cgroup is the container's", || {
        let cg = fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let want = format!("/{uid}");
        let ok = ["memory", "pids", "cpu"].iter().all(|c| {
            cg.lines()
                .any(|l| l.split(':').nth(1).is_some_and(|cs| cs.split(',').any(|x| x == *c)) && l.ends_with(&want))
        });
        if ok {
            Ok(())
        } else {
            Err(cg)
        }
    });
    check("guest binaries run unprivileged", || {
        let out = std::process::Command::new("/bin/busybox").args(["id", "-u"]).output().map_err(|e| e.to_string())?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if s == uid.to_string() {
            Ok(())
        } else {
            Err(format!("id -u said {s:?}"))
        }
    });
}

fn security_checks(ctx: &Ctx) {
    use nix::mount::{mount, umount, MsFlags};
    // Processes of the host.
    attempt("signal the host's test process", nix_res(nix::sys::signal::kill(Pid::from_raw(ctx.parent_pid), None)));
    attempt("read /proc/<host pid>", io_res(fs::read_to_string(format!("/proc/{}/status", ctx.parent_pid))));
    // Other containers and the host filesystem.
    attempt("read the neighbour's home by host path", io_res(fs::read(ctx.neighbour.join("secret"))));
    attempt("list /containers/<neighbour>", io_res(fs::read_dir(format!("/containers/{}", ctx.spec.uid + 1))));
    attempt("read the host secret", io_res(fs::read(&ctx.host_secret)));
    attempt("write /etc/passwd", io_res(fs::OpenOptions::new().append(true).open("/etc/passwd")));
    attempt("create /bin/evil", io_res(fs::write("/bin/evil", "x")));
    attempt("write /opt/unbit", io_res(fs::write("/opt/unbit/evil.ini", "x")));
    attempt("reach the cgroupfs", io_res(fs::read_dir("/sys/fs/cgroup")));
    // Privileged operations.
    attempt(
        "mount tmpfs on /tmp",
        nix_res(mount(Some("tmpfs"), "/tmp", Some("tmpfs"), MsFlags::empty(), None::<&str>)),
    );
    attempt(
        "remount / read-write",
        nix_res(mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_BIND, None::<&str>)),
    );
    attempt("umount /proc", nix_res(umount("/proc")));
    attempt("sethostname", nix_res(nix::unistd::sethostname("evil")));
    attempt("chroot", nix_res(nix::unistd::chroot("/tmp")));
    attempt("setuid(0)", nix_res(nix::unistd::setuid(nix::unistd::Uid::from_raw(0))));
    attempt(
        "mknod a block device",
        nix_res(nix::sys::stat::mknod(
            "/tmp/sda",
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(8, 0),
        )),
    );
    attempt("open /dev/mem", io_res(fs::File::open("/dev/mem")));
    attempt("load a kernel module (finit_module)", {
        let f = fs::File::open("/dev/null").unwrap();
        // SAFETY: finit_module with a valid fd and an empty argument string.
        let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
        }
    });
    attempt("init_module", {
        // SAFETY: init_module with an empty image and argument string.
        let r = unsafe { libc::syscall(libc::SYS_init_module, std::ptr::null::<u8>(), 0usize, c"".as_ptr()) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
        }
    });
    attempt("write a sysctl", io_res(fs::write("/proc/sys/kernel/hostname", "evil")));
    attempt("sysrq-trigger", io_res(fs::write("/proc/sysrq-trigger", "h")));
    // An fd inherited from the host (opened without O_CLOEXEC before the clone).
    attempt("use the inherited host fd", nix_res(nix::sys::stat::fstat(ctx.inherited)));
    attempt(
        "openat(inherited fd, \"..\")",
        nix_res(nix::fcntl::openat(
            Some(ctx.inherited),
            "..",
            nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        )),
    );
    // A user namespace does not unlock the mounts: in a child, unshare user+mount and try to
    // make / writable or write the host secret's path.
    attempt("user namespace: remount / rw or write under /", {
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                let code = match nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
                    Err(_) => 10, // user namespaces disabled: nothing to try
                    Ok(()) => {
                        let rw = mount(
                            None::<&str>,
                            "/",
                            None::<&str>,
                            MsFlags::MS_REMOUNT | MsFlags::MS_BIND,
                            None::<&str>,
                        );
                        let w = fs::write("/userns-evil", "x");
                        if rw.is_ok() || w.is_ok() {
                            0
                        } else {
                            11
                        }
                    }
                };
                // SAFETY: leaving the forked child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                Ok(WaitStatus::Exited(_, c)) => Err(c),
                _ => Err(-1),
            },
            Err(e) => Err(e as i32),
        }
    });
    println!("INFO hostname_after {}", nix::unistd::gethostname().unwrap().to_string_lossy());
}

fn memory_hog(ctx: &Ctx) {
    let limit = (ctx.spec.memory_mb << 20) as usize;
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // Touch 4x the limit, page by page.
            let mut v: Vec<Vec<u8>> = Vec::new();
            for _ in 0..(4 * limit / (1 << 20)) {
                v.push(vec![1u8; 1 << 20]);
            }
            println!("FAIL hog survived with {} MiB", v.len());
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _)) => println!("OK hog killed by SIGKILL"),
            other => println!("FAIL hog ended with {other:?}"),
        },
        Err(e) => println!("FAIL fork: {e}"),
    }
}

fn fork_bomb(ctx: &Ctx) {
    let mut children = Vec::new();
    let errno = loop {
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                nix::unistd::pause();
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(0) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => children.push(child),
            Err(e) => break e,
        }
        if children.len() > 10 * ctx.spec.pids_limit as usize {
            break nix::errno::Errno::UnknownErrno;
        }
    };
    println!("INFO forks {}", children.len());
    println!("INFO fork_errno {}", errno as i32);
    for c in &children {
        let _ = nix::sys::signal::kill(*c, Signal::SIGKILL);
    }
    for c in children {
        let _ = waitpid(c, None);
    }
}

fn fill_home(ctx: &Ctx) {
    let path = format!("/containers/{}/tmp/big", ctx.spec.uid);
    let mut f = match fs::File::create(&path) {
        Ok(f) => f,
        Err(e) => return println!("FAIL create {path}: {e}"),
    };
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0u64;
    let errno = loop {
        if let Err(e) = std::io::Write::write_all(&mut f, &chunk).and_then(|_| f.sync_data()) {
            break e.raw_os_error().unwrap_or(-1);
        }
        written += 1;
        if written > 4 * ctx.spec.storage_mb {
            break 0;
        }
    };
    println!("INFO written_mb {written}");
    println!("INFO write_errno {errno}");
}

fn nothing(_: &Ctx) {}

fn run_uwsgi(_: &Ctx) {
    match std::process::Command::new("/usr/bin/uwsgi").arg("--version").output() {
        Ok(o) if o.status.success() => println!("INFO uwsgi_version {}", String::from_utf8_lossy(&o.stdout).trim()),
        Ok(o) => println!("FAIL uwsgi --version: {} {}", o.status, String::from_utf8_lossy(&o.stderr)),
        Err(e) => println!("FAIL exec /usr/bin/uwsgi: {e}"),
    }
    for p in ["python3_plugin.so", "psgi_plugin.so", "rack_ruby31_plugin.so"] {
        let path = format!("/usr/lib/uwsgi/plugins/{p}");
        if !std::path::Path::new(&path).exists() {
            println!("FAIL missing {path}");
        }
    }
    // Debian's python3 plugin, through uWSGI's own runner (the distro has no python3 binary).
    if let Err(e) = fs::write("/tmp/probe.py", "import os; print('uid', os.getuid())\n") {
        return println!("FAIL write /tmp/probe.py: {e}");
    }
    match std::process::Command::new("/usr/bin/uwsgi")
        .args(["--plugin", "python3", "--pyrun", "/tmp/probe.py"])
        .output()
    {
        // uWSGI sends the script's stdout to its log, stderr.
        Ok(o) => match String::from_utf8_lossy(&o.stderr).lines().find_map(|l| l.strip_prefix("uid ")) {
            Some(uid) => println!("INFO python3_uid {uid}"),
            None => println!("FAIL uwsgi --pyrun: {} {:?}", o.status, String::from_utf8_lossy(&o.stderr)),
        },
        Err(e) => println!("FAIL exec uwsgi --pyrun: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios.

type Outcome = Result<(), String>;
type Scenario = fn() -> Outcome;

fn expect_clean(r: &Report) -> Outcome {
    let f = r.failures();
    if !f.is_empty() {
        return Err(format!(
            "{} failure(s):\n  {}",
            f.len(),
            f.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  ")
        ));
    }
    if !matches!(r.status, WaitStatus::Exited(_, 0)) {
        return Err(format!("jailed child ended with {:?}; output:\n{}", r.status, r.lines.join("\n")));
    }
    Ok(())
}

fn jail_view_from_inside() -> Outcome {
    let fx = Fixture::new(|_| {});
    let r = run_jailed(&fx, -1, view_checks);
    for l in &r.lines {
        println!("    {l}");
    }
    expect_clean(&r)?;
    let oks = r.count("OK ");
    if oks != 15 {
        return Err(format!("expected 15 checks, {oks} passed"));
    }
    // The limits the child wrote, seen from the host.
    let base = |c: &str| PathBuf::from(format!("/sys/fs/cgroup/{c}/{}/{}", fx.paths.cgroup_name, fx.spec.uid));
    let read =
        |p: PathBuf| fs::read_to_string(&p).map(|s| s.trim().to_string()).map_err(|e| format!("{}: {e}", p.display()));
    let mem = read(base("memory").join("memory.limit_in_bytes"))?;
    let pids = read(base("pids").join("pids.max"))?;
    let shares = read(base("cpu").join("cpu.shares"))?;
    let swappiness = read(base("memory").join("memory.swappiness"))?;
    if (mem.as_str(), pids.as_str(), shares.as_str(), swappiness.as_str()) != ("67108864", "32", "1024", "0") {
        return Err(format!("limits {mem} {pids} {shares} {swappiness}"));
    }
    Ok(())
}

fn security_attempts_from_inside() -> Outcome {
    let fx = Fixture::new(|_| {});
    let host_name = nix::unistd::gethostname().unwrap();
    // A host directory fd without O_CLOEXEC, inherited by the clone like the original's
    // openat_alarm fd (WEAK-5).
    let raw = nix::fcntl::open(
        fx.tmp.path(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    // SAFETY: a fresh fd we own.
    let inherited = unsafe { OwnedFd::from_raw_fd(raw) };
    let r = run_jailed(&fx, inherited.as_raw_fd(), security_checks);
    for l in &r.lines {
        println!("    {l}");
    }
    expect_clean(&r)?;
    let denied = r.count("DENIED ");
    let succeeded = r.count("FAIL attack");
    println!("    -> {} attacks attempted, {denied} denied, {succeeded} succeeded", denied + succeeded);
    if denied != 24 {
        return Err(format!("expected 24 denied attempts, got {denied}"));
    }
    if r.info("hostname_after") != Some(fx.spec.hostname().as_str()) {
        return Err("the container's hostname changed".into());
    }
    if nix::unistd::gethostname().unwrap() != host_name {
        return Err("the host's hostname changed".into());
    }
    Ok(())
}

fn memory_hog_is_oom_killed() -> Outcome {
    let fx = Fixture::new(|s| s.memory_mb = 32);
    let before = oom_kill_count(&fx.paths, fx.spec.uid).map_err(|e| e.to_string())?;
    let r = run_jailed(&fx, -1, memory_hog);
    for l in &r.lines {
        println!("    {l}");
    }
    expect_clean(&r)?;
    let after = oom_kill_count(&fx.paths, fx.spec.uid).map_err(|e| e.to_string())?;
    println!("    oom_kill_count {before} -> {after}");
    if after <= before {
        return Err(format!("oom_kill_count did not rise ({before} -> {after})"));
    }
    Ok(())
}

fn fork_bomb_stops_at_pids_max() -> Outcome {
    let fx = Fixture::new(|s| s.pids_limit = 32);
    let r = run_jailed(&fx, -1, fork_bomb);
    for l in &r.lines {
        println!("    {l}");
    }
    expect_clean(&r)?;
    let forks: usize = r.info("forks").and_then(|v| v.parse().ok()).ok_or("no fork count")?;
    let errno: i32 = r.info("fork_errno").and_then(|v| v.parse().ok()).ok_or("no errno")?;
    // pid 1 (the checker) counts against the limit.
    if forks != 31 || errno != libc::EAGAIN {
        return Err(format!("{forks} forks, then errno {errno}; expected 31 then EAGAIN"));
    }
    Ok(())
}

/// The home is a 20 MiB quota image; the container uid writes until the disk says no.
fn quota_from_inside() -> Outcome {
    let fx = Fixture::with_image(|s| s.storage_mb = 20, true);
    let r = run_jailed(&fx, -1, fill_home);
    for l in &r.lines {
        println!("    {l}");
    }
    expect_clean(&r)?;
    let mb: u64 = r.info("written_mb").and_then(|v| v.parse().ok()).ok_or("no count")?;
    let errno: i32 = r.info("write_errno").and_then(|v| v.parse().ok()).ok_or("no errno")?;
    if errno != libc::ENOSPC || !(10..=20).contains(&mb) {
        return Err(format!("wrote {mb} MiB then errno {errno}; expected at most 20 MiB then ENOSPC"));
    }
    Ok(())
}

fn release_removes_only_our_cgroups() -> Outcome {
    let fx = Fixture::new(|_| {});
    let r = run_jailed(&fx, -1, nothing);
    expect_clean(&r)?;
    let dirs: Vec<PathBuf> = ["memory", "cpu", "pids"]
        .iter()
        .map(|c| PathBuf::from(format!("/sys/fs/cgroup/{c}/{}/{}", fx.paths.cgroup_name, fx.spec.uid)))
        .collect();
    if !dirs.iter().all(|d| d.is_dir()) {
        return Err("cgroups not created".into());
    }
    release(&fx.paths, fx.spec.uid).map_err(|e| e.to_string())?;
    if let Some(d) = dirs.iter().find(|d| d.exists()) {
        return Err(format!("{} still there", d.display()));
    }
    // The home stays.
    if !fx.paths.containers.join(fx.spec.uid.to_string()).join("etc/hostname").is_file() {
        return Err("release removed the home".into());
    }
    // Releasing twice is fine.
    release(&fx.paths, fx.spec.uid).map_err(|e| e.to_string())
}

/// cgroup v2 for real on the unified mount of this hybrid host: it has no memory/cpu/pids,
/// so `ensure` must refuse clearly; joining, reading the OOM count and removing with
/// `cgroup.kill` work on the bare hierarchy.
fn cgroup_v2_on_the_unified_mount() -> Outcome {
    use jail::cgroup::{manager_for, CgroupSetup, Limits};
    let unified = PathBuf::from("/sys/fs/cgroup/unified");
    if !unified.join("cgroup.procs").exists() {
        return Err("no cgroup2 mount at /sys/fs/cgroup/unified".into());
    }
    let name = unique("unbit-test");
    let sys = jail::linux::Linux;
    let cg = manager_for(&sys, &CgroupSetup::Unified { root: unified.clone() }, &name).map_err(|e| e.to_string())?;
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir(self.0.join("30001"));
            let _ = fs::remove_dir(&self.0);
        }
    }
    let _c = Cleanup(unified.join(&name));
    let limits = Limits { memory_bytes: 64 << 20, cpu_weight: 100, pids_max: 32 };
    let controllers = fs::read_to_string(unified.join("cgroup.controllers")).unwrap_or_default();
    match cg.ensure(30001, &limits) {
        Err(e) if !controllers.contains("memory") => {
            let s = e.to_string();
            if !s.contains("'memory'") || !s.contains("cgroup.controllers") {
                return Err(format!("unclear error: {s}"));
            }
            println!("    ensure refused as expected: {s}");
            fs::create_dir_all(unified.join(&name).join("30001")).map_err(|e| e.to_string())?;
        }
        Err(e) => return Err(e.to_string()),
        Ok(()) => println!("    this host's cgroup2 has the controllers: limits applied"),
    }
    // A process joins (it writes "0" itself), then is killed by remove() via cgroup.kill.
    let child = match unsafe { nix::unistd::fork() }.map_err(|e| e.to_string())? {
        nix::unistd::ForkResult::Child => {
            let code = if cg.join(30001).is_ok() { 0 } else { 1 };
            if code == 0 {
                loop {
                    nix::unistd::pause();
                }
            }
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    let _guard = ChildGuard(Some(child));
    let procs = unified.join(&name).join("30001/cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fs::read_to_string(&procs).unwrap_or_default().contains(&child.to_string()) {
        if Instant::now() > deadline {
            return Err("the child never appeared in cgroup.procs".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if cg.oom_kill_count(30001).map_err(|e| e.to_string())? != 0 {
        return Err("oom count".into());
    }
    cg.remove(30001).map_err(|e| e.to_string())?;
    if unified.join(&name).join("30001").exists() {
        return Err("not removed".into());
    }
    match waitpid(child, None) {
        Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _)) => {}
        other => return Err(format!("child {other:?}")),
    }
    cg.remove_root_if_empty().map_err(|e| e.to_string())
}

/// Opt-in (the full distro takes minutes to build): `JAIL_TEST_DISTRO=<dir>` built by
/// `scripts/build-distro.sh <dir>`; runs Debian's uwsgi and python3 inside the jail as the
/// container uid.
fn full_distro_runs_uwsgi() -> Outcome {
    let Some(dir) = std::env::var_os("JAIL_TEST_DISTRO") else {
        println!("    not run: set JAIL_TEST_DISTRO to a distro built by scripts/build-distro.sh");
        return Ok(());
    };
    let fx = Fixture::build(|_| {}, false, Some(std::path::Path::new(&dir)));
    let r = run_jailed(&fx, -1, run_uwsgi);
    for l in &r.lines {
        println!("    {l}");
    }
    expect_clean(&r)?;
    if r.info("python3_uid") != Some(fx.spec.uid.to_string().as_str()) {
        return Err("python3 did not run as the container uid".into());
    }
    Ok(())
}

/// Start-to-exit of one jailed no-op, and the time enter_jail + drop_privileges take inside.
fn enter_jail_timing() -> Outcome {
    let fx = Fixture::new(|_| {});
    let mut inside = Vec::new();
    let mut total = Vec::new();
    for i in 0..23 {
        let t = Instant::now();
        let r = run_jailed(&fx, -1, nothing);
        let dt = t.elapsed().as_micros() as u64;
        expect_clean(&r)?;
        if i >= 3 {
            total.push(dt);
            inside.push(r.info("jail_and_drop_us").and_then(|v| v.parse::<u64>().ok()).ok_or("no timing")?);
        }
    }
    let stats = |v: &mut Vec<u64>| {
        v.sort_unstable();
        format!(
            "median {:.2} ms, min {:.2}, max {:.2}",
            v[v.len() / 2] as f64 / 1e3,
            v[0] as f64 / 1e3,
            v[v.len() - 1] as f64 / 1e3
        )
    };
    println!("    enter_jail + drop_privileges, warm cgroup (in the child, 20 runs): {}", stats(&mut inside));
    println!("    clone -> jailed no-op -> reaped, warm cgroup (20 runs):            {}", stats(&mut total));
    // Cold: the container's cgroups are created by the jailed child itself.
    let (mut cold_inside, mut cold_total, mut prep) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..10 {
        release(&fx.paths, fx.spec.uid).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let r = run_jailed(&fx, -1, nothing);
        cold_total.push(t.elapsed().as_micros() as u64);
        expect_clean(&r)?;
        cold_inside.push(r.info("jail_and_drop_us").and_then(|v| v.parse::<u64>().ok()).ok_or("no timing")?);
        release(&fx.paths, fx.spec.uid).map_err(|e| e.to_string())?;
        let t = Instant::now();
        jail::prepare_cgroup(&fx.paths, &fx.spec).map_err(|e| e.to_string())?;
        prep.push(t.elapsed().as_micros() as u64);
    }
    println!("    enter_jail + drop_privileges, new cgroup (10 runs):                {}", stats(&mut cold_inside));
    println!("    clone -> jailed no-op -> reaped, new cgroup (10 runs):             {}", stats(&mut cold_total));
    println!("    prepare_cgroup in the parent, new cgroup (10 runs):               {}", stats(&mut prep));
    Ok(())
}

fn main() {
    require_root();
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let scenarios: &[(&str, Scenario)] = &[
        ("jail_view_from_inside", jail_view_from_inside),
        ("security_attempts_from_inside", security_attempts_from_inside),
        ("memory_hog_is_oom_killed", memory_hog_is_oom_killed),
        ("fork_bomb_stops_at_pids_max", fork_bomb_stops_at_pids_max),
        ("quota_from_inside", quota_from_inside),
        ("release_removes_only_our_cgroups", release_removes_only_our_cgroups),
        ("cgroup_v2_on_the_unified_mount", cgroup_v2_on_the_unified_mount),
        ("enter_jail_timing", enter_jail_timing),
        ("full_distro_runs_uwsgi", full_distro_runs_uwsgi),
    ];
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, f) in scenarios {
        if filter.as_deref().is_some_and(|flt| !name.contains(flt)) {
            continue;
        }
        ran += 1;
        println!("scenario {name}");
        let r = std::panic::catch_unwind(f).unwrap_or_else(|p| {
            Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default())
        });
        match r {
            Ok(()) => println!("scenario {name} ... ok"),
            Err(e) => {
                println!("scenario {name} ... FAILED: {e}");
                failed.push(*name);
            }
        }
    }
    println!("\nroot_jail: {} scenarios, {} failed {:?}", ran, failed.len(), failed);
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
