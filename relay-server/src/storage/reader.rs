//! Connections for reads, each on a thread of its own, taking closures over [`Db`] from
//! one queue: the same seam the writer's transactions use, so a read is written once for
//! both engines.
//!
//! Why threads and not an async pool: a read is a plain function of `&dyn Db`, like a
//! write, and SQLite's connection is synchronous anyway (sqlx ran each SQLite connection
//! on a worker thread of its own too). On PostgreSQL each thread drives its connection
//! with a runtime of its own.

use super::postgres::PgDb;
use super::sql::Db;
use super::StorageError;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A read, given the connection, or `None` when the database cannot be reached now.
type Task = Box<dyn FnOnce(Option<&dyn Db>) + Send>;

/// The queue to the reader threads. Clones share it; the threads end (closing their
/// connections) when the last one is dropped.
#[derive(Clone)]
pub(super) struct Readers {
    queue: mpsc::Sender<Task>,
}

/// How long a reader waits out SQLite's lock (a checkpoint truncating the WAL).
const BUSY_WAIT: Duration = Duration::from_secs(10);

impl Readers {
    /// `threads` read-only connections to the SQLite database at `path`.
    pub(super) fn open_sqlite(path: &Path, threads: usize) -> Result<Self, StorageError> {
        let (queue, tasks) = mpsc::channel::<Task>();
        let tasks = Arc::new(Mutex::new(tasks));
        for n in 0..threads {
            let db = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            db.busy_timeout(BUSY_WAIT)?;
            db.set_prepared_statement_cache_capacity(64);
            let tasks = Arc::clone(&tasks);
            std::thread::Builder::new()
                .name(format!("starling-reader-{n}"))
                .spawn(move || serve(&tasks, &db))
                .map_err(|_| StorageError::WriterGone)?;
        }
        Ok(Self { queue })
    }

    /// `threads` connections to PostgreSQL; an unreachable server is an error here.
    /// `lost` counts connections (of these and the writer) found gone: a thread whose
    /// connection is older than the last loss connects again before its next read.
    pub(super) async fn open_postgres(
        options: &PgConnectOptions,
        threads: usize,
        lost: &Arc<AtomicU64>,
    ) -> Result<Self, StorageError> {
        let (queue, tasks) = mpsc::channel::<Task>();
        let tasks = Arc::new(Mutex::new(tasks));
        for n in 0..threads {
            // Connected here, so that a bad URL or an unreachable server fails the start.
            let conn = super::postgres::connect(options).await?;
            let options = options.clone();
            let tasks = Arc::clone(&tasks);
            let lost = Arc::clone(lost);
            std::thread::Builder::new()
                .name(format!("starling-reader-{n}"))
                .spawn(move || serve_postgres(&tasks, conn, &options, &lost))
                .map_err(|_| StorageError::WriterGone)?;
        }
        Ok(Self { queue })
    }

    /// Runs `read` on the next free connection.
    pub(super) async fn read<T, E>(
        &self,
        read: impl FnOnce(&dyn Db) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send(Box::new(move |db: Option<&dyn Db>| {
                let _ = reply.send(match db {
                    Some(db) => read(db),
                    None => Err(E::from(StorageError::Unreachable(
                        "no connection to the database".into(),
                    ))),
                });
            }))
            .map_err(|_| E::from(StorageError::WriterGone))?;
        answer
            .await
            .map_err(|_| E::from(StorageError::WriterGone))?
    }
}

/// The next task, or `None` once every [`Readers`] is gone.
fn next(tasks: &Mutex<mpsc::Receiver<Task>>) -> Option<Task> {
    tasks.lock().ok()?.recv().ok()
}

fn serve(tasks: &Mutex<mpsc::Receiver<Task>>, db: &rusqlite::Connection) {
    while let Some(task) = next(tasks) {
        // A panicking read drops its reply: its caller hears `WriterGone`.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(Some(db))));
        if !db.is_autocommit() {
            // A snapshot read that failed half-way leaves its transaction open.
            let _ = db.execute_batch("ROLLBACK");
        }
    }
}

fn serve_postgres(
    tasks: &Mutex<mpsc::Receiver<Task>>,
    conn: PgConnection,
    options: &PgConnectOptions,
    lost: &AtomicU64,
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let spelled = RefCell::new(HashMap::new());
    let mut conn = Some(conn);
    let mut connected_after = lost.load(Ordering::Relaxed);
    while let Some(task) = next(tasks) {
        let losses = lost.load(Ordering::Relaxed);
        if losses != connected_after {
            // Another connection found the server gone (a restart, a failover): this
            // one most likely went with it.
            conn = None;
        }
        if conn.is_none() {
            connected_after = losses;
            conn = runtime
                .block_on(super::postgres::connect(options))
                .inspect_err(|e| tracing::warn!("a reader cannot reach the database: {e}"))
                .ok();
        }
        let Some(c) = conn.as_mut() else {
            // The caller hears `Unreachable` (a readiness probe: 503).
            task(None);
            continue;
        };
        let db = PgDb::new(c, &runtime, &spelled);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(Some(&db))));
        if db.aborted.get() && !db.broken.get() {
            // A snapshot read that failed half-way leaves its transaction open (and
            // aborted); outside one, this is a harmless warning from the server.
            let _ = db.simple("ROLLBACK");
        }
        if db.broken.get() {
            conn = None;
            lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}
