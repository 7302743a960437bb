//! The writer's PostgreSQL connection, pipelined: a write whose count nobody reads
//! ([`Db::write`]) waits in the connection and goes to the server with the next
//! statement that needs an answer (a read, a counted write, or the group's `COMMIT`),
//! all of them in one round trip.
//!
//! Why: a unit is about eleven statements (the lease's draw and its writes, the result's
//! judging load and its writes, the accruals), and waiting for each on the writer's thread
//! capped one relay at about 1/(11 × 50 µs) units a second whatever its CPU; half the
//! writer's samples were the kernel's socket wake-ups. Only the reads need an answer
//! before the transaction goes on (two a unit), so the writes ride along with them.
//! sqlx has no pipelining, so this connection is tokio-postgres's; the readers,
//! migrations and LISTEN stay on sqlx ([`super::postgres`]).
//!
//! A write that waited fails where it is finally sent, perhaps during a later command of
//! the group: each waiting write is tagged with the command that wrote it, so the writer
//! fails that command ([`PipelinedDb::take_failure`]) and runs the others again. A
//! command whose writes are not kept (it failed, looked only, or panicked) has those
//! still waiting dropped unsent.

use super::sql::{to_postgres, Cell, Db, Dialect, Row, ToParam, Value};
use super::StorageError;
use bytes::BytesMut;
use std::cell::{Cell as Flag, RefCell};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use tokio_postgres::types::{IsNull, Kind, ToSql, Type};
use tokio_postgres::{Client, Statement};

/// Prepared statements kept per connection (by their SQLite spelling): every statement
/// the writer runs, with the `format!`-built variants, fits; the bound keeps a bug from
/// growing the map without end.
const STATEMENTS: usize = 1_024;

/// The type a statement declares for a parameter bound to `value` when it is prepared,
/// as sqlx declared them; a NULL leaves it to the server (oid 0).
fn declared(value: &Value) -> Type {
    match value {
        Value::Null => Type::new("unspecified".into(), 0, Kind::Pseudo, "pg_catalog".into()),
        Value::Int(_) => Type::INT8,
        Value::Real(_) => Type::FLOAT8,
        Value::Text(_) => Type::TEXT,
        Value::Blob(_) => Type::BYTEA,
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        // A statement first prepared with a NULL somewhere lets the server choose that
        // parameter's type; later values are written as that type.
        match self {
            Self::Null => Ok(IsNull::Yes),
            Self::Int(v) => match *ty {
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Self::Real(v) => match *ty {
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Self::Text(v) => v.as_str().to_sql(ty, out),
            Self::Blob(v) => v.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked by `to_sql` itself, against the type the server chose.
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

struct PgRowCells<'r>(&'r tokio_postgres::Row);

impl Row for PgRowCells<'_> {
    fn cell(&self, i: usize) -> Result<Cell<'_>, StorageError> {
        cell(self.0, i, &i)
    }

    fn cell_named(&self, name: &str) -> Result<Cell<'_>, StorageError> {
        let i = self
            .0
            .columns()
            .iter()
            .position(|c| c.name() == name)
            .ok_or_else(|| StorageError::Corrupt(format!("no column {name}")))?;
        cell(self.0, i, &name)
    }
}

fn cell<'r>(
    row: &'r tokio_postgres::Row,
    i: usize,
    name: &dyn std::fmt::Display,
) -> Result<Cell<'r>, StorageError> {
    let column = row
        .columns()
        .get(i)
        .ok_or_else(|| StorageError::Corrupt(format!("no column {name}")))?;
    let ty = column.type_().clone();
    let undecodable =
        |e: tokio_postgres::Error| StorageError::Corrupt(format!("column {name} ({ty}): {e}"));
    let value = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int)),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map(|v| v.map(|v| Cell::Int(i64::from(v)))),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map(|v| v.map(|v| Cell::Int(i64::from(v)))),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map(|v| v.map(|v| Cell::Int(i64::from(v)))),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map(|v| v.map(Cell::Real)),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map(|v| v.map(|v| Cell::Real(f64::from(v)))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            row.try_get::<_, Option<&str>>(i).map(|v| v.map(Cell::Text))
        }
        Type::BYTEA => row
            .try_get::<_, Option<&[u8]>>(i)
            .map(|v| v.map(Cell::Blob)),
        other => {
            return Err(StorageError::Corrupt(format!(
                "column {name} is of type {other}, which the relay does not read (cast it)"
            )))
        }
    };
    Ok(value.map_err(undecodable)?.unwrap_or(Cell::Null))
}

