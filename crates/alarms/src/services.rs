//! The exact request each channel sends, built without doing any I/O so that every field is
//! checked by unit tests: method, URL, headers, body. Secrets go where each service documents
//! them (Slack: in the webhook URL; Pushover: the `token` and `user` form fields; Pushbullet:
//! the `Access-Token` header) and nowhere else; [`HttpRequest`]'s `Debug` hides them.

use serde_json::json;

/// The services' public endpoints; an operator (or a test) points each at another base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bases {
    pub slack: String,
    pub pushover: String,
    pub pushbullet: String,
}

pub const SLACK_ORIGIN: &str = "https://hooks.slack.com";

impl Default for Bases {
    fn default() -> Self {
        Bases {
            slack: SLACK_ORIGIN.into(),
            pushover: "https://api.pushover.net".into(),
            pushbullet: "https://api.pushbullet.com".into(),
        }
    }
}

/// Pushover refuses messages over 1024 characters.
pub const PUSHOVER_MAX_MESSAGE: usize = 1024;

#[derive(Clone, PartialEq, Eq)]
pub enum Body {
    Json(serde_json::Value),
    Form(String),
    Text(String),
}

#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL (Slack's secret), the headers (tokens) and the body (Pushover's) stay out of
        // every log line and panic message.
        f.write_str("HttpRequest { .. }")
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Json(v) => write!(f, "Json({v})"),
            // Pushover's token and user key are form fields.
            Body::Form(_) => f.write_str("Form(..)"),
            Body::Text(t) => write!(f, "Text({t:?})"),
        }
    }
}

impl Body {
    pub fn content_type(&self) -> &'static str {
        match self {
            Body::Json(_) => "application/json",
            Body::Form(_) => "application/x-www-form-urlencoded",
            Body::Text(_) => "text/plain; charset=utf-8",
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Json(v) => serde_json::to_vec(v).expect("JSON serializes"),
            Body::Form(s) | Body::Text(s) => s.clone().into_bytes(),
        }
    }
}

fn base(b: &str) -> &str {
    b.trim_end_matches('/')
}

/// The alarm's title on the services that have one.
pub fn title(uid: u32) -> String {
    format!("uwsgi.it container {uid}")
}

/// Slack incoming webhook: `POST <webhook>` with `{"text", "username", "icon_emoji"}`. Only
/// Slack's own webhook URLs are accepted (anything else would let a customer make the node
/// POST wherever they like); their path is sent to the configured Slack base.
pub fn slack(bases: &Bases, webhook: &str, uid: u32, node: &str, text: &str) -> Result<HttpRequest, String> {
    let path =
        slack_webhook_path(webhook).ok_or_else(|| format!("slack_webhook is not a {SLACK_ORIGIN}/services/... URL"))?;
    Ok(HttpRequest {
        method: "POST",
        url: format!("{}{path}", base(&bases.slack)),
        headers: vec![],
        body: Body::Json(json!({
            "text": text,
            "username": format!("{node}/{uid}"),
            "icon_emoji": ":heavy_exclamation_mark:",
        })),
    })
}

/// The path of a Slack incoming webhook (`/services/T.../B.../secret`), `None` for anything
/// that is not one: another host (or a look-alike such as `hooks.slack.com.evil.net` or
/// `hooks.slack.com@127.0.0.1`), http, a query, other characters. The API refuses such a
/// `slack_webhook` with this same rule, so a customer never saves one the relay would skip.
pub fn slack_webhook_path(webhook: &str) -> Option<&str> {
    webhook
        .strip_prefix(SLACK_ORIGIN)
        .filter(|p| p.starts_with("/services/") && p.len() > "/services/".len())
        .filter(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b)))
}

/// Pushover: `POST /1/messages.json`, form fields `token` (the application), `user`,
/// `message` (at most 1024 characters), `title`, `timestamp` and `sound` when set.
pub fn pushover(
    bases: &Bases,
    token: &str,
    user: &str,
    sound: Option<&str>,
    uid: u32,
    text: &str,
    unix: i64,
) -> HttpRequest {
    let message: String = text.chars().take(PUSHOVER_MAX_MESSAGE).collect();
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token)
        .append_pair("user", user)
        .append_pair("message", &message)
        .append_pair("title", &title(uid))
        .append_pair("timestamp", &unix.to_string());
    if let Some(s) = sound.filter(|s| !s.is_empty()) {
        form.append_pair("sound", s);
    }
    HttpRequest {
        method: "POST",
        url: format!("{}/1/messages.json", base(&bases.pushover)),
        headers: vec![],
        body: Body::Form(form.finish()),
    }
}

/// Pushbullet: `POST /v2/pushes` with `Access-Token: <token>` and
/// `{"type": "note", "title", "body"}`.
pub fn pushbullet(bases: &Bases, token: &str, uid: u32, text: &str) -> HttpRequest {
    HttpRequest {
        method: "POST",
        url: format!("{}/v2/pushes", base(&bases.pushbullet)),
        headers: vec![("Access-Token".into(), token.into())],
        body: Body::Json(json!({"type": "note", "title": title(uid), "body": text})),
    }
}

