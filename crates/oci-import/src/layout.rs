//! Where the layers are: a `docker save` tarball (`manifest.json`), an OCI image layout (a
//! directory with `oci-layout` and `index.json`, or a tar of one, which is also what recent
//! Docker versions save), or a `docker export` tarball (one flat root filesystem, plain or
//! gzip). Only the few manifest fields needed are read; layers are streamed from the file,
//! never copied out first.

use crate::{err, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Where the image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Members of an (uncompressed) outer tar, by offset and size.
    TarMembers { file: PathBuf, members: Vec<(String, u64, u64)> },
    /// Blob files of an OCI layout directory.
    Blobs(Vec<PathBuf>),
    /// The whole file is one root filesystem tar (docker export), maybe gzip.
    Flat(PathBuf),
}

/// One layer to apply, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    Member { file: PathBuf, name: String, offset: u64, size: u64 },
    File(PathBuf),
}

impl Layer {
    pub fn describe(&self) -> String {
        match self {
            Layer::Member { name, .. } => name.clone(),
            Layer::File(p) => p.display().to_string(),
        }
    }

    /// The layer's tar stream, gunzipped when it starts with the gzip magic.
    pub fn open(&self) -> io::Result<Box<dyn Read>> {
        let raw: Box<dyn Read> = match self {
            Layer::Member { file, offset, size, .. } => {
                let mut f = File::open(file)?;
                f.seek(SeekFrom::Start(*offset))?;
                Box::new(f.take(*size))
            }
            Layer::File(p) => Box::new(File::open(p)?),
        };
        decompressed(raw)
    }
}

fn decompressed(raw: Box<dyn Read>) -> io::Result<Box<dyn Read>> {
    let mut buf = BufReader::with_capacity(1 << 20, raw);
    let head = buf.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(buf)));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(io::Error::other(
            "zstd-compressed layer: not supported; save the image with gzip or uncompressed layers",
        ));
    }
    Ok(Box::new(buf))
}

