//! Load balancer traffic through ELBv2: take instances out of every target group, wait until they
//! are drained, put them back, wait until they are healthy.
//!
//! The waits are our own: the SDK's TargetInService waiter has no failure condition (an unhealthy
//! target would only time out), and a deploy must stop at the first target that fails its checks.

use std::time::{Duration, Instant};

use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetHealthStateEnum};

use crate::aws::AwsError;

pub struct Traffic {
    client: aws_sdk_elasticloadbalancingv2::Client,
    pub groups: Vec<String>,
}

/// A target's state in one target group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy(String),
    Draining,
    /// Not registered (or deregistration finished).
    Unused,
    Unavailable,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("{instance} failed the load balancer's health checks in {group}: {reason}")]
    Unhealthy { instance: String, group: String, reason: String },
    #[error("{instance} was still {state} in {group} after {seconds}s")]
    Timeout { instance: String, group: String, state: String, seconds: u64 },
    #[error(transparent)]
    Aws(#[from] AwsErrorText),
}

/// An AWS error kept as text, so wait errors stay comparable in tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AwsErrorText(pub String);

impl From<AwsError> for WaitError {
    fn from(e: AwsError) -> Self {
        WaitError::Aws(AwsErrorText(e.to_string()))
    }
}

fn short(group: &str) -> &str {
    // arn:aws:elasticloadbalancing:region:account:targetgroup/NAME/ID → NAME/ID
    group.split_once("targetgroup/").map(|(_, n)| n).unwrap_or(group)
}

impl Traffic {
    pub fn new(client: aws_sdk_elasticloadbalancingv2::Client, groups: Vec<String>) -> Self {
        Traffic { client, groups }
    }

    /// The longest deregistration delay of the groups: how long draining may take.
    pub async fn drain_limit(&self) -> Result<Duration, AwsError> {
        let mut longest = 0;
        for group in &self.groups {
            let out =
                self.client.describe_target_group_attributes().target_group_arn(group).send().await.map_err(|e| {
                    AwsError::new(format!("reading the attributes of target group {}", short(group)), e)
                })?;
            for a in out.attributes() {
                if a.key() == Some("deregistration_delay.timeout_seconds") {
                    longest = longest.max(a.value().and_then(|v| v.parse().ok()).unwrap_or(300));
                }
            }
        }
        Ok(Duration::from_secs(longest))
    }

    /// How long a registered target may take to pass its checks: interval × healthy threshold
    /// (+ one timeout), for the slowest group.
    pub async fn healthy_limit(&self) -> Result<Duration, AwsError> {
        if self.groups.is_empty() {
            return Ok(Duration::ZERO);
        }
        let out = self
            .client
            .describe_target_groups()
            .set_target_group_arns(Some(self.groups.clone()))
            .send()
            .await
            .map_err(|e| AwsError::new("reading the target groups' health check settings", e))?;
        let longest = out
            .target_groups()
            .iter()
            .map(|g| {
                let interval = g.health_check_interval_seconds().unwrap_or(30).max(1) as u64;
                let threshold = g.healthy_threshold_count().unwrap_or(5).max(1) as u64;
                let timeout = g.health_check_timeout_seconds().unwrap_or(5).max(1) as u64;
                interval * threshold + timeout
            })
            .max()
            .unwrap_or(0);
        Ok(Duration::from_secs(longest))
    }

    /// Checks that every group exists (for the plan).
    pub async fn check_groups(&self) -> Result<Vec<String>, AwsError> {
        let mut missing = vec![];
        for group in &self.groups {
            if let Err(e) = self.client.describe_target_groups().target_group_arns(group).send().await {
                let e = AwsError::new(format!("looking up target group {}", short(group)), e);
                if e.is("TargetGroupNotFound") || e.is("ValidationError") {
                    missing.push(group.clone());
                } else {
                    return Err(e);
                }
            }
        }
        Ok(missing)
    }

    fn targets(ids: &[String]) -> Vec<TargetDescription> {
        ids.iter().map(|id| TargetDescription::builder().id(id).build()).collect()
    }

