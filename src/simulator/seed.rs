//! Seed users: the accounts that already exist when the simulator starts, and the CSV loader
//! for them. Only reads files; putting the users into services is the store's job.

use std::path::{Path, PathBuf};

/// A user that exists before any client talks to the simulator, so importers meet 409s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedUser {
    /// The service holding the user; `None` puts it in every service, as a shared fixture.
    pub service_id: Option<String>,
    /// The key that makes a later create answer 409.
    pub id_in_service: String,
    /// Kept so tests can inspect it; the API never returns it.
    pub phone_number: String,
    /// The UserID to show instead of a generated one (any text: tests use hostile ones).
    pub user_id: Option<String>,
}

/// Why a seed file could not be loaded; every variant names the file so the message stands alone.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The seed file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The CSV itself is broken at `line` (quoting, field count, encoding).
    #[error("{}:{line}: {source}", path.display())]
    Csv {
        /// The seed file.
        path: PathBuf,
        /// 1-based line where the bad record starts.
        line: u64,
        /// What the CSV reader said.
        #[source]
        source: csv::Error,
    },
    /// A row is well-formed CSV but not a usable seed user (also used for a bad header on line 1).
    #[error("{}:{line}: {problem}", path.display())]
    Row {
        /// The seed file.
        path: PathBuf,
        /// 1-based line of the offending record.
        line: u64,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

/// Reads seed users from a CSV whose header has `id_in_service` and `phone_number` columns and
/// optionally `service_id` (an empty cell means every service) and `user_id` (an empty cell means a
/// generated one), so demos and tests can start from a file.
pub fn load_seed(path: &Path) -> Result<Vec<SeedUser>, SeedError> {
    let data = std::fs::read(path).map_err(|source| SeedError::Io {
        path: path.to_owned(),
        source,
    })?;
    read_seed(&data, path)
}

/// The 1-based line where the record at `position` starts; counted only for an error (counting
/// for every row made loading quadratic in the file). The csv crate's own line numbers
/// ignore blank lines and its byte offset points before them, so the line is recounted from the
/// offset past any blank lines (seed files are small enough to hold in memory).
fn line_at(data: &[u8], position: Option<&csv::Position>) -> u64 {
    let offset = position.map_or(0, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX));
    let mut start = offset.min(data.len());
    while start < data.len() && matches!(data[start], b'\n' | b'\r') {
        start += 1;
    }
    1 + data[..start].iter().filter(|&&b| b == b'\n').count() as u64
}

/// The parsing half of [`load_seed`], separate so tests need no file.
fn read_seed(data: &[u8], path: &Path) -> Result<Vec<SeedUser>, SeedError> {
    let csv_error = |source: csv::Error| SeedError::Csv {
        path: path.to_owned(),
        line: line_at(data, source.position()),
        source,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(data);
    let header = reader.headers().map_err(csv_error)?.clone();
    let column = |name: &str| header.iter().position(|h| h == name);
    let missing = |name: &str| SeedError::Row {
        path: path.to_owned(),
        line: 1,
        problem: format!(
            "header has no \"{name}\" column (found: {}; required: id_in_service, phone_number)",
            header.iter().collect::<Vec<_>>().join(", ")
        ),
    };
    let id_column = column("id_in_service").ok_or_else(|| missing("id_in_service"))?;
    let phone_column = column("phone_number").ok_or_else(|| missing("phone_number"))?;
    let service_column = column("service_id");
    let user_id_column = column("user_id");

    let mut seed = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = || line_at(data, record.position());
        let cell = |index: usize| record.get(index).unwrap_or_default();
        let required = |index: usize, name: &str| {
            let value = cell(index);
            if value.is_empty() {
                Err(SeedError::Row {
                    path: path.to_owned(),
                    line: line(),
                    problem: format!("{name} is empty (every seed user needs one)"),
                })
            } else {
                Ok(value.to_owned())
            }
        };
        let id_in_service = required(id_column, "id_in_service")?;
        let phone_number = required(phone_column, "phone_number")?;
        let service_id = service_column
            .map(cell)
            .filter(|service| !service.is_empty())
            .map(str::to_owned);
        let user_id = user_id_column
            .map(cell)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        seed.push(SeedUser {
            service_id,
            id_in_service,
            phone_number,
            user_id,
        });
    }
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<SeedUser>, SeedError> {
        read_seed(text.as_bytes(), Path::new("seed.csv"))
    }

    #[test]
    fn reads_rows_with_and_without_service() {
        let seed = read(
            "service_id,id_in_service,phone_number\n,alice,+3725555555\nsvc, bob ,+37253448365\n",
        )
        .expect("valid seed");
        assert_eq!(
            seed,
            vec![
                SeedUser {
                    service_id: None,
                    id_in_service: "alice".into(),
                    phone_number: "+3725555555".into(),
                    user_id: None,
                },
                SeedUser {
                    service_id: Some("svc".into()),
                    id_in_service: "bob".into(),
                    phone_number: "+37253448365".into(),
                    user_id: None,
                },
            ]
        );
    }

    #[test]
    fn service_column_is_optional_and_columns_may_be_reordered() {
        let seed = read("phone_number,id_in_service\n+1555,carol\n").expect("valid seed");
        assert_eq!(seed[0].id_in_service, "carol");
        assert_eq!(seed[0].service_id, None);
    }

    #[test]
    fn empty_field_names_file_and_line() {
        let err = read("id_in_service,phone_number\nalice,+1\n\nbob,\n").expect_err("empty phone");
        assert_eq!(
            err.to_string(),
            "seed.csv:4: phone_number is empty (every seed user needs one)"
        );
    }

    #[test]
    fn missing_column_names_the_column() {
        let err = read("id_in_service,phone\nalice,+1\n").expect_err("no phone column");
        let message = err.to_string();
        assert!(
            message.starts_with("seed.csv:1: header has no \"phone_number\" column"),
            "{message}"
        );
    }

    #[test]
    fn ragged_row_names_the_line() {
        let err =
            read("id_in_service,phone_number\n\nalice,+1\nbob,+2,extra\n").expect_err("ragged");
        assert!(matches!(err, SeedError::Csv { line: 4, .. }), "{err:?}");
        assert!(err.to_string().starts_with("seed.csv:4: "), "{err}");
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let err = load_seed(Path::new("/nonexistent/seed.csv")).expect_err("no such file");
        assert!(
            err.to_string().starts_with("/nonexistent/seed.csv: "),
            "{err}"
        );
    }
}
