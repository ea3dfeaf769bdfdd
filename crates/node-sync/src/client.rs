//! The node endpoints of the control API, as a node calls them.

use container_spec::ContainerSpec;
use std::time::Duration;

/// How the node proves who it is.
#[derive(Clone)]
pub enum NodeAuth {
    /// Production: a client certificate bound to the node's server record, and the API's CA.
    Tls { cert_pem: Vec<u8>, key_pem: Vec<u8>, ca_pem: Vec<u8> },
    /// Development on loopback: the token `unbit-api admin server add` printed.
    Token(String),
}

/// One answer of the containers endpoint.
pub struct Answer {
    pub revision: u64,
    pub specs: Vec<ContainerSpec>,
    /// Entries that are not a usable spec: `(uid if readable, reason)`. Their files are kept.
    pub unreadable: Vec<(Option<u32>, String)>,
}

pub struct Api {
    base: String,
    http: reqwest::blocking::Client,
    token: Option<String>,
}

impl Api {
    /// `long_poll` bounds how long the API may hold a request; the client waits a little more.
    pub fn new(base: &str, auth: NodeAuth, long_poll: Duration) -> Result<Self, String> {
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(long_poll + Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5));
        let mut token = None;
        match auth {
            NodeAuth::Tls { cert_pem, key_pem, ca_pem } => {
                let identity = reqwest::Identity::from_pkcs8_pem(&cert_pem, &key_pem)
                    .map_err(|e| format!("node certificate/key: {e}"))?;
                let ca = reqwest::Certificate::from_pem(&ca_pem).map_err(|e| format!("API CA: {e}"))?;
                // Only the platform's CA: a public CA must not be able to impersonate the API.
                builder = builder.identity(identity).add_root_certificate(ca).tls_built_in_root_certs(false);
            }
            NodeAuth::Token(t) => token = Some(t),
        }
        let http = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Api { base: base.trim_end_matches('/').to_string(), http, token })
    }

    /// Sends a request with the node's token (if any) and reads the JSON answer; `what` names
    /// the request in errors (`GET <url>`).
    fn send(&self, req: reqwest::blocking::RequestBuilder, what: &str) -> Result<serde_json::Value, String> {
        let req = match &self.token {
            Some(t) => req.header("X-Unbit-Node-Token", t),
            None => req,
        };
        let resp = req.send().map_err(|e| format!("{what}: {e}"))?;
        let status = resp.status();
        let body = resp.text().map_err(|e| format!("{what}: reading the answer: {e}"))?;
        if !status.is_success() {
            return Err(format!("{what}: {status}: {}", body.trim()));
        }
        serde_json::from_str(&body).map_err(|e| format!("{what}: not JSON: {e}"))
    }

    fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.get(&url), &format!("GET {url}"))
    }

    /// POSTs a JSON report (the node's metrics) and returns the answer's JSON.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.post(&url).json(body), &format!("POST {url}"))
    }

    /// The node's containers; with `since` = the last revision seen, the API holds the request
    /// until something changes.
    pub fn containers(&self, since: Option<u64>) -> Result<Answer, String> {
        let path = match since {
            Some(rev) => format!("/api/node/v1/containers?since={rev}"),
            None => "/api/node/v1/containers".to_string(),
        };
        let v = self.get(&path)?;
        let revision = v["revision"].as_u64().ok_or("answer without a revision")?;
        let entries = v["containers"].as_array().ok_or("answer without a containers list")?;
        let mut answer = Answer { revision, specs: Vec::new(), unreadable: Vec::new() };
        for entry in entries {
            match serde_json::from_value::<ContainerSpec>(entry.clone()) {
                Ok(spec) => answer.specs.push(spec),
                Err(e) => {
                    let uid = entry["uid"].as_u64().and_then(|u| u32::try_from(u).ok());
                    answer.unreadable.push((uid, e.to_string()));
                }
            }
        }
        Ok(answer)
    }

    /// The domains of the customers with containers on this node, as the validator reads them.
    pub fn domains(&self) -> Result<Vec<u8>, String> {
        let v = self.get("/api/node/v1/domains")?;
        if !v.is_array() {
            return Err("domains answer is not a list".into());
        }
        Ok(serde_json::to_vec_pretty(&v).expect("JSON re-serializes"))
    }

    /// This node's loopboxes (`[{id, uid, filename, mountpoint, ro}]`), as the containers
    /// plugin reads them from the spec folder's `loopboxes.json`. An answer that is not such a
    /// list is an error: the node keeps its last good file (and its mounts).
    pub fn loopboxes(&self) -> Result<Vec<u8>, String> {
        let v = self.get("/api/node/v1/loopboxes")?;
        let list: Vec<container_spec::LoopboxSpec> =
            serde_json::from_value(v).map_err(|e| format!("loopboxes answer is not a list of loopboxes: {e}"))?;
        Ok(serde_json::to_vec_pretty(&list).expect("JSON re-serializes"))
    }

    /// This node's port mappings (`{revision, mappings: [{proto, public_ip, public_port,
    /// private_ip, private_port}]}`), as the containers plugin's firewall reads them. An answer
    /// of another shape is an error: the node keeps its last good file.
    pub fn portmappings(&self) -> Result<Vec<u8>, String> {
        let v = self.get("/api/node/v1/portmappings")?;
        if !v["revision"].is_u64() || !v["mappings"].is_array() {
            return Err("portmappings answer is not {revision, mappings}".into());
        }
        Ok(serde_json::to_vec_pretty(&v).expect("JSON re-serializes"))
    }

    /// The members file of this node's Legion (`{"members": [{name, cluster, fastrouter,
    /// public_key, x25519_key?}]}`), as the cluster instance's `unbit-cluster-members` reads
    /// it. An answer of another shape is an error: the node keeps its last good file (a members
    /// file the cluster instance refuses would cut the node off its Legion).
    pub fn legion_members(&self) -> Result<MembersFile, String> {
        let v = self.get("/api/node/v1/legion/members")?;
        let members = v["members"].as_array().ok_or("legion members answer is not {members: [...]}")?;
        for m in members {
            for field in ["name", "cluster", "fastrouter", "public_key"] {
                if !m[field].is_string() {
                    return Err(format!("legion members answer: a member without a {field}: {m}"));
                }
            }
        }
        Ok(MembersFile::of(v))
    }

    /// The links members file of this node's Legion (`{"members": [{name, endpoint,
    /// public_key, containers: [uid]}]}`), as `unbit-links run --members` reads it. An answer
    /// of another shape is an error: the node keeps its last good file (unbit-links would
    /// refuse it whole and keep its peers anyway, but the file would then say what the tunnel
    /// does not).
    pub fn links_members(&self) -> Result<MembersFile, String> {
        let v = self.get("/api/node/v1/links/members")?;
        let members = v["members"].as_array().ok_or("links members answer is not {members: [...]}")?;
        for m in members {
            for field in ["name", "endpoint", "public_key"] {
                if !m[field].is_string() {
                    return Err(format!("links members answer: a member without a {field}: {m}"));
                }
            }
            let uids = m["containers"].as_array().ok_or_else(|| format!("links members answer: no containers: {m}"))?;
            let uid = |u: &serde_json::Value| u.as_u64().and_then(|u| u32::try_from(u).ok());
            if !uids.iter().all(|u| uid(u).is_some_and(container_spec::is_container_uid)) {
                return Err(format!("links members answer: a container that is not a uid: {m}"));
            }
        }
        Ok(MembersFile::of(v))
    }
}

