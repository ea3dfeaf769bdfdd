//! Against the real kernel and Debian's nft (root), each test in a network namespace of its
//! own (a thread that unshared it: the processes it spawns live there too), so nothing touches
//! the machine's network.

use container_net::firewall::{render_table, Elements, Firewall, Member, Nft};
use container_net::link::Netlink;
use container_net::owner::Owner;
use container_net::setup::{self, ContainerNet};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET): run as root");
        f()
    })
    .join()
    .expect("the namespace thread panicked")
}

/// This test process as the owner of the host ends it builds (platform `kt`).
fn me() -> Owner {
    Owner::current("kt").unwrap()
}

/// Container `uid` as [`setup::container`] gets it, owned by this test process.
fn net(uid: u32) -> ContainerNet {
    ContainerNet {
        uid,
        host_if: container_spec::host_interface(uid),
        ip: container_spec::ip_of(uid),
        dmz: false,
        owner: me(),
    }
}

/// An owner that ran and is gone (a `sleep` killed and reaped).
fn dead(platform: &str) -> Owner {
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    let start = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().nth(19).unwrap().parse().unwrap();
    let owner = Owner { platform: platform.into(), pid: child.id(), start };
    child.kill().unwrap();
    child.wait().unwrap();
    owner
}

/// A namespace kept alive by a descriptor only, as the kernel keeps a dead container's while
/// its sockets finish.
fn lingering_netns() -> std::os::fd::OwnedFd {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        setup::current_netns().unwrap()
    })
    .join()
    .unwrap()
}

/// A pair `host`/`peer0` (peer in `ns`) with `owner` written on the host end.
fn pair(host: &str, ns: &std::os::fd::OwnedFd, owner: Option<&Owner>) {
    let mut nl = Netlink::open().unwrap();
    nl.create_veth(host, "peer0", ns.as_fd()).unwrap();
    if let Some(o) = owner {
        let index = nl.index_of(host).unwrap().unwrap();
        nl.set_alias(index, &o.to_string()).unwrap();
    }
}

/// What [`setup::container`] builds for `c` from a fresh namespace (a thread that unshared).
fn build_in_new_netns(c: &ContainerNet, host: &std::os::fd::OwnedFd) -> setup::Built {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            setup::container(c, host.as_fd()).unwrap()
        })
        .join()
        .unwrap()
    })
}

fn elements() -> Elements {
    let mut e = Elements::default();
    for (uid, links) in [(30501u32, vec![30502u32]), (30502, vec![30501]), (30503, vec![])] {
        e.add_member(&Member {
            ifname: format!("uw{uid}"),
            ip: container_spec::ip_of(uid),
            dmz: uid == 30503,
            links: links.into_iter().map(container_spec::ip_of).collect(),
        });
    }
    e.uplink.insert("upl0".into());
    e.pm_tcp.insert((Ipv4Addr::new(198, 18, 0, 1), 8080), (container_spec::ip_of(30501), 80));
    e
}

fn normalized(json: &str) -> serde_json::Value {
    container_net::firewall::comparable(json).unwrap()
}

#[test]
fn the_table_applies_and_reapplying_it_is_idempotent() {
    in_fresh_netns(|| {
        let nft = Nft::new();
        // An operator's own table must survive everything the platform does.
        nft.apply("table inet operator { chain c { type filter hook input priority 0; policy accept; }; }\n").unwrap();
        let e = elements();
        nft.apply(&render_table("unbit", &e).unwrap()).unwrap();
        let first = nft.list("unbit", true).unwrap().unwrap();
        nft.apply(&render_table("unbit", &e).unwrap()).unwrap();
        let second = nft.list("unbit", true).unwrap().unwrap();
        assert_eq!(normalized(&first), normalized(&second), "re-applying changed the table");

        // Element edits reach the same table as a full apply of the new elements.
        let mut fw = Firewall::new("unbit", Nft::new());
        fw.sync(&e).unwrap();
        let mut unlinked = e.clone();
        unlinked.links.remove(&(container_spec::ip_of(30502), container_spec::ip_of(30501)));
        unlinked.pm_tcp.clear();
        fw.sync(&unlinked).unwrap();
        let edited = nft.list("unbit", true).unwrap().unwrap();
        nft.apply(&render_table("unbit", &unlinked).unwrap()).unwrap();
        let full = nft.list("unbit", true).unwrap().unwrap();
        assert_eq!(normalized(&edited), normalized(&full));
        assert!(!fw.verify().unwrap(), "a full apply of the same elements is the same table");

        // An operator's flush is noticed and repaired; their table is left alone.
        nft.apply(
            "flush ruleset\ntable inet operator { chain c { type filter hook input priority 0; policy accept; }; }\n",
        )
        .unwrap();
        assert!(nft.list("unbit", false).unwrap().is_none());
        assert!(fw.verify().unwrap());
        assert_eq!(normalized(&nft.list("unbit", true).unwrap().unwrap()), normalized(&full));
        fw.remove().unwrap();
        assert!(nft.list("unbit", false).unwrap().is_none());
        assert!(nft.list("operator", false).unwrap().is_some(), "the operator's table was touched");
    });
}

