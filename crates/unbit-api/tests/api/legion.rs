//! The Legion's members file for node-sync (`GET /node/v1/legion/members`): every server
//! sharing a Legion with the caller, once the supplier has set its cluster keys; nothing of a
//! Legion the caller is not in. The same for the links members file (`GET
//! /node/v1/links/members`, for `unbit-links`): each member's WireGuard key and containers.

use crate::both;
use crate::harness::{Api, Who};
use serde_json::json;

const KEY_A: &str = "5d0f0a8c2b6e4f7a9c1d3e5f7a9b1c3d5e7f9a1b3c5d7e9f1a3b5c7d9e1f3a5b";
const X25519_A: &str = "9a41c0ffee00112233445566778899aabbccddeeff00112233445566778899aa";
const KEY_B: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const KEY_C: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn members(api: &Api, node: &Who) -> serde_json::Value {
    api.get(node, "/node/v1/legion/members").expect(200)
}

/// The API's log as text: its terminal colour codes (`ESC [ ... m`) taken out.
fn without_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// Each of `bad`'s argument lists is refused by `admin server <command>`, with a message.
fn refused(api: &Api, command: &str, bad: &[Vec<&str>]) {
    for args in bad {
        let all: Vec<&str> = ["server", command].into_iter().chain(args.iter().copied()).collect();
        let (ok, _, err) = api.try_admin(&all);
        assert!(!ok, "accepted {args:?}");
        assert!(!err.trim().is_empty(), "{args:?}: no error message");
    }
}

/// Servers a (IPv4) and b (IPv6) in Legion l1, c alone in l2; their node identities.
fn two_legions(api: &Api) -> (Who, Who, Who) {
    let a = api.server("a", "192.0.2.1", 4000, 100_000);
    let b = api.server("b", "2001:db8::2", 4000, 100_000);
    let c = api.server("c", "192.0.2.3", 4000, 100_000);
    for (legion, address, nodes) in [("l1", "192.0.2.100", &["a", "b"][..]), ("l2", "192.0.2.200", &["c"][..])] {
        api.admin(&["legion", "add", "--name", legion, "--address", address]);
        for n in nodes {
            api.admin(&["legion", "add-node", "--legion", legion, "--server", n]);
        }
    }
    (a, b, c)
}

both! {
    fn a_node_gets_its_legions_members_with_their_keys_and_nothing_of_another_legion(api) {
        let (a, b, c) = two_legions(&api);
        api.start();
        // No keys yet: no member can be checked, so none is listed.
        assert_eq!(members(&api, &a), json!({"members": []}));

        api.admin(&["server", "set-cluster-keys", "--name", "a", "--public-key", KEY_A, "--x25519-key", X25519_A,
            "--cluster-address", "10.0.0.1"]);
        api.admin(&["server", "set-cluster-keys", "--name", "b", "--public-key", &KEY_B.to_uppercase()]);
        api.admin(&["server", "set-cluster-keys", "--name", "c", "--public-key", KEY_C]);
        let want = json!({"members": [
            {"name": "a", "cluster": "10.0.0.1:3022", "fastrouter": "10.0.0.1:1999", "public_key": KEY_A, "x25519_key": X25519_A},
            {"name": "b", "cluster": "[2001:db8::2]:3022", "fastrouter": "[2001:db8::2]:1999", "public_key": KEY_B},
        ]});
        assert_eq!(members(&api, &a), want);
        assert_eq!(members(&api, &b), want, "every member gets the same file");
        assert_eq!(members(&api, &c), json!({"members": [
            {"name": "c", "cluster": "192.0.2.3:3022", "fastrouter": "192.0.2.3:1999", "public_key": KEY_C},
        ]}));

        // Out of the Legion: out of its file, and the node gets an empty one.
        api.admin(&["legion", "remove-node", "--legion", "l1", "--server", "b"]);
        assert_eq!(members(&api, &a)["members"].as_array().unwrap().len(), 1);
        assert_eq!(members(&api, &b), json!({"members": []}));

        // Only nodes read it.
        let kratos = api.customer("kratos", "deimos-pass");
        assert!(api.get(&kratos, "/node/v1/legion/members").status >= 400);
        assert!(api.get(&Who::Anonymous, "/node/v1/legion/members").status >= 400);

        // What the supplier types is checked.
        let bad = [
            vec!["--name", "a", "--public-key", &KEY_A[1..]],
            vec!["--name", "a", "--public-key", "zz0f0a8c2b6e4f7a9c1d3e5f7a9b1c3d5e7f9a1b3c5d7e9f1a3b5c7d9e1f3a5b"],
            vec!["--name", "a", "--public-key", KEY_A, "--x25519-key", "00"],
            vec!["--name", "a", "--public-key", KEY_A, "--cluster-address", "node-a.example"],
            vec!["--name", "nobody", "--public-key", KEY_A],
        ];
        refused(&api, "set-cluster-keys", &bad);
        assert_eq!(members(&api, &a)["members"][0]["public_key"], KEY_A, "a refused change changed nothing");
    }
}

/// WireGuard public keys (base64 of 32 bytes), as `unbit-links pubkey` prints them.
const WG_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const WG_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const WG_C: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

fn links_members(api: &Api, node: &Who) -> serde_json::Value {
    api.get(node, "/node/v1/links/members").expect(200)
}

