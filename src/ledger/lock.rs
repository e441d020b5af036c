//! The run lock: an OS lock on `<ledger>.lock`, so that two imports never write one ledger at once.
//! A lock left by a dead process died with it; the file names the holder for the next message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{LedgerError, now};

/// Longest holder text read back from a lock file for the "in use" message.
const MAX_HOLDER_BYTES: u64 = 256;

/// The ledger's path with every symlink and `..` resolved, so that one ledger has one lock
/// whatever path reaches it. A ledger that does not exist yet is resolved through its directory;
/// a symlink to nothing is refused with a message that says so.
pub(super) fn canonical(path: &Path, shown: &str) -> Result<PathBuf, LedgerError> {
    let io = |source| LedgerError::Io {
        path: shown.to_string(),
        source,
    };
    match std::fs::canonicalize(path) {
        Ok(real) => return Ok(real),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        Err(_) => {}
    }
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_symlink()
    {
        let target = std::fs::read_link(path).unwrap_or_default();
        return Err(io(std::io::Error::other(format!(
            "is a symbolic link to {}, which does not exist; create the ledger there or pass another --ledger",
            target.display()
        ))));
    }
    let name = path
        .file_name()
        .ok_or_else(|| io(std::io::Error::other("names a directory, not a file")))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok(std::fs::canonicalize(dir).map_err(io)?.join(name))
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the OS lock on `<ledger>.lock` (`real` is the ledger's canonical path) and writes who
/// holds it, for the next run's message. Never follows a symlink at the lock's path, and never
/// empties anything but a regular file.
pub(super) fn acquire(real: &Path, shown: &str) -> Result<File, LedgerError> {
    let lock_path = lock_path(real);
    let io = |source| LedgerError::Io {
        path: lock_path.display().to_string(),
        source,
    };
    if std::fs::symlink_metadata(&lock_path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(io(std::io::Error::other(
            "is a symbolic link; the lock file must be a plain file: remove the link",
        )));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // The check above can race with a new link; this cannot.
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(io(std::io::Error::other("is not a regular file")));
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = (&mut file)
                .take(MAX_HOLDER_BYTES)
                .read_to_string(&mut holder);
            let holder: String = holder.chars().filter(|c| !c.is_control()).collect();
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

/// Locks the ledger file itself (`real`, its canonical path), which every path to it shares, hard
/// links included. The lock file names the holder; this one only refuses.
pub(super) fn acquire_file(real: &Path, shown: &str) -> Result<File, LedgerError> {
    let file = File::open(real).map_err(|source| LedgerError::Io {
        path: shown.to_string(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LedgerError::Locked {
            path: shown.to_string(),
            holder: "another run reaching the same file by another path (a hard link?)".into(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(LedgerError::Io {
            path: shown.to_string(),
            source,
        }),
    }
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
