//! Rolling through a fleet behind a load balancer, batch by batch, without dropping requests.
//!
//! For each batch: take it out of every target group and wait until it is drained → swap the
//! container (one Run Command to the batch) → put it back and wait until it is healthy → next
//! batch. The first batch is a canary of one instance. When a batch fails, that batch and every
//! batch before it go back to what they ran before (each out of the load balancer while it
//! changes), the batches after it are left alone, and the run fails with a report naming
//! instance, phase and reason.

use std::time::SystemTime;

use super::command::{Order, Targets};
use super::traffic::Traffic;
use super::{Purpose, Rollout, Stop};
use crate::model::{InstanceId, Limit};
use crate::ports::World;
use crate::report::{BatchOutcome, BatchReport, InstanceReport, Phase, RollbackReport};

/// What the batches did.
pub struct BatchesReport {
    pub batches: Vec<BatchReport>,
    /// The latest report of every instance that the deploy touched.
    pub instances: Vec<InstanceReport>,
    pub rollback: Option<RollbackReport>,
}

/// Walks the batches; on a failure rolls back and reports.
pub async fn run<W: World>(r: &Rollout<'_, W>, traffic: &Traffic<'_, W>, planned: &[Vec<InstanceId>]) -> BatchesReport {
    let (runner, cx) = (r.commands.cx.runner, r.commands.cx);
    // The planned batches, then one more for the instances that joined meanwhile (catch-up).
    let mut batches: Vec<Vec<InstanceId>> = planned.to_vec();
    let mut reports: Vec<BatchReport> = vec![];
    let mut instances: Vec<InstanceReport> = vec![];
    let mut failed_at = None;
    let mut index = 0;
    while index < batches.len() {
        if cx.stop().is_some() {
            break;
        }
        let ids = batches[index].clone();
        let ids = &ids;
        let total = batches.len();
        let catch_up = index >= planned.len();
        let number = index + 1;
        let started = r.world().now();
        runner.group(&format!(
            "Batch {number}/{total}{}: {}",
            if catch_up { " (catch-up: joined during the deploy)" } else { "" },
            names(ids)
        ));
        let mut outcome = run_batch(r, traffic, ids, catch_up, &mut instances).await;
        if outcome == BatchOutcome::Done && cx.stop().is_none() {
            // In the load balancer and healthy: the alarms have the last word on this batch.
            if let Some(reason) = super::bake(r, &format!("batch {number}/{total}")).await {
                outcome = BatchOutcome::Failed { phase: Phase::Bake, reason };
            }
        }
        if outcome != BatchOutcome::Done && cx.stop().is_some() {
            // Stopped mid-batch: no rollback (scripts still running finish on their own); the
            // batch goes back into the load balancer, whose checks admit it once it is healthy.
            if let Err(e) = traffic.readmit(ids).await {
                runner
                    .error("ec2-deploy: stopped", &format!("putting {} back into the load balancer: {e}", names(ids)));
            }
            outcome = BatchOutcome::Cancelled;
        }
        runner.end_group();
        let failed = outcome != BatchOutcome::Done;
        if let BatchOutcome::Failed { phase, reason } = &outcome {
            runner.error("ec2-deploy: batch failed", &format!("batch {number}/{total} failed at {phase}: {reason}"));
        }
        reports.push(BatchReport {
            number,
            ids: ids.clone(),
            outcome,
            seconds: seconds_since(r.world().now(), started),
            catch_up,
        });
        if failed {
            failed_at = Some(index);
            break;
        }
        index += 1;
        if index == batches.len() && index - planned.len() < super::catch_up::ROUNDS && cx.stop().is_none() {
            let joined = super::catch_up::joined(r).await;
            if !joined.is_empty() {
                batches.push(joined.into_iter().map(|i| i.id).collect());
            }
        }
    }
    for (index, ids) in batches.iter().enumerate().skip(reports.len()) {
        reports.push(BatchReport {
            number: index + 1,
            ids: ids.clone(),
            outcome: BatchOutcome::NotStarted,
            seconds: 0.0,
            catch_up: index >= planned.len(),
        });
    }
    let rollback = match failed_at {
        Some(_) if cx.stop().is_some() => None,
        Some(index) => Some(roll_back(r, traffic, &batches[..=index], &reports[index], &instances).await),
        None => None,
    };
    BatchesReport { batches: reports, instances, rollback }
}

fn names(ids: &[InstanceId]) -> String {
    ids.iter().map(InstanceId::as_str).collect::<Vec<_>>().join(", ")
}

fn seconds_since(now: SystemTime, since: SystemTime) -> f64 {
    now.duration_since(since).unwrap_or_default().as_secs_f64()
}

