//! Writing the release record after a successful rollout: the new version Auto Scaling boots and
//! later rollbacks read.

use crate::plan::Plan;
use crate::ports::{ServiceError, World};
use crate::release::{Release, Releases};

/// Writes `release` as the record's new version; returns the version.
pub async fn write<W: World>(world: &W, plan: &Plan, release: &Release) -> Result<i64, ServiceError> {
    Releases::new(plan.record.parameter.clone()).record(world, release).await
}
