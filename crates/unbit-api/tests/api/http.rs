use crate::both;
use crate::harness::Who;
use serde_json::json;

both! {
    fn cors_errors_and_curl_conventions(api) {
        let f = crate::fixture(&mut api);
        // Preflight needs no credentials.
        let r = api.send(&Who::Anonymous, api.client.request(reqwest::Method::OPTIONS, api.url("/containers/30001")));
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["access-control-allow-origin"], "*");
        assert!(r.headers["access-control-allow-headers"].to_str().unwrap().contains("X-uwsgi-it-username"));
        assert_eq!(r.headers["access-control-allow-methods"], "GET,POST,DELETE,OPTIONS");
        // Unknown paths and methods answer JSON.
        api.get(&f.kratos, "/nothing/here").expect_error(404, None);
        api.delete(&f.kratos, "/me/", None).expect_error(405, None);
        // curl users get a trailing newline.
        let rb = api.client.get(api.url("/me/")).header("User-Agent", "curl/7.88.1");
        let r = api.send(&f.kratos, rb);
        assert!(r.text.ends_with("}\n"));
        let r = api.get(&f.kratos, "/me/");
        assert!(r.text.ends_with('}'));
    }

    fn openapi_document_lists_the_customer_api(api) {
        api.start();
        let doc = api.get(&Who::Anonymous, "/openapi.json").expect(200);
        assert_eq!(doc["openapi"], "3.0.3");
        for p in ["/me/", "/containers/{uid}", "/domains/", "/alarms/", "/alarms/raise/{uid}", "/loopboxes/{id}", "/tags/{id}", "/metrics/{metric}/{id}", "/portmappings/{server}"] {
            assert!(doc["paths"].get(p).is_some(), "{p} missing");
        }
        assert_eq!(doc["servers"], json!([{"url": "/api"}]));
    }
}
