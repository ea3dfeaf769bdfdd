//! The Legion's members file for node-sync (`GET /node/v1/legion/members`): every server
//! sharing a Legion with the caller, once the supplier has set its cluster keys; nothing of a
//! Legion the caller is not in.

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

both! {
    fn a_node_gets_its_legions_members_with_their_keys_and_nothing_of_another_legion(api) {
        let a = api.server("a", "192.0.2.1", 4000, 100_000);
        let b = api.server("b", "2001:db8::2", 4000, 100_000);
        let c = api.server("c", "192.0.2.3", 4000, 100_000);
        for (legion, address, nodes) in [("l1", "192.0.2.100", &["a", "b"][..]), ("l2", "192.0.2.200", &["c"][..])] {
            api.admin(&["legion", "add", "--name", legion, "--address", address]);
            for n in nodes {
                api.admin(&["legion", "add-node", "--legion", legion, "--server", n]);
            }
        }
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
        for bad in [
            vec!["--name", "a", "--public-key", &KEY_A[1..]],
            vec!["--name", "a", "--public-key", "zz0f0a8c2b6e4f7a9c1d3e5f7a9b1c3d5e7f9a1b3c5d7e9f1a3b5c7d9e1f3a5b"],
            vec!["--name", "a", "--public-key", KEY_A, "--x25519-key", "00"],
            vec!["--name", "a", "--public-key", KEY_A, "--cluster-address", "node-a.example"],
            vec!["--name", "nobody", "--public-key", KEY_A],
        ] {
            let args: Vec<&str> = ["server", "set-cluster-keys"].into_iter().chain(bad.iter().copied()).collect();
            let (ok, _, err) = api.try_admin(&args);
            assert!(!ok, "accepted {bad:?}");
            assert!(!err.trim().is_empty(), "{bad:?}: no error message");
        }
        assert_eq!(members(&api, &a)["members"][0]["public_key"], KEY_A, "a refused change changed nothing");
    }
}
