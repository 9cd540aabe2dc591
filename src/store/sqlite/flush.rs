//! Accepts are answered once the write-ahead log holding them is on disk, but the writer does not
//! wait for that disk flush: it commits with `synchronous=NORMAL` (no flush) and hands the
//! answers here, and this thread flushes the log while the writer runs the next group. One flush
//! serves every commit made before it began.
//!
//! This is as durable as `synchronous=FULL`: a commit's frames are in the log file (written, not
//! yet flushed) when its statement returns, and the flush that follows puts them on disk before
//! anyone is told. The log is only rewritten from its start after a checkpoint has copied every
//! frame into the database file and flushed it (SQLite checkpoints flush in NORMAL mode too),
//! and it is only removed when the last connection closes, after such a checkpoint.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::store::StoreError;

/// What to do once the flush is done (or failed): send the answers it was holding back.
pub(super) type Answers = Box<dyn FnOnce(&Result<(), String>) + Send>;

/// The flushing thread's inbox. Dropping it ends the thread once its last flush is answered.
pub(super) struct Flusher {
    tx: mpsc::Sender<Answers>,
}

impl Flusher {
    /// Starts the thread that flushes the log of the database at `db`.
    pub fn start(db: &Path) -> io::Result<Flusher> {
        let db = db.canonicalize()?;
        let mut wal = db.clone().into_os_string();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let (tx, rx) = mpsc::channel::<Answers>();
        std::thread::Builder::new()
            .name("hookfan-flush".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Everything committed so far: one flush for all of it.
                    let waiting: Vec<Answers> =
                        std::iter::once(first).chain(rx.try_iter()).collect();
                    let flushed = flush(&wal, &db).map_err(|e| e.to_string());
                    if let Err(e) = &flushed {
                        tracing::error!(error = %e, "cannot flush the write-ahead log to disk; the accepts waiting for it are answered 503");
                    }
                    for answer in waiting {
                        answer(&flushed);
                    }
                }
            })?;
        Ok(Flusher { tx })
    }

    /// Runs `answers` after the next flush, which begins after this call.
    pub fn after_flush(&self, answers: Answers) {
        if let Err(mpsc::SendError(answers)) = self.tx.send(answers) {
            // The thread is gone (it never panics; only a stop gets here): nothing is promised.
            answers(&Err("the store is shutting down".into()));
        }
    }
}

/// The error an accept waiting for a failed flush is given.
pub(super) fn failed(e: &str) -> StoreError {
    StoreError::Flush(e.to_string())
}

/// Flushes the write-ahead log. With no log file, every connection was closed since the commit,
/// which checkpoints the whole log into the database file and flushes it first; the database
/// file is flushed again all the same, which costs little and needs no such reasoning.
fn flush(wal: &Path, db: &Path) -> io::Result<()> {
    match File::open(wal) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => File::open(db)?.sync_data(),
        Err(e) => Err(e),
    }
}
