//! Importing a Docker/OCI image as a custom distro (issue 16): `unbit-oci-import` on an OCI
//! image layout of the platform distro (`distros-cache/bookworm`, one gzip layer, plus a small
//! second layer with whiteouts), run as a container uid the way a customer runs it, next to
//! `tar -xzf` of the same layer as the same uid (what a customer unpacking a `docker export`
//! by hand pays, with none of the importer's checks).
//!
//! ```sh
//! make binaries
//! sudo cargo bench --bench oci      # BENCH_ROUNDS (3)
//! ```
//!
//! Each round imports into a fresh directory on the same filesystem (cold for the tree, warm
//! for the layer file: it was just read); the figure is the median. Needs root (setpriv).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use uwsgi_it::harness::project_root;
use uwsgi_it::node::debian_distro;
use uwsgi_it::oci_kit::oci_layout;

const UID: u32 = 31107;

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

fn as_uid(cmd: &str) -> Duration {
    let t = Instant::now();
    sh(&format!("setpriv --reuid={UID} --regid={UID} --clear-groups -- sh -c '{cmd}'"));
    t.elapsed()
}

/// The layout: the platform distro (gzip), then a layer with an opaque whiteout.
fn build_layout(dir: &Path) -> (PathBuf, PathBuf) {
    let top = dir.join("top");
    std::fs::create_dir_all(top.join("usr/share/doc")).unwrap();
    std::fs::write(top.join("usr/share/doc/.wh..wh..opq"), "").unwrap();
    let (layout, blobs) = oci_layout(dir, "layout", &[(&debian_distro(), true), (&top, false)]);
    (layout, blobs[0].clone())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let importer = project_root().join("target/release/unbit-oci-import");
    assert!(importer.exists(), "{} is missing: run `make binaries` first", importer.display());
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    // On the work tree's filesystem, as a container home would be (not a tmpfs).
    let dir = tempfile::Builder::new().prefix("unbit-oci-bench-").tempdir_in(project_root().join("target")).unwrap();
    let (layout, base) = build_layout(dir.path());
    let distros = dir.path().join("distros");
    std::fs::create_dir(&distros).unwrap();
    sh(&format!("chown -R {UID}:{UID} {}", dir.path().display()));
    let tree =
        String::from_utf8(Command::new("du").args(["-sm"]).arg(debian_distro()).output().unwrap().stdout).unwrap();
    let layer_mb = std::fs::metadata(&base).unwrap().len() as f64 / 1e6;
    println!(
        "image: the platform distro, {} MB unpacked, a {layer_mb:.0} MB gzip layer and a whiteout layer",
        tree.split_whitespace().next().unwrap_or("?")
    );

    let mut import = Vec::new();
    let mut untar = Vec::new();
    for i in 0..rounds {
        import.push(as_uid(&format!(
            "{} --distros {} {} img{i} > /dev/null",
            importer.display(),
            distros.display(),
            layout.display()
        )));
        let plain = distros.join(format!("tar{i}"));
        untar.push(as_uid(&format!(
            "mkdir {0} && tar -C {0} -xzf {1} 2>/dev/null; test -d {0}/etc",
            plain.display(),
            base.display()
        )));
    }
    let (a, b) = (median(import), median(untar));
    println!("unbit-oci-import (OCI layout, as uid {UID}):  {:>7.2} s  (median of {rounds})", a.as_secs_f64());
    println!("tar -xzf of the same layer (same uid):       {:>7.2} s  (median of {rounds})", b.as_secs_f64());
    println!("importer / tar:                               {:>7.2}x", a.as_secs_f64() / b.as_secs_f64());
}
