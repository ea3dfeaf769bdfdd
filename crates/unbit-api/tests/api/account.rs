use crate::both;
use crate::harness::Who;
use serde_json::json;

both! {
    fn me_shows_the_account_and_only_its_containers(api) {
        let f = crate::fixture(&mut api);
        let me = api.get(&f.kratos, "/me/").expect(200);
        assert_eq!(me["containers"], json!([f.k1, f.k2]));
        assert_eq!(me["uuid"].as_str().unwrap().len(), 36);
        assert_eq!(me["servers"], json!([]));
        for key in ["company", "vat", "email"] {
            assert_eq!(me[key], "");
        }
        // Without the trailing slash too, and the original's /me/containers/ alias.
        assert_eq!(api.get(&f.kratos, "/me").expect(200), me);
        assert_eq!(api.get(&f.kratos, "/me/containers/").expect(200), api.get(&f.kratos, "/containers/").expect(200));
    }

    fn me_updates_fields_and_password(api) {
        let f = crate::fixture(&mut api);
        let me = api
            .post_json(&f.kratos, "/me/", json!({"company": "God of War 4 S.p.a.", "vat": "01234567890", "email": "k@example.org"}))
            .expect(200);
        assert_eq!(me["company"], "God of War 4 S.p.a.");
        assert_eq!(me["vat"], "01234567890");
        assert_eq!(me["email"], "k@example.org");
        // A password with colons works through Basic auth (split on the first ':').
        api.post_json(&f.kratos, "/me/", json!({"password": "dei:mos:17"})).expect(200);
        api.get(&f.kratos, "/me/").expect_error(401, None);
        let new = Who::Customer("kratos".into(), "dei:mos:17".into());
        api.get(&new, "/me/").expect(200);
    }

    fn me_refuses_bad_values_and_saves_nothing(api) {
        let f = crate::fixture(&mut api);
        api.post_json(&f.kratos, "/me/", json!({"company": "ok", "email": "not-an-email"})).expect_error(422, Some("email"));
        api.post_json(&f.kratos, "/me/", json!({"password": "short"})).expect_error(422, Some("password"));
        api.post_json(&f.kratos, "/me/", json!({"company": "a\nb"})).expect_error(422, Some("company"));
        api.post_json(&f.kratos, "/me/", json!({"company": 5})).expect_error(422, Some("company"));
        api.post_json(&f.kratos, "/me/", json!({"uuid": "x"})).expect_error(422, Some("uuid"));
        assert_eq!(api.get(&f.kratos, "/me/").expect(200)["company"], "");
    }

    fn authentication_failures_are_401_with_a_challenge(api) {
        let f = crate::fixture(&mut api);
        for who in [
            Who::Anonymous,
            Who::Customer("kratos".into(), "wrong".into()),
            Who::Customer("nobody".into(), "deimos-pass".into()),
        ] {
            let r = api.get(&who, "/me/");
            r.expect_error(401, None);
            assert_eq!(r.headers["www-authenticate"], "Basic realm=\"uwsgi.it api\"");
            assert_eq!(r.headers["access-control-allow-origin"], "*");
        }
        let bearer = api.client.get(api.url("/me/")).header("Authorization", "Bearer x");
        api.send(&Who::Anonymous, bearer).expect_error(401, None);
        let garbage = api.client.get(api.url("/me/")).header("Authorization", "Basic %%%");
        api.send(&Who::Anonymous, garbage).expect_error(401, None);
        drop(f);
    }

    fn hex_encoded_headers_authenticate(api) {
        let _f = crate::fixture(&mut api);
        let rb = api
            .client
            .get(api.url("/me/"))
            .header("X-uwsgi-it-username", hex("kratos"))
            .header("X-uwsgi-it-password", hex("deimos-pass"));
        api.send(&Who::Anonymous, rb).expect(200);
        let rb = api
            .client
            .get(api.url("/me/"))
            .header("X-uwsgi-it-username", hex("kratos"))
            .header("X-uwsgi-it-password", hex("nope"));
        api.send(&Who::Anonymous, rb).expect_error(401, None);
        let rb = api.client.get(api.url("/me/")).header("X-uwsgi-it-username", "zz");
        api.send(&Who::Anonymous, rb).expect_error(401, None);
    }

    fn admin_generates_credentials_when_no_password_is_given(api) {
        let out = api.admin(&["customer", "add", "--username", "ares"]);
        let password = out.lines().find_map(|l| l.strip_prefix("password=")).expect("a generated password").to_string();
        assert!(password.len() >= 16);
        assert!(out.lines().any(|l| l.starts_with("uuid=")));
        let (ok, _, err) = api.try_admin(&["customer", "add", "--username", "ares"]);
        assert!(!ok, "duplicate customer accepted");
        assert!(!err.is_empty());
        api.start();
        api.get(&Who::Customer("ares".into(), password), "/me/").expect(200);
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}
