//! OCI image layouts built from directory trees, for the custom distro tests and the import
//! benchmark: nodes reach no registry, so images are made here (`tar`, `gzip`, `sha256sum`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Writes the output of `cmd` as a blob of `blobs` named by its sha256: (digest, size).
fn blob(blobs: &Path, cmd: &str) -> (String, u64) {
    let tmp = blobs.join(".new");
    sh(&format!("{cmd} > {}", tmp.display()));
    let out = Command::new("sha256sum").arg(&tmp).output().unwrap();
    let digest = String::from_utf8_lossy(&out.stdout).split(' ').next().unwrap().to_string();
    let path = blobs.join(&digest);
    std::fs::rename(&tmp, &path).unwrap();
    (digest, std::fs::metadata(&path).unwrap().len())
}

/// `<dir>/<name>`, an OCI image layout whose layers are `trees`, in order, each tarred
/// (gzip -1 when `gzip`): `oci-layout`, `index.json`, the manifest and the layers as
/// `blobs/sha256/<digest>`. Returns the layout and each layer's blob path.
pub fn oci_layout(dir: &Path, name: &str, trees: &[(&Path, bool)]) -> (PathBuf, Vec<PathBuf>) {
    let layout = dir.join(name);
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut layers = Vec::new();
    let mut paths = Vec::new();
    for (tree, gzip) in trees {
        let zip = if *gzip { " | gzip -1" } else { "" };
        let (digest, size) = blob(&blobs, &format!("tar -C {} -cf - .{zip}", tree.display()));
        let media = if *gzip {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        layers.push(serde_json::json!({"mediaType": media, "digest": format!("sha256:{digest}"), "size": size}));
        paths.push(blobs.join(digest));
    }
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:00", "size": 0},
        "layers": layers});
    let text = dir.join(format!(".{name}.manifest"));
    std::fs::write(&text, manifest.to_string()).unwrap();
    let (digest, size) = blob(&blobs, &format!("cat {}", text.display()));
    std::fs::remove_file(&text).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion": "1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{digest}"), "size": size}]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    (layout, paths)
}
