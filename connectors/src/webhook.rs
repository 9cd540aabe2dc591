//! `type = "webhook"`: one HTTP request per record to a CRM or any HTTP endpoint, optionally signed
//! with Standard Webhooks headers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::Pace;
use crate::body::{self, BodyKind};
use crate::units::HumanDuration;
use crate::{
    Attempt, ConfigIssue, Connector, ConnectorError, Described, DestinationConfig, DestinationType,
    KeyPath, Record, Secret,
};

/// The keys of a `webhook` destination (besides the common ones). `Debug` redacts the URL's
/// credentials; headers and the signing secret are [`Secret`]s.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where each record is sent. Credentials in the URL (`https://user:pass@host/`) become HTTP Basic.
    pub url: String,
    /// `POST` (default) or `PUT`.
    #[serde(default)]
    pub method: Method,
    /// `json` (default) or `form` (`application/x-www-form-urlencoded`).
    #[serde(default)]
    pub format: Format,
    /// `fields` (default): the mapped fields as an object; `raw`: the notification as received.
    #[serde(default)]
    pub body: BodyKind,
    /// Extra request headers; values are treated as secrets and never printed.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Total time for one request (default 15s).
    pub timeout: Option<HumanDuration>,
    /// `whsec_<base64>`: adds Standard Webhooks `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    pub signing_secret: Option<Secret>,
    /// Allows a plain `http://` URL to another machine. Participant data and the headers then
    /// cross the network in clear: only for a private network you trust.
    #[serde(default)]
    pub allow_http: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Post,
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Json,
    Form,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redact_url(&self.url))
            .field("method", &self.method)
            .field("format", &self.format)
            .field("body", &self.body)
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
            .field("signing_secret", &self.signing_secret)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl DestinationType for WebhookConfig {
    const TYPE: &'static str = "webhook";
}

impl DestinationConfig for WebhookConfig {
    /// Checks everything that needs no network.
    fn validate(&self, fields: &[(String, String)]) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Ok(url) if url.scheme() == "https" => {}
            Ok(url) if url.scheme() == "http" => {
                if !self.allow_http && !crate::http::is_loopback(&url) {
                    issues.push(ConfigIssue::new(
                        "url",
                        "plain http:// would send participant data and these headers in clear: use https://, or set allow_http = true if the network to this host is private",
                    ));
                }
            }
            Ok(url) => issues.push(ConfigIssue::new(
                "url",
                format!("unsupported scheme {:?}: use http or https", url.scheme()),
            )),
            Err(e) => issues.push(ConfigIssue::new("url", format!("not a valid URL: {e}"))),
        }
        for (name, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                issues.push(ConfigIssue::at(
                    header_path(name),
                    "not a valid header name",
                ));
            } else if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
                issues.push(ConfigIssue::at(
                    header_path(name),
                    "the value holds characters a header cannot carry",
                ));
            }
        }
        if let Some(secret) = &self.signing_secret
            && let Err(e) = signing_key(secret)
        {
            issues.push(ConfigIssue::new("signing_secret", e));
        }
        if self.body == BodyKind::Raw && self.format == Format::Form {
            issues.push(ConfigIssue::new(
                "format",
                "body = \"raw\" sends the JSON notification as received, so format must be \"json\"",
            ));
        }
        if self.body == BodyKind::Fields
            && self.format == Format::Json
            && let Some(conflict) = body::nesting_conflict(fields.iter().map(|(n, _)| n.as_str()))
        {
            issues.push(ConfigIssue::new("fields", conflict));
        }
        if let Some(t) = self.timeout
            && t.0.is_zero()
        {
            issues.push(ConfigIssue::new("timeout", "must be above zero"));
        }
        issues
    }

    /// Method and URL, credentials redacted.
    fn summary(&self) -> String {
        format!("{} {}", self.method.as_str(), redact_url(&self.url))
    }

    fn secrets(&self) -> Vec<String> {
        // Only headers named for a credential: redacting every value (an `Accept`, a version)
        // would garble every answer that quotes it.
        let mut out: Vec<String> = self
            .headers
            .iter()
            .filter(|(name, _)| looks_secret(name) || name.to_ascii_lowercase().contains("cookie"))
            .map(|(_, v)| v.expose().to_string())
            .collect();
        if let Some(s) = &self.signing_secret {
            out.push(s.expose().to_string());
            out.extend(s.expose().strip_prefix("whsec_").map(str::to_owned));
        }
        if let Ok(url) = reqwest::Url::parse(&self.url) {
            if let Some(password) = url.password() {
                let password = percent_encoding::percent_decode_str(password)
                    .decode_utf8_lossy()
                    .into_owned();
                let user = percent_encoding::percent_decode_str(url.username())
                    .decode_utf8_lossy()
                    .into_owned();
                out.push(B64.encode(format!("{user}:{password}")));
                out.push(password);
            }
            out.extend(
                url.query_pairs()
                    .filter(|(k, _)| looks_secret(k))
                    .map(|(_, v)| v.into_owned()),
            );
        }
        out
    }

    fn build(
        &self,
        client: &reqwest::Client,
        _fields: &[String],
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        Ok(Arc::new(Webhook::new(self.clone(), client.clone())?))
    }
}

fn header_path(name: &str) -> KeyPath {
    KeyPath::root().key("headers").key(name)
}

/// The key behind `whsec_<base64>`.
fn signing_key(secret: &Secret) -> Result<Vec<u8>, String> {
    let encoded = secret
        .expose()
        .strip_prefix("whsec_")
        .ok_or("must start with \"whsec_\" followed by base64 (Standard Webhooks)")?;
    let key = B64
        .decode(encoded)
        .map_err(|_| "the part after \"whsec_\" is not valid base64".to_string())?;
    if key.is_empty() {
        return Err("the key after \"whsec_\" is empty".into());
    }
    Ok(key)
}

