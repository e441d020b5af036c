//! The run lock: an OS lock on `<ledger>.lock`, so that two imports never write one ledger at once.
//! A lock left by a dead process died with it; the file names the holder for the next message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{LedgerError, now};

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the OS lock on `<ledger>.lock` and writes who holds it, for the next run's message.
pub(super) fn acquire(path: &Path, shown: &str) -> Result<File, LedgerError> {
    let lock_path = lock_path(path);
    let io = |source| LedgerError::Io {
        path: lock_path.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LedgerError::Locked {
                path: shown.to_string(),
                holder: if holder.is_empty() {
                    "unknown process".to_string()
                } else {
                    holder.to_string()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    write!(file, "pid {}, started {}", std::process::id(), now()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(file)
}
#[cfg(test)]
mod tests {
    use super::super::Ledger;
    use super::super::tests::ledger;

    #[test]
    fn second_open_is_locked_and_names_the_holder() {
        let (dir, _l) = ledger();
        let err = Ledger::open_for_import(&dir.path().join("l.db")).expect_err("must be refused");
        let msg = err.to_string();
        assert!(
            msg.contains("in use by another run")
                && msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
    }

    #[test]
    fn lock_is_released_on_drop() {
        let (dir, l) = ledger();
        drop(l);
        Ledger::open_for_import(&dir.path().join("l.db")).expect("reopens");
    }
}
