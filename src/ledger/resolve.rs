//! UserIDs learned after the fact: `present` rows resolved from the service's user list, and
//! reconcile's corrections (a UserID Verigator lists, a user gone there).

use rusqlite::params;

use super::{Ledger, LedgerError, now, sqlite};

impl Ledger {
    /// Fills in the UserID of a `present` row found in the service's user list.
    pub fn resolve(
        &mut self,
        service_id: &str,
        id_in_service: &str,
        user_id: &str,
        ctime: Option<&str>,
    ) -> Result<(), LedgerError> {
        self.begin()?;
        self.conn
            .prepare_cached(
                "UPDATE users SET user_id = ?3, ctime = COALESCE(?4, ctime), updated_at = ?5
                 WHERE service_id = ?1 AND id_in_service = ?2 AND status = 'present' AND user_id IS NULL",
            )
            .and_then(|mut s| s.execute(params![service_id, id_in_service, user_id, ctime, now()]))
            .map_err(|e| sqlite(&self.path, e))?;
        self.batch_rows += 1;
        Ok(())
    }

    /// Marks a row whose user is gone at Verigator so that the next import registers it again.
    pub fn mark_gone(
        &mut self,
        service_id: &str,
        id_in_service: &str,
        why: &str,
    ) -> Result<(), LedgerError> {
        self.begin()?;
        self.conn
            .prepare_cached(
                "UPDATE users SET status = 'retry', user_id = NULL, ctime = NULL, last_error = ?3, updated_at = ?4
                 WHERE service_id = ?1 AND id_in_service = ?2",
            )
            .and_then(|mut s| s.execute(params![service_id, id_in_service, why, now()]))
            .map_err(|e| sqlite(&self.path, e))?;
        Ok(())
    }

    /// Takes the UserID Verigator lists for a row: corrects a synced or present row, and turns a
    /// failed or retry row whose user exists after all into `present`.
    pub fn set_user_id(
        &mut self,
        service_id: &str,
        id_in_service: &str,
        user_id: &str,
    ) -> Result<(), LedgerError> {
        self.begin()?;
        self.conn
            .prepare_cached(
                "UPDATE users SET user_id = ?3, updated_at = ?4, last_error = NULL,
                    status = CASE status WHEN 'synced' THEN 'synced' ELSE 'present' END
                 WHERE service_id = ?1 AND id_in_service = ?2",
            )
            .and_then(|mut s| s.execute(params![service_id, id_in_service, user_id, now()]))
            .map_err(|e| sqlite(&self.path, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::super::tests::{ledger, write};

    #[test]
    fn resolve_fills_only_unknown_present_rows() {
        let (_d, mut l) = ledger();
        l.record("s", &write("p", Status::Present, None))
            .expect("record");
        l.record("s", &write("q", Status::Synced, Some("u2")))
            .expect("record");
        assert_eq!(
            l.unresolved("s").expect("unresolved"),
            vec!["p".to_string()]
        );
        l.resolve("s", "p", "u1", Some("t")).expect("resolve");
        l.resolve("s", "q", "zzz", None).expect("resolve");
        assert!(l.unresolved("s").expect("unresolved").is_empty());
        assert_eq!(
            l.lookup("s", "q")
                .expect("q")
                .expect("q")
                .user_id
                .as_deref(),
            Some("u2")
        );
    }
}
