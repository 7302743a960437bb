//! PostgreSQL behind the [`Db`] seam for the reader threads and `migrate`: sqlx on a
//! connection of each thread's own, driven by `block_on`, each statement one round trip.
//! The writer's connection is [`super::pipeline`]'s.
//!
//! Why `block_on` and not async readers: reads are written once, as plain functions of
//! `&dyn Db` (see [`super::sql`]), and SQLite's side of the seam is a synchronous
//! connection on a thread.

use super::sql::{to_postgres, Cell, Db, Dialect, Param, Row, ToParam};
use super::StorageError;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgArguments, PgConnection, PgRow, PgTypeInfo, Postgres};
use sqlx::{Arguments, Decode, Encode, Row as _, TypeInfo, ValueRef};
use std::cell::RefCell;
use std::collections::HashMap;

/// A NULL of no declared type: the server infers it from where it is used, as SQLite
/// does not care (a NULL bound as BIGINT into a TEXT column would be an error).
struct Untyped;

impl sqlx::Type<Postgres> for Untyped {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(0))
    }
}

impl Encode<'_, Postgres> for Untyped {
    fn encode_by_ref(&self, _buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Ok(IsNull::Yes)
    }
}

fn arguments(params: &[&dyn ToParam]) -> Result<PgArguments, StorageError> {
    let mut args = PgArguments::default();
    for p in params {
        let added = match p.to_param() {
            Param::Null => args.add(Untyped),
            Param::Int(v) => args.add(v),
            Param::Real(v) => args.add(v),
            Param::Text(v) => args.add(v),
            Param::Blob(v) => args.add(v),
        };
        added.map_err(|e| StorageError::Corrupt(format!("cannot bind a parameter: {e}")))?;
    }
    Ok(args)
}

struct PgCells<'r>(&'r PgRow);

impl Row for PgCells<'_> {
    fn cell(&self, i: usize) -> Result<Cell<'_>, StorageError> {
        pg_cell(self.0.try_get_raw(i)?, &i)
    }

    fn cell_named(&self, name: &str) -> Result<Cell<'_>, StorageError> {
        pg_cell(self.0.try_get_raw(name)?, &name)
    }
}

fn pg_cell<'r>(
    value: sqlx::postgres::PgValueRef<'r>,
    i: &dyn std::fmt::Display,
) -> Result<Cell<'r>, StorageError> {
    {
        if value.is_null() {
            return Ok(Cell::Null);
        }
        let kind = value.type_info().name().to_owned();
        let undecodable =
            |e: BoxDynError| StorageError::Corrupt(format!("column {i} ({kind}): {e}"));
        Ok(match kind.as_str() {
            "INT8" => Cell::Int(<i64 as Decode<Postgres>>::decode(value).map_err(undecodable)?),
            "INT4" => Cell::Int(i64::from(
                <i32 as Decode<Postgres>>::decode(value).map_err(undecodable)?,
            )),
            "INT2" => Cell::Int(i64::from(
                <i16 as Decode<Postgres>>::decode(value).map_err(undecodable)?,
            )),
            "BOOL" => Cell::Int(i64::from(
                <bool as Decode<Postgres>>::decode(value).map_err(undecodable)?,
            )),
            "FLOAT8" => Cell::Real(<f64 as Decode<Postgres>>::decode(value).map_err(undecodable)?),
            "FLOAT4" => Cell::Real(f64::from(
                <f32 as Decode<Postgres>>::decode(value).map_err(undecodable)?,
            )),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => {
                Cell::Text(<&str as Decode<Postgres>>::decode(value).map_err(undecodable)?)
            }
            "BYTEA" => Cell::Blob(<&[u8] as Decode<Postgres>>::decode(value).map_err(undecodable)?),
            other => {
                return Err(StorageError::Corrupt(format!(
                    "column {i} is of type {other}, which the relay does not read (cast it)"
                )))
            }
        })
    }
}

