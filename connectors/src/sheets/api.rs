//! The three Sheets API v4 calls hookfan makes (and `values.update` for the header row), typed,
//! over the shared reqwest client; and what Google's answers mean for a delivery.

use std::time::Duration;

use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};

use super::auth::Tokens;
use crate::outcome::{self, Attempt, Outcome};
use crate::pace::Pace;

/// One API request; an append of 2 MB can take a while on Google's side.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a successful answer read (they are small: a header row, an append summary).
const BODY_LIMIT: usize = 1 << 20;

/// `values.get`'s answer (and `values.update`'s body).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_dimension: Option<String>,
    /// Rows of cells; Google leaves out trailing empty rows and cells.
    #[serde(default)]
    pub values: Vec<Vec<serde_json::Value>>,
}

/// `values.append`'s body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendBody<'a> {
    pub major_dimension: &'static str,
    pub values: &'a [&'a [String]],
}

/// `values.append`'s answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendResponse {
    #[serde(default)]
    pub updates: Option<UpdateValuesResponse>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateValuesResponse {
    pub updated_range: Option<String>,
    pub updated_rows: Option<u64>,
}

/// `spreadsheets.get`'s answer, restricted by a field mask to what a check shows.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spreadsheet {
    pub properties: SpreadsheetProperties,
    #[serde(default)]
    pub sheets: Vec<Sheet>,
}

#[derive(Debug, Deserialize)]
pub struct SpreadsheetProperties {
    #[serde(default)]
    pub title: String,
}

#[derive(Debug, Deserialize)]
pub struct Sheet {
    pub properties: SheetProperties,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SheetProperties {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub grid_properties: Option<GridProperties>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GridProperties {
    #[serde(default)]
    pub row_count: u64,
    #[serde(default)]
    pub column_count: u64,
}

/// Google's error body: `{"error": {"code", "message", "status"}}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: GoogleError,
}

#[derive(Debug, Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

/// A call that did not succeed, as the attempt to report for each of its records.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Boxed: a `Result` carrying it stays small.
    pub attempt: Box<Attempt>,
    /// Google could not use a range we sent: the tab was renamed, or row 1 is stale.
    pub range_problem: bool,
}

impl Refused {
    pub fn retry(reason: impl Into<String>) -> Refused {
        Refused {
            attempt: Box::new(Attempt::new(Outcome::retry(reason))),
            range_problem: false,
        }
    }

    pub fn failed(reason: impl Into<String>) -> Refused {
        Refused {
            attempt: Box::new(Attempt::new(Outcome::failed(reason))),
            range_problem: false,
        }
    }
}

/// What a refusal message names: who to share with, which spreadsheet and tab.
pub struct Target<'a> {
    pub email: &'a str,
    pub spreadsheet_id: &'a str,
    pub sheet: &'a str,
}

/// The Sheets API of one spreadsheet.
pub struct Api {
    pub client: reqwest::Client,
    /// `api_base`, e.g. `https://sheets.googleapis.com`.
    pub base: Url,
    pub spreadsheet_id: String,
}

impl Api {
    /// `{base}/v4/spreadsheets/{id}` followed by `segments`, each percent-encoded.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, Refused> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| Refused::failed("api_base cannot take a path"))?
            .pop_if_empty()
            .extend(["v4", "spreadsheets", self.spreadsheet_id.as_str()])
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends one request with a bearer token; on a 401, gets a fresh token and sends it once
    /// more. Each send is a call `pace` counts. A 2xx gives its body; anything else is
    /// classified for the delivery.
    pub async fn call(
        &self,
        tokens: &Tokens,
        target: &Target<'_>,
        pace: &dyn Pace,
        method: Method,
        url: Url,
        body: Option<String>,
    ) -> Result<String, Refused> {
        let mut token = tokens.token().await.map_err(Refused::retry)?;
        let mut refreshed = false;
        loop {
            let call = pace.call().await;
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose())
                .timeout(REQUEST_TIMEOUT);
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    return Err(Refused {
                        attempt: Box::new(Attempt::from_transport_error(e)),
                        range_problem: false,
                    });
                }
            };
            let status = response.status().as_u16();
            if status == 401 && !refreshed {
                // Revoked or expired early: one fresh token, one more try.
                drop(call);
                refreshed = true;
                token = tokens.fresh_token().await.map_err(Refused::retry)?;
                continue;
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let text = crate::http::read_limited(response, BODY_LIMIT)
                .await
                .unwrap_or_default();
            drop(call);
            if (200..300).contains(&status) {
                return Ok(text);
            }
            return Err(classify(status, retry_after.as_deref(), &text, target));
        }
    }
}

