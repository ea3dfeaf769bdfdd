//! One worker per (container, channel): it takes that queue's alarms in order and delivers
//! each with the retry policy. Workers are independent, so a Slack that answers 429 for a
//! minute holds back only that container's Slack alarms.

use super::{log, Relay};
use crate::retry::{classify, Outcome};
use crate::services::HttpRequest;
use crate::xmpp;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;

/// Alarms waiting per (container, channel); more are dropped (and the customer told).
pub const QUEUE: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Api,
    Slack,
    Pushover,
    Pushbullet,
    Xmpp,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Api => "the API record",
            Channel::Slack => "Slack",
            Channel::Pushover => "Pushover",
            Channel::Pushbullet => "Pushbullet",
            Channel::Xmpp => "XMPP",
        }
    }
}

pub enum Job {
    Http(HttpRequest),
    Xmpp { jid: String, password: String, destinations: Vec<String>, body: String },
}

pub async fn worker(relay: Arc<Relay>, uid: u32, channel: Channel, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.recv().await {
        deliver(&relay, uid, channel, &job).await;
    }
}

async fn deliver(relay: &Arc<Relay>, uid: u32, channel: Channel, job: &Job) {
    let policy = &relay.cfg.policy;
    let mut attempt = 1;
    loop {
        let outcome = match job {
            Job::Http(req) => {
                let client = if channel == Channel::Api { &relay.api } else { &relay.third_party };
                http(client, req).await
            }
            Job::Xmpp { jid, password, destinations, body } => {
                let connect = relay.cfg.xmpp.clone();
                let (jid, password, destinations, body) =
                    (jid.clone(), password.clone(), destinations.clone(), body.clone());
                let sent = tokio::task::spawn_blocking(move || {
                    xmpp::send(
                        &connect,
                        &xmpp::Send { jid: &jid, password: &password, destinations: &destinations, body: &body },
                    )
                })
                .await;
                match sent {
                    Ok(Ok(())) => Outcome::Delivered,
                    Ok(Err(xmpp::Failure::Refused(e))) => Outcome::Permanent(e),
                    Ok(Err(xmpp::Failure::Failed(e))) => Outcome::Retry { why: e, retry_after: None },
                    Err(e) => Outcome::Retry { why: format!("the XMPP task failed: {e}"), retry_after: None },
                }
            }
        };
        let name = channel.name();
        match (&outcome, policy.wait_after(attempt, &outcome)) {
            (Outcome::Delivered, _) => {
                return log(&format!("container {uid}: alarm delivered to {name} (attempt {attempt})"));
            }
            (Outcome::Retry { why, .. }, Some(wait)) => {
                log(&format!(
                    "container {uid}: {name}: attempt {attempt} failed ({why}), retrying in {}s",
                    wait.as_secs_f32()
                ));
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            (Outcome::Retry { why: e, .. } | Outcome::Permanent(e), _) => {
                log(&format!("container {uid}: {name}: alarm given up after {attempt} attempt(s): {e}"));
                relay.to_customer_log(
                    uid,
                    format!("[unbit alarm] an alarm could not be sent to {name} ({e}; {attempt} attempt(s))\n"),
                );
                return;
            }
        }
    }
}

/// One attempt. Errors never carry the URL: a Slack webhook's URL is its secret.
async fn http(client: &reqwest::Client, req: &HttpRequest) -> Outcome {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).expect("a valid method");
    let mut builder = client
        .request(method, &req.url)
        .header(reqwest::header::CONTENT_TYPE, req.body.content_type())
        .body(req.body.bytes());
    for (k, v) in &req.headers {
        builder = builder.header(k, v);
    }
    match builder.send().await {
        Ok(resp) => {
            let retry_after = resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok());
            classify(resp.status().as_u16(), retry_after, SystemTime::now())
        }
        Err(e) => {
            let e = e.without_url();
            let why = if e.is_timeout() { "timed out".to_string() } else { format!("{e}") };
            Outcome::Retry { why, retry_after: None }
        }
    }
}
