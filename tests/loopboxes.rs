//! Loopboxes end to end (issue 16): real ext4 images made with `mkfs.ext4` in real homes, real
//! loop devices, mounted by the node Emperor into running containers as the spec folder's
//! `loopboxes.json` (what node-sync writes from the API) says; checked from inside the
//! container (as its uid, through its own namespaces) and from the host (mount tables, loop
//! devices' backing files). Root only.
//!
//! uids: 31001 (the rules), 31002 (restart and stop), 31003 and 31004 (the security suite:
//! 31004 is "another container").

use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use uwsgi_it::host::wait_until;
use uwsgi_it::node::{key_pair, spec_json, TestNode};

const T: Duration = Duration::from_secs(60);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}{}", text(&out.stdout), text(&out.stderr));
    out
}

/// Loop devices bound to a file below `root`, as `/dev/loopN -> backing file`, except the
/// node's own quota images (`.quota-images/`, the homes' filesystems when the quota backend is
/// the image one).
fn loops_below(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(b) = std::fs::read_to_string(entry.path().join("loop/backing_file")) {
            let b = b.trim_end().to_string();
            if b.starts_with(&root.to_string_lossy().to_string()) && !b.contains("/.quota-images/") {
                out.push((format!("/dev/{name}"), b));
            }
        }
    }
    out
}

/// Detaches, at the end of a test (passed or not, after the node is gone), every loop device
/// still bound to a file of the test's node.
struct LoopGuard(PathBuf);

impl Drop for LoopGuard {
    fn drop(&mut self) {
        for (dev, _) in loops_below(&self.0) {
            let _ = Command::new("losetup").arg("-d").arg(&dev).output();
        }
    }
}

/// A test node with its loopboxes file.
struct Node {
    node: TestNode,
    keys: (String, String),
}

impl Node {
    fn start() -> (LoopGuard, Node) {
        let node = TestNode::start(&[]);
        (LoopGuard(node.root.path().to_path_buf()), Node { node, keys: key_pair() })
    }

    fn run_container(&self, uid: u32, generation: u64) -> i32 {
        let mut spec: serde_json::Value = serde_json::from_str(&spec_json(
            uid,
            &format!("lb{uid}"),
            128,
            256,
            &["ssh-ed25519 AAAA loopboxes"],
            &self.keys,
        ))
        .unwrap();
        spec["reboot_generation"] = generation.into();
        self.node.put_spec(uid, &spec.to_string());
        let mut pid = None;
        wait_until(&format!("container {uid} running"), T, || {
            pid = self.pid1(uid);
            pid.is_some()
        });
        pid.unwrap()
    }

    fn pid1(&self, uid: u32) -> Option<i32> {
        jail::enter::find(self.node.emperor().pid() as i32, uid).ok().flatten().map(|c| c.pid)
    }

    fn home(&self, uid: u32) -> PathBuf {
        self.node.home(uid)
    }

    /// What node-sync would write: the node's loopboxes, atomically.
    fn set_loopboxes(&self, boxes: &[(u64, u32, &str, &str, bool)]) {
        let list: Vec<_> = boxes
            .iter()
            .map(|(id, uid, f, m, ro)| serde_json::json!({"id": id, "uid": uid, "filename": f, "mountpoint": m, "ro": ro}))
            .collect();
        let specs = self.node.root.path().join("specs");
        std::fs::write(specs.join(".loopboxes.tmp"), serde_json::to_vec(&list).unwrap()).unwrap();
        std::fs::rename(specs.join(".loopboxes.tmp"), specs.join("loopboxes.json")).unwrap();
    }

    fn wait_log(&self, uid: u32, needle: &str) -> String {
        wait_until(&format!("{needle:?} in container {uid}'s emperor.log"), T, || {
            self.node.customer_log(uid).contains(needle)
        });
        self.node.customer_log(uid)
    }

    /// `script` run by `sh` inside the container, as its uid, in its namespaces.
    fn inside(&self, uid: u32, script: &str) -> Output {
        let pid = self.pid1(uid).expect("container running");
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "-p", "-r", "-w"])
            .args(["-S", &uid.to_string(), "-G", &uid.to_string(), "--", "/bin/sh", "-c", script])
            .output()
            .unwrap()
    }

    /// The container's mounts below its home, `(mount point, fstype, source, mount and superblock
    /// options)`.
    fn mounts_inside(&self, uid: u32) -> Vec<(String, String, String, String)> {
        let pid = self.pid1(uid).expect("container running");
        mounts_of(&format!("/proc/{pid}/mountinfo"), &format!("/containers/{uid}/"))
    }
}

