//! The de-chunking proxy against a real stock uWSGI python vassal, with this test playing the
//! router: it sends what the router's mapper will send (the uwsgi packet plus
//! `UNBIT_BACKEND`, then the raw chunked body) and reads what the router would relay.
//!
//! The app is a plain WSGI app that reads `wsgi.input`: in stock uWSGI 2.0.21 it would read 0
//! bytes of a chunked body. Through the proxy it must get every byte.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use domain_counters::Counts;
use std::os::unix::fs::MetadataExt;
use unbit_router::dechunk::{self, Config, Packet, BACKEND_VAR, DOMAIN_VAR, UID_VAR};
use uwsgi_it::{Instance, InstanceBuilder};

/// Answers what it received: body length and CRC-32, and the framing variables it saw.
const APP: &str = r#"
import zlib

def application(env, start_response):
    body = env['wsgi.input'].read()
    lines = [
        'length=%d' % len(body),
        'crc32=%08x' % (zlib.crc32(body) & 0xffffffff),
        'content_length=' + env.get('CONTENT_LENGTH', '-'),
        'transfer_encoding=' + env.get('HTTP_TRANSFER_ENCODING', '-'),
        'backend=' + env.get('UNBIT_BACKEND', '-'),
        'node=%s/%s' % (env.get('UNBIT_BACKEND_DOMAIN', '-'), env.get('UNBIT_BACKEND_UID', '-')),
        'x_test=' + env.get('HTTP_X_TEST', '-'),
    ]
    out = ('\n'.join(lines) + '\n').encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(out)))])
    return [out]
"#;

/// The proxy's limit in these tests: above the 3 MB body, small enough to exceed cheaply.
const MAX_BODY: u64 = 4 * 1024 * 1024;

struct Fixture {
    dir: tempfile::TempDir,
    proxy: PathBuf,
    app: PathBuf,
    app_tcp: String,
    vassal: Instance,
}

impl Fixture {
    fn start() -> Fixture {
        let dir = tempfile::Builder::new().prefix("dechunk-test-").tempdir().unwrap();
        let app_file = dir.path().join("app.py");
        std::fs::write(&app_file, APP).unwrap();
        let app = dir.path().join("app.sock");
        let app_tcp = format!("127.0.0.1:{}", uwsgi_it::ports::free_port());
        let vassal = InstanceBuilder::new("dechunk-app")
            .args(["--plugin", "python3", "--master", "--processes", "1", "--need-app"])
            .args(["--socket", app.to_str().unwrap(), "--socket", &app_tcp])
            .args(["--wsgi-file", app_file.to_str().unwrap()])
            .start();
        vassal.wait_for_log("WSGI app 0 (mountpoint='') ready", Duration::from_secs(30)).unwrap();

        let proxy = dir.path().join("dechunk.sock");
        let listener = UnixListener::bind(&proxy).unwrap();
        let config = Config {
            max_body: MAX_BODY,
            memory_threshold: 64 * 1024,
            spool_dir: Some(dir.path().to_path_buf()),
            timeout: Duration::from_secs(20),
            ..Config::default()
        };
        // The thread ends with the test process; the socket goes with the temp dir.
        std::thread::spawn(move || dechunk::serve(listener, config));
        Fixture { dir, proxy, app, app_tcp, vassal }
    }

    /// The variables the router sends for `POST uri` with a chunked body, plus the node.
    fn packet(&self, uri: &str, backend: &str) -> Packet {
        let mut packet = Packet::default();
        for (key, value) in [
            ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", uri),
            ("PATH_INFO", uri),
            ("QUERY_STRING", ""),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SCRIPT_NAME", ""),
            ("SERVER_NAME", "node"),
            ("SERVER_PORT", "80"),
            ("UWSGI_ROUTER", "http"),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("REMOTE_PORT", "40000"),
            ("HTTP_HOST", "example.test"),
            ("HTTP_TRANSFER_ENCODING", "chunked"),
            ("HTTP_X_TEST", "kept"),
            (BACKEND_VAR, backend),
        ] {
            packet.push(key, value.as_bytes());
        }
        packet
    }

