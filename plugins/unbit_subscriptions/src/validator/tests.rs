//! One test per policy rule, with real keys and signatures and a fake home filesystem.

use super::*;
use crate::stock::StockAnnounce;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use std::sync::Mutex;

const NOW: i64 = 1_800_000_000;
const ALICE_1: u32 = 30001;
const ALICE_2: u32 = 30004;
const BOB: u32 = 30002;

/// (owner uid, inode) of a socket or file, or why it cannot be used.
type FakeFile = Result<(u32, u64), String>;

/// `(uid, path below the home)` → what is there.
type Table<T> = Arc<Mutex<HashMap<(u32, PathBuf), T>>>;

/// Homes as a table.
#[derive(Clone, Default)]
struct FakeHomes {
    files: Table<FakeFile>,
    contents: Table<Vec<u8>>,
}

impl FakeHomes {
    /// Binds (or re-binds, with another inode) `run/<rel>` of `uid`.
    fn socket(self, uid: u32, rel: &str, owner: u32, ino: u64) -> Self {
        self.files.lock().unwrap().insert((uid, Path::new("run").join(rel)), Ok((owner, ino)));
        self
    }
    /// Writes `~/<rel>` of `uid` (a new inode each time, as an editor's save-and-rename).
    fn write(&self, uid: u32, rel: &str, owner: u32, bytes: &[u8]) {
        static INO: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);
        let ino = INO.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut files = self.files.lock().unwrap();
        files.insert((uid, PathBuf::from(rel)), Ok((owner, ino)));
        self.contents.lock().unwrap().insert((uid, PathBuf::from(rel)), bytes.to_vec());
    }
    fn broken(self, uid: u32, rel: &str, why: &str) -> Self {
        self.files.lock().unwrap().insert((uid, PathBuf::from(rel)), Err(why.into()));
        self
    }
    fn lookup(&self, uid: u32, rel: &Path) -> Result<(u32, u64), String> {
        self.files.lock().unwrap().get(&(uid, rel.to_path_buf())).cloned().unwrap_or(Err("it does not exist".into()))
    }
}

impl HomeFiles for FakeHomes {
    fn open_socket(&self, uid: u32, rel: &Path) -> Result<Pinned, String> {
        let (owner, ino) = self.lookup(uid, &Path::new("run").join(rel))?;
        if owner != uid {
            return Err(format!("it belongs to uid {owner}, not to the container"));
        }
        Ok(Pinned { fd: None, dev: 1, ino })
    }
    fn check_file(&self, uid: u32, rel: &Path) -> Result<crate::homes::FileStamp, String> {
        let (owner, ino) = self.lookup(uid, rel)?;
        if owner != uid {
            return Err(format!("it belongs to uid {owner}, not to the container"));
        }
        let size = self.contents.lock().unwrap().get(&(uid, rel.to_path_buf())).map_or(0, |c| c.len() as u64);
        Ok(crate::homes::FileStamp { dev: 1, ino, size, ..Default::default() })
    }
    fn read_file(&self, uid: u32, rel: &Path, _max: u64) -> Result<(crate::homes::FileStamp, Vec<u8>), String> {
        let stamp = self.check_file(uid, rel)?;
        let bytes = self.contents.lock().unwrap().get(&(uid, rel.to_path_buf())).cloned().unwrap_or_default();
        Ok((stamp, bytes))
    }
    fn local_path(&self, uid: u32, rel: &Path, _: &Pinned) -> PathBuf {
        PathBuf::from(format!("/local/{uid}/{}", rel.display()))
    }
    fn host_path(&self, uid: u32, rel: &Path) -> PathBuf {
        Path::new("/srv/homes").join(uid.to_string()).join(rel)
    }
}

/// Router names `/pin/<n>`, numbered as given out; withdrawn ones are recorded.
#[derive(Clone, Default)]
struct FakeNames {
    given: Arc<Mutex<u64>>,
    withdrawn: Arc<Mutex<Vec<String>>>,
}

impl Publish for FakeNames {
    fn publish(&mut self, _: &Pinned) -> Result<String, String> {
        let mut n = self.given.lock().unwrap();
        *n += 1;
        Ok(format!("/pin/{n}"))
    }
    fn withdraw(&mut self, address: &str) -> Result<(), String> {
        self.withdrawn.lock().unwrap().push(address.to_string());
        Ok(())
    }
}

/// Container IPs: `(uid, ip)` pairs the node routes to the container and it holds.
struct FakeIps(Vec<(u32, std::net::Ipv4Addr)>);

impl IpOwnership for FakeIps {
    fn check(&self, uid: u32, _: i32, ip: std::net::Ipv4Addr) -> Result<(), String> {
        if self.0.contains(&(uid, ip)) {
            Ok(())
        } else {
            Err(format!("{ip} is not routed to the container"))
        }
    }
}

/// The router's certificate index as a map (name → entry file), and the client-CA list.
#[derive(Clone, Default)]
struct FakeIndex {
    entries: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    ca_list: Arc<Mutex<std::collections::BTreeMap<String, ClientCa>>>,
}

impl CertIndex for FakeIndex {
    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        self.entries.lock().unwrap().insert(name.to_string(), bytes.to_vec());
        Ok(())
    }
    fn remove(&mut self, name: &str) -> Result<(), String> {
        self.entries.lock().unwrap().remove(name);
        Ok(())
    }
    fn put_ca_list(&mut self, list: &std::collections::BTreeMap<String, ClientCa>) -> Result<(), String> {
        *self.ca_list.lock().unwrap() = list.clone();
        Ok(())
    }
}

impl FakeIndex {
    /// The certificate the router would serve for `name`'s entry: its CN, and its policy.
    fn served(&self, name: &str) -> Option<(String, ClientCa)> {
        let bytes = self.entries.lock().unwrap().get(name).cloned()?;
        let entry = sni_index::Entry::decode(&bytes).unwrap();
        let cn = entry.bundle.chain[0].subject_name().entries().next().unwrap().data().to_string().unwrap();
        Some((cn, entry.bundle.client_ca))
    }
}

