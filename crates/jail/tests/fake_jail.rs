//! The jail sequence against the recording fake (no root): cgroup first, mounts private,
//! every customer-writable bind remounted nosuid,nodev on the new mount, read-only platform
//! trees, no symlink ever traversed in a customer tree, pivot_root after every mount.

mod common;

use common::{fake_node, spec, UID};
use container_spec::Distro;
use jail::cgroup::{manager_for, CgroupSetup};
use jail::fake::{Call, Fake};
use jail::quota::NoQuota;
use jail::syscalls::{RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS};
use jail::{enter_jail_with, prepare_home_with, JailError, NodePaths};
use nix::mount::MsFlags;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn v1_setup() -> CgroupSetup {
    let mut v1 = BTreeMap::new();
    for c in ["memory", "cpu", "pids"] {
        v1.insert(c.to_string(), PathBuf::from(format!("/sys/fs/cgroup/{c}")));
    }
    CgroupSetup::Hybrid { v1, unified: "/sys/fs/cgroup/unified".into() }
}

fn run(f: &Fake, paths: &NodePaths, s: &container_spec::ContainerSpec) -> Result<(), JailError> {
    let cg = manager_for(f, &v1_setup(), &paths.cgroup_name).unwrap();
    enter_jail_with(f, paths, s, cg.as_ref())
}

fn prepared() -> (Fake, NodePaths) {
    let (f, paths) = fake_node();
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
    f.clear_calls();
    (f, paths)
}

struct MountCall {
    index: usize,
    source: Option<PathBuf>,
    target: PathBuf,
    fstype: Option<String>,
    flags: MsFlags,
    data: Option<String>,
}

fn mounts(calls: &[Call]) -> Vec<MountCall> {
    calls
        .iter()
        .enumerate()
        .filter_map(|(index, c)| match c {
            Call::Mount { source, target, fstype, flags, data } => Some(MountCall {
                index,
                source: source.clone(),
                target: target.clone(),
                fstype: fstype.clone(),
                flags: *flags,
                data: data.clone(),
            }),
            _ => None,
        })
        .collect()
}

fn is_bind(m: &MountCall) -> bool {
    m.flags.contains(MsFlags::MS_BIND) && !m.flags.contains(MsFlags::MS_REMOUNT)
}

/// The remount that follows the bind on the same target.
fn remount_after<'a>(all: &'a [MountCall], bind: &MountCall) -> Option<&'a MountCall> {
    all.iter().find(|m| {
        m.index > bind.index && m.target == bind.target && m.flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_BIND)
    })
}

