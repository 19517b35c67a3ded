//! Rolling out by tags (no load balancer): one Run Command to the tags, SSM's MaxConcurrency and
//! MaxErrors doing the rolling, which is what scales to thousands of instances. When more
//! instances fail than `max-errors` allows, the ones that switched go back to what they ran
//! before; within it the run succeeds with a warning.

use super::command::{Order, Targets};
use super::{Purpose, Rollout};
use crate::model::{InstanceId, Limit};
use crate::ports::World;
use crate::report::{InstanceReport, RollbackReport};
use crate::Error;

pub struct ByTagsReport {
    pub instances: Vec<InstanceReport>,
    pub tolerated: usize,
    pub rollback: Option<RollbackReport>,
    /// Why the command ended early (its deadline), if it did.
    pub stopped: Option<String>,
    /// The watched alarm that went off during the bake (every switched instance went back).
    pub alarm: Option<String>,
    /// Instances that joined the tags during the deploy and were deployed to by id.
    pub caught_up: Vec<InstanceId>,
}

pub async fn run<W: World>(
    r: &Rollout<'_, W>,
    max_concurrency: Limit,
    max_errors: Limit,
    by_ids: bool,
) -> Result<ByTagsReport, Error> {
    let runner = r.commands.cx.runner;
    runner.group(&format!("Deploy to {} instances", r.commands.instances.borrow().len()));
    // Skipped instances still carry the tags: then the command goes to the others by id.
    let ids: Vec<InstanceId> = r.commands.instances.borrow().iter().map(|i| i.id.clone()).collect();
    let targets = if by_ids { Targets::Ids(&ids) } else { Targets::Tags };
    let order = Order {
        targets,
        script: &r.script,
        action: "deploy",
        concurrency: max_concurrency,
        errors: max_errors,
        purpose: Purpose::Deploy,
        read_outputs: false,
    };
    let result = r.commands.run(order).await;
    runner.end_group();
    let outcome = result?;
    let (mut instances, mut stopped) = (outcome.reports, outcome.stopped);
    // Catch-up: instances that joined the tags meanwhile get the release by id, with the same
    // concurrency and what is left of the error budget.
    let mut caught_up = vec![];
    for _ in 0..super::catch_up::ROUNDS {
        let failed = instances.iter().filter(|i| i.failed()).count();
        if stopped.is_some() || r.commands.cx.stop().is_some() || failed > max_errors.of(instances.len(), false) {
            break;
        }
        let joined: Vec<InstanceId> = super::catch_up::joined(r).await.into_iter().map(|i| i.id).collect();
        if joined.is_empty() {
            break;
        }
        let total = instances.len() + joined.len();
        runner.group(&format!("Catch-up: deploy to {} instance(s) that joined the tags", joined.len()));
        let order = Order {
            targets: Targets::Ids(&joined),
            script: &r.script,
            action: "deploy",
            concurrency: max_concurrency,
            errors: Limit::Count(max_errors.of(total, false).saturating_sub(failed) as u32),
            purpose: Purpose::Deploy,
            read_outputs: false,
        };
        let boot_wait = std::time::Duration::from_secs(r.plan.boot_wait.into());
        let result = r.commands.run_joined(order, boot_wait).await;
        runner.end_group();
        let outcome = result?;
        instances.extend(outcome.reports);
        stopped = stopped.or(outcome.stopped);
        caught_up.extend(joined);
    }
    let allowed = max_errors.of(instances.len(), false);
    let failed = instances.iter().filter(|i| i.failed()).count();
    let mut rollback = None;
    let mut alarm = None;
    if (failed > allowed || stopped.is_some()) && r.commands.cx.stop().is_none() {
        // Too many failures, or a command that did not end in time: the instances that switched
        // go back to what they ran before.
        let why = match &stopped {
            Some(why) => format!("Rollback: {why}"),
            None => format!("Rollback: {failed} failed, max-errors allows {allowed}"),
        };
        rollback = roll_back_switched(r, &instances, &why).await;
    } else {
        if failed > 0 {
            runner.warning("ec2-deploy", &format!("{failed} instance(s) failed, within max-errors ({allowed})"));
        }
        let after = format!("the deploy to {} instances", instances.len());
        if let Some(why) = super::bake(r, &after).await {
            runner.error("ec2-deploy: alarm", &why);
            rollback = roll_back_switched(r, &instances, &format!("Rollback: {why}")).await;
            alarm = Some(why);
        }
    }
    Ok(ByTagsReport { instances, tolerated: allowed, rollback, stopped, alarm, caught_up })
}

/// Every instance that switched goes back to what it ran before (`title` heads the log group).
async fn roll_back_switched<W: World>(
    r: &Rollout<'_, W>,
    instances: &[InstanceReport],
    title: &str,
) -> Option<RollbackReport> {
    let runner = r.commands.cx.runner;
    let switched: Vec<InstanceId> = instances.iter().filter(|i| i.switched()).map(|i| i.id.clone()).collect();
    let (targets, first_deploys) = super::rollback_targets(&switched, instances);
    if targets.is_empty() && first_deploys.is_empty() {
        return None;
    }
    runner.group(title);
    let mut report = RollbackReport { instances: vec![], problems: first_deploys };
    if !targets.is_empty() {
        report.absorb(r.roll_back(&targets).await, "rolling back");
    }
    for p in &report.problems {
        runner.error("ec2-deploy: rollback", p);
    }
    runner.end_group();
    Some(report)
}
