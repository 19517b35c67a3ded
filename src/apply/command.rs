//! Sending a Run Command and following it to its end: the one place that talks to Run Command
//! during a deploy. Turns what SSM reports into one [`InstanceReport`] per instance, printing each
//! instance's status as it changes and the full output of the ones that failed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::Context;
use crate::model::{CommandId, InstanceId, Invocation, Limit, ManagedInstance, StatusDetail};
use crate::ports::{CommandRequest, CommandTargets, ServiceError, World, IDS_PER_COMMAND};
use crate::report::{instance_reports, InstanceReport};
use crate::Error;

/// Seconds SSM keeps trying to reach an instance's agent. The plan has just seen every agent
/// online, so a long wait only delays the report of an instance that went away.
pub const DELIVERY_TIMEOUT: u32 = 120;
const POLL_MIN: Duration = Duration::from_secs(1);
const POLL_MAX: Duration = Duration::from_secs(5);

/// Where a command goes.
pub enum Targets<'a> {
    /// The plan's tags (SSM resolves them when it sends).
    Tags,
    Ids(&'a [InstanceId]),
}

/// Sends this deploy's commands and remembers their ids (for the `command-id` output).
pub struct Commands<'a, W> {
    pub world: &'a W,
    pub cx: &'a Context<'a>,
    pub instances: &'a [ManagedInstance],
    pub tags: &'a [crate::model::TagFilter],
    pub timeout: u32,
    /// What the commands' comments say (`ec2-deploy deploy production v2`).
    pub comment: String,
    pub sent: RefCell<Vec<CommandId>>,
}

