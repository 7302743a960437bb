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
use sqlx::ConnectOptions;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

type Task = Box<dyn FnOnce(&dyn Db) + Send>;

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
    pub(super) async fn open_postgres(
        options: &PgConnectOptions,
        threads: usize,
    ) -> Result<Self, StorageError> {
        let (queue, tasks) = mpsc::channel::<Task>();
        let tasks = Arc::new(Mutex::new(tasks));
        for n in 0..threads {
            // Connected here, so that a bad URL or an unreachable server fails the start.
            let conn = options.connect().await?;
            let options = options.clone();
            let tasks = Arc::clone(&tasks);
            std::thread::Builder::new()
                .name(format!("starling-reader-{n}"))
                .spawn(move || serve_postgres(&tasks, conn, &options))
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
            .send(Box::new(move |db: &dyn Db| {
                let _ = reply.send(read(db));
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
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(db)));
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
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let spelled = RefCell::new(HashMap::new());
    let mut conn = Some(conn);
    while let Some(task) = next(tasks) {
        if conn.is_none() {
            conn = runtime
                .block_on(options.connect())
                .inspect_err(|e| tracing::warn!("a reader cannot reach the database: {e}"))
                .ok();
        }
        let Some(c) = conn.as_mut() else {
            // Dropping the task drops its reply: the caller hears `WriterGone`… and a
            // readiness probe, 503.
            continue;
        };
        let db = PgDb::new(c, &runtime, &spelled);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(&db)));
        if db.aborted.get() && !db.broken.get() {
            // A snapshot read that failed half-way leaves its transaction open (and
            // aborted); outside one, this is a harmless warning from the server.
            let _ = db.simple("ROLLBACK");
        }
        if db.broken.get() {
            conn = None;
        }
    }
}
