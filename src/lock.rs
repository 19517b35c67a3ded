//! One deploy at a time per environment: a lock held in AWS, beside the release record.
//!
//! The lock is the SSM parameter `<release-parameter>-lock`, created with `Overwrite=false` (only
//! one run can create it). Its value names the holder and a lease that the holder renews every
//! [`RENEW`] while it runs; a run that was killed stops renewing, and its lock is taken over once
//! the lease has passed. A second run waits up to `lock-timeout`, then fails naming the holder.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ssm::types::ParameterType;
use serde::{Deserialize, Serialize};

use crate::aws::{unless_missing, AwsError};

pub const LEASE: Duration = Duration::from_secs(120);
pub const RENEW: Duration = Duration::from_secs(30);

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
    Held { name: String, by: String, waited: u64 },
    /// The run was cancelled while it waited; it holds nothing.
    #[error("cancelled while waiting for the deploy lock")]
    Cancelled,
    #[error(transparent)]
    Aws(#[from] AwsError),
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn name(release_parameter: &str) -> String {
    format!("{release_parameter}-lock")
}

/// A held lock; renewing it is the caller's loop, releasing it is [`Lock::release`].
pub struct Lock {
    client: aws_sdk_ssm::Client,
    pub name: String,
    holder: Holder,
}

impl Lock {
    /// Takes the lock, waiting up to `timeout` while another live run holds it. A cancel ends
    /// the wait between attempts, never in the middle of one: a lock created by a request whose
    /// answer was dropped would be left behind for a whole lease.
    pub async fn acquire(
        client: aws_sdk_ssm::Client,
        name: String,
        by: String,
        timeout: Duration,
        cancel: &crate::cancel::Cancel,
        on_wait: impl Fn(&Holder),
    ) -> Result<Lock, LockError> {
        let started = std::time::Instant::now();
        let holder = Holder { id: uuid::Uuid::new_v4().to_string(), by, expires: 0 };
        let mut told = false;
        loop {
            let mine = Holder { expires: now() + LEASE.as_secs(), ..holder.clone() };
            let created = client
                .put_parameter()
                .name(&name)
                .value(serde_json::to_string(&mine).expect("serialises"))
                .r#type(ParameterType::String)
                .overwrite(false)
                .description("ec2-deploy: the deploy that holds this environment (lease renewed while it runs)")
                .send()
                .await
                .map_err(|e| AwsError::new(format!("taking the deploy lock {name}"), e));
            match created {
                Ok(_) => return Ok(Lock { client, name, holder: mine }),
                Err(e) if e.is("ParameterAlreadyExists") => {}
                Err(e) => return Err(e.into()),
            }
            let current = read(&client, &name).await?;
            match current {
                // Stale (its run stopped renewing) or unreadable: take it over.
                Some(h) if h.expires < now() => delete(&client, &name).await?,
                None => delete(&client, &name).await?,
                Some(h) => {
                    if started.elapsed() >= timeout {
                        return Err(LockError::Held { name, by: h.by, waited: started.elapsed().as_secs() });
                    }
                    if !told {
                        on_wait(&h);
                        told = true;
                    }
                    let pause = Duration::from_secs(2)
                        .min(timeout.saturating_sub(started.elapsed()))
                        .max(Duration::from_millis(200));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = cancel.cancelled() => return Err(LockError::Cancelled),
                    }
                }
            }
        }
    }

    /// Extends the lease (called every [`RENEW`] while the run lives).
    pub async fn renew(&self) -> Result<(), AwsError> {
        let renewed = Holder { expires: now() + LEASE.as_secs(), ..self.holder.clone() };
        self.client
            .put_parameter()
            .name(&self.name)
            .value(serde_json::to_string(&renewed).expect("serialises"))
            .r#type(ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new(format!("renewing the deploy lock {}", self.name), e))
    }

    /// Releases the lock if this run still holds it.
    pub async fn release(self) -> Result<(), AwsError> {
        match read(&self.client, &self.name).await? {
            Some(h) if h.id == self.holder.id => delete(&self.client, &self.name).await,
            _ => Ok(()),
        }
    }
}

async fn read(client: &aws_sdk_ssm::Client, name: &str) -> Result<Option<Holder>, AwsError> {
    let result = client
        .get_parameter()
        .name(name)
        .send()
        .await
        .map_err(|e| AwsError::new(format!("reading the deploy lock {name}"), e));
    Ok(unless_missing(result, "ParameterNotFound")?
        .and_then(|out| out.parameter().and_then(|p| p.value()).and_then(|v| serde_json::from_str(v).ok())))
}

async fn delete(client: &aws_sdk_ssm::Client, name: &str) -> Result<(), AwsError> {
    let result = client
        .delete_parameter()
        .name(name)
        .send()
        .await
        .map_err(|e| AwsError::new(format!("removing the deploy lock {name}"), e));
    unless_missing(result, "ParameterNotFound").map(|_| ())
}
