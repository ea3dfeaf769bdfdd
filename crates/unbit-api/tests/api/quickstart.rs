//! The customer quickstart (shared/spec/customer-quickstart.md), its curl calls run verbatim
//! with curl against a local `unbit-api`: only `https://...foobar.com` becomes the local
//! `http://127.0.0.1:<port>`. Placeholders the document asks the reader to replace (`ID`,
//! `id`, `ssh-rsa .........`) are replaced after the verbatim call has been tried.

use crate::harness::{customer_uuid, dnsmasq, ssh_key, Api, Backend, Who};
use serde_json::{json, Value};
use std::process::Command;

struct Curl<'a> {
    api: &'a Api,
}

impl Curl<'_> {
    /// Runs a quickstart command line and returns (status, body).
    fn run(&self, line: &str) -> (u16, Value) {
        let local = line.replace("https://", "http://").replace("foobar.com", &format!("127.0.0.1:{}", self.api.port));
        let body_file = self.api.dir.path().join("curl-body");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{local} -s -o '{}' -w '%{{http_code}}'", body_file.display()))
            .output()
            .expect("curl runs (package curl)");
        let status: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        let text = std::fs::read_to_string(&body_file).unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, body)
    }

    #[track_caller]
    fn expect(&self, line: &str, status: u16) -> Value {
        let (got, body) = self.run(line);
        assert_eq!(got, status, "{line}\n -> {body}");
        body
    }
}