both! {
    fn a_node_gets_its_legions_links_members_with_their_containers_and_nothing_of_another_legion(api) {
        let (a, b, c) = two_legions(&api);
        let kratos = api.customer("kratos", "deimos-pass");
        let (a1, a2) = (api.container(&kratos, "a", "a1", 256, 1000), api.container(&kratos, "a", "a2", 256, 1000));
        let b1 = api.container(&kratos, "b", "b1", 256, 1000);
        let c1 = api.container(&kratos, "c", "c1", 256, 1000);
        api.start();
        // No keys yet: no member can be a peer, so none is listed.
        assert_eq!(links_members(&api, &a), json!({"members": []}));

        // The endpoint is the cluster address when there is one, the server's address otherwise.
        api.admin(&["server", "set-cluster-keys", "--name", "a", "--public-key", KEY_A, "--cluster-address", "10.0.0.1"]);
        api.admin(&["server", "set-links-key", "--name", "a", "--public-key", WG_A]);
        api.admin(&["server", "set-links-key", "--name", "b", "--public-key", &format!(" {WG_B}\n")]);
        api.admin(&["server", "set-links-key", "--name", "c", "--public-key", WG_C]);
        let want = json!({"members": [
            {"name": "a", "endpoint": "10.0.0.1:51820", "public_key": WG_A, "containers": [a1, a2]},
            {"name": "b", "endpoint": "[2001:db8::2]:51820", "public_key": WG_B, "containers": [b1]},
        ]});
        assert_eq!(links_members(&api, &a), want);
        assert_eq!(links_members(&api, &b), want, "every member gets the same file");
        assert_eq!(links_members(&api, &c), json!({"members": [
            {"name": "c", "endpoint": "192.0.2.3:51820", "public_key": WG_C, "containers": [c1]},
        ]}));

        // A container placed on a member joins its list; a deleted one leaves it.
        let b2 = api.container(&kratos, "b", "b2", 256, 1000);
        assert_eq!(links_members(&api, &a)["members"][1]["containers"], json!([b1, b2]));
        api.admin(&["container", "delete", "--uid", &a1.to_string()]);
        assert_eq!(links_members(&api, &b)["members"][0]["containers"], json!([a2]));

        // Out of the Legion: out of its file, and the node gets an empty one.
        api.admin(&["legion", "remove-node", "--legion", "l1", "--server", "b"]);
        assert_eq!(links_members(&api, &a)["members"].as_array().unwrap().len(), 1);
        assert_eq!(links_members(&api, &b), json!({"members": []}));

        // Only nodes read it.
        assert!(api.get(&kratos, "/node/v1/links/members").status >= 400);
        assert!(api.get(&Who::Anonymous, "/node/v1/links/members").status >= 400);

        // What the supplier types is checked: 32 bytes of base64, of a server that exists.
        let bad = [
            vec!["--name", "a", "--public-key", &WG_A[1..]],
            vec!["--name", "a", "--public-key", "BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBA=="],
            vec!["--name", "a", "--public-key", KEY_A],
            vec!["--name", "a", "--public-key", ""],
            vec!["--name", "nobody", "--public-key", WG_A],
        ];
        refused(&api, "set-links-key", &bad);
        assert_eq!(links_members(&api, &a)["members"][0]["public_key"], WG_A, "a refused change changed nothing");
    }
}

both! {
    fn a_server_whose_address_is_not_an_ip_is_listed_as_skipped_in_both_files_not_dropped(api) {
        let (a, _, _) = two_legions(&api);
        api.admin(&["server", "set-cluster-keys", "--name", "a", "--public-key", KEY_A]);
        api.admin(&["server", "set-cluster-keys", "--name", "b", "--public-key", KEY_B]);
        api.admin(&["server", "set-links-key", "--name", "a", "--public-key", WG_A]);
        api.admin(&["server", "set-links-key", "--name", "b", "--public-key", WG_B]);
        // The admin CLI refuses a host name as a server's address (set-cluster-keys' own
        // address is checked above); a row from before it checked, or edited by hand, has one.
        let add = ["server", "add", "--name", "d", "--address", "node-d.example", "--memory", "4000", "--storage", "1"];
        let (ok, _, err) = api.try_admin(&add);
        assert!(!ok && err.contains("not an IP address"), "{err}");
        api.sql("UPDATE servers SET address = 'node-b.example' WHERE name = 'b'");
        api.start();

        let skipped = json!([{"name": "b", "reason": "its inter-node address \"node-b.example\" is not an IP address \
            (admin server set-cluster-keys --cluster-address)"}]);
        for _ in 0..2 {
            assert_eq!(members(&api, &a), json!({"members": [
                {"name": "a", "cluster": "192.0.2.1:3022", "fastrouter": "192.0.2.1:1999", "public_key": KEY_A},
            ], "skipped": skipped}));
            assert_eq!(links_members(&api, &a), json!({"members": [
                {"name": "a", "endpoint": "192.0.2.1:51820", "public_key": WG_A, "containers": []},
            ], "skipped": skipped}));
        }
        // Said in the API's log, with the server's name, once: every node polls both files
        // every 2 seconds.
        let log = without_colours(&api.log());
        let said: Vec<&str> = log.lines().filter(|l| l.contains("left out of its Legion's members files")).collect();
        assert_eq!(said.len(), 1, "{log}");
        assert!(said[0].contains("server=b") && said[0].contains("node-b.example"), "{log}");

        // An IP inter-node address takes it back in: the file is again exactly what its
        // reader takes.
        api.admin(&["server", "set-cluster-keys", "--name", "b", "--public-key", KEY_B, "--cluster-address", "10.0.0.2"]);
        assert_eq!(members(&api, &a)["members"][1]["cluster"], "10.0.0.2:3022");
        assert_eq!(links_members(&api, &a)["members"][1]["endpoint"], "10.0.0.2:51820");
        assert!(members(&api, &a).get("skipped").is_none());
        assert!(links_members(&api, &a).get("skipped").is_none());
    }
}
