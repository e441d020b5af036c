//! `import --metrics-file`: the run and the ledger in the Prometheus text format, for
//! node_exporter's textfile collector. Written at the end of every import, aborted ones too,
//! beside its target and renamed into place, so the collector never reads half a file.
//!
//! Counters are sums over the runs the ledger recorded, so they only grow (a counter that
//! restarted each night would defeat `increase()`); gauges say how the last run went and what the
//! ledger holds now. Every series carries the service, so that files of several services can sit
//! in one collector directory.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};

use crate::ledger::{Ledger, LedgerError, RunCounts, ServiceCounts, Status};

/// How one import ended, as the metrics file reports it.
#[derive(Clone, Copy, Debug)]
pub struct RunEnd<'a> {
    /// The ServiceID.
    pub service_id: &'a str,
    /// The exit code it ends with.
    pub exit_code: u8,
    /// How long it took, from the start of the command.
    pub duration: Duration,
    /// When it ended.
    pub at: SystemTime,
}

/// What the ledger holds for the service.
#[derive(Clone, Debug, Default)]
struct Held {
    totals: RunCounts,
    last_success: Option<f64>,
    users: ServiceCounts,
}

/// Writes the metrics file for a run; `ledger` is `None` when there is no ledger to read. A
/// ledger that cannot be read leaves only the run in the file; that error is returned.
pub fn write_metrics(
    path: &Path,
    run: &RunEnd<'_>,
    ledger: Option<&Ledger>,
) -> io::Result<Option<LedgerError>> {
    let (held, unread) = match ledger.map(|ledger| read(ledger, run.service_id)) {
        None => (None, None),
        Some(Ok(held)) => (Some(held), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let text = render(run, held.as_ref()).map_err(io::Error::other)?;
    let mut file = super::Pending::create(path)?;
    file.writer().write_all(text.as_bytes())?;
    // The collector usually runs as another user: nothing here is secret.
    file.set_mode(0o644)?;
    file.persist()?;
    Ok(unread)
}

fn read(ledger: &Ledger, service_id: &str) -> Result<Held, LedgerError> {
    let totals = ledger.run_totals(service_id)?;
    let users = ledger.counts(Some(service_id))?.into_iter().next();
    Ok(Held {
        totals: totals.counts,
        last_success: totals.last_success.as_deref().and_then(unix_seconds),
        users: users.unwrap_or_default(),
    })
}

fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let at = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(at.timestamp_millis() as f64 / 1000.0)
}

/// The outcomes a run's rows are counted under (`rows_total`).
fn outcomes(c: &RunCounts) -> [(&'static str, u64); 11] {
    [
        ("skipped", c.skipped),
        ("synced", c.synced),
        ("present", c.present),
        ("failed", c.failed),
        ("invalid", c.invalid),
        ("retry", c.retry),
        ("duplicate", c.duplicate),
        ("changed", c.changed),
        ("pending", c.pending),
        ("replaced", c.replaced),
        ("unresolved", c.unresolved),
    ]
}

fn statuses(c: &ServiceCounts) -> [(Status, u64); 5] {
    [
        (Status::Synced, c.synced),
        (Status::Present, c.present),
        (Status::Failed, c.failed),
        (Status::Retry, c.retry),
        (Status::Deleted, c.deleted),
    ]
}

/// The file's text. Without a ledger (none yet, or unreadable) only the run is reported: a
/// counter missing is better than one that falls to zero.
fn render(run: &RunEnd<'_>, held: Option<&Held>) -> prometheus::Result<String> {
    let m = Metrics::new(run.service_id)?;
    let ended = run.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    m.gauge(
        "last_run_timestamp_seconds",
        "When the last import ended.",
        ended.as_secs_f64(),
    )?;
    let took = run.duration.as_secs_f64();
    m.gauge(
        "last_run_duration_seconds",
        "How long the last import took.",
        took,
    )?;
    let code = f64::from(run.exit_code);
    let help = "The exit code of the last import: 0 ok, 1 incomplete, 2 usage, 3 aborted.";
    m.gauge("last_run_exit_code", help, code)?;
    let Some(held) = held else {
        return m.encode();
    };
    if let Some(at) = held.last_success {
        let help = "When the last import that exited 0 ended.";
        m.gauge("last_success_timestamp_seconds", help, at)?;
    }
    let by_status = m.gauges(
        "ledger_users",
        "Users the ledger holds, by status.",
        "status",
    )?;
    for (status, n) in statuses(&held.users) {
        by_status
            .with_label_values(&[status.as_str()])
            .set(n as f64);
    }
    let c = &held.totals;
    let help = "Rows of every import recorded in the ledger, by outcome.";
    let rows = m.counters("rows_total", help, "outcome")?;
    for (outcome, n) in outcomes(c) {
        rows.with_label_values(&[outcome]).inc_by(n);
    }
    let help = "Rows sent to the API by every import recorded in the ledger.";
    m.counter("sent_rows_total", help, c.sent)?;
    let help = "Users deleted at Verigator by import --prune.";
    m.counter("deleted_users_total", help, c.deleted)?;
    m.encode()
}

/// The registry of one file: every metric named `verigator_sync_…` and labelled with the service.
struct Metrics {
    registry: Registry,
    service_id: String,
}

impl Metrics {
    fn new(service_id: &str) -> prometheus::Result<Metrics> {
        Ok(Metrics {
            registry: Registry::new_custom(Some("verigator_sync".into()), None)?,
            service_id: service_id.to_string(),
        })
    }

    fn encode(&self) -> prometheus::Result<String> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }

    fn opts(&self, name: &str, help: &str) -> Opts {
        Opts::new(name, help).const_label("service_id", &self.service_id)
    }

    fn gauges(&self, name: &str, help: &str, label: &str) -> prometheus::Result<GaugeVec> {
        let gauges = GaugeVec::new(self.opts(name, help), &[label])?;
        self.registry.register(Box::new(gauges.clone()))?;
        Ok(gauges)
    }

    fn gauge(&self, name: &str, help: &str, value: f64) -> prometheus::Result<()> {
        let gauge = prometheus::Gauge::with_opts(self.opts(name, help))?;
        gauge.set(value);
        self.registry.register(Box::new(gauge))
    }

    fn counters(&self, name: &str, help: &str, label: &str) -> prometheus::Result<IntCounterVec> {
        let counters = IntCounterVec::new(self.opts(name, help), &[label])?;
        self.registry.register(Box::new(counters.clone()))?;
        Ok(counters)
    }

    fn counter(&self, name: &str, help: &str, value: u64) -> prometheus::Result<()> {
        let counter = prometheus::IntCounter::with_opts(self.opts(name, help))?;
        counter.inc_by(value);
        self.registry.register(Box::new(counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_ledger_only_the_run_is_reported() {
        let run = RunEnd {
            service_id: "s-1",
            exit_code: 2,
            duration: Duration::from_millis(1500),
            at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        let text = render(&run, None).expect("render");
        assert!(
            text.contains("verigator_sync_last_run_exit_code{service_id=\"s-1\"} 2\n")
                && text.contains(
                    "verigator_sync_last_run_timestamp_seconds{service_id=\"s-1\"} 1800000000\n"
                )
                && !text.contains("last_success")
                && !text.contains("ledger_users"),
            "{text}"
        );
    }
}
