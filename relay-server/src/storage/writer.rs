//! The one connection that writes, on a thread of its own, committing in groups.
//!
//! Every write is a closure over a `rusqlite::Connection`, queued on a channel. The thread
//! blocks for the first, drains whatever else is queued (up to [`MAX_BATCH`]) and runs
//! them all in one `BEGIN IMMEDIATE … COMMIT`. A command that fails is undone alone,
//! exactly as if it had been its own transaction: if it wrote nothing there is nothing to
//! undo; if it did, the group's transaction is rolled back and the commands before it run
//! again (commands are closures that can run more than once), without it. That replay is
//! rare (a failing write is an error, not a verdict), and cheaper overall than a savepoint
//! per command, which copies every page a command touches into a journal first. Replies
//! go out only after COMMIT returned, so nothing is acknowledged before it is durable; if
//! COMMIT fails, every command of the group gets the error.
//!
//! Why: through sqlx each statement was a hop to the connection's worker thread and back
//! (tens of microseconds), and each transaction a commit of its own. Here a statement is
//! a call into SQLite from the thread that owns the connection, and one WAL commit covers
//! every command that queued while the previous group ran.
//!
//! On PostgreSQL two such threads, each with its connection, take groups from the one
//! queue ([`POSTGRES_WRITERS`]).

use super::pipeline::{CommitError, Connection as PgWriter, Failure, PipelinedDb};
use super::sql::{Db, Dialect};
use super::StorageError;
use rusqlite::Connection;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// Most commands in one transaction: bounds how long a group holds SQLite's write lock
/// and how late its first command hears back.
const MAX_BATCH: usize = 512;

/// Group commit's linger (PostgreSQL's `commit_delay` and `commit_siblings`): when the
/// last group had at least `LINGER_AFTER` commands and fewer than `LINGER_UNTIL` are
/// queued now, the writer waits `LINGER` for more before it begins.
const LINGER: Duration = Duration::from_micros(100);
const LINGER_AFTER: usize = 8;
const LINGER_UNTIL: usize = 32;

/// Shortest pause between two checkpoints: each one syncs the WAL and the database file.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(100);

/// How long the writer (and the checkpointer) wait out another connection's lock before
/// giving up.
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// How often, and how far apart, a truncating checkpoint is tried while another one runs.
const TRUNCATE_TRIES: usize = 25;
const TRUNCATE_PAUSE: Duration = Duration::from_millis(20);

/// How long a WAL restart waits for the checkpointer and for readers still in the WAL.
const RESTART_WAIT: Duration = Duration::from_millis(200);

/// Bytes of WAL past which the writer starts the WAL over (and what the file is cut back
/// to when it does).
///
/// Why: SQLite starts a WAL over only when a write transaction begins with every frame
/// already copied into the database, and under steady load the writer always begins its
/// next group while the checkpointer is still copying the last one's. The WAL then grew
/// until a checkpoint made the writer wait (it reached 400 MB), and every commit appended
/// to new file blocks: allocating them in the kernel took a tenth of the writer's time.
/// Started over at this size, commits overwrite blocks the file already has.
const WAL_LIMIT_BYTES: u64 = 64 << 20;

/// Prepared statements kept per connection: every statement the relay writes with, plus
/// the `format!`-built variants, fits.
const STATEMENT_CACHE: usize = 128;

pub(super) trait Command: Send {
    /// Runs inside the group's transaction (again, when the group is replayed); returns
    /// whether its writes stay.
    fn run(&mut self, db: &dyn Db) -> bool;
    /// What it is, if a PostgreSQL group runs its commands of that kind together, before
    /// its other commands.
    fn together(&mut self) -> Option<Together<'_>> {
        None
    }
    /// Whether it may run while other relays' groups run too, on PostgreSQL (see
    /// [`BEGIN_SHARED`]): it locks what it reads and writes, in the order every group
    /// does.
    fn shares_turn(&self) -> bool {
        false
    }
    /// Whether its group waits, before it begins, until every group that other writer
    /// connections took from the queue before it has ended (PostgreSQL's writers; see
    /// [`POSTGRES_WRITERS`]): so that it is answered only after every command queued
    /// before it has been.
    fn waits_for_earlier(&self) -> bool {
        false
    }
    /// Runs once the group has committed, outside any transaction, before the reply;
    /// on SQLite only (its WAL), where `db` is the writer's connection.
    fn after_commit(&mut self, _db: &Connection) {}
    /// Sends what the last run returned once the group committed (`commit` is `None`),
    /// or why the group did not commit.
    fn reply(self: Box<Self>, commit: Option<&GroupError>);
    /// Replaces what the last run returned with `error`: a write it left to be sent with
    /// a later statement failed there (PostgreSQL's pipelined writes).
    fn fail(&mut self, error: StorageError);
}

/// Commands that a PostgreSQL group runs together, each kind with one statement per
/// table for all of them (see [`super::many_rows`]).
pub(super) enum Together<'a> {
    /// Returned results, judged by [`super::results::judge_together`].
    Result(&'a mut super::results::Recording),
    /// Work leases, drawn by [`super::leases::lease_together`].
    Lease(&'a mut super::leases::Leasing),
}

/// Why a group did not commit, told to each of its commands.
#[derive(Debug)]
pub(super) enum GroupError {
    /// SQLite's error.
    Sqlite(rusqlite::Error),
    /// PostgreSQL's (or the connection's), as text: sqlx's errors are not `Clone` either.
    Postgres(String),
    /// The database could not be reached before the group began: nothing was written.
    Unreachable(String),
}

impl GroupError {
    pub(super) fn to_storage(&self) -> StorageError {
        match self {
            Self::Sqlite(e) => StorageError::Sqlite(copy(e)),
            Self::Postgres(e) => StorageError::Commit(e.clone()),
            Self::Unreachable(e) => StorageError::Unreachable(e.clone()),
        }
    }
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(e) => e.fmt(f),
            Self::Postgres(e) | Self::Unreachable(e) => f.write_str(e),
        }
    }
}

/// What a command answers its caller: what its last run came to, sent once its group
/// committed, or the group's error if it did not.
pub(super) struct Reply<T, E> {
    sender: tokio::sync::oneshot::Sender<Result<T, E>>,
    outcome: Option<Result<T, E>>,
}

impl<T, E: From<StorageError>> Reply<T, E> {
    /// A reply through `sender`, with nothing to say yet.
    pub(super) fn to(sender: tokio::sync::oneshot::Sender<Result<T, E>>) -> Self {
        Self {
            sender,
            outcome: None,
        }
    }

