//! SIGINT and SIGTERM for the whole of a run: a task that raises the [`Stop`] flag on the first
//! signal and counts every signal, so that each phase (reading, sending, resolving, committing,
//! reconcile's list and fixes) notices and stops, and the run ends as interrupted. The task runs
//! only when the event loop awaits, so a flag set by the signal handler itself (signal-hook)
//! serves the phases that work without awaiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::SigId;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::throttle::Stop;

/// Watches for SIGINT and SIGTERM until dropped.
#[derive(Debug)]
pub struct Signals {
    count: watch::Receiver<u32>,
    task: JoinHandle<()>,
    /// Set by the handler at once, whether or not the task has run.
    raised: Arc<AtomicBool>,
    hooks: Vec<SigId>,
}

impl Signals {
    /// Installs the handlers and starts watching; every signal raises `stop`. Needs a tokio runtime.
    pub fn watch(stop: Stop) -> std::io::Result<Signals> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let raised = Arc::new(AtomicBool::new(false));
        let hooks = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
            .into_iter()
            .map(|sig| signal_hook::flag::register(sig, Arc::clone(&raised)))
            .collect::<std::io::Result<Vec<_>>>()?;
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
        Ok(Signals {
            count,
            task,
            raised,
            hooks,
        })
    }

    /// How many signals arrived so far (at least one once [`Signals::raised`]).
    pub fn count(&self) -> u32 {
        (*self.count.borrow()).max(u32::from(self.raised()))
    }

    /// Whether a signal arrived, known at once even while the event loop is busy.
    pub fn raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
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
        for hook in self.hooks.drain(..) {
            signal_hook::low_level::unregister(hook);
        }
    }
}
