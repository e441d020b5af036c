//! SIGINT and SIGTERM for the whole of a run: a task that raises the [`Stop`] flag on the first
//! signal and counts every signal, so that each phase (reading, sending, resolving, committing,
//! reconcile's list and fixes) notices and stops, and the run ends as interrupted.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::throttle::Stop;

/// Watches for SIGINT and SIGTERM until dropped.
#[derive(Debug)]
pub struct Signals {
    count: watch::Receiver<u32>,
    task: JoinHandle<()>,
}

impl Signals {
    /// Installs the handlers and starts watching; every signal raises `stop`. Needs a tokio runtime.
    pub fn watch(stop: Stop) -> std::io::Result<Signals> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (tell, count) = watch::channel(0u32);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                stop.trigger();
                tell.send_modify(|n| *n = n.saturating_add(1));
            }
        });
        Ok(Signals { count, task })
    }

    /// How many signals arrived so far.
    pub fn count(&self) -> u32 {
        *self.count.borrow()
    }

    /// Resolves with the count once another signal arrives. Cancel-safe.
    pub async fn next(&mut self) -> u32 {
        if self.count.changed().await.is_err() {
            // The task ended (it never does while the runtime runs): no more signals.
            std::future::pending::<()>().await;
        }
        *self.count.borrow_and_update()
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.task.abort();
    }
}
