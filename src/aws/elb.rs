//! ELBv2 target groups over aws-sdk-elasticloadbalancingv2. The waits (drained, healthy) are
//! the deploy's own, in `apply::traffic`: the SDK's TargetInService waiter has no failure
//! condition, and a deploy must stop at the first target that fails its checks.

use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetHealthStateEnum};

use super::classify;
use crate::live::Live;
use crate::model::{InstanceId, TargetGroupArn};
use crate::ports::{ErrorKind, GroupTimings, LoadBalancer, Result, TargetState};

fn targets(ids: &[InstanceId]) -> Vec<TargetDescription> {
    ids.iter().map(|id| TargetDescription::builder().id(id.as_str()).build()).collect()
}

fn names(ids: &[InstanceId]) -> String {
    ids.iter().map(InstanceId::as_str).collect::<Vec<_>>().join(", ")
}

impl LoadBalancer for Live {
    async fn missing_target_groups(&self, groups: &[TargetGroupArn]) -> Result<Vec<TargetGroupArn>> {
        let mut missing = vec![];
        for group in groups {
            let result = self.aws.elb.describe_target_groups().target_group_arns(group.as_str()).send().await;
            if let Err(e) = result {
                let e = classify(
                    format!("looking up target group {}", group.short()),
                    e,
                    &["TargetGroupNotFound", "ValidationError"],
                );
                if e.kind != ErrorKind::NotFound {
                    return Err(e);
                }
                missing.push(group.clone());
            }
        }
        Ok(missing)
    }

    async fn group_timings(&self, groups: &[TargetGroupArn]) -> Result<GroupTimings> {
        let mut delay = 0;
        for group in groups {
            let out =
                self.aws.elb.describe_target_group_attributes().target_group_arn(group.as_str()).send().await.map_err(
                    |e| classify(format!("reading the attributes of target group {}", group.short()), e, &[]),
                )?;
            for a in out.attributes() {
                if a.key() == Some("deregistration_delay.timeout_seconds") {
                    delay = delay.max(a.value().and_then(|v| v.parse().ok()).unwrap_or(300));
                }
            }
        }
        let mut healthy = 0;
        if !groups.is_empty() {
            let out = self
                .aws
                .elb
                .describe_target_groups()
                .set_target_group_arns(Some(groups.iter().map(|g| g.to_string()).collect()))
                .send()
                .await
                .map_err(|e| classify("reading the target groups' health check settings", e, &[]))?;
            healthy = out
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
        }
        Ok(GroupTimings {
            deregistration_delay: Duration::from_secs(delay),
            time_to_healthy: Duration::from_secs(healthy),
        })
    }

    async fn deregister(&self, groups: &[TargetGroupArn], ids: &[InstanceId]) -> Result<()> {
        for group in groups {
            self.aws
                .elb
                .deregister_targets()
                .target_group_arn(group.as_str())
                .set_targets(Some(targets(ids)))
                .send()
                .await
                .map_err(|e| classify(format!("taking {} out of {}", names(ids), group.short()), e, &[]))?;
        }
        Ok(())
    }

    async fn register(&self, groups: &[TargetGroupArn], ids: &[InstanceId]) -> Result<()> {
        for group in groups {
            self.aws
                .elb
                .register_targets()
                .target_group_arn(group.as_str())
                .set_targets(Some(targets(ids)))
                .send()
                .await
                .map_err(|e| classify(format!("putting {} back into {}", names(ids), group.short()), e, &[]))?;
        }
        Ok(())
    }

    async fn target_states(
        &self,
        groups: &[TargetGroupArn],
        ids: &[InstanceId],
    ) -> Result<Vec<(TargetGroupArn, InstanceId, TargetState)>> {
        let mut out = vec![];
        for group in groups {
            let answer = self
                .aws
                .elb
                .describe_target_health()
                .target_group_arn(group.as_str())
                .set_targets(Some(targets(ids)))
                .send()
                .await
                .map_err(|e| classify(format!("reading target health in {}", group.short()), e, &[]))?;
            for d in answer.target_health_descriptions() {
                let Some(id) = d.target().and_then(|t| t.id()).and_then(|id| InstanceId::parse(id).ok()) else {
                    continue;
                };
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
}
