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

both! {
    fn samples_of_days_past_the_retention_are_deleted_and_the_rest_kept(api) {
        let f = crate::fixture(&mut api);
        api.admin(&["domain", "map", "--customer", "kratos", "--name", "kratos.org"]);
        // 0 keeps everything (and no prune races the samples stored below)
        api.start_with(&["--metrics-retention-days", "0"]);
        assert!(wait_log(&api, "metrics retention off"), "{}", api.log());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let day = 86_400;
        let today = now - now.rem_euclid(day);
        let k1 = f.k1.to_string();
        // today, the first and last second of the oldest day kept (90 days back), the day
        // before it, and half a year back
        let kept = [now, today - 90 * day, today - 89 * day - 1];
        let gone = [today - 90 * day - 1, today - 180 * day];
        for unix in kept.iter().chain(&gone) {
            api.post_json(&f.node, "/node/v1/metrics", json!({
                "unix": unix,
                "containers": {k1.clone(): {"container.cpu": unix, "container.mem": 1}},
                "domains": [{"uid": f.k1, "domain": "kratos.org", "metrics": {"domain.hits": unix}}],
            }))
            .expect(201);
        }
        let domain_id = api.get(&f.kratos, "/domains/").expect(200)[0]["id"].as_i64().unwrap();
        let of_day = |api: &crate::harness::Api, metric: &str, id: i64, unix: i64| {
            let (y, m, d) = unbit_api::routes::metrics::civil_from_days(unix.div_euclid(day));
            api.get(&f.kratos, &format!("/metrics/{metric}/{id}?year={y}&month={m}&day={d}")).expect(200)
        };
        let cpu_samples = |api: &crate::harness::Api, unix: i64| {
            of_day(api, "container.cpu", f.k1 as i64, unix).as_array().unwrap().iter().map(|p| p[0].as_i64().unwrap()).collect::<Vec<_>>()
        };
        let hits_samples = |api: &crate::harness::Api, unix: i64| {
            let v = of_day(api, "domain.hits", domain_id, unix);
            v.as_array().unwrap().iter().flat_map(|c| c["metrics"].as_array().unwrap().clone()).map(|p| p[0].as_i64().unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(cpu_samples(&api, today - 180 * day), vec![today - 180 * day], "stored before the prune");

        // 90: at start, then daily
        api.start_with(&["--metrics-retention-days", "90"]);
        assert!(wait_log(&api, "metrics older than 90 days deleted"), "{}", api.log());
        let after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        if after.div_euclid(day) != now.div_euclid(day) {
            eprintln!("the UTC day changed during the test: the server's cutoff is a day later than the test's; not checked");
            return;
        }
        for unix in gone {
            assert_eq!(cpu_samples(&api, unix), Vec::<i64>::new(), "{unix} is past 90 days");
            assert_eq!(hits_samples(&api, unix), Vec::<i64>::new(), "{unix} is past 90 days");
        }
        assert_eq!(cpu_samples(&api, now), vec![now]);
        assert_eq!(cpu_samples(&api, today - 90 * day), vec![today - 90 * day, today - 89 * day - 1], "the oldest day kept is whole");
        assert_eq!(hits_samples(&api, today - 90 * day), vec![today - 90 * day, today - 89 * day - 1]);
        let mem = of_day(&api, "container.mem", f.k1 as i64, today - 180 * day);
        assert_eq!(mem, json!([]), "every metric of the series is pruned");
    }
}

/// Waits up to 20 s for the server's log to hold `needle`.
fn wait_log(api: &crate::harness::Api, needle: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !api.log().contains(needle) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}