#[test]
fn the_quickstart_calls_give_the_documented_answers() {
    let mut api = Api::new(Backend::Sqlite);
    api.admin(&[
        "server",
        "add",
        "--name",
        "fooserver",
        "--address",
        "1.2.3.4",
        "--memory",
        "100000",
        "--storage",
        "1000000",
    ]);
    api.admin(&[
        "customer",
        "add",
        "--username",
        "kratos",
        "--password",
        "deimos",
        "--company",
        "God of war S.r.l.",
        "--vat",
        "01234567890",
    ]);
    api.admin(&["customer", "add", "--username", "anothercustomer", "--password", "secret1"]);
    api.admin(&["customer", "add", "--username", "filler", "--password", "filler-pass"]);
    api.distro("Precise Pangolin - Ubuntu 12.04 LTS (64 bit)", "precise");
    api.distro("Saucy Salamander - Ubuntu 13.10 (64 bit)", "saucy");
    for uid in 30001..=30017 {
        let owner = match uid {
            30001 | 30004 | 30007 | 30009 | 30017 => "kratos",
            30008 => "anothercustomer",
            _ => "filler",
        };
        let made = api.admin(&[
            "container",
            "add",
            "--customer",
            owner,
            "--server",
            "fooserver",
            "--name",
            "changeme",
            "--memory",
            "500",
            "--storage",
            "1000",
        ]);
        assert_eq!(made.trim(), uid.to_string());
    }
    for id in 1..=17 {
        let (owner, name) = match id {
            1 => ("kratos", "mydomain.it".to_string()),
            15 => ("kratos", "mydomain.com".to_string()),
            17 => ("kratos", "mydomain.net".to_string()),
            n => ("filler", format!("filler{n}.org")),
        };
        assert_eq!(api.admin(&["domain", "map", "--customer", owner, "--name", &name]).trim(), id.to_string());
    }
    api.start();
    let kratos = Who::Customer("kratos".into(), "deimos".into());
    let proof = format!("uwsgi:{}", customer_uuid(&api, &kratos));
    let (_dns, dns_port) = dnsmasq(&[("mynewdomain.org", &proof)]);
    api.start_with(&["--dns-resolver", &format!("127.0.0.1:{dns_port}")]);
    let c = Curl { api: &api };

    // Let's start: get your personal data
    let me = c.expect("curl https://kratos:deimos@foobar.com/api/me/", 200);
    assert_eq!(me["company"], "God of war S.r.l.");
    assert_eq!(me["containers"], json!([30001, 30004, 30007, 30009, 30017]));
    assert_eq!(me["vat"], "01234567890");
    assert_eq!(me["uuid"].as_str().unwrap().len(), 36);
    // Update personal data, update password
    let me = c.expect(
        r#"curl -X POST -d '{"company": "God of War 4 S.p.a."}' https://kratos:deimos@foobar.com/api/me/"#,
        200,
    );
    assert_eq!(me["company"], "God of War 4 S.p.a.");
    c.expect(r#"curl -X POST -d '{"password": "deimos17"}' https://kratos:deimos@foobar.com/api/me/"#, 200);
    c.expect("curl https://kratos:deimos@foobar.com/api/me/", 401);
    // Containers
    let list = c.expect("curl https://kratos:deimos17@foobar.com/api/containers/", 200);
    assert_eq!(list.as_array().unwrap().len(), 5);
    let one = c.expect("curl https://kratos:deimos17@foobar.com/api/containers/30009", 200);
    for (k, v) in [
        ("uid", json!(30009)),
        ("ip", json!("10.0.0.11")),
        ("server_address", json!("1.2.3.4")),
        ("hostname", json!("changeme")),
        ("storage", json!(1000)),
        ("server", json!("fooserver")),
        ("note", json!("")),
        ("quota_threshold", json!(90)),
        ("distro_name", json!(null)),
        ("memory", json!(500)),
        ("distro", json!(null)),
        ("ssh_keys", json!([])),
        ("name", json!("changeme")),
        ("linked_to", json!([])),
        ("jid", json!("")),
        ("jid_destinations", json!("")),
    ] {
        assert_eq!(one[k], v, "{k}");
    }
    assert_eq!(one["uuid"].as_str().unwrap().len(), 36);
    // Distributions
    let distros = c.expect("curl https://kratos:deimos17@foobar.com/api/distros/", 200);
    assert_eq!(
        distros,
        json!([
            {"id": 1, "name": "Precise Pangolin - Ubuntu 12.04 LTS (64 bit)"},
            {"id": 2, "name": "Saucy Salamander - Ubuntu 13.10 (64 bit)"}
        ])
    );
    let one =
        c.expect(r#"curl -X POST -d '{"distro": 2}' https://kratos:deimos17@foobar.com/api/containers/30009"#, 200);
    assert_eq!(one["distro_name"], "Saucy Salamander - Ubuntu 13.10 (64 bit)");
    // SSH keys: the document's "ssh-rsa ........." is a placeholder, refused as not a key...
    let refused = c.expect(r#"curl -X POST -d '{"ssh_keys": ["ssh-rsa ........."]}' https://kratos:deimos17@foobar.com/api/containers/30009"#, 422);
    assert_eq!(refused["field"], "ssh_keys[0]");
    c.expect(r#"curl -X POST -d '{"ssh_keys": ["ssh-rsa .........", "ssh-rsa ........."]}' https://kratos:deimos17@foobar.com/api/containers/30009"#, 422);
    // ...and the same calls with real keys in its place work.
    let (k1, k2) = (ssh_key(), ssh_key());
    let one = c.expect(
        &format!(
            r#"curl -X POST -d '{{"ssh_keys": ["{k1}"]}}' https://kratos:deimos17@foobar.com/api/containers/30009"#
        ),
        200,
    );
    assert_eq!(one["ssh_keys"], json!([k1]));
    let one = c.expect(&format!(r#"curl -X POST -d '{{"ssh_keys": ["{k1}", "{k2}"]}}' https://kratos:deimos17@foobar.com/api/containers/30009"#), 200);
    assert_eq!(one["ssh_keys"].as_array().unwrap().len(), 2);
    // Domains
    let domains = c.expect("curl https://kratos:deimos17@foobar.com/api/domains/", 200);
    let ids: Vec<(i64, String)> = domains
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_i64().unwrap(), d["name"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(ids[..2], [(1, "mydomain.it".to_string()), (15, "mydomain.com".to_string())]);
    let created = c
        .expect(r#"curl -X POST -d '{"name":"mynewdomain.org"}' https://kratos:deimos17@foobar.com/api/domains/"#, 201);
    assert_eq!(created["name"], "mynewdomain.org");
    c.expect(r#"curl -X DELETE -d '{"name":"mynewdomain.org"}' https://kratos:deimos17@foobar.com/api/domains/"#, 200);
    // Linking containers
    let one =
        c.expect(r#"curl -X POST -d '{"link": 30008}' https://kratos:deimos17@foobar.com/api/containers/30009"#, 200);
    assert_eq!(one["linked_to"], json!([30008]));
    c.expect(
        r#"curl -X POST -d '{"link": 30009}' https://anothercustomer:secret1@foobar.com/api/containers/30008"#,
        200,
    );
    let other = c.expect(
        r#"curl -X POST -d '{"unlink": 30009}' https://anothercustomer:secret1@foobar.com/api/containers/30008"#,
        200,
    );
    assert_eq!(other["linked_to"], json!([]));
    // Rebooting containers
    let one =
        c.expect(r#"curl -X POST -d '{"reboot":1}' https://kratos:deimos17@foobar.com/api/containers/30009"#, 200);
    assert_eq!(one["reboot_generation"], 2, "one link, one reboot");
    // Tagging
    c.expect("curl https://kratos:deimos17@foobar.com/api/tags/", 200);
    let tag = c.expect(r#"curl -X POST -d '{"name":"foobar"}' https://kratos:deimos17@foobar.com/api/tags/"#, 201);
    assert_eq!(tag["name"], "foobar");
    c.expect("curl -X DELETE https://kratos:deimos17@foobar.com/api/tags/ID", 404);
    let doomed = c.expect(r#"curl -X POST -d '{"name":"doomed"}' https://kratos:deimos17@foobar.com/api/tags/"#, 201);
    c.expect(&format!("curl -X DELETE https://kratos:deimos17@foobar.com/api/tags/{}", doomed["id"]), 200);
    c.expect(r#"curl -X POST -d '{"tags":["foobar"]}' https://kratos:deimos17@foobar.com/api/containers/30009"#, 200);
    let d17 =
        c.expect(r#"curl -X POST -d '{"tags":["foobar"]}' https://kratos:deimos17@foobar.com/api/domains/17"#, 200);
    assert_eq!(d17["tags"], json!(["foobar"]));
    let tagged = c.expect("curl https://kratos:deimos17@foobar.com/api/containers/?tags=foobar,zeus", 200);
    assert_eq!(tagged.as_array().unwrap().iter().map(|c| c["uid"].clone()).collect::<Vec<_>>(), [json!(30009)]);
    let tagged = c.expect("curl https://kratos:deimos17@foobar.com/api/domains/?tags=foobar", 200);
    assert_eq!(tagged.as_array().unwrap().iter().map(|d| d["id"].clone()).collect::<Vec<_>>(), [json!(17)]);
    // Loopboxes
    let lb = c.expect(r#"curl -X POST -d '{"container":30017,"filename":"zeus001","mountpoint":"zeus"}' https://kratos:deimos17@foobar.com/api/loopboxes"#, 201);
    let id = lb["id"].clone();
    assert_eq!(c.expect("curl https://kratos:deimos17@foobar.com/api/loopboxes", 200).as_array().unwrap().len(), 1);
    c.expect("curl https://kratos:deimos17@foobar.com/api/loopboxes/id", 404);
    assert_eq!(
        c.expect(&format!("curl https://kratos:deimos17@foobar.com/api/loopboxes/{id}"), 200)["filename"],
        "zeus001"
    );
    let lb = c.expect(
        &format!(r#"curl -X POST -d '{{"tags":["foobar"]}}' https://kratos:deimos17@foobar.com/api/loopboxes/{id}"#),
        200,
    );
    assert_eq!(lb["tags"], json!(["foobar"]));
    c.expect(&format!("curl -X DELETE https://kratos:deimos17@foobar.com/api/loopboxes/{id}"), 200);
    // Alarms
    assert_eq!(c.expect("curl https://kratos:deimos17@foobar.com/api/alarms/", 200), json!([]));
}