    /// Plays the router: sends `packet` and `body` in writes of the given sizes (a writer
    /// thread, so a proxy that answers early is read while the rest is still being sent) and
    /// reads the answer until the proxy closes.
    fn exchange(&self, packet: &Packet, body: Vec<u8>, writes: &mut Lcg) -> Response {
        let mut stream = UnixStream::connect(&self.proxy).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut bytes = packet.encode().unwrap();
        bytes.extend_from_slice(&body);
        let mut pieces = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = writes.between(1, 100_000).min(rest.len());
            pieces.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        let mut writer = stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            for piece in pieces {
                // The proxy stops reading once it has refused a body: that is expected.
                if writer.write_all(&piece).is_err() {
                    return;
                }
            }
        });
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        drop(stream);
        sender.join().unwrap();
        Response::parse(&raw)
    }

    fn post(&self, uri: &str, body: Vec<u8>, writes: &mut Lcg) -> Response {
        self.exchange(&self.packet(uri, self.app.to_str().unwrap()), body, writes)
    }

    /// Everything the vassal logged once a last request has gone through it: its single
    /// worker logs requests in order, so every earlier request that reached it is in there.
    fn app_log_after_sentinel(&self) -> String {
        let response = self.post("/sentinel", b"0\r\n\r\n".to_vec(), &mut Lcg(1));
        assert_eq!(response.status, 200, "{response:?}");
        self.vassal.wait_for_log("POST /sentinel", Duration::from_secs(10)).unwrap()
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap();
        Response { status, head: head.to_string(), body: body.to_string() }
    }

    /// A `key=value` line of the app's answer.
    fn field(&self, key: &str) -> &str {
        let prefix = format!("{key}=");
        let line = self.body.lines().find(|l| l.starts_with(&prefix));
        line.unwrap_or_else(|| panic!("no {key} in {self:?}")).strip_prefix(&prefix).unwrap()
    }
}

/// A linear congruential generator: reproducible uneven sizes without a dependency.
struct Lcg(u64);

impl Lcg {
    fn between(&mut self, low: usize, high: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        low + (self.0 >> 33) as usize % (high - low + 1)
    }
}

/// CRC-32 (IEEE), as Python's `zlib.crc32`.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// `body` as chunks of uneven sizes, sizes in mixed-case hex, some with extensions, and a
/// trailer section.
fn chunked(body: &[u8], sizes: &mut Lcg) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut n = 0;
    while !rest.is_empty() {
        let len = sizes.between(1, 150_000).min(rest.len());
        let size = if n % 2 == 0 { format!("{len:x}") } else { format!("{len:X}") };
        let extension = if n % 3 == 0 { ";name=\"value\"" } else { "" };
        out.extend_from_slice(format!("{size}{extension}\r\n").as_bytes());
        out.extend_from_slice(&rest[..len]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[len..];
        n += 1;
    }
    out.extend_from_slice(b"0\r\nX-Checksum: dropped\r\n\r\n");
    out
}

fn assert_app_got(response: &Response, body: &[u8]) {
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.field("length"), body.len().to_string(), "{response:?}");
    assert_eq!(response.field("crc32"), format!("{:08x}", crc32(body)), "{response:?}");
    assert_eq!(response.field("content_length"), body.len().to_string());
    assert_eq!(response.field("transfer_encoding"), "-", "the body is no longer chunked");
    assert_eq!(response.field("backend"), "-", "{BACKEND_VAR} is the router's, not the app's");
    assert_eq!(response.field("node"), "-/-", "{DOMAIN_VAR} and {UID_VAR} are the router's, not the app's");
    assert_eq!(response.field("x_test"), "kept", "the other variables reach the app");
}

#[test]
fn chunked_bodies_reach_a_plain_wsgi_app_in_full() {
    let fixture = Fixture::start();
    let mut sizes = Lcg(7);

    let small = b"hello, chunked world".to_vec();
    let response = fixture.post("/small", chunked(&small, &mut sizes), &mut sizes);
    assert_app_got(&response, &small);

    // 3 MB, spooled to disk by the proxy (past its 64 KiB memory threshold), in uneven chunks
    // sent in writes that split chunk sizes, data and CRLFs anywhere.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let response = fixture.post("/big", chunked(&big, &mut sizes), &mut sizes);
    assert_app_got(&response, &big);

    let response = fixture.post("/empty", b"0\r\n\r\n".to_vec(), &mut sizes);
    assert_app_got(&response, b"");

    // The same through a TCP node.
    let packet = fixture.packet("/tcp", &fixture.app_tcp);
    let response = fixture.exchange(&packet, chunked(&big[..500_000], &mut sizes), &mut sizes);
    assert_app_got(&response, &big[..500_000]);
}

