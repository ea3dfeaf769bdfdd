//! The importer on images built here, in every format it reads, with whiteouts, and with the
//! layers an attacker would craft. No root needed (the customer runs it as their uid).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str),
    Fifo(&'a str),
}

/// A layer tar; names are written raw into the header, so `../` goes through as an attacker's
/// tool would write it.
fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, data): (&str, &[u8]) = match e {
            E::Dir(n, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                (n, b"")
            }
            E::File(n, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                (n, data)
            }
            E::Symlink(n, target) | E::Hardlink(n, target) => {
                h.set_entry_type(if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
                h.set_mode(0o777);
                (n, b"")
            }
            E::Char(n) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_device_major(1).unwrap();
                h.set_device_minor(1).unwrap();
                h.set_mode(0o666);
                (n, b"")
            }
            E::Fifo(n) => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o666);
                (n, b"")
            }
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

fn sha(data: &[u8], dir: &Path) -> String {
    // The importer does not verify digests (the image is the customer's own file); any unique
    // hex name will do for a test layout.
    let _ = dir;
    format!("{:064x}", data.len() as u128 * 1_000_003 + data.iter().map(|b| *b as u128).sum::<u128>())
}

/// An OCI image layout directory with these layers (gzip).
fn oci_layout(dir: &Path, layers: &[Vec<u8>]) -> PathBuf {
    let root = dir.join("oci");
    std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descs = Vec::new();
    for l in layers {
        let z = gzip(l);
        let d = sha(&z, &root);
        std::fs::write(root.join("blobs/sha256").join(&d), &z).unwrap();
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{d}"), "size": z.len()}));
    }
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": descs}).to_string();
    let md = format!("{:064x}", manifest.len() as u128 + 7);
    std::fs::write(root.join("blobs/sha256").join(&md), &manifest).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{md}"), "size": manifest.len()}]});
    std::fs::write(root.join("index.json"), index.to_string()).unwrap();
    root
}

/// A `docker save` tarball (legacy layout: `<id>/layer.tar` and `manifest.json`).
fn docker_save(dir: &Path, layers: &[Vec<u8>]) -> PathBuf {
    let path = dir.join("saved.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("{i:064x}/layer.tar");
        let mut h = tar::Header::new_gnu();
        h.set_size(l.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, &name, &l[..]).unwrap();
        names.push(name);
    }
    let manifest =
        serde_json::json!([{"Config": "config.json", "RepoTags": ["test:latest"], "Layers": names}]).to_string();
    let mut h = tar::Header::new_gnu();
    h.set_size(manifest.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "manifest.json", manifest.as_bytes()).unwrap();
    b.finish().unwrap();
    path
}

fn base_layer() -> Vec<u8> {
    layer(&[
        E::Dir("./", 0o755),
        E::Dir("./etc/", 0o755),
        E::File("./etc/os-release", 0o644, b"ID=test\n"),
        E::Symlink("./etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf"),
        E::Dir("./usr/", 0o755),
        E::Dir("./usr/bin/", 0o555),
        E::File("./usr/bin/su", 0o4755, b"#!/bin/sh\necho setuid\n"),
        E::File("./usr/bin/wall", 0o2755, b"#!/bin/sh\n"),
        E::Hardlink("./usr/bin/su-again", "./usr/bin/su"),
        E::Symlink("./usr/bin/sh-abs", "/usr/bin/dash"),
        E::Dir("./dev/", 0o755),
        E::Char("./dev/mem"),
        E::Fifo("./dev/pipe"),
        E::Dir("./opt/", 0o755),
        E::Dir("./opt/app/", 0o755),
        E::File("./opt/app/old.txt", 0o644, b"old"),
        E::File("./opt/app/gone.txt", 0o644, b"gone"),
        E::Dir("./var/", 0o755),
        E::Dir("./var/cache/", 0o755),
        E::File("./var/cache/a", 0o644, b"a"),
    ])
}

fn top_layer() -> Vec<u8> {
    layer(&[
        E::File("opt/app/.wh.gone.txt", 0o644, b""),
        E::Dir("var/cache/", 0o755),
        E::File("var/cache/.wh..wh..opq", 0o644, b""),
        E::File("var/cache/b", 0o644, b"b"),
        E::File("opt/app/new.txt", 0o644, b"new"),
    ])
}

fn check_imported(distro: &Path) {
    let read = |p: &str| std::fs::read_to_string(distro.join(p)).unwrap();
    assert_eq!(read("etc/os-release"), "ID=test\n");
    // Whiteouts: a file removed, a directory made opaque (its lower content gone, the layer's own kept).
    assert!(!distro.join("opt/app/gone.txt").exists());
    assert_eq!(read("opt/app/old.txt"), "old");
    assert_eq!(read("opt/app/new.txt"), "new");
    assert!(!distro.join("var/cache/a").exists());
    assert_eq!(read("var/cache/b"), "b");
    // setuid/setgid cleared, devices and FIFOs never created.
    let mode = |p: &str| std::fs::symlink_metadata(distro.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("usr/bin/su"), 0o755);
    assert_eq!(mode("usr/bin/wall"), 0o755);
    assert!(!distro.join("dev/mem").exists() && std::fs::symlink_metadata(distro.join("dev/mem")).is_err());
    assert!(std::fs::symlink_metadata(distro.join("dev/pipe")).is_err());
    // A hard link inside the tree, and an absolute symlink kept as content.
    let ino = |p: &str| std::fs::metadata(distro.join(p)).unwrap().ino();
    assert_eq!(ino("usr/bin/su"), ino("usr/bin/su-again"));
    assert_eq!(std::fs::read_link(distro.join("usr/bin/sh-abs")).unwrap(), Path::new("/usr/bin/dash"));
    // What the node needs to boot it: the custom-distros.md dirs, every mountpoint, and
    // regular files where the jail binds /etc entries (the resolv.conf symlink replaced).
    for d in [".old_root", "containers", "proc", "dev", "tmp", "run", "var/tmp", "var/log", "usr/local", "opt/unbit"] {
        assert!(std::fs::symlink_metadata(distro.join(d)).unwrap().is_dir(), "{d}");
    }
    for f in ["etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/passwd", "etc/group"] {
        assert!(std::fs::symlink_metadata(distro.join(f)).unwrap().is_file(), "{f}");
    }
}

