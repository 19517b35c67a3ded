//! One deploy at a time per environment: a lock in SSM Parameter Store, beside the release record.
//!
//! ## Why it is built this way
//!
//! Parameter Store has no compare-and-swap and no conditional delete; its one atomic primitive for
//! a lock would be create-if-absent. Taking over a *stale* lock (a run that was killed) with
//! read-then-delete-then-create is not exclusive: two waiters that saw the same stale holder both
//! delete and both create, and one deletes the other's fresh lock.
//!
//! What Parameter Store does guarantee is the numbering of versions: every `PutParameter` makes a
//! new version, one more than the last, and returns its number; no two puts get the same one.
//! That is enough to build a compare-and-swap:
//!
//! - Every write to the lock names the version it was based on (`after`): the version the writer
//!   read, and whose state entitled it to write (free or stale for a claim, held by itself for a
//!   renewal or a release).
//! - A write is **effective** when its own version is `after + 1`: nothing was written between the
//!   read and the write. The writer knows at once, from the version `PutParameter` returns.
//! - A write that is not effective changes nothing: readers skip it (reading the history back to
//!   the newest effective write when the current value is not effective) and its writer retries
//!   from a fresh read.
//!
//! So two contenders over a stale lock both write, one gets `after + 1` and holds it, the other
//! gets `after + 2` and waits; a holder whose lease lapsed and was taken over finds, on its next
//! renewal, that the lock names someone else. Nothing is ever deleted: the lock is one parameter
//! whose versions are the protocol's log (Parameter Store keeps the last 100, and only the few
//! newest are ever read).
//!
//! ## Leases
//!
//! A holder writes an expiry (`now + LEASE`) with each renewal, every `renew` seconds. A waiter
//! takes the lock over only once that expiry has passed by its own clock. The holder, for its part,
//! trusts its lease only until `LEASE - MARGIN` after its last effective renewal began: it stops
//! starting new work ([`DeployLock::check`]) a margin before anyone may take over, which covers
//! clock skew between runners up to the margin. A run whose lock was taken over, or whose renewals
//! failed until the lease ran out, is told so and starts no new batch.
//!
//! Values written by ec2-deploy 0.1 (`{"id", "by", "expires"}`, created with create-if-absent and
//! deleted on release) are read as a holder until their expiry.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::cancel::Cancel;
use crate::model::ParameterName;
use crate::ports::{epoch_seconds, Clock, ParameterStore, ServiceError};

/// How long a lease lasts, how often it is renewed, and how long before its end a holder stops
/// trusting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub lease: Duration,
    pub renew: Duration,
    pub margin: Duration,
}

impl Default for Lease {
    fn default() -> Self {
        Lease { lease: Duration::from_secs(120), renew: Duration::from_secs(30), margin: Duration::from_secs(30) }
    }
}

impl Lease {
    /// A lease of `seconds` (`EC2_DEPLOY_LOCK_LEASE`), renewed every quarter of it, trusted until
    /// three quarters of it have passed.
    pub fn of_seconds(seconds: u64) -> Lease {
        let lease = Duration::from_secs(seconds.max(4));
        Lease { lease, renew: lease / 4, margin: lease / 4 }
    }
}

/// A run asking for the lock: `id` is unique per run, `by` says who it is (the run's URL).
#[derive(Debug, Clone)]
pub struct Claimant {
    pub id: String,
    pub by: String,
}

/// Who holds the lock, as a waiter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Unique per run.
    pub id: String,
    /// Who it is, for messages (the run's URL, or the host).
    pub by: String,
    /// Seconds since the epoch after which the lock is stale.
    pub expires: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another deploy of this environment holds the lock {name} ({by}); waited {waited}s (input `lock-timeout`). Let it finish, or cancel it")]
    Held { name: ParameterName, by: String, waited: u64 },
    /// The run was cancelled while it waited; it holds nothing.
    #[error("cancelled while waiting for the deploy lock")]
    Cancelled,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// This run no longer holds the lock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this run lost the deploy lock {name}: {why}; it started nothing after that")]
pub struct LockLost {
    pub name: ParameterName,
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum State {
    Held,
    Released,
}

/// One write to the lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    by: String,
    expires: u64,
    /// The version this write was based on; absent in values written by ec2-deploy 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<i64>,
    #[serde(default = "held")]
    state: State,
}

fn held() -> State {
    State::Held
}