#[test]
fn a_container_end_is_built_and_its_host_end_configured() {
    in_fresh_netns(|| {
        let host = setup::current_netns().unwrap();
        setup::node().unwrap();
        let c = net(30509);
        let child = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let t = std::time::Instant::now();
            assert_eq!(setup::container(&c, host.as_fd()).unwrap(), setup::Built::Yes);
            eprintln!("container end + host end built in {:?}", t.elapsed());
            let mut nl = Netlink::open().unwrap();
            let inner = nl.index_of("uwsgi0").unwrap().expect("uwsgi0 in the container");
            assert!(nl.has_address(inner, container_spec::ip_of(30509)).unwrap());
            assert_eq!(nl.default_route_interface().unwrap().as_deref(), Some("uwsgi0"));
            assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv6/conf/uwsgi0/disable_ipv6").unwrap().trim(), "1");
        });
        child.join().unwrap();
        // The child's namespace is gone with its thread; the kernel then deletes the pair.
        let mut nl = Netlink::open().unwrap();
        let lo = nl.index_of("lo").unwrap().unwrap();
        assert!(nl.has_address(lo, Ipv4Addr::new(10, 0, 0, 1)).unwrap());
        assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap().trim(), "1");
        assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/conf/lo/route_localnet").unwrap().trim(), "0");
        let gone = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(25));
            nl.index_of("uw30509").unwrap().is_none()
        });
        assert!(gone, "uw30509 outlived its container's namespace");
    });
}

/// What a link change costs with 10, 1 000 and 5 000 containers on the node (an element edit
/// and the listing the Emperor keeps to notice someone else's changes). Prints; asserts
/// nothing about time. `cargo test -p container-net --test kernel -- --ignored --nocapture`
#[test]
#[ignore]
fn cost_of_a_link_change() {
    in_fresh_netns(|| {
        for n in [10u32, 1_000, 5_000] {
            let mut e = Elements::default();
            for i in 0..n {
                let uid = 30_000 + i;
                let peer = 30_000 + (i ^ 1);
                e.add_member(&Member {
                    ifname: format!("uw{uid}"),
                    ip: container_spec::ip_of(uid),
                    dmz: false,
                    links: vec![container_spec::ip_of(peer)],
                });
            }
            let mut fw = Firewall::new("unbit", Nft::new());
            let t = std::time::Instant::now();
            fw.sync(&e).unwrap();
            let full = t.elapsed();
            let mut changed = e.clone();
            changed.links.insert((container_spec::ip_of(30_000), container_spec::ip_of(30_002)));
            let t = std::time::Instant::now();
            fw.sync(&changed).unwrap();
            let edit = t.elapsed();
            let t = std::time::Instant::now();
            assert!(!fw.verify().unwrap());
            let verify = t.elapsed();
            eprintln!("{n} containers: full table {full:?}, one link change {edit:?}, check {verify:?}");
            fw.remove().unwrap();
        }
    });
}

#[test]
fn a_taken_host_name_is_left_alone() {
    in_fresh_netns(|| {
        let host = setup::current_netns().unwrap();
        // Another platform's container 30508 in the same namespace.
        Netlink::open().unwrap().create_veth("uw30508", "other0", host.as_fd()).unwrap();
        let c = net(30508);
        let built = std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let built = setup::container(&c, host.as_fd()).unwrap();
                assert_eq!(Netlink::open().unwrap().index_of("uwsgi0").unwrap(), None);
                built
            })
            .join()
            .unwrap()
        });
        assert_eq!(built, setup::Built::NameTaken);
        let mut nl = Netlink::open().unwrap();
        assert!(nl.index_of("uw30508").unwrap().is_some() && nl.index_of("other0").unwrap().is_some());
    });
}

#[test]
fn a_dead_containers_host_end_is_reclaimed_and_nothing_else() {
    in_fresh_netns(|| {
        let host = setup::current_netns().unwrap();
        setup::node().unwrap();
        let held: Vec<_> = (0..4).map(|_| lingering_netns()).collect();
        pair("uw30506", &held[0], Some(&dead("kt"))); // ours, dead: reclaimed
        pair("uw30505", &held[1], Some(&me())); // ours, alive: kept
        pair("uw30504", &held[2], Some(&dead("other"))); // another platform's: kept
        pair("uw30503", &held[3], None); // no alias: kept
        let removed = setup::remove_dead_host_ends("kt", None).unwrap();
        assert_eq!(removed, vec!["uw30506".to_string()]);
        let names = Netlink::open().unwrap().link_names().unwrap();
        for kept in ["uw30505", "uw30504", "uw30503"] {
            assert!(names.contains(&kept.to_string()), "{kept} was deleted: {names:?}");
        }

        // A restarted container whose predecessor's namespace lingers gets its pair at once.
        let lingering = lingering_netns();
        pair("uw30507", &lingering, Some(&dead("kt")));
        let c = net(30507);
        let built = build_in_new_netns(&c, &host);
        assert_eq!(built, setup::Built::Yes);
        let mut nl = Netlink::open().unwrap();
        let index = nl.index_of("uw30507").unwrap().expect("the new host end");
        let alias = nl.links().unwrap().into_iter().find(|l| l.0 == index).unwrap().2;
        assert_eq!(alias.as_deref().and_then(Owner::parse), Some(me()), "the new host end names its owner");
    });
}

#[test]
fn a_running_containers_host_end_is_waited_for_not_taken() {
    in_fresh_netns(|| {
        let host = setup::current_netns().unwrap();
        let held = lingering_netns();
        pair("uw30502", &held, Some(&me()));
        let c = net(30502);
        let built = build_in_new_netns(&c, &host);
        assert_eq!(built, setup::Built::NameTaken);
    });
}
