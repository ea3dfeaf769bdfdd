//! The connection order with a fake DNS: priorities, weights, the `.` target, the fallback, and
//! each target's addresses tried in turn against real loopback sockets.

use super::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::TcpListener;

fn rec(priority: u16, weight: u16, target: &str) -> Record {
    Record { priority, weight, port: 5222, target: target.into() }
}

fn targets(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.target.as_str()).collect()
}

/// Draws the given numbers in turn, and records the totals it was asked for.
fn scripted(draws: &[u32]) -> (impl FnMut(u32) -> u32 + '_, std::rc::Rc<RefCell<Vec<u32>>>) {
    let asked = std::rc::Rc::new(RefCell::new(Vec::new()));
    let seen = asked.clone();
    let mut next = draws.iter();
    (
        move |n| {
            seen.borrow_mut().push(n);
            *next.next().expect("no more draws scripted")
        },
        asked,
    )
}

#[test]
fn lower_priorities_come_first_whatever_the_draws() {
    let records = vec![rec(20, 5, "b"), rec(30, 0, "c"), rec(10, 100, "a")];
    assert_eq!(targets(&order(records.clone(), &mut |_| 0)), ["a", "b", "c"]);
    assert_eq!(targets(&order(records, &mut |n| n)), ["a", "b", "c"]);
}

#[test]
fn within_a_priority_the_draw_picks_by_running_weight_sums() {
    // Running sums: light 10, heavy 40; zero only when no weight is left.
    let records = vec![rec(10, 10, "light"), rec(10, 0, "zero"), rec(10, 30, "heavy"), rec(5, 1, "first")];
    let (mut draw, asked) = scripted(&[0, 10, 9]);
    assert_eq!(targets(&order(records.clone(), &mut draw)), ["first", "heavy", "light", "zero"]);
    // Each draw is over what is left of the group; none once only weight 0 is left.
    assert_eq!(*asked.borrow(), [1, 40, 10]);
    let (mut draw, _) = scripted(&[0, 9, 29]);
    assert_eq!(targets(&order(records.clone(), &mut draw)), ["first", "light", "heavy", "zero"]);
    let (mut draw, _) = scripted(&[0, 39, 0]);
    assert_eq!(targets(&order(records, &mut draw)), ["first", "heavy", "light", "zero"]);
    // All weights 0: the answer's order.
    assert_eq!(targets(&order(vec![rec(1, 0, "x"), rec(1, 0, "y")], &mut |_| unreachable!())), ["x", "y"]);
}

#[test]
fn the_random_choice_follows_the_weights() {
    let records = vec![rec(10, 1, "light"), rec(10, 3, "heavy")];
    let heavy_first = (0..10_000).filter(|_| order(records.clone(), &mut random_draw)[0].target == "heavy").count();
    // 3/4 expected; these bounds are more than 20 standard deviations away.
    assert!((6_500..8_500).contains(&heavy_first), "heavy first {heavy_first} times in 10000");
}

#[test]
fn a_lone_dot_target_means_no_service_and_no_srv_record_means_the_domain_on_5222() {
    let dot = plan("example.org", Ok(Some(vec![rec(0, 0, ".")])), &mut |_| 0).unwrap_err();
    assert_eq!(
        dot,
        "example.org offers no XMPP client service (its SRV record _xmpp-client._tcp.example.org. has the target \".\")"
    );
    assert_eq!(plan("example.org", Ok(None), &mut |_| 0).unwrap(), (vec![("example.org".into(), 5222)], None));
    let (fallback, note) = plan("example.org", Err("request timed out".into()), &mut |_| 0).unwrap();
    assert_eq!(fallback, [("example.org".to_string(), 5222)]);
    assert_eq!(note.unwrap(), "SRV lookup of _xmpp-client._tcp.example.org.: request timed out");
    // Among other targets a `.` is only skipped.
    let mut other = rec(5, 0, "xmpp.example.org.");
    other.port = 5223;
    let (list, _) = plan("example.org", Ok(Some(vec![rec(1, 0, "."), other])), &mut |_| 0).unwrap();
    assert_eq!(list, [("xmpp.example.org.".to_string(), 5223)]);
}

/// Answers from tables, and remembers every name asked.
struct FakeDns {
    srv: Result<Option<Vec<Record>>, String>,
    hosts: HashMap<&'static str, Result<Vec<IpAddr>, String>>,
    asked: RefCell<Vec<String>>,
}

