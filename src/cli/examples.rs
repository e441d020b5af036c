//! The examples and exit codes shown after each subcommand's help: kept apart from the option
//! definitions, which they would otherwise bury. Every example line is shorter than 80 columns, so
//! that clap never wraps one in two.

/// The exit codes of `import`, shown after the top-level help and `import`'s.
macro_rules! import_exit_codes {
    () => {
        "Exit codes:
  0  every row is synced or present
  1  some rows are not (the warnings or --report say why), or --prune
     deleted nothing (the limit, an unreadable id)
  2  usage, configuration or input error; nothing was sent
  3  aborted (signal, 401/403/404, outage, ledger in use or failing)"
    };
}

/// The top-level help's examples and exit codes.
pub(super) const TOP_EXAMPLES: &str = concat!(
    "\
Examples:
  # Credentials only from the environment, never as flags:
  export VERIGATOR_USERNAME=u VERIGATOR_PASSWORD=p
  export VERIGATOR_SERVICE_ID=81213bfd-b690-499e-b9d2-8754cb1550e8
  verigator-sync import --dry-run users.csv   # the plan: nothing sent
  verigator-sync import --limit 100 users.csv # a canary of 100 rows
  verigator-sync import --report todo.csv users.csv
  # Nightly (cron has no exported variables: read them from a file):
  # 15 2 * * * . /srv/vs/env && verigator-sync import --json users.csv
  verigator-sync export --status synced,present --out user-ids.csv
  # A rehearsal against the simulator, on a ledger of its own:
  verigator-sync simulate --listen 127.0.0.1:8080 &
  VERIGATOR_USERNAME=demo VERIGATOR_PASSWORD=demo \\
    verigator-sync import --base-url http://127.0.0.1:8080 \\
    --service-id rehearsal --ledger rehearsal.db users.csv

",
    import_exit_codes!()
);

/// `status`.
pub(super) const STATUS_EXAMPLES: &str = "\
Examples:
  verigator-sync status
  verigator-sync status --json";

/// `export`.
pub(super) const EXPORT_EXAMPLES: &str = "\
Examples:
  # The UserIDs for your own database:
  verigator-sync export --status synced,present --out user-ids.csv
  # What still needs a look:
  verigator-sync export --status failed,retry
  # Replaced users, reconcile's fixes, users deleted by --prune:
  verigator-sync export --history
  verigator-sync export --format ndjson | jq .user_id";

/// `reconcile`, with its exit codes.
pub(super) const RECONCILE_EXAMPLES: &str = "\
Examples:
  # Compare only:
  verigator-sync reconcile --report disagreements.csv
  # Correct the ledger (what a fix overwrites: export --history):
  verigator-sync reconcile --fix

Exit codes:
  0  everything agrees
  1  disagreements remain, or the user list is truncated
  2  usage;  3  aborted";

/// `simulate`.
pub(super) const SIMULATE_EXAMPLES: &str = "\
Examples:
  verigator-sync simulate --listen 127.0.0.1:8080 &
  verigator-sync simulate --listen 127.0.0.1:8081 \\
    --fail-rate 0.05 --latency-ms 200 --seed existing.csv &
  VERIGATOR_USERNAME=demo VERIGATOR_PASSWORD=demo \\
    verigator-sync import --base-url http://127.0.0.1:8080 \\
    --service-id rehearsal --ledger rehearsal.db users.csv";

/// `demo`.
pub(super) const DEMO_EXAMPLES: &str = "\
Examples:
  verigator-sync demo
  cargo run --release -- demo";

/// `import`, with its exit codes.
pub(super) const IMPORT_EXAMPLES: &str = concat!(
    "\
Examples:
  export VERIGATOR_USERNAME=u VERIGATOR_PASSWORD=p
  verigator-sync import --service-id 81213bfd-b690-499e-b9d2-8754cb1550e8 \\
    users.csv
  verigator-sync import --service-id SID --dry-run --report plan.csv users.csv
  # Full sync: also delete the users who left the file (at most 5%):
  verigator-sync import --service-id SID --prune users.csv
  cat users.csv | verigator-sync import --service-id SID --json -

",
    import_exit_codes!()
);