fn validator(homes: FakeHomes, names: FakeNames, ips: FakeIps) -> Validator {
    validator_with_index(homes, names, ips, FakeIndex::default())
}

fn validator_with_index(homes: FakeHomes, names: FakeNames, ips: FakeIps, index: FakeIndex) -> Validator {
    let node = NodeFacts {
        homes: Box::new(homes),
        host_homes: PathBuf::from("/srv/homes"),
        publisher: Box::new(names),
        ips: Box::new(ips),
        certs: Box::new(index),
    };
    Validator::new(node, 60, 120)
}

fn key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap()
}

fn pem(k: &PKey<Private>) -> String {
    String::from_utf8(k.public_key_to_pem().unwrap()).unwrap()
}

struct World {
    alice: PKey<Private>,
    bob: PKey<Private>,
    v: Validator,
    names: FakeNames,
    homes: FakeHomes,
}

fn table(entries: &[(&str, &[u32], &PKey<Private>)]) -> Arc<DomainTable> {
    let list: Vec<_> = entries
        .iter()
        .map(|(n, u, k)| serde_json::json!({"name": n, "owner_uids": u, "public_key_pem": pem(k)}))
        .collect();
    Arc::new(DomainTable::from_json(serde_json::to_string(&list).unwrap().as_bytes()).unwrap().table)
}

fn world() -> World {
    let (alice, bob) = (key(), key());
    let homes = FakeHomes::default()
        .socket(ALICE_1, "example.org_A.socket", ALICE_1, 11)
        .socket(ALICE_1, "notify_A.socket", ALICE_1, 12)
        .socket(ALICE_1, "notify.socket", ALICE_1, 13)
        .socket(ALICE_1, "bob.socket", BOB, 14)
        .socket(ALICE_2, "example.org_B.socket", ALICE_2, 21)
        .socket(BOB, "bob.org_A.socket", BOB, 31)
        .socket(BOB, "example.org_A.socket", BOB, 32)
        .socket(BOB, "notify.socket", BOB, 33)
        .broken(ALICE_1, "run/link.socket", "a symlink is in the way");
    let names = FakeNames::default();
    let mut v = validator(homes.clone(), names.clone(), FakeIps(vec![(ALICE_1, "10.0.0.3".parse().unwrap())]));
    v.set_table(
        table(&[
            ("example.org", &[ALICE_1, ALICE_2], &alice),
            ("example.net", &[ALICE_1, ALICE_2], &alice),
            (".example.org", &[ALICE_1, ALICE_2], &alice),
            ("bob.org", &[BOB], &bob),
        ]),
        NOW,
    );
    World { alice, bob, v, names, homes }
}

fn announce(uid: u32, key: &str, socket: &str) -> StockAnnounce {
    let mut a = StockAnnounce::new(key, &format!("/containers/{uid}/run/{socket}"), NOW);
    a.notify = Some(format!("/containers/{uid}/run/notify_A.socket"));
    a
}

fn sender(uid: u32) -> Sender {
    Sender { uid, pid: 4242 }
}

fn forwarded(o: Outcome) -> Vec<wire::Announce> {
    match o {
        Outcome::Forward { packets, .. } => packets.iter().map(|p| wire::parse(p).unwrap()).collect(),
        Outcome::Drop => panic!("dropped"),
        Outcome::Reject(r) => panic!("rejected: {}", r.log_line()),
    }
}

fn rejected(o: Outcome) -> Rejection {
    match o {
        Outcome::Reject(r) => r,
        Outcome::Forward { .. } => panic!("forwarded"),
        Outcome::Drop => panic!("dropped"),
    }
}

#[test]
fn the_owners_container_announcing_its_own_socket_reaches_the_router_unsigned_and_pinned() {
    let mut w = world();
    let p = announce(ALICE_1, "example.org", "example.org_A.socket").signed(Command::Subscribe, &w.alice);
    let o = w.v.check(sender(ALICE_1), &p, NOW);
    let Outcome::Forward { packets, log, message } = o else { panic!("not forwarded") };
    let fwd = wire::parse(&packets[0]).unwrap();
    assert_eq!(fwd.command, Command::Subscribe);
    assert_eq!(fwd.key, "example.org");
    assert_eq!(fwd.address, "/pin/1");
    assert!(fwd.signature.is_none() && fwd.unix.is_none() && fwd.notify.is_none());
    assert!(log
        .unwrap()
        .contains("accepted example.org => /containers/30001/run/example.org_A.socket (container 30001"));
    let (text, target) = message.unwrap();
    assert!(text.contains("accepted"));
    assert_eq!(target.path, PathBuf::from("/local/30001/notify_A.socket"));
    // A second container of the same owner joins the pool.
    let p = announce(ALICE_2, "example.org", "example.org_B.socket").signed(Command::Subscribe, &w.alice);
    assert_eq!(forwarded(w.v.check(sender(ALICE_2), &p, NOW))[0].address, "/pin/2");
    assert_eq!(w.v.live_nodes(), 2);
}

#[test]
fn a_refresh_is_forwarded_without_logging_again() {
    let mut w = world();
    let a = announce(ALICE_1, "example.org", "example.org_A.socket");
    w.v.check(sender(ALICE_1), &a.signed(Command::Subscribe, &w.alice), NOW);
    let mut later = a.clone();
    later.now = NOW + 10;
    let Outcome::Forward { log, message, .. } =
        w.v.check(sender(ALICE_1), &later.signed(Command::Subscribe, &w.alice), NOW + 10)
    else {
        panic!("refresh refused")
    };
    assert!(log.is_none() && message.is_none());
}