/// What an error answer means: the shared status table, with Google's own message and what the
/// operator should do about it.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    body: &str,
    target: &Target<'_>,
) -> Refused {
    let mut attempt = Attempt::from_status(status, retry_after, outcome::excerpt(body));
    let google = serde_json::from_str::<ErrorBody>(body)
        .ok()
        .map(|b| b.error);
    let message = google.as_ref().map(|g| g.message.as_str()).unwrap_or("");
    let said = if message.is_empty() {
        String::new()
    } else {
        format!(": Google says {message:?}")
    };
    let name = attempt.outcome.reason().unwrap_or_default().to_string();
    let lower = message.to_lowercase();
    let exhausted = google
        .as_ref()
        .is_some_and(|g| g.status == "RESOURCE_EXHAUSTED");
    let range_problem = status == 400 && lower.contains("range");
    attempt.outcome = match status {
        // Some Google APIs still say "quota" with a 403: that is a wait, not a refusal.
        403 if exhausted || lower.contains("quota") || lower.contains("rate limit") => {
            Outcome::Retry {
                after: retry_after.and_then(outcome::parse_retry_after),
                reason: format!("{name}{said}"),
            }
        }
        403 if lower.contains("has not been used") || lower.contains("is disabled") => {
            Outcome::failed(format!(
                "{name}{said}. Enable the Google Sheets API in the Google Cloud project of the service account {}",
                target.email
            ))
        }
        403 => Outcome::failed(format!(
            "{name}{said}. Share the spreadsheet with the service account {} (as an Editor)",
            target.email
        )),
        404 => Outcome::failed(format!(
            "{name}{said} (spreadsheet {:?}: check spreadsheet_id)",
            target.spreadsheet_id
        )),
        401 => Outcome::failed(format!(
            "{name}{said} (even with a fresh token for {})",
            target.email
        )),
        400 if lower.contains("unable to parse range") => Outcome::failed(format!(
            "{name}{said} (is there a tab named {:?}?)",
            target.sheet
        )),
        _ => match attempt.outcome {
            Outcome::Retry { after, .. } => Outcome::Retry {
                after,
                reason: format!("{name}{said}"),
            },
            Outcome::Failed { .. } => Outcome::failed(format!("{name}{said}")),
            other @ (Outcome::Delivered | Outcome::Unsent) => other,
        },
    };
    Refused {
        attempt: Box::new(attempt),
        range_problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Target<'static> = Target {
        email: "relay@proj.iam.gserviceaccount.com",
        spreadsheet_id: "abc",
        sheet: "Participations",
    };

    fn error(code: u16, status: &str, message: &str) -> String {
        serde_json::json!({"error": {"code": code, "status": status, "message": message}})
            .to_string()
    }

    #[test]
    fn a_403_tells_who_to_share_the_sheet_with() {
        let body = error(
            403,
            "PERMISSION_DENIED",
            "The caller does not have permission",
        );
        let r = classify(403, None, &body, &TARGET);
        let Outcome::Failed { reason } = &r.attempt.outcome else {
            panic!("{:?}", r.attempt)
        };
        assert_eq!(
            reason,
            "HTTP 403 Forbidden: Google says \"The caller does not have permission\". Share the spreadsheet with the service account relay@proj.iam.gserviceaccount.com (as an Editor)"
        );
        assert_eq!(r.attempt.status, Some(403));
        assert_eq!(r.attempt.response.as_deref(), Some(body.as_str()));
    }

    #[test]
    fn a_disabled_api_is_not_a_sharing_problem() {
        let body = error(
            403,
            "PERMISSION_DENIED",
            "Google Sheets API has not been used in project 123 before or it is disabled.",
        );
        let reason = classify(403, None, &body, &TARGET).attempt.outcome;
        assert!(
            matches!(&reason, Outcome::Failed { reason } if reason.contains("Enable the Google Sheets API")),
            "{reason:?}"
        );
    }

    #[test]
    fn throttling_and_server_errors_retry_with_retry_after() {
        let r = classify(
            429,
            Some("7"),
            &error(429, "RESOURCE_EXHAUSTED", "Quota exceeded"),
            &TARGET,
        );
        assert_eq!(
            r.attempt.outcome,
            Outcome::Retry {
                after: Some(Duration::from_secs(7)),
                reason: "HTTP 429 Too Many Requests: Google says \"Quota exceeded\"".into()
            }
        );
        let r = classify(503, None, "<html>", &TARGET);
        assert_eq!(
            r.attempt.outcome,
            Outcome::retry("HTTP 503 Service Unavailable")
        );
        let r = classify(
            403,
            None,
            &error(
                403,
                "PERMISSION_DENIED",
                "Quota exceeded for quota metric 'Write requests'",
            ),
            &TARGET,
        );
        assert!(matches!(r.attempt.outcome, Outcome::Retry { .. }));
    }

    #[test]
    fn a_bad_range_is_dead_and_makes_the_header_stale() {
        let r = classify(
            400,
            None,
            &error(400, "INVALID_ARGUMENT", "Unable to parse range: 'Nope'!A1"),
            &TARGET,
        );
        assert!(r.range_problem);
        assert!(
            matches!(&r.attempt.outcome, Outcome::Failed { reason } if reason.contains("is there a tab named \"Participations\"")),
            "{:?}",
            r.attempt.outcome
        );
        let r = classify(
            400,
            None,
            &error(400, "INVALID_ARGUMENT", "Invalid value at 'data.values'"),
            &TARGET,
        );
        assert!(!r.range_problem);
        assert_eq!(
            r.attempt.outcome,
            Outcome::failed("HTTP 400 Bad Request: Google says \"Invalid value at 'data.values'\"")
        );
        let r = classify(
            404,
            None,
            &error(404, "NOT_FOUND", "Requested entity was not found."),
            &TARGET,
        );
        assert!(
            matches!(&r.attempt.outcome, Outcome::Failed { reason } if reason.contains("Requested entity was not found.") && reason.contains("\"abc\"")),
            "{:?}",
            r.attempt.outcome
        );
    }

    #[test]
    fn urls_encode_the_range() {
        let api = Api {
            client: crate::http::client().unwrap(),
            base: Url::parse("http://127.0.0.1:9/proxy/").unwrap(),
            spreadsheet_id: "abc".into(),
        };
        let url = api
            .url(
                &["values", "'My tab/2'!A1:append"],
                &[("valueInputOption", "RAW")],
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/proxy/v4/spreadsheets/abc/values/'My%20tab%2F2'!A1:append?valueInputOption=RAW"
        );
    }
}
