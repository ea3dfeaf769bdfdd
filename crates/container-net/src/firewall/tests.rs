use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn two_linked() -> Elements {
    let mut e = Elements::default();
    e.add_member(&Member { ifname: "uw30501".into(), ip: ip("10.0.1.247"), dmz: false, links: vec![ip("10.0.1.248")] });
    e.add_member(&Member { ifname: "uw30502".into(), ip: ip("10.0.1.248"), dmz: true, links: vec![ip("10.0.1.247")] });
    e.uplink.insert("eth0".into());
    e.pm_tcp.insert((ip("198.18.0.1"), 8080), (ip("10.0.1.247"), 80));
    e
}

#[test]
fn the_table_holds_the_elements_and_fixed_rules() {
    let t = render_table("unbit", &two_linked()).unwrap();
    assert!(t.starts_with("add table inet unbit\ndelete table inet unbit\ntable inet unbit {\n"), "{t}");
    assert!(t.contains(r#"elements = { "uw30501" . 10.0.1.247, "uw30502" . 10.0.1.248 }"#), "{t}");
    assert!(t.contains("elements = { 10.0.1.247 . 10.0.1.248, 10.0.1.248 . 10.0.1.247 }"), "{t}");
    assert!(t.contains("elements = { 10.0.1.248 }"), "{t}");
    assert!(t.contains("elements = { 198.18.0.1 . 8080 : 10.0.1.247 . 80 }"), "{t}");
    assert!(t.contains("ip saddr . ip daddr @links ip daddr . ip saddr @links accept"));
    // Linked pairs are checked per packet, so they need no conntrack state.
    assert!(t.contains("iifname @ifs ip saddr . ip daddr @links ip daddr . ip saddr @links notrack"), "{t}");
    assert!(t.contains("ip daddr 10.0.0.0/8 drop"));
    assert!(t.contains("ip daddr 169.254.0.0/16 drop"), "cloud metadata services stay out of reach");
    // The same elements render the same text, whatever order they were added in.
    let mut e = Elements::default();
    for m in two_linked().ctr_if_ip.iter().rev() {
        e.ctr_if_ip.insert(m.clone());
    }
    let mut again = two_linked();
    again.ctr_if_ip = e.ctr_if_ip;
    assert_eq!(render_table("unbit", &again).unwrap(), t);
    // Empty sets are declared without elements.
    let empty = render_table("unbit", &Elements::default()).unwrap();
    assert!(!empty.contains("elements"), "{empty}");
}

#[test]
fn a_link_change_is_one_element() {
    let old = two_linked();
    let mut new = old.clone();
    new.links.remove(&(ip("10.0.1.248"), ip("10.0.1.247")));
    assert_eq!(
        render_changes("unbit", &old, &new).unwrap(),
        "delete element inet unbit links { 10.0.1.248 . 10.0.1.247 }\n"
    );
    assert_eq!(
        render_changes("unbit", &new, &old).unwrap(),
        "add element inet unbit links { 10.0.1.248 . 10.0.1.247 }\n"
    );
    assert_eq!(render_changes("unbit", &old, &old).unwrap(), "");
}

#[test]
fn a_changed_mapping_is_deleted_then_added() {
    let old = two_linked();
    let mut new = old.clone();
    new.pm_tcp.insert((ip("198.18.0.1"), 8080), (ip("10.0.1.248"), 81));
    new.dmz.clear();
    assert_eq!(
        render_changes("unbit", &old, &new).unwrap(),
        "delete element inet unbit dmz { 10.0.1.248 }\n\
         delete element inet unbit pm_tcp { 198.18.0.1 . 8080 }\n\
         add element inet unbit pm_tcp { 198.18.0.1 . 8080 : 10.0.1.248 . 81 }\n"
    );
}

#[test]
fn names_that_could_break_the_script_are_refused() {
    let mut e = two_linked();
    assert!(render_table("unbit; flush ruleset", &e).is_err());
    assert!(render_table("", &e).is_err());
    e.uplink.insert("eth0\" } ; flush ruleset".into());
    assert!(render_table("unbit", &e).is_err());
    assert!(render_changes("unbit", &Elements::default(), &e).is_err());
}

#[test]
fn the_tunnel_to_other_nodes_passes_linked_pairs_only() {
    let old = two_linked();
    let mut new = old.clone();
    new.tunnel.insert("unbit-wg".into());
    let t = render_table("unbit", &new).unwrap();
    assert!(t.contains("set tunnel {\n\t\ttype ifname\n\t\telements = { \"unbit-wg\" }"), "{t}");
    // Out: the local container linked the remote one; in: the local container links the sender.
    assert!(t.contains("iifname @ifs oifname @tunnel ip saddr . ip daddr @links accept"), "{t}");
    assert!(t.contains("iifname @tunnel oifname @ifs ip daddr . ip saddr @links accept"), "{t}");
    // Before the established rule: an unlink cuts a connection across nodes too.
    let drop_in = t.find("iifname @tunnel drop\n\t\toifname @tunnel drop").expect("tunnel drops in forward");
    assert!(drop_in < t.find("ct state established,related accept\n\t\toifname").unwrap(), "{t}");
    assert!(t.contains("iifname @tunnel fib saddr . iif oif missing drop"), "{t}");
    assert_eq!(render_changes("unbit", &old, &new).unwrap(), "add element inet unbit tunnel { \"unbit-wg\" }\n");
    new.tunnel.insert("bad\"name".into());
    assert!(render_table("unbit", &new).is_err());
}
