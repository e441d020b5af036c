//! verigator-sync: bulk-register users into a Messente Verigator service, resumably.
//!
//! ```text
//! CSV ─ input ─► (line, User) ─ ledger lookup ─► pending ─ client (limiter, retry) ─► Outcome
//!                   │ invalid / duplicate / skipped / changed                            │
//!                   ▼                                                                    ▼
//!               Outcome ──────────────── sequential: ledger.record → progress → report ◄─┘
//! ```
//!
//! Modules, one per pipeline stage:
//! - [`cli`]: what the user typed (clap derive); no logic.
//! - [`config`]: validated, typed options built from the CLI and the environment.
//! - [`input`]: CSV → validated users with their line numbers; phone normalisation.
//! - [`ledger`]: the SQLite ledger: open, lock, migrate, lookup, record, runs. The only file with SQL.
//! - [`client`]: the Verigator HTTP client: wire types, status classification, retry and rate limit.
//! - [`import`]: the orchestration of one run, including shutdown on signals and fatal answers.
//! - [`report`]: outcome tallies, the summary (text and JSON), status and export.
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
pub mod progress;
pub mod report;
pub mod simulator;
pub mod throttle;