/// Mounts of a mountinfo file whose mount point starts with `prefix`.
fn mounts_of(mountinfo: &str, prefix: &str) -> Vec<(String, String, String, String)> {
    let info = std::fs::read_to_string(mountinfo).unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let point = f[4].to_string();
            let options = format!("{},{}", f[5], f.get(sep + 3).unwrap_or(&""));
            point.starts_with(prefix).then(|| (point, f[sep + 1].into(), f[sep + 2].into(), options))
        })
        .collect()
}

/// An ext4 image of `mb` MiB at `path`, owned by `uid`, as the quickstart makes it.
fn make_image(path: &Path, mb: u64, uid: u32) {
    run(Command::new("truncate").arg("-s").arg(format!("{mb}M")).arg(path));
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(path));
    chown(path, uid);
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

fn mkdir_as(path: &Path, uid: u32) {
    std::fs::create_dir_all(path).unwrap();
    chown(path, uid);
}

#[test]
fn loopboxes_are_mounted_into_the_running_container_and_follow_the_rules() {
    let uid = 31001;
    let (_guard, n) = Node::start();
    let pid = n.run_container(uid, 0);
    let home = n.home(uid);
    uwsgi_it::node::wait_for_path(&home.join("logs/emperor.log"), T);
    make_image(&home.join("zeus001"), 8, uid);
    make_image(&home.join("ro001"), 4, uid);
    make_image(&home.join("grow001"), 4, uid);
    for d in ["zeus", "ro", "grow"] {
        mkdir_as(&home.join(d), uid);
    }
    n.set_loopboxes(&[
        (1, uid, "zeus001", "zeus", false),
        (2, uid, "ro001", "ro", true),
        (3, uid, "grow001", "grow", false),
    ]);
    n.wait_log(uid, "loopbox 1: mounted ~/zeus001 on ~/zeus (read-write");
    n.wait_log(uid, "loopbox 2: mounted ~/ro001 on ~/ro (read-only");
    n.wait_log(uid, "loopbox 3: mounted ~/grow001 on ~/grow (read-write");
    assert_eq!(n.pid1(uid), Some(pid), "mounted without restarting the container");

    // Inside, as the customer: ext4 with the platform's options, writable and theirs.
    let mounts = n.mounts_inside(uid);
    let zeus = mounts.iter().find(|m| m.0 == format!("/containers/{uid}/zeus")).expect("zeus mounted inside");
    assert_eq!(zeus.1, "ext4");
    assert!(zeus.2.starts_with("/dev/loop"), "{zeus:?}");
    for opt in ["rw", "nosuid", "nodev", "errors=remount-ro"] {
        assert!(zeus.3.split(',').any(|o| o == opt), "{opt} missing: {zeus:?}");
    }
    let ro = mounts.iter().find(|m| m.0 == format!("/containers/{uid}/ro")).expect("ro mounted inside");
    assert!(ro.3.split(',').any(|o| o == "ro"), "{ro:?}");
    let out = n.inside(
        uid,
        &format!("cd /containers/{uid}/zeus && stat -c %u . && echo hello > f && cat f && mkdir d && stat -c %u d"),
    );
    let said = text(&out.stdout);
    assert_eq!(said, format!("{uid}\nhello\n{uid}\n"), "{}", text(&out.stderr));
    let out = n.inside(uid, &format!("echo x > /containers/{uid}/ro/f"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Read-only file system"), "{}", text(&out.stderr));
    // The host's own mount table never sees the container's mounts.
    assert!(mounts_of("/proc/self/mountinfo", &format!("{}/", home.display())).is_empty());
    let bound: Vec<String> = loops_below(n.node.root.path()).into_iter().map(|l| l.1).collect();
    assert_eq!(bound.len(), 3, "{bound:?}");

    // DELETE: unmounted, the image stays, its loop device freed.
    n.set_loopboxes(&[(2, uid, "ro001", "ro", true), (3, uid, "grow001", "grow", false)]);
    n.wait_log(uid, "loopbox 1 (~/zeus001 on ~/zeus): removed; the image stays: unmounted");
    assert!(!n.mounts_inside(uid).iter().any(|m| m.0.ends_with("/zeus")));
    assert!(home.join("zeus001").is_file());
    assert!(!home.join("zeus/f").exists(), "the customer's file was in the image, not the home");
    let zeus_image = home.join("zeus001").to_string_lossy().into_owned();
    wait_until("zeus001's loop device freed", T, || !loops_below(n.node.root.path()).iter().any(|l| l.1 == zeus_image));

    // Deleting an image unmounts it.
    std::fs::remove_file(home.join("ro001")).unwrap();
    n.wait_log(uid, "loopbox 2 (~/ro001 on ~/ro): the image was deleted: unmounted");
    assert!(!n.mounts_inside(uid).iter().any(|m| m.0.ends_with("/ro")));

    // Resizing unmounts, and mounts again about 30 s later once the size is sane.
    run(Command::new("truncate").args(["-s", "6M"]).arg(home.join("grow001")));
    let log = n.wait_log(uid, "loopbox 3 (~/grow001 on ~/grow): the image was resized (4194304 to 6291456 bytes)");
    assert!(log.contains("mounted again in 30 s"), "{log}");
    wait_until("grow unmounted", T, || !n.mounts_inside(uid).iter().any(|m| m.0.ends_with("/grow")));
    wait_until("grow mounted again", Duration::from_secs(90), || {
        n.mounts_inside(uid).iter().any(|m| m.0.ends_with("/grow"))
    });
    assert_eq!(n.pid1(uid), Some(pid), "no restart through all of it");
}

/// A stand-in for the node's alarm relay on its socket in the subscription dir (`alarms`, the
/// relay's protocol: one JSON line per alarm): collects what the Emperor hands it.
fn relay(dir: &Path) -> std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> {
    let listener = std::os::unix::net::UnixListener::bind(dir.join("alarms")).unwrap();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            for line in std::io::BufRead::lines(std::io::BufReader::new(conn)).map_while(Result::ok) {
                sink.lock().unwrap().push(serde_json::from_str(&line).unwrap_or_default());
            }
        }
    });
    got
}

