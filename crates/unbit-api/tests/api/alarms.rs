use crate::both;
use crate::harness::Who;
use serde_json::json;

both! {
    fn raising_alarms_with_credentials_and_validation(api) {
        let f = crate::fixture(&mut api);
        let raise = |who: &Who, uid: u32, q: &str, body: &str| api.post(who, &format!("/alarms/raise/{uid}?{q}"), body);
        let a = raise(&f.kratos, f.k1, "color=ff0000&class=Exc&vassal=app.ini&line=17&func=main&filename=app.py&level=2&unix=1000", "boom\nTraceback...").expect(201);
        assert_eq!(a["color"], "#ff0000");
        assert_eq!(a["class"], "Exc");
        assert_eq!(a["line"], 17);
        assert_eq!(a["level"], 2);
        assert_eq!(a["unix"], 1000);
        assert_eq!(a["msg"], "boom\nTraceback...");
        assert_eq!(a["container"], f.k1);
        // trigger is the same endpoint.
        assert_eq!(api.post(&f.kratos, &format!("/alarms/trigger/{}", f.k1), "t").expect(201)["level"], 1);
        for (q, field) in [
            ("color=red", "color"),
            ("level=0", "level"),
            ("level=5", "level"),
            ("level=x", "level"),
            ("unix=99999999999999999999", "unix"),
            ("line=-1", "line"),
            ("vassal=a%0Ab", "vassal"),
        ] {
            raise(&f.kratos, f.k1, q, "m").expect_error(422, Some(field));
        }
        raise(&f.kratos, f.k1, "", "").expect_error(422, Some("msg"));
        raise(&f.kratos, f.k1, "", "nul\u{0}byte").expect_error(422, Some("msg"));
        let rb = api.client.post(api.url(&format!("/alarms/raise/{}", f.k1))).basic_auth("kratos", Some("deimos-pass")).body(vec![0xff, 0xfe]);
        api.send(&Who::Anonymous, rb).expect_error(400, None);
        raise(&f.zeus, f.k1, "", "m").expect_error(404, None);
        raise(&Who::Anonymous, f.k1, "", "m").expect_error(401, None);
        api.get(&f.kratos, &format!("/alarms/raise/{}", f.k1)).expect_error(405, None);
        assert_eq!(api.get(&f.kratos, "/alarms/").expect(200).as_array().unwrap().len(), 2);
    }

    fn alarm_keys_authorise_one_container(api) {
        let f = crate::fixture(&mut api);
        let key = api.get(&f.kratos, &format!("/alarm_key/{}", f.k1)).expect(200)["alarm_key"].as_str().unwrap().to_string();
        api.post(&Who::Anonymous, &format!("/alarms/raise/{}?key={key}", f.k1), "from cron").expect(201);
        api.post(&Who::Anonymous, &format!("/alarms/raise/{}?key={key}", f.k2), "other").expect_error(401, None);
        api.post(&Who::Anonymous, &format!("/alarms/raise/{}?key=wrong", f.k1), "x").expect_error(401, None);
        api.get(&f.zeus, &format!("/alarm_key/{}", f.k1)).expect_error(404, None);
        let new = api.post(&f.kratos, &format!("/alarm_key/{}", f.k1), "").expect(200)["alarm_key"].as_str().unwrap().to_string();
        assert_ne!(new, key);
        api.post(&Who::Anonymous, &format!("/alarms/raise/{}?key={key}", f.k1), "old key").expect_error(401, None);
        api.post(&Who::Anonymous, &format!("/alarms/raise/{}?key={new}", f.k1), "new key").expect(201);
    }

    fn listing_filters_ranges_and_ownership(api) {
        let f = crate::fixture(&mut api);
        for i in 0..10 {
            let (uid, color) = if i % 2 == 0 { (f.k1, "%23ff0000") } else { (f.k2, "%2300ff00") };
            api.post(&f.kratos, &format!("/alarms/raise/{uid}?unix={}&color={color}&vassal=v{}&level={}", 1000 + i, i % 3, 1 + i % 4), &format!("m{i}")).expect(201);
        }
        api.post(&f.zeus, &format!("/alarms/raise/{}", f.z1), "zeus alarm").expect(201);
        let msgs = |q: &str| -> Vec<String> {
            api.get(&f.kratos, &format!("/alarms/{q}")).expect(200).as_array().unwrap().iter().map(|a| a["msg"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(msgs(""), ["m9", "m8", "m7", "m6", "m5", "m4", "m3", "m2", "m1", "m0"]);
        assert_eq!(msgs(&format!("?container={}", f.k1)), ["m8", "m6", "m4", "m2", "m0"]);
        assert_eq!(msgs("?color=%2300ff00&vassal=v0"), ["m9", "m3"]);
        assert_eq!(msgs("?level=1"), ["m8", "m4", "m0"]);
        assert_eq!(msgs("?range=3"), ["m9", "m8", "m7"]);
        assert_eq!(msgs("?range=3-6"), ["m6", "m5", "m4"]);
        assert_eq!(msgs("?range=6-3"), ["m4", "m5", "m6"]);
        assert_eq!(msgs("?range=9-10"), ["m0"]);
        let total = api.get(&f.kratos, "/alarms/?with_total=1&range=2").expect(200);
        assert_eq!(total["total"], 10);
        assert_eq!(total["alarms"].as_array().unwrap().len(), 2);
        for bad in ["x", "1-", "a-b", "-"] {
            api.get(&f.kratos, &format!("/alarms/?range={bad}")).expect_error(416, None);
        }
        api.get(&f.kratos, &format!("/alarms/?container={}", f.z1)).expect_error(404, None);
        api.get(&f.kratos, "/alarms/?level=abc").expect_error(422, Some("level"));
        // One alarm: read, foreign, delete.
        let id = api.get(&f.kratos, "/alarms/?range=1").expect(200)[0]["id"].as_i64().unwrap();
        assert_eq!(api.get(&f.kratos, &format!("/alarms/{id}")).expect(200)["msg"], "m9");
        api.get(&f.zeus, &format!("/alarms/{id}")).expect_error(404, None);
        api.delete(&f.zeus, &format!("/alarms/{id}"), None).expect_error(404, None);
        api.delete(&f.kratos, &format!("/alarms/{id}"), None).expect(200);
        api.get(&f.kratos, &format!("/alarms/{id}")).expect_error(404, None);
        assert_eq!(api.get(&f.zeus, "/alarms/").expect(200).as_array().unwrap().len(), 1);
    }

    fn retention_keeps_the_newest(api) {
        let f = crate::fixture(&mut api);
        api.admin(&["container", "set-max-alarms", "--uid", &f.k1.to_string(), "--max-alarms", "3"]);
        for i in 0..5 {
            api.post(&f.kratos, &format!("/alarms/raise/{}?unix={}", f.k1, 100 + i), &format!("m{i}")).expect(201);
        }
        let list = api.get(&f.kratos, "/alarms/").expect(200);
        let msgs: Vec<&str> = list.as_array().unwrap().iter().map(|a| a["msg"].as_str().unwrap()).collect();
        assert_eq!(msgs, ["m4", "m3", "m2"]);
        assert_eq!(json!(msgs.len()), 3);
    }
}