/// The writer's connection inside the group's transaction.
pub(super) struct PgDb<'c> {
    conn: RefCell<&'c mut PgConnection>,
    runtime: &'c tokio::runtime::Runtime,
    /// Statements in PostgreSQL's spelling, by their SQLite spelling.
    spelled: &'c RefCell<HashMap<String, String>>,
    /// Whether a statement failed since [`PgDb::new`]: PostgreSQL then refuses every
    /// statement until the transaction is rolled back.
    pub(super) aborted: std::cell::Cell<bool>,
    /// Whether the connection itself failed (so the next statement needs a new one).
    pub(super) broken: std::cell::Cell<bool>,
}

impl<'c> PgDb<'c> {
    pub(super) fn new(
        conn: &'c mut PgConnection,
        runtime: &'c tokio::runtime::Runtime,
        spelled: &'c RefCell<HashMap<String, String>>,
    ) -> Self {
        Self {
            conn: RefCell::new(conn),
            runtime,
            spelled,
            aborted: std::cell::Cell::new(false),
            broken: std::cell::Cell::new(false),
        }
    }

    fn spelling(&self, sql: &str) -> String {
        let mut spelled = self.spelled.borrow_mut();
        if let Some(s) = spelled.get(sql) {
            return s.clone();
        }
        let s = to_postgres(sql).into_owned();
        // `format!`-built statements have few variants; a bound keeps a bug from growing
        // the map without end.
        if spelled.len() < 1_024 {
            spelled.insert(sql.to_owned(), s.clone());
        }
        s
    }

    /// Runs a statement with no parameters (`BEGIN`, `COMMIT`, `ROLLBACK`, `SET …`).
    pub(super) fn simple(&self, sql: &str) -> Result<(), StorageError> {
        let mut conn = self.conn.borrow_mut();
        self.runtime
            .block_on(sqlx::Executor::execute(&mut **conn, sql))
            .map(|_| ())
            .map_err(|e| self.failed(e, sql))
    }

    fn failed(&self, e: sqlx::Error, sql: &str) -> StorageError {
        // Statements are the relay's own text, never a peer's.
        tracing::debug!(statement = sql, "PostgreSQL refused a statement: {e}");
        if connection_lost(&e)
            || !matches!(
                e,
                sqlx::Error::Database(_)
                    | sqlx::Error::ColumnNotFound(_)
                    | sqlx::Error::ColumnDecode { .. }
            )
        {
            self.broken.set(true);
        }
        self.aborted.set(true);
        StorageError::Db(e)
    }
}

impl Db for PgDb<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<u64, StorageError> {
        let sql = self.spelling(sql);
        let args = arguments(params)?;
        let mut conn = self.conn.borrow_mut();
        match self
            .runtime
            .block_on(sqlx::query_with(&sql, args).execute(&mut **conn))
        {
            Ok(done) => Ok(done.rows_affected()),
            Err(e) => Err(self.failed(e, &sql)),
        }
    }

    fn for_each_row(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        each: &mut dyn FnMut(&dyn Row) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let sql = self.spelling(sql);
        let args = arguments(params)?;
        let rows = {
            let mut conn = self.conn.borrow_mut();
            self.runtime
                .block_on(sqlx::query_with(&sql, args).fetch_all(&mut **conn))
        };
        let rows = rows.map_err(|e| self.failed(e, &sql))?;
        for row in &rows {
            each(&PgCells(row))?;
        }
        Ok(())
    }
}

/// How long connecting to PostgreSQL may take before it counts as unreachable.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects with `options`, giving up after [`CONNECT_TIMEOUT`]: a database host that
/// drops packets would otherwise hold the writer or a reader for the system's TCP
/// timeout (minutes) on every try.
pub(super) async fn connect(
    options: &sqlx::postgres::PgConnectOptions,
) -> Result<sqlx::postgres::PgConnection, sqlx::Error> {
    use sqlx::ConnectOptions as _;
    tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
        .await
        .map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from the database within {CONNECT_TIMEOUT:?}"),
            ))
        })?
}

/// Whether `e` says the connection is gone (the server was shut down or restarted, ended
/// this session, or cannot be reached), not that a statement was refused.
pub(super) fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        // Class 08: connection exceptions; 57P0x: the server shutting down or starting;
        // 25P03: this session idled too long in a transaction and was ended.
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "25P03"),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}
