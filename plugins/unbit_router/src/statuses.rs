//! The answers the front door gives instead of a closed connection: a status line and a short
//! body saying what happened, never internals (socket paths, node names).

/// A body and its content type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Page {
    pub fn text(body: &str) -> Page {
        Page { content_type: "text/plain; charset=utf-8".into(), body: body.as_bytes().to_vec() }
    }

    /// An operator's page file: HTML when its name says so, plain text otherwise.
    pub fn from_file(path: &std::path::Path) -> Result<Page, String> {
        let body = std::fs::read(path).map_err(|e| format!("404 page {}: {e}", path.display()))?;
        let html = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
        let content_type = if html { "text/html; charset=utf-8" } else { "text/plain; charset=utf-8" };
        Ok(Page { content_type: content_type.into(), body })
    }
}

/// The reason phrase of every status the front door answers itself (RFC 9110).
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// The built-in body of a status.
pub fn default_page(status: u16) -> Page {
    Page::text(match status {
        400 => "400 Bad Request: the request has no usable Host header.\n",
        403 => "403 Forbidden: this site requires a client certificate its owner issued, over HTTPS.\n",
        404 => "404 Not Found: no site is served under this name here.\n",
        421 => "421 Misdirected Request: this connection was set up for another site; connect again for this one.\n",
        431 => "431 Request Header Fields Too Large: the request's headers are over 64 KB.\n",
        502 => "502 Bad Gateway: the site's application is not accepting connections.\n",
        503 => "503 Service Unavailable: the site's application is not running.\n",
        _ => "The request could not be served.\n",
    })
}

/// How the connection goes on after the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Nothing said: HTTP/1.1 keep-alive, decided by the router.
    Default,
    Close,
}

/// The whole HTTP response. `head` leaves the body out (a HEAD request), keeping its length.
pub fn response(status: u16, page: &Page, head: bool, connection: Connection) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}\r\n",
        reason(status),
        page.content_type,
        page.body.len(),
        if connection == Connection::Close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(&page.body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_has_its_length_and_no_body_for_head() {
        let page = default_page(404);
        let full = String::from_utf8(response(404, &page, false, Connection::Default)).unwrap();
        assert!(full.starts_with("HTTP/1.1 404 Not Found\r\n"), "{full}");
        assert!(full.contains(&format!("Content-Length: {}\r\n", page.body.len())), "{full}");
        assert!(full.ends_with("\r\n\r\n404 Not Found: no site is served under this name here.\n"), "{full}");
        assert!(!full.contains("Connection:"));
        let head = String::from_utf8(response(503, &default_page(503), true, Connection::Close)).unwrap();
        assert!(head.ends_with("Connection: close\r\n\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}\r\n", default_page(503).body.len())));
    }

    #[test]
    fn a_page_file_is_html_by_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let html = dir.path().join("404.HTML");
        std::fs::write(&html, "<h1>nope</h1>").unwrap();
        assert_eq!(Page::from_file(&html).unwrap().content_type, "text/html; charset=utf-8");
        let missing = Page::from_file(&dir.path().join("none.txt")).unwrap_err();
        assert!(missing.contains("none.txt"), "{missing}");
    }
}
