//! One deploy from start to end: the plan (read-only; all a dry run does), the deploy lock, the
//! plan applied under it, the lock released.

use crate::apply;
use crate::cancel::Cancel;
use crate::github::Runner;
use crate::inputs::DeployRequest;
use crate::lock::{self, Claimant, DeployLock, Lease, LockError};
use crate::plan::{self, Plan, RunInfo};
use crate::ports::World;
use crate::report::DeployReport;
use crate::Error;

/// What a run hands to the deploy: where to report, how to learn of a cancel, and what relative
/// paths are relative to.
pub struct Context<'a> {
    pub runner: &'a Runner,
    pub cancel: &'a Cancel,
    pub workdir: &'a std::path::Path,
}

pub enum Outcome {
    DryRun(Box<Plan>),
    Finished(Box<DeployReport>),
}

pub async fn run<W: World>(
    req: &DeployRequest,
    world: &W,
    run: &RunInfo,
    cx: &Context<'_>,
    lease: Lease,
) -> Result<Outcome, Error> {
    let runner = cx.runner;
    let lock_name = lock::name(&req.release_parameter).map_err(|e| {
        Error::Inputs(vec![crate::inputs::InputError {
            what: "input `release-parameter`".into(),
            message: format!("the lock beside it does not fit SSM: {e}"),
        }])
    })?;

    runner.group("Plan");
    let planned = match plan::gather(world, req, run, (!req.dry_run).then_some(&lock_name)).await {
        Ok(facts) => plan::make(req, facts).map_err(Error::Plan),
        Err(e) => Err(Error::Service(e)),
    };
    let plan = match planned {
        Ok(p) => p,
        Err(e) => {
            runner.end_group();
            return Err(e);
        }
    };
    runner.info(&plan.to_string());
    runner.end_group();
    if plan.dry_run {
        return Ok(Outcome::DryRun(Box::new(plan)));
    }

    // One deploy at a time per environment: the first change is taking the lock.
    let timeout = std::time::Duration::from_secs(u64::from(req.lock_timeout));
    let claimant = Claimant { id: uuid::Uuid::new_v4().to_string(), by: run.by.clone() };
    let lock = DeployLock::acquire(world, lock_name, claimant, lease, timeout, cx.cancel, |h| {
        runner.info(&format!(
            "Waiting for the deploy lock: held by {} (input `lock-timeout`: {}s)",
            h.by, req.lock_timeout
        ))
    })
    .await
    .map_err(|e| match e {
        LockError::Service(e) => Error::Service(e),
        LockError::Cancelled => Error::Cancelled,
        held => Error::Locked(held.to_string()),
    })?;
    let cx = apply::Context { runner, cancel: cx.cancel, workdir: cx.workdir, lock: &lock };
    let result = tokio::select! {
        r = apply::apply(&plan, world, &cx) => r,
        _ = lock.keep_alive(|problem| runner.warning("ec2-deploy: lock", problem)) => unreachable!("renewing never ends"),
    };
    if let Err(e) = lock.release().await {
        runner.warning("ec2-deploy: lock", &format!("{e}; it expires by itself within {}s", lease.lease.as_secs()));
    }
    result.map(|r| Outcome::Finished(Box::new(r)))
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod safety;