impl<W: World> Commands<'_, W> {
    /// One Run Command (several when more than 50 ids), followed to the end: one report per
    /// instance it was meant for.
    pub async fn run(
        &self,
        targets: Targets<'_>,
        script: &str,
        action: &str,
        concurrency: Limit,
        errors: Limit,
    ) -> Result<Vec<InstanceReport>, Error> {
        let runner = self.cx.runner;
        // Each command with the instances it was meant for (None: all the planned ones).
        let chunks: Vec<(CommandTargets, Option<&[InstanceId]>)> = match targets {
            Targets::Tags => vec![(CommandTargets::Tags(self.tags.to_vec()), None)],
            Targets::Ids(ids) => {
                ids.chunks(IDS_PER_COMMAND).map(|c| (CommandTargets::Ids(c.to_vec()), Some(c))).collect()
            }
        };
        let mut sent = vec![];
        for (targets, meant_for) in chunks {
            if self.cx.stop().is_some() {
                break;
            }
            let request = CommandRequest {
                targets,
                script: script.to_string(),
                max_concurrency: concurrency,
                max_errors: errors,
                execution_timeout: self.timeout,
                delivery_timeout: DELIVERY_TIMEOUT,
                comment: format!("{} {action}", self.comment),
            };
            let id = self.world.send_command(&request).await?;
            runner.info(&format!("  SSM command {id} ({action})"));
            self.sent.borrow_mut().push(id.clone());
            sent.push((id, meant_for));
        }
        let mut reports = vec![];
        for (id, meant_for) in sent {
            let invocations = self.follow(&id).await?;
            let mut outputs = vec![];
            // The full output of every instance whose script ran and did not succeed.
            for inv in invocations.iter().filter(|i| !i.status.eq(&crate::model::InvocationStatus::Success) && ran(i)) {
                match self.world.invocation_output(&id, &inv.instance_id).await {
                    Ok(out) => {
                        runner.group(&format!("Output of {} ({}: {})", inv.instance_id, inv.status, inv.detail));
                        runner.untrusted(&format!("{}\n--- stderr ---\n{}", out.stdout, out.stderr));
                        runner.end_group();
                        outputs.push((inv.instance_id.clone(), out));
                    }
                    Err(e) => {
                        runner.warning("ec2-deploy", &format!("could not read the output of {}: {e}", inv.instance_id))
                    }
                }
            }
            let planned: Vec<ManagedInstance> = match meant_for {
                None => self.instances.to_vec(),
                Some(ids) => self.instances.iter().filter(|i| ids.contains(&i.id)).cloned().collect(),
            };
            reports.extend(instance_reports(&planned, &invocations, &outputs));
        }
        Ok(reports)
    }

    /// Polls a command until it is done, printing each instance's status as it changes. Polls
    /// back off from 1 s to 5 s while nothing changes.
    async fn follow(&self, id: &CommandId) -> Result<Vec<Invocation>, Error> {
        let (world, runner, cancel) = (self.world, self.cx.runner, self.cx.cancel);
        let names: BTreeMap<&InstanceId, &str> =
            self.instances.iter().filter_map(|i| Some((&i.id, i.name.as_deref()?))).collect();
        let started = world.now();
        let deadline = started + Duration::from_secs(u64::from(self.timeout) + u64::from(DELIVERY_TIMEOUT) + 120);
        let mut seen: BTreeMap<InstanceId, (String, String)> = BTreeMap::new();
        let mut interval = POLL_MIN;
        loop {
            let (state, invocations) = world.command_progress(id).await?;
            let mut changed = false;
            for inv in &invocations {
                let now = (inv.status.to_string(), inv.detail.to_string());
                if seen.get(&inv.instance_id) != Some(&now) {
                    changed = true;
                    let name = names.get(&inv.instance_id).copied().unwrap_or("-");
                    let detail = if now.1 != now.0 { format!(" ({})", inv.detail) } else { String::new() };
                    runner.info(&format!(
                        "  +{:>5.1}s  {}  {:<16} {}{}",
                        elapsed(world.now(), started),
                        inv.instance_id,
                        name,
                        inv.status,
                        detail
                    ));
                    seen.insert(inv.instance_id.clone(), now);
                }
            }
            if state.status.is_terminal() && invocations.iter().all(Invocation::is_done) {
                runner.info(&format!(
                    "  command {id} {} after {:.1}s: {} of {} instances done, {} failed",
                    state.status,
                    elapsed(world.now(), started),
                    state.completed_count,
                    state.target_count,
                    state.error_count
                ));
                return Ok(invocations);
            }
            if world.now() > deadline {
                let _ = world.cancel_command(id, None).await;
                return Err(Error::Service(ServiceError::new(
                    format!("following SSM command {id}"),
                    crate::ports::ErrorKind::Other,
                    "it did not finish within timeout + delivery time; it was cancelled",
                )));
            }
            if let Some(stop) = self.cx.stop() {
                // Invocations SSM has not started are cancelled; running scripts are left to
                // finish (see crate::cancel for why).
                let why = match stop {
                    super::Stop::Cancelled => "cancelled".to_string(),
                    super::Stop::LockLost(lost) => lost.to_string(),
                };
                let waiting: Vec<InstanceId> =
                    invocations.iter().filter(|i| i.status.not_started()).map(|i| i.instance_id.clone()).collect();
                let result = if invocations.is_empty() {
                    world.cancel_command(id, None).await
                } else if !waiting.is_empty() {
                    world.cancel_command(id, Some(&waiting)).await
                } else {
                    Ok(())
                };
                if let Err(e) = result {
                    runner.warning("ec2-deploy: stopped", &e.to_string());
                }
                runner.info(&format!(
                    "  {why}: {} invocation(s) not started were cancelled, the others finish on their instances",
                    waiting.len()
                ));
                return Ok(invocations);
            }
            interval = if changed { POLL_MIN } else { interval.mul_f64(1.5).min(POLL_MAX) };
            tokio::select! {
                _ = world.sleep(interval) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }
}

/// The script ran on the instance (so it has output worth showing).
fn ran(inv: &Invocation) -> bool {
    matches!(inv.detail, StatusDetail::Failed | StatusDetail::ExecutionTimedOut | StatusDetail::Cancelled)
}

fn elapsed(now: SystemTime, since: SystemTime) -> f64 {
    now.duration_since(since).unwrap_or_default().as_secs_f64()
}