#[derive(Deserialize)]
struct DockerManifest {
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct OciManifest {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// `sha256:<64 hex>` as the path of its blob, `blobs/sha256/<hex>`; anything else refused.
fn blob_path(digest: &str) -> Result<String> {
    let (alg, hex) = digest.split_once(':').ok_or_else(|| err(format!("digest {digest:?}: no algorithm")))?;
    let ok = matches!(alg, "sha256" | "sha512") && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(err(format!("digest {digest:?}: not a sha256/sha512 digest")));
    }
    Ok(format!("blobs/{alg}/{hex}"))
}

/// Reads the image's layers, first to last.
pub fn layers_of(source: &Path) -> Result<Vec<Layer>> {
    let meta = std::fs::metadata(source).map_err(|e| err(format!("{}: {e}", source.display())))?;
    if meta.is_dir() {
        let read = |rel: &str| {
            std::fs::read(source.join(rel)).map_err(|e| err(format!("{}: {e}", source.join(rel).display())))
        };
        let layers = oci_layers(&read)?;
        return Ok(layers.into_iter().map(|rel| Layer::File(source.join(rel))).collect());
    }
    let members = tar_members(source)?;
    let Some(members) = members else { return Ok(vec![Layer::File(source.to_path_buf())]) };
    let by_name: HashMap<&str, (u64, u64)> = members.iter().map(|(n, o, s)| (n.as_str(), (*o, *s))).collect();
    let read = |rel: &str| -> Result<Vec<u8>> {
        let (offset, size) = by_name.get(rel).ok_or_else(|| err(format!("{}: no {rel} in it", source.display())))?;
        if *size > 64 << 20 {
            return Err(err(format!("{rel}: larger than 64 MiB, not a manifest")));
        }
        let mut f = File::open(source).map_err(|e| err(format!("{}: {e}", source.display())))?;
        f.seek(SeekFrom::Start(*offset)).map_err(|e| err(e.to_string()))?;
        let mut v = Vec::with_capacity(*size as usize);
        f.take(*size).read_to_end(&mut v).map_err(|e| err(e.to_string()))?;
        Ok(v)
    };
    let names: Vec<String> = if by_name.contains_key("manifest.json") {
        let m: Vec<DockerManifest> = serde_json::from_slice(&read("manifest.json")?)
            .map_err(|e| err(format!("manifest.json: not a docker save manifest: {e}")))?;
        let first = m.into_iter().next().ok_or_else(|| err("manifest.json: no image in it"))?;
        first.layers
    } else if by_name.contains_key("index.json") && by_name.contains_key("oci-layout") {
        oci_layers(&read)?
    } else {
        // A plain root filesystem: docker export.
        return Ok(vec![Layer::File(source.to_path_buf())]);
    };
    names
        .into_iter()
        .map(|name| {
            let (offset, size) = by_name
                .get(name.trim_start_matches("./"))
                .copied()
                .ok_or_else(|| err(format!("{}: the manifest names {name}, which is not in it", source.display())))?;
            Ok(Layer::Member { file: source.to_path_buf(), name, offset, size })
        })
        .collect()
}

/// The layer blob paths of the first image of an OCI layout (following one nested index).
fn oci_layers(read: &dyn Fn(&str) -> Result<Vec<u8>>) -> Result<Vec<String>> {
    let index: OciIndex =
        serde_json::from_slice(&read("index.json")?).map_err(|e| err(format!("index.json: not an OCI index: {e}")))?;
    let mut desc = index.manifests.into_iter().next().ok_or_else(|| err("index.json: no manifest in it"))?;
    for _ in 0..4 {
        let m: OciManifest = serde_json::from_slice(&read(&blob_path(&desc.digest)?)?)
            .map_err(|e| err(format!("manifest {}: {e}", desc.digest)))?;
        match m.manifests {
            // An image index (several platforms): the first one.
            Some(list) if desc.media_type.contains("index") || m.layers.is_empty() => {
                desc = list.into_iter().next().ok_or_else(|| err(format!("index {}: empty", desc.digest)))?;
            }
            _ => return m.layers.iter().map(|l| blob_path(&l.digest)).collect(),
        }
    }
    Err(err("OCI layout: indexes nested too deep"))
}

/// The members of `file` when it is an uncompressed tar holding an image (a `manifest.json`
/// or an OCI layout at its top); `None` for anything else (a root filesystem tarball).
fn tar_members(file: &Path) -> Result<Option<Vec<(String, u64, u64)>>> {
    let f = File::open(file).map_err(|e| err(format!("{}: {e}", file.display())))?;
    let mut head = [0u8; 2];
    let n = (&f).read(&mut head).map_err(|e| err(format!("{}: {e}", file.display())))?;
    if n == 2 && head == [0x1f, 0x8b] {
        return Ok(None);
    }
    let f = File::open(file).map_err(|e| err(format!("{}: {e}", file.display())))?;
    let mut archive = tar::Archive::new(f);
    let mut members = Vec::new();
    let mut image = false;
    // Headers only: the data of each member is seeked over, not read.
    for entry in archive.entries_with_seek().map_err(|e| err(format!("{}: not a tar archive: {e}", file.display())))? {
        let entry = entry.map_err(|e| err(format!("{}: {e}", file.display())))?;
        let path = entry.path().map_err(|e| err(e.to_string()))?;
        let name = path.to_string_lossy().trim_start_matches("./").to_string();
        if matches!(name.as_str(), "manifest.json" | "index.json") {
            image = true;
        }
        if entry.header().entry_type().is_file() {
            members.push((name, entry.raw_file_position(), entry.size()));
        }
    }
    Ok(image.then_some(members))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_name_blobs_and_nothing_else() {
        assert_eq!(blob_path("sha256:abc123").unwrap(), "blobs/sha256/abc123");
        for bad in ["sha256:../../etc/passwd", "md5:abc", "abc", "sha256:", "sha256:ab/cd"] {
            assert!(blob_path(bad).is_err(), "{bad}");
        }
    }
}