/// A members file as the API answered it (legion or links): the file, and the servers the API
/// left out of it.
#[derive(Debug, PartialEq, Eq)]
pub struct MembersFile {
    /// `{"members": [...]}` and nothing else: `unbit-links` refuses a file with any other
    /// field, so what else the answer says stays out of it.
    pub bytes: Vec<u8>,
    /// The answer's `skipped` (`[{name, reason}]`: a server whose inter-node address is not an
    /// IP, which no member can reach) as `name: reason`, for the node's log.
    pub skipped: Vec<String>,
}

impl MembersFile {
    /// `answer`'s `members` must have been checked.
    fn of(answer: serde_json::Value) -> MembersFile {
        let skipped = answer["skipped"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let text = |field: &str| s[field].as_str().map_or_else(|| s[field].to_string(), str::to_string);
                format!("{}: {}", text("name"), text("reason"))
            })
            .collect();
        let file = serde_json::json!({"members": answer["members"]});
        MembersFile { bytes: serde_json::to_vec_pretty(&file).expect("JSON re-serializes"), skipped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_members_file_holds_only_the_members_and_the_servers_left_out_go_to_the_log() {
        let members = json!([{"name": "a", "endpoint": "192.0.2.1:51820", "public_key": "k", "containers": []}]);
        let file = MembersFile::of(json!({
            "members": members,
            "skipped": [{"name": "b", "reason": "its inter-node address \"b.example\" is not an IP address"}],
            "something_newer": 1,
        }));
        let written: serde_json::Value = serde_json::from_slice(&file.bytes).unwrap();
        assert_eq!(written, json!({"members": members}), "unbit-links refuses any other field");
        assert_eq!(file.skipped, ["b: its inter-node address \"b.example\" is not an IP address"]);

        let plain = MembersFile::of(json!({"members": members}));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&plain.bytes).unwrap(), json!({"members": members}));
        assert!(plain.skipped.is_empty());
    }
}
