//! Bounds on what a processor's statements bring back to the host.
//!
//! The PostgreSQL client reads each protocol message whole before anything can look at it, so a
//! single row of `repeat('x', 500000000)` would be half a gigabyte in the host's memory before a
//! row-by-row count could stop it. So the server checks each row first: a statement whose rows
//! may be of any size (a column of a variable-length type) is sent as
//!
//! ```sql
//! WITH <its own CTEs>, ingot_rows AS (<the statement>)
//! SELECT ingot_rows.* FROM ingot_rows WHERE <framework>.ingot_row_fits(ingot_rows, <cap>)
//! ```
//!
//! and `ingot_row_fits` refuses (SQLSTATE 54000) any row larger than the cap (every field fetched
//! and decompressed, as it would be sent): such a row is never sent. The rows that are sent are counted by the host against the item's budget,
//! so the host holds at most the budget plus one row. Statements whose columns are all of
//! fixed-size types (integers, booleans, uuids, timestamps…) go as they are: no row of theirs can
//! be large, and the count still applies.
//!
//! The rewrite keeps the statement's meaning: its own common table expressions stay at the top
//! level (where PostgreSQL requires data-modifying ones to be), the statement itself becomes the
//! last of them, and it runs exactly once. It is built from the parse tree of the statement the
//! SQL gate already checked, never by pasting text.

use pg_query::NodeEnum;
use pg_query::protobuf::node::Node as NodeKind;
use pg_query::protobuf::{Node, RawStmt};
use sqlx::TypeInfo;
use sqlx::postgres::PgTypeInfo;

/// The SQLSTATE and message prefix `ingot_row_fits` raises with.
pub(crate) const ROW_TOO_LARGE_STATE: &str = "54000";
pub(crate) const ROW_TOO_LARGE_PREFIX: &str = "ingot: a result row";

/// Whether every value of this type has the same, small size.
fn fixed_size(ty: &PgTypeInfo) -> bool {
    matches!(
        ty.name(),
        "BOOL"
            | "INT2"
            | "INT4"
            | "INT8"
            | "FLOAT4"
            | "FLOAT8"
            | "OID"
            | "UUID"
            | "DATE"
            | "TIME"
            | "TIMETZ"
            | "TIMESTAMP"
            | "TIMESTAMPTZ"
            | "INTERVAL"
            | "MONEY"
            | "CHAR"
    )
}

/// Whether rows of a statement with these column types must be checked by the server before
/// they are sent.
pub(crate) fn needs_guard<'a>(columns: impl IntoIterator<Item = &'a PgTypeInfo>) -> bool {
    columns.into_iter().any(|ty| !fixed_size(ty))
}

/// `sql` rewritten so that the server refuses any row larger than `cap` bytes (see the
/// module docs). `framework` is the quoted schema of Ingot's functions. `Ok(None)` for a
/// statement that is not a data statement (`SHOW`, `EXPLAIN`…): the SQL gate never lets one
/// through, so only a host running without the gate (tests of the wall alone) sends one.
pub(crate) fn guarded(sql: &str, framework: &str, cap: usize) -> Result<Option<String>, String> {
    let parsed = pg_query::parse(sql, 0).map_err(|e| e.to_string())?;
    let mut stmts = parsed.protobuf.stmts;
    let body = stmts.first_mut().and_then(|s| s.stmt.take()).and_then(|s| s.node).ok_or("no statement")?;
    let (with, body) = match body {
        NodeEnum::SelectStmt(mut s) => (s.with_clause.take(), NodeEnum::SelectStmt(s)),
        NodeEnum::InsertStmt(mut s) => (s.with_clause.take(), NodeEnum::InsertStmt(s)),
        NodeEnum::UpdateStmt(mut s) => (s.with_clause.take(), NodeEnum::UpdateStmt(s)),
        NodeEnum::DeleteStmt(mut s) => (s.with_clause.take(), NodeEnum::DeleteStmt(s)),
        NodeEnum::MergeStmt(mut s) => (s.with_clause.take(), NodeEnum::MergeStmt(s)),
        _ => return Ok(None),
    };
    // The shape of the result, from PostgreSQL's own parser; only its CTE list changes.
    let template = pg_query::parse("WITH ingot_rows AS (SELECT 1) SELECT ingot_rows.* FROM ingot_rows", 0)
        .map_err(|e| e.to_string())?;
    let mut template = template.protobuf;
    let outer = template.stmts.first_mut().and_then(|s| s.stmt.as_mut()).and_then(|s| s.node.as_mut());
    let Some(NodeKind::SelectStmt(outer)) = outer else { return Err("template".into()) };
    let Some(outer_with) = outer.with_clause.as_mut() else { return Err("template".into()) };
    let Some(NodeKind::CommonTableExpr(ours)) = outer_with.ctes.first_mut().and_then(|n| n.node.as_mut())
    else {
        return Err("template".into());
    };
    ours.ctequery = Some(Box::new(Node { node: Some(body) }));
    let ours = outer_with.ctes.remove(0);
    let (mut ctes, recursive) = with.map_or((Vec::new(), false), |w| (w.ctes, w.recursive));
    ctes.push(ours);
    outer_with.ctes = ctes;
    outer_with.recursive = recursive;
    let tree = pg_query::protobuf::ParseResult {
        version: template.version,
        stmts: vec![RawStmt { stmt: template.stmts.remove(0).stmt, stmt_location: 0, stmt_len: 0 }],
    };
    let text = pg_query::deparse(&tree, Default::default()).map_err(|e| e.to_string())?;
    Ok(Some(format!("{text} WHERE {framework}.ingot_row_fits(ingot_rows, {cap})")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::guarded;

    #[test]
    fn statements_keep_their_ctes_at_the_top_and_gain_the_row_check() {
        assert_eq!(
            guarded("SELECT name, note FROM t WHERE id = $1 ORDER BY id", "\"public\"", 100)
                .unwrap()
                .unwrap(),
            "WITH ingot_rows AS (SELECT name, note FROM t WHERE id = $1 ORDER BY id) SELECT ingot_rows.* FROM \
             ingot_rows WHERE \"public\".ingot_row_fits(ingot_rows, 100)"
        );
        let moved = guarded(
            "WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d RETURNING b.note",
            "ingot",
            8,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            moved,
            "WITH d AS (DELETE FROM a RETURNING *), ingot_rows AS (INSERT INTO b SELECT * FROM d RETURNING b.note) \
             SELECT ingot_rows.* FROM ingot_rows WHERE ingot.ingot_row_fits(ingot_rows, 8)"
        );
        let recursive = guarded("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n::text FROM r", "s", 1).unwrap().unwrap();
        assert!(recursive.starts_with("WITH RECURSIVE r"), "{recursive}");
        assert_eq!(guarded("SHOW role", "s", 1), Ok(None));
        assert!(guarded("SELEC 1", "s", 1).is_err());
    }
}