#[test]
fn a_forged_signature_is_refused() {
    let mut w = world();
    let mut p = announce(ALICE_1, "example.org", "example.org_A.socket").signed(Command::Subscribe, &w.alice);
    let last = p.len() - 1;
    p[last] ^= 0x55;
    let r = rejected(w.v.check(sender(ALICE_1), &p, NOW));
    assert!(r.reason.contains("signature does not verify with the key of the owner of example.org"), "{}", r.reason);
    assert_eq!(r.domain.as_deref(), Some("example.org"));
    assert!(r.log_line().starts_with("REJECTED announce from container 30001 (pid 4242) for example.org: signature"));
}

#[test]
fn another_customers_key_is_refused_even_from_the_owners_container() {
    let mut w = world();
    let p = announce(ALICE_1, "example.org", "example.org_A.socket").signed(Command::Subscribe, &w.bob);
    assert!(rejected(w.v.check(sender(ALICE_1), &p, NOW)).reason.contains("signature does not verify"));
}

#[test]
fn a_container_of_another_customer_cannot_take_the_domain() {
    let mut w = world();
    // Bob signs with his own key, from his own container, for his own socket: the kernel says
    // the sender is not one of the owner's containers.
    let p = announce(BOB, "example.org", "example.org_A.socket").signed(Command::Subscribe, &w.bob);
    let r = rejected(w.v.check(sender(BOB), &p, NOW));
    assert_eq!(r.reason, "container 30002 does not belong to the owner of example.org");
    // Even with Alice's key (a leaked key), the kernel-reported uid is what counts.
    let p = announce(BOB, "example.org", "example.org_A.socket").signed(Command::Subscribe, &w.alice);
    assert!(rejected(w.v.check(sender(BOB), &p, NOW)).reason.contains("does not belong to the owner"));
    // The wildcard's owner decides for names below it.
    let p = announce(BOB, "shop.example.org", "example.org_A.socket").signed(Command::Subscribe, &w.bob);
    assert!(rejected(w.v.check(sender(BOB), &p, NOW)).reason.contains("owner of .example.org"));
    // Unknown domains, and keys that are no domain names.
    let p = announce(BOB, "nobody.net", "bob.org_A.socket").signed(Command::Subscribe, &w.bob);
    assert!(rejected(w.v.check(sender(BOB), &p, NOW)).reason.contains("nobody.net is not a domain of any customer"));
}

#[test]
fn keys_reach_the_router_in_the_apis_form_and_the_customer_reads_how() {
    let (alice, homes) = (key(), FakeHomes::default().socket(ALICE_1, "a.socket", ALICE_1, 11));
    let homes = homes.socket(ALICE_1, "notify_A.socket", ALICE_1, 12);
    let mut v = validator(homes, FakeNames::default(), FakeIps(vec![]));
    v.set_table(table(&[("example.org", &[ALICE_1], &alice), ("xn--bcher-kva.example", &[ALICE_1], &alice)]), NOW);
    for (i, (written, key)) in [
        ("Example.ORG", "example.org"),
        ("example.org.", "example.org"),
        ("example.org:8080", "example.org"),
        ("Bücher.example", "xn--bcher-kva.example"),
    ]
    .into_iter()
    .enumerate()
    {
        let t = NOW + 10 * i as i64;
        let mut on = announce(ALICE_1, written, "a.socket");
        on.now = t;
        let Outcome::Forward { packets, log, message } =
            v.check(sender(ALICE_1), &on.signed(Command::Subscribe, &alice), t)
        else {
            panic!("{written} not forwarded")
        };
        assert_eq!(wire::parse(&packets[0]).unwrap().key, key, "{written}");
        let shown = format!("{key} (announced as {written}) => /containers/30001/run/a.socket");
        assert!(log.unwrap().contains(&format!("accepted {shown}")), "{written}");
        assert_eq!(message.unwrap().0, format!("[subscription validator] {shown} accepted"));
        // Taken back under the same key, however it was written.
        let mut off = on.clone();
        off.now = t + 3;
        let unsub = forwarded(v.check(sender(ALICE_1), &off.signed(Command::Unsubscribe, &alice), t + 3));
        assert_eq!((unsub[0].command, unsub[0].key.as_str()), (Command::Unsubscribe, key));
        assert_eq!(v.live_nodes(), 0, "{written}");
    }
}

#[test]
fn a_key_that_cannot_be_a_domain_is_refused_with_the_reason_in_the_vassals_log() {
    let mut w = world();
    for (written, why) in [
        ("bob_org.example", "\"bob_org\": labels are letters, digits and '-'"),
        ("localhost", "a domain has at least two labels"),
        ("example.org:http", "':' may only separate a port"),
        ("bü cher.example", "IDNA"),
    ] {
        let p = announce(ALICE_1, written, "example.org_A.socket").signed(Command::Subscribe, &w.alice);
        let r = rejected(w.v.check(sender(ALICE_1), &p, NOW));
        assert_eq!(r.reason.split(": ").next(), Some(format!("{written:?} cannot be a domain").as_str()));
        assert!(r.reason.contains(why), "{written}: {}", r.reason);
        // Told to the vassal that sent it (its own notify socket), not only to the operator.
        assert_eq!(r.notify.as_ref().unwrap().path, PathBuf::from("/local/30001/notify_A.socket"));
        assert!(r.message().starts_with(&format!("[subscription validator] announce for {written} rejected: ")));
    }
}

