use crate::both;
use crate::harness::Who;
use serde_json::json;

both! {
    fn distros_and_custom_distros(api) {
        let f = crate::fixture(&mut api);
        let d2 = api.distro("Saucy Salamander - Ubuntu 13.10 (64 bit)", "saucy");
        let list = api.get(&f.kratos, "/distros/").expect(200);
        assert_eq!(list, json!([{"id": f.distro, "name": "Debian 12"}, {"id": d2, "name": "Saucy Salamander - Ubuntu 13.10 (64 bit)"}]));
        assert!(!api.try_admin(&["distro", "add", "--name", "x", "--path", "../etc"]).0);
        // Custom distros live in a storage container.
        let store = format!("/custom_distros/{}", f.k2);
        api.post_json(&f.kratos, &store, json!({"name": "mine", "path": "mine"})).expect_error(409, None);
        api.post_json(&f.kratos, &format!("/containers/{}", f.k2), json!({"custom_distros_storage": true})).expect(200);
        let cd = api.post_json(&f.kratos, &store, json!({"name": "mine", "path": "mine", "note": "n"})).expect(201);
        let id = cd["id"].as_i64().unwrap();
        assert_eq!(cd["container"], f.k2);
        api.post_json(&f.kratos, &store, json!({"name": "dots", "path": ".."})).expect_error(422, Some("path"));
        api.post_json(&f.kratos, &store, json!({"name": "slash", "path": "a/b"})).expect_error(422, Some("path"));
        api.post_json(&f.kratos, &store, json!({"name": "mine", "path": "other"})).expect_error(409, None);
        api.post_json(&f.zeus, &store, json!({"name": "x", "path": "x"})).expect_error(404, None);
        assert_eq!(api.get(&f.kratos, "/custom_distros/").expect(200), json!([{"id": id, "name": "mine", "container": f.k2}]));
        assert_eq!(api.get(&f.kratos, &format!("/custom_distros/{}", f.k1)).expect(200), json!([{"id": id, "name": "mine"}]));
        assert_eq!(api.get(&f.kratos, &store).expect(200), json!([]), "a storage container cannot boot from its own images");
        // Boot from it; the storage container itself cannot.
        let c = api.post_json(&f.kratos, &format!("/containers/{}", f.k1), json!({"custom_distro": id})).expect(200);
        assert_eq!(c["custom_distro"], id);
        assert_eq!(c["custom_distro_name"], "mine");
        api.post_json(&f.kratos, &format!("/containers/{}", f.k2), json!({"custom_distro": id})).expect_error(422, Some("custom_distro"));
        api.post_json(&f.zeus, &format!("/containers/{}", f.z1), json!({"custom_distro": id})).expect_error(422, Some("custom_distro"));
        // Update works (the original crashed); delete is refused while in use (it cascaded).
        let u = api.post_json(&f.kratos, &format!("/custom_distro/{id}"), json!({"note": "updated", "path": "mine2"})).expect(200);
        assert_eq!((u["note"].as_str(), u["path"].as_str()), (Some("updated"), Some("mine2")));
        api.get(&f.zeus, &format!("/custom_distro/{id}")).expect_error(404, None);
        api.delete(&f.kratos, &format!("/custom_distro/{id}"), None).expect_error(409, None);
        api.post_json(&f.kratos, &format!("/containers/{}", f.k2), json!({"custom_distros_storage": false})).expect_error(409, Some("custom_distros_storage"));
        api.post_json(&f.kratos, &format!("/containers/{}", f.k1), json!({"custom_distro": null})).expect(200);
        api.delete(&f.kratos, &format!("/custom_distro/{id}"), None).expect(200);
        api.get(&f.kratos, &format!("/containers/{}", f.k1)).expect(200);
    }

    fn news_for_everyone_and_for_customers(api) {
        api.admin(&["news", "add", "--content", "public news", "--public"]);
        api.admin(&["news", "add", "--content", "customers only"]);
        let kratos = api.customer("kratos", "deimos-pass");
        api.start();
        let public = api.get(&Who::Anonymous, "/news/").expect(200);
        assert_eq!(public.as_array().unwrap().len(), 1);
        assert_eq!(public[0]["content"], "public news");
        assert!(public[0]["date"].as_i64().unwrap() > 0);
        assert_eq!(api.get(&kratos, "/news/").expect(200).as_array().unwrap().len(), 2);
        api.get(&Who::Customer("kratos".into(), "bad".into()), "/news/").expect_error(401, None);
    }

    fn port_mappings_on_dedicated_servers(api) {
        let node = api.server("dedicated", "192.0.2.30", 4000, 4000);
        let owner = api.customer("hephaestus", "forge-pass");
        let other = api.customer("hermes", "sandals-pass");
        api.admin(&["server", "set-owner", "--name", "dedicated", "--customer", "hephaestus"]);
        let uid = api.container(&owner, "dedicated", "web", 100, 100);
        let foreign = api.container(&other, "dedicated", "other", 100, 100);
        api.start();
        let path = "/portmappings/192.0.2.30";
        let m = api.post_json(&owner, path, json!({"container": uid, "proto": "tcp", "public_port": 8080, "private_port": 8000})).expect(201);
        assert_eq!(m["container_ip"], format!("10.0.0.{}", uid - 30000 + 2));
        let id = m["id"].as_i64().unwrap();
        for (body, status, field) in [
            (json!({"container": uid, "proto": "tcp", "public_port": 8080, "private_port": 9000}), 409, "public_port"),
            (json!({"container": uid, "proto": "sctp", "public_port": 8081, "private_port": 9000}), 422, "proto"),
            (json!({"container": uid, "proto": "tcp", "public_port": 80, "private_port": 9000}), 422, "public_port"),
            (json!({"container": uid, "proto": "tcp", "public_port": 1999, "private_port": 9000}), 422, "public_port"),
            (json!({"container": uid, "proto": "tcp", "public_port": 8081, "private_port": 70000}), 422, "private_port"),
            (json!({"container": foreign, "proto": "tcp", "public_port": 8081, "private_port": 9000}), 422, "container"),
        ] {
            api.post_json(&owner, path, body).expect_error(status, Some(field));
        }
        // The same port over udp is another mapping.
        api.post_json(&owner, path, json!({"container": uid, "proto": "udp", "public_port": 8080, "private_port": 8000})).expect(201);
        assert_eq!(api.get(&owner, path).expect(200).as_array().unwrap().len(), 2);
        api.get(&other, path).expect_error(404, None);
        api.delete(&other, path, Some(json!({"id": id}))).expect_error(404, None);
        let before = api.get(&node, "/node/v1/portmappings").expect(200);
        assert_eq!(before["mappings"].as_array().unwrap().len(), 2);
        assert_eq!(
            before["mappings"][0],
            json!({"proto": "tcp", "public_ip": "192.0.2.30", "public_port": 8080,
                   "private_ip": format!("10.0.0.{}", uid - 30000 + 2), "private_port": 8000})
        );
        api.delete(&owner, path, Some(json!({"id": id}))).expect(200);
        api.delete(&owner, path, Some(json!({"id": id}))).expect_error(404, None);
        let after = api.get(&node, "/node/v1/portmappings").expect(200);
        assert!(after["revision"].as_i64() > before["revision"].as_i64());
        assert_eq!(after["mappings"].as_array().unwrap().len(), 1);
        assert_eq!(api.get(&owner, path).expect(200).as_array().unwrap().len(), 1);
    }

    fn legions_show_in_container_details(api) {
        let f = crate::fixture(&mut api);
        api.admin(&["legion", "add", "--name", "l1", "--address", "198.51.100.7"]);
        api.admin(&["legion", "add-node", "--legion", "l1", "--server", "node1"]);
        assert!(api.admin(&["legion", "list"]).contains("nodes=node1"));
        let c = api.get(&f.kratos, &format!("/containers/{}", f.k1)).expect(200);
        assert_eq!(c["legion_address"], json!(["198.51.100.7"]));
        api.admin(&["legion", "remove-node", "--legion", "l1", "--server", "node1"]);
        assert_eq!(api.get(&f.kratos, &format!("/containers/{}", f.k1)).expect(200)["legion_address"], json!([]));
    }
}
