//! Cancellation: the runner cancels a job with SIGINT, then SIGTERM 7.5 s later, then kills it
//! 2.5 s after that. ec2-deploy is PID 1 in the action's container, so it must handle them itself.
//!
//! A cancelled deploy starts nothing new: invocations SSM has not started are cancelled, no new
//! command or batch is sent, and a batch that is out of the load balancer is registered again.
//! A script already running on an instance is left to finish: killing it between "stop the old
//! container" and "start the new one" is how an instance ends up with no app. Each script puts
//! the previous container back on its own if the new one fails, so every instance ends on the old
//! or the new release.
//!
//! A rollback already under way goes on after the first signal: it is how the run puts back what
//! it changed. The second signal (the runner's SIGTERM, 2.5 s before it kills the step) makes it
//! hurry: it stops waiting for drains and health checks, puts back into the load balancer what it
//! took out, and starts nothing more, so the kill finds every instance registered.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Cancel {
    /// 0: running; 1: cancelled; 2: cancelled again, hurry.
    inner: Arc<(AtomicU8, Notify)>,
    /// Why the AWS session ended, once a call answered ExpiredToken.
    expired: Arc<OnceLock<String>>,
}

impl Cancel {
    /// The first signal: start nothing new.
    pub fn cancel(&self) {
        self.raise(1);
    }

    /// The second signal: the step is about to be killed.
    pub fn hurry(&self) {
        self.raise(2);
    }

    /// An AWS call answered ExpiredToken: the runner's role session is over and no later call
    /// can succeed (configure-aws-credentials' keys are not refreshed). Like a second signal: wait
    /// for nothing, start nothing, put back what can still be put back — and fail, not cancel.
    pub fn session_expired(&self, why: &str) {
        let _ = self.expired.set(why.to_string());
        self.raise(2);
    }

    /// Why the session ended, if it did.
    pub fn expired_session(&self) -> Option<&str> {
        self.expired.get().map(String::as_str)
    }

    fn raise(&self, level: u8) {
        self.inner.0.fetch_max(level, Ordering::SeqCst);
        self.inner.1.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.0.load(Ordering::SeqCst) >= 1
    }

    pub fn is_hurried(&self) -> bool {
        self.inner.0.load(Ordering::SeqCst) >= 2
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        self.reached(1).await
    }

    /// Resolves once told to hurry.
    pub async fn hurried(&self) {
        self.reached(2).await
    }

    async fn reached(&self, level: u8) {
        loop {
            let notified = self.inner.1.notified();
            if self.inner.0.load(Ordering::SeqCst) >= level {
                return;
            }
            notified.await;
        }
    }

    /// Cancels on the first SIGINT or SIGTERM, hurries on the next.
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
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("ec2-deploy: cancelled again: a rollback under way puts back what is out of the load balancer and stops");
            cancel.hurry();
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
