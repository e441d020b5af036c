//! UserIDs learned after the fact: `present` rows resolved from the service's user list at the end
//! of an import. Only a row without a UserID is ever filled in; nothing is overwritten.

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
            l.unresolved("s", 0, usize::MAX)
                .expect("unresolved")
                .into_iter()
                .map(|u| u.id_in_service)
                .collect::<Vec<_>>(),
            vec!["p".to_string()]
        );
        l.resolve("s", "p", "u1", Some("t")).expect("resolve");
        l.resolve("s", "q", "zzz", None).expect("resolve");
        assert!(
            l.unresolved("s", 0, usize::MAX)
                .expect("unresolved")
                .is_empty()
        );
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
