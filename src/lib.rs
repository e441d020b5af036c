//! verigator-sync: bulk-register users into a Messente Verigator service, resumably.
//!
//! ```text
//! reader thread     lookup thread         event loop (main thread)                    writer thread
//! CSV ─ input ─► chunk ─ ledger lookup ─► plan ─► client (limiter, retry) ─► Outcome ─► ledger.record
//!                                          │ invalid / duplicate / skipped / changed      │ commit
//!                                          ▼                                              ▼
//!                                   progress, report ◄──────── which new rows are committed
//! ```
//!
//! Modules, one per pipeline stage:
//! - [`cli`]: what the user typed (clap derive); no logic.
//! - [`config`]: validated, typed options built from the CLI and the environment.
//! - [`input`]: CSV → validated users with their line numbers; phone normalisation.
//! - [`ledger`]: the SQLite ledger: open, lock, migrate, lookup, record, runs. The only file with SQL.
//! - [`lookup`]: the thread that looks up each chunk's ids in the ledger ahead of the decisions.
//! - [`plan`]: the ledger filter: send, skip, duplicate or changed, per row.
//! - [`client`]: the Verigator HTTP client: wire types, status classification, retries.
//! - [`throttle`]: the rate limiter, backoff, the shared 429 pause and the stop flag.
//! - [`import`]: the orchestration of one run, including shutdown on signals and fatal answers.
//! - [`send`]: one sent row's requests, and what their answers mean for it.
//! - [`writer`]: the thread that owns the import's ledger connection: records, batches, commits.
//! - [`report`]: outcome tallies, the summary (text and JSON), the row report, status and export.
//! - [`reconcile`]: comparing the service's users at Verigator with the ledger.
//! - [`progress`]: the progress bar, or progress lines when stderr is not a terminal.
//! - [`commands`]: one function per subcommand, returning its exit code.
//! - [`simulator`]: an in-memory Verigator for tests, demos and rehearsals.
//! - [`demo`]: the self-contained demonstration run.
//! - [`exit`]: the process exit codes, in one place.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod demo;
pub mod exit;
pub mod import;
pub mod input;
pub mod ledger;
pub mod phone;
pub mod reconcile;
pub mod report;
pub mod simulator;
pub mod throttle;
pub mod user;
