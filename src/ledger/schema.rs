//! The ledger's schema: its migrations, append-only, and the hook of the one whose values only
//! Rust can compute (each id's folded key).

use rusqlite_migration::{M, Migrations};

use super::WITH_FOLDED;

/// The schema, append-only: never edit a released migration.
pub(super) const MIGRATIONS: [&str; 6] = [
    include_str!("../../migrations/0001_ledger.sql"),
    include_str!("../../migrations/0002_replacements.sql"),
    include_str!("../../migrations/0003_unresolved_index.sql"),
    include_str!("../../migrations/0004_fixes.sql"),
    include_str!("../../migrations/0005_deleted.sql"),
    include_str!("../../migrations/0006_folded.sql"),
];

/// The migrations, schema 6's with its hook.
pub(super) fn migrations() -> Migrations<'static> {
    let mut all: Vec<M<'static>> = MIGRATIONS.iter().map(|sql| M::up(sql)).collect();
    if let Some(folded) = all.get_mut(usize::try_from(WITH_FOLDED - 1).unwrap_or_default()) {
        *folded = M::up_with_hook(MIGRATIONS[5], fill_folded);
    }
    Migrations::new(all)
}

/// Schema 6's `folded` column for the rows written before it: each id's key, computed here
/// (the hash is Rust's, not SQLite's); then its index.
fn fill_folded(tx: &rusqlite::Transaction<'_>) -> rusqlite_migration::HookResult {
    let keys: Vec<(i64, i64)> = tx
        .prepare("SELECT rowid, id_in_service FROM users")?
        .query_map([], |r| {
            let id = r.get_ref(1)?.as_str().unwrap_or_default();
            Ok((r.get(0)?, crate::user::fold_key(id)))
        })?
        .collect::<Result<_, _>>()?;
    let mut update = tx.prepare("UPDATE users SET folded = ?2 WHERE rowid = ?1")?;
    for (rowid, key) in keys {
        update.execute(rusqlite::params![rowid, key])?;
    }
    // Only users who hold or may hold an account, those with one first: the first such
    // spelling of a key is one step, however many refused or deleted ones share it.
    tx.execute_batch(
        "CREATE INDEX users_folded ON users (service_id, folded, status = 'retry')
             WHERE status IN ('synced', 'present', 'retry')",
    )?;
    Ok(())
}
