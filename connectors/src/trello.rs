//! `type = "trello"`: one card per delivery on a list, never two.
//!
//! A delivery is a few calls: create the card, set each custom field, attach each file. What is
//! done is saved with the delivery ([`plan::Progress`]), so a retry repeats only what is missing.
//! Key and token travel in the `Authorization` header, never in a URL.

mod config;
pub mod plan;

use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde_json::{Value, json};

use crate::outcome::cut;
use crate::pace::{Pace, Unlimited};
use crate::{Attempt, Connector, ConnectorError, Described, Outcome, Record};
use config::is_id;
pub use config::{
    CUSTOM_FIELD_PREFIX, CustomField, CustomFieldType, DEFAULT_API_BASE, DESC, DUE, NAME, Position,
    TrelloConfig,
};
use plan::{Plan, Progress};

/// Trello allows 100 calls per 10 s per token; this leaves room for other tools on it.
pub const CALLS_PER_10S: u32 = 90;
/// The longest one call may take.
const CALL_TIMEOUT: Duration = crate::http::DEFAULT_TIMEOUT;
/// The longest one delivery may take, all calls together. Leases are sized from it; steps left
/// when it runs out continue on the next attempt.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// A step is not started with less time than this left.
const MIN_STEP_TIME: Duration = Duration::from_secs(2);
/// How far a card id's time (Trello's clock) may stray from this machine's clock.
const CLOCK_SLACK_SECS: i64 = 5;
/// The most of an answer read: a list's cards with long descriptions stay well under it.
const ANSWER_LIMIT: usize = 8 << 20;

/// A ready Trello destination.
pub struct Trello {
    config: TrelloConfig,
    /// `api_base` without a trailing slash.
    base: String,
    /// `OAuth oauth_consumer_key="…", oauth_token="…"`, marked sensitive.
    auth: HeaderValue,
    client: reqwest::Client,
}

/// One step of a delivery, for messages.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    FindList,
    FindBoard,
    CreateCard,
    LookForCard,
    CustomField { card: &'a str, field: &'a str },
    Attach { card: &'a str },
}

impl Step<'_> {
    fn doing(&self) -> String {
        match self {
            Step::FindList => "reading the list".into(),
            Step::FindBoard => "reading the board".into(),
            Step::CreateCard => "creating the card".into(),
            Step::LookForCard => "looking for a card created by an unanswered attempt".into(),
            Step::CustomField { card, field } => {
                format!("setting custom field {field} on card {card}")
            }
            Step::Attach { card } => format!("attaching a file to card {card}"),
        }
    }

    fn not_found(&self, list: &str) -> String {
        match self {
            Step::FindList | Step::CreateCard | Step::LookForCard => format!(
                "list {list} not found: it was deleted, or the token's member cannot see its board"
            ),
            Step::FindBoard => "the list's board was not found".into(),
            Step::CustomField { card, field } => format!(
                "card {card} or custom field {field} not found: the card was deleted, or the field is not on its board"
            ),
            Step::Attach { card } => format!("card {card} not found: it was deleted"),
        }
    }
}

/// How a card creation ended.
enum Created {
    Card {
        id: String,
        url: Option<String>,
    },
    /// Trello said no: there is no card.
    Refused(Attempt),
    /// No clear answer: there may be a card.
    Unknown(Attempt),
}