    /// What the last run came to.
    pub(super) fn set(&mut self, outcome: Result<T, E>) {
        self.outcome = Some(outcome);
    }

    /// What the last run came to, if it ran.
    pub(super) fn outcome_mut(&mut self) -> Option<&mut Result<T, E>> {
        self.outcome.as_mut()
    }

    /// [`Command::fail`]'s error.
    pub(super) fn fail(&mut self, error: StorageError) {
        self.outcome = Some(Err(error.into()));
    }

    /// [`Command::reply`]: the group's error, or the last outcome.
    pub(super) fn send(self, commit: Option<&GroupError>) {
        let outcome = match (commit, self.outcome) {
            (Some(e), _) => Err(e.to_storage().into()),
            (None, Some(outcome)) => outcome,
            // It panicked: nothing of it stayed, and there is nothing to tell but that.
            (None, None) => Err(StorageError::WriterGone.into()),
        };
        // A caller that stopped waiting (its task was dropped) needs no answer.
        let _ = self.sender.send(outcome);
    }
}

/// Copies the whole WAL into the database file and truncates the WAL, after the group
/// it joined committed. On the writer's own connection, so no write of the relay's is in
/// its way; it waits out readers and the checkpointer thread for a few seconds at most.
struct TruncateWal {
    reply: Reply<bool, StorageError>,
}

impl Command for TruncateWal {
    fn run(&mut self, db: &dyn Db) -> bool {
        if db.dialect() == Dialect::Postgres {
            // No WAL of ours to empty: the server's is the server's business.
            self.reply.set(Ok(true));
        }
        false
    }

    fn after_commit(&mut self, db: &Connection) {
        // The checkpointer thread, woken by every commit, may be copying right now, and
        // SQLite answers a second checkpoint busy at once then, without waiting: so try
        // again for a little while. Purges are rare; the writer stalls at most this long.
        // Each try waits out readers briefly, not for the writer's usual busy timeout.
        let mut outcome = db
            .busy_timeout(RESTART_WAIT)
            .map(|()| false)
            .map_err(StorageError::from);
        for _ in 0..TRUNCATE_TRIES {
            outcome = db
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|busy| busy == 0)
                .map_err(StorageError::from);
            if !matches!(outcome, Ok(false)) {
                break;
            }
            std::thread::sleep(TRUNCATE_PAUSE);
        }
        if let Err(e) = db.busy_timeout(BUSY_WAIT) {
            tracing::warn!("cannot set the writer's busy timeout back: {e}");
        }
        self.reply.set(outcome);
    }

    fn fail(&mut self, error: StorageError) {
        self.reply.fail(error);
    }

    fn reply(self: Box<Self>, commit: Option<&GroupError>) {
        self.reply.send(commit);
    }
}

struct Job<F, T, E> {
    work: F,
    reply: Reply<T, E>,
    shares_turn: bool,
}

impl<F, T, E> Command for Job<F, T, E>
where
    F: FnMut(&dyn super::sql::Db) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<StorageError> + Send + 'static,
{
    fn run(&mut self, db: &dyn Db) -> bool {
        let result = (self.work)(db);
        let keep = result.is_ok();
        self.reply.set(result);
        keep
    }

    fn shares_turn(&self) -> bool {
        self.shares_turn
    }

    fn fail(&mut self, error: StorageError) {
        self.reply.fail(error);
    }

    fn reply(self: Box<Self>, commit: Option<&GroupError>) {
        self.reply.send(commit);
    }
}

/// Writes nothing; answered once every command queued before it has been.
struct Flush {
    reply: Reply<(), StorageError>,
}

impl Command for Flush {
    fn run(&mut self, _db: &dyn Db) -> bool {
        self.reply.set(Ok(()));
        true
    }

    fn waits_for_earlier(&self) -> bool {
        true
    }

    fn fail(&mut self, error: StorageError) {
        self.reply.fail(error);
    }

    fn reply(self: Box<Self>, commit: Option<&GroupError>) {
        self.reply.send(commit);
    }
}

