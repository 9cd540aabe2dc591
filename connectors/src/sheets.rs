//! `type = "google_sheets"`: appends one row per record under the matching header cells, many
//! records per `values.append`, within Google's per-user write quota.
//!
//! - [`config`]: the destination's keys and their offline checks.
//! - [`layout`]: which column each field goes to, Google's cell limit, formula prefixing, what
//!   `check` says about it (pure).
//! - `batch`: records → append calls of at most 500 rows and 2 MB.
//! - `api`: the Sheets API v4 calls, typed; what Google's answers mean for a delivery.
//! - `auth`: service-account tokens through yup-oauth2.

mod api;
mod auth;
mod batch;
pub mod config;
pub mod layout;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Url};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::pace::{Pace, Unlimited};
use crate::units::Rate;
use crate::{Attempt, Connector, ConnectorError, Described, Locks, Outcome, Record};
use api::{Api, Refused, Target};
use auth::{KeyStamp, Tokens};
pub use config::{Columns, DEFAULT_API_BASE, SheetsConfig, ValueInput};
use layout::{a1, column_letter};

/// `values.append` takes at most this many rows per call from us (Google's limit is the size).
pub const MAX_ROWS: usize = 500;
/// Google recommends request bodies of at most 2 MB; a batch larger than that is split.
pub const MAX_BODY: usize = 2_000_000;
/// How long a lane waits for a burst to gather before the first append.
pub const LINGER: Duration = Duration::from_secs(2);
/// Write calls per minute when the config sets no `rate_limit`: under Google's 60 per user.
pub const DEFAULT_RATE: Rate = Rate {
    count: 50,
    per: Duration::from_secs(60),
};
/// Row 1 is read again after this long, so columns someone moved are followed.
pub const HEADER_TTL: Duration = Duration::from_secs(600);
/// The longest one `deliver` may take: a token, a header read and write, and the appends.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(90);

/// Row 1 as last read (or written).
struct CachedHeader {
    cells: Vec<String>,
    read_at: Instant,
}

/// A ready Sheets destination. The key is read and the token fetched at first use, so building
/// one costs nothing and needs no network.
pub struct Sheets {
    config: SheetsConfig,
    /// The destination's field names, in config order (for `check`).
    fields: Vec<String>,
    api: Api,
    /// The key as last read, and the file's stamp then.
    tokens: Mutex<Option<(Arc<Tokens>, Option<KeyStamp>)>>,
    /// Held while row 1 is read or extended, so two batches never add the same column.
    header: Mutex<Option<CachedHeader>>,
    /// Held across instances while row 1 is extended, when instances share a store: see
    /// [`Sheets::columns`].
    locks: Option<Arc<dyn Locks>>,
}

impl Sheets {
    pub fn new(config: SheetsConfig, client: reqwest::Client) -> Result<Self, ConnectorError> {
        let base = Url::parse(&config.api_base)
            .map_err(|e| ConnectorError::Config(format!("api_base: {e}")))?;
        if let Err(e) = auth::read_email(&config.credentials) {
            // Not fatal: a key mounted later is picked up by the next attempt.
            tracing::warn!(sheet = %config.sheet, error = %e, "google_sheets: deliveries will be retried until the key can be read");
        }
        Ok(Sheets {
            api: Api {
                client,
                base,
                spreadsheet_id: config.spreadsheet_id.clone(),
            },
            config,
            fields: Vec::new(),
            tokens: Mutex::new(None),
            header: Mutex::new(None),
            locks: None,
        })
    }

    /// Extends row 1 under a lock every instance sharing the store honours.
    pub fn with_locks(mut self, locks: Arc<dyn Locks>) -> Self {
        self.locks = Some(locks);
        self
    }

    /// The destination's field names, in config order; `check` reports where each one goes.
    pub fn with_fields(mut self, fields: Vec<String>) -> Self {
        self.fields = fields;
        self
    }

