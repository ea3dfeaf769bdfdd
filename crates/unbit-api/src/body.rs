//! Request bodies: at most 64 KiB (413 beyond, as the original), JSON whatever the
//! Content-Type says (curl `-d` sends form encoding), and typed field extraction that names the
//! field and the reason on every mistake.

use crate::error::{ApiError, ApiResult};
use axum::async_trait;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde_json::{Map, Value};

pub const MAX_BODY: usize = 64 * 1024;

/// The raw body, bounded. A declared Content-Length over the limit is refused before reading.
pub struct RawBody(pub Bytes);

#[async_trait]
impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
            let declared = len
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("invalid Content-Length"))?;
            if declared > MAX_BODY as u64 {
                return Err(ApiError::too_large());
            }
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY).await.map_err(|_| ApiError::too_large())?;
        Ok(RawBody(bytes))
    }
}

/// A JSON object body whose keys are taken one by one; keys nobody took are reported by
/// [`Fields::finish`] so a typo such as `memroy` is an error instead of a silent no-op.
pub struct Fields {
    map: Map<String, Value>,
}

/// A field that can be absent, explicitly cleared (`null`), or set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patch<T> {
    Absent,
    Clear,
    Set(T),
}

impl<T> Patch<T> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Patch::Absent)
    }
}

impl Fields {
    pub fn parse(bytes: &[u8]) -> ApiResult<Fields> {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(ApiError::bad_request("the body is empty, a JSON object is expected"));
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
        match value {
            Value::Object(map) => Ok(Fields { map }),
            _ => Err(ApiError::bad_request("the body must be a JSON object")),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    /// Every key left over is unknown (or read-only) to this endpoint.
    pub fn finish(self) -> ApiResult<()> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::invalid(k.clone(), "unknown or read-only field")),
        }
    }

    pub fn string(&mut self, key: &str) -> ApiResult<Patch<String>> {
        match self.take(key) {
            None => Ok(Patch::Absent),
            Some(Value::Null) => Ok(Patch::Clear),
            Some(Value::String(s)) => Ok(Patch::Set(s)),
            Some(_) => Err(ApiError::invalid(key, "must be a string")),
        }
    }

    /// A text field of an update: `None` when absent; `null` clears it to `""` when
    /// `clearable` and is refused otherwise; a value must pass `check(key, value)`.
    pub fn text(
        &mut self,
        key: &str,
        clearable: bool,
        check: impl FnOnce(&str, &str) -> ApiResult<()>,
    ) -> ApiResult<Option<String>> {
        match self.string(key)? {
            Patch::Absent => Ok(None),
            Patch::Clear if clearable => Ok(Some(String::new())),
            Patch::Clear => Err(ApiError::invalid(key, "must not be empty")),
            Patch::Set(s) => {
                check(key, &s)?;
                Ok(Some(s))
            }
        }
    }

    pub fn required_string(&mut self, key: &str) -> ApiResult<String> {
        match self.string(key)? {
            Patch::Set(s) => Ok(s),
            _ => Err(ApiError::invalid(key, "is required")),
        }
    }

    /// An integer within `lo..=hi`. Floats, strings and numbers beyond i64 are refused with
    /// the range in the reason, never truncated.
    pub fn int(&mut self, key: &str, lo: i64, hi: i64) -> ApiResult<Patch<i64>> {
        match self.take(key) {
            None => Ok(Patch::Absent),
            Some(Value::Null) => Ok(Patch::Clear),
            Some(v) => Ok(Patch::Set(int_value(key, &v, lo, hi)?)),
        }
    }

    pub fn required_int(&mut self, key: &str, lo: i64, hi: i64) -> ApiResult<i64> {
        match self.int(key, lo, hi)? {
            Patch::Set(v) => Ok(v),
            _ => Err(ApiError::invalid(key, "is required")),
        }
    }

    /// `true`/`false`, or `1`/`0` as older clients send.
    pub fn bool(&mut self, key: &str) -> ApiResult<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(Some(false)),
            Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(Some(true)),
            Some(_) => Err(ApiError::invalid(key, "must be true or false")),
        }
    }

    pub fn string_list(&mut self, key: &str, max_items: usize) -> ApiResult<Option<Vec<String>>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(items)) => {
                if items.len() > max_items {
                    return Err(ApiError::invalid(key, format!("more than {max_items} items")));
                }
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(ApiError::invalid(format!("{key}[{i}]"), "must be a string")),
                    })
                    .collect::<ApiResult<Vec<_>>>()
                    .map(Some)
            }
            Some(_) => Err(ApiError::invalid(key, "must be an array of strings")),
        }
    }
}

pub fn int_value(key: &str, v: &Value, lo: i64, hi: i64) -> ApiResult<i64> {
    let reason = || format!("must be an integer between {lo} and {hi}");
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) if (lo..=hi).contains(&i) => Ok(i),
            _ => Err(ApiError::invalid(key, reason())),
        },
        _ => Err(ApiError::invalid(key, reason())),
    }
}

/// Parses an integer from a URL (path or query) within `lo..=hi`.
pub fn parse_int(field: &str, s: &str, lo: i64, hi: i64) -> ApiResult<i64> {
    match s.trim().parse::<i64>() {
        Ok(i) if (lo..=hi).contains(&i) => Ok(i),
        _ => Err(ApiError::invalid(field, format!("must be an integer between {lo} and {hi}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_beyond_i64_are_refused_with_the_field_named() {
        let mut f = Fields::parse(br#"{"memory": 18446744073709551616}"#).unwrap();
        let e = f.int("memory", 1, 100).unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        assert_eq!(e.field.as_deref(), Some("memory"));
    }

    #[test]
    fn leftover_keys_are_reported() {
        let mut f = Fields::parse(br#"{"name": "a", "memroy": 3}"#).unwrap();
        f.string("name").unwrap();
        assert_eq!(f.finish().unwrap_err().field.as_deref(), Some("memroy"));
    }

    #[test]
    fn non_objects_and_broken_json_are_bad_requests() {
        for body in [&b"[1]"[..], b"{", b"", b"null"] {
            assert_eq!(Fields::parse(body).err().unwrap().status.as_u16(), 400);
        }
    }
}