#[test]
fn the_nodes_hostname_and_wildcards_over_it_cannot_be_announced() {
    let mut w = world();
    w.v.set_node_hostname("Node1.Example.ORG.");
    for key in ["node1.example.org", "NODE1.example.org:80", ".example.org"] {
        let p = announce(ALICE_1, key, "example.org_A.socket").signed(Command::Subscribe, &w.alice);
        let r = rejected(w.v.check(sender(ALICE_1), &p, NOW));
        assert!(r.reason.contains("is this node's hostname or covers it"), "{key}: {}", r.reason);
    }
    assert_eq!(w.v.live_nodes(), 0);
    // Other names below the same wildcard are the owner's as before.
    let p = announce(ALICE_1, "shop.example.org", "example.org_A.socket").signed(Command::Subscribe, &w.alice);
    assert_eq!(forwarded(w.v.check(sender(ALICE_1), &p, NOW))[0].key, "shop.example.org");
}

#[test]
fn a_wildcard_is_owned_by_its_owner_and_covers_names_below_it() {
    let mut w = world();
    for key in [".example.org", "a.example.org"] {
        let p = announce(ALICE_1, key, "example.org_A.socket").signed(Command::Subscribe, &w.alice);
        assert_eq!(forwarded(w.v.check(sender(ALICE_1), &p, NOW))[0].key, key);
    }
}

#[test]
fn the_address_must_be_the_senders_own_socket_or_ip() {
    let mut w = world();
    let cases = [
        ("/containers/30002/run/bob.org_A.socket", "another container's home"),
        ("/srv/homes/30002/run/bob.org_A.socket", "another container's home"),
        ("127.0.0.1:5003", "not the container's own address"),
        ("/run/unbit-http/subscriptions.sock", "outside the container's home"),
        ("/containers/30001/run/link.socket", "a symlink is in the way"),
        ("/containers/30001/run/bob.socket", "belongs to uid 30002"),
        ("/containers/30001/run/missing.socket", "does not exist"),
    ];
    for (address, why) in cases {
        let mut a = announce(ALICE_1, "example.org", "x");
        a.address = address.into();
        let r = rejected(w.v.check(sender(ALICE_1), &a.signed(Command::Subscribe, &w.alice), NOW));
        assert!(r.reason.starts_with("address refused") && r.reason.contains(why), "{address}: {}", r.reason);
    }
    // Its own address, but the node does not route it to the container (no network yet).
    let mut a = announce(ALICE_2, "example.org", "x");
    a.address = format!("{}:8080", container_spec::ip_of(ALICE_2));
    let r = rejected(w.v.check(sender(ALICE_2), &a.signed(Command::Subscribe, &w.alice), NOW));
    assert!(r.reason.contains("not routed to the container"), "{}", r.reason);
    let mut a = announce(ALICE_1, "example.org", "x");
    a.address = format!("{}:8080", container_spec::ip_of(ALICE_1));
    assert_eq!(
        forwarded(w.v.check(sender(ALICE_1), &a.signed(Command::Subscribe, &w.alice), NOW))[0].address,
        format!("{}:8080", container_spec::ip_of(ALICE_1))
    );
}

#[test]
fn unsigned_stale_and_future_packets_are_refused() {
    let mut w = world();
    let a = announce(ALICE_1, "example.org", "example.org_A.socket");
    assert!(rejected(w.v.check(sender(ALICE_1), &a.unsigned(Command::Subscribe), NOW)).reason.starts_with("unsigned"));
    let mut old = a.clone();
    old.now = NOW - 3600;
    assert!(rejected(w.v.check(sender(ALICE_1), &old.signed(Command::Subscribe, &w.alice), NOW))
        .reason
        .contains("3600s old"));
    let mut future = a;
    future.now = NOW + 3600;
    assert!(rejected(w.v.check(sender(ALICE_1), &future.signed(Command::Subscribe, &w.alice), NOW))
        .reason
        .contains("future"));
}

#[test]
fn a_replayed_packet_is_refused() {
    let mut w = world();
    let p = announce(ALICE_1, "example.org", "example.org_A.socket").signed(Command::Subscribe, &w.alice);
    forwarded(w.v.check(sender(ALICE_1), &p, NOW));
    // Stock uWSGI's own double send in the same second is dropped quietly...
    assert!(matches!(w.v.check(sender(ALICE_1), &p, NOW), Outcome::Drop));
    // ...a copy sent later is a replay.
    assert!(rejected(w.v.check(sender(ALICE_1), &p, NOW + 5)).reason.starts_with("replay"));
}

#[test]
fn a_subscribe_flipped_into_an_unsubscribe_is_refused_and_the_real_unsubscribe_passes() {
    let mut w = world();
    let a = announce(ALICE_1, "example.org", "example.org_A.socket");
    let mut p = a.signed(Command::Subscribe, &w.alice);
    forwarded(w.v.check(sender(ALICE_1), &p, NOW));
    p[3] = 1;
    assert!(rejected(w.v.check(sender(ALICE_1), &p, NOW + 1)).reason.contains("command byte was flipped"));
    // The vassal's own unsubscribe at shutdown (unix = now + 1).
    let mut bye = a.clone();
    bye.now = NOW + 3;
    let fwd = forwarded(w.v.check(sender(ALICE_1), &bye.signed(Command::Unsubscribe, &w.alice), NOW + 3));
    assert_eq!(fwd[0].command, Command::Unsubscribe);
    assert_eq!(fwd[0].address, "/pin/1", "the router's node is named by its pin");
    assert_eq!(w.v.live_nodes(), 0);
    assert_eq!(*w.names.withdrawn.lock().unwrap(), ["/pin/1"], "its last node gone, the pin goes");
    assert_eq!(w.v.pinned_sockets(), 0);
}

#[test]
fn an_unsubscribe_only_comes_from_the_container_that_owns_the_node() {
    let mut w = world();
    forwarded(w.v.check(
        sender(ALICE_1),
        &announce(ALICE_1, "example.org", "example.org_A.socket").signed(Command::Subscribe, &w.alice),
        NOW,
    ));
    // The owner's other container names the first one's socket: not its own address.
    let mut other = announce(ALICE_2, "example.org", "x");
    other.address = "/containers/30001/run/example.org_A.socket".into();
    let r = rejected(w.v.check(sender(ALICE_2), &other.signed(Command::Unsubscribe, &w.alice), NOW + 1));
    assert!(r.reason.contains("another container's home"), "{}", r.reason);
    assert_eq!(w.v.live_nodes(), 1);
}

