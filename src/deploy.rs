//! One deploy from start to end: the deploy lock, the plan made under it (read-only; a dry run
//! makes it without the lock and stops there), the plan applied, the lock released.

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
    let req = &with_record(req, world, runner).await?;
    if req.dry_run {
        // A dry run changes nothing, so it takes no lock: what it prints is what a deploy would
        // do if nothing else ran first.
        let cx = apply::Context { runner, cancel: cx.cancel, workdir: cx.workdir, lock: &apply::Unlocked };
        return plan(req, world, run, None, &cx).await.map(|p| Outcome::DryRun(Box::new(p)));
    }
    let lock_name = lock::name(&req.release_parameter).map_err(|e| {
        Error::Inputs(vec![crate::inputs::InputError {
            what: "input `release-parameter`".into(),
            message: format!("the lock beside it does not fit SSM: {e}"),
        }])
    })?;

    // One deploy at a time per environment: the first change is taking the lock. Everything the
    // plan reads (the live release the run-order guard compares with, the release a rollback
    // goes back to) is read under it, so no other run can change it before this one applies.
    let timeout = std::time::Duration::from_secs(u64::from(req.lock_timeout));
    let claimant = Claimant { id: uuid::Uuid::new_v4().to_string(), by: run.by.clone() };
    let lock = DeployLock::acquire(world, lock_name.clone(), claimant, lease, timeout, cx.cancel, |h| {
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
    let applied = async {
        let cx = apply::Context { runner, cancel: cx.cancel, workdir: cx.workdir, lock: &lock };
        let plan = plan(req, world, run, Some(&lock_name), &cx).await?;
        warn_if_the_session_may_end_first(&plan, world, run, runner);
        apply::apply(&plan, world, &cx).await.map(|r| Outcome::Finished(Box::new(r)))
    };
    let result = tokio::select! {
        r = applied => r,
        _ = lock.keep_alive(|problem| runner.warning("ec2-deploy: lock", problem)) => unreachable!("renewing never ends"),
    };
    if let Err(e) = lock.release().await {
        runner.warning("ec2-deploy: lock", &format!("{e}; it expires by itself within {}s", lease.lease.as_secs()));
    }
    result
}

/// The record (and so the lock beside it) a request uses. The default is per container; a
/// record under the earlier default (per repository) is read and written where it is when it
/// holds this container's releases and the per-container one holds nothing yet, so an upgrade
/// neither loses the history nor lets two runs of one service take two different locks.
pub async fn with_record<W: World>(req: &DeployRequest, world: &W, runner: &Runner) -> Result<DeployRequest, Error> {
    let mut req = req.clone();
    let Some(before) = req.legacy_release_parameter.clone() else { return Ok(req) };
    if world.get_parameter(&req.release_parameter).await?.is_some() {
        return Ok(req);
    }
    let history = crate::release::Releases::new(before.clone()).history(world).await?;
    let holds_this_container =
        matches!(history.live(), Ok(Some(live)) if live.release.container.name == req.container.name);
    if holds_this_container {
        runner.info(&format!(
            "Release record: {before} (the earlier default, which holds {}'s releases), used where it is; set `release-parameter: {before}` to say so, or move it to {}",
            req.container.name, req.release_parameter
        ));
        req.release_parameter = before;
    }
    Ok(req)
}

/// Services of one step that publish the same host port must not share an instance: checked
/// (read-only) before the first of them changes anything.
pub async fn check_shared_ports<W: World>(requests: &[DeployRequest], world: &W) -> Result<(), Error> {
    let mut found = vec![];
    for req in requests {
        found.push(world.find_instances(&req.targets).await?);
    }
    let mut errors = vec![];
    for (i, a) in requests.iter().enumerate() {
        for (j, b) in requests.iter().enumerate().skip(i + 1) {
            let shared: Vec<&str> =
                found[i].iter().filter(|x| found[j].iter().any(|y| y.id == x.id)).map(|x| x.id.as_str()).collect();
            let port = a.container.ports.iter().find(|p| b.container.ports.iter().any(|q| q.host == p.host));
            if let (Some(port), false) = (port, shared.is_empty()) {
                errors.push(crate::plan::PlanError::SharedHostPort {
                    first: a.service.clone().unwrap_or_default(),
                    second: b.service.clone().unwrap_or_default(),
                    port: port.host,
                    instances: shared.join(", "),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Plan(errors))
    }
}

/// A rollout that may outlast the runner's AWS session ends with ExpiredToken halfway: say so
/// before anything moves, with the `role-duration-seconds` that would cover it.
fn warn_if_the_session_may_end_first<W: World>(plan: &Plan, world: &W, run: &RunInfo, runner: &Runner) {
    let Some(expires) = run.credentials_expire else { return };
    let worst = plan.worst_case();
    let left = expires.duration_since(world.now()).unwrap_or_default();
    if left < worst.with_rollback {
        runner.warning(
            "ec2-deploy: AWS session",
            &format!(
                "the AWS session ends in {}s, and this rollout may take up to {}s ({}s with a full rollback): give aws-actions/configure-aws-credentials `role-duration-seconds: {}`",
                left.as_secs(),
                worst.rollout.as_secs(),
                worst.with_rollback.as_secs(),
                worst.role_duration_seconds()
            ),
        );
    }
}

/// Gathers the facts and makes the plan; prints it. A converge asks the instances which release
/// they run first (a read-only command), once the facts name the live release.
async fn plan<W: World>(
    req: &DeployRequest,
    world: &W,
    run: &RunInfo,
    lock: Option<&crate::model::ParameterName>,
    cx: &apply::Context<'_>,
) -> Result<Plan, Error> {
    let runner = cx.runner;
    runner.group("Plan");
    let planned = async {
        let mut facts = plan::gather(world, req, run, lock).await?;
        if let (true, Some(live)) = (req.converge, &facts.live) {
            let comment = apply::command::comment(req.environment.as_ref(), &live.release.tag);
            facts.drift = Some(crate::drift::survey(world, cx, live, &facts.instances, &req.targets, &comment).await?);
        }
        plan::make(req, facts).map_err(Error::Plan)
    }
    .await;
    if let Ok(plan) = &planned {
        runner.info(&plan.to_string());
    }
    runner.end_group();
    planned
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod safety;
