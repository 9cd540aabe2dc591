//! Accepts are answered once the write-ahead log holding them is on disk, but the writer does not
//! wait for that disk flush: it commits with `synchronous=NORMAL` (no flush) and hands the
//! answers here, and this thread flushes the log while the writer runs the next group. One flush
//! serves every commit made before it began.
//!
//! This is as durable as `synchronous=FULL`: a commit's frames are in the log file (written, not
//! yet flushed) when its statement returns, and the flush that follows puts them on disk before
//! anyone is told. The log is only rewritten from its start, or truncated, after a checkpoint has
//! copied every frame into the database file and flushed it (SQLite checkpoints flush in NORMAL
//! mode too), and it is only removed when the last connection closes, after such a checkpoint.
//! Claims wait for the flush as well while an accept is unflushed, so nothing is delivered that
//! the disk may not have (see `writer`).
//!
//! A flush that fails is final: the kernel may have dropped the pages it could not write while
//! SQLite, which committed them, still serves them, so a duplicate of a lost notification would
//! be answered "already stored". From then on every accept and `/readyz` fails until hookfan is
//! restarted, which reads the log back from what the disk really holds.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use crate::store::StoreError;

/// What to do once the flush is done (or failed): send the answers it was holding back.
pub(super) type Answers = Box<dyn FnOnce(&Result<(), String>) + Send>;

/// The flushing thread's inbox. Dropping it ends the thread once its last flush is answered.
pub(super) struct Flusher {
    tx: mpsc::Sender<Answers>,
    state: Arc<State>,
}

/// What the writer and the store may ask of the flushing thread.
#[derive(Default)]
pub(super) struct State {
    /// Set for good by the first flush that failed.
    broken: AtomicBool,
    /// Batches of answers handed over, and answered.
    handed: AtomicU64,
    answered: AtomicU64,
}

impl State {
    /// Why nothing may be accepted, if a flush has failed.
    pub fn broken(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Flush(
                "an earlier flush of the write-ahead log failed; restart hookfan (it reads back what the disk holds)".into(),
            ));
        }
        Ok(())
    }
}

impl Flusher {
    /// Starts the thread that flushes the log of the database at `db`.
    pub fn start(db: &Path) -> io::Result<Flusher> {
        let db = db.canonicalize()?;
        let mut wal = db.clone().into_os_string();
        wal.push("-wal");
        let mut log = Log {
            wal: PathBuf::from(wal),
            db,
            open: None,
        };
        let state = Arc::new(State::default());
        let (tx, rx) = mpsc::channel::<Answers>();
        let shared = state.clone();
        std::thread::Builder::new()
            .name("hookfan-flush".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Everything committed so far: one flush for all of it.
                    let waiting: Vec<Answers> =
                        std::iter::once(first).chain(rx.try_iter()).collect();
                    let flushed = if shared.broken.load(Ordering::SeqCst) {
                        Err("an earlier flush failed".to_string())
                    } else {
                        log.flush().map_err(|e| e.to_string())
                    };
                    if let Err(e) = &flushed
                        && !shared.broken.swap(true, Ordering::SeqCst)
                    {
                        tracing::error!(error = %e, "cannot flush the write-ahead log to disk: accepting stops (503, /readyz fails) until hookfan is restarted");
                    }
                    let count = waiting.len() as u64;
                    for answer in waiting {
                        answer(&flushed);
                    }
                    shared.answered.fetch_add(count, Ordering::SeqCst);
                }
            })?;
        Ok(Flusher { tx, state })
    }

    /// What the store reads: whether a flush failed.
    pub fn state(&self) -> Arc<State> {
        self.state.clone()
    }

    /// Why nothing may be accepted, if a flush has failed.
    pub fn broken(&self) -> Result<(), StoreError> {
        self.state.broken()
    }

    /// Whether answers handed over are still waiting for their flush.
    pub fn unflushed(&self) -> bool {
        self.state.handed.load(Ordering::SeqCst) > self.state.answered.load(Ordering::SeqCst)
    }

    /// Runs `answers` after the next flush, which begins after this call.
    pub fn after_flush(&self, answers: Answers) {
        self.state.handed.fetch_add(1, Ordering::SeqCst);
        if let Err(mpsc::SendError(answers)) = self.tx.send(answers) {
            // The thread is gone (it never panics; only a stop gets here): nothing is promised.
            answers(&Err("the store is shutting down".into()));
            self.state.answered.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The error an answer waiting for a failed flush is given.
pub(super) fn failed(e: &str) -> StoreError {
    StoreError::Flush(e.to_string())
}

/// The log file, held open between flushes: a write error is reported to every open handle of
/// the file at its next flush, but not to a handle opened after another one has seen it.
struct Log {
    wal: PathBuf,
    db: PathBuf,
    open: Option<(File, FileId)>,
}

impl Log {
    /// Flushes the write-ahead log. With no log file, every connection was closed since the
    /// commit, which checkpoints the whole log into the database file and flushes it first; the
    /// database file is flushed again all the same, which costs little and needs no such
    /// reasoning.
    fn flush(&mut self) -> io::Result<()> {
        #[cfg(debug_assertions)]
        injected()?;
        let current = match std::fs::metadata(&self.wal) {
            Ok(meta) => file_id(&meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.open = None;
                return File::open(&self.db)?.sync_data();
            }
            Err(e) => return Err(e),
        };
        match &self.open {
            Some((file, id)) if *id == current => file.sync_data(),
            _ => {
                // A new log file: its directory entry must be on disk too, as SQLite's own
                // first flush of a new file does.
                let file = File::open(&self.wal)?;
                file.sync_data()?;
                if let Some(dir) = self.wal.parent() {
                    File::open(dir)?.sync_all()?;
                }
                self.open = Some((file, current));
                Ok(())
            }
        }
    }
}

/// Which file a path names (a log removed and created again is another file).
#[cfg(unix)]
type FileId = (u64, u64);

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
type FileId = ();

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> FileId {}

/// A failure a test can switch on, in debug builds only: with `HOOKFAN_TEST_FAULT=flush-once`
/// the first flush fails, and only the first.
#[cfg(debug_assertions)]
fn injected() -> io::Result<()> {
    static DONE: AtomicBool = AtomicBool::new(false);
    if std::env::var("HOOKFAN_TEST_FAULT").is_ok_and(|f| f == "flush-once")
        && !DONE.swap(true, Ordering::SeqCst)
    {
        return Err(io::Error::other(
            "injected by HOOKFAN_TEST_FAULT=flush-once",
        ));
    }
    Ok(())
}
