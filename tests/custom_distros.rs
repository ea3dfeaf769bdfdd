//! Custom distros end to end (root, real containers; uids 31101-31109 and 31150-31152): a storage container
//! gets `~/distros`, the customer unpacks an image there as the container's uid, another of
//! their containers boots from it read-only, `nosuid,nodev`, with its master and `rc.local` run
//! as its own uid; an unusable image, one of another customer's store, or one of a store that
//! is not on the node falls back to the default distro with a line in `~/logs/emperor.log` and
//! a `distro` alarm handed to the relay; a Docker/OCI image built here is imported by the
//! customer inside the storage container (`unbit-oci-import`, as the uid) and booted, its pid 1
//! showing no command line of the node's; a custom distro's master loads the platform's plugins
//! when its uWSGI is the platform's build, and boots without them when it is not.
//!
//! Needs `make plugins` and `make binaries` (unbit-oci-import in target/release).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uwsgi_it::harness::project_root;
use uwsgi_it::host::{pids_of_uid, wait_until};
use uwsgi_it::node::{debian_distro, key_pair, spec_json, wait_for_path, TestNode};
use uwsgi_it::oci_kit::oci_layout;

const STORE: u32 = 31101;
const USER: u32 = 31102;
const BROKEN: u32 = 31103;
const OTHER_CUSTOMER: u32 = 31104;
const NOT_ON_NODE: u32 = 31105;
const OCI_USER: u32 = 31106;
const ESCAPE: u32 = 31108;
/// A uid no container of the node has: a "store" on another node.
const ELSEWHERE: u32 = 31109;
const CUSTOMER: u64 = 7;

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A container spec with the fields this suite sets.
fn spec(uid: u32, keys: &(String, String), customer: u64, distro: serde_json::Value, store: bool) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&spec_json(uid, &format!("cd{uid}"), 256, 256, &["ssh-ed25519 AAAA t@example"], keys))
            .unwrap();
    v["distro"] = distro;
    v["customer"] = customer.into();
    v["storage_mb"] = 4000.into();
    if store {
        v["custom_distros_storage"] = true.into();
    }
    v.to_string()
}

fn custom(path: &str) -> serde_json::Value {
    serde_json::json!({"kind": "custom", "storage_uid": STORE, "path": path, "fallback": "bookworm"})
}

/// A stand-in for the alarm relay on the node's socket: the lines the Emperor hands it.
struct Relay {
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Relay {
    fn start(node: &TestNode) -> Relay {
        let path = node.subscribe_dir().join("alarms");
        let listener = UnixListener::bind(&path).unwrap();
        // Container masters connect as their uid, as to the real relay's socket.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                // A master's console listener keeps its connection open: one thread each.
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(conn).lines() {
                        let Ok(line) = line else { break };
                        if let Ok(v) = serde_json::from_str(&line) {
                            sink.lock().unwrap().push(v);
                        }
                    }
                });
            }
        });
        Relay { lines }
    }

    fn wait_for(&self, uid: u32, kind: &str) -> serde_json::Value {
        let mut found = None;
        wait_until(&format!("a {kind} alarm for {uid}"), Duration::from_secs(60), || {
            found = self.lines.lock().unwrap().iter().find(|v| v["uid"] == uid && v["kind"] == kind).cloned();
            found.is_some()
        });
        found.unwrap()
    }
}

/// Copies the platform distro into `dir` as `uid`, the way a customer unpacks a tarball there.
fn unpack_as(uid: u32, source: &Path, dir: &Path) {
    sh(&format!(
        "tar -C {src} -cf - . | setpriv --reuid={uid} --regid={uid} --clear-groups -- sh -c 'mkdir {dst} && tar -C {dst} -xf - 2>/dev/null; test -d {dst}/etc'",
        src = source.display(),
        dst = dir.display()
    ));
}

