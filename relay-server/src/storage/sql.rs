//! The one seam between storage's SQL and the engine that runs it.
//!
//! Every transaction the relay writes is a function of `&dyn Db`: it runs the same
//! statements on SQLite (the writer thread's rusqlite connection) and on PostgreSQL, so
//! what a transition loads and applies is written once. Statements are written in
//! SQLite's spelling (`?1` parameters, `IS ?1` for a comparison that matches NULL); the
//! PostgreSQL side rewrites those two things ([`to_postgres`]) and nothing else, so SQL
//! that differs in meaning between the engines (a scalar `MAX(a, b)`, `rowid`) is avoided
//! or chosen by [`Db::dialect`] where it is written.
//!
//! Values cross the seam as five kinds ([`Param`] in, [`Cell`] out): the relay stores
//! integers, floats, text and bytes, nothing else.

use super::StorageError;
use std::borrow::Cow;

/// Which engine runs a statement, for the few statements spelled differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded engine.
    Sqlite,
    /// The shared one.
    Postgres,
}

/// A value bound to a statement's parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    /// SQL NULL.
    Null,
    /// An integer (every integer column is 64-bit).
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// An owned [`Param`], for a value kept past the call that bound it: a row read before
/// it is written elsewhere (`migrate`), a write waiting to be sent (`pipeline`).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Value {
    /// `p`, owned.
    pub(super) fn of(p: Param<'_>) -> Self {
        match p {
            Param::Null => Self::Null,
            Param::Int(v) => Self::Int(v),
            Param::Real(v) => Self::Real(v),
            Param::Text(v) => Self::Text(v.to_owned()),
            Param::Blob(v) => Self::Blob(v.to_owned()),
        }
    }
}

impl ToParam for Value {
    fn to_param(&self) -> Param<'_> {
        match self {
            Self::Null => Param::Null,
            Self::Int(v) => Param::Int(*v),
            Self::Real(v) => Param::Real(*v),
            Self::Text(v) => Param::Text(v),
            Self::Blob(v) => Param::Blob(v),
        }
    }
}

/// Something that can be bound as a parameter.
pub trait ToParam {
    /// The value to bind.
    fn to_param(&self) -> Param<'_>;
}

impl ToParam for i64 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(*self)
    }
}

impl ToParam for u32 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}

impl ToParam for i32 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}

impl ToParam for bool {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}

impl ToParam for f64 {
    fn to_param(&self) -> Param<'_> {
        Param::Real(*self)
    }
}

impl ToParam for str {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl ToParam for String {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl ToParam for [u8] {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}

impl ToParam for Vec<u8> {
    fn to_param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}

impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_param(&self) -> Param<'_> {
        (**self).to_param()
    }
}

impl<T: ToParam> ToParam for Option<T> {
    fn to_param(&self) -> Param<'_> {
        self.as_ref().map_or(Param::Null, ToParam::to_param)
    }
}

impl ToParam for Param<'_> {
    fn to_param(&self) -> Param<'_> {
        *self
    }
}

/// A statement's parameters, in order: `params![a, b]` binds `?1` to `a` and `?2` to `b`.
macro_rules! params {
    () => { &[] as &[&dyn $crate::storage::sql::ToParam] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::storage::sql::ToParam),+] as &[&dyn $crate::storage::sql::ToParam] };
}
pub(crate) use params;

/// One column's value in a result row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// SQL NULL.
    Null,
    /// An integer (a boolean reads as 0 or 1).
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// A Rust value read from a [`Cell`].
pub trait FromCell: Sized {
    /// The value, or why the cell does not hold one.
    fn from_cell(cell: Cell<'_>) -> Result<Self, String>;
}

impl FromCell for i64 {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Int(v) => Ok(v),
            other => Err(format!("expected an integer, found {}", kind(other))),
        }
    }
}

impl FromCell for bool {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        i64::from_cell(cell).map(|v| v != 0)
    }
}

impl FromCell for f64 {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Real(v) => Ok(v),
            // SQLite stores a float with no fraction as an integer in a REAL column's
            // expression results (e.g. `MAX(0, x)`); the value is the same.
            #[allow(clippy::cast_precision_loss)]
            Cell::Int(v) => Ok(v as f64),
            other => Err(format!("expected a float, found {}", kind(other))),
        }
    }
}

impl FromCell for String {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Text(v) => Ok(v.to_owned()),
            other => Err(format!("expected text, found {}", kind(other))),
        }
    }
}

impl FromCell for Vec<u8> {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Blob(v) => Ok(v.to_vec()),
            other => Err(format!("expected bytes, found {}", kind(other))),
        }
    }
}

impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(cell: Cell<'_>) -> Result<Self, String> {
        match cell {
            Cell::Null => Ok(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

fn kind(cell: Cell<'_>) -> &'static str {
    match cell {
        Cell::Null => "NULL",
        Cell::Int(_) => "an integer",
        Cell::Real(_) => "a float",
        Cell::Text(_) => "text",
        Cell::Blob(_) => "bytes",
    }
}

/// A row of a query's result.
pub trait Row {
    /// Column `i`'s value (from 0).
    fn cell(&self, i: usize) -> Result<Cell<'_>, StorageError>;
    /// The value of the column named `name`.
    fn cell_named(&self, name: &str) -> Result<Cell<'_>, StorageError>;
}

impl dyn Row + '_ {
    /// Column `i` as a `T`; a stored value of another kind is a corrupt row.
    pub fn get<T: FromCell>(&self, i: usize) -> Result<T, StorageError> {
        T::from_cell(self.cell(i)?).map_err(|e| StorageError::Corrupt(format!("column {i}: {e}")))
    }

    /// The column named `name` as a `T`.
    pub fn named<T: FromCell>(&self, name: &str) -> Result<T, StorageError> {
        T::from_cell(self.cell_named(name)?)
            .map_err(|e| StorageError::Corrupt(format!("column {name}: {e}")))
    }
}

/// A connection inside a transaction.
pub trait Db {
    /// Which engine this is.
    fn dialect(&self) -> Dialect;
    /// Runs a statement that returns no rows; returns how many rows it changed.
    fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<u64, StorageError>;
    /// Runs a statement that returns no rows and whose count the caller does not need.
    /// PostgreSQL's writer sends it with the next statement that needs an answer, so it
    /// may fail there (and its command with it) rather than here.
    fn write(&self, sql: &str, params: &[&dyn ToParam]) -> Result<(), StorageError> {
        self.execute(sql, params).map(|_| ())
    }
    /// Runs a query, handing each row to `each` in order.
    fn for_each_row(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        each: &mut dyn FnMut(&dyn Row) -> Result<(), StorageError>,
    ) -> Result<(), StorageError>;
}

impl dyn Db + '_ {
    /// The first row's `read`, or `None` when the query returns no rows.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        read: impl FnOnce(&dyn Row) -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        let mut read = Some(read);
        let mut out = None;
        self.for_each_row(sql, params, &mut |row| {
            if let Some(read) = read.take() {
                out = Some(read(row)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row's `read`; no row at all is a corrupt database (use where the row
    /// must exist, such as an aggregate's).
    pub fn query_one<T>(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        read: impl FnOnce(&dyn Row) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.query_opt(sql, params, read)?.ok_or_else(|| {
            StorageError::Corrupt("a query that always returns a row returned none".into())
        })
    }

    /// Every row's `read`, in order.
    pub fn query_all<T>(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        mut read: impl FnMut(&dyn Row) -> Result<T, StorageError>,
    ) -> Result<Vec<T>, StorageError> {
        let mut out = Vec::new();
        self.for_each_row(sql, params, &mut |row| {
            out.push(read(row)?);
            Ok(())
        })?;
        Ok(out)
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Null => ValueRef::Null,
            Param::Int(v) => ValueRef::Integer(v),
            Param::Real(v) => ValueRef::Real(v),
            Param::Text(v) => ValueRef::Text(v.as_bytes()),
            Param::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

fn bind(statement: &mut rusqlite::Statement<'_>, params: &[&dyn ToParam]) -> rusqlite::Result<()> {
    for (i, p) in params.iter().enumerate() {
        statement.raw_bind_parameter(i + 1, p.to_param())?;
    }
    Ok(())
}

struct SqliteRow<'a, 'b>(&'a rusqlite::Row<'b>);

impl Row for SqliteRow<'_, '_> {
    fn cell(&self, i: usize) -> Result<Cell<'_>, StorageError> {
        sqlite_cell(self.0.get_ref(i)?, &i)
    }

    fn cell_named(&self, name: &str) -> Result<Cell<'_>, StorageError> {
        sqlite_cell(self.0.get_ref(name)?, &name)
    }
}

fn sqlite_cell<'v>(
    value: rusqlite::types::ValueRef<'v>,
    column: &dyn std::fmt::Display,
) -> Result<Cell<'v>, StorageError> {
    {
        use rusqlite::types::ValueRef;
        Ok(match value {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(v) => Cell::Int(v),
            ValueRef::Real(v) => Cell::Real(v),
            ValueRef::Text(v) => Cell::Text(std::str::from_utf8(v).map_err(|_| {
                StorageError::Corrupt(format!("column {column}: text is not UTF-8"))
            })?),
            ValueRef::Blob(v) => Cell::Blob(v),
        })
    }
}

impl Db for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<u64, StorageError> {
        let mut statement = self.prepare_cached(sql)?;
        bind(&mut statement, params)?;
        Ok(statement.raw_execute()? as u64)
    }

    fn for_each_row(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        each: &mut dyn FnMut(&dyn Row) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut statement = self.prepare_cached(sql)?;
        bind(&mut statement, params)?;
        let mut rows = statement.raw_query();
        while let Some(row) = rows.next()? {
            each(&SqliteRow(row))?;
        }
        Ok(())
    }
}

/// `sql` in PostgreSQL's spelling: `?N` becomes `$N`, a bare `?` the next number (as
/// SQLite numbers it), `IS ?` becomes `IS NOT DISTINCT FROM $N` and `IS NOT ?` becomes
/// `IS DISTINCT FROM $N`. Quoted text and identifiers are left alone.
pub fn to_postgres(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut highest = 0u32;
    let mut chars = sql.char_indices().peekable();
    let mut quote: Option<char> = None;
    while let Some((_, c)) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '?' => {
                let mut digits = String::new();
                while let Some(&(_, d)) = chars.peek() {
                    if !d.is_ascii_digit() {
                        break;
                    }
                    digits.push(d);
                    chars.next();
                }
                let n = digits.parse().unwrap_or(highest + 1);
                highest = highest.max(n);
                rewrite_is(&mut out);
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Turns a trailing `IS ` / `IS NOT ` (SQLite's NULL-matching comparison) in `out` into
/// PostgreSQL's `IS NOT DISTINCT FROM ` / `IS DISTINCT FROM `.
fn rewrite_is(out: &mut String) {
    let trimmed = out.trim_end();
    let upper = trimmed.to_ascii_uppercase();
    let replace = |out: &mut String, cut: usize, with: &str| {
        out.truncate(cut);
        out.push_str(with);
    };
    if upper.ends_with(" IS NOT") {
        let cut = trimmed.len() - "IS NOT".len();
        replace(out, cut, "IS DISTINCT FROM ");
    } else if upper.ends_with(" IS") {
        let cut = trimmed.len() - "IS".len();
        replace(out, cut, "IS NOT DISTINCT FROM ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_null_matching_comparisons_take_postgres_spelling() {
        assert_eq!(to_postgres("SELECT 1"), "SELECT 1");
        assert_eq!(
            to_postgres("UPDATE t SET a = ?2 WHERE id = ?1 AND b = ?2"),
            "UPDATE t SET a = $2 WHERE id = $1 AND b = $2"
        );
        assert_eq!(to_postgres("SELECT ? , ?"), "SELECT $1 , $2");
        assert_eq!(to_postgres("SELECT ?3, ?"), "SELECT $3, $4");
        assert_eq!(
            to_postgres("WHERE submitter IS ?4 AND x IS NOT ?1 AND y IS NULL"),
            "WHERE submitter IS NOT DISTINCT FROM $4 AND x IS DISTINCT FROM $1 AND y IS NULL"
        );
        assert_eq!(
            to_postgres("SELECT '?1', \"a?\" , ?1"),
            "SELECT '?1', \"a?\" , $1"
        );
    }

    #[test]
    fn sqlite_runs_statements_through_the_seam() -> Result<(), StorageError> {
        let conn = rusqlite::Connection::open_in_memory()?;
        let db: &dyn Db = &conn;
        db.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB, score REAL)",
            params![],
        )?;
        let name = "a".to_owned();
        assert_eq!(
            db.execute(
                "INSERT INTO t (id, name, data, score) VALUES (?1, ?2, ?3, ?4)",
                params![1i64, name, vec![1u8, 2], 0.5]
            )?,
            1
        );
        db.execute(
            "INSERT INTO t (id, name, data, score) VALUES (?1, ?2, ?3, ?4)",
            params![2i64, None::<String>, None::<Vec<u8>>, 1.0],
        )?;
        let row = db.query_one(
            "SELECT name, data, score FROM t WHERE id = ?1",
            params![1i64],
            |r| Ok((r.get::<String>(0)?, r.get::<Vec<u8>>(1)?, r.get::<f64>(2)?)),
        )?;
        assert_eq!(row, ("a".to_owned(), vec![1, 2], 0.5));
        let names = db.query_all("SELECT name FROM t ORDER BY id", params![], |r| {
            r.get::<Option<String>>(0)
        })?;
        assert_eq!(names, vec![Some("a".to_owned()), None]);
        assert_eq!(
            db.query_opt("SELECT id FROM t WHERE id = ?1", params![9i64], |r| r
                .get::<i64>(0))?,
            None
        );
        let wrong = db.query_one("SELECT name FROM t WHERE id = 1", params![], |r| {
            r.get::<i64>(0)
        });
        assert!(matches!(wrong, Err(StorageError::Corrupt(_))), "{wrong:?}");
        Ok(())
    }
}