/// rusqlite errors are not `Clone`; a group's failure goes to each of its commands.
fn copy(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

fn exec(db: &Connection, sql: &str) -> rusqlite::Result<()> {
    db.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// The queue to the writer threads. Clones share it; the threads end (closing their
/// connections) when the last one is dropped.
#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn Command>>,
    /// Whether PostgreSQL's writes are pipelined (see [`super::pipeline`]); on SQLite
    /// nothing reads it.
    pub(super) pipelined: Arc<AtomicBool>,
    /// Round trips to PostgreSQL so far (none on SQLite), for the bench.
    pub(super) round_trips: Arc<AtomicU64>,
    /// Nanoseconds this writer's groups have held PostgreSQL's write turn alone (from the
    /// answer that it was taken to COMMIT's or ROLLBACK's; none on SQLite), and shared
    /// it, for the bench: groups that hold it alone run one at a time across all relays,
    /// so their time is what bounds all relays' writes together.
    pub(super) in_turn_nanos: Arc<TurnTimes>,
}

/// How long a writer's groups held the write turn, alone and shared, in nanoseconds.
#[derive(Default)]
pub(super) struct TurnTimes {
    pub(super) alone: AtomicU64,
    pub(super) shared: AtomicU64,
}

impl Writer {
    /// Opens the database file with the relay's settings and starts the thread.
    pub(super) fn open(path: &Path) -> Result<Self, StorageError> {
        let db = Connection::open(path)?;
        // Waits out another process's write (an operator's sqlite3 shell) rather than
        // failing a whole group at once; the relay itself never has a second writer.
        db.busy_timeout(BUSY_WAIT)?;
        db.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
        // NORMAL in WAL mode survives process crashes (kill -9); only an OS crash or
        // power loss can drop the last commits.
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        // Statement journals (a multi-row write inside the group's transaction) and the
        // sorts of small queries stay in memory instead of temporary files.
        db.pragma_update(None, "temp_store", "MEMORY")?;
        // 4 MiB: room for a group's changed pages until COMMIT (a group of 64 round trips
        // changes a few hundred), and the hot ends of the time-ordered indexes; the rest is
        // in the OS's file cache. Not more: when a b-tree split reorders sibling pages,
        // SQLite 3.46 briefly renumbers one to the locking page's number, and the next
        // COMMIT then walks every page in the cache to drop pages past the end of the
        // file. With 64 MiB, once a database outgrew it, that walk cost a third of the
        // writer's time (quorum 1 billed, 250 000 units of 1 KiB: 6 597 / 6 461 units/s
        // against 9 374 / 9 669 with 4 MiB, 143 against 92 writer µs per unit).
        db.pragma_update(None, "cache_size", -4_096)?;
        db.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Checkpoints (copying the WAL into the database file, with two fsyncs) run on a
        // thread of their own instead of inside whichever commit crossed the threshold, so
        // the writer never waits for the disk. They do not change what a commit promises:
        // a committed group is in the WAL either way.
        db.pragma_update(None, "wal_autocheckpoint", 0)?;
        db.pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES as i64)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let checkpoints = Connection::open(path)?;
        checkpoints.busy_timeout(BUSY_WAIT)?;
        let (wake, woken) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("starling-checkpoint".into())
            .spawn(move || checkpoint(&checkpoints, &woken))
            // The thread never started: for callers, the same as a writer that stopped.
            .map_err(|_| StorageError::WriterGone)?;
        let (queue, commands) = mpsc::channel();
        std::thread::Builder::new()
            .name("starling-writer".into())
            .spawn(move || serve(&db, &commands, &wake, Path::new(&wal)))
            .map_err(|_| StorageError::WriterGone)?;
        Ok(Self {
            queue,
            pipelined: Arc::default(),
            round_trips: Arc::default(),
            in_turn_nanos: Arc::default(),
        })
    }

    /// Runs `work` in a transaction of the next group: its writes stay if it returns
    /// `Ok` and the group commits; the answer comes once that is decided. `work` may run
    /// more than once (when its group is replayed); only its last run counts.
    pub(super) async fn exec<T, E>(
        &self,
        work: impl FnMut(&dyn super::sql::Db) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        self.exec_as(work, false).await
    }

    /// [`Writer::exec`] for work that may share PostgreSQL's write turn with other relays'
    /// groups (see [`BEGIN_SHARED`]): it locks every row it changes that their results
    /// and leases may change too, in the order they lock them.
    pub(super) async fn exec_sharing_turn<T, E>(
        &self,
        work: impl FnMut(&dyn super::sql::Db) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        self.exec_as(work, true).await
    }

    async fn exec_as<T, E>(
        &self,
        work: impl FnMut(&dyn super::sql::Db) -> Result<T, E> + Send + 'static,
        shares_turn: bool,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send(Box::new(Job {
                work,
                reply: Reply::to(reply),
                shares_turn,
            }))
            .map_err(|_| E::from(StorageError::WriterGone))?;
        answer
            .await
            .map_err(|_| E::from(StorageError::WriterGone))?
    }

    /// Empties the WAL into the database file once what was queued before has committed:
    /// `Ok(false)` when a reader kept it from emptying completely.
    pub(super) async fn truncate_wal(&self) -> Result<bool, StorageError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send(Box::new(TruncateWal {
                reply: Reply::to(reply),
            }))
            .map_err(|_| StorageError::WriterGone)?;
        answer.await.map_err(|_| StorageError::WriterGone)?
    }

    /// Returns once every command queued before it has been answered (committed or
    /// failed), whichever of the writer's connections ran it.
    pub(super) async fn flush(&self) -> Result<(), StorageError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue(Box::new(Flush {
            reply: Reply::to(reply),
        }))?;
        answer.await.map_err(|_| StorageError::WriterGone)?
    }

    /// Queues `command` for the next group; it replies by itself.
    pub(super) fn queue(&self, command: Box<dyn Command>) -> Result<(), StorageError> {
        self.queue
            .send(command)
            .map_err(|_| StorageError::WriterGone)
    }
}

impl Writer {
    /// Connects to PostgreSQL at `url` and starts the writer thread on that connection;
    /// an unreachable server is an error here, at start.
    /// `lost` counts connections found gone (see [`super::reader::Readers::open_postgres`]).
    pub(super) async fn open_postgres(
        url: &str,
        lost: Arc<AtomicU64>,
    ) -> Result<Self, StorageError> {
        // Check the URL here, where a bad one is the caller's error, not the thread's.
        let _: tokio_postgres::Config = url.parse()?;
        let url = url.to_owned();
        let pipelined = Arc::new(AtomicBool::new(true));
        let round_trips = Arc::new(AtomicU64::new(0));
        let in_turn_nanos = Arc::new(TurnTimes::default());
        let (queue, commands) = mpsc::channel();
        let queued = Arc::new(Queued {
            busy: AtomicUsize::new(0),
            commands: Mutex::new(commands),
            running: RwLock::new(()),
        });
        let mut connected = Vec::with_capacity(POSTGRES_WRITERS);
        for _ in 0..POSTGRES_WRITERS {
            let (url, lost, on, counted, timed, queued) = (
                url.clone(),
                Arc::clone(&lost),
                Arc::clone(&pipelined),
                Arc::clone(&round_trips),
                Arc::clone(&in_turn_nanos),
                Arc::clone(&queued),
            );
            let (ready, started) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("starling-writer".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = ready.send(Err(StorageError::Commit(e.to_string())));
                            return;
                        }
                    };
                    let connect = || connect_writer(&runtime, &url, &counted);
                    match connect() {
                        Ok(conn) => {
                            let _ = ready.send(Ok(()));
                            serve_postgres(
                                &runtime,
                                Some(conn),
                                connect,
                                &queued,
                                &lost,
                                &on,
                                &timed,
                            );
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                })
                .map_err(|_| StorageError::WriterGone)?;
            connected.push(started);
        }
        for started in connected {
            started.await.map_err(|_| StorageError::WriterGone)??;
        }
        Ok(Self {
            queue,
            pipelined,
            round_trips,
            in_turn_nanos,
        })
    }
}