/// Starts `store` as the customer's storage container: its `~/distros` appears, the
/// container's own.
fn start_store(node: &TestNode, keys: &(String, String), store: u32) -> PathBuf {
    let platform = serde_json::json!({"kind": "platform", "path": "bookworm"});
    node.put_spec(store, &spec(store, keys, CUSTOMER, platform, true));
    let distros = node.home(store).join("distros");
    wait_for_path(&distros, Duration::from_secs(60));
    assert_eq!(std::fs::metadata(&distros).unwrap().uid(), store);
    distros
}

/// `distros/<name>`: the platform distro unpacked by the customer as `store`, with the tuning
/// custom-distros.md asks for, `/.old_root` (the platform distro has `/containers`).
fn platform_image_in(store: u32, distros: &Path, name: &str) -> PathBuf {
    let image = distros.join(name);
    unpack_as(store, &debian_distro(), &image);
    sh(&format!("setpriv --reuid={store} --regid={store} --clear-groups mkdir {}", image.join(".old_root").display()));
    image
}

/// What the customer's `~/etc/rc.local` reports, inside the container, as the container uid.
const PROBE: &str = r#"#!/bin/sh
out=$HOME/probe
{
  echo "marker=$(cat /etc/custom-marker 2>/dev/null || echo none)"
  echo "id=$(id -u)"
  echo "suid=$(/opt/suid-id -u 2>&1)"
  head -c 1 /opt/mem >/dev/null 2>&1 && echo "mem=read" || echo "mem=refused"
  touch /etc/written 2>/dev/null && echo "etc=writable" || echo "etc=read-only"
  echo "init=$(readlink /proc/1/exe)"
  echo "init_cmdline=$(tr '\0' '\n' < /proc/1/cmdline | grep -v '^$' | tr '\n' ' ')"
} > $out.tmp
mv $out.tmp $out
"#;

/// The home of `uid` with `~/etc/rc.local` = [`PROBE`], made before the node first prepares it.
fn seed_home(node: &TestNode, uid: u32) {
    let etc = node.home(uid).join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("rc.local"), PROBE).unwrap();
    sh(&format!("chown -R {uid}:{uid} {}", node.home(uid).display()));
}

