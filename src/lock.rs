//! One deploy at a time per environment: a lock in SSM Parameter Store, beside the release record.
//!
//! The lock is the parameter `<release-parameter>-lock`, created with `Overwrite=false` (only one
//! run can create it). Its value names the holder and a lease that the holder renews every
//! `renew` while it runs; a run that was killed stops renewing, and its lock is taken over once
//! the lease has passed. A second run waits up to `lock-timeout`, then fails naming the holder.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cancel::Cancel;
use crate::model::ParameterName;
use crate::ports::{epoch_seconds, Clock, ErrorKind, ParameterStore, ServiceError};

/// How long a lease lasts and how often it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub lease: Duration,
    pub renew: Duration,
}

impl Default for Lease {
    fn default() -> Self {
        Lease { lease: Duration::from_secs(120), renew: Duration::from_secs(30) }
    }
}

/// A run asking for the lock: `id` is unique per run, `by` says who it is (the run's URL).
#[derive(Debug, Clone)]
pub struct Claimant {
    pub id: String,
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Unique per run.
    pub id: String,
    /// Who holds it, for the message the waiting run prints (the run's URL, or the host).
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

/// The lock beside a release record: `<release-parameter>-lock`.
pub fn name(release_parameter: &ParameterName) -> Result<ParameterName, String> {
    release_parameter.with_suffix("-lock")
}

/// A held lock; renewing it is [`DeployLock::keep_alive`], releasing it [`DeployLock::release`].
pub struct DeployLock<'w, W> {
    world: &'w W,
    pub name: ParameterName,
    holder: Holder,
    lease: Lease,
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
        let holder = Holder { id: run.id, by: run.by, expires: 0 };
        let mut told = false;
        loop {
            let mine = Holder { expires: epoch_seconds(world.now() + lease.lease), ..holder.clone() };
            let created = world
                .put_parameter(&name, &serde_json::to_string(&mine).expect("serialises"), false)
                .await
                .map_err(|e| e.context(format!("taking the deploy lock {name}")));
            match created {
                Ok(_) => return Ok(DeployLock { world, name, holder: mine, lease }),
                Err(e) if e.kind == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            match read(world, &name).await? {
                // Stale (its run stopped renewing) or unreadable: take it over.
                Some(h) if h.expires < epoch_seconds(world.now()) => delete(world, &name).await?,
                None => delete(world, &name).await?,
                Some(h) => {
                    let waited = world.now().duration_since(started).unwrap_or_default();
                    if waited >= timeout {
                        return Err(LockError::Held { name, by: h.by, waited: waited.as_secs() });
                    }
                    if !told {
                        on_wait(&h);
                        told = true;
                    }
                    let pause = Duration::from_secs(2).min(timeout - waited).max(Duration::from_millis(200));
                    tokio::select! {
                        _ = world.sleep(pause) => {}
                        _ = cancel.cancelled() => return Err(LockError::Cancelled),
                    }
                }
            }
        }
    }

    /// Extends the lease.
    pub async fn renew(&self) -> Result<(), ServiceError> {
        let renewed = Holder { expires: epoch_seconds(self.world.now() + self.lease.lease), ..self.holder.clone() };
        self.world
            .put_parameter(&self.name, &serde_json::to_string(&renewed).expect("serialises"), true)
            .await
            .map(|_| ())
            .map_err(|e| e.context(format!("renewing the deploy lock {}", self.name)))
    }

    /// Renews the lease every `renew` while the run lives; a failure is reported and retried.
    pub async fn keep_alive(&self, on_problem: impl Fn(&str)) {
        loop {
            self.world.sleep(self.lease.renew).await;
            if let Err(e) = self.renew().await {
                on_problem(&e.to_string());
            }
        }
    }

    /// Releases the lock if this run still holds it.
    pub async fn release(self) -> Result<(), ServiceError> {
        match read(self.world, &self.name).await? {
            Some(h) if h.id == self.holder.id => delete(self.world, &self.name).await,
            _ => Ok(()),
        }
    }
}

async fn read(store: &impl ParameterStore, name: &ParameterName) -> Result<Option<Holder>, ServiceError> {
    let found = store.get_parameter(name).await.map_err(|e| e.context(format!("reading the deploy lock {name}")))?;
    Ok(found.and_then(|p| serde_json::from_str(&p.value).ok()))
}

async fn delete(store: &impl ParameterStore, name: &ParameterName) -> Result<(), ServiceError> {
    store.delete_parameter(name).await.map_err(|e| e.context(format!("removing the deploy lock {name}")))
}