/// The router names a subscription node's pool and recorded uid beside its address: the proxy
/// counts what it writes to the node (the packet it forwards, the body) and reads from it (the
/// answer) in that pair of the per-domain table its process has (in production the router's
/// master makes it before it forks the proxy's gateway), once, without a hit (the router
/// counts the request as it detours it).
#[test]
fn the_bytes_exchanged_with_a_node_are_counted_in_its_pair() {
    let fixture = Fixture::start();
    let table = fixture.dir.path().join("domain-counters");
    unbit_router::traffic::init(&table, 64, |line| eprintln!("{line}")).unwrap();
    let mut sizes = Lcg(11);
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let exchange = |uri: &str, pair: Option<(&str, &str)>, sizes: &mut Lcg| {
        let mut packet = fixture.packet(uri, fixture.app.to_str().unwrap());
        if let Some((domain, uid)) = pair {
            packet.push(DOMAIN_VAR, domain.as_bytes());
            packet.push(UID_VAR, uid.as_bytes());
        }
        let response = fixture.exchange(&packet, chunked(&body, sizes), sizes);
        assert_app_got(&response, &body);
        // What the app was sent: the packet without the router's variables and the framing,
        // with the body's length, then the body; and what it answered, relayed unchanged.
        let mut forwarded = fixture.packet(uri, "-");
        forwarded.take(BACKEND_VAR);
        forwarded.take("HTTP_TRANSFER_ENCODING");
        forwarded.push("CONTENT_LENGTH", body.len().to_string().as_bytes());
        let rx = forwarded.encode().unwrap().len() + body.len();
        let tx = response.head.len() + 4 + response.body.len();
        Counts { hits: 0, rx: rx as u64, tx: tx as u64 }
    };
    // A node announced with credentials: its recorded uid; twice, adding up.
    let first = exchange("/counted", Some((".counted.test", "30790")), &mut sizes);
    let second = exchange("/counted-again", Some((".counted.test", "30790")), &mut sizes);
    // A node without (the validator's pinned sockets): its socket's owner.
    let by_owner = exchange("/by-owner", Some(("counted.test", "0")), &mut sizes);
    // A node the router has no pool for (a static route): nothing to count it in.
    exchange("/no-pool", None, &mut sizes);

    let owner = std::fs::metadata(&fixture.app).unwrap().uid();
    let snapshot = domain_counters::read(&table).unwrap();
    let recorded = Counts { hits: 0, rx: first.rx + second.rx, tx: first.tx + second.tx };
    assert_eq!(snapshot.pairs.get(&(30790, ".counted.test".to_string())), Some(&recorded), "{snapshot:?}");
    assert_eq!(snapshot.pairs.get(&(owner, "counted.test".to_string())), Some(&by_owner), "{snapshot:?}");
    assert_eq!(snapshot.pairs.len(), 2, "{snapshot:?}");
    assert!(snapshot.overflow.is_zero(), "{snapshot:?}");
}

#[test]
fn malformed_chunking_is_answered_400_and_never_reaches_the_app() {
    let fixture = Fixture::start();
    let cases: [(&str, &[u8]); 4] = [
        ("/not-hex", b"zz\r\nhello\r\n0\r\n\r\n"),
        ("/data-longer-than-size", b"3\r\nhello\r\n0\r\n\r\n"),
        ("/bare-lf", b"5\nhello\r\n0\r\n\r\n"),
        ("/no-crlf-after-data", b"5\r\nhelloXX0\r\n\r\n"),
    ];
    for (uri, body) in cases {
        let response = fixture.post(uri, body.to_vec(), &mut Lcg(3));
        assert_eq!(response.status, 400, "{uri}: {response:?}");
        assert!(response.body.starts_with("400 Bad Request: malformed chunked body"), "{uri}: {response:?}");
        assert!(response.head.contains("Connection: close"), "{uri}: {response:?}");
    }
    // Two framings at once are refused, not guessed between.
    let mut packet = fixture.packet("/both-lengths", fixture.app.to_str().unwrap());
    packet.push("CONTENT_LENGTH", b"5");
    let response = fixture.exchange(&packet, b"5\r\nhello\r\n0\r\n\r\n".to_vec(), &mut Lcg(3));
    assert_eq!(response.status, 400, "{response:?}");

    let log = fixture.app_log_after_sentinel();
    for uri in ["/not-hex", "/data-longer-than-size", "/bare-lf", "/no-crlf-after-data", "/both-lengths"] {
        assert!(!log.contains(&format!("POST {uri} ")), "{uri} reached the app:\n{log}");
    }
}