/// The writer's session settings.
///
/// Every statement the writer runs reaches a few rows by a key, so one plan, made once
/// per connection from the statement alone, serves every call: no planning per call
/// (forced custom plans cost the server 0.4 ms a unit) and no plan that changes under
/// load (left to choose, PostgreSQL switched the draw between a 0.05 ms plan and a
/// 2.6 ms one within a run). For that plan to be the right one whatever the statistics
/// say (right after a job's units are stored they call `leases` empty), no statement
/// may read a table end to end; that penalty also prices the scans of a few small
/// tables (the accruals a payout sweeps) past JIT's threshold, 51 ms to compile a
/// 0.1 ms statement. Nor may it gather an index's matches before reading them (a bitmap
/// scan): a draw's walk of the queued units then read every unit that was ever queued
/// and not yet vacuumed, where an index scan stops at the units it needs and marks the
/// gone ones to be skipped. Nor may it join by hashing or merging: a group's rows (its
/// leases to update, by id) joined to their table by hash, as a plan made while the
/// table looked small chose, read the whole table at each statement, and that one write
/// cost twice as much in about one bench run in three; each row through its key, as
/// every statement means to, keeps the server's CPU a unit within a few percent from
/// run to run. Plans are still made afresh as the tables grow (`pipeline::REPLAN_FROM`).
///
/// A relay stopped mid-transaction (SIGSTOP, a hung host) would hold the write turn and
/// stall every other relay, so PostgreSQL ends a writer's session idle in a transaction.
/// Only the writer's: an audit reads the ledger in one snapshot and checks each page's
/// signatures between reads, which on a long ledger took past 10 s (its session was
/// ended and the audit failed).
const WRITER_SESSION: &str = "-c idle_in_transaction_session_timeout=10s \
    -c plan_cache_mode=force_generic_plan -c enable_seqscan=off -c enable_bitmapscan=off \
    -c enable_hashjoin=off -c enable_mergejoin=off -c jit=off";

/// Connections a relay writes to PostgreSQL on, each on a thread of its own taking the
/// next group from one queue.
///
/// Why more than one: a group's statements run one after another in one server process,
/// so with one connection a relay's writes used at most one of the server's cores, and
/// the server's CPU a unit (about 120 µs) bounded a relay near 8 000 units/s however many
/// cores it had. Groups of two connections of one relay run at once exactly as groups of
/// two relays do (see [`BEGIN_ALONE`]). Not more: each connection splits the queue into
/// smaller groups, whose statements cost the server about the same for a few rows as for
/// hundreds, and they wait on each other's rows more; with three and four, the server's
/// CPU a unit rose by a tenth and a quarter and a relay settled fewer units a second
/// than with two (docs/performance.md).
const POSTGRES_WRITERS: usize = 2;

/// A PostgreSQL writer connection that takes a group while the other one runs a group
/// waits up to `POSTGRES_LINGER_MOST`, `POSTGRES_LINGER` at a time, for its group to
/// reach `POSTGRES_LINGER_UNTIL` commands.
///
/// Why: the idle connection otherwise took each command as it came, a group of one or
/// two, paying a whole group's statements for them. With 64 volunteers that cost the
/// server 177-184 µs a unit against 121-126 µs with the wait, and two relays on one
/// machine settled 5 200-5 400 units/s against 7 900-9 200 (one relay: 8 000-8 300
/// against 7 200-7 500, its groups answered a little later). The server's CPU is what
/// every relay shares. At 1 024 volunteers groups are large anyway and nothing changes.
const POSTGRES_LINGER: Duration = Duration::from_micros(200);
const POSTGRES_LINGER_MOST: Duration = Duration::from_millis(2);
const POSTGRES_LINGER_UNTIL: usize = 32;

/// Counts a writer connection as running a group while it lives.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn running(busy: &'a AtomicUsize) -> Self {
        busy.fetch_add(1, Ordering::Relaxed);
        Self(busy)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The queue PostgreSQL's writer connections take their groups from.
struct Queued {
    /// Connections running a group.
    busy: AtomicUsize,
    commands: Mutex<mpsc::Receiver<Box<dyn Command>>>,
    /// Held (shared) by each connection while it runs a group, and alone by one whose
    /// group waits for earlier ones ([`Command::waits_for_earlier`]): taken before the
    /// queue is let go, so every command queued before it is in a group that holds this.
    running: RwLock<()>,
}

/// How long connecting the writer may take before the database counts as unreachable:
/// a host that drops packets would otherwise hold the writer for the system's TCP
/// timeout (minutes) on every try.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn connect_writer(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    round_trips: &Arc<AtomicU64>,
) -> Result<PgWriter, StorageError> {
    PgWriter::open(
        runtime,
        url,
        WRITER_SESSION,
        CONNECT_TIMEOUT,
        Arc::clone(round_trips),
    )
}

/// Relays sharing a database write in turns, as SQLite's one writer does. Without turns,
/// groups of several relays took row locks (a job's accruals and progress, a wallet's
/// standing) in whatever order their commands came and deadlocked; PostgreSQL finds a
/// deadlock only after `deadlock_timeout` (1 s) and then fails one side. Three relays with
/// thirty volunteers (e2e `relay_cluster`) took 44 s to store twenty jobs, ended
/// volunteers' sessions on "deadlock detected", and a restarted relay did not come up;
/// with turns, the jobs stored at once and the run finished. The lock ("STWR") ends with
/// the transaction, and with the session of a relay that dies.
///
/// Most writes take the turn alone ([`BEGIN_ALONE`]): while one group runs no other
/// relay's transaction is open, so each of its statements sees all that any relay
/// committed and it needs no row lock of its own. The writes that are nearly all of a busy
/// network's share it ([`BEGIN_SHARED`]): returned results and work leases, judged and
/// drawn together ([`super::results::judge_together`], [`super::leases::lease_together`]),
/// and payouts ([`Writer::exec_sharing_turn`]). Any number of relays run those at once;
/// they lock the rows they read and then write instead, always in one order (units, a
/// job's unit drawn only where no one holds it, wallets, their standing on kernels;
/// accruals, what jobs owe, jobs' progress), so that no two wait for each other. Each kind
/// runs in a transaction of its own: a payout takes the ledger's lock and then accruals,
/// which a group of results takes last. A group that takes the turn alone waits until no
/// group shares it, and groups that would share it wait behind it, so it still sees the
/// world as if it ran alone.
///
/// A group's transaction begins and takes its turn in one round trip (the simple query
/// protocol runs both statements).
const BEGIN_ALONE: &str = "BEGIN; SELECT pg_advisory_xact_lock(1398036306)";
const BEGIN_SHARED: &str = "BEGIN; SELECT pg_advisory_xact_lock_shared(1398036306)";

/// How a group holds the write turn (see [`BEGIN_ALONE`]), and which of its commands run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Shared: only the group's results and work leases, judged and drawn together; those
    /// it leaves run alone, after.
    Together,
    /// Shared: only the commands that may share it ([`Command::shares_turn`]), one at a
    /// time.
    Sharing,
    /// Alone: every command left, one at a time.
    Alone,
}

/// Most times a group is run again because another relay's transaction was in its way
/// (a deadlock or serialization failure, which PostgreSQL resolves by failing one side).
const CONFLICT_RETRIES: usize = 8;

/// What tags the writes of a group's results judged together (no one command's).
const TOGETHER: usize = usize::MAX;