#[test]
fn loopboxes_come_back_after_a_restart_and_their_devices_go_when_the_container_stops() {
    let uid = 31002;
    let (_guard, n) = Node::start();
    let alarms = relay(&n.node.subscribe_dir());
    let before = loops_below(n.node.root.path());
    let pid = n.run_container(uid, 0);
    let home = n.home(uid);
    uwsgi_it::node::wait_for_path(&home.join("logs/emperor.log"), T);
    make_image(&home.join("box"), 4, uid);
    mkdir_as(&home.join("data/box"), uid);
    n.set_loopboxes(&[(11, uid, "box", "data/box", false)]);
    n.wait_log(uid, "loopbox 11: mounted ~/box on ~/data/box");
    assert!(n.inside(uid, &format!("echo kept > /containers/{uid}/data/box/f")).status.success());
    wait_until("the loopbox alarm at the relay", T, || {
        alarms.lock().unwrap().iter().any(|a| {
            a["kind"] == "loopbox" && a["msg"].as_str().is_some_and(|m| m.contains("loopbox 11: mounted ~/box"))
        })
    });

    // A restart (an explicit reboot) makes a new mount namespace: the node mounts it again.
    let new_pid = {
        n.run_container(uid, 1);
        let mut p = None;
        wait_until("the restarted container", T, || {
            p = n.pid1(uid).filter(|p| *p != pid);
            p.is_some()
        });
        p.unwrap()
    };
    wait_until("box mounted in the restarted container", T, || {
        n.mounts_inside(uid).iter().any(|m| m.0 == format!("/containers/{uid}/data/box"))
    });
    assert_eq!(n.pid1(uid), Some(new_pid));
    let out = n.inside(uid, &format!("cat /containers/{uid}/data/box/f"));
    assert_eq!(text(&out.stdout), "kept\n");
    wait_until("one device, not one per start", T, || loops_below(n.node.root.path()).len() == before.len() + 1);

    // Stopped: its mount namespace goes, and with it the loop device (autoclear).
    n.node.remove_spec(uid);
    wait_until("container stopped", T, || n.pid1(uid).is_none());
    wait_until("no loop device left", T, || loops_below(n.node.root.path()) == before);
}

