//! Loopbox attach + mount (issue 16): the node's path into a running container against
//! `losetup` + `mount` of the same image, in one run.
//!
//! ```sh
//! make plugins
//! sudo cargo bench --bench loopbox      # BENCH_ROUNDS (20, after 3 warm-ups)
//! ```
//!
//! A real container (the test kit's `TestNode`), a 64 MiB ext4 image made by `mkfs.ext4` in its
//! home (anchors.md §4.4 measured the original tools on a 64 MiB image). Ours is what the
//! Emperor runs for each loopbox, timed in this process: `jail::loopbox::mount` (the checks of
//! the image and mountpoint, `LOOP_CONFIGURE`, `fsopen`/`fsmount`, the root's chown, the
//! thread that joins the container's mount namespace and `move_mount`s) and
//! `jail::loopbox::unmount`. The container's pid 1 is found once (the Emperor keeps its pidfd
//! between passes too). The baseline is the tools on the host: `losetup --show -f`, `mount -t
//! ext4`, `umount`, `losetup -d`, each a fork and exec, as the anchors measured them. Needs
//! root.

use container_spec::LoopboxSpec;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use uwsgi_it::host::wait_until;
use uwsgi_it::node::{key_pair, spec_json, TestNode};

const UID: u32 = 31009;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn stats(name: &str, mut v: Vec<Duration>) -> f64 {
    v.sort();
    let median = ms(v[v.len() / 2]);
    println!("{name:<44} median {median:>6.2} ms   min {:>6.2}   max {:>6.2}", ms(v[0]), ms(v[v.len() - 1]));
    median
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Loop devices bound to `image` (the runs must leave none behind).
fn bound_to(image: &Path) -> usize {
    let want = image.to_string_lossy().into_owned();
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path().join("loop/backing_file")).is_ok_and(|b| b.trim_end() == want))
        .count()
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let node = TestNode::start(&["--unbit-quota", "none"]);
    let keys = key_pair();
    node.put_spec(UID, &spec_json(UID, "loopbench", 128, 128, &["ssh-ed25519 AAAA bench"], &keys));
    let emperor = node.emperor().pid() as i32;
    wait_until("the container running", Duration::from_secs(60), || {
        jail::enter::find(emperor, UID).ok().flatten().is_some()
    });
    let container = jail::enter::find(emperor, UID).unwrap().unwrap();
    let home = node.home(UID);
    let image = home.join("bench.img");
    run(Command::new("truncate").args(["-s", "64M"]).arg(&image));
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
    std::os::unix::fs::chown(&image, Some(UID), Some(UID)).unwrap();
    std::fs::create_dir(home.join("box")).unwrap();
    std::os::unix::fs::chown(home.join("box"), Some(UID), Some(UID)).unwrap();
    let paths = jail::NodePaths {
        containers: node.containers_dir(),
        subscribe_dir: Some(node.subscribe_dir()),
        cgroup_name: node.cgroup_name.clone(),
        ..jail::NodePaths::default()
    };
    let spec = LoopboxSpec { id: 1, uid: UID, filename: "bench.img".into(), mountpoint: "box".into(), ro: false };

    let (mut ours_mount, mut ours_umount) = (Vec::new(), Vec::new());
    for i in 0..rounds + 3 {
        let t = Instant::now();
        let m = jail::loopbox::mount(&paths, &container, &spec).unwrap_or_else(|e| panic!("mount: {e}"));
        let mounted = t.elapsed();
        let t = Instant::now();
        let how = jail::loopbox::unmount(&container, &m).unwrap_or_else(|e| panic!("unmount: {e}"));
        let unmounted = t.elapsed();
        assert_eq!(how, jail::loopbox::Unmounted::Now);
        if i >= 3 {
            ours_mount.push(mounted);
            ours_umount.push(unmounted);
        }
        // autoclear frees the device asynchronously after the last unmount
        wait_until("the loop device freed", Duration::from_secs(10), || bound_to(&image) == 0);
    }

    let mnt = tempfile::Builder::new().prefix("unbit-loopbench-").tempdir().unwrap();
    let (mut losetup, mut mount, mut umount, mut detach) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds + 3 {
        let t = Instant::now();
        let dev = run(Command::new("losetup").args(["--show", "-f"]).arg(&image));
        let a = t.elapsed();
        let t = Instant::now();
        run(Command::new("mount").args(["-t", "ext4", &dev]).arg(mnt.path()));
        let b = t.elapsed();
        let t = Instant::now();
        run(Command::new("umount").arg(mnt.path()));
        let c = t.elapsed();
        let t = Instant::now();
        run(Command::new("losetup").args(["-d", &dev]));
        let d = t.elapsed();
        if i >= 3 {
            losetup.push(a);
            mount.push(b);
            umount.push(c);
            detach.push(d);
        }
    }
    wait_until("the loop devices freed", Duration::from_secs(10), || bound_to(&image) == 0);

    println!("\nloopbox: 64 MiB ext4 image, {rounds} runs after 3 warm-ups, container {UID} running");
    let ours = stats("ours: attach + mount into the container", ours_mount);
    let ours_off = stats("ours: unmount from the container", ours_umount);
    let l = stats("losetup --show -f", losetup);
    let m = stats("mount -t ext4 (host)", mount);
    let u = stats("umount (host)", umount);
    let d = stats("losetup -d", detach);
    println!("\nattach + mount: ours {ours:.2} ms, losetup + mount {:.2} ms (anchors.md: 2.11 + 3.36 ms)", l + m);
    println!("detach: ours {ours_off:.2} ms (autoclear), umount + losetup -d {:.2} ms", u + d);
}