fn probe(node: &TestNode, uid: u32) -> String {
    let p = node.home(uid).join("probe");
    wait_for_path(&p, Duration::from_secs(90));
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn custom_distros_boot_read_only_and_unusable_ones_fall_back_with_an_alarm() {
    let node = TestNode::start(&["--unbit-quota", "none"]);
    let relay = Relay::start(&node);
    let keys = key_pair();
    let distros = start_store(&node, &keys, STORE);

    // An image unpacked by the customer, plus what a hostile image could carry: a setuid-root
    // binary and a device node (root plants them here; a customer could with a crafted
    // filesystem of their own, not with the uid).
    let image = platform_image_in(STORE, &distros, "deb");
    std::fs::write(image.join("etc/custom-marker"), "from the custom image\n").unwrap();
    std::fs::copy(image.join("usr/bin/id"), image.join("opt/suid-id")).unwrap();
    std::fs::set_permissions(image.join("opt/suid-id"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    sh(&format!("chown 0:0 {0} && chmod 4755 {0}", image.join("opt/suid-id").display()));
    sh(&format!("mknod -m 666 {} c 1 1", image.join("opt/mem").display()));
    // An image without /.old_root.
    sh(&format!("setpriv --reuid={STORE} --regid={STORE} --clear-groups mkdir -p {}/broken/etc", distros.display()));

    // A "distro" that is a symlink out of distros/, to a complete distro elsewhere on the host.
    sh(&format!(
        "setpriv --reuid={STORE} --regid={STORE} --clear-groups ln -s {} {}/escape",
        debian_distro().display(),
        distros.display()
    ));

    for uid in [USER, BROKEN, OTHER_CUSTOMER, NOT_ON_NODE, ESCAPE] {
        seed_home(&node, uid);
    }
    node.put_spec(USER, &spec(USER, &keys, CUSTOMER, custom("deb"), false));
    node.put_spec(BROKEN, &spec(BROKEN, &keys, CUSTOMER, custom("broken"), false));
    node.put_spec(OTHER_CUSTOMER, &spec(OTHER_CUSTOMER, &keys, CUSTOMER + 1, custom("deb"), false));
    let elsewhere =
        serde_json::json!({"kind": "custom", "storage_uid": ELSEWHERE, "path": "deb", "fallback": "bookworm"});
    node.put_spec(NOT_ON_NODE, &spec(NOT_ON_NODE, &keys, CUSTOMER, elsewhere, false));
    node.put_spec(ESCAPE, &spec(ESCAPE, &keys, CUSTOMER, custom("escape"), false));

    // Booted from the image, read-only, nosuid, nodev, everything as the container's uid; the
    // container master is the image's own uWSGI (custom-distros.md's search order).
    let p = probe(&node, USER);
    assert!(p.contains("marker=from the custom image"), "{p}");
    assert!(p.contains(&format!("id={USER}\n")), "{p}");
    assert!(p.contains(&format!("suid={USER}\n")), "the setuid-root binary ran as root: {p}");
    assert!(p.contains("mem=refused"), "{p}");
    assert!(p.contains("etc=read-only"), "{p}");
    assert!(p.contains("init=/usr/bin/uwsgi-core\n"), "{p}");
    assert!(!image.join("etc/written").exists());
    assert!(!pids_of_uid(USER).is_empty());
    assert!(!node.customer_log(USER).contains("falling back"), "{}", node.customer_log(USER));

    // Each unusable case: the default distro, told in the log and raised as an alarm.
    for (uid, why) in [
        (BROKEN, "lacks /.old_root, /containers"),
        (OTHER_CUSTOMER, "belongs to another customer"),
        (NOT_ON_NODE, "is not a custom_distros_storage container on this node"),
        (ESCAPE, "distros/escape"),
    ] {
        let p = probe(&node, uid);
        assert!(p.contains("marker=none"), "{uid} booted the image: {p}");
        assert!(p.contains(&format!("id={uid}\n")), "{p}");
        let log = node.customer_log(uid);
        assert!(log.contains("falling back to the default distro \"bookworm\"") && log.contains(why), "{uid}: {log}");
        let alarm = relay.wait_for(uid, "distro");
        assert!(alarm["msg"].as_str().unwrap().contains(why), "{alarm}");
    }
    // The store itself was never touched by the containers that used it.
    assert_eq!(std::fs::metadata(image.join("opt/suid-id")).unwrap().mode() & 0o7777, 0o4755);
}

/// An OCI image layout of the platform distro with a second layer that whites out uWSGI and
/// adds a marker: the imported image has no uWSGI, so the container runs `~/etc/rc.local`
/// under the platform's init.
fn build_oci_image(dir: &Path) -> PathBuf {
    let top = dir.join("top");
    std::fs::create_dir_all(top.join("usr/bin")).unwrap();
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::write(top.join("usr/bin/.wh.uwsgi"), "").unwrap();
    std::fs::write(top.join("usr/bin/.wh.uwsgi-core"), "").unwrap();
    std::fs::write(top.join("etc/custom-marker"), "from the OCI image\n").unwrap();
    let (layout, _) = oci_layout(dir, "deb-oci", &[(&debian_distro(), true), (&top, true)]);
    std::fs::remove_dir_all(&top).unwrap();
    layout
}

#[test]
fn an_oci_image_imported_by_the_customer_boots() {
    let importer = project_root().join("target/release/unbit-oci-import");
    assert!(importer.exists(), "{} is missing: run `make binaries` first", importer.display());
    let node = TestNode::start(&["--unbit-quota", "none"]);
    let keys = key_pair();
    // The platform ships the importer at /opt/unbit/bin in every container.
    let bin = node.root.path().join("platform/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(&importer, bin.join("unbit-oci-import")).unwrap();

    // The customer uploads the image into the storage container's home and imports it there,
    // over ssh in real life; here its rc.local does, as the uid.
    let home = node.home(STORE);
    std::fs::create_dir_all(home.join("etc")).unwrap();
    std::fs::create_dir_all(home.join("images")).unwrap();
    build_oci_image(&home.join("images"));
    std::fs::write(
        home.join("etc/rc.local"),
        "#!/bin/sh\ncd $HOME\n/opt/unbit/bin/unbit-oci-import images/deb-oci deb-oci > import.log 2>&1\necho $? > import.rc\n",
    )
    .unwrap();
    sh(&format!("chown -R {STORE}:{STORE} {}", home.display()));
    node.put_spec(
        STORE,
        &spec(STORE, &keys, CUSTOMER, serde_json::json!({"kind": "platform", "path": "bookworm"}), true),
    );
    wait_for_path(&home.join("import.rc"), Duration::from_secs(300));
    let log = std::fs::read_to_string(home.join("import.log")).unwrap();
    assert_eq!(std::fs::read_to_string(home.join("import.rc")).unwrap().trim(), "0", "{log}");
    assert!(log.contains("2 layer(s)") && log.contains("2 whiteouts applied"), "{log}");
    let image = home.join("distros/deb-oci");
    assert_eq!(std::fs::metadata(&image).unwrap().uid(), STORE);
    assert!(std::fs::symlink_metadata(image.join("usr/bin/uwsgi")).is_err(), "the whiteout was not applied");
    assert!(image.join(".old_root").is_dir() && image.join("containers").is_dir());
    // Imported as the uid: nothing in it is root's, nothing setuid, no device node.
    let odd = Command::new("find")
        .arg(&image)
        .args([
            "(",
            "-not",
            "-user",
            &STORE.to_string(),
            "-o",
            "-perm",
            "/6000",
            "-o",
            "-type",
            "b",
            "-o",
            "-type",
            "c",
            ")",
            "-print",
            "-quit",
        ])
        .output()
        .unwrap();
    assert!(odd.stdout.is_empty(), "{}", String::from_utf8_lossy(&odd.stdout));

    seed_home(&node, OCI_USER);
    node.put_spec(OCI_USER, &spec(OCI_USER, &keys, CUSTOMER, custom("deb-oci"), false));
    let p = probe(&node, OCI_USER);
    assert!(p.contains("marker=from the OCI image"), "{p}");
    assert!(p.contains(&format!("id={OCI_USER}\n")), "{p}");
    // No uWSGI in the image: pid 1 is the platform's init (the node Emperor's child), as the uid.
    assert!(!p.contains("init=/usr/bin/uwsgi"), "{p}");
    let log = node.customer_log(OCI_USER);
    assert!(log.contains("no uWSGI in the custom distro"), "{log}");
    assert!(!log.contains("falling back"), "{log}");
    // pid 1 is a copy of the node Emperor. Inside, /proc (hidepid=2) hides it from the
    // container's processes (it is not dumpable); its command line, which any process that
    // sees it may read, is the container's own all the same, not the operator's paths and
    // options (read here from the host, as the operator's ps shows it).
    assert!(p.contains("init_cmdline=\n"), "the container's processes read pid 1's command line: {p}");
    let init = pids_of_uid(OCI_USER)
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| s.lines().any(|l| l.starts_with("NSpid:") && l.split_whitespace().last() == Some("1")))
        })
        .expect("the container's pid 1 runs as its uid");
    let cmdline = std::fs::read(format!("/proc/{init}/cmdline")).unwrap();
    let shown: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let node_root = node.root.path().to_string_lossy().into_owned();
    assert_eq!(shown, [format!("[{OCI_USER}] init")], "pid 1's command line (under {node_root})");
}

const PLUGINS_STORE: u32 = 31150;
const PLUGINS_USER: u32 = 31151;
const OTHER_BUILD: u32 = 31152;

/// A `~/bin/uwsgi` (first in the search order) that is the image's uWSGI but says it is
/// another build, as a uWSGI of another release or build profile would.
const OTHER_BUILD_UWSGI: &str = r#"#!/bin/sh
if [ "$1" = --cflags ]; then echo '-O2 -DUWSGI_VERSION="\"2.0.99-other\""'; exit 0; fi
exec /usr/bin/uwsgi-core "$@"
"#;

#[test]
fn custom_distro_masters_of_the_platforms_uwsgi_build_load_the_platform_plugins() {
    let alarms = uwsgi_it::harness::plugin_path("unbit_alarms");
    let node =
        TestNode::start_with_platform_files(&["--unbit-quota", "none"], &[("plugins/unbit_alarms_plugin.so", alarms)]);
    let relay = Relay::start(&node);
    let keys = key_pair();
    let distros = start_store(&node, &keys, PLUGINS_STORE);
    let image = platform_image_in(PLUGINS_STORE, &distros, "deb");
    std::fs::write(image.join("etc/custom-marker"), "plugins image\n").unwrap();
    let custom =
        serde_json::json!({"kind": "custom", "storage_uid": PLUGINS_STORE, "path": "deb", "fallback": "bookworm"});

    // The image's uWSGI is the platform's build: the master loads unbit_containers (rc.local
    // by its hook) and unbit_alarms (the container's own restart alarm, its console).
    seed_home(&node, PLUGINS_USER);
    node.put_spec(PLUGINS_USER, &spec(PLUGINS_USER, &keys, CUSTOMER, custom.clone(), false));
    // Another build first in the search order: no platform plugin, the container still boots.
    seed_home(&node, OTHER_BUILD);
    let bin = node.home(OTHER_BUILD).join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("uwsgi"), OTHER_BUILD_UWSGI).unwrap();
    std::fs::set_permissions(bin.join("uwsgi"), std::fs::Permissions::from_mode(0o755)).unwrap();
    sh(&format!("chown -R {OTHER_BUILD}:{OTHER_BUILD} {}", node.home(OTHER_BUILD).display()));
    node.put_spec(OTHER_BUILD, &spec(OTHER_BUILD, &keys, CUSTOMER, custom.clone(), false));

    let p = probe(&node, PLUGINS_USER);
    assert!(p.contains(&format!("id={PLUGINS_USER}\n")) && p.contains("marker=plugins image\n"), "{p}");
    assert!(p.contains("init=/usr/bin/uwsgi-core\n"), "{p}");
    let log = node.customer_log(PLUGINS_USER);
    assert!(log.contains("platform plugins loaded"), "{log}");
    assert!(
        log.contains("started /containers/31151/etc/rc.local"),
        "rc.local not run by unbit_containers' hook: {log}"
    );
    assert!(!log.contains("falling back") && !log.contains("UNABLE to load"), "{log}");
    // The container's own restart alarm comes from its master's unbit_alarms.
    let mut restarted =
        serde_json::from_str::<serde_json::Value>(&spec(PLUGINS_USER, &keys, CUSTOMER, custom, false)).unwrap();
    restarted["memory_mb"] = 300.into();
    node.put_spec(PLUGINS_USER, &restarted.to_string());
    let own = format!("container {PLUGINS_USER} is restarting");
    wait_until("the container master's own restart alarm", Duration::from_secs(60), || {
        relay.lines.lock().unwrap().iter().any(|v| v["kind"] == "restart" && v["msg"] == own.as_str())
    });

    let p = probe(&node, OTHER_BUILD);
    assert!(p.contains(&format!("id={OTHER_BUILD}\n")) && p.contains("marker=plugins image\n"), "{p}");
    let log = node.customer_log(OTHER_BUILD);
    assert!(log.contains("no platform plugin loaded") && log.contains("2.0.99-other"), "{log}");
    assert!(!log.contains("falling back"), "{log}");
}