impl Lookup for FakeDns {
    fn srv(&self, name: &str) -> Result<Option<Vec<Record>>, String> {
        self.asked.borrow_mut().push(format!("SRV {name}"));
        self.srv.clone()
    }

    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        self.asked.borrow_mut().push(host.to_string());
        self.hosts.get(host).cloned().unwrap_or(Ok(Vec::new()))
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A loopback port nothing listens on (connecting is refused at once).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn each_target_and_each_of_its_addresses_is_tried_in_order_until_one_answers() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = server.local_addr().unwrap().port();
    let record = |priority, target: &str, port| Record { priority, weight: 0, port, target: target.into() };
    let dns = FakeDns {
        srv: Ok(Some(vec![
            record(30, "never.test.", open),
            record(20, "b.test.", open),
            record(10, "a.test.", closed_port()),
            record(15, "gone.test.", open),
        ])),
        hosts: HashMap::from([
            ("a.test.", Ok(vec![ip("127.0.0.1")])),
            ("gone.test.", Err("no answer".to_string())),
            // 127.0.0.3 is loopback too, but the server listens on 127.0.0.1 only: refused.
            ("b.test.", Ok(vec![ip("127.0.0.3"), ip("127.0.0.1")])),
            ("never.test.", Ok(vec![ip("127.0.0.1")])),
        ]),
        asked: RefCell::default(),
    };
    let (tcp, reached) = connect(&dns, "example.org", Duration::from_secs(10), &mut |_| 0).unwrap();
    assert_eq!(reached, format!("b.test:{open}"));
    assert_eq!(tcp.peer_addr().unwrap(), server.local_addr().unwrap());
    server.accept().unwrap();
    assert_eq!(*dns.asked.borrow(), ["SRV _xmpp-client._tcp.example.org.", "a.test.", "gone.test.", "b.test."]);
}

#[test]
fn when_every_srv_target_fails_the_domain_itself_is_not_tried() {
    let port = closed_port();
    let dns = FakeDns {
        srv: Ok(Some(vec![Record { priority: 0, weight: 0, port, target: "xmpp.example.org.".into() }])),
        hosts: HashMap::from([("xmpp.example.org.", Ok(vec![ip("127.0.0.1")]))]),
        asked: RefCell::default(),
    };
    let Err(Failure::Failed(e)) = connect(&dns, "example.org", Duration::from_secs(10), &mut |_| 0) else {
        panic!("connected to a closed port?")
    };
    assert!(
        e.starts_with(&format!(
            "no XMPP server reachable for example.org (SRV records of _xmpp-client._tcp.example.org.): \
             xmpp.example.org:{port}: connect 127.0.0.1:{port}: "
        )),
        "{e}"
    );
    assert_eq!(*dns.asked.borrow(), ["SRV _xmpp-client._tcp.example.org.", "xmpp.example.org."]);
}

#[test]
fn no_srv_record_falls_back_to_the_domain_and_a_dot_target_is_refused_without_connecting() {
    let dns = FakeDns { srv: Ok(None), hosts: HashMap::new(), asked: RefCell::default() };
    let Err(Failure::Failed(e)) = connect(&dns, "example.org", Duration::from_secs(10), &mut |_| 0) else {
        panic!("connected without an address?")
    };
    assert_eq!(
        e,
        "no XMPP server reachable for example.org (no SRV record _xmpp-client._tcp.example.org., \
         so example.org:5222): example.org:5222: no address"
    );
    assert_eq!(*dns.asked.borrow(), ["SRV _xmpp-client._tcp.example.org.", "example.org."]);

    let dns = FakeDns { srv: Ok(Some(vec![rec(0, 0, ".")])), hosts: HashMap::new(), asked: RefCell::default() };
    let Err(Failure::Refused(e)) = connect(&dns, "example.org", Duration::from_secs(10), &mut |_| 0) else {
        panic!("a `.` target is not a refusal")
    };
    assert!(e.contains("offers no XMPP client service"), "{e}");
    assert_eq!(*dns.asked.borrow(), ["SRV _xmpp-client._tcp.example.org."]);
}

#[test]
fn an_srv_lookup_without_answer_falls_back_and_says_so() {
    let dns = FakeDns { srv: Err("request timed out".into()), hosts: HashMap::new(), asked: RefCell::default() };
    let Err(Failure::Failed(e)) = connect(&dns, "example.org", Duration::from_secs(10), &mut |_| 0) else {
        panic!("connected without an address?")
    };
    assert_eq!(
        e,
        "no XMPP server reachable for example.org (SRV lookup of _xmpp-client._tcp.example.org.: request timed out; \
         fell back to example.org:5222): example.org:5222: no address"
    );
}
