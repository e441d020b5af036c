//! History: what the ledger is about to overwrite at Verigator, written down first. Today the
//! replacements of `--apply-changes` (the old UserID and phone, committed before the delete).

use rusqlite::params;

use super::{Ledger, LedgerError, now, sqlite};

impl Ledger {
    /// Writes down, and commits at once, that `id_in_service` is about to be deleted at Verigator
    /// and created again with `new_phone`: if the run dies in between, the old UserID is still known.
    pub fn begin_replacement(
        &mut self,
        run_id: Option<i64>,
        service_id: &str,
        id_in_service: &str,
        old_user_id: &str,
        old_phone: &str,
        new_phone: &str,
    ) -> Result<i64, LedgerError> {
        self.begin()?;
        self.conn
            .execute(
                "INSERT INTO replacements (run_id, service_id, id_in_service, old_user_id, old_phone, new_phone, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![run_id, service_id, id_in_service, old_user_id, old_phone, new_phone, now()],
            )
            .map_err(|e| sqlite(&self.path, e))?;
        let id = self.conn.last_insert_rowid();
        self.commit()?;
        Ok(id)
    }

    /// Completes a replacement with the new UserID.
    pub fn finish_replacement(
        &mut self,
        replacement_id: i64,
        new_user_id: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.begin()?;
        self.conn
            .prepare_cached(
                "UPDATE replacements SET new_user_id = ?2, finished_at = ?3 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![replacement_id, new_user_id, now()]))
            .map_err(|e| sqlite(&self.path, e))?;
        Ok(())
    }
}
