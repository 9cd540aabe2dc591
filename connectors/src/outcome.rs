//! What one attempt came to, and the one table that turns an HTTP status or a transport error into
//! an outcome: 2xx delivered; 408, 425, 429, 5xx and transport errors retry; 410 and every other
//! status are permanent.

use std::error::Error as _;
use std::time::Duration;

/// The most of a response body kept with an attempt.
pub const EXCERPT_LIMIT: usize = 2048;

/// The verdict on one attempt. The worker turns `Retry` into a scheduled time and `Failed` into dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Try again later; `after` is the destination's own request (`Retry-After`), if any.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Trying again would not help.
    Failed {
        reason: String,
    },
    /// Not attempted: the batch stopped before this record's call (an earlier call of the same
    /// batch was refused). The delivery stays due, with no attempt counted.
    Unsent,
}

impl Outcome {
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry {
            after: None,
            reason: reason.into(),
        }
    }

    pub fn failed(reason: impl Into<String>) -> Self {
        Outcome::Failed {
            reason: reason.into(),
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Delivered | Outcome::Unsent => None,
            Outcome::Retry { reason, .. } | Outcome::Failed { reason } => Some(reason),
        }
    }
}

/// One attempt at one record, as a connector reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub outcome: Outcome,
    /// The destination's HTTP status, when it answered.
    pub status: Option<u16>,
    /// The start of the destination's answer (at most [`EXCERPT_LIMIT`] bytes).
    pub response: Option<String>,
    /// Progress to save with the delivery (replaces what the record carried in).
    pub state: Option<serde_json::Value>,
    /// Things that went through but deserve a look (a value cut to fit).
    pub warnings: Vec<String>,
}

impl Attempt {
    pub fn new(outcome: Outcome) -> Self {
        Attempt {
            outcome,
            status: None,
            response: None,
            state: None,
            warnings: Vec::new(),
        }
    }

    pub fn delivered() -> Self {
        Attempt::new(Outcome::Delivered)
    }

    /// Classifies an answer already read: status, `Retry-After` header value, body excerpt.
    pub fn from_status(status: u16, retry_after: Option<&str>, body: String) -> Self {
        let outcome = classify_status(status, retry_after.and_then(parse_retry_after));
        Attempt {
            outcome,
            status: Some(status),
            response: (!body.is_empty()).then_some(body),
            state: None,
            warnings: Vec::new(),
        }
    }

    /// Reads (the start of) a response and classifies it.
    pub async fn from_response(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_excerpt(response).await;
        Attempt::from_status(status, retry_after.as_deref(), body)
    }

    /// A request that got no answer: always worth retrying.
    pub fn from_transport_error(err: reqwest::Error) -> Self {
        Attempt::new(Outcome::retry(describe_transport_error(err)))
    }
}

/// The shared status table.
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> Outcome {
    let name = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!("HTTP {status} {r}"))
        .unwrap_or_else(|| format!("HTTP {status}"));
    match status {
        200..=299 => Outcome::Delivered,
        408 | 425 | 429 | 500..=599 => Outcome::Retry {
            after: retry_after,
            reason: name,
        },
        _ => Outcome::Failed { reason: name },
    }
}

/// `Retry-After` as delay-seconds or an HTTP date; a date in the past means "now".
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let now = jiff::Timestamp::now();
    let ms = when.as_millisecond().saturating_sub(now.as_millisecond());
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// A transport error in words, without the URL (which may carry a token).
pub fn describe_transport_error(err: reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let err = err.without_url();
    let mut detail = Vec::new();
    let mut source = err.source();
    while let Some(s) = source {
        detail.push(s.to_string());
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {}", detail.join(": "))
    }
}

/// Cuts `text` to at most [`EXCERPT_LIMIT`] bytes on a character boundary.
pub fn excerpt(text: &str) -> String {
    cut(text, EXCERPT_LIMIT).to_string()
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Reads at most [`EXCERPT_LIMIT`] bytes of a body, so a huge error page costs nothing.
async fn read_excerpt(response: reqwest::Response) -> String {
    let text = crate::http::read_limited(response, EXCERPT_LIMIT)
        .await
        .unwrap_or_default();
    excerpt(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        assert_eq!(classify_status(200, None), Outcome::Delivered);
        assert_eq!(classify_status(204, None), Outcome::Delivered);
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert!(
                matches!(classify_status(s, None), Outcome::Retry { .. }),
                "{s}"
            );
        }
        for s in [301, 400, 401, 403, 404, 410, 422] {
            assert!(
                matches!(classify_status(s, None), Outcome::Failed { .. }),
                "{s}"
            );
        }
        assert_eq!(
            classify_status(429, Some(Duration::from_secs(2))),
            Outcome::Retry {
                after: Some(Duration::from_secs(2)),
                reason: "HTTP 429 Too Many Requests".into()
            }
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(90))
            .unwrap();
        let header =
            jiff::fmt::rfc2822::to_string(&later.to_zoned_datetime(jiff::tz::TimeZone::UTC))
                .unwrap();
        let d = parse_retry_after(&header).unwrap();
        assert!(
            d > Duration::from_secs(85) && d <= Duration::from_secs(90),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn cut_respects_characters() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(excerpt(&"x".repeat(5000)).len(), EXCERPT_LIMIT);
    }
}