async fn run_batch<W: World>(
    r: &Rollout<'_, W>,
    traffic: &Traffic<'_, W>,
    ids: &[InstanceId],
    catch_up: bool,
    instances: &mut Vec<InstanceReport>,
) -> BatchOutcome {
    let runner = r.commands.cx.runner;
    let t = r.world().now();
    if let Err(reason) = traffic.take_out(ids, Purpose::Deploy).await {
        return BatchOutcome::Failed { phase: Phase::Drain, reason: reason.to_string() };
    }
    if traffic.drain {
        runner.info(&format!("  out of the load balancer and drained ({:.1}s)", seconds_since(r.world().now(), t)));
    }
    let t = r.world().now();
    // The batch is out of the load balancer: all of it at once, stopping at the first failure.
    let n = ids.len() as u32;
    let order = Order {
        targets: Targets::Ids(ids),
        script: &r.script,
        action: "deploy",
        concurrency: Limit::Count(n),
        errors: Limit::Count(0),
        purpose: Purpose::Deploy,
        read_outputs: false,
    };
    // Instances that joined during the deploy may still be booting: they get `boot-wait`.
    let sent = if catch_up {
        r.commands.run_joined(order, std::time::Duration::from_secs(r.plan.boot_wait.into())).await
    } else {
        r.commands.run(order).await
    };
    let swapped = match sent {
        Ok(outcome) => outcome,
        Err(e) => return BatchOutcome::Failed { phase: Phase::Swap, reason: e.to_string() },
    };
    let (swapped, stopped) = (swapped.reports, swapped.stopped);
    runner.info(&format!("  swapped ({:.1}s)", seconds_since(r.world().now(), t)));
    // Instances that left the fleet meanwhile are no failure, and nothing waits for them.
    let remaining: Vec<InstanceId> =
        ids.iter().filter(|id| !swapped.iter().any(|r| &r.id == *id && r.left.is_some())).cloned().collect();
    let failures: Vec<String> = swapped
        .iter()
        .filter(|r| r.failed())
        .map(|r| format!("{}: {}", r.id, r.reason.as_deref().unwrap_or(r.detail.as_str())))
        .collect();
    instances.extend(swapped);
    if let Some(why) = stopped {
        return BatchOutcome::Failed { phase: Phase::Swap, reason: why };
    }
    if !failures.is_empty() {
        return BatchOutcome::Failed { phase: Phase::Swap, reason: failures.join("; ") };
    }
    let t = r.world().now();
    if let Err(reason) = traffic.put_back(&remaining, Purpose::Deploy).await {
        return BatchOutcome::Failed { phase: Phase::Healthy, reason: reason.to_string() };
    }
    runner.info(&format!(
        "  {} in the load balancer ({:.1}s)",
        if traffic.drain { "back and healthy" } else { "healthy" },
        seconds_since(r.world().now(), t)
    ));
    BatchOutcome::Done
}

/// The failed batch first (it is out of the load balancer: restore capacity), then the earlier
/// batches, latest first, each out of the load balancer while it changes. A cancel does not stop
/// a rollback under way (it is how the run puts back what it changed); a lost lock does, between
/// batches (the environment is another run's now).
async fn roll_back<W: World>(
    r: &Rollout<'_, W>,
    traffic: &Traffic<'_, W>,
    done: &[Vec<InstanceId>],
    failed: &BatchReport,
    instances: &[InstanceReport],
) -> RollbackReport {
    let runner = r.commands.cx.runner;
    runner.group("Rollback");
    let mut report = RollbackReport::default();
    let (failed_ids, earlier) = done.split_last().expect("at least the failed batch");
    runner.info(&format!("  batch {} (failed): back to the previous release", failed.number));
    // A batch that failed at the load balancer's health check, or during the bake, is registered
    // again: take it out.
    let still_out = !matches!(failed.outcome, BatchOutcome::Failed { phase: Phase::Healthy | Phase::Bake, .. });
    rollback_batch(r, traffic, failed_ids, still_out, instances, &mut report).await;
    for (n, ids) in earlier.iter().enumerate().rev() {
        if let Some(stop) = r.commands.cx.stop_for(Purpose::Restore) {
            let why = match stop {
                Stop::LockLost(lost) => lost.to_string(),
                Stop::Cancelled => "the run was cancelled twice (the step is about to be killed)".to_string(),
                Stop::SessionExpired(why) => format!("the AWS session expired ({why})"),
            };
            report.problems.push(format!("{}: not rolled back (it keeps the new release): {why}", names(ids)));
            continue;
        }
        runner.info(&format!("  batch {}: back to the previous release", n + 1));
        rollback_batch(r, traffic, ids, false, instances, &mut report).await;
    }
    for p in &report.problems {
        runner.error("ec2-deploy: rollback", p);
    }
    runner.end_group();
    report
}

/// One batch back to its previous release, out of the load balancer while it changes. Whatever
/// happens, every instance it took out goes back in.
async fn rollback_batch<W: World>(
    r: &Rollout<'_, W>,
    traffic: &Traffic<'_, W>,
    ids: &[InstanceId],
    already_out: bool,
    instances: &[InstanceReport],
    report: &mut RollbackReport,
) {
    let (targets, first_deploys) = super::rollback_targets(ids, instances);
    report.problems.extend(first_deploys);
    let mut out = already_out;
    if !already_out && !targets.is_empty() {
        out = true;
        if let Err(e) = traffic.take_out(ids, Purpose::Restore).await {
            // Not drained: swapping it now could drop requests. It keeps the new release and
            // goes back in at once.
            for (id, _) in &targets {
                report.problems.push(format!(
                    "{id}: keeps the new release: it could not be taken out of the load balancer for the rollback: {e}"
                ));
            }
            if let Err(e) = traffic.readmit(ids).await {
                report.problems.push(format!("{}: could not be put back into the load balancer: {e}", names(ids)));
            }
            return;
        }
    }
    if !targets.is_empty() {
        report.absorb(r.roll_back(&targets).await, &format!("rolling back {}", names(ids)));
    }
    if out {
        // Registered first, then waited for: a second signal cuts only the wait.
        if let Err(e) = traffic.put_back(ids, Purpose::Restore).await {
            report.problems.push(format!("{}: back in the load balancer but not healthy there: {e}", names(ids)));
        }
    }
}
