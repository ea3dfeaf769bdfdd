//! The LDAP bind backend against a real slapd on loopback.

use crate::harness::{die_with_parent, free_port, require_binary, wait_for_port, Api, Backend, Guard, Who};
use serde_json::json;
use std::process::{Command, Stdio};

const PEOPLE: &str = "ou=people,dc=example,dc=org";

fn slapd(dir: &std::path::Path) -> (Guard, u16) {
    let slapd = require_binary("/usr/sbin/slapd", "slapd");
    let slapadd = require_binary("/usr/sbin/slapadd", "slapd");
    std::fs::create_dir_all(dir.join("db")).unwrap();
    let conf = dir.join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             pidfile {d}/slapd.pid\ndatabase mdb\nmaxsize 10485760\nsuffix \"dc=example,dc=org\"\n\
             rootdn \"cn=admin,dc=example,dc=org\"\nrootpw admin-secret\ndirectory {d}/db\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let ldif = dir.join("base.ldif");
    std::fs::write(
        &ldif,
        format!(
            "dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
             dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: uid=athena,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: athena\ncn: Athena\nsn: Pallas\nuserPassword: wis:dom-pass\n"
        ),
    )
    .unwrap();
    let out = Command::new(slapadd).arg("-f").arg(&conf).arg("-l").arg(&ldif).output().unwrap();
    assert!(out.status.success(), "slapadd: {}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let mut cmd = Command::new(slapd);
    cmd.arg("-f").arg(&conf).args(["-h", &format!("ldap://127.0.0.1:{port}/"), "-d", "0"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    die_with_parent(&mut cmd);
    let guard = Guard(cmd.spawn().unwrap());
    wait_for_port(port, "slapd");
    (guard, port)
}

#[test]
fn customers_without_a_local_password_bind_to_ldap() {
    let mut api = Api::new(Backend::Sqlite);
    let (slapd_guard, port) = slapd(&api.dir.path().join("ldap"));
    api.admin(&["customer", "add", "--username", "athena", "--ldap"]);
    let local = api.customer("kratos", "deimos-pass");
    api.start_with(&[
        "--ldap-url",
        &format!("ldap://127.0.0.1:{port}"),
        "--ldap-dn-template",
        &format!("uid={{}},{PEOPLE}"),
    ]);
    let athena = Who::Customer("athena".into(), "wis:dom-pass".into());
    api.get(&athena, "/me/").expect(200);
    api.get(&athena, "/me/").expect(200);
    api.get(&Who::Customer("athena".into(), "wrong".into()), "/me/").expect_error(401, None);
    api.get(&Who::Customer("athena".into(), "".into()), "/me/").expect_error(401, None);
    // A user name cannot reshape the bind DN.
    api.get(&Who::Customer(format!("athena,{PEOPLE}"), "wis:dom-pass".into()), "/me/").expect_error(401, None);
    // Local accounts still use their argon2 hash; directory accounts cannot set one.
    api.get(&local, "/me/").expect(200);
    api.post_json(&athena, "/me/", json!({"password": "another-pass"})).expect_error(409, Some("password"));
    // Directory down: 503, not a silent 401 (or a 500).
    drop(slapd_guard);
    api.get(&Who::Customer("athena".into(), "not-remembered".into()), "/me/").expect_error(503, None);
    api.get(&local, "/me/").expect(200);
}