/// Statements are all prepared again (and so planned again) each time the statements
/// run on a connection reach a power of two from this on. The writer's plans are made
/// once (`writer::WRITER_SESSION`), from the tables' sizes then, and a network's tables
/// grow as its statements run: a plan made while a table was nearly empty may read all
/// of it (a group's leases, written together, each looked up by hashing every lease;
/// 3 ms a statement at 20 000 units). Planning again each time the count doubles keeps
/// every plan made on tables at least about half their size, for a few dozen plans of
/// each statement in a connection's life. PostgreSQL's statistics also renew the plans,
/// but only once autovacuum analyzes a table, a minute or more apart.
const REPLAN_FROM: u64 = 1_024;

/// The writer's connection to the server and what it prepared on it.
pub(super) struct Connection {
    client: Client,
    /// Prepared statements by their SQLite spelling.
    statements: RefCell<HashMap<String, Statement>>,
    /// Statements run so far, counted to know when to prepare them all again.
    runs: std::cell::Cell<u64>,
    /// Round trips to the server so far, counted for the bench (shared by the writer's
    /// connections over its life).
    round_trips: Arc<AtomicU64>,
}

impl Connection {
    /// Connects to the server at `url` with the writer's session `options` (`-c name=value`
    /// pairs), giving up after `timeout`; the connection is driven by tasks on `runtime`,
    /// which run whenever the writer waits on it.
    pub(super) fn open(
        runtime: &tokio::runtime::Runtime,
        url: &str,
        options: &str,
        timeout: std::time::Duration,
        round_trips: Arc<AtomicU64>,
    ) -> Result<Self, StorageError> {
        let mut config: tokio_postgres::Config = url.parse()?;
        config
            .options(options)
            .application_name("starling-relay")
            .connect_timeout(timeout);
        let connect = async {
            tokio::time::timeout(timeout, config.connect(tokio_postgres::NoTls))
                .await
                .map_err(|_| {
                    StorageError::Unreachable(format!(
                        "no answer from the database within {timeout:?}"
                    ))
                })?
                .map_err(StorageError::from)
        };
        let (client, connection) = runtime.block_on(connect)?;
        runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("the writer's connection to the database ended: {e}");
            }
        });
        Ok(Self {
            client,
            statements: RefCell::new(HashMap::new()),
            runs: std::cell::Cell::new(0),
            round_trips,
        })
    }

    fn round_trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }
}

/// A write waiting to be sent, tagged with the command that wrote it.
struct Waiting {
    command: usize,
    statement: Statement,
    values: Vec<Value>,
}

/// A statement that failed: which command it was (a waiting write's, or the running
/// command's own), and how.
pub(super) struct Failure {
    pub(super) command: usize,
    /// Whether another transaction was in its way (running the group again may work).
    pub(super) conflicted: bool,
    pub(super) message: String,
}

impl Failure {
    /// The error its command hears when it is failed.
    pub(super) fn error(&self) -> StorageError {
        StorageError::Commit(self.message.clone())
    }
}

/// Why a group's `COMMIT` did not commit.
pub(super) enum CommitError {
    /// A write sent with it failed (its command is named), so the server rolled the
    /// group back.
    Write(Failure),
    /// `COMMIT` itself failed.
    Commit {
        /// Whether another transaction was in its way.
        conflicted: bool,
        message: String,
    },
}

/// The writer's connection inside the group's transaction.
pub(super) struct PipelinedDb<'c> {
    conn: &'c Connection,
    runtime: &'c tokio::runtime::Runtime,
    waiting: RefCell<Vec<Waiting>>,
    /// The running command (what tags its writes).
    command: Flag<usize>,
    /// The first statement that failed since the last [`PipelinedDb::take_failure`].
    failure: RefCell<Option<Failure>>,
    /// Whether the connection itself failed (so the next statement needs a new one).
    pub(super) broken: Flag<bool>,
    /// Whether a write of the running command reached the server (so undoing it takes
    /// rolling the group back).
    sent: Flag<bool>,
    /// Whether writes wait to go with the next statement (off: each is sent and waited
    /// for, as before pipelining; the bench's baseline).
    pipelined: bool,
}