impl Record {
    /// Whether a stored version of the lock counts.
    fn effective(&self, version: i64) -> bool {
        self.after.is_none_or(|after| version == after + 1)
    }

    fn holder(&self) -> Option<Holder> {
        (self.state == State::Held).then(|| Holder { id: self.id.clone(), by: self.by.clone(), expires: self.expires })
    }
}

/// The lock as read: the newest version (what the next write is based on) and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    version: i64,
    holder: Option<Holder>,
}

async fn observe(store: &impl ParameterStore, name: &ParameterName) -> Result<Observed, ServiceError> {
    let reading = |e: ServiceError| e.context(format!("reading the deploy lock {name}"));
    let Some(current) = store.get_parameter(name).await.map_err(reading)? else {
        return Ok(Observed { version: 0, holder: None });
    };
    match serde_json::from_str::<Record>(&current.value) {
        // Not a lock value at all: nobody holds it.
        Err(_) => Ok(Observed { version: current.version, holder: None }),
        Ok(r) if r.effective(current.version) => Ok(Observed { version: current.version, holder: r.holder() }),
        Ok(_) => {
            // Writes raced: the state is that of the newest effective write.
            let history = store.parameter_history(name).await.map_err(reading)?;
            let latest = history.iter().map(|p| p.version).max().unwrap_or(current.version).max(current.version);
            let holder = history.iter().rev().find_map(|p| {
                let r = serde_json::from_str::<Record>(&p.value).ok()?;
                r.effective(p.version).then(|| r.holder())
            });
            Ok(Observed { version: latest, holder: holder.flatten() })
        }
    }
}

/// The lock beside a release record: `<release-parameter>-lock`.
pub fn name(release_parameter: &ParameterName) -> Result<ParameterName, String> {
    release_parameter.with_suffix("-lock")
}

/// A held lock. Keep it alive with [`DeployLock::keep_alive`], check it before each new step
/// with [`DeployLock::check`], and release it with [`DeployLock::release`].
pub struct DeployLock<'w, W> {
    world: &'w W,
    pub name: ParameterName,
    me: Holder,
    lease: Lease,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The version of this run's newest effective write.
    version: i64,
    /// Until when this run trusts its lease (its own clock).
    trusted_until: SystemTime,
    lost: Option<String>,
}