#[test]
fn the_security_suite_every_hostile_loopbox_is_refused_and_the_host_is_unchanged() {
    let (a, b) = (31003, 31004);
    let (_guard, n) = Node::start();
    let pid_a = n.run_container(a, 0);
    n.run_container(b, 0);
    let (ha, hb) = (n.home(a), n.home(b));
    uwsgi_it::node::wait_for_path(&ha.join("logs/emperor.log"), T);
    uwsgi_it::node::wait_for_path(&hb.join("logs/emperor.log"), T);

    // Host objects a customer would love to have mounted or written.
    let host = tempfile::Builder::new().prefix("unbit-lb-host-").tempdir().unwrap();
    let host_image = host.path().join("host.img");
    make_image(&host_image, 4, 0);
    let host_before = std::fs::read(&host_image).unwrap();
    make_image(&hb.join("theirs"), 4, b);
    mkdir_as(&hb.join("mnt"), b);
    mkdir_as(&ha.join("mnt"), a);

    symlink(&host_image, ha.join("link_host")).unwrap();
    symlink("/dev/loop-control", ha.join("link_dev")).unwrap();
    symlink(format!("../{b}/theirs"), ha.join("link_other")).unwrap();
    // Homes may be filesystems of their own (the quota images): another uid's file in A's
    // home stands for one a hard link can reach.
    make_image(&ha.join("planted"), 4, b);
    std::fs::hard_link(ha.join("planted"), ha.join("hardlink")).unwrap();
    make_image(&ha.join("mine"), 4, a);
    std::fs::hard_link(ha.join("mine"), ha.join("mine2")).unwrap();
    run(Command::new("mkfifo").arg(ha.join("fifo")));
    chown(&ha.join("fifo"), a);
    run(Command::new("truncate").args(["-s", "512K"]).arg(ha.join("small")));
    chown(&ha.join("small"), a);
    run(Command::new("truncate").args(["-s", "4M"]).arg(ha.join("notext4")));
    chown(&ha.join("notext4"), a);
    make_image(&ha.join("good"), 4, a);
    // ext4's magic and sizes intact, its group descriptors zeroed: only the kernel can tell, and
    // the device bound to try must be freed again.
    make_image(&ha.join("corrupt"), 4, a);
    run(Command::new("dd")
        .args(["if=/dev/zero", "bs=1024", "seek=2", "count=14", "conv=notrunc", "status=none"])
        .arg(format!("of={}", ha.join("corrupt").display())));
    symlink(host.path(), ha.join("mnt_out")).unwrap();
    for d in ["vassals", "logs", ".ssh"] {
        assert!(ha.join(d).is_dir());
    }

    let cases: &[(u64, &str, &str, &str)] = &[
        (21, "link_host", "mnt", "is a symlink"),
        (22, "link_dev", "mnt", "is a symlink"),
        (23, "link_other", "mnt", "is a symlink"),
        (24, "hardlink", "mnt", &format!("belongs to uid {b}")),
        (36, "mine2", "mnt", "has 2 names (hard links)"),
        (25, "fifo", "mnt", "not a regular file"),
        (26, "small", "mnt", "under the 1 MiB minimum"),
        (27, "notext4", "mnt", "holds no ext4 filesystem"),
        (37, "corrupt", "mnt", "cannot mount the ext4 filesystem"),
        (28, &format!("../{b}/theirs"), "mnt", "filename"),
        (29, "good", "mnt_out", "is a symlink"),
        (30, "good", "../mnt", "mountpoint"),
        (31, "good", "vassals", "managed by the platform"),
        (32, "good", "logs", "managed by the platform"),
        (33, "good", ".ssh", "managed by the platform"),
        (34, "good", "nowhere", "does not exist: create it with mkdir"),
    ];
    let boxes: Vec<(u64, u32, &str, &str, bool)> = cases.iter().map(|(id, f, m, _)| (*id, a, *f, *m, false)).collect();
    n.set_loopboxes(&boxes);
    let mut refused = 0;
    for (id, _, _, why) in cases {
        let needle = format!("loopbox {id} (");
        let log = n.wait_log(a, &needle);
        let line = log.lines().find(|l| l.contains(&needle)).unwrap().to_string();
        assert!(line.contains("not mounted") && line.contains(why), "loopbox {id}: {line}");
        refused += 1;
    }
    println!("loopbox security: {} attempts, {refused} refused", cases.len());

    // Nothing was mounted anywhere, no device bound, nothing of the host touched.
    assert!(n.mounts_inside(a).iter().all(|m| m.1 != "ext4"), "{:?}", n.mounts_inside(a));
    assert!(n.mounts_inside(b).iter().all(|m| m.1 != "ext4"));
    assert!(mounts_of("/proc/self/mountinfo", &host.path().to_string_lossy()).is_empty());
    wait_until("no loop device bound", T, || loops_below(n.node.root.path()).is_empty());
    assert!(loops_below(host.path()).is_empty());
    assert_eq!(std::fs::read(&host_image).unwrap(), host_before);
    assert_eq!(std::fs::metadata(&host_image).unwrap().uid(), 0);
    assert_eq!(std::fs::metadata(hb.join("theirs")).unwrap().uid(), b);
    assert_eq!(n.pid1(a), Some(pid_a));

    // The same good image on a good mountpoint is mounted: the refusals were the rules'.
    n.set_loopboxes(&[(35, a, "good", "mnt", false)]);
    n.wait_log(a, "loopbox 35: mounted ~/good on ~/mnt");
}