#[test]
fn a_vassal_that_rebinds_its_socket_gets_a_new_pin_and_the_old_one_is_taken_back() {
    let mut w = world();
    let a = announce(ALICE_1, "example.org", "example.org_A.socket");
    forwarded(w.v.check(sender(ALICE_1), &a.signed(Command::Subscribe, &w.alice), NOW));
    // Same name, new inode (the vassal restarted).
    w.homes.clone().socket(ALICE_1, "example.org_A.socket", ALICE_1, 99);
    let mut again = a;
    again.now = NOW + 10;
    let fwd = forwarded(w.v.check(sender(ALICE_1), &again.signed(Command::Subscribe, &w.alice), NOW + 10));
    assert_eq!(fwd.len(), 2);
    assert_eq!((fwd[0].command, fwd[0].address.as_str()), (Command::Unsubscribe, "/pin/1"));
    assert_eq!((fwd[1].command, fwd[1].address.as_str()), (Command::Subscribe, "/pin/2"));
    assert_eq!(*w.names.withdrawn.lock().unwrap(), ["/pin/1"]);
}

/// Issue 10, finding 1: a socket name re-used for another domain took only that domain's node
/// back; the router kept the first domain at the old pin, whose descriptor number the next
/// pinned socket (another customer's) got, and served the first domain from it.
#[test]
fn a_socket_name_reused_for_another_domain_takes_back_every_node_of_the_old_socket() {
    let mut w = world();
    let a = announce(ALICE_1, "example.org", "shared.socket");
    w.homes.clone().socket(ALICE_1, "shared.socket", ALICE_1, 50);
    forwarded(w.v.check(sender(ALICE_1), &a.signed(Command::Subscribe, &w.alice), NOW));
    // The vassal now binds the same name for its other domain.
    w.homes.clone().socket(ALICE_1, "shared.socket", ALICE_1, 51);
    let mut q = announce(ALICE_1, "example.net", "shared.socket");
    q.now = NOW + 1;
    let outcome = w.v.check(sender(ALICE_1), &q.signed(Command::Subscribe, &w.alice), NOW + 1);
    let Outcome::Forward { log: Some(log), message: Some((told, _)), .. } = &outcome else { panic!("no log line") };
    assert!(
        log.contains("example.org left the router") && told.contains("example.org left the router"),
        "the operator and the customer learn the other domain went: {log} / {told}"
    );
    let fwd = forwarded(outcome);
    let sent: Vec<_> = fwd.iter().map(|f| (f.command, f.key.as_str(), f.address.as_str())).collect();
    assert_eq!(
        sent,
        [(Command::Unsubscribe, "example.org", "/pin/1"), (Command::Subscribe, "example.net", "/pin/2")],
        "the node of the first domain at the old socket leaves the router"
    );
    assert_eq!(*w.names.withdrawn.lock().unwrap(), ["/pin/1"]);
    // Another customer's socket gets a name never given out before.
    let b = announce(BOB, "bob.org", "bob.org_A.socket");
    assert_eq!(forwarded(w.v.check(sender(BOB), &b.signed(Command::Subscribe, &w.bob), NOW + 1))[0].address, "/pin/3");
}

#[test]
fn a_pin_shared_by_two_domains_stays_until_both_leave_and_expired_nodes_are_taken_back() {
    let mut w = world();
    for (key, n) in [("example.org", 0), ("example.net", 1)] {
        let mut a = announce(ALICE_1, key, "example.org_A.socket");
        a.now = NOW + n;
        forwarded(w.v.check(sender(ALICE_1), &a.signed(Command::Subscribe, &w.alice), NOW + n));
    }
    assert_eq!(w.v.pinned_sockets(), 1);
    let mut bye = announce(ALICE_1, "example.org", "example.org_A.socket");
    bye.now = NOW + 2;
    forwarded(w.v.check(sender(ALICE_1), &bye.signed(Command::Unsubscribe, &w.alice), NOW + 2));
    assert!(w.names.withdrawn.lock().unwrap().is_empty(), "example.net still uses the pin");
    // example.net falls silent: past the TTL the router is told to drop it and the pin goes.
    let packets = w.v.expire(NOW + 1 + 121);
    let sent: Vec<_> = packets.iter().map(|p| wire::parse(p).unwrap()).map(|a| (a.command, a.key)).collect();
    assert_eq!(sent, [(Command::Unsubscribe, "example.net".to_string())]);
    assert_eq!(*w.names.withdrawn.lock().unwrap(), ["/pin/1"]);
    assert_eq!(w.v.pinned_sockets(), 0);
}

#[test]
fn oversized_and_garbled_packets_are_refused_and_reported_to_the_container() {
    let mut w = world();
    let r = rejected(w.v.check(sender(ALICE_1), &vec![224u8; 5000], NOW));
    assert!(r.reason.starts_with("oversized packet (5000 bytes"), "{}", r.reason);
    assert_eq!(
        r.notify.unwrap().path,
        PathBuf::from("/local/30001/notify.socket"),
        "the container's own notify socket"
    );
    let r = rejected(w.v.check(sender(ALICE_1), b"GET / HTTP/1.0\r\n\r\n", NOW));
    assert!(r.reason.starts_with("garbled packet: modifier1 71"), "{}", r.reason);
    // A container without a notify socket still gets its rejection logged.
    let r = rejected(w.v.check(sender(ALICE_2), b"\xe0\x00", NOW));
    assert!(r.notify.is_none() && r.log_line().contains("container 30004"));
}