impl Trello {
    pub fn new(config: TrelloConfig, client: reqwest::Client) -> Result<Self, ConnectorError> {
        let mut auth = HeaderValue::from_str(&format!(
            "OAuth oauth_consumer_key=\"{}\", oauth_token=\"{}\"",
            config.key.expose(),
            config.token.expose()
        ))
        .map_err(|_| {
            ConnectorError::Config("key or token holds characters a header cannot carry".into())
        })?;
        auth.set_sensitive(true);
        let base = config.api_base.trim_end_matches('/').to_string();
        Ok(Trello {
            config,
            base,
            auth,
            client,
        })
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        time_left: Duration,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "application/json")
            .timeout(time_left.min(CALL_TIMEOUT))
    }

    /// Sends a request, as one call `pace` counts; a 2xx gives its body, anything else the
    /// classified attempt.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        step: Step<'_>,
        pace: &dyn Pace,
    ) -> Result<(u16, String), Attempt> {
        let _call = pace.call().await;
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(with_context(Attempt::from_transport_error(e), step)),
        };
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let attempt = Attempt::from_response(response).await;
            return Err(self.explain(attempt, step));
        }
        match crate::http::read_limited(response, ANSWER_LIMIT).await {
            Ok(body) => Ok((status, body)),
            Err(e) => {
                let mut attempt = with_context(Attempt::from_transport_error(e), step);
                attempt.status = Some(status);
                Err(attempt)
            }
        }
    }

    /// Trello's answers in words: 401 and 404 say which thing is wrong, 400 carries Trello's
    /// text; everything else follows the shared table.
    fn explain(&self, mut attempt: Attempt, step: Step<'_>) -> Attempt {
        let said = attempt
            .response
            .as_deref()
            .map(|t| cut(t.trim(), 300).to_string())
            .filter(|t| !t.is_empty());
        let with_said = |text: String| match &said {
            Some(s) => format!("{text} (Trello: {s})"),
            None => text,
        };
        attempt.outcome = match (attempt.status, &attempt.outcome) {
            (Some(401), _) => Outcome::failed(with_said(format!(
                "HTTP 401: Trello rejected the key or token: check `key` and `token` ({})",
                step.doing()
            ))),
            (Some(404), _) => Outcome::failed(with_said(format!(
                "HTTP 404: {}",
                step.not_found(&self.config.list_id)
            ))),
            (Some(400), _) => Outcome::failed(format!(
                "HTTP 400 from Trello while {}: {}",
                step.doing(),
                said.as_deref().unwrap_or("no reason given")
            )),
            (Some(_), Outcome::Failed { reason }) => {
                Outcome::failed(with_said(format!("{reason} while {}", step.doing())))
            }
            _ => return with_context(attempt, step),
        };
        attempt
    }

    async fn create_card(&self, plan: &Plan, time_left: Duration, pace: &dyn Pace) -> Created {
        let request = self
            .request(reqwest::Method::POST, "/1/cards", time_left)
            .json(&plan.card);
        let step = Step::CreateCard;
        let body = match self.send(request, step, pace).await {
            Ok((_, body)) => body,
            // Only an answer that says no proves there is no card.
            Err(a) if refused(&a) => return Created::Refused(a),
            Err(a) => return Created::Unknown(a),
        };
        let card: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        match card.get("id").and_then(Value::as_str) {
            Some(id) if is_id(id) => Created::Card {
                id: id.to_string(),
                url: card
                    .get("shortUrl")
                    .or_else(|| card.get("url"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            },
            _ => Created::Unknown(Attempt::new(Outcome::retry(
                "Trello accepted the card but its answer had no card id",
            ))),
        }
    }

    /// After a creation that got no clear answer, or an attempt whose result was never recorded:
    /// the card on the list with the same name and description made since the first such send,
    /// if exactly one is. Two or more mean
    /// other participations render the same text; adopting the wrong one would be worse than a
    /// second card, so none is taken.
    async fn find_card(
        &self,
        plan: &Plan,
        since: i64,
        time_left: Duration,
        pace: &dyn Pace,
    ) -> Result<Option<(String, Option<String>)>, Attempt> {
        let path = format!(
            "/1/lists/{}/cards?fields=name,desc,shortUrl",
            self.config.list_id
        );
        let request = self.request(reqwest::Method::GET, &path, time_left);
        let (status, body) = self.send(request, Step::LookForCard, pace).await?;
        // An answer that cannot be read (cut short, not JSON) says nothing about the card:
        // taking it for "no card" would make a second one.
        let cards: Vec<Value> = serde_json::from_str(&body).map_err(|_| {
            let mut attempt = Attempt::new(Outcome::retry(
                "cannot tell whether an unanswered attempt made the card: Trello's list of cards could not be read",
            ));
            attempt.status = Some(status);
            attempt
        })?;
        // Anything since the first unanswered send: a card made by any later one counts too.
        let window =
            (since - CLOCK_SLACK_SECS)..=(jiff::Timestamp::now().as_second() + CLOCK_SLACK_SECS);
        let text = |c: &Value, k: &str| {
            c.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let found: Vec<&Value> = cards
            .iter()
            .filter(|c| {
                let id = text(c, "id");
                is_id(&id)
                    && text(c, "name") == plan.name
                    && text(c, "desc") == plan.desc
                    && plan::id_created_at(&id).is_some_and(|t| window.contains(&t))
            })
            .collect();
        match found.as_slice() {
            [card] => Ok(Some((
                text(card, "id"),
                Some(text(card, "shortUrl")).filter(|u| !u.is_empty()),
            ))),
            [] => Ok(None),
            _ => {
                tracing::warn!(
                    candidates = found.len(),
                    "several cards could be the one an unanswered attempt made; making a new one"
                );
                Ok(None)
            }
        }
    }

    async fn deliver_one(&self, record: &Record, pace: &dyn Pace) -> Attempt {
        let plan = match plan::plan(&self.config, record) {
            Ok(plan) => plan,
            Err(reason) => return Attempt::new(Outcome::failed(reason)),
        };
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        let mut progress = Progress::from_state(record.state.as_ref());
        // An attempt whose result was never recorded (a crash, a stop) may have made the card.
        if progress.card.is_none()
            && let Some(ms) = record.in_doubt_since
        {
            let since = ms.div_euclid(1000);
            progress.unconfirmed_since =
                Some(progress.unconfirmed_since.map_or(since, |s| s.min(since)));
        }
        let mut attempt = self.run(&plan, &mut progress, deadline, pace).await;
        attempt.state = progress.to_state();
        attempt.warnings.extend(plan.warnings);
        attempt
    }

    /// Does the steps `progress` lacks, noting each as it is done.
    async fn run(
        &self,
        plan: &Plan,
        progress: &mut Progress,
        deadline: Instant,
        pace: &dyn Pace,
    ) -> Attempt {
        let time_left = || {
            let left = deadline.saturating_duration_since(Instant::now());
            (left >= MIN_STEP_TIME).then_some(left)
        };
        let out_of_time = || {
            Attempt::new(Outcome::retry(
                "ran out of time; the remaining steps continue on the next attempt",
            ))
        };
        let mut status = None;

        if progress.card.is_none()
            && let Some(since) = progress.unconfirmed_since
        {
            let Some(left) = time_left() else {
                return out_of_time();
            };
            match self.find_card(plan, since, left, pace).await {
                Ok(Some((id, url))) => {
                    tracing::info!(card = %id, "found the card an unanswered attempt created");
                    progress.card = Some(id);
                    progress.url = url;
                    progress.unconfirmed_since = None;
                }
                Ok(None) => {}
                Err(a) => return a,
            }
        }
        let card = match progress.card.clone() {
            Some(card) => card,
            None => {
                let Some(left) = time_left() else {
                    return out_of_time();
                };
                let sent_at = jiff::Timestamp::now().as_second();
                match self.create_card(plan, left, pace).await {
                    Created::Card { id, url } => {
                        progress.card = Some(id.clone());
                        progress.url = url;
                        progress.unconfirmed_since = None;
                        status = Some(200);
                        id
                    }
                    Created::Refused(a) => return a,
                    Created::Unknown(a) => {
                        progress.unconfirmed_since.get_or_insert(sent_at);
                        return a;
                    }
                }
            }
        };

        for (field, body) in &plan.custom_fields {
            if progress.custom_fields.contains(field) {
                continue;
            }
            let Some(left) = time_left() else {
                return out_of_time();
            };
            let path = format!("/1/cards/{card}/customField/{field}/item");
            let request = self.request(reqwest::Method::PUT, &path, left).json(body);
            match self
                .send(request, Step::CustomField { card: &card, field }, pace)
                .await
            {
                Ok((s, _)) => {
                    status = Some(s);
                    progress.custom_fields.push(field.clone());
                }
                Err(a) => return a,
            }
        }

        for file in &plan.attachments {
            if progress.attachments.contains(&file.url) {
                continue;
            }
            let Some(left) = time_left() else {
                return out_of_time();
            };
            let path = format!("/1/cards/{card}/attachments");
            let request = self
                .request(reqwest::Method::POST, &path, left)
                .json(&file.body());
            match self.send(request, Step::Attach { card: &card }, pace).await {
                Ok((s, _)) => {
                    status = Some(s);
                    progress.attachments.push(file.url.clone());
                }
                Err(a) => return a,
            }
        }

        let mut done = Attempt::delivered();
        done.status = status;
        done.response = Some(format!(
            "card {card}{}: {} custom field{}, {} attachment{}",
            progress
                .url
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default(),
            plan.custom_fields.len(),
            if plan.custom_fields.len() == 1 {
                ""
            } else {
                "s"
            },
            plan.attachments.len(),
            if plan.attachments.len() == 1 { "" } else { "s" },
        ));
        done
    }

    async fn get_json(&self, path: &str, step: Step<'_>) -> Result<Value, ConnectorError> {
        let request = self.request(reqwest::Method::GET, path, CALL_TIMEOUT);
        let (_, body) = self.send(request, step, &Unlimited).await.map_err(|a| {
            ConnectorError::Check(a.outcome.reason().unwrap_or("failed").to_string())
        })?;
        serde_json::from_str(&body).map_err(|_| {
            ConnectorError::Check(format!(
                "Trello answered {} with something other than JSON",
                step.doing()
            ))
        })
    }
}

/// Whether an answer proves nothing was created: Trello answered, and not with a 5xx or a
/// time-out of its own.
fn refused(attempt: &Attempt) -> bool {
    matches!(attempt.status, Some(s) if (400..500).contains(&s) && s != 408)
}

/// Adds what was being done to a retry's reason.
fn with_context(mut attempt: Attempt, step: Step<'_>) -> Attempt {
    attempt.outcome = match attempt.outcome {
        Outcome::Retry { after, reason } => Outcome::Retry {
            after,
            reason: format!("{reason} while {}", step.doing()),
        },
        other => other,
    };
    attempt
}

#[async_trait::async_trait]
impl Connector for Trello {
    fn timeout(&self) -> Duration {
        DELIVERY_TIMEOUT
    }

    async fn deliver(&self, records: &[Record], pace: &dyn Pace) -> Vec<Attempt> {
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            out.push(self.deliver_one(record, pace).await);
        }
        out
    }

    /// `GET /1/lists/{id}` proves the list exists and the token sees it; the board's name
    /// tells a person it is the right one.
    async fn check(&self) -> Result<String, ConnectorError> {
        let list_id = &self.config.list_id;
        let list = self
            .get_json(
                &format!("/1/lists/{list_id}?fields=name,closed,idBoard"),
                Step::FindList,
            )
            .await?;
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let board_id = text(&list, "idBoard");
        let board = if is_id(&board_id) {
            self.get_json(
                &format!("/1/boards/{board_id}?fields=name,url"),
                Step::FindBoard,
            )
            .await?
        } else {
            Value::Null
        };
        let mut out = format!(
            "list {:?} ({list_id}) on board {:?}",
            text(&list, "name"),
            text(&board, "name")
        );
        let url = text(&board, "url");
        if !url.is_empty() {
            out.push_str(&format!(" ({url})"));
        }
        if list.get("closed").and_then(Value::as_bool) == Some(true) {
            out.push_str("\nwarning: the list is archived; new cards will not show on the board");
        }
        Ok(out)
    }

    fn describe(&self, record: &Record) -> Described {
        let headers = vec![
            (
                "authorization".to_string(),
                "OAuth oauth_consumer_key=\"***\", oauth_token=\"***\"".to_string(),
            ),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        let plan = match plan::plan(&self.config, record) {
            Ok(plan) => plan,
            Err(reason) => {
                return Described {
                    action: format!("nothing: the delivery would be dead: {reason}"),
                    headers,
                    body: json!({ "error": reason }).to_string(),
                };
            }
        };
        let mut action = format!("POST {}/1/cards", self.base);
        if !plan.custom_fields.is_empty() {
            action.push_str(&format!(
                ", then PUT /1/cards/{{card}}/customField/{{id}}/item × {}",
                plan.custom_fields.len()
            ));
        }
        if !plan.attachments.is_empty() {
            action.push_str(&format!(
                ", then POST /1/cards/{{card}}/attachments × {}",
                plan.attachments.len()
            ));
        }
        let custom_fields: serde_json::Map<String, Value> =
            plan.custom_fields.iter().cloned().collect();
        let mut body = json!({ "card": plan.card });
        if !custom_fields.is_empty() {
            body["custom_fields"] = Value::Object(custom_fields);
        }
        if !plan.attachments.is_empty() {
            body["attachments"] = plan.attachments.iter().map(plan::File::body).collect();
        }
        if !plan.warnings.is_empty() {
            body["warnings"] = json!(plan.warnings);
        }
        Described {
            action,
            headers,
            body: body.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DestinationConfig, Secret};

    fn config() -> TrelloConfig {
        TrelloConfig::sample()
    }

    #[test]
    fn the_rate_key_is_per_token_and_hides_it() {
        let a = config();
        let mut b = config();
        b.list_id = "list2".into();
        let mut c = config();
        c.token = Secret::new("tok789");
        let key = a.rate_key().unwrap();
        assert_eq!(Some(key.clone()), b.rate_key());
        assert_ne!(Some(key.clone()), c.rate_key());
        assert!(!key.contains("tok456"), "{key}");
    }

    #[test]
    fn the_default_rate_is_under_trellos_quota() {
        assert_eq!(config().default_rate_limit().unwrap().to_string(), "90/10s");
    }

    #[test]
    fn only_a_4xx_proves_no_card_was_made() {
        let at = |s: u16| Attempt::from_status(s, None, String::new());
        assert!(refused(&at(400)));
        assert!(refused(&at(429)));
        assert!(!refused(&at(408)));
        assert!(!refused(&at(502)));
        assert!(!refused(&Attempt::new(Outcome::retry("timed out"))));
    }
}