#[test]
fn an_oci_layout_is_unpacked_with_whiteouts_and_without_devices_or_setuid() {
    let tmp = tempfile::tempdir().unwrap();
    let image = oci_layout(tmp.path(), &[base_layer(), top_layer()]);
    let distros = tmp.path().join("distros");
    std::fs::create_dir(&distros).unwrap();
    let report = oci_import::import(&image, &distros, "img", false).unwrap();
    assert_eq!(report.layers, 2);
    assert_eq!(report.dropped_devices, ["/dev/mem", "/dev/pipe"]);
    assert_eq!(report.cleared_setid, ["/usr/bin/su", "/usr/bin/wall"]);
    check_imported(&distros.join("img"));
    // Nothing but the distro is left in the distros dir.
    let names: Vec<_> = std::fs::read_dir(&distros).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["img"]);
    // Importing again needs --replace; with it, the new image replaces the old one whole.
    assert!(oci_import::import(&image, &distros, "img", false).unwrap_err().to_string().contains("--replace"));
    std::fs::write(distros.join("img/leftover"), b"x").unwrap();
    oci_import::import(&image, &distros, "img", true).unwrap();
    assert!(!distros.join("img/leftover").exists());
    let names: Vec<_> = std::fs::read_dir(&distros).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["img"]);
}

#[test]
fn docker_save_and_docker_export_tarballs_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let distros = tmp.path().join("distros");
    std::fs::create_dir(&distros).unwrap();
    let saved = docker_save(tmp.path(), &[base_layer(), top_layer()]);
    oci_import::import(&saved, &distros, "saved", false).unwrap();
    check_imported(&distros.join("saved"));

    let exported = tmp.path().join("exported.tgz");
    std::fs::write(&exported, gzip(&base_layer())).unwrap();
    let report = oci_import::import(&exported, &distros, "exported", false).unwrap();
    assert_eq!(report.layers, 1);
    assert_eq!(std::fs::read_to_string(distros.join("exported/opt/app/gone.txt")).unwrap(), "gone");
}

/// Each attack must fail the import, leave no distro and no work dir, and write nothing
/// outside the distros dir.
fn refused(layers: &[Vec<u8>], outside: &Path, expect: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let distros = tmp.path().join("home/distros");
    std::fs::create_dir_all(&distros).unwrap();
    let image = oci_layout(tmp.path(), layers);
    let e = oci_import::import(&image, &distros, "evil", false).unwrap_err().to_string();
    assert!(e.contains(expect), "{e}");
    assert_eq!(std::fs::read_dir(&distros).unwrap().count(), 0, "left something in {}", distros.display());
    assert!(std::fs::read_dir(outside).unwrap().next().is_none(), "wrote outside: {e}");
    assert!(!tmp.path().join("home/pwned").exists() && !tmp.path().join("pwned").exists());
}

#[test]
fn dot_dot_paths_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    refused(&[layer(&[E::File("../pwned", 0o644, b"x")])], outside.path(), "`..`");
    refused(&[layer(&[E::Dir("a/", 0o755), E::File("a/../../pwned", 0o644, b"x")])], outside.path(), "`..`");
    refused(&[layer(&[E::File("a", 0o644, b"x"), E::Hardlink("b", "../../etc/passwd")])], outside.path(), "`..`");
    // A whiteout of `..` would delete the directory holding the image.
    refused(&[layer(&[E::File("x", 0o644, b""), E::File(".wh...", 0o644, b"")])], outside.path(), "refused");
    refused(&[layer(&[E::Dir("a/", 0o755), E::File("a/.wh...", 0o644, b"")])], outside.path(), "refused");
}

#[test]
fn writing_through_a_planted_symlink_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let abs = outside.path().to_str().unwrap();
    // Layer 1 plants a link out of the image, layer 2 writes through it.
    refused(
        &[layer(&[E::Symlink("escape", abs)]), layer(&[E::File("escape/pwned", 0o644, b"x")])],
        outside.path(),
        "symlink",
    );
    // The same in one layer, a relative link, and a directory entry through it.
    refused(&[layer(&[E::Symlink("up", "../../.."), E::Dir("up/pwned/", 0o755)])], outside.path(), "symlink");
    // A whiteout through a link must not delete outside.
    std::fs::write(outside.path().join("keep"), b"k").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let distros = tmp.path().join("distros");
    std::fs::create_dir(&distros).unwrap();
    let image = oci_layout(
        tmp.path(),
        &[layer(&[E::Symlink("escape", abs)]), layer(&[E::File("escape/.wh.keep", 0o644, b"")])],
    );
    assert!(oci_import::import(&image, &distros, "evil", false).is_err());
    assert_eq!(std::fs::read(outside.path().join("keep")).unwrap(), b"k");
    // A hard link to a file outside the tree (through a link) is never made.
    let image = oci_layout(
        tmp.path().join("x").as_path(),
        &[layer(&[E::Symlink("escape", abs), E::Hardlink("stolen", "escape/keep")])],
    );
    let _ = oci_import::import(&image, &distros, "evil2", false);
    assert!(!distros.join("evil2/stolen").exists());
    assert_eq!(std::fs::metadata(outside.path().join("keep")).unwrap().nlink(), 1);
}
