//! Moving a network from its SQLite file to PostgreSQL (`relay-server migrate`): every
//! row of every table, in one PostgreSQL transaction, so the copy is all there or not at
//! all. The ledger's rows are copied as they are, so its chain and signatures verify
//! the same afterwards; jobs, units and leases go in their SQLite insertion order, so the
//! orders the relay reads by (`rowid`) are kept.

use super::job_keys::JobKeys;
use super::postgres::PgDb;
use super::sql::{params, Cell, Db, ToParam, Value};
use super::{Storage, StorageError};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions as _;
use starling_protocol::JobId;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr as _;

/// Tables in an order that satisfies their foreign keys.
const TABLES: &[&str] = &[
    "jobs",
    "units",
    "leases",
    "idempotency_keys",
    "job_inputs",
    "wallets",
    "wallet_kernels",
    "accounts",
    "balances",
    "ledger",
    "transfer_nonces",
    "accrued_jobs",
    "accruals",
    "sites",
    "relays",
    "custom_kernels",
    "kernel_failures",
];

/// Tables whose rows are copied in insertion order (PostgreSQL numbers them anew, in
/// the same order).
const ORDERED: &[&str] = &["jobs", "units", "leases"];

/// Most parameters in one `INSERT` (PostgreSQL allows 65 535).
const MAX_PARAMS: usize = 16_000;

/// What a copy moved, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    /// (table, rows), in copy order.
    pub tables: Vec<(&'static str, u64)>,
}

impl Storage {
    /// Copies the network in `from` (a data directory's SQLite database, migrated to the
    /// current schema first) into the empty PostgreSQL database at `to`. Refuses a target
    /// that holds any row, and changes nothing there when any row fails.
    pub async fn copy_sqlite_to_postgres(from: &Path, to: &str) -> Result<Copied, StorageError> {
        let path = from.join("starling.sqlite3");
        if !path.is_file() {
            return Err(StorageError::Corrupt(format!(
                "no SQLite database at {} to migrate",
                path.display()
            )));
        }
        // Opening each side brings its schema up to date; the PostgreSQL side also takes
        // the writer's lock, so no relay is running on it meanwhile.
        let source = Self::open(from).await?;
        source.flush().await?;
        drop(source);
        let target = Self::open_postgres(to, from).await?;
        let options = PgConnectOptions::from_str(to)?;
        // SQLite's job keys are files; PostgreSQL's live sealed in the jobs' rows.
        let keys = (JobKeys::open(from)?, JobKeys::in_rows(from)?);
        let copied = tokio::task::spawn_blocking(move || copy(&path, &options, &keys))
            .await
            .map_err(|_| StorageError::WriterGone)?;
        drop(target);
        copied
    }
}

fn copy(
    path: &Path,
    options: &PgConnectOptions,
    keys: &(JobKeys, JobKeys),
) -> Result<Copied, StorageError> {
    let sqlite = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StorageError::Commit(e.to_string()))?;
    let mut conn = runtime.block_on(options.connect())?;
    let spelled = RefCell::new(HashMap::new());
    let pg = PgDb::new(&mut conn, &runtime, &spelled);
    let source: &dyn Db = &sqlite;
    let unknown: Vec<String> = source.query_all(
        "SELECT name FROM sqlite_master WHERE type = 'table'
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
        params![],
        |r| r.get(0),
    )?;
    if let Some(table) = unknown.iter().find(|t| !TABLES.contains(&t.as_str())) {
        return Err(StorageError::Corrupt(format!(
            "table {table} of the SQLite database has no place in PostgreSQL's schema"
        )));
    }
    pg.simple("BEGIN")?;
    let copied = copy_tables(source, &pg).and_then(|copied| {
        move_keys(source, &pg, keys)?;
        Ok(copied)
    });
    match copied {
        Ok(copied) => {
            pg.simple("COMMIT")?;
            Ok(copied)
        }
        Err(e) => {
            let _ = pg.simple("ROLLBACK");
            Err(e)
        }
    }
}