/// A PostgreSQL writer's connection, and what it needs to run groups on it.
struct PgGroups<'a, C> {
    runtime: &'a tokio::runtime::Runtime,
    conn: Option<PgWriter>,
    connect: C,
    lost: &'a AtomicU64,
    pipelined: &'a AtomicBool,
    times: &'a TurnTimes,
    failed: Vec<bool>,
    answered: Vec<bool>,
}

impl<C: Fn() -> Option<PgWriter>> PgGroups<'_, C> {
    /// Runs `group` holding the turn as `turn` says, connecting again where the
    /// connection was gone before the group began; marks in `self.answered` the commands
    /// that got their answer.
    fn run(&mut self, group: &mut [Box<dyn Command>], turn: Turn) -> Result<(), GroupError> {
        if self.conn.is_none() {
            self.conn = (self.connect)();
        }
        // With no connection (connecting just failed), connecting again at once is no use.
        let began_on_a_connection = self.conn.is_some();
        let mut outcome = self.run_once(group, turn);
        if began_on_a_connection && matches!(outcome, Err(GroupError::Unreachable(_))) {
            // Nothing of the group ran (the connection was gone before it began: the
            // server restarted, say), so it runs once more on a new connection rather
            // than failing every command in it.
            self.lost.fetch_add(1, Ordering::Relaxed);
            self.conn = (self.connect)();
            if self.conn.is_some() {
                outcome = self.run_once(group, turn);
            }
        }
        if let Err(e) = &outcome {
            tracing::error!("a group of {} writes failed: {e}", group.len());
            // Whatever went wrong (the connection, or the server refusing COMMIT), the
            // next group starts on a fresh connection rather than in a transaction of
            // unknown state.
            self.conn = None;
        }
        outcome
    }

    fn run_once(&mut self, group: &mut [Box<dyn Command>], turn: Turn) -> Result<(), GroupError> {
        match self.conn.as_ref() {
            Some(c) => run_group_postgres(
                self.runtime,
                c,
                group,
                &mut self.failed,
                &mut self.answered,
                self.pipelined.load(Ordering::Relaxed),
                turn,
                self.times,
            ),
            None => Err(GroupError::Unreachable(
                "no connection to the database".into(),
            )),
        }
    }
}

/// The PostgreSQL writer thread: as [`serve`], on `conn`, connecting again (`connect`)
/// after the connection was lost; a group that finds no connection fails. A group's
/// results and work leases are judged and drawn first, sharing the turn, and answered
/// once that commits; then, in a transaction of their own, the commands that may share
/// it (payouts); then the others, and those that were left, alone.
fn serve_postgres(
    runtime: &tokio::runtime::Runtime,
    conn: Option<PgWriter>,
    connect: impl Fn() -> Result<PgWriter, StorageError>,
    queued: &Queued,
    lost: &AtomicU64,
    pipelined: &AtomicBool,
    times: &TurnTimes,
) {
    let mut group = Vec::with_capacity(MAX_BATCH);
    let mut groups = PgGroups {
        runtime,
        conn,
        connect: || {
            connect()
                .inspect_err(|e| tracing::error!("cannot reach the database: {e}"))
                .ok()
        },
        lost,
        pipelined,
        times,
        failed: Vec::with_capacity(MAX_BATCH),
        answered: Vec::with_capacity(MAX_BATCH),
    };
    loop {
        // Held until the group has been answered.
        let (_running, _alone) = {
            let commands = queued
                .commands
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Ok(first) = commands.recv() else {
                break;
            };
            group.push(first);
            drain(&commands, &mut group);
            let mut lingered = Duration::ZERO;
            while group.len() < POSTGRES_LINGER_UNTIL
                && queued.busy.load(Ordering::Relaxed) > 0
                && lingered < POSTGRES_LINGER_MOST
            {
                std::thread::sleep(POSTGRES_LINGER);
                lingered += POSTGRES_LINGER;
                drain(&commands, &mut group);
            }
            if group.iter().any(|c| c.waits_for_earlier()) {
                let alone = queued.running.write();
                (None, Some(alone.unwrap_or_else(PoisonError::into_inner)))
            } else {
                let running = queued.running.read();
                (Some(running.unwrap_or_else(PoisonError::into_inner)), None)
            }
        };
        let _busy = Busy::running(&queued.busy);
        for turn in [Turn::Together, Turn::Sharing] {
            let runs = |c: &mut Box<dyn Command>| match turn {
                Turn::Together => c.together().is_some(),
                _ => c.shares_turn(),
            };
            if !group.iter_mut().any(runs) {
                continue;
            }
            if let Err(e) = groups.run(&mut group, turn) {
                for command in group.drain(..) {
                    command.reply(Some(&e));
                }
                break;
            }
            // What ran sharing the turn is answered now; what was left runs alone.
            let all = std::mem::take(&mut group);
            for (mut command, answered) in all.into_iter().zip(&groups.answered) {
                if *answered || (turn == Turn::Sharing && runs(&mut command)) {
                    command.reply(None);
                } else {
                    group.push(command);
                }
            }
        }
        if group.is_empty() {
            continue;
        }
        let outcome = groups.run(&mut group, Turn::Alone);
        for command in group.drain(..) {
            command.reply(outcome.as_ref().err());
        }
    }
}

/// Adds the time from its making to its drop to a counter: how long a group held the
/// write turn (it is made once the turn is taken, and dropped after the group's COMMIT or
/// ROLLBACK, which give the turn back).
struct InTurn<'a> {
    since: std::time::Instant,
    nanos: &'a AtomicU64,
}

impl<'a> InTurn<'a> {
    fn taken(nanos: &'a AtomicU64) -> Self {
        Self {
            since: std::time::Instant::now(),
            nanos,
        }
    }
}

impl Drop for InTurn<'_> {
    fn drop(&mut self) {
        let held = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(held, Ordering::Relaxed);
    }
}