    /// The key's tokens. The file is read again when it changed, or when Google refused a
    /// token with it, so a revoked key replaced at the same path resumes delivery without a
    /// restart.
    async fn tokens(&self) -> Result<Arc<Tokens>, String> {
        let path = &self.config.credentials;
        let stamp = KeyStamp::of(path);
        let mut cached = self.tokens.lock().await;
        if let Some((tokens, read)) = cached.as_ref()
            && !tokens.has_failed()
            && *read == stamp
        {
            return Ok(tokens.clone());
        }
        let reread = cached.is_some();
        let tokens = Arc::new(Tokens::load(path).await?);
        if reread {
            tracing::info!(sheet = %self.config.sheet, "google_sheets: read the service-account key again");
        }
        *cached = Some((tokens.clone(), stamp));
        Ok(tokens)
    }

    fn target<'a>(&'a self, tokens: &'a Tokens) -> Target<'a> {
        Target {
            email: &tokens.email,
            spreadsheet_id: &self.config.spreadsheet_id,
            sheet: &self.config.sheet,
        }
    }

    fn value_input(&self) -> &'static str {
        match self.config.value_input {
            ValueInput::Raw => "RAW",
            ValueInput::UserEntered => "USER_ENTERED",
        }
    }

    /// `values.get` of row 1, as text.
    async fn read_header(&self, tokens: &Tokens, pace: &dyn Pace) -> Result<Vec<String>, Refused> {
        let url = self.api.url(
            &["values", &a1(&self.config.sheet, "1:1")],
            &[("majorDimension", "ROWS")],
        )?;
        let text = self
            .api
            .call(tokens, &self.target(tokens), pace, Method::GET, url, None)
            .await?;
        let range: api::ValueRange = serde_json::from_str(&text)
            .map_err(|e| Refused::retry(format!("unexpected answer to values.get: {e}")))?;
        Ok(range
            .values
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            })
            .collect())
    }

    /// `values.update` of row 1 from column `first`: header cells are always written RAW.
    async fn write_header(
        &self,
        tokens: &Tokens,
        pace: &dyn Pace,
        first: usize,
        names: &[String],
    ) -> Result<(), Refused> {
        let last = first + names.len().saturating_sub(1);
        let range = a1(
            &self.config.sheet,
            &format!("{}1:{}1", column_letter(first), column_letter(last)),
        );
        let url = self
            .api
            .url(&["values", &range], &[("valueInputOption", "RAW")])?;
        let body = api::ValueRange {
            range: Some(range),
            major_dimension: Some("ROWS".into()),
            values: vec![
                names
                    .iter()
                    .cloned()
                    .map(serde_json::Value::String)
                    .collect(),
            ],
        };
        let body = serde_json::to_string(&body)
            .map_err(|e| Refused::failed(format!("cannot encode the header row: {e}")))?;
        self.api
            .call(
                tokens,
                &self.target(tokens),
                pace,
                Method::PUT,
                url,
                Some(body),
            )
            .await?;
        Ok(())
    }

    /// Each header cell's column for `fields`. Row 1 is read when the copy is older than
    /// [`HEADER_TTL`], and also before acting on a copy that lacks a field (someone may have added
    /// the column since); the header cells the fields need are written first.
    ///
    /// Within one process the `header` mutex keeps two batches from adding the same column.
    /// Instances sharing a store (PostgreSQL) extend row 1 under a lock they all honour, and
    /// read row 1 again once they hold it: the cells another instance added meanwhile are then
    /// seen, so none is added twice and none is written over. (Reading again after writing
    /// could not do that: Sheets has no conditional write, so two instances could each write
    /// the same free cell, each read its own value back, and one name would be lost.)
    async fn columns(
        &self,
        tokens: &Tokens,
        pace: &dyn Pace,
        fields: &[&str],
    ) -> Result<HashMap<String, usize>, Refused> {
        let mut cache = self.header.lock().await;
        let mut cached = cache
            .take()
            .filter(|c| c.read_at.elapsed() < HEADER_TTL)
            .map(|c| (c.cells, c.read_at));
        let (plan, read_at) = loop {
            let (header, read_at, fresh) = match cached.take() {
                Some((cells, at)) => (cells, at, false),
                None => (self.read_header(tokens, pace).await?, Instant::now(), true),
            };
            let plan = layout::plan_header(&header, fields, self.config.add_missing_columns);
            if fresh || (plan.write.is_none() && plan.missing.is_empty()) {
                break (plan, read_at);
            }
        };
        let (plan, read_at) = match (&plan.write, &self.locks) {
            (Some(_), Some(locks)) => {
                let key = format!(
                    "google-sheets-header:{}:{}",
                    self.config.spreadsheet_id, self.config.sheet
                );
                let held = locks.lock(&key).await.map_err(|e| {
                    Refused::retry(format!("cannot take the header lock instances share: {e}"))
                })?;
                // Row 1 as it is now that no other instance is extending it.
                let header = self.read_header(tokens, pace).await?;
                let read_at = Instant::now();
                let plan = layout::plan_header(&header, fields, self.config.add_missing_columns);
                let written = self.write_planned(tokens, pace, &plan).await;
                held.release().await;
                written?;
                (plan, read_at)
            }
            _ => {
                self.write_planned(tokens, pace, &plan).await?;
                (plan, read_at)
            }
        };
        let columns = layout::column_map(&plan.header);
        *cache = Some(CachedHeader {
            cells: plan.header,
            read_at,
        });
        Ok(columns)
    }

    /// Writes the header cells `plan` adds, if any. On failure nothing is cached: row 1 is read
    /// again next time.
    async fn write_planned(
        &self,
        tokens: &Tokens,
        pace: &dyn Pace,
        plan: &layout::HeaderPlan,
    ) -> Result<(), Refused> {
        if let Some((first, names)) = &plan.write {
            self.write_header(tokens, pace, *first, names).await?;
            tracing::info!(sheet = %self.config.sheet, first_column = %column_letter(*first), added = names.len(), "google_sheets: wrote header cells");
        }
        Ok(())
    }

    /// Drops the copy of row 1 (Google reported a range problem).
    async fn forget_header(&self) {
        *self.header.lock().await = None;
    }

    /// One `values.append` of `rows` after the last row of the tab's table.
    async fn append(
        &self,
        tokens: &Tokens,
        pace: &dyn Pace,
        rows: &[&[String]],
    ) -> Result<String, Refused> {
        let range = a1(&self.config.sheet, "A1");
        let url = self.api.url(
            &["values", &format!("{range}:append")],
            &[
                ("valueInputOption", self.value_input()),
                ("insertDataOption", "INSERT_ROWS"),
            ],
        )?;
        let body = api::AppendBody {
            major_dimension: "ROWS",
            values: rows,
        };
        let body = serde_json::to_string(&body)
            .map_err(|e| Refused::failed(format!("cannot encode the rows: {e}")))?;
        self.api
            .call(
                tokens,
                &self.target(tokens),
                pace,
                Method::POST,
                url,
                Some(body),
            )
            .await
    }

    fn missing_message(&self, missing: &[String]) -> String {
        format!(
            "no header cell for field{} {} in row 1 of tab {:?}, and add_missing_columns = false: add {} to the sheet, or set add_missing_columns = true",
            if missing.len() == 1 { "" } else { "s" },
            missing
                .iter()
                .map(|m| format!("{m:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.config.sheet,
            if missing.len() == 1 { "it" } else { "them" },
        )
    }

    fn action(&self) -> String {
        format!(
            "append to tab {:?} of spreadsheet {} (valueInputOption={})",
            self.config.sheet,
            self.config.spreadsheet_id,
            self.value_input()
        )
    }
}

#[async_trait::async_trait]
impl Connector for Sheets {
    fn max_batch(&self) -> usize {
        MAX_ROWS
    }

    fn linger(&self) -> Duration {
        LINGER
    }

    fn timeout(&self) -> Duration {
        DELIVER_TIMEOUT
    }

    async fn deliver(&self, records: &[Record], pace: &dyn Pace) -> Vec<Attempt> {
        if records.is_empty() {
            return Vec::new();
        }
        let tokens = match self.tokens().await {
            Ok(t) => t,
            Err(reason) => return vec![Attempt::new(Outcome::retry(reason)); records.len()],
        };
        let tokens = tokens.as_ref();
        let input = self.config.value_input;
        let mut out: Vec<Option<Attempt>> = vec![None; records.len()];
        let mut rows: Vec<(usize, layout::Row)> = Vec::with_capacity(records.len());
        match self.config.columns {
            Columns::Order => {
                for (i, r) in records.iter().enumerate() {
                    rows.push((i, layout::row_in_order(&r.fields, input)));
                }
            }
            Columns::Header => {
                let columns = match self
                    .columns(tokens, pace, &batch::field_names(records))
                    .await
                {
                    Ok(c) => c,
                    Err(refused) => {
                        if refused.range_problem {
                            self.forget_header().await;
                        }
                        return vec![*refused.attempt; records.len()];
                    }
                };
                for (i, r) in records.iter().enumerate() {
                    match layout::row_by_header(&r.fields, &columns, input) {
                        Ok(row) => rows.push((i, row)),
                        Err(missing) => {
                            out[i] = Some(Attempt::new(Outcome::failed(
                                self.missing_message(&missing),
                            )));
                        }
                    }
                }
            }
        }
        let mut stopped = false;
        for chunk in batch::chunks(&rows) {
            let attempt = if stopped {
                // After a refusal the rest would likely be refused too: no more calls. Only the
                // refused chunk's records take its outcome; these stay due, unattempted.
                Attempt::new(Outcome::Unsent)
            } else {
                let cells: Vec<&[String]> = chunk.iter().map(|(_, r)| r.cells.as_slice()).collect();
                match self.append(tokens, pace, &cells).await {
                    Ok(body) => {
                        let mut a = Attempt::from_status(200, None, crate::outcome::excerpt(&body));
                        a.warnings = batch::placement_warnings(&body, chunk.len());
                        a
                    }
                    Err(refused) => {
                        if refused.range_problem {
                            self.forget_header().await;
                        }
                        stopped = true;
                        *refused.attempt
                    }
                }
            };
            for (i, row) in chunk {
                let mut a = attempt.clone();
                a.warnings.extend(row.warnings.iter().cloned());
                out[*i] = Some(a);
            }
        }
        out.into_iter()
            .map(|a| {
                a.unwrap_or_else(|| Attempt::new(Outcome::retry("no outcome for this record")))
            })
            .collect()
    }

    /// `spreadsheets.get` (the spreadsheet and tab exist and the service account can read them),
    /// then, in header mode, `values.get` of row 1 and where each field goes. Writes nothing.
    async fn check(&self) -> Result<String, ConnectorError> {
        let tokens = self.tokens().await.map_err(ConnectorError::Check)?;
        let tokens = tokens.as_ref();
        let refused = |r: Refused| {
            ConnectorError::Check(r.attempt.outcome.reason().unwrap_or("refused").to_string())
        };
        let url = self
            .api
            .url(
                &[],
                &[(
                    "fields",
                    "properties.title,sheets.properties(title,gridProperties(rowCount,columnCount))",
                )],
            )
            .map_err(refused)?;
        let text = self
            .api
            .call(
                tokens,
                &self.target(tokens),
                &Unlimited,
                Method::GET,
                url,
                None,
            )
            .await
            .map_err(refused)?;
        let doc: api::Spreadsheet = serde_json::from_str(&text).map_err(|e| {
            ConnectorError::Check(format!("unexpected answer to spreadsheets.get: {e}"))
        })?;
        let title = &doc.properties.title;
        let Some(tab) = doc
            .sheets
            .iter()
            .find(|s| s.properties.title == self.config.sheet)
        else {
            let tabs: Vec<String> = doc
                .sheets
                .iter()
                .map(|s| format!("{:?}", s.properties.title))
                .collect();
            return Err(ConnectorError::Check(format!(
                "spreadsheet {title:?} has no tab named {:?}; its tabs: {}",
                self.config.sheet,
                tabs.join(", ")
            )));
        };
        let size = tab
            .properties
            .grid_properties
            .as_ref()
            .map(|g| format!(" ({} rows × {} columns)", g.row_count, g.column_count))
            .unwrap_or_default();
        let mut lines = vec![format!(
            "spreadsheet {title:?}, tab {:?}{size}, readable by {}",
            self.config.sheet, tokens.email
        )];
        let names: Vec<&str> = self.fields.iter().map(String::as_str).collect();
        let fatal = match self.config.columns {
            Columns::Order => {
                lines.push(layout::order_report(&names));
                false
            }
            Columns::Header => {
                let header = self
                    .read_header(tokens, &Unlimited)
                    .await
                    .map_err(refused)?;
                let (report, fatal) =
                    layout::header_report(&header, &names, self.config.add_missing_columns);
                lines.extend(report);
                fatal
            }
        };
        lines.push("write access shows at the first delivery (a check writes nothing)".into());
        let text = lines.join("\n");
        if fatal {
            Err(ConnectorError::Check(text))
        } else {
            Ok(text)
        }
    }

    /// The row in config order, and the tab; the columns are only known once row 1 is read.
    fn describe(&self, record: &Record) -> Described {
        let row = layout::row_in_order(&record.fields, self.config.value_input);
        let columns = match self.config.columns {
            Columns::Header => "each field under the header cell of the same name",
            Columns::Order => "fields in config order from column A",
        };
        Described {
            action: format!("{}, {columns}", self.action()),
            headers: vec![("authorization".into(), "Bearer ***".into())],
            body: serde_json::to_string(&row.cells).unwrap_or_default(),
        }
    }

    /// The row in the sheet's column order, after reading row 1 (nothing is written).
    async fn describe_online(&self, record: &Record) -> Result<Described, ConnectorError> {
        if self.config.columns == Columns::Order {
            return Ok(self.describe(record));
        }
        let tokens = self.tokens().await.map_err(ConnectorError::Check)?;
        let tokens = tokens.as_ref();
        let header = self.read_header(tokens, &Unlimited).await.map_err(|r| {
            ConnectorError::Check(r.attempt.outcome.reason().unwrap_or("refused").to_string())
        })?;
        let names: Vec<&str> = record.fields.iter().map(|(n, _)| n.as_str()).collect();
        let plan = layout::plan_header(&header, &names, self.config.add_missing_columns);
        if !plan.missing.is_empty() {
            return Err(ConnectorError::Check(self.missing_message(&plan.missing)));
        }
        let columns = layout::column_map(&plan.header);
        let row = layout::row_by_header(&record.fields, &columns, self.config.value_input)
            .map_err(|missing| ConnectorError::Check(self.missing_message(&missing)))?;
        let added = plan.write.as_ref().map_or(usize::MAX, |(first, _)| *first);
        let cells: Vec<String> = plan
            .header
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let note = if i >= added { " (added)" } else { "" };
                format!("{} {h:?}{note}", column_letter(i))
            })
            .collect();
        let action = format!("{}, under row 1: {}", self.action(), cells.join(", "));
        Ok(Described {
            action,
            headers: vec![("authorization".into(), "Bearer ***".into())],
            body: serde_json::to_string(&row.cells).unwrap_or_default(),
        })
    }
}
