use crate::both;
use crate::harness::ssh_key;
use serde_json::json;

both! {
    fn list_detail_and_ownership(api) {
        let f = crate::fixture(&mut api);
        let list = api.get(&f.kratos, "/containers/");
        let body = list.expect(200);
        assert_eq!(list.headers["x-total-count"], "2");
        let uids: Vec<u64> = body.as_array().unwrap().iter().map(|c| c["uid"].as_u64().unwrap()).collect();
        assert_eq!(uids, [f.k1 as u64, f.k2 as u64]);
        let c = api.get(&f.kratos, &format!("/containers/{}", f.k1)).expect(200);
        assert_eq!(c["uid"], f.k1);
        assert_eq!(c["ip"], format!("10.0.0.{}", f.k1 - 30000 + 2));
        assert_eq!(c["server"], "node1");
        assert_eq!(c["server_address"], "192.0.2.10");
        assert_eq!(c["hostname"], "web");
        assert_eq!(c["memory"], 500);
        assert_eq!(c["storage"], 1000);
        assert_eq!(c["quota_threshold"], 90);
        assert_eq!(c["distro"], json!(null));
        assert_eq!(c["ssh_keys"], json!([]));
        assert_eq!(c["linked_to"], json!([]));
        assert_eq!(c["deployable"], false);
        // Another customer's container does not exist for zeus, for reading and writing.
        api.get(&f.zeus, &format!("/containers/{}", f.k1)).expect_error(404, None);
        api.post_json(&f.zeus, &format!("/containers/{}", f.k1), json!({"name": "pwned"})).expect_error(404, None);
        assert_eq!(api.get(&f.kratos, &format!("/containers/{}", f.k1)).expect(200)["name"], "web");
        // Unknown, malformed and overflowing uids are 404, never 500.
        for uid in ["39999", "abc", "99999999999999999999999", "-30001", "30000"] {
            api.get(&f.kratos, &format!("/containers/{uid}")).expect_error(404, None);
        }
        // Pagination.
        let page = api.get(&f.kratos, "/containers/?limit=1&offset=1");
        assert_eq!(page.expect(200).as_array().unwrap().len(), 1);
        assert_eq!(page.headers["x-total-count"], "2");
        api.get(&f.kratos, "/containers/?limit=0").expect_error(422, Some("limit"));
    }

    fn update_settings_validates_everything_first(api) {
        let f = crate::fixture(&mut api);
        let path = format!("/containers/{}", f.k1);
        let c = api
            .post_json(&f.kratos, &path, json!({
                "name": "my app", "note": "line one\nline two", "quota_threshold": 80, "alarm_freq": 120,
                "jid": "me@jabber.org", "jid_secret": "p&ss\"w", "jid_destinations": "a@x.org, b@y.org",
                "pushover_user": "u123", "pushover_token": "t456", "pushover_sound": "siren",
                "pushbullet_token": "o.abc", "slack_webhook": "https://hooks.slack.com/services/T/B/X",
                "nofollow": true
            }))
            .expect(200);
        assert_eq!(c["name"], "my app");
        assert_eq!(c["hostname"], "my-app");
        assert_eq!(c["note"], "line one\nline two");
        assert_eq!(c["quota_threshold"], 80);
        assert_eq!(c["alarm_freq"], 120);
        assert_eq!(c["jid"], "me@jabber.org");
        assert_eq!(c["nofollow"], true);
        // Secrets are write-only.
        assert_eq!(c["jid_secret_set"], true);
        assert_eq!(c["slack_webhook_set"], true);
        for secret in ["jid_secret", "pushover_token", "pushbullet_token", "slack_webhook"] {
            assert!(c.get(secret).is_none(), "{secret} echoed");
        }
        // One bad field: 422 naming it, and none of the good ones saved.
        for (body, field) in [
            (json!({"name": "x", "alarm_freq": 30}), "alarm_freq"),
            (json!({"name": "x", "quota_threshold": 101}), "quota_threshold"),
            (json!({"name": "x\nhook-asap = exec:id"}), "name"),
            (json!({"name": ""}), "name"),
            (json!({"name": "x", "jid": "no-at-sign"}), "jid"),
            (json!({"name": "x", "slack_webhook": "http://plain"}), "slack_webhook"),
            // Another host: the relay would never post there, so it is not accepted either.
            (json!({"name": "x", "slack_webhook": "https://evil.example/services/x"}), "slack_webhook"),
            (json!({"name": "x", "slack_webhook": "https://hooks.slack.com.evil.net/services/T/B/x"}), "slack_webhook"),
            (json!({"name": "x", "pushover_token": "a b"}), "pushover_token"),
            (json!({"name": "x", "nofollow": "yes"}), "nofollow"),
            (json!({"name": "x", "quota_threshold": 1e3}), "quota_threshold"),
            (json!({"name": "x", "quota_threshold": "50"}), "quota_threshold"),
            (json!({"name": "x", "uid": 1}), "uid"),
            (json!({"name": "x", "distro": 999}), "distro"),
            (json!({"name": "x", "ssh_keys": "ssh-rsa AAAA"}), "ssh_keys"),
            (json!({"name": "x", "ssh_keys": ["ssh-rsa ........."]}), "ssh_keys[0]"),
            (json!({"name": "x", "tags": ["nosuchtag"]}), "tags[0]"),
            (json!({"name": "x", "custom_distro": 1}), "custom_distro"),
        ] {
            api.post_json(&f.kratos, &path, body).expect_error(422, Some(field));
        }
        assert_eq!(api.get(&f.kratos, &path).expect(200)["name"], "my app");
        let huge = r#"{"quota_threshold": 18446744073709551616}"#;
        api.post(&f.kratos, &path, huge).expect_error(422, Some("quota_threshold"));
        // Clearing a setting.
        let c = api.post_json(&f.kratos, &path, json!({"jid": null, "slack_webhook": ""})).expect(200);
        assert_eq!(c["jid"], "");
        assert_eq!(c["slack_webhook_set"], false);
    }

    fn malformed_bodies_never_give_500(api) {
        let f = crate::fixture(&mut api);
        let path = format!("/containers/{}", f.k1);
        for body in ["", "{", "[]", "null", "\"x\"", "{\"name\": }", "{}"] {
            api.post(&f.kratos, &path, body).expect_error(400, None);
        }
        let big = format!("{{\"note\": \"{}\"}}", "a".repeat(70 * 1024));
        api.post(&f.kratos, &path, &big).expect_error(413, None);
        let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(big.into_bytes()));
        let rb = api.client.post(api.url(&path)).basic_auth("kratos", Some("deimos-pass")).body(chunked);
        api.send(&crate::harness::Who::Anonymous, rb).expect_error(413, None);
        api.post(&f.kratos, &path, "\u{0}\u{1}garbage").expect_error(400, None);
    }

    fn distro_and_keys_make_it_deployable(api) {
        let f = crate::fixture(&mut api);
        let path = format!("/containers/{}", f.k1);
        let key = ssh_key();
        let c = api.post_json(&f.kratos, &path, json!({"distro": f.distro})).expect(200);
        assert_eq!(c["distro_name"], "Debian 12");
        assert_eq!(c["deployable"], false);
        let c = api.post_json(&f.kratos, &path, json!({"ssh_keys": [key.clone(), ssh_key()]})).expect(200);
        assert_eq!(c["deployable"], true);
        assert_eq!(c["ssh_keys"][0], key);
        let c = api.post_json(&f.kratos, &path, json!({"ssh_keys": []})).expect(200);
        assert_eq!(c["deployable"], false);
        let c = api.post_json(&f.kratos, &path, json!({"ssh_keys": [key], "distro": null})).expect(200);
        assert_eq!(c["distro"], json!(null));
        assert_eq!(c["deployable"], false);
    }

    fn links_need_consent_and_report_conflicts(api) {
        let f = crate::fixture(&mut api);
        let k1 = format!("/containers/{}", f.k1);
        let c = api.post_json(&f.kratos, &k1, json!({"link": f.z1})).expect(200);
        assert_eq!(c["linked_to"], json!([f.z1]));
        // Linking is cross-customer (both ends agree), the peer only sees its own side.
        let z = api.post_json(&f.zeus, &format!("/containers/{}", f.z1), json!({"link": f.k1})).expect(200);
        assert_eq!(z["linked_to"], json!([f.k1]));
        api.post_json(&f.kratos, &k1, json!({"link": f.z1})).expect_error(409, Some("link"));
        api.post_json(&f.kratos, &k1, json!({"link": f.k1})).expect_error(422, Some("link"));
        api.post_json(&f.kratos, &k1, json!({"link": 39999})).expect_error(422, Some("link"));
        api.post_json(&f.kratos, &k1, json!({"link": "30002"})).expect_error(422, Some("link"));
        let c = api.post_json(&f.kratos, &k1, json!({"unlink": f.z1})).expect(200);
        assert_eq!(c["linked_to"], json!([]));
        api.post_json(&f.kratos, &k1, json!({"unlink": f.z1})).expect_error(409, Some("unlink"));
    }

    fn owners_of_dedicated_servers_create_and_resize(api) {
        let _node = api.server("dedicated", "192.0.2.20", 1000, 5000);
        let owner = api.customer("hephaestus", "forge-pass");
        let other = api.customer("hermes", "sandals-pass");
        api.admin(&["server", "set-owner", "--name", "dedicated", "--customer", "hephaestus"]);
        let shared_uid = api.container(&owner, "dedicated", "given", 100, 100);
        api.start();
        let me = api.get(&owner, "/me/").expect(200);
        assert_eq!(me["servers"], json!(["192.0.2.20"]));
        let body = json!({"server": "192.0.2.20", "name": "new", "memory": 400, "storage": 1000});
        let c = api.post_json(&owner, "/containers/", body.clone()).expect(201);
        let uid = c["uid"].as_u64().unwrap();
        assert!(uid > shared_uid as u64);
        assert_eq!(c["memory"], 400);
        api.get(&owner, &format!("/containers/{uid}")).expect(200);
        // Not the owner: 403, nothing created.
        api.post_json(&other, "/containers/", body.clone()).expect_error(403, Some("server"));
        assert_eq!(api.get(&other, "/containers/").expect(200), json!([]));
        // Over capacity: 409 (the original answered 200).
        let big = json!({"server": "192.0.2.20", "name": "big", "memory": 600, "storage": 10});
        api.post_json(&owner, "/containers/", big).expect_error(409, Some("memory"));
        let big = json!({"server": "192.0.2.20", "name": "big", "memory": 16, "storage": 4000});
        api.post_json(&owner, "/containers/", big).expect_error(409, Some("storage"));
        api.post_json(&owner, "/containers/", json!({"server": "192.0.2.20", "name": "x", "memory": 0, "storage": 1}))
            .expect_error(422, Some("memory"));
        api.post_json(&owner, "/containers/", json!({"server": "192.0.2.20", "name": "x"}))
            .expect_error(422, Some("memory"));
        // Resize within and beyond capacity.
        let path = format!("/containers/{uid}");
        assert_eq!(api.post_json(&owner, &path, json!({"memory": 800})).expect(200)["memory"], 800);
        api.post_json(&owner, &path, json!({"memory": 901})).expect_error(409, Some("memory"));
        assert_eq!(api.get(&owner, &path).expect(200)["memory"], 800);
        assert_eq!(api.get(&owner, "/containers/").expect(200).as_array().unwrap().len(), 2);
    }

    fn customers_on_shared_servers_cannot_resize(api) {
        let f = crate::fixture(&mut api);
        let path = format!("/containers/{}", f.k1);
        api.post_json(&f.kratos, &path, json!({"memory": 600})).expect_error(403, Some("memory"));
        api.post_json(&f.kratos, &path, json!({"storage": 2})).expect_error(403, Some("storage"));
        api.post_json(&f.kratos, "/containers/", json!({"server": "192.0.2.10", "name": "x", "memory": 100, "storage": 100}))
            .expect_error(403, Some("server"));
        assert_eq!(api.get(&f.kratos, &path).expect(200)["memory"], 500);
    }
}

