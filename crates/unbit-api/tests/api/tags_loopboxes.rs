use crate::both;
use serde_json::json;

both! {
    fn tags_are_per_customer_and_filter_lists(api) {
        let f = crate::fixture(&mut api);
        let t = api.post_json(&f.kratos, "/tags/", json!({"name": "foobar", "note": "n"})).expect(201);
        let id = t["id"].as_i64().unwrap();
        assert_eq!(t["name"], "foobar");
        api.post_json(&f.kratos, "/tags/", json!({"name": "zeus"})).expect(201);
        api.post_json(&f.kratos, "/tags/", json!({"name": "foobar"})).expect_error(409, Some("name"));
        api.post_json(&f.kratos, "/tags/", json!({"name": "a,b"})).expect_error(422, Some("name"));
        api.post_json(&f.kratos, "/tags/", json!({})).expect_error(422, Some("name"));
        // zeus has its own namespace.
        api.post_json(&f.zeus, "/tags/", json!({"name": "foobar"})).expect(201);
        assert_eq!(api.get(&f.kratos, "/tags/").expect(200).as_array().unwrap().len(), 2);
        api.get(&f.zeus, &format!("/tags/{id}")).expect_error(404, None);
        api.delete(&f.zeus, &format!("/tags/{id}"), None).expect_error(404, None);
        api.post_json(&f.zeus, &format!("/containers/{}", f.z1), json!({"tags": ["zeus"]})).expect_error(422, Some("tags[0]"));

        let c = api.post_json(&f.kratos, &format!("/containers/{}", f.k1), json!({"tags": ["foobar"]})).expect(200);
        assert_eq!(c["tags"], json!(["foobar"]));
        api.post_json(&f.kratos, &format!("/containers/{}", f.k2), json!({"tags": ["zeus", "foobar"]})).expect(200);
        let only = |q: &str| -> Vec<u64> {
            api.get(&f.kratos, &format!("/containers/?tags={q}")).expect(200).as_array().unwrap().iter().map(|c| c["uid"].as_u64().unwrap()).collect()
        };
        assert_eq!(only("foobar"), [f.k1 as u64, f.k2 as u64]);
        assert_eq!(only("zeus"), [f.k2 as u64]);
        assert_eq!(only("foobar,zeus"), [f.k1 as u64, f.k2 as u64], "no duplicates for several matching tags");
        assert_eq!(only("unknown"), Vec::<u64>::new());

        let t = api.post_json(&f.kratos, &format!("/tags/{id}"), json!({"note": "changed"})).expect(200);
        assert_eq!(t["note"], "changed");
        api.post_json(&f.kratos, &format!("/tags/{id}"), json!({"name": "zeus"})).expect_error(409, Some("name"));
        api.delete(&f.kratos, &format!("/tags/{id}"), None).expect(200);
        api.get(&f.kratos, &format!("/tags/{id}")).expect_error(404, None);
        assert_eq!(api.get(&f.kratos, &format!("/containers/{}", f.k1)).expect(200)["tags"], json!([]));
        api.delete(&f.kratos, "/tags/abc", None).expect_error(404, None);
    }

    fn loopboxes_are_validated_like_the_node_does(api) {
        let f = crate::fixture(&mut api);
        let lb = api
            .post_json(&f.kratos, "/loopboxes/", json!({"container": f.k1, "filename": "zeus001", "mountpoint": "zeus", "ro": true}))
            .expect(201);
        let id = lb["id"].as_i64().unwrap();
        assert_eq!(lb["container"], f.k1);
        assert_eq!(lb["ro"], true);
        for (body, field) in [
            (json!({"container": f.k1, "filename": "../x; id", "mountpoint": "m"}), "filename"),
            (json!({"container": f.k1, "filename": "img", "mountpoint": "vassals"}), "mountpoint"),
            (json!({"container": f.k1, "filename": "img", "mountpoint": "/abs"}), "mountpoint"),
            (json!({"container": f.k1, "filename": "img", "mountpoint": "a//b"}), "mountpoint"),
            (json!({"container": f.k1, "filename": "a".repeat(65), "mountpoint": "m"}), "filename"),
            (json!({"container": f.z1, "filename": "img", "mountpoint": "m"}), "container"),
            (json!({"container": 99999999999u64, "filename": "img", "mountpoint": "m"}), "container"),
            (json!({"filename": "img", "mountpoint": "m"}), "container"),
        ] {
            api.post_json(&f.kratos, "/loopboxes/", body).expect_error(422, Some(field));
        }
        api.post_json(&f.kratos, "/loopboxes/", json!({"container": f.k1, "filename": "zeus001", "mountpoint": "other"}))
            .expect_error(409, None);
        api.post_json(&f.kratos, "/loopboxes/", json!({"container": f.k2, "filename": "zeus001", "mountpoint": "zeus"})).expect(201);
        let list = api.get(&f.kratos, &format!("/loopboxes?container={}", f.k1)).expect(200);
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(api.get(&f.kratos, "/loopboxes").expect(200).as_array().unwrap().len(), 2);
        api.get(&f.kratos, &format!("/loopboxes/?container={}", f.z1)).expect_error(404, None);
        assert_eq!(api.get(&f.zeus, "/loopboxes/").expect(200), json!([]));
        // Only tags change.
        api.post_json(&f.kratos, "/tags/", json!({"name": "foobar"})).expect(201);
        let lb = api.post_json(&f.kratos, &format!("/loopboxes/{id}"), json!({"tags": ["foobar"]})).expect(200);
        assert_eq!(lb["tags"], json!(["foobar"]));
        api.post_json(&f.kratos, &format!("/loopboxes/{id}"), json!({"mountpoint": "x"})).expect_error(422, Some("mountpoint"));
        assert_eq!(api.get(&f.kratos, "/loopboxes/?tags=foobar").expect(200).as_array().unwrap().len(), 1);
        api.get(&f.zeus, &format!("/loopboxes/{id}")).expect_error(404, None);
        api.delete(&f.zeus, &format!("/loopboxes/{id}"), None).expect_error(404, None);
        api.delete(&f.kratos, &format!("/loopboxes/{id}"), None).expect(200);
        api.get(&f.kratos, &format!("/loopboxes/{id}")).expect_error(404, None);
    }
}