/// [`run_group`] on PostgreSQL. A failed statement ends what PostgreSQL will do in a
/// transaction, so a command that failed after a statement ran is undone by rolling the
/// group back and running the others again; a command that failed because another
/// relay's transaction was in its way runs again with them.
///
/// In its turn for them, only the group's results and work leases run, together;
/// `answered` marks those that got their answer (nothing is marked if judging them
/// together failed: they all run again alone). Sharing the turn, only the commands that
/// may share it run.
///
/// Writes are pipelined ([`PipelinedDb`]): one a command did not keep is dropped unsent
/// where it can be, and one that fails when it is finally sent (with a later command's
/// statement, or with `COMMIT`) fails the command that wrote it.
#[allow(clippy::too_many_arguments)]
fn run_group_postgres(
    runtime: &tokio::runtime::Runtime,
    conn: &PgWriter,
    group: &mut [Box<dyn Command>],
    failed: &mut Vec<bool>,
    answered: &mut Vec<bool>,
    pipelined: bool,
    turn: Turn,
    times: &TurnTimes,
) -> Result<(), GroupError> {
    let to_group = |e: StorageError| GroupError::Postgres(e.to_string());
    failed.clear();
    failed.resize(group.len(), false);
    answered.clear();
    answered.resize(group.len(), false);
    let mut conflicts = 0;
    // Whether the group's results and leases are judged and drawn together: only in its
    // turn for that, and off once that failed, for the rest of the group's tries (they
    // are then left to run alone, as on SQLite).
    let mut together = turn == Turn::Together;
    // A statement failed: fail its command (or count a conflict, or stop judging results
    // together), and run the group again.
    let failure = |group: &mut [Box<dyn Command>],
                   failed: &mut [bool],
                   conflicts: &mut usize,
                   together: &mut bool,
                   f: Failure| {
        if f.conflicted && *conflicts < CONFLICT_RETRIES {
            *conflicts += 1;
        } else if f.command == TOGETHER {
            *together = false;
        } else if let Some(command) = group.get_mut(f.command) {
            failed[f.command] = true;
            command.fail(f.error());
        }
    };
    'replay: loop {
        if turn == Turn::Together && !together {
            // Judging them together failed: nothing of it stays, and every command is left.
            answered.fill(false);
            return Ok(());
        }
        let db = PipelinedDb::new(conn, runtime, pipelined);
        // Every earlier try of this group was rolled back: failing here, nothing of it
        // is written.
        let begin = match turn {
            Turn::Together | Turn::Sharing => BEGIN_SHARED,
            Turn::Alone => BEGIN_ALONE,
        };
        if let Err(e) = db.simple(begin) {
            return Err(if db.broken.get() {
                GroupError::Unreachable(e.to_string())
            } else {
                to_group(e)
            });
        }
        let _turn = InTurn::taken(match turn {
            Turn::Together | Turn::Sharing => &times.shared,
            Turn::Alone => &times.alone,
        });
        answered.fill(false);
        if together {
            // All of them were waiting at once, so any order of them is one their callers
            // could have seen.
            db.start_command(TOGETHER);
            let ran = catch_unwind(AssertUnwindSafe(|| {
                run_together(&db, group, failed, answered)
            }));
            let failure_now = db.take_failure();
            if !matches!(ran, Ok(Ok(()))) || failure_now.is_some() {
                db.simple("ROLLBACK").map_err(to_group)?;
                match failure_now {
                    Some(f) if f.conflicted && conflicts < CONFLICT_RETRIES => conflicts += 1,
                    _ => together = false,
                }
                continue 'replay;
            }
        }
        for (i, command) in group.iter_mut().enumerate() {
            let runs = match turn {
                Turn::Together => false,
                Turn::Sharing => command.shares_turn(),
                Turn::Alone => true,
            };
            if !runs || failed[i] || answered[i] {
                continue;
            }
            db.start_command(i);
            let (kept, panicked) = match catch_unwind(AssertUnwindSafe(|| command.run(&db))) {
                Ok(kept) => (kept, false),
                Err(_) => (false, true),
            };
            if !kept {
                db.drop_waiting();
            }
            if let Some(f) = db.take_failure() {
                // This command's statement, or a waiting write of an earlier one.
                db.simple("ROLLBACK").map_err(to_group)?;
                // A command that panicked does not run again, conflict or not.
                failed[i] |= panicked;
                failure(group, failed, &mut conflicts, &mut together, f);
                continue 'replay;
            }
            if kept {
                continue;
            }
            failed[i] = true;
            if panicked || db.sent() {
                db.simple("ROLLBACK").map_err(to_group)?;
                continue 'replay;
            }
        }
        match db.commit() {
            Ok(()) => return Ok(()),
            Err(_) if db.broken.get() => {
                return Err(GroupError::Postgres(
                    "the connection was lost at COMMIT".into(),
                ))
            }
            // A waiting write failed, and the server rolled the group back for it.
            Err(CommitError::Write(f)) => {
                failure(group, failed, &mut conflicts, &mut together, f);
            }
            // Another relay's transaction was in the way of the commit itself.
            Err(CommitError::Commit { conflicted, .. })
                if conflicted && conflicts < CONFLICT_RETRIES =>
            {
                conflicts += 1;
            }
            Err(CommitError::Commit { message, .. }) => return Err(GroupError::Postgres(message)),
        }
    }
}

/// Runs `group`'s results together, then its work leases together, marking in
/// `answered` the commands that got their answer there.
fn run_together(
    db: &dyn Db,
    group: &mut [Box<dyn Command>],
    failed: &[bool],
    answered: &mut [bool],
) -> Result<(), StorageError> {
    let mut results = Vec::new();
    let mut leases = Vec::new();
    for (i, command) in group.iter_mut().enumerate() {
        match command.together() {
            _ if failed[i] => {}
            Some(Together::Result(r)) => results.push((i, r)),
            Some(Together::Lease(l)) => leases.push((i, l)),
            None => {}
        }
    }
    // Results first: they wait for the units they lock, which draws (after them) only
    // take where no one holds them, so a group never waits for units holding units it
    // drew. The jobs' counters last: every group judging results of a job waits for
    // them, until COMMIT (see `BEGIN_ALONE`).
    let mut counters = None;
    if !results.is_empty() {
        let (done, added) = super::results::judge_together(db, &mut results)?;
        for ((i, _), done) in results.iter().zip(done) {
            answered[*i] |= done;
        }
        counters = Some(added);
    }
    if !leases.is_empty() {
        let done = super::leases::lease_together(db, &mut leases)?;
        for ((i, _), done) in leases.iter().zip(done) {
            answered[*i] |= done;
        }
    }
    if let Some(counters) = counters {
        let completed = super::results::write_counters(db, &counters)?;
        super::results::tell_completed(&mut results, &completed);
    }
    Ok(())
}