impl<'c> PipelinedDb<'c> {
    pub(super) fn new(
        conn: &'c Connection,
        runtime: &'c tokio::runtime::Runtime,
        pipelined: bool,
    ) -> Self {
        Self {
            pipelined,
            conn,
            runtime,
            waiting: RefCell::new(Vec::new()),
            command: Flag::new(0),
            failure: RefCell::new(None),
            broken: Flag::new(false),
            sent: Flag::new(false),
        }
    }

    /// Runs a statement with no parameters at once (`BEGIN`, `ROLLBACK`), dropping any
    /// write still waiting (a rollback undoes it anyway).
    pub(super) fn simple(&self, sql: &str) -> Result<(), StorageError> {
        self.waiting.borrow_mut().clear();
        self.conn.round_trip();
        self.runtime
            .block_on(self.conn.client.batch_execute(sql))
            .map_err(|e| self.classify(e))
    }

    /// What follows is `command`'s.
    pub(super) fn start_command(&self, command: usize) {
        self.command.set(command);
        self.sent.set(false);
    }

    /// Whether a write of the running command reached the server.
    pub(super) fn sent(&self) -> bool {
        self.sent.get()
    }

    /// Drops the running command's writes still waiting: they are not to be kept.
    pub(super) fn drop_waiting(&self) {
        let command = self.command.get();
        self.waiting.borrow_mut().retain(|w| w.command != command);
    }

    /// The first statement that failed since the last call, if any. PostgreSQL refuses
    /// every statement after a failure until the transaction is rolled back.
    pub(super) fn take_failure(&self) -> Option<Failure> {
        self.failure.borrow_mut().take()
    }

    /// Sends the writes still waiting and `COMMIT` in one round trip. A waiting write that
    /// fails turns the `COMMIT` into a rollback (the server's rule for a failed
    /// transaction), and is returned as the failure of its command.
    pub(super) fn commit(&self) -> Result<(), CommitError> {
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        let client = &self.conn.client;
        self.conn.round_trip();
        let (writes, commit) =
            self.runtime
                .block_on(send_then(client, &waiting, client.batch_execute("COMMIT")));
        if let Some((i, e)) = writes {
            let error = self.classify(e);
            return Err(CommitError::Write(Failure {
                command: waiting[i].command,
                conflicted: is_conflict(&error),
                message: error.to_string(),
            }));
        }
        commit.map_err(|e| {
            let error = self.classify(e);
            CommitError::Commit {
                conflicted: is_conflict(&error),
                message: error.to_string(),
            }
        })
    }

    fn statement(&self, sql: &str, values: &[Value]) -> Result<Statement, StorageError> {
        let runs = self.conn.runs.get() + 1;
        self.conn.runs.set(runs);
        if runs >= REPLAN_FROM && runs.is_power_of_two() {
            self.conn.statements.borrow_mut().clear();
        }
        if let Some(s) = self.conn.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let types: Vec<Type> = values.iter().map(declared).collect();
        let spelled = to_postgres(sql);
        self.conn.round_trip();
        let statement = self
            .runtime
            .block_on(self.conn.client.prepare_typed(&spelled, &types))
            .map_err(|e| {
                // Statements are the relay's own text, never a peer's.
                tracing::debug!(statement = %spelled, "PostgreSQL refused a statement: {e}");
                let error = self.classify(e);
                self.fail(self.command.get(), &error);
                error
            })?;
        let mut statements = self.conn.statements.borrow_mut();
        if statements.len() < STATEMENTS {
            statements.insert(sql.to_owned(), statement.clone());
        }
        Ok(statement)
    }

    /// Sends the waiting writes and then `last` in one round trip; what `last` answers.
    fn send<T>(
        &self,
        last: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StorageError> {
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        let command = self.command.get();
        if waiting.iter().any(|w| w.command == command) {
            self.sent.set(true);
        }
        self.conn.round_trip();
        let (writes, answer) = self
            .runtime
            .block_on(send_then(&self.conn.client, &waiting, last));
        if let Some((i, e)) = writes {
            // The write failed first, and the server refused `last` for it.
            let error = self.classify(e);
            self.fail(waiting[i].command, &error);
            return Err(StorageError::Commit(format!(
                "an earlier write of this transaction failed: {error}"
            )));
        }
        answer.map_err(|e| {
            let error = self.classify(e);
            self.fail(command, &error);
            error
        })
    }

    fn fail(&self, command: usize, error: &StorageError) {
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            *failure = Some(Failure {
                command,
                conflicted: is_conflict(error),
                message: error.to_string(),
            });
        }
    }

