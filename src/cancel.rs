//! Cancellation: the runner cancels a job with SIGINT, then SIGTERM 7.5 s later, then kills it
//! 2.5 s after that. ec2-deploy is PID 1 in the action's container, so it must handle them itself.
//!
//! A cancelled deploy starts nothing new: invocations SSM has not started are cancelled, no new
//! command or batch is sent, and a batch that is out of the load balancer is registered again.
//! A script already running on an instance is left to finish: killing it between "stop the old
//! container" and "start the new one" is how an instance ends up with no app. Each script puts
//! the previous container back on its own if the new one fails, so every instance ends on the old
//! or the new release.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<(AtomicBool, Notify)>,
}

impl Cancel {
    pub fn cancel(&self) {
        self.inner.0.store(true, Ordering::SeqCst);
        self.inner.1.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.0.load(Ordering::SeqCst)
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.1.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Cancels on the first SIGINT or SIGTERM.
    pub fn on_signals(&self) {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            eprintln!("ec2-deploy: cannot listen for signals; a cancelled job will be killed mid-deploy");
            return;
        };
        let cancel = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("ec2-deploy: cancelled: nothing new starts; scripts already running on instances finish");
            cancel.cancel();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_on_cancel_and_late_waiters_return_at_once() {
        let c = Cancel::default();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!c.is_cancelled());
        c.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter).await.unwrap().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), c.cancelled()).await.unwrap();
    }
}
