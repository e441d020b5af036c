//! The process exit codes: the one place that decides them. Scripts and cron jobs branch on these,
//! so they are API: never renumber, only add.

/// Every row of the input is now `synced` or `present` in the ledger.
pub const OK: u8 = 0;
/// The run finished, but some rows are not synced or present (failed, invalid, retry, changed, …),
/// or `--prune` deleted nothing or not everything it should have.
pub const INCOMPLETE: u8 = 1;
/// Usage, configuration or input error; nothing was sent. clap's own usage errors use it too.
pub const USAGE: u8 = 2;
/// The run was aborted: a signal, a fatal answer from the API (401/403/404) or a TLS certificate
/// not trusted, a ledger in use, or a ledger that could not be written or read part-way.
pub const ABORTED: u8 = 3;

/// The exit code for a command that could not do its job.
pub fn of(error: &crate::commands::Error) -> u8 {
    use crate::commands::Error;
    use crate::import::ImportError;
    use crate::ledger::LedgerError;
    use crate::reconcile::ReconcileError;
    match error {
        Error::Import(ImportError::Ledger(LedgerError::Locked { .. }))
        | Error::Import(ImportError::Recording(_) | ImportError::Lookup(_))
        | Error::Ledger(LedgerError::Locked { .. })
        | Error::Reconcile(ReconcileError::Ledger(LedgerError::Locked { .. }))
        | Error::Reconcile(
            ReconcileError::List(_)
            | ReconcileError::Interrupted(_)
            | ReconcileError::Spill(_)
            | ReconcileError::Report(_),
        ) => ABORTED,
        Error::Reconcile(ReconcileError::Truncated { .. } | ReconcileError::Malformed(_)) => {
            INCOMPLETE
        }
        _ => USAGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Error;
    use crate::import::ImportError;
    use crate::ledger::LedgerError;

    #[test]
    fn a_ledger_failing_mid_run_is_an_abort_but_a_bad_ledger_at_start_is_usage() {
        let io = || LedgerError::Io {
            path: "l.db".into(),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(of(&Error::Import(ImportError::Recording(io()))), ABORTED);
        assert_eq!(of(&Error::Import(ImportError::Lookup(io()))), ABORTED);
        assert_eq!(of(&Error::Import(ImportError::Ledger(io()))), USAGE);
    }
}
