//! Files each router process reads again when they change: the node sync and the validator
//! replace them whole (by rename), so a changed file is a new inode, size or mtime.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// What a file was when read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
}

impl Identity {
    pub fn of(md: &std::fs::Metadata) -> Identity {
        Identity {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        }
    }
}

/// A file's content as last parsed.
pub struct Reloaded<T> {
    path: PathBuf,
    /// Who reads it, for the log (`error backend`).
    reader: &'static str,
    parse: fn(&[u8]) -> Result<T, String>,
    log: fn(&str),
    identity: Option<Identity>,
    value: Option<T>,
}

impl<T> Reloaded<T> {
    pub fn new(path: PathBuf, reader: &'static str, parse: fn(&[u8]) -> Result<T, String>, log: fn(&str)) -> Self {
        Reloaded { path, reader, parse, log, identity: None, value: None }
    }

    /// The content, the file read again when it changed. A file that cannot be read or parsed
    /// is logged once and keeps the last good content (the validator reports what is wrong
    /// with it); `None` until one loads.
    pub fn get(&mut self) -> Option<&T> {
        let identity = std::fs::metadata(&self.path).ok().map(|md| Identity::of(&md));
        if identity.is_some() && identity != self.identity {
            self.identity = identity;
            match std::fs::read(&self.path).map_err(|e| e.to_string()).and_then(|b| (self.parse)(&b)) {
                Ok(value) => self.value = Some(value),
                Err(e) => (self.log)(&format!("{}: {}: {e}", self.reader, self.path.display())),
            }
        }
        self.value.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

    #[test]
    fn a_broken_file_is_logged_once_and_keeps_the_last_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        let parse = |b: &[u8]| {
            std::str::from_utf8(b).map_err(|e| e.to_string())?.trim().parse::<u32>().map_err(|e| e.to_string())
        };
        let mut file = Reloaded::new(path.clone(), "test: numbers file", parse, |l| LOG.lock().unwrap().push(l.into()));
        assert_eq!(file.get(), None);
        std::fs::write(&path, "1").unwrap();
        assert_eq!(file.get(), Some(&1));
        std::fs::write(dir.path().join("tmp"), "one").unwrap();
        std::fs::rename(dir.path().join("tmp"), &path).unwrap();
        assert_eq!(file.get(), Some(&1));
        assert_eq!(file.get(), Some(&1));
        let log = LOG.lock().unwrap();
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].starts_with(&format!("test: numbers file: {}: ", path.display())), "{log:?}");
    }
}
