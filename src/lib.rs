//! verigator-sync: bulk-register users into a Messente Verigator service, resumably.
//!
//! ```text
//!  input/ (reader thread)   ledger/lookup (2 threads)   import/ (the event loop, one thread)       ledger/writer (thread)
//!  CSV ─ columns, lines, ─► chunk ─ ledger lookup ─────► plan ─► send ─ client/ (retry, ─► Outcome ─► record, commit
//!        validate (phone)                                 │       throttle)                  │          │
//!                                                         ▼ invalid / duplicate / skipped    ▼          ▼
//!                                                  report/ (progress, row report, summary) ◄── which new rows are committed
//! ```
//!
//! Every queue between the stages is bounded, so a slow stage slows the ones before it. Only the
//! HTTP stage is concurrent; the loop decides, counts, logs and reports one row at a time.
//!
//! Modules, one per stage (a folder once a stage outgrows a file):
//! - [`cli`]: what the user typed (clap derive); no logic.
//! - [`config`]: validated, typed options for every command, from the CLI and the environment.
//! - [`user`] and [`phone`]: the user to register and phone numbers, shared by several stages.
//! - [`input`]: CSV → validated users with their line numbers; the reader thread.
//! - [`ledger`]: the SQLite ledger (the only SQL): open, lock, writes, runs, history, reads; the
//!   writer and lookup threads.
//! - [`client`]: the Verigator HTTP client: wire types, answers, retries, the user list.
//! - [`listing`]: what a user list says, kept in bounded memory (sightings, records spilled to disk).
//! - [`throttle`]: the rate limiter, backoff, the shared 429 pause and the stop flag.
//! - [`signals`]: SIGINT/SIGTERM raise the stop flag in every phase of a run.
//! - [`import`]: one run: setup, the event loop, plan, send, the end of the run.
//! - [`report`]: outcomes, the summary, the row report, `status`, `export`, progress.
//! - [`reconcile`]: comparing the service's users at Verigator with the ledger.
//! - [`simulator`]: an in-memory Verigator for tests, demos and rehearsals.
//! - [`commands`], [`demo`]: one function per subcommand; the self-contained demonstration.
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
pub mod listing;
pub mod manual;
pub mod phone;
pub mod reconcile;
pub mod report;
pub mod signals;
pub mod simulator;
pub mod throttle;
pub mod user;
