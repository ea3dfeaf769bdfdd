use crate::both;
use crate::harness::{ssh_key, Api, Who};
use container_spec::ContainerSpec;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn node_specs(api: &Api, node: &Who, since: Option<i64>) -> (i64, Vec<ContainerSpec>) {
    let path = match since {
        Some(r) => format!("/node/v1/containers?since={r}"),
        None => "/node/v1/containers".to_string(),
    };
    let body = api.get(node, &path).expect(200);
    let specs = body["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let spec: ContainerSpec = serde_json::from_value(s.clone()).expect("a ContainerSpec");
            spec.validate().expect("a valid spec");
            spec
        })
        .collect();
    (body["revision"].as_i64().unwrap(), specs)
}

fn deploy(api: &Api, f: &crate::Fixture, uid: u32, who: &Who) -> Value {
    api.post_json(who, &format!("/containers/{uid}"), json!({"distro": f.distro, "ssh_keys": [ssh_key()]})).expect(200)
}

both! {
    fn a_custom_distro_reaches_the_node_with_its_store_owner_and_fallback(api) {
        let f = crate::fixture(&mut api);
        api.post_json(&f.kratos, &format!("/containers/{}", f.k2), json!({"custom_distros_storage": true, "distro": f.distro, "ssh_keys": [ssh_key()]})).expect(200);
        let cd = api.post_json(&f.kratos, &format!("/custom_distros/{}", f.k2), json!({"name": "deb", "path": "deb"})).expect(201);
        deploy(&api, &f, f.k1, &f.kratos);
        api.post_json(&f.kratos, &format!("/containers/{}", f.k1), json!({"custom_distro": cd["id"]})).expect(200);
        deploy(&api, &f, f.z1, &f.zeus);
        let (_, specs) = node_specs(&api, &f.node, None);
        let of = |uid: u32| specs.iter().find(|s| s.uid == uid).unwrap().clone();
        let (store, user, other) = (of(f.k2), of(f.k1), of(f.z1));
        assert!(store.custom_distros_storage && !user.custom_distros_storage);
        assert_eq!(
            user.distro,
            container_spec::Distro::Custom { storage_uid: f.k2, path: "deb".into(), fallback: Some("bookworm".into()) }
        );
        // The node compares owners: the same customer's containers carry the same id, another's a different one.
        assert!(user.customer != 0 && user.customer == store.customer && other.customer != user.customer);
    }

    fn nodes_get_only_their_deployable_containers(api) {
        let f = crate::fixture(&mut api);
        let (rev0, specs) = node_specs(&api, &f.node, None);
        assert!(specs.is_empty(), "nothing is deployable yet");
        api.post_json(&f.kratos, &format!("/containers/{}", f.k1), json!({"distro": f.distro})).expect(200);
        let (rev1, specs) = node_specs(&api, &f.node, None);
        assert!(rev1 > rev0);
        assert!(specs.is_empty(), "a distro without keys is not deployable");
        deploy(&api, &f, f.k1, &f.kratos);
        let (_, specs) = node_specs(&api, &f.node, None);
        assert_eq!(specs.len(), 1);
        let s = &specs[0];
        assert_eq!(s.uid, f.k1);
        assert_eq!(s.memory_mb, 500);
        assert_eq!(s.distro, container_spec::Distro::Platform { path: "bookworm".into() });
        assert_eq!(s.alarms.freq, 60);
        assert_eq!(s.alarms.quota_threshold, 90);
        // The subscription key: RSA 2048, PKCS#8 private, SPKI public, the customer's own.
        let key = openssl::pkey::PKey::private_key_from_pem(s.subscription_key.private_pem.as_bytes()).unwrap();
        assert_eq!(key.rsa().unwrap().size() * 8, 2048);
        assert!(s.subscription_key.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let public = openssl::pkey::PKey::public_key_from_pem(s.subscription_key.public_pem.as_bytes()).unwrap();
        assert!(key.public_eq(&public));
        let admin_pem = api.admin(&["customer", "public-key", "--username", "kratos"]);
        assert_eq!(admin_pem, s.subscription_key.public_pem);
        // A second node sees nothing of the first one.
        let node2 = api.server("node2", "192.0.2.11", 1000, 1000);
        assert!(node_specs(&api, &node2, None).1.is_empty());
        // Node authentication.
        api.get(&Who::Anonymous, "/node/v1/containers").expect_error(403, None);
        api.get(&Who::Node("wrong".into()), "/node/v1/containers").expect_error(403, None);
        api.get(&f.kratos, "/node/v1/containers").expect_error(403, None);
        api.get(&f.node, "/node/v1/containers?since=abc").expect_error(422, Some("since"));
    }

    fn restart_relevant_changes_are_visible_to_the_node(api) {
        let f = crate::fixture(&mut api);
        deploy(&api, &f, f.k1, &f.kratos);
        let path = format!("/containers/{}", f.k1);
        let spec = |api: &Api| node_specs(api, &f.node, None).1.into_iter().find(|s| s.uid == f.k1).unwrap();
        let s0 = spec(&api);
        assert_eq!(s0.reboot_generation, 0);
        api.post_json(&f.kratos, &path, json!({"reboot": 1})).expect(200);
        let s1 = spec(&api);
        assert_eq!(s1.reboot_generation, 1);
        assert!(s0.needs_restart_for(&s1));
        api.post_json(&f.kratos, &path, json!({"link": f.z1})).expect(200);
        let s2 = spec(&api);
        assert_eq!((s2.reboot_generation, s2.links.clone()), (2, vec![f.z1]));
        api.post_json(&f.kratos, &path, json!({"unlink": f.z1})).expect(200);
        let s3 = spec(&api);
        assert_eq!((s3.reboot_generation, s3.links.is_empty()), (3, true));
        // ssh keys: only ssh_keys changes, no restart.
        api.post_json(&f.kratos, &path, json!({"ssh_keys": [ssh_key()]})).expect(200);
        let s4 = spec(&api);
        assert_ne!(s4.ssh_keys, s3.ssh_keys);
        assert!(!s3.needs_restart_for(&s4));
        // Other restart-relevant fields are in the spec itself.
        api.post_json(&f.kratos, &path, json!({
            "alarm_freq": 300, "quota_threshold": 50, "nofollow": true, "name": "renamed",
            "pushover_user": "u", "pushover_token": "t", "jid": "a@b.org", "jid_secret": "s", "jid_destinations": "c@d.org"
        })).expect(200);
        let s5 = spec(&api);
        assert!(s4.needs_restart_for(&s5));
        assert_eq!((s5.alarms.freq, s5.alarms.quota_threshold, s5.nofollow), (300, 50, true));
        assert_eq!(s5.name, "renamed");
        assert_eq!(s5.alarms.pushover_token.as_deref(), Some("t"));
        assert_eq!(s5.alarms.jid_secret.as_deref(), Some("s"));
        assert_eq!(s5.reboot_generation, 3, "field changes do not bump the generation");
        let d2 = api.distro("Alpine", "alpine");
        api.post_json(&f.kratos, &path, json!({"distro": d2})).expect(200);
        assert_eq!(spec(&api).distro, container_spec::Distro::Platform { path: "alpine".into() });
        // Notes and tags do not touch the node.
        let (rev, _) = node_specs(&api, &f.node, None);
        api.post_json(&f.kratos, &path, json!({"note": "just a note"})).expect(200);
        assert_eq!(node_specs(&api, &f.node, None).0, rev);
    }

    fn long_poll_wakes_on_change_and_times_out_otherwise(api) {
        let _f0 = crate::fixture(&mut api);
        api.start_with(&["--long-poll-secs", "2"]);
        let f = _f0;
        let (rev, _) = node_specs(&api, &f.node, None);
        // Nothing changes: held ~2 s, same revision.
        let t = Instant::now();
        let (same, _) = node_specs(&api, &f.node, Some(rev));
        assert_eq!(same, rev);
        assert!(t.elapsed() >= Duration::from_millis(1900), "answered after {:?}", t.elapsed());
        // A stale revision answers at once.
        let t = Instant::now();
        node_specs(&api, &f.node, Some(rev - 1));
        assert!(t.elapsed() < Duration::from_secs(1));
        // A change through the API wakes the waiting poll well under a second.
        api.start_with(&["--long-poll-secs", "20"]);
        let node = f.node.clone();
        let base = api.base.clone();
        let poll = std::thread::spawn(move || {
            let Who::Node(token) = node else { unreachable!() };
            let t = Instant::now();
            let body: Value = reqwest::blocking::Client::new()
                .get(format!("{base}/node/v1/containers?since={rev}"))
                .header("X-Unbit-Node-Token", token)
                .timeout(Duration::from_secs(30))
                .send()
                .unwrap()
                .json()
                .unwrap();
            (t.elapsed(), body)
        });
        std::thread::sleep(Duration::from_millis(500));
        let changed = Instant::now();
        deploy(&api, &f, f.k1, &f.kratos);
        let (waited, body) = poll.join().unwrap();
        assert!(body["revision"].as_i64().unwrap() > rev);
        assert_eq!(body["containers"].as_array().unwrap().len(), 1);
        assert!(waited < Duration::from_secs(5), "the poll was not held: {waited:?}");
        assert!(changed.elapsed() < Duration::from_secs(3));
        // A change made by the admin CLI (another process) arrives within a second too.
        let (rev, _) = node_specs(&api, &f.node, None);
        let node = f.node.clone();
        let base = api.base.clone();
        let poll = std::thread::spawn(move || {
            let Who::Node(token) = node else { unreachable!() };
            let body: Value = reqwest::blocking::Client::new()
                .get(format!("{base}/node/v1/containers?since={rev}"))
                .header("X-Unbit-Node-Token", token)
                .timeout(Duration::from_secs(30))
                .send()
                .unwrap()
                .json()
                .unwrap();
            (Instant::now(), body)
        });
        std::thread::sleep(Duration::from_millis(300));
        api.container(&f.zeus, "node1", "late", 100, 100);
        let done_at = Instant::now();
        let (answered, body) = poll.join().unwrap();
        assert!(body["revision"].as_i64().unwrap() > rev);
        assert!(answered.duration_since(done_at) < Duration::from_millis(1000), "admin change took {:?}", answered.duration_since(done_at));
    }

    fn node_alarms_carry_their_kind_and_the_101st_drops_the_oldest(api) {
        let f = crate::fixture(&mut api);
        // The default retention (100 per container), reached through the node endpoint the
        // alarm relay uses.
        for i in 0..101 {
            api.post(&f.node, &format!("/node/v1/alarms/{}?unix={}&class=oom", f.k1, 1000 + i), &format!("a{i}")).expect(201);
        }
        let all = api.get(&f.kratos, &format!("/alarms/?container={}&with_total", f.k1)).expect(200);
        assert_eq!(all["total"], 100);
        let list = all["alarms"].as_array().unwrap();
        assert_eq!(list.first().unwrap()["msg"], "a100");
        assert_eq!(list.last().unwrap()["msg"], "a1", "the oldest (a0) is the one dropped");
        assert!(list.iter().all(|a| a["class"] == "oom" && a["level"] == 0));
        api.post(&f.node, &format!("/node/v1/alarms/{}?class=a%0Ab", f.k1), "x").expect_error(422, Some("class"));
    }

    fn node_loopboxes_domains_alarms_and_metrics(api) {
        let f = crate::fixture(&mut api);
        let (rev0, _) = node_specs(&api, &f.node, None);
        api.post_json(&f.kratos, "/loopboxes/", json!({"container": f.k1, "filename": "img/a.ext4", "mountpoint": "data", "ro": true})).expect(201);
        let lbs: Vec<container_spec::LoopboxSpec> = serde_json::from_value(api.get(&f.node, "/node/v1/loopboxes").expect(200)).unwrap();
        assert_eq!(lbs.len(), 1);
        assert_eq!((lbs[0].uid, lbs[0].filename.as_str(), lbs[0].mountpoint.as_str(), lbs[0].ro), (f.k1, "img/a.ext4", "data", true));
        lbs[0].validate().unwrap();
        // Loopbox and domain changes move the node's revision too, so a long poll sees them.
        let (rev1, _) = node_specs(&api, &f.node, None);
        assert!(rev1 > rev0);

        api.admin(&["domain", "map", "--customer", "kratos", "--name", "kratos.org"]);
        api.admin(&["domain", "map", "--customer", "zeus", "--name", "zeus.org"]);
        let domains = api.get(&f.node, "/node/v1/domains").expect(200);
        let kd = domains.as_array().unwrap().iter().find(|d| d["name"] == "kratos.org").unwrap();
        assert_eq!(kd["owner_uids"], json!([f.k1, f.k2]));
        assert_eq!(kd["public_key_pem"].as_str().unwrap(), api.admin(&["customer", "public-key", "--username", "kratos"]));
        assert_eq!(domains.as_array().unwrap().len(), 2);
        assert!(node_specs(&api, &f.node, None).0 > rev1);
        let node2 = api.server("node2", "192.0.2.11", 1000, 1000);
        assert_eq!(api.get(&node2, "/node/v1/domains").expect(200), json!([]));

        api.post(&f.node, &format!("/node/v1/alarms/{}?unix=1234", f.k1), "container 30001: OUT OF MEMORY !!!").expect(201);
        let alarms = api.get(&f.kratos, "/alarms/").expect(200);
        assert_eq!(alarms[0]["level"], 0);
        assert_eq!(alarms[0]["unix"], 1234);
        api.post(&node2, &format!("/node/v1/alarms/{}", f.k1), "forged").expect_error(404, None);
        api.post(&f.node, &format!("/node/v1/alarms/{}", f.k1), "").expect_error(422, Some("msg"));

        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        api.post_json(&f.node, &format!("/node/v1/metrics/container.cpu/{}", f.k1), json!({"unix": now, "value": 42})).expect(201);
        api.post_json(&f.node, &format!("/node/v1/metrics/container.cpu/{}", f.k1), json!({"unix": now + 1, "value": 43})).expect(201);
        api.post_json(&f.node, &format!("/node/v1/metrics/container.bogus/{}", f.k1), json!({"unix": now, "value": 1})).expect_error(404, None);
        api.post_json(&f.node, &format!("/node/v1/metrics/container.cpu/{}", f.k1), json!({"unix": "x", "value": 1})).expect_error(422, Some("unix"));
        api.post_json(&node2, &format!("/node/v1/metrics/container.cpu/{}", f.k1), json!({"unix": now, "value": 1})).expect_error(404, None);
        let m = api.get(&f.kratos, &format!("/metrics/container.cpu/{}", f.k1));
        assert_eq!(m.expect(200), json!([[now, 42], [now + 1, 43]]));
        assert_eq!(m.headers["cache-control"], "max-age=300");
        assert_eq!(api.get(&f.kratos, &format!("/metrics/container.io.write/{}", f.k1)).expect(200), json!([]));
        api.get(&f.zeus, &format!("/metrics/container.cpu/{}", f.k1)).expect_error(404, None);
        api.get(&f.kratos, &format!("/metrics/container.cpu/{}?year=2023&month=2&day=29", f.k1)).expect_error(422, Some("day"));
        let past = api.get(&f.kratos, &format!("/metrics/container.cpu/{}?year=2020&month=1&day=1", f.k1));
        assert_eq!(past.expect(200), json!([]));
        assert_eq!(past.headers["cache-control"], "max-age=86400");

        let domain_id = api.get(&f.kratos, "/domains/").expect(200)[0]["id"].as_i64().unwrap();
        api.post_json(&f.node, &format!("/node/v1/metrics/domain.hits/{}", f.k1), json!({"domain": "kratos.org", "unix": now, "value": 7})).expect(201);
        api.post_json(&f.node, &format!("/node/v1/metrics/domain.hits/{}", f.k1), json!({"domain": "zeus.org", "unix": now, "value": 7})).expect_error(422, Some("domain"));
        let dm = api.get(&f.kratos, &format!("/metrics/domain.hits/{domain_id}")).expect(200);
        assert_eq!(dm, json!([{"container": f.k1, "metrics": [[now, 7]]}]));
        api.get(&f.zeus, &format!("/metrics/domain.hits/{domain_id}")).expect_error(404, None);
    }
}