    pub async fn deregister(&self, ids: &[String]) -> Result<(), AwsError> {
        for group in &self.groups {
            self.client
                .deregister_targets()
                .target_group_arn(group)
                .set_targets(Some(Self::targets(ids)))
                .send()
                .await
                .map_err(|e| AwsError::new(format!("taking {} out of {}", ids.join(", "), short(group)), e))?;
        }
        Ok(())
    }

    pub async fn register(&self, ids: &[String]) -> Result<(), AwsError> {
        for group in &self.groups {
            self.client
                .register_targets()
                .target_group_arn(group)
                .set_targets(Some(Self::targets(ids)))
                .send()
                .await
                .map_err(|e| AwsError::new(format!("putting {} back into {}", ids.join(", "), short(group)), e))?;
        }
        Ok(())
    }

    /// Each (group, instance, state) for `ids`.
    pub async fn states(&self, ids: &[String]) -> Result<Vec<(String, String, TargetState)>, AwsError> {
        let mut out = vec![];
        for group in &self.groups {
            let answer = self
                .client
                .describe_target_health()
                .target_group_arn(group)
                .set_targets(Some(Self::targets(ids)))
                .send()
                .await
                .map_err(|e| AwsError::new(format!("reading target health in {}", short(group)), e))?;
            for d in answer.target_health_descriptions() {
                let id = d.target().and_then(|t| t.id()).unwrap_or_default().to_string();
                let health = d.target_health();
                let state = match health.and_then(|h| h.state()) {
                    Some(TargetHealthStateEnum::Healthy) => TargetState::Healthy,
                    Some(TargetHealthStateEnum::Initial) => TargetState::Initial,
                    Some(TargetHealthStateEnum::Unhealthy) | Some(TargetHealthStateEnum::UnhealthyDraining) => {
                        TargetState::Unhealthy(
                            health
                                .and_then(|h| h.description())
                                .or(health.and_then(|h| h.reason().map(|r| r.as_str())))
                                .unwrap_or("failed health checks")
                                .to_string(),
                        )
                    }
                    Some(TargetHealthStateEnum::Draining) => TargetState::Draining,
                    Some(TargetHealthStateEnum::Unused) => TargetState::Unused,
                    Some(TargetHealthStateEnum::Unavailable) => TargetState::Unavailable,
                    other => TargetState::Other(other.map(|s| s.as_str().to_string()).unwrap_or_default()),
                };
                out.push((group.clone(), id, state));
            }
        }
        Ok(out)
    }

    /// Waits until none of `ids` is draining in any group.
    pub async fn wait_drained(&self, ids: &[String], limit: Duration) -> Result<(), WaitError> {
        self.wait(ids, limit, |state| match state {
            TargetState::Unused | TargetState::Unavailable => Ok(true),
            _ => Ok(false),
        })
        .await
    }

    /// Waits until `ids` are healthy in every group; fails at once on an unhealthy target.
    pub async fn wait_healthy(&self, ids: &[String], limit: Duration) -> Result<(), WaitError> {
        self.wait(ids, limit, |state| match state {
            TargetState::Healthy => Ok(true),
            TargetState::Unhealthy(reason) => Err(reason.clone()),
            _ => Ok(false),
        })
        .await
    }

    async fn wait(
        &self,
        ids: &[String],
        limit: Duration,
        done: impl Fn(&TargetState) -> Result<bool, String>,
    ) -> Result<(), WaitError> {
        let started = Instant::now();
        let mut interval = Duration::from_millis(500);
        loop {
            let states = self.states(ids).await?;
            let mut pending = None;
            for (group, id, state) in &states {
                match done(state) {
                    Ok(true) => {}
                    Ok(false) => pending = pending.or(Some((group.clone(), id.clone(), state.clone()))),
                    Err(reason) => {
                        return Err(WaitError::Unhealthy {
                            instance: id.clone(),
                            group: short(group).to_string(),
                            reason,
                        });
                    }
                }
            }
            let Some((group, instance, state)) = pending else {
                return Ok(());
            };
            if started.elapsed() >= limit {
                return Err(WaitError::Timeout {
                    instance,
                    group: short(&group).to_string(),
                    state: format!("{state:?}").to_lowercase(),
                    seconds: limit.as_secs(),
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_secs(3));
        }
    }
}
