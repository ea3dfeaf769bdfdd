use crate::both;
use serde_json::json;

both! {
    fn a_node_cycle_in_one_batch_and_the_days_charts(api) {
        let f = crate::fixture(&mut api);
        api.admin(&["domain", "map", "--customer", "kratos", "--name", "kratos.org"]);
        api.admin(&["domain", "map", "--customer", "zeus", "--name", "zeus.org"]);
        let node2 = api.server("node2", "192.0.2.11", 1000, 1000);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let (k1, k2) = (f.k1.to_string(), f.k2.to_string());
        let cycle = |unix: i64, cpu: u64, hits: u64| {
            json!({
                "unix": unix,
                "containers": {
                    k1.clone(): {"container.cpu": cpu, "container.mem": 4096, "container.net.rx": 10, "container.net.tx": 20},
                    k2.clone(): {"container.mem": 1},
                    "39999": {"container.mem": 1},
                },
                "domains": [
                    {"uid": f.k1, "domain": "kratos.org", "metrics": {"domain.hits": hits, "domain.net.rx": hits * 100, "domain.net.tx": hits * 1000}},
                    {"uid": f.k1, "domain": "zeus.org", "metrics": {"domain.hits": 1}},
                ],
            })
        };
        let answer = api.post_json(&f.node, "/node/v1/metrics", cycle(now - 120, 1_000_000_000, 5)).expect(201);
        assert_eq!(answer["stored"], 8, "4 + 1 container samples, 3 of kratos.org");
        let skipped: Vec<&str> = answer["skipped"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].contains("39999") && skipped[1].contains("zeus.org"), "{skipped:?}");
        api.post_json(&f.node, "/node/v1/metrics", cycle(now - 60, 4_000_000_000, 11)).expect(201);
        // Another node cannot report this node's containers; unknown metrics are refused whole.
        let foreign = api.post_json(&node2, "/node/v1/metrics", cycle(now, 9, 9)).expect(201);
        assert_eq!(foreign["stored"], 0);
        api.post_json(&f.node, "/node/v1/metrics", json!({"unix": now, "containers": {k1.clone(): {"container.bogus": 1}}}))
            .expect_error(422, Some("metric"));
        api.post_json(&f.node, "/node/v1/metrics", json!({"unix": -1})).expect_error(422, Some("unix"));
        api.post(&f.node, "/node/v1/metrics", "{").expect(400);

        let cpu = api.get(&f.kratos, &format!("/metrics/container.cpu/{}", f.k1)).expect(200);
        assert_eq!(cpu, json!([[now - 120, 1_000_000_000i64], [now - 60, 4_000_000_000i64]]));
        // rx and tx are their own series (the original served rx for both)
        assert_eq!(api.get(&f.kratos, &format!("/metrics/container.net.tx/{}", f.k1)).expect(200), json!([[now - 120, 20], [now - 60, 20]]));
        let domain_id = api.get(&f.kratos, "/domains/").expect(200)[0]["id"].as_i64().unwrap();
        assert_eq!(
            api.get(&f.kratos, &format!("/metrics/domain.net.tx/{domain_id}")).expect(200),
            json!([{"container": f.k1, "metrics": [[now - 120, 5000], [now - 60, 11000]]}])
        );
        assert_eq!(
            api.get(&f.kratos, &format!("/metrics/domain.hits/{domain_id}")).expect(200),
            json!([{"container": f.k1, "metrics": [[now - 120, 5], [now - 60, 11]]}])
        );

        // The same day as a chart: one line (one rate between the two samples).
        let svg = api.get(&f.kratos, &format!("/metrics/container.cpu/{}.svg", f.k1));
        assert_eq!(svg.status, 200, "{}", svg.text);
        assert_eq!(svg.headers["content-type"], "image/svg+xml");
        assert!(svg.text.starts_with("<svg") && svg.text.trim_end().ends_with("</svg>"));
        assert!(svg.text.contains(&format!("container.cpu of {}", f.k1)), "{}", svg.text);
        assert_eq!(svg.text.matches("stroke-width=\"2\"").count(), 1, "{}", svg.text);
        let hits = api.get(&f.kratos, &format!("/metrics/domain.hits/{domain_id}.svg"));
        assert_eq!(hits.status, 200);
        assert!(hits.text.contains("requests/min"), "{}", hits.text);
        // Same rules as the JSON: the owner only, known metrics only.
        api.get(&f.zeus, &format!("/metrics/container.cpu/{}.svg", f.k1)).expect_error(404, None);
        api.get(&f.kratos, &format!("/metrics/container.bogus/{}.svg", f.k1)).expect_error(404, None);
        api.get(&f.kratos, &format!("/metrics/container.cpu/{}.svg?year=2023&month=2&day=29", f.k1)).expect_error(422, Some("day"));
        let empty = api.get(&f.kratos, &format!("/metrics/container.mem/{}.svg?year=2020&month=1&day=1", f.k1));
        assert_eq!(empty.status, 200, "a day without samples is an empty chart");
    }
}