both! {
    fn the_hosts_nobody_uid_is_never_a_containers(api) {
        let kratos = api.customer("kratos", "deimos");
        api.server("node1", "192.0.2.10", 100_000, 100_000);
        let first = api.container(&kratos, "node1", "first", 256, 500);
        assert_eq!(first, 30001);
        // The next container would be number 35534: uid 65534, the host's nobody, then 65535.
        let moved = "UPDATE containers SET id = 35533 WHERE id = 1";
        match api.backend {
            crate::harness::Backend::Sqlite => {
                let ok = std::process::Command::new("sqlite3").arg(&api.db).arg(moved).status().unwrap();
                assert!(ok.success());
            }
            crate::harness::Backend::Postgres => {
                let sql = format!("{moved}; SELECT setval(pg_get_serial_sequence('containers', 'id'), 35533)");
                assert!(crate::harness::pg().psql(&api.db, &sql));
            }
        }
        let next = api.container(&kratos, "node1", "next", 256, 500);
        assert_eq!(next, 65536, "65534 and 65535 are skipped");
        api.start();
        let list = api.get(&kratos, "/containers/").expect(200);
        let uids: Vec<u64> = list.as_array().unwrap().iter().map(|c| c["uid"].as_u64().unwrap()).collect();
        assert_eq!(uids, [30000 + 35533, 65536], "the skipped rows are gone");
    }
}