#[test]
fn sni_files_must_be_the_senders_own_regular_files() {
    let mut w = world();
    let mut a = announce(ALICE_1, "example.org", "example.org_A.socket");
    a.sni = Some(("/containers/30001/tls/a.key".into(), "/etc/ssl/certs/a.crt".into(), None));
    let r = rejected(w.v.check(sender(ALICE_1), &a.signed(Command::Subscribe, &w.alice), NOW));
    assert!(r.reason.starts_with("sni_key refused"), "{}", r.reason);
}

#[test]
fn a_deleted_domain_or_a_changed_key_takes_the_nodes_back_from_the_router() {
    let mut w = world();
    for (uid, socket) in [(ALICE_1, "example.org_A.socket"), (ALICE_2, "example.org_B.socket")] {
        forwarded(w.v.check(
            sender(uid),
            &announce(uid, "example.org", socket).signed(Command::Subscribe, &w.alice),
            NOW,
        ));
    }
    forwarded(w.v.check(
        sender(BOB),
        &announce(BOB, "bob.org", "bob.org_A.socket").signed(Command::Subscribe, &w.bob),
        NOW,
    ));
    // Alice's second container leaves her; bob.org is deleted.
    let revoked = w.v.set_table(table(&[("example.org", &[ALICE_1], &w.alice)]), NOW);
    let mut lines: Vec<String> = revoked.iter().map(|(_, l)| l.clone()).collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("REVOKED bob.org") && lines[0].contains("bob.org is no longer a domain of this node"));
    assert!(lines[1].contains("container 30004 no longer belongs to the owner of example.org"));
    assert!(revoked.iter().all(|(p, _)| wire::parse(p).unwrap().command == Command::Unsubscribe));
    // A new key: the node signed with the old one is taken back, and old signatures fail.
    let new_key = key();
    let revoked = w.v.set_table(table(&[("example.org", &[ALICE_1], &new_key)]), NOW);
    assert!(revoked[0].1.contains("owner key of example.org changed"));
    let mut a = announce(ALICE_1, "example.org", "example.org_A.socket");
    a.now = NOW + 10;
    assert!(rejected(w.v.check(sender(ALICE_1), &a.signed(Command::Subscribe, &w.alice), NOW + 10))
        .reason
        .contains("signature does not verify"));
    assert!(matches!(
        w.v.check(sender(ALICE_1), &a.signed(Command::Subscribe, &new_key), NOW + 10),
        Outcome::Forward { .. }
    ));
}

#[test]
fn an_announce_that_arrived_just_before_its_domain_is_accepted_when_the_domain_arrives() {
    let mut w = world();
    let early = announce(BOB, "new.net", "bob.org_A.socket").signed(Command::Subscribe, &w.bob);
    assert!(rejected(w.v.check(sender(BOB), &early, NOW)).reason.contains("new.net is not a domain"));
    // Alice's container announces the same new domain: it will not be hers.
    let intruder = announce(ALICE_1, "new.net", "example.org_A.socket").signed(Command::Subscribe, &w.alice);
    rejected(w.v.check(sender(ALICE_1), &intruder, NOW));
    // Another table without the domain: nothing to re-check yet, both keep waiting.
    assert!(w.v.recheck_held(NOW + 1).is_empty());

    w.v.set_table(table(&[("example.org", &[ALICE_1, ALICE_2], &w.alice), ("new.net", &[BOB], &w.bob)]), NOW);
    let outcomes = w.v.recheck_held(NOW + 1);
    assert_eq!(outcomes.len(), 2);
    let mut accepted = 0;
    for o in outcomes {
        match o {
            Outcome::Forward { packets, .. } => {
                let fwd = wire::parse(&packets[0]).unwrap();
                assert_eq!((fwd.key.as_str(), fwd.address.as_str()), ("new.net", "/pin/1"));
                accepted += 1;
            }
            Outcome::Reject(r) => assert!(r.reason.contains("container 30001 does not belong to the owner of new.net")),
            Outcome::Drop => panic!("dropped"),
        }
    }
    assert_eq!(accepted, 1);
    // Checked once: a later table does not forward it again.
    w.v.set_table(table(&[("new.net", &[BOB], &w.bob)]), NOW);
    assert!(w.v.recheck_held(NOW + 2).is_empty());
}

#[test]
fn a_held_announce_too_old_is_not_checked_again() {
    let mut w = world();
    let early = announce(BOB, "new.net", "bob.org_A.socket").signed(Command::Subscribe, &w.bob);
    rejected(w.v.check(sender(BOB), &early, NOW));
    w.v.set_table(table(&[("new.net", &[BOB], &w.bob)]), NOW);
    assert!(w.v.recheck_held(NOW + crate::held::HOLD_SECS + 1).is_empty());
}

/// A world whose index the test reads, and Alice's `ssl-domain` files in her first container.
struct TlsWorld {
    w: World,
    index: FakeIndex,
}

fn tls_world() -> TlsWorld {
    let index = FakeIndex::default();
    let mut base = world();
    base.homes = base.homes.clone().socket(ALICE_2, "notify_A.socket", ALICE_2, 22);
    let names = FakeNames::default();
    let mut v = validator_with_index(
        base.homes.clone(),
        names.clone(),
        FakeIps(vec![(ALICE_1, "10.0.0.3".parse().unwrap())]),
        index.clone(),
    );
    v.set_table(
        table(&[
            ("example.org", &[ALICE_1, ALICE_2], &base.alice),
            (".example.org", &[ALICE_1, ALICE_2], &base.alice),
            ("bob.org", &[BOB], &base.bob),
        ]),
        NOW,
    );
    TlsWorld { w: World { v, names, ..base }, index }
}

impl TlsWorld {
    /// Writes a new self-signed pair for `cn` as `~/tls/<file>.{key,crt}` of `uid`.
    fn pair(&self, uid: u32, file: &str, cn: &str) {
        let p = sni_index::testing::server(&[cn], sni_index::testing::KeyKind::P256, None, 1);
        self.w.homes.write(uid, &format!("tls/{file}.key"), uid, &p.key_pem());
        self.w.homes.write(uid, &format!("tls/{file}.crt"), uid, &p.cert_pem());
    }

