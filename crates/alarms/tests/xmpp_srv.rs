//! The XMPP client finds the customer's server as a real client would: a real dnsmasq on
//! loopback publishes `_xmpp-client._tcp` SRV records, a real prosody (Debian's) serves the
//! JID's domain on a port only the SRV record names, and no `--xmpp-server` override is given.
//! Root (prosody runs as root here); dnsmasq and prosody are stopped by PID when dropped.

use alarms::xmpp::{self, Connect, Failure, Send};
use std::process::{Command, Stdio};
use std::time::Duration;
use uwsgi_it::acme_ca::{require, wait_for_port, Guard};
use uwsgi_it::alarm_kit::{Prosody, XMPP_DOMAIN};
use uwsgi_it::ports::free_port;

/// dnsmasq on a free loopback port answering only from its command line.
fn dnsmasq(records: &[String]) -> (Guard, u16) {
    let port = free_port();
    let mut dns = Command::new(require("/usr/sbin/dnsmasq", "dnsmasq-base"));
    dns.args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"])
        .args(["--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file="])
        .arg(format!("--port={port}"))
        .args(records)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let guard = Guard::new(dns.spawn().expect("dnsmasq starts"));
    wait_for_port(port, "dnsmasq");
    (guard, port)
}

fn connect(dns_port: u16, ca: &std::path::Path) -> Connect {
    Connect {
        server: None,
        dns_server: Some(([127, 0, 0, 1], dns_port).into()),
        ca_file: Some(ca.to_path_buf()),
        timeout: Duration::from_secs(5),
    }
}

fn msg_body() -> &'static str {
    "container 31601: found through SRV"
}

#[test]
fn the_server_named_by_the_domains_srv_records_gets_the_message() {
    let prosody = Prosody::start(&[("bot", "bot-pass"), ("owner", "owner-pass")]);
    // A closed port, found first (priority 5), then prosody's: both targets resolve to
    // 127.0.0.1 only through this DNS, and the JID's domain itself has no address at all.
    let closed = free_port();
    let (_dns, dns_port) = dnsmasq(&[
        format!("--srv-host=_xmpp-client._tcp.{XMPP_DOMAIN},down.{XMPP_DOMAIN},{closed},5,0"),
        format!("--srv-host=_xmpp-client._tcp.{XMPP_DOMAIN},xmpp.{XMPP_DOMAIN},{},10,5", prosody.port),
        format!("--host-record=down.{XMPP_DOMAIN},127.0.0.1"),
        format!("--host-record=xmpp.{XMPP_DOMAIN},127.0.0.1"),
    ]);
    let destinations = vec![format!("owner@{XMPP_DOMAIN}")];
    let jid = format!("bot@{XMPP_DOMAIN}");
    // prosody's certificate names only the JID's domain: it is verified against that name,
    // not against the SRV target xmpp.alarms.test. Sent as the relay's XMPP worker does, on a
    // blocking thread of its tokio runtime (the resolver's queries then run on that runtime).
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let connect = connect(dns_port, &prosody.ca);
    rt.block_on(rt.spawn_blocking(move || {
        let msg = Send { jid: &jid, password: "bot-pass", destinations: &destinations, body: msg_body() };
        xmpp::send(&connect, &msg)
    }))
    .unwrap()
    .unwrap();
    prosody.wait_for_message("owner", msg_body(), 1, Duration::from_secs(10));
}

#[test]
fn a_dot_target_is_a_clear_refusal_and_no_srv_record_falls_back_to_port_5222() {
    let (_dns, dns_port) = dnsmasq(&[
        // No target: dnsmasq answers the target ".", "this service is not offered".
        "--srv-host=_xmpp-client._tcp.none.test".to_string(),
        "--host-record=plain.test,127.0.0.1".to_string(),
    ]);
    let destinations = vec!["owner@none.test".to_string()];
    let send = |jid: &str| {
        let msg = Send { jid, password: "p", destinations: &destinations, body: "x" };
        xmpp::send(&connect(dns_port, std::path::Path::new("/nonexistent-ca.pem")), &msg).unwrap_err()
    };
    assert_eq!(
        send("bot@none.test"),
        Failure::Refused(
            "none.test offers no XMPP client service (its SRV record _xmpp-client._tcp.none.test. has the target \".\")"
                .into()
        )
    );
    // plain.test has an address but no SRV record: the client tries plain.test:5222, where no
    // test server listens (so the connection fails, saying which target it tried).
    let Failure::Failed(e) = send("bot@plain.test") else { panic!("a missing server is worth a retry") };
    assert!(
        e.starts_with(
            "no XMPP server reachable for plain.test (no SRV record _xmpp-client._tcp.plain.test., so plain.test:5222): \
             plain.test:5222: connect 127.0.0.1:5222: "
        ),
        "{e}"
    );
}
