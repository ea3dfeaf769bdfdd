use crate::both;
use crate::harness::{customer_uuid, dnsmasq, Api};
use serde_json::json;

/// Starts dnsmasq with TXT records for kratos (and a wrong one), then the API using it.
fn with_dns(api: &mut Api) -> (crate::Fixture, crate::harness::Guard) {
    let f = crate::fixture(api);
    let uuid = customer_uuid(api, &f.kratos);
    let zeus_uuid = customer_uuid(api, &f.zeus);
    let proof = format!("uwsgi:{uuid}");
    let (dns, port) = dnsmasq(&[
        ("mynewdomain.org", &proof),
        ("example.org", &proof),
        ("zeus-owned.org", &format!("uwsgi:{zeus_uuid}")),
        ("prefix.org", &format!("xuwsgi:{uuid}x")),
    ]);
    api.start_with(&["--dns-resolver", &format!("127.0.0.1:{port}")]);
    (f, dns)
}

both! {
    fn domains_need_the_txt_proof(api) {
        let (f, _dns) = with_dns(&mut api);
        let d = api.post_json(&f.kratos, "/domains/", json!({"name": "mynewdomain.org"})).expect(201);
        assert_eq!(d["name"], "mynewdomain.org");
        assert!(d["id"].as_i64().unwrap() > 0);
        assert_eq!(d["uuid"].as_str().unwrap().len(), 36);
        // A TXT record on a parent proves its subdomains and the wildcard.
        api.post_json(&f.kratos, "/domains/", json!({"name": "www.Example.ORG"})).expect(201);
        api.post_json(&f.kratos, "/domains/", json!({"name": ".example.org"})).expect(201);
        let names: Vec<String> = api.get(&f.kratos, "/domains/").expect(200).as_array().unwrap()
            .iter().map(|d| d["name"].as_str().unwrap().to_string()).collect();
        assert_eq!(names, ["mynewdomain.org", "www.example.org", ".example.org"]);
        // No proof, someone else's proof, or a record that merely contains the proof: 403.
        for name in ["nothing.org", "zeus-owned.org", "prefix.org"] {
            api.post_json(&f.kratos, "/domains/", json!({"name": name})).expect_error(403, Some("name"));
        }
        // Taken (by anyone) is a conflict.
        api.post_json(&f.kratos, "/domains/", json!({"name": "mynewdomain.org"})).expect_error(409, Some("name"));
        api.post_json(&f.zeus, "/domains/", json!({"name": "mynewdomain.org"})).expect_error(409, Some("name"));
        for bad in ["localhost", "a..b.org", "-x.org", "x\n.org", "1.2.3.4", ""] {
            api.post_json(&f.kratos, "/domains/", json!({"name": bad})).expect_error(422, Some("name"));
        }
        api.post_json(&f.kratos, "/domains/", json!({})).expect_error(422, Some("name"));
        assert_eq!(api.get(&f.zeus, "/domains/").expect(200), json!([]));
    }

    fn domains_are_updated_and_deleted_by_their_owner_only(api) {
        let (f, _dns) = with_dns(&mut api);
        let id = api.post_json(&f.kratos, "/domains/", json!({"name": "mynewdomain.org"})).expect(201)["id"].as_i64().unwrap();
        let path = format!("/domains/{id}");
        api.get(&f.zeus, &path).expect_error(404, None);
        api.post_json(&f.zeus, &path, json!({"note": "x"})).expect_error(404, None);
        api.delete(&f.zeus, &path, None).expect_error(404, None);
        api.delete(&f.zeus, "/domains/", Some(json!({"name": "mynewdomain.org"}))).expect_error(404, None);
        api.post_json(&f.kratos, "/tags/", json!({"name": "foobar"})).expect(201);
        let d = api.post_json(&f.kratos, &path, json!({"tags": ["foobar"], "note": "main site"})).expect(200);
        assert_eq!(d["tags"], json!(["foobar"]));
        assert_eq!(d["note"], "main site");
        api.post_json(&f.kratos, &path, json!({"name": "other.org"})).expect_error(422, Some("name"));
        api.post_json(&f.kratos, "/domains/", json!({"name": "www.example.org"})).expect(201);
        assert_eq!(api.get(&f.kratos, "/domains/?tags=foobar").expect(200).as_array().unwrap().len(), 1);
        assert_eq!(api.get(&f.kratos, "/domains/?tags=").expect(200).as_array().unwrap().len(), 0);
        api.delete(&f.kratos, "/domains/", Some(json!({"name": "mynewdomain.org"}))).expect(200);
        api.get(&f.kratos, &path).expect_error(404, None);
        api.delete(&f.kratos, "/domains/", Some(json!({"name": "mynewdomain.org"}))).expect_error(404, None);
        let other = api.get(&f.kratos, "/domains/").expect(200)[0]["id"].as_i64().unwrap();
        api.delete(&f.kratos, &format!("/domains/{other}"), None).expect(200);
        assert_eq!(api.get(&f.kratos, "/domains/").expect(200), json!([]));
    }

    fn automatic_tls_is_asked_per_domain_and_reaches_the_node(api) {
        let (f, _dns) = with_dns(&mut api);
        let rev = |api: &Api| api.get(&f.node, "/node/v1/containers").expect(200)["revision"].as_i64().unwrap();
        let node_tls = |api: &Api, name: &str| {
            let list = api.get(&f.node, "/node/v1/domains").expect(200);
            list.as_array().unwrap().iter().find(|d| d["name"] == name).map(|d| d["tls"].clone())
        };
        // Off unless asked; asked at creation or later, shown in every answer.
        let plain = api.post_json(&f.kratos, "/domains/", json!({"name": "mynewdomain.org"})).expect(201);
        assert_eq!(plain["tls"], "off");
        let shop = api.post_json(&f.kratos, "/domains/", json!({"name": "shop.example.org", "tls": "auto"})).expect(201);
        assert_eq!(shop["tls"], "auto");
        assert_eq!(node_tls(&api, "shop.example.org"), Some(json!("auto")));
        assert_eq!(node_tls(&api, "mynewdomain.org"), Some(json!("off")));
        let path = format!("/domains/{}", plain["id"]);
        let before = rev(&api);
        assert_eq!(api.post_json(&f.kratos, &path, json!({"tls": "auto"})).expect(200)["tls"], "auto");
        assert_eq!(api.get(&f.kratos, &path).expect(200)["tls"], "auto");
        let listed = api.get(&f.kratos, "/domains/").expect(200);
        assert!(listed.as_array().unwrap().iter().all(|d| d["tls"] == "auto"), "{listed}");
        assert_eq!(node_tls(&api, "mynewdomain.org"), Some(json!("auto")));
        // The node's long poll sees the change; the same value again changes nothing.
        let after = rev(&api);
        assert!(after > before);
        api.post_json(&f.kratos, &path, json!({"tls": "auto", "note": "shop"})).expect(200);
        assert_eq!(rev(&api), after);
        assert_eq!(api.post_json(&f.kratos, &path, json!({"tls": "off"})).expect(200)["tls"], "off");
        assert_eq!(node_tls(&api, "mynewdomain.org"), Some(json!("off")));

        // HTTP-01 cannot prove a wildcard: refused with the reason, nothing created or changed.
        let e = api.post_json(&f.kratos, "/domains/", json!({"name": ".example.org", "tls": "auto"})).expect_error(422, Some("tls"));
        assert!(e["reason"].as_str().unwrap().contains("wildcard"), "{e}");
        assert_eq!(api.get(&f.kratos, "/domains/").expect(200).as_array().unwrap().len(), 2);
        let wild = api.post_json(&f.kratos, "/domains/", json!({"name": ".example.org"})).expect(201);
        api.post_json(&f.kratos, &format!("/domains/{}", wild["id"]), json!({"tls": "auto"})).expect_error(422, Some("tls"));
        assert_eq!(node_tls(&api, ".example.org"), Some(json!("off")));
        // Only the two modes; bad values change nothing; another customer's domain is a 404.
        for bad in [json!("on"), json!("AUTO"), json!(null), json!(true), json!(1)] {
            api.post_json(&f.kratos, &path, json!({"tls": bad})).expect_error(422, Some("tls"));
            api.post_json(&f.kratos, "/domains/", json!({"name": "www.example.org", "tls": bad})).expect_error(422, Some("tls"));
        }
        assert_eq!(api.get(&f.kratos, &path).expect(200)["tls"], "off");
        api.post_json(&f.zeus, &format!("/domains/{}", shop["id"]), json!({"tls": "off"})).expect_error(404, None);
        assert_eq!(node_tls(&api, "shop.example.org"), Some(json!("auto")));
    }

    fn the_supplier_maps_domains_without_proof(api) {
        let f = crate::fixture(&mut api);
        let id = api.admin(&["domain", "map", "--customer", "zeus", "--name", "Olympus.gr"]);
        let d = api.get(&f.zeus, &format!("/domains/{}", id.trim())).expect(200);
        assert_eq!(d["name"], "olympus.gr");
        assert!(!api.try_admin(&["domain", "map", "--customer", "kratos", "--name", "olympus.gr"]).0);
        assert!(!api.try_admin(&["domain", "map", "--customer", "kratos", "--name", "bad..name"]).0);
    }
}
