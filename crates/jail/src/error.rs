//! One error type for the whole crate. Every variant says which operation failed on which
//! path, and, once the error crosses a public function, which container it belongs to, so a
//! line in the Emperor log is enough to act on.

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum JailError {
    /// A system call failed.
    Io { uid: Option<u32>, op: &'static str, path: PathBuf, source: io::Error },
    /// Something in a customer-writable tree is not what the platform put there (a symlink,
    /// a hard link, a file where a directory belongs) and was not repaired.
    Planted { uid: Option<u32>, path: PathBuf, found: String },
    /// The spec failed validation: nothing privileged is done with it.
    InvalidSpec(container_spec::ValidationError),
    /// The host lacks something required (a cgroup controller, a quota mechanism, a tool).
    Unsupported { uid: Option<u32>, what: String },
    /// A trusted host tool (mkfs, resize2fs) failed.
    Command { uid: Option<u32>, command: String, detail: String },
    /// A check after a privileged step found the result is not what was asked for.
    Verify { uid: Option<u32>, what: String },
}

pub type Result<T> = std::result::Result<T, JailError>;

impl JailError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        JailError::Io { uid: None, op, path: path.into(), source }
    }

    pub fn planted(path: impl Into<PathBuf>, found: impl Into<String>) -> Self {
        JailError::Planted { uid: None, path: path.into(), found: found.into() }
    }

    pub fn unsupported(what: impl Into<String>) -> Self {
        JailError::Unsupported { uid: None, what: what.into() }
    }

    pub fn verify(what: impl Into<String>) -> Self {
        JailError::Verify { uid: None, what: what.into() }
    }

    /// Attaches the container uid (public functions call this on the way out).
    pub fn for_container(mut self, container: u32) -> Self {
        match &mut self {
            JailError::Io { uid, .. }
            | JailError::Planted { uid, .. }
            | JailError::Unsupported { uid, .. }
            | JailError::Command { uid, .. }
            | JailError::Verify { uid, .. } => {
                uid.get_or_insert(container);
            }
            JailError::InvalidSpec(_) => {}
        }
        self
    }

    /// The errno of an `Io` error, if any (tests and callers that retry use it).
    pub fn errno(&self) -> Option<i32> {
        match self {
            JailError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn prefix(f: &mut fmt::Formatter<'_>, uid: &Option<u32>) -> fmt::Result {
    match uid {
        Some(u) => write!(f, "container {u}: "),
        None => Ok(()),
    }
}

impl fmt::Display for JailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JailError::Io { uid, op, path, source } => {
                prefix(f, uid)?;
                write!(f, "{op} {}: {source}", path.display())
            }
            JailError::Planted { uid, path, found } => {
                prefix(f, uid)?;
                write!(
                    f,
                    "{}: found {found} where the platform expects its own entry; refusing to use it",
                    path.display()
                )
            }
            JailError::InvalidSpec(e) => e.fmt(f),
            JailError::Unsupported { uid, what } => {
                prefix(f, uid)?;
                write!(f, "unsupported on this host: {what}")
            }
            JailError::Command { uid, command, detail } => {
                prefix(f, uid)?;
                write!(f, "{command} failed: {detail}")
            }
            JailError::Verify { uid, what } => {
                prefix(f, uid)?;
                write!(f, "verification failed: {what}")
            }
        }
    }
}

impl std::error::Error for JailError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JailError::Io { source, .. } => Some(source),
            JailError::InvalidSpec(e) => Some(e),
            _ => None,
        }
    }
}

/// `result.ctx("mkdirat", &path)` turns an `io::Result` into a [`JailError`] with context.
pub trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| JailError::io(op, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_container_operation_and_path() {
        let e = JailError::io("mkdirat", "/containers/30001/logs", io::Error::from_raw_os_error(libc::EACCES))
            .for_container(30001);
        let s = e.to_string();
        assert!(s.starts_with("container 30001: mkdirat /containers/30001/logs: "));
        assert_eq!(e.errno(), Some(libc::EACCES));
        // The first uid attached wins: an inner function may know better.
        assert!(e.for_container(30002).to_string().contains("30001"));
    }
}