#[test]
fn the_whole_sequence_in_order() {
    let (f, paths) = prepared();
    run(&f, &paths, &spec(UID)).unwrap();
    let calls = f.calls();
    let ms = mounts(&calls);
    let jail = &paths.jail_root;
    let home = paths.containers.join(UID.to_string());

    // 1. cgroup joined before any mount, limits written before joining.
    let limit = calls
        .iter()
        .position(|c| {
            matches!(c, Call::WriteFile { path, data }
                if path.ends_with(format!("unbit/{UID}/memory.limit_in_bytes")) && data == "67108864")
        })
        .expect("memory limit written");
    let joins: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, Call::WriteFile { path, data } if path.ends_with("cgroup.procs") && data == "0"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(joins.len(), 3, "memory, cpu and pids joined");
    assert!(limit < joins[0] && joins[2] < ms[0].index);

    // 2. Mounts made private first.
    assert_eq!(ms[0].target, Path::new("/"));
    assert_eq!(ms[0].flags, MsFlags::MS_REC | MsFlags::MS_PRIVATE);

    // 3. The distro bound on the jail root and made read-only, nosuid, nodev.
    assert_eq!(ms[1].source.as_deref(), Some(paths.distros.join("bookworm").as_path()));
    assert_eq!(&ms[1].target, jail);
    let ro = remount_after(&ms, &ms[1]).expect("distro remounted");
    assert!(ro.flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV));

    // 4. Every bind of something the customer can write is remounted nosuid,nodev; the
    //    platform dir read-only.
    let mut customer_binds = 0;
    for b in ms.iter().filter(|m| is_bind(m)) {
        let src = b.source.as_ref().unwrap();
        let r = remount_after(&ms, b).unwrap_or_else(|| panic!("bind on {} never remounted", b.target.display()));
        assert!(r.flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NODEV), "{} lacks nosuid,nodev", b.target.display());
        if src.starts_with(&home) {
            customer_binds += 1;
        }
        if src == &paths.platform_dir {
            assert!(r.flags.contains(MsFlags::MS_RDONLY));
            assert_eq!(b.target, jail.join("opt/unbit"));
        }
    }
    // home x2 (/containers/<uid>, /usr/local), run, tmp, var/tmp, var/log, var/spool, 3 etc files
    assert_eq!(customer_binds, 10);

    // 5. Where things land.
    let bound = |target: &str| -> PathBuf {
        ms.iter()
            .find(|m| is_bind(m) && m.target == jail.join(target))
            .and_then(|m| m.source.clone())
            .unwrap_or_else(|| panic!("nothing bound on {target}"))
    };
    assert_eq!(bound(&format!("containers/{UID}")), home);
    assert_eq!(bound("usr/local"), home);
    assert_eq!(bound("tmp"), home.join("tmp"));
    assert_eq!(bound("var/tmp"), home.join("tmp"));
    assert_eq!(bound("var/log"), home.join("logs"));
    assert_eq!(bound("var/spool"), home.join("run/spool"));
    assert_eq!(bound("run"), home.join("run"));
    assert_eq!(bound("run/shm"), jail.join("dev/shm"));
    assert_eq!(bound("run/subscribe"), PathBuf::from("/subscribe"));
    assert_eq!(bound("etc/hosts"), home.join("etc/hosts"));
    assert_eq!(bound("etc/hostname"), home.join("etc/hostname"));
    assert_eq!(bound("etc/resolv.conf"), home.join("etc/resolv.conf"));

    // 6. Fresh kernel filesystems.
    let fs = |target: &str| ms.iter().find(|m| m.target == jail.join(target) && m.fstype.is_some()).unwrap();
    let proc_ = fs("proc");
    assert_eq!(proc_.fstype.as_deref(), Some("proc"));
    assert_eq!(proc_.data.as_deref(), Some("hidepid=2"));
    assert_eq!(fs("dev").fstype.as_deref(), Some("tmpfs"));
    assert!(fs("dev").flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC));
    assert_eq!(fs("dev/pts").data.as_deref(), Some("newinstance,ptmxmode=0666,mode=0620"));
    let shm = fs("dev/shm");
    assert!(shm.flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NODEV));
    assert!(shm.data.as_deref().unwrap().contains("size=67108864"));
    let devs: Vec<&str> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Mknod { path, .. } => path.file_name().and_then(|n| n.to_str()),
            _ => None,
        })
        .collect();
    assert_eq!(devs, ["null", "zero", "full", "random", "urandom", "tty"]);
    assert!(calls.contains(&Call::Symlink { target: "pts/ptmx".into(), path: jail.join("dev/ptmx") }));

    // 7. hostname, then pivot_root after the last mount, then the old root detached.
    assert_eq!(f.hostname_calls(), vec!["my-app".to_string()]);
    let pivot = calls.iter().position(|c| matches!(c, Call::PivotRoot { .. })).unwrap();
    assert_eq!(calls[pivot], Call::PivotRoot { new_root: jail.clone(), put_old: jail.clone() });
    assert!(ms.iter().all(|m| m.index < pivot), "a mount after pivot_root");
    assert!(
        matches!(&calls[pivot + 1], Call::Umount { flags, .. } if flags.contains(nix::mount::MntFlags::MNT_DETACH))
    );
    assert!(calls[pivot..].iter().any(|c| matches!(c, Call::WriteFile { path, data }
        if path == Path::new("/proc/sys/kernel/shmmax") && data == "67108864")));

    // 8. Every lookup in the jail tree or the home refused symlinks.
    for c in &calls {
        if let Call::Open { path, resolve, .. } = c {
            if (path.starts_with(jail) && path != jail) || (path.starts_with(&home) && path != &home) {
                assert_eq!(
                    resolve & (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS),
                    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
                    "{c:?}"
                );
            }
        }
    }
}