    /// Alice's first container announces `ssl-domain = <key> ~/tls/<file>.key ~/tls/<file>.crt [ca]`
    /// at `at`; returns what her log is told.
    fn announce(&mut self, key: &str, file: &str, ca: Option<&str>, at: i64) -> Option<String> {
        let mut a = announce(ALICE_1, key, "example.org_A.socket");
        a.now = at;
        let home = format!("/containers/{ALICE_1}/tls");
        a.sni = Some((format!("{home}/{file}.key"), format!("{home}/{file}.crt"), ca.map(str::to_string)));
        match self.w.v.check(sender(ALICE_1), &a.signed(Command::Subscribe, &self.w.alice), at) {
            Outcome::Forward { packets, message, .. } => {
                let fwd = wire::parse(&packets[0]).unwrap();
                assert!(
                    fwd.sni_key.is_none() && fwd.sni_crt.is_none() && fwd.sni_ca.is_none(),
                    "no SNI path reaches the router"
                );
                message.map(|(m, _)| m)
            }
            Outcome::Reject(r) => panic!("rejected: {}", r.reason),
            Outcome::Drop => panic!("dropped"),
        }
    }
}

#[test]
fn ssl_domain_files_are_read_by_the_validator_and_indexed_not_given_to_the_router() {
    let mut t = tls_world();
    t.pair(ALICE_1, "a", "example.org");
    let told = t.announce("example.org", "a", None, NOW).unwrap();
    assert!(told.contains("accepted; HTTPS for example.org: serving ~/tls/a.crt (CN=example.org"), "{told}");
    assert_eq!(t.index.served("example.org"), Some(("example.org".into(), ClientCa::None)));
    // A refresh with the same files: nothing read, nothing said.
    assert_eq!(t.announce("example.org", "a", None, NOW + 10), None);
    // The wildcard gets its own entry.
    t.pair(ALICE_1, "w", "*.example.org");
    t.announce(".example.org", "w", None, NOW + 11);
    assert_eq!(t.index.served(".example.org").unwrap().0, "*.example.org");
    assert!(t.index.ca_list.lock().unwrap().is_empty());
}

#[test]
fn a_renewed_pair_is_served_and_a_broken_one_keeps_the_old_with_the_reason() {
    let mut t = tls_world();
    t.pair(ALICE_1, "a", "old.example.org");
    t.announce("example.org", "a", None, NOW);
    t.pair(ALICE_1, "a", "new.example.org");
    let told = t.announce("example.org", "a", None, NOW + 10).unwrap();
    assert!(told.contains("HTTPS for example.org: new certificate ~/tls/a.crt (CN=new.example.org"), "{told}");
    assert!(told.contains("warning: the certificate does not name example.org"), "{told}");
    assert_eq!(t.index.served("example.org").unwrap().0, "new.example.org");
    // Half a renewal: the new certificate is in place, the key is still the old one.
    let p = sni_index::testing::server(&["broken.example.org"], sni_index::testing::KeyKind::P256, None, 2);
    t.w.homes.write(ALICE_1, "tls/a.crt", ALICE_1, &p.cert_pem());
    let told = t.announce("example.org", "a", None, NOW + 20).unwrap();
    assert!(told.contains("~/tls/a.crt not loaded: the key does not belong to the certificate"), "{told}");
    assert!(told.contains("still serving the previous certificate (CN=new.example.org"), "{told}");
    assert_eq!(t.index.served("example.org").unwrap().0, "new.example.org");
    // Said once per change of the files.
    assert_eq!(t.announce("example.org", "a", None, NOW + 30), None);
    t.w.homes.write(ALICE_1, "tls/a.key", ALICE_1, &p.key_pem());
    assert!(t.announce("example.org", "a", None, NOW + 40).unwrap().contains("new certificate"));
    assert_eq!(t.index.served("example.org").unwrap().0, "broken.example.org");
}

#[test]
fn a_name_loses_its_certificate_with_its_last_node() {
    let mut t = tls_world();
    t.pair(ALICE_1, "a", "example.org");
    t.announce("example.org", "a", None, NOW);
    let mut a = announce(ALICE_1, "example.org", "example.org_A.socket");
    a.now = NOW + 1;
    forwarded(t.w.v.check(sender(ALICE_1), &a.signed(Command::Unsubscribe, &t.w.alice), NOW + 1));
    assert_eq!(t.index.served("example.org"), None);
    // Expired or revoked nodes take theirs too.
    t.announce("example.org", "a", None, NOW + 10);
    assert!(t.index.served("example.org").is_some());
    t.w.v.expire(NOW + 10 + 121);
    assert_eq!(t.index.served("example.org"), None);
    t.announce("example.org", "a", None, NOW + 200);
    t.w.v.set_table(table(&[("bob.org", &[BOB], &t.w.bob)]), NOW + 201);
    assert_eq!(t.index.served("example.org"), None);
}

#[test]
fn client_ca_names_are_listed_for_the_front_door() {
    let mut t = tls_world();
    let ca = sni_index::testing::ca("Alice CA");
    t.w.homes.write(ALICE_1, "tls/ca.crt", ALICE_1, &ca.cert_pem());
    t.pair(ALICE_1, "w", "*.example.org");
    let told = t.announce(".example.org", "w", Some("!/containers/30001/tls/ca.crt"), NOW).unwrap();
    assert!(told.contains("client certificates required from CN=Alice CA"), "{told}");
    assert_eq!(t.index.served(".example.org").unwrap().1, ClientCa::Required);
    let list = t.index.ca_list.lock().unwrap().clone();
    assert_eq!(list.into_iter().collect::<Vec<_>>(), [(".example.org".to_string(), ClientCa::Required)]);
    // example.org is not below the wildcard (one label): not listed. An exact name below it
    // with an entry of its own answers for itself, without a CA.
    t.pair(ALICE_1, "a", "example.org");
    t.announce("example.org", "a", None, NOW + 1);
    assert_eq!(t.index.ca_list.lock().unwrap().len(), 1);
}

