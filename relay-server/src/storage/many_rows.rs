//! Statements that write many rows at once: an `UPDATE … FROM (VALUES …)` or an
//! `INSERT … SELECT … FROM (VALUES …)`, each row's values cast to its column's type.
//!
//! Why: a statement's own cost on PostgreSQL's server (its message, planning, executing,
//! answering) is most of what one row's write costs, so a writer group's rows of one kind
//! go together ([`super::results::judge_together`], [`super::leases::lease_together`]).

use super::sql::{Db, Row, ToParam};
use super::StorageError;

/// Most rows one statement writes. Statements are prepared per row count, so this also
/// bounds how many shapes of each there are (a few hundred statements a connection in
/// all). At 16, a group of 200 results was 13 statements of each kind; a statement's own
/// cost is paid 4 times instead.
pub(super) const ROWS: usize = 64;

/// A value of a row written here.
pub(super) enum Param<'a> {
    /// NULL, of the type its column's cast says.
    Null,
    Text(String),
    Int(Option<i64>),
    Real(f64),
    /// Outputs, not copied.
    Blob(Option<&'a [u8]>),
}

impl ToParam for Param<'_> {
    fn to_param(&self) -> super::sql::Param<'_> {
        use super::sql::Param as P;
        match self {
            Self::Null => P::Null,
            Self::Text(v) => P::Text(v),
            Self::Int(v) => v.map_or(P::Null, P::Int),
            Self::Real(v) => P::Real(*v),
            Self::Blob(v) => v.map_or(P::Null, P::Blob),
        }
    }
}

/// Writes `rows` with `sql` (its `{}` the `VALUES` rows, its leading parameters `first`),
/// [`ROWS`] rows to a statement; each row's values cast to `types`, which also says what
/// a NULL is. Nothing is written for no rows.
pub(super) fn write_rows(
    db: &dyn Db,
    rows: &[Vec<Param<'_>>],
    first: &[i64],
    sql: &str,
    types: &[&str],
) -> Result<(), StorageError> {
    for chunk in rows.chunks(ROWS) {
        let (statement, bound) = statement(chunk, first, sql, types);
        db.write(&statement, &bound)?;
    }
    Ok(())
}

/// [`write_rows`] for a statement that returns rows (`RETURNING`): each handed to `read`.
/// Unlike a write, each statement waits for its answer.
pub(super) fn write_rows_returning<T>(
    db: &dyn Db,
    rows: &[Vec<Param<'_>>],
    first: &[i64],
    sql: &str,
    types: &[&str],
    mut read: impl FnMut(&dyn Row) -> Result<T, StorageError>,
) -> Result<Vec<T>, StorageError> {
    let mut out = Vec::new();
    for chunk in rows.chunks(ROWS) {
        let (statement, bound) = statement(chunk, first, sql, types);
        out.extend(db.query_all(&statement, &bound, &mut read)?);
    }
    Ok(out)
}

/// `sql` for `chunk`'s rows, and its parameters.
fn statement<'a>(
    chunk: &'a [Vec<Param<'_>>],
    first: &'a [i64],
    sql: &str,
    types: &[&str],
) -> (String, Vec<&'a dyn ToParam>) {
    let mut next = first.len();
    let values: Vec<String> = chunk
        .iter()
        .map(|_| {
            let row: Vec<String> = types
                .iter()
                .map(|ty| {
                    next += 1;
                    format!("?{next}::{ty}")
                })
                .collect();
            format!("({})", row.join(", "))
        })
        .collect();
    let statement = sql.replacen("{}", &values.join(", "), 1);
    let mut bound: Vec<&dyn ToParam> = first.iter().map(|v| v as &dyn ToParam).collect();
    bound.extend(chunk.iter().flatten().map(|v| v as &dyn ToParam));
    (statement, bound)
}
