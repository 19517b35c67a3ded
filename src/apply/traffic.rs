//! Load balancer traffic for a batch: take instances out of every target group and wait until
//! they are drained, put them back and wait until they are healthy.
//!
//! The waits are our own: the SDK's TargetInService waiter has no failure condition (an unhealthy
//! target would only time out), and a deploy must stop at the first target that fails its checks.

use std::time::Duration;

use super::Purpose;
use crate::cancel::Cancel;
use crate::model::{InstanceId, TargetGroupArn};
use crate::ports::{Clock, ErrorKind, GroupTimings, LoadBalancer, ServiceError, TargetState};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("{instance} failed the load balancer's health checks in {group}: {reason}")]
    Unhealthy { instance: InstanceId, group: String, reason: String },
    #[error("{instance} was still {state} in {group} after {seconds}s")]
    Timeout { instance: InstanceId, group: String, state: String, seconds: u64 },
    #[error("cancelled while {0}")]
    Cancelled(&'static str),
    #[error("{0}")]
    Service(String),
}

impl From<ServiceError> for WaitError {
    fn from(e: ServiceError) -> Self {
        WaitError::Service(e.to_string())
    }
}

/// The target groups of a deploy, with the limits of its waits.
pub struct Traffic<'a, W> {
    pub world: &'a W,
    pub groups: &'a [TargetGroupArn],
    pub cancel: &'a Cancel,
    /// Draining may take the groups' deregistration delay; health needs a few check intervals.
    pub drain_limit: Duration,
    pub healthy_limit: Duration,
    /// Batches leave the load balancer while they change (not with the per-instance proxy, which
    /// keeps serving through a swap: then only the registration and the health gate after it
    /// remain).
    pub drain: bool,
}

impl<'a, W: LoadBalancer + Clock> Traffic<'a, W> {
    pub fn new(
        world: &'a W,
        groups: &'a [TargetGroupArn],
        timings: GroupTimings,
        cancel: &'a Cancel,
        drain: bool,
    ) -> Self {
        Traffic {
            world,
            groups,
            cancel,
            drain_limit: timings.deregistration_delay + Duration::from_secs(30),
            healthy_limit: timings.time_to_healthy + Duration::from_secs(30),
            drain,
        }
    }

    /// A failed call; an expired session also stops the run (see [`Cancel::session_expired`]).
    fn failed(&self, e: ServiceError) -> WaitError {
        if e.kind == ErrorKind::Expired {
            self.cancel.session_expired(&e.brief());
        }
        e.into()
    }

    /// Deregister from every group and wait until drained. A cancel ends the wait, unless the
    /// purpose is to restore what ran before.
    pub async fn take_out(&self, ids: &[InstanceId], purpose: Purpose) -> Result<(), WaitError> {
        if !self.drain {
            return Ok(());
        }
        self.world.deregister(self.groups, ids).await.map_err(|e| self.failed(e))?;
        let drained =
            self.wait(ids, self.drain_limit, |s| Ok(matches!(s, TargetState::Unused | TargetState::Unavailable)));
        self.unless_cancelled(drained, purpose, "draining").await
    }

    /// Register in every group and wait until healthy; fails at once on an unhealthy target.
    pub async fn put_back(&self, ids: &[InstanceId], purpose: Purpose) -> Result<(), WaitError> {
        // Also with the proxy: a new instance may not be in the groups yet (registering one that
        // is changes nothing).
        self.world.register(self.groups, ids).await.map_err(|e| self.failed(e))?;
        let healthy = |s: &TargetState| match s {
            TargetState::Healthy => Ok(true),
            TargetState::Unhealthy(reason) => Err(reason.clone()),
            _ => Ok(false),
        };
        let wait = self.wait(ids, self.healthy_limit, healthy);
        self.unless_cancelled(wait, purpose, "waiting for health").await
    }

    async fn unless_cancelled(
        &self,
        wait: impl std::future::Future<Output = Result<(), WaitError>>,
        purpose: Purpose,
        doing: &'static str,
    ) -> Result<(), WaitError> {
        match purpose {
            Purpose::Deploy => tokio::select! {
                r = wait => r,
                _ = self.cancel.cancelled() => Err(WaitError::Cancelled(doing)),
            },
            Purpose::Restore => tokio::select! {
                r = wait => r,
                _ = self.cancel.hurried() => Err(WaitError::Cancelled(doing)),
            },
        }
    }

    /// Register in every group without waiting (when the run is cancelled: the load balancer's
    /// own checks gate the traffic).
    pub async fn readmit(&self, ids: &[InstanceId]) -> Result<(), WaitError> {
        self.world.register(self.groups, ids).await.map_err(|e| self.failed(e))
    }

    async fn wait(
        &self,
        ids: &[InstanceId],
        limit: Duration,
        done: impl Fn(&TargetState) -> Result<bool, String>,
    ) -> Result<(), WaitError> {
        let started = self.world.now();
        let mut interval = Duration::from_millis(500);
        loop {
            let states = self.world.target_states(self.groups, ids).await.map_err(|e| self.failed(e))?;
            let mut pending = None;
            for (group, id, state) in &states {
                match done(state) {
                    Ok(true) => {}
                    Ok(false) => pending = pending.or(Some((group.clone(), id.clone(), state.clone()))),
                    Err(reason) => {
                        return Err(WaitError::Unhealthy {
                            instance: id.clone(),
                            group: group.short().to_string(),
                            reason,
                        })
                    }
                }
            }
            let Some((group, instance, state)) = pending else {
                return Ok(());
            };
            if self.world.now().duration_since(started).unwrap_or_default() >= limit {
                return Err(WaitError::Timeout {
                    instance,
                    group: group.short().to_string(),
                    state: state.describe(),
                    seconds: limit.as_secs(),
                });
            }
            self.world.sleep(interval).await;
            interval = (interval * 2).min(Duration::from_secs(3));
        }
    }
}