/// Standard Webhooks: `v1,` + base64 of HMAC-SHA256 over `id.timestamp.body`.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Hides a URL's password and the values of query parameters that look like credentials.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(raw) else {
        return "<invalid URL>".into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = looks_secret(&k);
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// A query parameter or header whose name says it carries a credential.
fn looks_secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["token", "key", "secret", "pass", "sig", "auth"]
        .iter()
        .any(|s| lower.contains(s))
}

/// A ready webhook destination.
pub struct Webhook {
    config: WebhookConfig,
    url: reqwest::Url,
    key: Option<Vec<u8>>,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(config: WebhookConfig, client: reqwest::Client) -> Result<Self, ConnectorError> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| ConnectorError::Config(format!("url: {e}")))?;
        let key = match &config.signing_secret {
            Some(s) => Some(signing_key(s).map_err(ConnectorError::Config)?),
            None => None,
        };
        Ok(Webhook {
            config,
            url,
            key,
            client,
        })
    }

    fn content_type(&self) -> &'static str {
        match self.config.format {
            Format::Json => "application/json",
            Format::Form => "application/x-www-form-urlencoded",
        }
    }

    fn body(&self, record: &Record) -> String {
        match (self.config.body, self.config.format) {
            (BodyKind::Raw, _) => record.raw.to_string(),
            (BodyKind::Fields, Format::Json) => body::fields_to_json(&record.fields).to_string(),
            (BodyKind::Fields, Format::Form) => body::fields_to_form(&record.fields),
        }
    }

    /// Stable across retries, so the receiver can drop a repeat.
    fn message_id(record: &Record) -> String {
        format!("msg_hookfan_{}", record.delivery_id)
    }

    async fn deliver_one(&self, record: &Record, pace: &dyn Pace) -> Attempt {
        let body = self.body(record);
        let method = match self.config.method {
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
        };
        let mut request = self
            .client
            .request(method, self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, self.content_type());
        for (name, value) in &self.config.headers {
            request = request.header(name.as_str(), value.expose());
        }
        if let Some(t) = self.config.timeout {
            request = request.timeout(t.0);
        }
        // Waited for before signing: the signature's timestamp is the time of sending.
        let _call = pace.call().await;
        if let Some(key) = &self.key {
            let id = Self::message_id(record);
            let timestamp = jiff::Timestamp::now().as_second();
            let signature = sign(key, &id, timestamp, body.as_bytes());
            request = request
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature);
        }
        match request.body(body).send().await {
            Ok(response) => Attempt::from_response(response).await,
            Err(e) => Attempt::from_transport_error(e),
        }
    }
}

#[async_trait::async_trait]
impl Connector for Webhook {
    fn timeout(&self) -> Duration {
        self.config
            .timeout
            .map(|t| t.0)
            .unwrap_or(crate::http::DEFAULT_TIMEOUT)
    }

    async fn deliver(&self, records: &[Record], pace: &dyn Pace) -> Vec<Attempt> {
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            out.push(self.deliver_one(record, pace).await);
        }
        out
    }

    /// Webhooks have no harmless call in general, so this proves the host answers HTTP at all: a
    /// `HEAD` whose status, whatever it is, is reported but not judged.
    async fn check(&self) -> Result<String, ConnectorError> {
        let response = self
            .client
            .head(self.url.clone())
            .timeout(self.timeout())
            .send()
            .await
            .map_err(|e| ConnectorError::Check(crate::outcome::describe_transport_error(e)))?;
        Ok(format!(
            "{} answers (HEAD gave HTTP {})",
            redact_url(&self.config.url),
            response.status().as_u16()
        ))
    }

    fn describe(&self, record: &Record) -> Described {
        let mut headers = vec![("content-type".to_string(), self.content_type().to_string())];
        for name in self.config.headers.keys() {
            headers.push((name.to_ascii_lowercase(), "***".into()));
        }
        if self.key.is_some() {
            headers.push(("webhook-id".into(), Self::message_id(record)));
            headers.push((
                "webhook-timestamp".into(),
                "<unix seconds at send time>".into(),
            ));
            headers.push(("webhook-signature".into(), "v1,***".into()));
        }
        Described {
            action: self.config.summary(),
            headers,
            body: self.body(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification.
    #[test]
    fn signs_like_the_standard_webhooks_test_vector() {
        let key = signing_key(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn bad_secrets_are_config_errors() {
        assert!(signing_key(&Secret::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).is_err());
        assert!(signing_key(&Secret::new("whsec_!!!")).is_err());
    }

    #[test]
    fn secrets_are_the_credentials_not_every_header() {
        let config: WebhookConfig = serde_json::from_value(serde_json::json!({
            "url": "https://bob:hunter22@crm.example/in?api_key=abcdef&list=777777",
            "headers": {
                "Authorization": "Bearer t0k3n-1",
                "X-Api-Key": "k3y-v4lue",
                "Accept": "application/json",
            },
        }))
        .unwrap();
        let secrets = config.secrets();
        for expected in ["Bearer t0k3n-1", "k3y-v4lue", "hunter22", "abcdef"] {
            assert!(
                secrets.iter().any(|s| s == expected),
                "{expected}: {secrets:?}"
            );
        }
        assert!(
            !secrets
                .iter()
                .any(|s| s == "application/json" || s == "777777")
        );
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://bob:hunter2@crm.example/in?api_key=abc&list=7"),
            "https://bob:***@crm.example/in?api_key=***&list=7"
        );
    }
}
