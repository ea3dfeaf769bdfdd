use super::*;

fn key(b: u8) -> Key {
    Key([b; 32])
}

fn file(a_pub: &Key, b_pub: &Key) -> String {
    format!(
        r#"{{"members": [
            {{"name": "a", "endpoint": "192.168.77.1:51820", "public_key": "{}", "containers": [31350]}},
            {{"name": "b", "endpoint": "192.168.77.2:51821", "public_key": "{}", "containers": [31351, 31352]}}
        ]}}"#,
        a_pub.to_base64(),
        b_pub.to_base64()
    )
}

#[test]
fn a_node_peers_with_every_other_member_and_routes_their_containers() {
    let (a, b) = (key(1), key(2));
    let members = parse_members(&file(&a.public(), &b.public())).unwrap();
    let cfg = NodeConfig::new("a", a, &members).unwrap();
    assert_eq!(cfg.listen_port, 51820);
    assert_eq!(cfg.peers.len(), 1);
    let remote: Vec<Ipv4Addr> = cfg.remote_addresses().into_iter().collect();
    assert_eq!(remote, vec![container_spec::ip_of(31351), container_spec::ip_of(31352)]);
    let uapi = cfg.uapi_set();
    assert!(uapi.starts_with("set=1\nprivate_key=0101"), "{uapi}");
    let b_hex: String = b.public().0.iter().map(|x| format!("{x:02x}")).collect();
    assert!(uapi.contains(&format!("public_key={b_hex}\nendpoint=192.168.77.2:51821\n")), "{uapi}");
    assert!(uapi.contains(&format!("allowed_ip={}/32\n", container_spec::ip_of(31352))), "{uapi}");
    assert!(!uapi.contains(&format!("allowed_ip={}/32", container_spec::ip_of(31350))), "own containers stay local");
    assert!(uapi.ends_with("\n\n"), "the UAPI request ends with an empty line");
    let conf = cfg.wg_conf();
    assert!(conf.contains(&format!("PrivateKey = {}\n", a.to_base64())), "{conf}");
    assert!(conf.contains(&format!("PublicKey = {}\n", b.public().to_base64())), "{conf}");
    assert!(
        conf.contains(&format!(
            "AllowedIPs = {}/32, {}/32\n",
            container_spec::ip_of(31351),
            container_spec::ip_of(31352)
        )),
        "{conf}"
    );
}

#[test]
fn a_wrong_key_or_an_unknown_node_is_refused_at_start() {
    let (a, b) = (key(1), key(2));
    let members = parse_members(&file(&a.public(), &b.public())).unwrap();
    let e = NodeConfig::new("a", b, &members).unwrap_err();
    assert!(e.contains("the members file lists public key"), "{e}");
    assert!(NodeConfig::new("c", a, &members).unwrap_err().contains("not in the links members file"));
}

#[test]
fn a_bad_members_file_is_refused_whole_with_the_member() {
    let (a, b) = (key(1).public(), key(2).public());
    let good = file(&a, &b);
    let cases = [
        (good.replace("31352", "31350"), "members[1] (\"b\"): container 31350 is listed on \"a\" too"),
        (good.replace("31352", "65534"), "65534 is not a container uid"),
        (good.replace("192.168.77.2:51821", "192.168.77.2"), "is not address:port"),
        (good.replace(":51821", ":0"), "endpoint port 0"),
        (good.replace(&b.to_base64(), &a.to_base64()), "another member's too"),
        (good.replace(&b.to_base64(), "c2hvcnQ="), "must decode to 32 bytes"),
        (good.replace("\"name\": \"b\"", "\"name\": \"a\""), "named twice"),
        (good.replace("\"name\": \"b\"", "\"name\": \"b c\""), "a name is"),
        (good.replace("\"containers\": [31350]", "\"containers\": [31350], \"key\": 1"), "unknown field"),
    ];
    for (text, want) in cases {
        let e = parse_members(&text).unwrap_err();
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
}

#[test]
fn keys_round_trip_and_a_private_key_is_never_printed_whole() {
    let k = Key::generate().unwrap();
    assert_eq!(Key::parse(&k.to_base64()).unwrap(), k);
    assert_ne!(k.public(), k);
    assert_ne!(Key::generate().unwrap(), k);
    let shown = format!("{k:?}");
    assert!(!shown.contains(&k.to_base64()), "{shown}");
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("cluster-links-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.key");
    let k = Key::generate().unwrap();
    std::fs::write(&path, format!("{}\n", k.to_base64())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = read_private_key(&path).unwrap_err();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let read = read_private_key(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(e.contains("readable by others"), "{e}");
    assert_eq!(read.unwrap(), k);
}
