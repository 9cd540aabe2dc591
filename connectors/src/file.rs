//! `type = "file"`: appends one JSON object per record to a file (JSON Lines), flushed and fsynced
//! once per batch. Needs no credentials, which makes it the default destination of the example.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::Pace;
use crate::body::{self, BodyKind};
use crate::{
    Attempt, ConfigIssue, Connector, ConnectorError, Described, DestinationConfig, DestinationType,
    Outcome, Record,
};

/// The most records appended (and fsynced) together.
const BATCH: usize = 500;

/// The keys of a `file` destination (besides the common ones).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The JSON Lines file to append to; a relative path is resolved against the config's folder.
    pub path: PathBuf,
    /// `fields` (default): the mapped fields as an object; `raw`: the notification as received.
    #[serde(default)]
    pub body: BodyKind,
}

impl DestinationType for FileConfig {
    const TYPE: &'static str = "file";
}

impl DestinationConfig for FileConfig {
    fn validate(&self, fields: &[(String, String)]) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.path.as_os_str().is_empty() {
            issues.push(ConfigIssue::new("path", "must not be empty"));
        }
        if self.body == BodyKind::Fields
            && let Some(conflict) = body::nesting_conflict(fields.iter().map(|(n, _)| n.as_str()))
        {
            issues.push(ConfigIssue::new("fields", conflict));
        }
        issues
    }

    fn summary(&self) -> String {
        format!("append to {}", self.path.display())
    }

    fn resolve_paths(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) {
        self.path = resolve(&self.path);
    }

    fn build(
        &self,
        _client: &reqwest::Client,
        _fields: &[String],
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        Ok(Arc::new(FileSink::new(self.clone())))
    }
}

/// A ready file destination. One lock per file keeps lines whole when batches run concurrently.
pub struct FileSink {
    config: FileConfig,
    lock: tokio::sync::Mutex<()>,
}

impl FileSink {
    pub fn new(config: FileConfig) -> Self {
        FileSink {
            config,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn line(&self, record: &Record) -> String {
        match self.config.body {
            BodyKind::Fields => body::fields_to_json(&record.fields).to_string(),
            // The raw body was validated as JSON at the door; re-serialising puts it on one line.
            BodyKind::Raw => serde_json::from_str::<serde_json::Value>(&record.raw)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| record.raw.replace('\n', " ")),
        }
    }

    /// Appends `text` whole or not at all: a write that fails part-way (a full disk) is cut back
    /// to the length the file had, so a retry appends no torn line and repeats no record.
    fn append(path: &Path, text: &[u8]) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let before = file.metadata()?.len();
        let Err(e) = file.write_all(text).and_then(|()| file.sync_data()) else {
            return Ok(());
        };
        match file.set_len(before).and_then(|()| file.sync_data()) {
            Ok(()) => Err(e),
            Err(undo) => Err(std::io::Error::new(
                e.kind(),
                format!("{e}; and the partial write could not be taken back: {undo}"),
            )),
        }
    }
}

#[async_trait::async_trait]
impl Connector for FileSink {
    fn max_batch(&self) -> usize {
        BATCH
    }

    /// A blocking write goes on when its future is dropped: the worker must wait for it, not
    /// record a time-out while the lines may still land.
    fn stops_when_dropped(&self) -> bool {
        false
    }

    async fn deliver(&self, records: &[Record], pace: &dyn Pace) -> Vec<Attempt> {
        let mut text = String::new();
        for record in records {
            text.push_str(&self.line(record));
            text.push('\n');
        }
        let _guard = self.lock.lock().await;
        // An append is one call, for a `rate_limit` set on a file destination.
        let _call = pace.call().await;
        let path = self.config.path.clone();
        let result =
            tokio::task::spawn_blocking(move || Self::append(&path, text.as_bytes())).await;
        let outcome = match result {
            Ok(Ok(())) => Outcome::Delivered,
            Ok(Err(e)) => Outcome::retry(format!(
                "cannot append to {}: {e}",
                self.config.path.display()
            )),
            Err(e) => Outcome::retry(format!("append task failed: {e}")),
        };
        records
            .iter()
            .map(|_| Attempt::new(outcome.clone()))
            .collect()
    }

    async fn check(&self) -> Result<String, ConnectorError> {
        let path = self.config.path.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map(|_| format!("{} is writable", path.display()))
                .map_err(|e| {
                    ConnectorError::Check(format!(
                        "cannot open {} for appending: {e}",
                        path.display()
                    ))
                })
        })
        .await
        .map_err(|e| ConnectorError::Check(e.to_string()))?
    }

    fn describe(&self, record: &Record) -> Described {
        Described {
            action: self.config.summary(),
            headers: Vec::new(),
            body: self.line(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pace::Unlimited;

    fn record(id: i64, fields: &[(&str, &str)]) -> Record {
        Record {
            delivery_id: id,
            notification_id: id,
            participation_id: format!("p{id}"),
            attempt: 1,
            fields: fields
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            raw: Arc::from("{\n  \"id\": \"p\"\n}"),
            state: None,
            in_doubt_since: None,
        }
    }

    #[tokio::test]
    async fn appends_one_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let sink = FileSink::new(FileConfig {
            path: path.clone(),
            body: BodyKind::Fields,
        });
        let got = sink
            .deliver(
                &[record(1, &[("email", "a@b.c")]), record(2, &[("a.b", "x")])],
                &Unlimited,
            )
            .await;
        assert!(got.iter().all(|a| a.outcome == Outcome::Delivered));
        let raw = FileSink::new(FileConfig {
            path: path.clone(),
            body: BodyKind::Raw,
        });
        raw.deliver(&[record(3, &[])], &Unlimited).await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"email\":\"a@b.c\"}\n{\"a\":{\"b\":\"x\"}}\n{\"id\":\"p\"}\n"
        );
    }

    #[tokio::test]
    async fn an_unwritable_path_retries() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::new(FileConfig {
            path: dir.path().join("no/such/dir/out.jsonl"),
            body: BodyKind::Fields,
        });
        let got = sink.deliver(&[record(1, &[])], &Unlimited).await;
        assert!(matches!(got[0].outcome, Outcome::Retry { .. }));
        assert!(sink.check().await.is_err());
    }
}
