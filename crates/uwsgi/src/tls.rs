//! The stock HTTP router's TLS, taught by a plugin: its `https` sockets' OpenSSL contexts and
//! the connection behind a request.
//!
//! `https = addr,crt,key[,ciphers[,ca]]` makes the master create one `SSL_CTX` per socket
//! (`uwsgi_ssl_new_server_context`) while it reads the config, and every router process it forks
//! later starts each connection from that context. A plugin reaching the context in
//! `post_init` (after the config, before the fork) changes what every router process does: the
//! callbacks it sets there run in the router processes, on every handshake.
//!
//! The contexts are handed out as `openssl` crate builders ([`HttpsSocket::configure`]), so the
//! plugin sets them with the crate's safe API; the only raw OpenSSL here is what that crate
//! lacks (the ClientHello's `server_name` extension, read before any context switch).
//!
//! uWSGI and the plugin share one `libssl` (the dynamic loader maps `libssl.so.3` once per
//! process), so the contexts, connections and objects are the same on both sides.

use crate::corerouter::Key;
use foreign_types::ForeignTypeRef;
use openssl::ssl::{SslContextBuilder, SslRef};
use std::ffi::{c_void, CStr};

/// `ugs->mode` of a socket added by `https`/`https2` (`plugins/http/common.h`).
const HTTPS_MODE: i32 = uwsgi_sys::UWSGI_HTTP_SSL as i32;
/// The owner string the http router gives its sockets (`http_setup`: `uhttp.cr.name`).
const HTTP_ROUTER: &CStr = c"uWSGI http";
/// `TLSEXT_TYPE_server_name` (RFC 6066).
const SERVER_NAME_EXTENSION: u32 = 0;

/// One `https` socket of the http router.
pub struct HttpsSocket {
    name: String,
    ctx: *mut c_void,
}

/// The http router's `https` sockets, in config order. Call in the master (`post_init`).
pub fn https_sockets() -> Vec<HttpsSocket> {
    let mut out = Vec::new();
    // SAFETY: the list is built while the config is read and never changes afterwards; the
    // master reads it single-threaded. Each node is a live `uwsgi_gateway_socket` whose `name`
    // and `owner` are NUL-terminated strings set with it.
    unsafe {
        let mut ugs = uwsgi_sys::uwsgi.gateway_sockets;
        while !ugs.is_null() {
            let s = &*ugs;
            let router = !s.owner.is_null() && CStr::from_ptr(s.owner) == HTTP_ROUTER;
            if router && s.mode == HTTPS_MODE && !s.ctx.is_null() && !s.name.is_null() {
                out.push(HttpsSocket { name: CStr::from_ptr(s.name).to_string_lossy().into_owned(), ctx: s.ctx });
            }
            ugs = s.next;
        }
    }
    out
}

impl HttpsSocket {
    /// The address, as the config gave it (`0.0.0.0:443`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Changes the socket's context with the `openssl` crate's API: what `f` sets applies to
    /// every connection the router processes accept from now on (callbacks included: the crate
    /// keeps them with the context).
    pub fn configure<R>(&self, f: impl FnOnce(&mut SslContextBuilder) -> R) -> R {
        // SAFETY: `ctx` is the `SSL_CTX *` uWSGI created for this socket (`ugs->ctx` of an
        // https socket) and keeps for the life of the process. The builder takes a reference of
        // its own (up_ref) and drops it when done (SSL_CTX_free), so the count is uWSGI's again
        // and the context is never freed here.
        let mut builder = unsafe {
            openssl_sys::SSL_CTX_up_ref(self.ctx.cast());
            SslContextBuilder::from_ptr(self.ctx.cast())
        };
        f(&mut builder)
    }
}

/// The `server_name` the client sent in its ClientHello (the first `host_name` entry), as
/// bytes; `None` without one. Only meaningful inside a client-hello callback, before OpenSSL
/// has processed the extensions (and before any context switch).
pub fn client_hello_server_name(ssl: &SslRef) -> Option<&[u8]> {
    let mut data: *const u8 = std::ptr::null();
    let mut len: usize = 0;
    // SAFETY: `ssl` is a live connection; OpenSSL points `data` at `len` bytes of the
    // ClientHello it holds for the whole handshake (the borrow of `ssl` covers the slice), or
    // returns 0 when the extension is absent or no ClientHello is being processed.
    let found =
        unsafe { openssl_sys::SSL_client_hello_get0_ext(ssl.as_ptr(), SERVER_NAME_EXTENSION, &mut data, &mut len) };
    if found != 1 || data.is_null() {
        return None;
    }
    // SAFETY: as above.
    let ext = unsafe { std::slice::from_raw_parts(data, len) };
    parse_server_name(ext)
}

/// `ServerNameList` (RFC 6066 §3): a 2-byte length, then `type (1) | length (2) | name`.
fn parse_server_name(ext: &[u8]) -> Option<&[u8]> {
    let list_len = usize::from(u16::from_be_bytes([*ext.first()?, *ext.get(1)?]));
    let mut list = ext.get(2..2 + list_len)?;
    while list.len() >= 3 {
        let kind = list[0];
        let len = usize::from(u16::from_be_bytes([list[1], list[2]]));
        let name = list.get(3..3 + len)?;
        if kind == 0 {
            return Some(name);
        }
        list = &list[3 + len..];
    }
    None
}

impl Key<'_> {
    /// The TLS connection the request came over, `None` for plain HTTP.
    pub fn tls(&self) -> Option<&SslRef> {
        let cs = self.session();
        // SAFETY: a request's peer belongs to a live session of the http router, whose
        // `session_size` is `struct http_session` (it starts with `corerouter_session`); `ugs`
        // is the socket it was accepted on. `ssl` is set (`hr_setup_ssl`) for every session of
        // an https socket and freed only when the session closes, after the request.
        unsafe {
            if cs.is_null() || (*cs).ugs.is_null() || (*(*cs).ugs).mode != HTTPS_MODE {
                return None;
            }
            let ssl = (*cs.cast::<uwsgi_sys::http_session>()).ssl;
            (!ssl.is_null()).then(|| SslRef::from_ptr(ssl.cast()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_name_entry_is_found_and_garbage_is_not_a_name() {
        let ext = [0, 14, 0, 0, 11, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'o', b'r', b'g'];
        assert_eq!(parse_server_name(&ext), Some(&b"example.org"[..]));
        assert_eq!(parse_server_name(&ext[..10]), None);
        assert_eq!(parse_server_name(&[0, 5, 1, 0, 2, b'a', b'b']), None);
        assert_eq!(parse_server_name(&[]), None);
    }
}
