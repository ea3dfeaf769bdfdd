//! The OpenAPI 3.0 document served at `/api/openapi.json`, built from a compact table of the
//! customer endpoints so it cannot drift far from the router (the fuzz test drives every entry).

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

fn s(t: &str) -> Value {
    json!({"type": t})
}

fn error_schema() -> Value {
    json!({"type": "object", "properties": {
        "error": s("string"), "field": s("string"), "reason": s("string")}, "required": ["error"]})
}

fn object(props: &[(&str, Value)]) -> Value {
    let mut p = Map::new();
    for (k, v) in props {
        p.insert(k.to_string(), v.clone());
    }
    json!({"type": "object", "properties": p})
}

fn int_param(name: &str, location: &str, required: bool) -> Value {
    json!({"name": name, "in": location, "required": required, "schema": {"type": "integer"}})
}

fn with_example(mut param: Value, example: Value) -> Value {
    param["example"] = example;
    param
}

fn str_param(name: &str, location: &str, required: bool) -> Value {
    json!({"name": name, "in": location, "required": required, "schema": {"type": "string"}})
}

fn responses(ok_code: &str) -> Value {
    let err = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut r = Map::new();
    r.insert(ok_code.into(), json!({"description": "success", "content": {"application/json": {"schema": {}}}}));
    for code in ["400", "401", "403", "404", "409", "413", "416", "422"] {
        r.insert(code.into(), err.clone());
    }
    Value::Object(r)
}