impl<'w, W: ParameterStore + Clock> DeployLock<'w, W> {
    /// Takes the lock for `run`, waiting up to `timeout` while another live run holds it. A cancel ends
    /// the wait between attempts, never in the middle of one.
    pub async fn acquire(
        world: &'w W,
        name: ParameterName,
        run: Claimant,
        lease: Lease,
        timeout: Duration,
        cancel: &Cancel,
        on_wait: impl Fn(&Holder),
    ) -> Result<DeployLock<'w, W>, LockError> {
        let started = world.now();
        let me = Holder { id: run.id, by: run.by, expires: 0 };
        let mut told = false;
        loop {
            let seen = observe(world, &name).await?;
            let now = world.now();
            match &seen.holder {
                Some(h) if h.expires >= epoch_seconds(now) && h.id != me.id => {
                    let waited = now.duration_since(started).unwrap_or_default();
                    if waited >= timeout {
                        return Err(LockError::Held { name, by: h.by.clone(), waited: waited.as_secs() });
                    }
                    if !told {
                        on_wait(h);
                        told = true;
                    }
                    let pause = Duration::from_secs(2).min(timeout - waited).max(Duration::from_millis(200));
                    tokio::select! {
                        _ = world.sleep(pause) => {}
                        _ = cancel.cancelled() => return Err(LockError::Cancelled),
                    }
                }
                // Free, released, stale, or (after a write of ours that raced) ours.
                _ => {
                    if cancel.is_cancelled() {
                        return Err(LockError::Cancelled);
                    }
                    if let Some(version) = write(world, &name, &me, State::Held, lease, seen.version).await? {
                        let trusted_until = now + lease.lease - lease.margin;
                        let inner = Inner { version, trusted_until, lost: None };
                        return Ok(DeployLock { world, name, me, lease, inner: Mutex::new(inner) });
                    }
                    // Another run's write came first. If it took the lock, the next read shows
                    // it (and this run waits as for any holder); if every claim raced, back off
                    // for a time of this run's own before trying again, so that claims stop
                    // colliding.
                    let again = observe(world, &name).await?;
                    if again.holder.as_ref().is_some_and(|h| h.id != me.id && h.expires >= epoch_seconds(world.now())) {
                        continue;
                    }
                    let waited = world.now().duration_since(started).unwrap_or_default();
                    if waited >= timeout {
                        return Err(LockError::Held {
                            name,
                            by: "other runs claiming it at the same moment".into(),
                            waited: waited.as_secs(),
                        });
                    }
                    tokio::select! {
                        _ = world.sleep(backoff(&me.id)) => {}
                        _ = cancel.cancelled() => return Err(LockError::Cancelled),
                    }
                }
            }
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this run may start something new: it still holds the lock and its lease is
    /// trusted (renewed recently enough).
    pub fn check(&self) -> Result<(), LockLost> {
        let inner = self.inner();
        if let Some(why) = &inner.lost {
            return Err(LockLost { name: self.name.clone(), why: why.clone() });
        }
        if self.world.now() >= inner.trusted_until {
            return Err(LockLost {
                name: self.name.clone(),
                why: format!(
                    "its lease could not be renewed for {}s",
                    (self.lease.lease - self.lease.margin).as_secs()
                ),
            });
        }
        Ok(())
    }

    /// Extends the lease, if this run still holds the lock. Err(lost) when another run holds it.
    pub async fn renew(&self) -> Result<(), RenewError> {
        for _ in 0..3 {
            if let Some(why) = self.inner().lost.clone() {
                return Err(RenewError::Lost(LockLost { name: self.name.clone(), why }));
            }
            let began = self.world.now();
            let seen = observe(self.world, &self.name).await?;
            match &seen.holder {
                Some(h) if h.id == self.me.id => {}
                other => {
                    let why = match other {
                        Some(h) => format!("{} took it over", h.by),
                        None => "it was released or cleared by something else".to_string(),
                    };
                    self.inner().lost = Some(why.clone());
                    return Err(RenewError::Lost(LockLost { name: self.name.clone(), why }));
                }
            }
            if let Some(version) =
                write(self.world, &self.name, &self.me, State::Held, self.lease, seen.version).await?
            {
                let mut inner = self.inner();
                inner.version = version;
                inner.trusted_until = began + self.lease.lease - self.lease.margin;
                return Ok(());
            }
        }
        Err(RenewError::Service(ServiceError::new(
            format!("renewing the deploy lock {}", self.name),
            crate::ports::ErrorKind::Unavailable,
            "other writes to the lock kept racing this one",
        )))
    }

    /// Renews the lease every `renew` until dropped. Failures are retried; a lost lock is
    /// remembered for [`DeployLock::check`] and renewing stops. Never returns.
    pub async fn keep_alive(&self, on_problem: impl Fn(&str)) {
        loop {
            self.world.sleep(self.lease.renew).await;
            match self.renew().await {
                Ok(()) => {}
                Err(RenewError::Lost(lost)) => {
                    on_problem(&lost.to_string());
                    std::future::pending::<()>().await;
                }
                Err(RenewError::Service(e)) => on_problem(&format!("renewing the deploy lock: {e}; retrying")),
            }
        }
    }

    /// Releases the lock if this run still holds it.
    pub async fn release(self) -> Result<(), ServiceError> {
        for _ in 0..3 {
            let seen = observe(self.world, &self.name).await?;
            if seen.holder.as_ref().is_none_or(|h| h.id != self.me.id) {
                return Ok(());
            }
            if write(self.world, &self.name, &self.me, State::Released, self.lease, seen.version).await?.is_some() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Why a renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error(transparent)]
    Lost(LockLost),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// A pause between 200 and 700 ms of this run's own (from its id), after a claim that raced.
fn backoff(id: &str) -> Duration {
    let spread = id.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    Duration::from_millis(200 + spread % 500)
}

/// Writes this run's state based on version `after`; its version when the write is effective.
async fn write(
    world: &(impl ParameterStore + Clock),
    name: &ParameterName,
    me: &Holder,
    state: State,
    lease: Lease,
    after: i64,
) -> Result<Option<i64>, ServiceError> {
    let expires = if state == State::Held { epoch_seconds(world.now() + lease.lease) } else { 0 };
    let record = Record { id: me.id.clone(), by: me.by.clone(), expires, after: Some(after), state };
    let value = serde_json::to_string(&record).expect("plain data serialises");
    let version = crate::ports::put_parameter_patiently(world, name, &value, true)
        .await
        .map_err(|e| e.context(format!("writing the deploy lock {name}")))?;
    Ok((version == after + 1).then_some(version))
}

#[cfg(test)]
mod tests;