#[test]
fn the_view_is_what_the_container_sees() {
    let (f, paths) = prepared();
    run(&f, &paths, &spec(UID)).unwrap();
    let j = &paths.jail_root;
    let text = |p: &str| String::from_utf8(f.node_in_view(j.join(p)).unwrap().data).unwrap();
    assert_eq!(text("etc/hostname"), "my-app\n");
    assert_eq!(text(&format!("containers/{UID}/etc/hostname")), "my-app\n");
    assert_eq!(text("usr/local/etc/hostname"), "my-app\n");
    assert_eq!(text("opt/unbit/shortcuts.ini"), "[uwsgi]\n");
    assert!(f.node_in_view(j.join("bin/sh")).is_some(), "the distro is the root");
    assert!(f.node_in_view(j.join("containers/30002")).is_none());
    assert!(f.node_in_view(j.join("dev/null")).is_some());
    assert!(f.node_in_view(j.join("dev/sda")).is_none());
}

#[test]
fn a_symlink_planted_on_a_mountpoint_in_the_home_stops_the_jail() {
    for (planted, target) in [("run/shm", "/etc"), ("run/spool", "/"), ("etc/hosts", "/etc/shadow"), ("tmp", "/")] {
        let (f, paths) = prepared();
        let home = paths.containers.join(UID.to_string());
        f.symlink(home.join(planted), target);
        let e = run(&f, &paths, &spec(UID)).unwrap_err();
        assert!(matches!(e, JailError::Planted { .. }), "{planted}: {e}");
        assert!(e.to_string().contains(planted), "{e}");
        // Nothing was ever mounted on or from the link's target.
        for m in mounts(&f.calls()).iter().skip(1) {
            assert!(m.target.starts_with(&paths.jail_root), "mounted on {}", m.target.display());
            if let Some(src) = &m.source {
                assert!(!src.starts_with("/etc") && src != Path::new("/"), "mounted {}", src.display());
            }
        }
        assert!(!f.calls().iter().any(|c| matches!(c, Call::PivotRoot { .. })));
    }
}

/// Every mountpoint the jail needs in a custom distro image at `image`, owned by `storage`.
fn image_mountpoints(f: &Fake, image: &std::path::Path, storage: u32) {
    for m in jail::JAIL_MOUNTPOINTS {
        if m.starts_with("etc/") {
            f.file(image.join(m), storage, b"");
        } else {
            f.dir(image.join(m), storage, 0o755);
        }
    }
}

#[test]
fn a_custom_distro_with_a_symlinked_mountpoint_is_refused() {
    let (f, paths) = prepared();
    let storage = 30002;
    let image = paths.containers.join(format!("{storage}/distros/myimage"));
    image_mountpoints(&f, &image, storage);
    // The customer's image points its /tmp at the host's /etc.
    f.symlink(image.join("tmp"), "/etc");
    let mut s = spec(UID);
    s.distro = Distro::Custom { storage_uid: storage, path: "myimage".into(), fallback: None };
    let e = run(&f, &paths, &s).unwrap_err();
    assert!(e.to_string().contains("tmp"), "{e}");
    assert!(matches!(e, JailError::Planted { .. }));

    // The image reached through a symlink is refused as well.
    let (f, paths) = prepared();
    f.dir(paths.containers.join(format!("{storage}/distros")), storage, 0o755);
    f.symlink(paths.containers.join(format!("{storage}/distros/myimage")), "/");
    let e = run(&f, &paths, &s).unwrap_err();
    assert!(matches!(e, JailError::Planted { .. }), "{e}");
}

