//! Small, strict grammars for the values a customer can set. Each check returns the reason as
//! text so the caller can say which container and which field were wrong.

use std::fmt;

/// One field that failed validation, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

/// All the fields of one spec that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub uid: u32,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "container {}: invalid spec:", self.uid)?;
        for (i, e) in self.errors.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(f, "{sep}{}: {}", e.field, e.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

/// Collects field errors while a spec is checked.
#[derive(Default)]
pub(crate) struct Checker {
    pub(crate) errors: Vec<FieldError>,
}

impl Checker {
    pub(crate) fn fail(&mut self, field: &str, reason: impl Into<String>) {
        self.errors.push(FieldError { field: field.to_string(), reason: reason.into() });
    }

    /// Free text (names, notes, credentials): bounded, and no control character at all, so a
    /// value can never start a new line in any config or log it reaches.
    pub(crate) fn text(&mut self, field: &str, value: &str, max_len: usize) {
        if value.len() > max_len {
            self.fail(field, format!("longer than {max_len} bytes"));
        }
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            self.fail(field, format!("contains the control character U+{:04X}", c as u32));
        }
    }

    /// A single path component such as a distro directory: `[A-Za-z0-9._-]`, not `.` or `..`.
    pub(crate) fn path_component(&mut self, field: &str, value: &str) {
        if !is_path_component(value) {
            self.fail(field, "must be 1-64 characters of A-Z a-z 0-9 . _ - and not '.' or '..'");
        }
    }

    pub(crate) fn range<T: PartialOrd + fmt::Display + Copy>(&mut self, field: &str, v: T, lo: T, hi: T) {
        if v < lo || v > hi {
            self.fail(field, format!("{v} is outside {lo}..={hi}"));
        }
    }
}

/// `[A-Za-z0-9._-]{1,64}`, excluding `.` and `..`.
pub fn is_path_component(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value != "."
        && value != ".."
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A relative path inside a home: components joined by `/`, each a [`is_path_component`], no
/// leading or trailing slash, no empty component, at most 255 bytes.
pub fn is_relative_path(value: &str) -> bool {
    value.len() <= 255 && !value.is_empty() && value.split('/').all(is_path_component)
}