/// The writer thread: one group per turn until every [`Writer`] is dropped; between
/// groups, a WAL restart once the WAL file (`wal`) is past [`WAL_LIMIT_BYTES`].
fn serve(
    db: &Connection,
    commands: &mpsc::Receiver<Box<dyn Command>>,
    checkpoints: &mpsc::SyncSender<()>,
    wal: &Path,
) {
    let mut group = Vec::with_capacity(MAX_BATCH);
    let mut failed = Vec::with_capacity(MAX_BATCH);
    let mut last_group = 0;
    while let Ok(first) = commands.recv() {
        if std::fs::metadata(wal).is_ok_and(|m| m.len() > WAL_LIMIT_BYTES) {
            // Copies what the checkpointer has not (waiting for it if it is copying),
            // waits for readers still in the WAL, and makes the next commit start the WAL
            // over, cut back to the limit; this is also what holds the writer back when
            // checkpoints cannot keep up. The wait is short: a reader in a long
            // transaction postpones the restart to a later group instead of holding up
            // every write for the busy timeout.
            let restarted = db.busy_timeout(RESTART_WAIT).and_then(|()| {
                db.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
            });
            match restarted {
                Ok(0) => {}
                Ok(_) => tracing::debug!("WAL restart postponed: a reader is in the WAL"),
                Err(e) => tracing::warn!("WAL restart failed: {e}"),
            }
            if let Err(e) = db.busy_timeout(BUSY_WAIT) {
                tracing::warn!("cannot set the writer's busy timeout back: {e}");
            }
        }
        group.push(first);
        drain(commands, &mut group);
        if last_group >= LINGER_AFTER && group.len() < LINGER_UNTIL {
            std::thread::sleep(LINGER);
            drain(commands, &mut group);
        }
        last_group = group.len();
        let outcome = run_group(db, &mut group, &mut failed).map_err(GroupError::Sqlite);
        if let Err(e) = &outcome {
            tracing::error!("a group of {} writes failed: {e}", group.len());
            if !db.is_autocommit() {
                // Some failures (SQLITE_BUSY on COMMIT) leave the transaction open.
                let _ = exec(db, "ROLLBACK");
            }
        }
        for mut command in group.drain(..) {
            if outcome.is_ok() {
                command.after_commit(db);
            }
            command.reply(outcome.as_ref().err());
        }
        // One wake-up pending is enough: the checkpoint takes whatever is in the WAL.
        let _ = checkpoints.try_send(());
    }
}

/// Moves what is queued into `group`, up to [`MAX_BATCH`].
fn drain(commands: &mpsc::Receiver<Box<dyn Command>>, group: &mut Vec<Box<dyn Command>>) {
    while group.len() < MAX_BATCH {
        match commands.try_recv() {
            Ok(command) => group.push(command),
            Err(_) => break,
        }
    }
}

/// Runs `group` in one transaction and commits it; `failed` marks the commands that
/// failed (or asked for their writes to be undone), which a replay leaves out.
fn run_group(
    db: &Connection,
    group: &mut [Box<dyn Command>],
    failed: &mut Vec<bool>,
) -> rusqlite::Result<()> {
    failed.clear();
    failed.resize(group.len(), false);
    'replay: loop {
        exec(db, "BEGIN IMMEDIATE")?;
        for (i, command) in group.iter_mut().enumerate() {
            if failed[i] {
                continue;
            }
            let changes = db.total_changes();
            // A panicking command is undone like a failing one; its caller hears
            // `WriterGone`.
            let (kept, panicked) = match catch_unwind(AssertUnwindSafe(|| command.run(db))) {
                Ok(kept) => (kept, false),
                Err(_) => (false, true),
            };
            if db.is_autocommit() {
                // A statement's failure (disk full, I/O error) ended the transaction:
                // the group's earlier writes are gone with it.
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                    Some("the group's transaction ended inside a command".into()),
                ));
            }
            if kept {
                continue;
            }
            failed[i] = true;
            // Only inserts, updates and deletes write: none counted, nothing to undo.
            if panicked || db.total_changes() != changes {
                exec(db, "ROLLBACK")?;
                continue 'replay;
            }
        }
        return exec(db, "COMMIT");
    }
}