#[test]
fn the_custom_distro_check_lists_what_an_image_lacks_and_refuses_symlinks() {
    let (f, paths) = prepared();
    let storage = 30002;
    let image = paths.containers.join(format!("{storage}/distros/myimage"));
    let distro = Distro::Custom { storage_uid: storage, path: "myimage".into(), fallback: Some("bookworm".into()) };
    f.dir(image.clone(), storage, 0o755);
    image_mountpoints(&f, &image, storage);
    // No /.old_root: named; an /etc entry that is a symlink: named with what it is.
    f.symlink(image.join("etc/resolv.conf"), "../run/resolv.conf");
    let e = jail::check_custom_distro_with(&f, &paths, &distro).unwrap_err().to_string();
    assert!(e.contains("lacks /.old_root, /etc/resolv.conf (is a symlink)"), "{e}");
    f.dir(image.join(".old_root"), storage, 0o755);
    f.file(image.join("etc/resolv.conf"), storage, b"");
    jail::check_custom_distro_with(&f, &paths, &distro).unwrap();
    // Nothing was mounted or changed by the check.
    assert!(!f.calls().iter().any(|c| matches!(c, Call::Mount { .. } | Call::PivotRoot { .. })));
    // The image itself reached through a symlink is refused.
    let (f, paths) = prepared();
    f.dir(paths.containers.join(format!("{storage}/distros")), storage, 0o755);
    f.symlink(paths.containers.join(format!("{storage}/distros/myimage")), "/");
    assert!(jail::check_custom_distro_with(&f, &paths, &distro).is_err());
}

#[test]
fn a_distro_without_opt_unbit_is_reported() {
    let (f, paths) = prepared();
    // Recreate the distro without the mountpoint.
    let distro = paths.distros.join("bookworm");
    f.edit(distro.join("opt/unbit"), |n| n.kind = jail::syscalls::FileKind::Other);
    let e = run(&f, &paths, &spec(UID)).unwrap_err();
    assert!(e.to_string().contains("opt/unbit"), "{e}");
}

#[test]
fn a_failing_mount_names_container_operation_and_path() {
    let (f, paths) = prepared();
    f.fail("mount", "var/log", libc::EPERM);
    let e = run(&f, &paths, &spec(UID)).unwrap_err();
    let s = e.to_string();
    assert!(s.starts_with(&format!("container {UID}: mount (bind) ")), "{s}");
    assert!(s.contains("var/log"), "{s}");
    assert_eq!(e.errno(), Some(libc::EPERM));
}

#[test]
fn the_container_user_is_added_to_read_only_root_owned_copies_of_the_distro_user_db() {
    let (f, paths) = prepared();
    let distro = paths.distros.join("bookworm");
    f.file(distro.join("etc/passwd"), 0, b"root:x:0:0:root:/root:/bin/bash\nsneaky:x:30001:0::/:/bin/sh\n");
    f.file(distro.join("etc/group"), 0, b"root:x:0:\n");
    f.file(distro.join("usr/bin/bash"), 0, b"\x7fELF");
    run(&f, &paths, &spec(UID)).unwrap();
    let calls = f.calls();
    let ms = mounts(&calls);
    let jail = &paths.jail_root;
    let home = paths.containers.join(UID.to_string());
    for (name, expected) in [
        ("passwd", format!("root:x:0:0:root:/root:/bin/bash\n{UID}:x:{UID}:{UID}::/containers/{UID}:/bin/bash\n")),
        ("group", format!("root:x:0:\n{UID}:x:{UID}:\n")),
    ] {
        let target = jail.join("etc").join(name);
        let b = ms.iter().find(|m| is_bind(m) && m.target == target).unwrap_or_else(|| panic!("no bind on {name}"));
        // Made by the jail in its scratch tmpfs, never taken from the customer's home.
        let source = b.source.as_ref().unwrap();
        assert!(source.starts_with(jail.join("tmp")) && !source.starts_with(&home), "{}", source.display());
        let ro = remount_after(&ms, b).unwrap_or_else(|| panic!("{name} never remounted"));
        assert!(ro.flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV), "{name}");
        let node = f.node_in_view(&target).unwrap();
        assert_eq!(String::from_utf8_lossy(&node.data), expected);
        assert_eq!(node.uid, 0);
    }
    // The scratch tmpfs is detached from /tmp before the home's tmp is bound there.
    let scratch = ms.iter().find(|m| m.fstype.as_deref() == Some("tmpfs") && m.target == jail.join("tmp")).unwrap();
    let detached = calls
        .iter()
        .position(|c| matches!(c, Call::Umount { target, .. } if *target == jail.join("tmp")))
        .expect("scratch tmpfs detached");
    let home_tmp = ms.iter().find(|m| is_bind(m) && m.target == jail.join("tmp")).unwrap();
    assert!(scratch.index < detached && detached < home_tmp.index);
}