/// `curl` as the API's customer; the answer's body as JSON.
fn api_call(api: &uwsgi_it::alarm_kit::LocalApi, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
    let auth = format!("{}:{}", api.customer.0, api.customer.1);
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail-with-body", "-u", &auth, "-X", method]);
    if let Some(b) = body {
        cmd.args(["-d", b]);
    }
    let out = run(cmd.arg(format!("{}/api/{path}", api.url)));
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// One pass of `unbit-node-sync` against the API into `state`; the loopboxes file it wrote.
fn node_sync_once(api: &uwsgi_it::alarm_kit::LocalApi, state: &Path) -> Vec<u8> {
    run(Command::new(uwsgi_it::ssh::release_binary("unbit-node-sync"))
        .arg("--settings")
        .arg(api.node_sync_conf())
        .arg("--state-dir")
        .arg(state)
        .arg("--once"));
    std::fs::read(state.join("loopboxes.json")).unwrap()
}

#[test]
fn a_loopbox_made_through_the_api_reaches_the_node_through_node_sync() {
    let uid = 31005;
    let api = uwsgi_it::alarm_kit::LocalApi::start(uid);
    let (_guard, n) = Node::start();
    n.run_container(uid, 0);
    let home = n.home(uid);
    uwsgi_it::node::wait_for_path(&home.join("logs/emperor.log"), T);
    make_image(&home.join("zeus001"), 4, uid);
    mkdir_as(&home.join("zeus"), uid);

    // The quickstart's call; node-sync's file, handed to the node as node-sync would (here in
    // a state dir of its own: the test's container spec is not the API's).
    let made = api_call(
        &api,
        "POST",
        "loopboxes",
        Some(&format!(r#"{{"container":{uid},"filename":"zeus001","mountpoint":"zeus"}}"#)),
    );
    let id = made["id"].as_u64().unwrap_or_else(|| panic!("no id in {made}"));
    let state = tempfile::tempdir().unwrap();
    let file = node_sync_once(&api, state.path());
    let listed: serde_json::Value = serde_json::from_slice(&file).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{"id": id, "uid": uid, "filename": "zeus001", "mountpoint": "zeus", "ro": false}])
    );
    let specs = n.node.root.path().join("specs");
    let hand_over = |bytes: &[u8]| {
        std::fs::write(specs.join(".lb.tmp"), bytes).unwrap();
        std::fs::rename(specs.join(".lb.tmp"), specs.join("loopboxes.json")).unwrap();
    };
    hand_over(&file);
    n.wait_log(uid, &format!("loopbox {id}: mounted ~/zeus001 on ~/zeus"));

    api_call(&api, "DELETE", &format!("loopboxes/{id}"), None);
    let file = node_sync_once(&api, state.path());
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&file).unwrap(), serde_json::json!([]));
    hand_over(&file);
    n.wait_log(uid, &format!("loopbox {id} (~/zeus001 on ~/zeus): removed; the image stays: unmounted"));
    assert!(home.join("zeus001").is_file());
}