fn op(summary: &str, params: Vec<Value>, body: Option<Value>, ok_code: &str) -> Value {
    let mut o = json!({"summary": summary, "parameters": params, "responses": responses(ok_code)});
    if let Some(schema) = body {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    o
}

fn text_body_op(summary: &str, params: Vec<Value>) -> Value {
    let mut o = op(summary, params, None, "201");
    o["requestBody"] = json!({"required": true, "content": {"text/plain": {"schema": {"type": "string"}}}});
    o
}

pub fn document() -> Value {
    let strs = || json!({"type": "array", "items": {"type": "string"}});
    // Automatic certificates: `auto` is refused (422) on wildcard domains.
    let tls = || json!({"type": "string", "enum": ["off", "auto"]});
    let tags_q = str_param("tags", "query", false);
    let page = || vec![int_param("limit", "query", false), int_param("offset", "query", false)];
    let container_update = object(&[
        ("name", s("string")),
        ("note", s("string")),
        ("distro", s("integer")),
        ("custom_distro", s("integer")),
        ("ssh_keys", strs()),
        ("link", s("integer")),
        ("unlink", s("integer")),
        ("reboot", s("integer")),
        ("tags", strs()),
        ("quota_threshold", s("integer")),
        ("alarm_freq", s("integer")),
        ("jid", s("string")),
        ("jid_secret", s("string")),
        ("jid_destinations", s("string")),
        ("pushover_user", s("string")),
        ("pushover_token", s("string")),
        ("pushover_sound", s("string")),
        ("pushbullet_token", s("string")),
        ("slack_webhook", s("string")),
        ("nofollow", s("boolean")),
        ("custom_distros_storage", s("boolean")),
        ("memory", s("integer")),
        ("storage", s("integer")),
    ]);
    // Examples point the fuzzer at objects the fuzz script seeds (container 30001, id 1).
    let uid = || with_example(int_param("uid", "path", true), json!(30001));
    let id = || with_example(int_param("id", "path", true), json!(1));
    let mut alarm_filters = vec![
        int_param("container", "query", false),
        str_param("vassal", "query", false),
        str_param("class", "query", false),
        str_param("color", "query", false),
        int_param("level", "query", false),
        int_param("line", "query", false),
        str_param("filename", "query", false),
        str_param("func", "query", false),
        str_param("with_total", "query", false),
        str_param("range", "query", false),
    ];
    alarm_filters.extend(page());
    let raise_params = vec![
        uid(),
        str_param("key", "query", false),
        str_param("color", "query", false),
        str_param("class", "query", false),
        str_param("vassal", "query", false),
        int_param("line", "query", false),
        str_param("func", "query", false),
        str_param("filename", "query", false),
        int_param("level", "query", false),
        int_param("unix", "query", false),
    ];
    let paths = json!({
        "/me/": {
            "get": op("The account", vec![], None, "200"),
            "post": op("Update the account", vec![], Some(object(&[("company", s("string")), ("vat", s("string")), ("email", s("string")), ("password", s("string"))])), "200"),
        },
        "/containers/": {
            "get": op("List containers", [vec![tags_q.clone()], page()].concat(), None, "200"),
            "post": op("Create a container on an owned server", vec![], Some(object(&[("server", s("string")), ("name", s("string")), ("memory", s("integer")), ("storage", s("integer"))])), "201"),
        },
        "/containers/{uid}": {
            "get": op("A container", vec![uid()], None, "200"),
            "post": op("Update a container", vec![uid()], Some(container_update), "200"),
        },
        "/distros/": {"get": op("Platform distros", vec![], None, "200")},
        "/custom_distros/": {"get": op("Your custom distros", vec![], None, "200")},
        "/custom_distros/{uid}": {
            "get": op("Custom distros usable by a container", vec![uid()], None, "200"),
            "post": op("Create a custom distro in a storage container", vec![uid()], Some(object(&[("name", s("string")), ("path", s("string")), ("note", s("string"))])), "201"),
        },
        "/custom_distro/{id}": {
            "get": op("A custom distro", vec![id()], None, "200"),
            "post": op("Update a custom distro", vec![id()], Some(object(&[("name", s("string")), ("path", s("string")), ("note", s("string"))])), "200"),
            "delete": op("Delete a custom distro", vec![id()], None, "200"),
        },
        "/domains/": {
            "get": op("List domains", [vec![tags_q.clone()], page()].concat(), None, "200"),
            "post": op("Add a domain (DNS TXT proof); tls auto: the nodes get its HTTPS certificate through ACME", vec![], Some(object(&[("name", s("string")), ("note", s("string")), ("tls", tls())])), "201"),
            "delete": op("Remove a domain by name", vec![], Some(object(&[("name", s("string"))])), "200"),
        },
        "/domains/{id}": {
            "get": op("A domain", vec![id()], None, "200"),
            "post": op("Update a domain", vec![id()], Some(object(&[("note", s("string")), ("tags", strs()), ("tls", tls())])), "200"),
            "delete": op("Remove a domain", vec![id()], None, "200"),
        },
        "/tags/": {
            "get": op("List tags", page(), None, "200"),
            "post": op("Create a tag", vec![], Some(object(&[("name", s("string")), ("note", s("string"))])), "201"),
        },
        "/tags/{id}": {
            "get": op("A tag", vec![id()], None, "200"),
            "post": op("Update a tag", vec![id()], Some(object(&[("name", s("string")), ("note", s("string"))])), "200"),
            "delete": op("Delete a tag", vec![id()], None, "200"),
        },
        "/loopboxes/": {
            "get": op("List loopboxes", [vec![tags_q, int_param("container", "query", false)], page()].concat(), None, "200"),
            "post": op("Create a loopbox", vec![], Some(object(&[("container", s("integer")), ("filename", s("string")), ("mountpoint", s("string")), ("ro", s("boolean")), ("tags", strs())])), "201"),
        },
        "/loopboxes/{id}": {
            "get": op("A loopbox", vec![id()], None, "200"),
            "post": op("Retag a loopbox", vec![id()], Some(object(&[("tags", strs())])), "200"),
            "delete": op("Delete a loopbox", vec![id()], None, "200"),
        },
        "/alarms/": {"get": op("List alarms", alarm_filters, None, "200")},
        "/alarms/{id}": {
            "get": op("An alarm", vec![id()], None, "200"),
            "delete": op("Delete an alarm", vec![id()], None, "200"),
        },
        "/alarms/raise/{uid}": {"post": text_body_op("Raise an alarm", raise_params.clone())},
        "/alarms/trigger/{uid}": {"post": text_body_op("Raise an alarm", raise_params)},
        "/alarm_key/{uid}": {
            "get": op("New alarm key", vec![uid()], None, "200"),
            "post": op("New alarm key", vec![uid()], None, "200"),
        },
        "/metrics/{metric}/{id}": {"get": op("One day of a metric", vec![
            json!({"name": "metric", "in": "path", "required": true, "schema": {"type": "string", "enum": [
                "container.cpu", "container.io.read", "container.io.write", "container.net.rx",
                "container.net.tx", "container.mem", "container.mem.rss", "container.mem.cache",
                "container.quota", "domain.net.rx", "domain.net.tx", "domain.hits"]}}),
            id(), int_param("year", "query", false), int_param("month", "query", false), int_param("day", "query", false),
        ], None, "200")},
        "/news/": {"get": op("News", vec![], None, "200")},
        "/portmappings/{server}": {
            "get": op("Port mappings of an owned server", vec![with_example(str_param("server", "path", true), json!("192.0.2.20"))], None, "200"),
            "post": op("Add a port mapping", vec![with_example(str_param("server", "path", true), json!("192.0.2.20"))], Some(object(&[("container", s("integer")), ("proto", s("string")), ("public_port", s("integer")), ("private_port", s("integer"))])), "201"),
            "delete": op("Remove a port mapping", vec![with_example(str_param("server", "path", true), json!("192.0.2.20"))], Some(object(&[("id", s("integer"))])), "200"),
        },
    });
    json!({
        "openapi": "3.0.3",
        "info": {"title": "uwsgi.it control API", "version": env!("CARGO_PKG_VERSION")},
        "servers": [{"url": "/api"}],
        "security": [{"basic": []}],
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {"Error": error_schema()},
        },
        "paths": paths,
    })
}

pub async fn serve() -> Response {
    Json(document()).into_response()
}