#[test]
fn bodies_over_the_limit_are_answered_413_and_never_reach_the_app() {
    let fixture = Fixture::start();
    // A size that alone exceeds the limit is refused before any data is sent.
    let response = fixture.post("/declared-too-large", format!("{:x}\r\n", MAX_BODY + 1).into_bytes(), &mut Lcg(5));
    assert_eq!(response.status, 413, "{response:?}");
    assert!(response.body.contains(&format!("exceeds {MAX_BODY} bytes")), "{response:?}");

    // Chunks that are each fine but add up to more than the limit.
    let over = vec![b'x'; MAX_BODY as usize + 1];
    let response = fixture.post("/adds-up-too-large", chunked(&over, &mut Lcg(5)), &mut Lcg(5));
    assert_eq!(response.status, 413, "{response:?}");

    let log = fixture.app_log_after_sentinel();
    for uri in ["/declared-too-large", "/adds-up-too-large"] {
        assert!(!log.contains(&format!("POST {uri} ")), "{uri} reached the app:\n{log}");
    }
}

#[test]
fn a_node_that_is_gone_is_answered_502() {
    let fixture = Fixture::start();
    let gone = fixture.dir.path().join("gone.sock");
    let packet = fixture.packet("/gone", gone.to_str().unwrap());
    let response = fixture.exchange(&packet, b"5\r\nhello\r\n0\r\n\r\n".to_vec(), &mut Lcg(9));
    assert_eq!(response.status, 502, "{response:?}");
    assert!(!response.body.contains(gone.to_str().unwrap()), "socket paths are not shown to clients");
}

#[test]
fn a_stalled_upload_does_not_hold_up_other_requests() {
    let fixture = Fixture::start();
    // Half a body, then silence: the proxy waits for the rest of it in its own thread.
    let mut stalled = UnixStream::connect(&fixture.proxy).unwrap();
    let mut bytes = fixture.packet("/stalled", fixture.app.to_str().unwrap()).encode().unwrap();
    bytes.extend_from_slice(b"10\r\nabc");
    stalled.write_all(&bytes).unwrap();

    let body = b"meanwhile".to_vec();
    let response = fixture.post("/meanwhile", chunked(&body, &mut Lcg(11)), &mut Lcg(11));
    assert_app_got(&response, &body);
    drop(stalled);
}

/// End to end with real parts, the mapper aside: curl uploads a body of unknown size (so it
/// sends it chunked, after `Expect: 100-continue`) to a stock uWSGI router with
/// `http-chunked-input`, which sends every request to the proxy (`http-to`) and names the
/// node the way the mapper will (`http-var`).
#[test]
fn curl_uploads_through_the_stock_router_reach_the_app_in_full() {
    let fixture = Fixture::start();
    let port = uwsgi_it::ports::free_port();
    let router = InstanceBuilder::new("dechunk-router")
        .args(["--plugin", "http", "--master", "--http", &format!("127.0.0.1:{port}")])
        .args(["--http-to", fixture.proxy.to_str().unwrap(), "--http-chunked-input"])
        .args(["--http-var", &format!("{BACKEND_VAR}={}", fixture.app.display())])
        .start();
    router.wait_for_log("spawned uWSGI http 1", Duration::from_secs(30)).unwrap();

    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8).collect();
    let upload = fixture.dir.path().join("upload.bin");
    std::fs::write(&upload, &body).unwrap();
    let output = std::process::Command::new("curl")
        .args(["-sS", "-v", "--max-time", "60", "-T", "-", "-H", "Host: example.test", "-H", "X-Test: kept"])
        .arg(format!("http://127.0.0.1:{port}/upload"))
        .stdin(std::fs::File::open(&upload).unwrap())
        .output()
        .unwrap();
    let verbose = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "curl failed: {verbose}");
    assert!(verbose.contains("> Transfer-Encoding: chunked"), "curl did not send a chunked body: {verbose}");
    assert!(verbose.contains("< HTTP/1.1 100 Continue"), "the client was not told to go on: {verbose}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let response = Response { status: 200, head: String::new(), body: stdout.into_owned() };
    assert_app_got(&response, &body);

    // Over the limit: the client gets the 413 while it is still sending.
    let over = vec![b'x'; MAX_BODY as usize + 1_000_000];
    std::fs::write(&upload, &over).unwrap();
    let output = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o", "/dev/null", "-w", "%{http_code}", "-T", "-"])
        .args(["-H", "Host: example.test", &format!("http://127.0.0.1:{port}/too-large")])
        .stdin(std::fs::File::open(&upload).unwrap())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "413", "{}", String::from_utf8_lossy(&output.stderr));
}