fn copy_tables(source: &dyn Db, target: &dyn Db) -> Result<Copied, StorageError> {
    let mut copied = Copied::default();
    for &table in TABLES {
        let held: i64 =
            target.query_one(&format!("SELECT COUNT(*) FROM {table}"), params![], |r| {
                r.get(0)
            })?;
        if held > 0 {
            return Err(StorageError::Corrupt(format!(
                "the PostgreSQL database already holds {table}; migrate only into a new database"
            )));
        }
        let columns: Vec<String> = source.query_all(
            &format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
            params![],
            |r| r.get(0),
        )?;
        // PostgreSQL's float columns, where SQLite may hand back an integer.
        let floats: Vec<String> = target.query_all(
            "SELECT column_name FROM information_schema.columns
             WHERE table_name = ?1 AND data_type = 'double precision'",
            params![table],
            |r| r.get(0),
        )?;
        let is_float: Vec<bool> = columns.iter().map(|c| floats.contains(c)).collect();
        let order = if ORDERED.contains(&table) {
            " ORDER BY rowid"
        } else {
            ""
        };
        let mut rows: Vec<Vec<Value>> = Vec::new();
        let mut n = 0u64;
        let per_insert = (MAX_PARAMS / columns.len().max(1)).max(1);
        let mut failed = None;
        source.for_each_row(
            &format!("SELECT {} FROM {table}{order}", columns.join(", ")),
            params![],
            &mut |r| {
                let mut row = Vec::with_capacity(columns.len());
                for (i, float) in is_float.iter().enumerate() {
                    row.push(match r.cell(i)? {
                        Cell::Null => Value::Null,
                        #[allow(clippy::cast_precision_loss)]
                        Cell::Int(v) if *float => Value::Real(v as f64),
                        Cell::Int(v) => Value::Int(v),
                        Cell::Real(v) => Value::Real(v),
                        Cell::Text(v) => Value::Text(v.to_owned()),
                        Cell::Blob(v) => Value::Blob(v.to_vec()),
                    });
                }
                rows.push(row);
                n += 1;
                if rows.len() == per_insert {
                    if let Err(e) = insert(target, table, &columns, &rows) {
                        failed.get_or_insert(e);
                    }
                    rows.clear();
                }
                Ok(())
            },
        )?;
        if let Some(e) = failed {
            return Err(e);
        }
        insert(target, table, &columns, &rows)?;
        copied.tables.push((table, n));
    }
    Ok(copied)
}

/// Seals each job's key file (`keys.0`) into its row for PostgreSQL (`keys.1`).
fn move_keys(
    source: &dyn Db,
    target: &dyn Db,
    keys: &(JobKeys, JobKeys),
) -> Result<(), StorageError> {
    let (files, in_rows) = keys;
    let sealed: Vec<String> =
        source.query_all("SELECT id FROM jobs WHERE sealed = 1", params![], |r| {
            r.get(0)
        })?;
    for id in sealed {
        let job: JobId = super::parse_id(&id)?;
        if let Some(wrapped) = in_rows.wrap_file(files, job)? {
            target.execute(
                "UPDATE jobs SET wrapped_key = ?1 WHERE id = ?2",
                params![wrapped, id],
            )?;
        }
    }
    Ok(())
}

/// One multi-row `INSERT` of `rows` into `table`.
fn insert(
    target: &dyn Db,
    table: &str,
    columns: &[String],
    rows: &[Vec<Value>],
) -> Result<(), StorageError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut values = Vec::with_capacity(rows.len());
    let mut n = 0;
    for _ in rows {
        let row: Vec<String> = (0..columns.len())
            .map(|_| {
                n += 1;
                format!("?{n}")
            })
            .collect();
        values.push(format!("({})", row.join(", ")));
    }
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES {}",
        columns.join(", "),
        values.join(", ")
    );
    let bound: Vec<&dyn ToParam> = rows.iter().flatten().map(|v| v as &dyn ToParam).collect();
    target.execute(&sql, &bound)?;
    Ok(())
}