/// The API's record: `POST /api/node/v1/alarms/<uid>?unix=N&class=KIND`, the raw text as the
/// body, with the node's own credentials (never a customer's).
pub fn api_record(api: &str, node_token: Option<&str>, uid: u32, kind: &str, text: &str, unix: i64) -> HttpRequest {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("unix", &unix.to_string())
        .append_pair("class", kind)
        .finish();
    HttpRequest {
        method: "POST",
        url: format!("{}/api/node/v1/alarms/{uid}?{query}", base(api)),
        headers: node_token.map(|t| vec![("X-Unbit-Node-Token".to_string(), t.to_string())]).unwrap_or_default(),
        body: Body::Text(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Bases {
        Bases {
            slack: "http://127.0.0.1:9/".into(),
            pushover: "http://127.0.0.1:9".into(),
            pushbullet: "http://127.0.0.1:9".into(),
        }
    }

    #[test]
    fn slack_posts_json_to_the_webhook_path() {
        let r = slack(&local(), "https://hooks.slack.com/services/T0/B1/sEcReT", 30601, "node1", "OOM!").unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.url, "http://127.0.0.1:9/services/T0/B1/sEcReT");
        assert!(r.headers.is_empty());
        assert_eq!(
            r.body,
            Body::Json(json!({"text": "OOM!", "username": "node1/30601", "icon_emoji": ":heavy_exclamation_mark:"}))
        );
        assert_eq!(r.body.content_type(), "application/json");
        let real = slack(&Bases::default(), "https://hooks.slack.com/services/T/B/x", 1, "n", "t").unwrap();
        assert_eq!(real.url, "https://hooks.slack.com/services/T/B/x");
    }

    #[test]
    fn slack_refuses_other_urls() {
        for bad in [
            "http://hooks.slack.com/services/T/B/x",
            "https://hooks.slack.com.evil.net/services/T/B/x",
            "https://hooks.slack.com@127.0.0.1/services/x",
            "https://127.0.0.1/services/T/B/x",
            "https://hooks.slack.com/services/",
            "https://hooks.slack.com/api/chat.postMessage",
            "https://hooks.slack.com/services/T/B/x?redirect=1",
            "https://hooks.slack.com/services/../../x",
        ] {
            assert!(slack(&local(), bad, 1, "n", "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn pushover_sends_the_documented_form() {
        let r = pushover(&local(), "aTok", "uKey", Some("siren"), 30601, "a & b = c", 1700000000);
        assert_eq!(r.url, "http://127.0.0.1:9/1/messages.json");
        assert_eq!(r.body.content_type(), "application/x-www-form-urlencoded");
        assert_eq!(
            r.body,
            Body::Form(
                "token=aTok&user=uKey&message=a+%26+b+%3D+c&title=uwsgi.it+container+30601&timestamp=1700000000&sound=siren"
                    .into()
            )
        );
        let Body::Form(no_sound) = pushover(&local(), "t", "u", None, 1, "m", 0).body else { unreachable!() };
        assert!(!no_sound.contains("sound"));
    }

    #[test]
    fn pushover_messages_are_cut_at_1024_characters() {
        let long = "\u{e9}".repeat(3000);
        let Body::Form(form) = pushover(&local(), "t", "u", None, 1, &long, 0).body else { unreachable!() };
        let message = form_urlencoded::parse(form.as_bytes()).find(|(k, _)| k == "message").unwrap().1;
        assert_eq!(message.chars().count(), PUSHOVER_MAX_MESSAGE);
    }

    #[test]
    fn pushbullet_puts_the_token_in_its_header() {
        let r = pushbullet(&local(), "o.SeCrEt", 30601, "quota");
        assert_eq!(r.url, "http://127.0.0.1:9/v2/pushes");
        assert_eq!(r.headers, [("Access-Token".to_string(), "o.SeCrEt".to_string())]);
        assert_eq!(r.body, Body::Json(json!({"type": "note", "title": "uwsgi.it container 30601", "body": "quota"})));
    }

    #[test]
    fn the_api_record_uses_the_node_endpoint() {
        let r = api_record("http://127.0.0.1:8000/", Some("nodetok"), 30601, "oom", "OUT OF MEMORY", 42);
        assert_eq!(r.url, "http://127.0.0.1:8000/api/node/v1/alarms/30601?unix=42&class=oom");
        assert_eq!(r.headers, [("X-Unbit-Node-Token".to_string(), "nodetok".to_string())]);
        assert_eq!(r.body, Body::Text("OUT OF MEMORY".into()));
        assert!(api_record("https://api", None, 1, "k", "m", 0).headers.is_empty());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let r = pushbullet(&local(), "o.SeCrEt", 1, "m");
        assert!(!format!("{r:?}").contains("SeCrEt"));
    }
}