/// The checkpointer thread: a passive checkpoint after commits, at most one per
/// [`CHECKPOINT_PAUSE`], until the writer thread ends.
fn checkpoint(db: &Connection, woken: &mpsc::Receiver<()>) {
    while woken.recv().is_ok() {
        if let Err(e) = db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!("WAL checkpoint failed: {e}");
        }
        std::thread::sleep(CHECKPOINT_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sql::params;

    fn insert(
        writer: &Writer,
        x: i64,
        fail: bool,
    ) -> impl std::future::Future<Output = Result<(), StorageError>> + '_ {
        writer.exec(move |db| {
            db.execute("INSERT INTO t (x) VALUES (?1)", params![x])?;
            if fail {
                return Err(StorageError::Corrupt(format!("refused {x}")));
            }
            Ok(())
        })
    }

    /// Starts a command that keeps the writer thread busy for a while; returns once it
    /// runs, so what is sent next queues behind it.
    async fn hold(
        writer: &Writer,
    ) -> Result<tokio::task::JoinHandle<Result<(), StorageError>>, Box<dyn std::error::Error>> {
        let (running, started) = tokio::sync::oneshot::channel();
        let writer = writer.clone();
        let mut running = Some(running);
        let held = tokio::spawn(async move {
            writer
                .exec(move |_| {
                    if let Some(running) = running.take() {
                        let _ = running.send(());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    Ok(())
                })
                .await
        });
        started.await?;
        Ok(held)
    }

    /// A writer on a fresh database holding one table `t (x INTEGER PRIMARY KEY)`, and
    /// the directory to remove afterwards.
    async fn writer_with_table() -> Result<(std::path::PathBuf, Writer), Box<dyn std::error::Error>>
    {
        let dir = std::env::temp_dir().join(format!("starling-writer-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let writer = Writer::open(&dir.join("w.sqlite3"))?;
        writer
            .exec(|db| {
                db.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)", params![])?;
                Ok::<_, StorageError>(())
            })
            .await?;
        Ok((dir, writer))
    }

    #[tokio::test]
    async fn a_failing_command_is_rolled_back_alone_and_its_group_commits(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (dir, writer) = writer_with_table().await?;
        // The first command holds the thread, so the others queue and run as one group.
        let held = hold(&writer).await?;
        let panics = writer.exec(|db| -> Result<(), StorageError> {
            db.execute("INSERT INTO t (x) VALUES (5)", params![])?;
            panic!("a bug in a command");
        });
        let (one, two, three, panicked, four) = tokio::join!(
            insert(&writer, 1, false),
            insert(&writer, 2, true),
            insert(&writer, 3, false),
            panics,
            insert(&writer, 4, false),
        );
        held.await??;
        one?;
        assert!(matches!(two, Err(StorageError::Corrupt(_))), "{two:?}");
        three?;
        assert!(
            matches!(panicked, Err(StorageError::WriterGone)),
            "{panicked:?}"
        );
        four?;
        let stored = writer
            .exec(|db| db.query_all("SELECT x FROM t ORDER BY x", params![], |r| r.get::<i64>(0)))
            .await?;
        assert_eq!(stored, [1, 3, 4]);
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_steady_writes_the_wal_starts_over_instead_of_growing(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (dir, writer) = writer_with_table().await?;
        writer
            .exec(|db| {
                db.execute(
                    "CREATE TABLE pages (x INTEGER PRIMARY KEY, body BLOB)",
                    params![],
                )?;
                Ok::<_, StorageError>(())
            })
            .await?;
        // Eight writers that never pause keep a group queued behind every commit: the
        // load under which SQLite alone never starts the WAL over. About 200 MB of pages
        // go through the WAL, three times the size it is restarted at.
        let mut tasks = Vec::new();
        for task in 0..8i64 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..6_000i64 {
                    writer
                        .exec(move |db| {
                            db.execute(
                                "INSERT INTO pages (x, body) VALUES (?1, zeroblob(4000))",
                                params![task * 1_000_000 + i],
                            )?;
                            Ok::<_, StorageError>(())
                        })
                        .await?;
                }
                Ok::<_, StorageError>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let wal = std::fs::metadata(dir.join("w.sqlite3-wal"))?.len();
        let limit = 2 * WAL_LIMIT_BYTES;
        assert!(
            wal < limit,
            "the WAL grew to {} MB (limit {} MB)",
            wal >> 20,
            limit >> 20
        );
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// A command that sends its write to be pipelined and returns at once.
    fn write(
        writer: &Writer,
        x: i64,
    ) -> impl std::future::Future<Output = Result<(), StorageError>> + '_ {
        writer.exec(move |db| db.write("INSERT INTO t (x) VALUES (?1)", params![x]))
    }

    #[tokio::test]
    async fn on_postgres_a_pipelined_write_that_fails_later_fails_only_its_own_command(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let url = crate::storage::test_postgres::Postgres::shared()?.database()?;
        let writer = Writer::open_postgres(&url, Arc::default()).await?;
        writer
            .exec(|db| {
                db.execute("CREATE TABLE t (x BIGINT PRIMARY KEY)", params![])?;
                db.execute("INSERT INTO t (x) VALUES (7)", params![])?;
                Ok::<_, StorageError>(())
            })
            .await?;
        // Every connection busy, so that what is sent next queues behind them.
        let mut held = Vec::new();
        for _ in 0..POSTGRES_WRITERS {
            held.push(hold(&writer).await?);
        }
        // One group: a duplicate key that fails only when the next command reads, a
        // command whose read sends it, one that writes and fails itself (its write is
        // never sent), and a duplicate that fails only with the group's COMMIT.
        let reads = writer.exec(|db| {
            db.write("INSERT INTO t (x) VALUES (8)", params![])?;
            db.query_one("SELECT COUNT(*) FROM t", params![], |r| r.get::<i64>(0))
        });
        let refused = writer.exec(|db| -> Result<(), StorageError> {
            db.write("INSERT INTO t (x) VALUES (10)", params![])?;
            Err(StorageError::Corrupt("refused 10".into()))
        });
        let (early, read, nine, refused, late) = tokio::join!(
            write(&writer, 7),
            reads,
            write(&writer, 9),
            refused,
            write(&writer, 8),
        );
        for held in held {
            held.await??;
        }
        assert!(matches!(early, Err(StorageError::Commit(_))), "{early:?}");
        assert_eq!(
            read?, 2,
            "the read sees its own write and the table, not the failed one"
        );
        nine?;
        assert!(
            matches!(refused, Err(StorageError::Corrupt(_))),
            "{refused:?}"
        );
        assert!(matches!(late, Err(StorageError::Commit(_))), "{late:?}");
        let stored = writer
            .exec(|db| db.query_all("SELECT x FROM t ORDER BY x", params![], |r| r.get::<i64>(0)))
            .await?;
        assert_eq!(stored, [7, 8, 9]);
        Ok(())
    }

    /// A flush is taken from the queue by whichever connection is free, and still waits
    /// for a write another connection took before it. (Taking the turn alone also waits
    /// for a group that began first; `Queued::running` covers one taken from the queue
    /// but not yet begun, a window too short for a test to hit on purpose.)
    #[tokio::test]
    async fn on_postgres_a_flush_waits_for_what_other_connections_run(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let url = crate::storage::test_postgres::Postgres::shared()?.database()?;
        let writer = Writer::open_postgres(&url, Arc::default()).await?;
        writer
            .exec(|db| db.execute("CREATE TABLE t (x BIGINT PRIMARY KEY)", params![]))
            .await?;
        let (running, started) = tokio::sync::oneshot::channel();
        let mut running = Some(running);
        let slow = {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .exec(move |db| {
                        if let Some(running) = running.take() {
                            let _ = running.send(());
                        }
                        std::thread::sleep(Duration::from_millis(300));
                        db.write("INSERT INTO t (x) VALUES (1)", params![])
                    })
                    .await
            })
        };
        started.await?;
        writer.flush().await?;
        // On the connection that took the flush, were it free while the slow write runs.
        let stored = writer
            .exec(|db| db.query_one("SELECT COUNT(*) FROM t", params![], |r| r.get::<i64>(0)))
            .await?;
        assert_eq!(
            stored, 1,
            "the flush returned before the slow write committed"
        );
        slow.await??;
        Ok(())
    }

    #[tokio::test]
    async fn when_a_group_cannot_commit_every_command_in_it_fails(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (dir, writer) = writer_with_table().await?;
        let held = hold(&writer).await?;
        // Ends the group's transaction behind the writer's back, so the group fails.
        let rogue = writer.exec(|db| {
            db.execute("ROLLBACK", params![])?;
            Ok::<_, StorageError>(())
        });
        let (one, rogue, two) =
            tokio::join!(insert(&writer, 1, false), rogue, insert(&writer, 2, false),);
        held.await??;
        for answer in [one, rogue, two] {
            assert!(matches!(answer, Err(StorageError::Sqlite(_))), "{answer:?}");
        }
        insert(&writer, 3, false).await?;
        let stored = writer
            .exec(|db| {
                db.query_one("SELECT COUNT(*) FROM t WHERE x < 3", params![], |r| {
                    r.get::<i64>(0)
                })
            })
            .await?;
        assert_eq!(stored, 0, "nothing of the failed group stays");
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