#[test]
fn another_containers_or_the_hosts_files_never_reach_the_index() {
    let mut t = tls_world();
    t.pair(BOB, "b", "bob.org");
    t.pair(ALICE_1, "a", "example.org");
    // A hard link or a file chowned to her: another uid's inode.
    t.w.homes.write(ALICE_1, "tls/stolen.key", BOB, b"bob's key");
    t.w.homes = t.w.homes.clone().broken(ALICE_1, "tls/link.key", "a symlink is in the way");
    let cases = [
        ("/containers/30002/tls/b.key", "is in another container's home"),
        ("/etc/ssl/private/node.key", "is outside the container's home"),
        ("/containers/30001/../30002/tls/b.key", "not a plain path"),
        ("/containers/30001/tls/stolen.key", "belongs to uid 30002"),
        ("/containers/30001/tls/link.key", "a symlink is in the way"),
    ];
    for (key, why) in cases {
        let mut a = announce(ALICE_1, "example.org", "example.org_A.socket");
        a.sni = Some((key.into(), "/containers/30001/tls/a.crt".into(), None));
        let r = rejected(t.w.v.check(sender(ALICE_1), &a.signed(Command::Subscribe, &t.w.alice), NOW));
        assert!(r.reason.starts_with("sni_key refused") && r.reason.contains(why), "{key}: {}", r.reason);
    }
    let mut a = announce(ALICE_1, "example.org", "example.org_A.socket");
    a.sni = Some((
        "/containers/30001/tls/a.key".into(),
        "/containers/30001/tls/a.crt".into(),
        Some("!/containers/30002/tls/b.crt".into()),
    ));
    let r = rejected(t.w.v.check(sender(ALICE_1), &a.signed(Command::Subscribe, &t.w.alice), NOW));
    assert!(r.reason.starts_with("sni_ca refused"), "{}", r.reason);
    assert!(t.index.entries.lock().unwrap().is_empty());
}

#[test]
fn a_second_vassals_other_files_wait_for_the_first_ones_to_go() {
    let mut t = tls_world();
    t.pair(ALICE_1, "a", "first");
    t.pair(ALICE_2, "b", "second");
    t.announce("example.org", "a", None, NOW);
    let mut b = announce(ALICE_2, "example.org", "example.org_B.socket");
    b.sni = Some(("/containers/30004/tls/b.key".into(), "/containers/30004/tls/b.crt".into(), None));
    let Outcome::Forward { message, .. } = t.w.v.check(sender(ALICE_2), &b.signed(Command::Subscribe, &t.w.alice), NOW)
    else {
        panic!("not forwarded")
    };
    assert!(message
        .unwrap()
        .0
        .contains("~/tls/b.crt is not used: the certificate ~/tls/a.crt announced by container 30001"));
    assert_eq!(t.index.served("example.org").unwrap().0, "first");
    // The first one goes: the next announce of the second serves its files.
    let mut a = announce(ALICE_1, "example.org", "example.org_A.socket");
    a.now = NOW + 1;
    forwarded(t.w.v.check(sender(ALICE_1), &a.signed(Command::Unsubscribe, &t.w.alice), NOW + 1));
    assert_eq!(t.index.served("example.org"), None);
    b.now = NOW + 10;
    forwarded(t.w.v.check(sender(ALICE_2), &b.signed(Command::Subscribe, &t.w.alice), NOW + 10));
    assert_eq!(t.index.served("example.org").unwrap().0, "second");
}

#[test]
fn the_platforms_certificate_serves_a_name_until_its_customer_announces_files_of_their_own() {
    let mut t = tls_world();
    let platform = |cn: &str, version: &str| {
        let p = sni_index::testing::server(&[cn], sni_index::testing::KeyKind::P256, None, 9);
        let bundle = sni_index::Bundle::from_pem(&p.cert_pem(), &p.key_pem(), None).unwrap();
        crate::sni::PlatformCert { name: "example.org".into(), owner: ALICE_1, bundle, version: version.into() }
    };
    let lines = t.w.v.set_platform_certs(vec![platform("acme-1", "v1")]);
    assert!(lines[0].starts_with("sni example.org: serving the platform's certificate"), "{lines:?}");
    assert_eq!(t.index.served("example.org").unwrap().0, "acme-1");
    // The same list again: nothing rewritten; a renewal: the new pair.
    assert!(t.w.v.set_platform_certs(vec![platform("acme-1", "v1")]).is_empty());
    t.w.v.set_platform_certs(vec![platform("acme-2", "v2")]);
    assert_eq!(t.index.served("example.org").unwrap().0, "acme-2");
    // The customer's own files win, and the platform's come back when they go.
    t.pair(ALICE_1, "a", "own");
    let told = t.announce("example.org", "a", None, NOW).unwrap();
    assert!(
        told.contains("serving ~/tls/a.crt") && told.contains("instead of the platform's automatic certificate"),
        "{told}"
    );
    assert_eq!(t.index.served("example.org").unwrap().0, "own");
    t.w.v.set_platform_certs(vec![platform("acme-3", "v3")]);
    assert_eq!(t.index.served("example.org").unwrap().0, "own", "a renewal does not take the name back");
    t.w.v.expire(NOW + 121);
    assert_eq!(t.index.served("example.org").unwrap().0, "acme-3");
    // Out of the issuer's list: out of the index.
    t.w.v.set_platform_certs(vec![]);
    assert_eq!(t.index.served("example.org"), None);
}