    fn classify(&self, e: tokio_postgres::Error) -> StorageError {
        if connection_lost(&e) {
            self.broken.set(true);
        }
        StorageError::from(e)
    }

    fn values(params: &[&dyn ToParam]) -> Vec<Value> {
        params.iter().map(|p| Value::of(p.to_param())).collect()
    }
}

/// `values` as tokio-postgres binds them.
fn bound(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// Sends every write of `waiting`, then `last`, before reading any answer; the first
/// write to fail (by its index), and what `last` answered.
///
/// tokio-postgres sends a request when its future is first polled, so each is polled
/// once here in order (the server runs them in the order they arrive) before any is
/// awaited; awaiting them in order then reads the answers as they come.
async fn send_then<T>(
    client: &Client,
    waiting: &[Waiting],
    last: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> (
    Option<(usize, tokio_postgres::Error)>,
    Result<T, tokio_postgres::Error>,
) {
    type Send<'a> =
        Pin<Box<dyn std::future::Future<Output = Result<u64, tokio_postgres::Error>> + 'a>>;
    let mut writes: Vec<Send<'_>> = waiting
        .iter()
        .map(|w| {
            Box::pin(async move { client.execute(&w.statement, &bound(&w.values)).await })
                as Send<'_>
        })
        .collect();
    let mut last = std::pin::pin!(last);
    let mut answered: Vec<Option<Result<u64, tokio_postgres::Error>>> =
        Vec::with_capacity(writes.len());
    let mut last_answer = None;
    std::future::poll_fn(|cx| {
        for write in &mut writes {
            answered.push(match write.as_mut().poll(cx) {
                Poll::Ready(answer) => Some(answer),
                Poll::Pending => None,
            });
        }
        if let Poll::Ready(answer) = last.as_mut().poll(cx) {
            last_answer = Some(answer);
        }
        Poll::Ready(())
    })
    .await;
    let mut failed = None;
    for (i, (write, answer)) in writes.iter_mut().zip(answered).enumerate() {
        let answer = match answer {
            Some(answer) => answer,
            None => write.await,
        };
        if let (None, Err(e)) = (&failed, answer) {
            failed = Some((i, e));
        }
    }
    let last_answer = match last_answer {
        Some(answer) => answer,
        None => last.await,
    };
    (failed, last_answer)
}

impl Db for PipelinedDb<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<u64, StorageError> {
        let values = Self::values(params);
        let statement = self.statement(sql, &values)?;
        self.sent.set(true);
        self.send(self.conn.client.execute(&statement, &bound(&values)))
    }

    fn write(&self, sql: &str, params: &[&dyn ToParam]) -> Result<(), StorageError> {
        if !self.pipelined {
            return self.execute(sql, params).map(|_| ());
        }
        let values = Self::values(params);
        let statement = self.statement(sql, &values)?;
        self.waiting.borrow_mut().push(Waiting {
            command: self.command.get(),
            statement,
            values,
        });
        Ok(())
    }

    fn for_each_row(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        each: &mut dyn FnMut(&dyn Row) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let values = Self::values(params);
        let statement = self.statement(sql, &values)?;
        // `RETURNING` writes; a plain query may too (a function), so count it as one
        // unless it is a SELECT.
        if !sql
            .trim_start()
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("select"))
        {
            self.sent.set(true);
        }
        let rows = self.send(self.conn.client.query(&statement, &bound(&values)))?;
        for row in &rows {
            each(&PgRowCells(row))?;
        }
        Ok(())
    }
}

/// Whether `e` says the connection is gone (the server shut down or restarted, ended
/// this session, or cannot be reached), not that a statement was refused.
pub(super) fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08: connection exceptions; 57P0x: the server shutting down or starting;
        // 25P03: this session idled too long in a transaction and was ended.
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P") || code == "25P03"
        }
        // No SQLSTATE: the socket, the protocol, or a timeout.
        None => e.as_db_error().is_none() && e.source().is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// Whether `e` is PostgreSQL's answer to two transactions in each other's way (a
/// deadlock, or a serialization failure): running the group again may well succeed.
pub(super) fn is_conflict(e: &StorageError) -> bool {
    match e {
        StorageError::Postgres(e) => e
            .code()
            .is_some_and(|c| matches!(c.code(), "40001" | "40P01")),
        _ => false,
    }
}
