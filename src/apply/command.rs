//! Sending a Run Command and following it to its end: the one place that talks to Run Command
//! during a deploy. Turns what SSM reports into one [`InstanceReport`] per instance, printing each
//! instance's status as it changes and the full output of the ones that failed.
//!
//! Three promises are kept here:
//! - **Limits hold fleet-wide.** SendCommand takes at most 50 instance ids, and SSM applies
//!   MaxConcurrency and MaxErrors per command; so a command by id to more than 50 instances is
//!   sent in chunks *one after another*, each with the fleet's concurrency (at most the chunk)
//!   and what is left of the fleet's error budget; once the budget is spent the remaining chunks
//!   are not sent. (Up to 50 instances move at once that way; by tags SSM does the whole fleet
//!   in one command.)
//! - **A deadline never interrupts a running script.** A command may take one script timeout per
//!   wave of MaxConcurrency instances, plus delivery. Past that, only invocations that have not
//!   started are cancelled; running ones are waited for up to their own execution timeout (SSM
//!   ends them by then), and the caller rolls back what switched.
//! - **Following survives errors.** A failed poll (throttling, the network, anything) is retried
//!   with backoff while the command can still be running: the run never walks away from running
//!   scripts, and so never releases the deploy lock under them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::{Context, Purpose, Stop};
use crate::model::{
    command_deadline, waves, CommandId, EnvironmentName, ImageTag, InstanceId, Invocation, InvocationOutput,
    InvocationStatus, Limit, ManagedInstance, Ping, StatusDetail, TagFilter, DELIVERY_TIMEOUT,
};
use crate::ports::{CommandRequest, CommandTargets, ErrorKind, World, IDS_PER_COMMAND};
use crate::report::{instance_reports, InstanceReport};
use crate::Error;

const POLL_MIN: Duration = Duration::from_millis(500);
/// Exit codes of a script on an instance that is not ready yet: its tools are not installed
/// (10), its Docker daemon does not answer (20), or its boot's own deploy holds the lock (17).
const NOT_READY: [i32; 3] = [10, 17, 20];
/// The pause between two sends to instances still booting (see [`Commands::run_joined`]).
pub const BOOT_RETRY: Duration = Duration::from_secs(10);
const POLL_MAX: Duration = Duration::from_secs(5);
/// The longest pause between polls that keep failing.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What a run's commands say in their comment (`ec2-deploy production v2`); `Commands::run` adds
/// what each one does (`deploy`, `rollback`, `check`).
pub fn comment(environment: Option<&EnvironmentName>, tag: &ImageTag) -> String {
    format!("ec2-deploy {} {tag}", environment.map(|e| e.as_str()).unwrap_or(""))
}

/// Where a command goes.
#[derive(Clone, Copy)]
pub enum Targets<'a> {
    /// The plan's tags (SSM resolves them when it sends).
    Tags,
    Ids(&'a [InstanceId]),
}

/// What a command did: a report per instance, and why it ended early, if it did.
pub struct Outcome {
    pub reports: Vec<InstanceReport>,
    /// The command's deadline passed, or it could not be followed to its end.
    pub stopped: Option<String>,
    /// The full output (GetCommandInvocation's) of each instance whose script failed, and of
    /// every instance whose script ran when the order asks for them.
    pub outputs: Vec<(InstanceId, InvocationOutput)>,
}

/// A question for the instances of a list that changes nothing on them (`status`'s check, `logs`,
/// `exec`): one command to the online ones at once (by id, in chunks), none to the others.
pub struct Question<'a> {
    pub script: &'a str,
    /// For the log and the command's comment (`check`, `logs`, `exec`).
    pub action: &'static str,
    /// Seconds the script may run on each instance.
    pub timeout: u32,
    pub comment: String,
    /// Fetch every instance's full output, not only the failed ones'.
    pub read_outputs: bool,
}

/// What one instance answered a [`Question`].
pub enum Answered<'o> {
    /// Not asked: its SSM agent is not connected (its ping status).
    Offline(String),
    /// Its report, and its full output when there is one (asked for, or it failed).
    Report(&'o InstanceReport, Option<&'o InvocationOutput>),
    /// Asked, but no report came back.
    NoReport,
}

/// The answers to a [`Question`], each instance's found by [`Answers::of`].
pub struct Answers {
    outcome: Option<Outcome>,
}

impl Answers {
    pub fn of(&self, instance: &ManagedInstance) -> Answered<'_> {
        if instance.ping != Ping::Online {
            return Answered::Offline(instance.ping.to_string());
        }
        let Some(outcome) = &self.outcome else { return Answered::NoReport };
        match outcome.reports.iter().find(|r| r.id == instance.id) {
            Some(report) => {
                Answered::Report(report, outcome.outputs.iter().find(|(id, _)| *id == instance.id).map(|(_, out)| out))
            }
            None => Answered::NoReport,
        }
    }
}

/// Asks the online ones of `instances` the `question`, saying first `announce(how many)` (nothing
/// is said or sent when none is online).
pub async fn ask<W: World>(
    world: &W,
    cx: &Context<'_>,
    instances: &[ManagedInstance],
    tags: &[TagFilter],
    question: Question<'_>,
    announce: impl FnOnce(usize) -> String,
) -> Result<Answers, Error> {
    let online: Vec<ManagedInstance> = instances.iter().filter(|i| i.ping == Ping::Online).cloned().collect();
    if online.is_empty() {
        return Ok(Answers { outcome: None });
    }
    let ids: Vec<InstanceId> = online.iter().map(|i| i.id.clone()).collect();
    cx.runner.info(&announce(ids.len()));
    let commands = Commands {
        world,
        cx,
        instances: RefCell::new(online),
        tags,
        timeout: question.timeout,
        comment: question.comment,
        sent: RefCell::new(vec![]),
    };
    let order = Order {
        targets: Targets::Ids(&ids),
        script: question.script,
        action: question.action,
        concurrency: Limit::Percent(100),
        errors: Limit::Percent(100),
        purpose: Purpose::Deploy,
        read_outputs: question.read_outputs,
    };
    Ok(Answers { outcome: Some(commands.run(order).await?) })
}

/// Prints `lines` as they came, each prefixed with the instance's id, never as workflow commands
/// (an app's line could look like one).
pub fn print_prefixed(cx: &Context<'_>, id: &InstanceId, lines: &[String]) {
    if !lines.is_empty() {
        let text: Vec<String> = lines.iter().map(|line| format!("{id} | {line}")).collect();
        cx.runner.untrusted(&text.join("\n"));
    }
}

/// Sends this deploy's commands and remembers their ids (for the `command-id` output).
pub struct Commands<'a, W> {
    pub world: &'a W,
    pub cx: &'a Context<'a>,
    /// The instances the commands are meant for: the plan's, and any that joined during the
    /// rollout (see [`super::catch_up`]).
    pub instances: RefCell<Vec<ManagedInstance>>,
    pub tags: &'a [TagFilter],
    pub timeout: u32,
    /// What the commands' comments say (`ec2-deploy production v2`).
    pub comment: String,
    pub sent: RefCell<Vec<CommandId>>,
}

/// One command to send: where, what, how many at once, how many failures tolerated, and what for.
#[derive(Clone, Copy)]
pub struct Order<'a> {
    pub targets: Targets<'a>,
    pub script: &'a str,
    /// `deploy` / `rollback`, for the log and the command's comment.
    pub action: &'static str,
    pub concurrency: Limit,
    pub errors: Limit,
    pub purpose: Purpose,
    /// Fetch every instance's full output (`Outcome::outputs`), not only the failed ones'.
    pub read_outputs: bool,
}

impl<W: World> Commands<'_, W> {
    /// One Run Command (chunks of 50 one after another when more ids), followed to the end.
    pub async fn run(&self, order: Order<'_>) -> Result<Outcome, Error> {
        let ids = match order.targets {
            Targets::Tags => {
                let targets = CommandTargets::Tags(self.tags.to_vec());
                return self.send_and_follow(targets, None, &order, (order.concurrency, order.errors)).await;
            }
            Targets::Ids(ids) => ids,
        };
        let (moving, allowed) = (order.concurrency.of(ids.len(), true).max(1), order.errors.of(ids.len(), false));
        let mut outcome = Outcome { reports: vec![], stopped: None, outputs: vec![] };
        for chunk in ids.chunks(IDS_PER_COMMAND) {
            let errors_so_far = outcome.reports.iter().filter(|r| counts_as_error(&r.detail)).count();
            let why_not = if errors_so_far > allowed {
                Some("not started: too many other instances failed (max-errors)".to_string())
            } else if let Some(stop) = self.cx.stop_for(order.purpose) {
                Some(format!("not started: the run stopped first ({})", describe(&stop)))
            } else {
                outcome.stopped.as_ref().map(|why| format!("not started: {why}"))
            };
            if let Some(why) = why_not {
                outcome.reports.extend(self.planned(Some(chunk)).iter().map(|i| InstanceReport::not_started(i, &why)));
                continue;
            }
            let limits = (Limit::Count(moving.min(chunk.len()) as u32), Limit::Count((allowed - errors_so_far) as u32));
            let part =
                match self.send_and_follow(CommandTargets::Ids(chunk.to_vec()), Some(chunk), &order, limits).await {
                    Ok(part) => part,
                    // Nothing was sent yet: nothing changed, the error is the run's.
                    Err(e) if outcome.reports.is_empty() => return Err(e),
                    // Earlier chunks ran: their instances are the caller's to put back, as after
                    // any other failure; this chunk and the ones after it did not start.
                    Err(e) => {
                        let why = format!("the command could not be sent ({e})");
                        outcome.reports.extend(
                            self.planned(Some(chunk))
                                .iter()
                                .map(|i| InstanceReport::not_started(i, &format!("not started: {why}"))),
                        );
                        outcome.stopped = Some(why);
                        continue;
                    }
                };
            outcome.reports.extend(part.reports);
            outcome.outputs.extend(part.outputs);
            outcome.stopped = outcome.stopped.or(part.stopped);
        }
        Ok(outcome)
    }

    /// [`Commands::run`] for instances that joined during the deploy (an Auto Scaling launch): those
    /// still booting (their script found no Docker yet, or their boot holds the deploy lock),
    /// and those SSM did not start because of them (max-errors), are sent the command again every
    /// [`BOOT_RETRY`] until `boot_wait` has passed; each instance's last answer stands.
    pub async fn run_joined(&self, order: Order<'_>, boot_wait: Duration) -> Result<Outcome, Error> {
        let deadline = self.world.now() + boot_wait;
        let mut outcome = self.run(order).await?;
        loop {
            let booting =
                |r: &InstanceReport| r.response_code.is_some_and(|c| NOT_READY.contains(&c)) && r.left.is_none();
            if !outcome.reports.iter().any(booting)
                || outcome.stopped.is_some()
                || self.cx.stop_for(order.purpose).is_some()
            {
                return Ok(outcome);
            }
            let again: Vec<InstanceId> = outcome
                .reports
                .iter()
                .filter(|r| booting(r) || r.detail == StatusDetail::Terminated)
                .map(|r| r.id.clone())
                .collect();
            if self.world.now() + BOOT_RETRY > deadline {
                for r in outcome.reports.iter_mut().filter(|r| booting(r)) {
                    r.reason =
                        Some(format!("{} (still not ready after boot-wait, {}s)", r.why_not(), boot_wait.as_secs()));
                }
                return Ok(outcome);
            }
            let why: Vec<String> =
                outcome.reports.iter().filter(|r| booting(r)).map(|r| format!("{}: {}", r.id, r.why_not())).collect();
            self.cx.runner.info(&format!(
                "  still booting, sent again in {}s (boot-wait {}s): {}",
                BOOT_RETRY.as_secs(),
                boot_wait.as_secs(),
                why.join("; ")
            ));
            self.world.sleep(BOOT_RETRY).await;
            let next = self.run(Order { targets: Targets::Ids(&again), ..order }).await?;
            outcome.reports.retain(|r| !again.contains(&r.id));
            outcome.reports.extend(next.reports);
            outcome.outputs.retain(|(id, _)| !again.contains(id));
            outcome.outputs.extend(next.outputs);
            outcome.stopped = next.stopped;
        }
    }

    /// The planned instances a command is meant for (all of them by tags).
    fn planned(&self, ids: Option<&[InstanceId]>) -> Vec<ManagedInstance> {
        match ids {
            None => self.instances.borrow().clone(),
            Some(ids) => self.instances.borrow().iter().filter(|i| ids.contains(&i.id)).cloned().collect(),
        }
    }

    async fn send_and_follow(
        &self,
        targets: CommandTargets,
        meant_for: Option<&[InstanceId]>,
        order: &Order<'_>,
        (concurrency, errors): (Limit, Limit),
    ) -> Result<Outcome, Error> {
        let runner = self.cx.runner;
        let planned = self.planned(meant_for);
        let (action, purpose) = (order.action, order.purpose);
        let request = CommandRequest {
            targets,
            script: order.script.to_string(),
            max_concurrency: concurrency,
            max_errors: errors,
            execution_timeout: self.timeout,
            delivery_timeout: DELIVERY_TIMEOUT,
            comment: format!("{} {action}", self.comment),
        };
        let id = self.world.send_command(&request).await.inspect_err(|e| {
            if e.kind == ErrorKind::Expired {
                self.cx.cancel.session_expired(&e.brief());
            }
        })?;
        runner.info(&format!("  SSM command {id} ({action})"));
        self.sent.borrow_mut().push(id.clone());
        let followed = self.follow(&id, planned.len(), concurrency, purpose).await;
        let mut outputs = vec![];
        // The full output of every instance whose script ran and did not succeed (printed), and of
        // every one whose script ran when the order asks.
        let failed = |i: &&Invocation| i.status != InvocationStatus::Success;
        let wanted = |i: &&Invocation| (failed(i) && ran(i)) || (order.read_outputs && !failed(i));
        for inv in followed.invocations.iter().filter(wanted) {
            match self.world.invocation_output(&id, &inv.instance_id).await {
                Ok(out) => {
                    if failed(&inv) {
                        runner.group(&format!("Output of {} ({}: {})", inv.instance_id, inv.status, inv.detail));
                        runner.untrusted(&format!("{}\n--- stderr ---\n{}", out.stdout, out.stderr));
                        runner.end_group();
                    }
                    outputs.push((inv.instance_id.clone(), out));
                }
                Err(e) => {
                    runner.warning("ec2-deploy", &format!("could not read the output of {}: {e}", inv.instance_id))
                }
            }
        }
        let mut reports = instance_reports(&planned, &followed.invocations, &outputs);
        self.mark_left(&mut reports).await;
        for r in reports.iter_mut().filter(|r| followed.abandoned.contains(&r.id)) {
            r.step = Some("script".into());
            r.reason = Some(format!(
                "SSM still reported it running past its execution timeout ({}s); it was cancelled, and what runs there is unknown",
                self.timeout
            ));
        }
        Ok(Outcome { reports, stopped: followed.stopped, outputs })
    }

    /// Instances the command could not reach that are gone from the fleet by now: SSM lists
    /// them under the tags no more (terminated, or their tags changed), or their agent is not
    /// connected (stopping). They left during the run: named, and not failures. SSM is asked
    /// once, and only when an instance may have left; if it cannot say, they stay failures.
    async fn mark_left(&self, reports: &mut [InstanceReport]) {
        let unreached = |r: &InstanceReport| r.detail == StatusDetail::Undeliverable || r.not_targeted_by_ssm();
        if !reports.iter().any(unreached) {
            return;
        }
        let runner = self.cx.runner;
        let fleet = match self.world.find_instances(self.tags).await {
            Ok(fleet) => fleet,
            Err(e) => {
                runner.warning(
                    "ec2-deploy",
                    &format!("could not tell whether the instances SSM could not reach left the fleet: {e}"),
                );
                return;
            }
        };
        for r in reports.iter_mut().filter(|r| unreached(r)) {
            r.left = match fleet.iter().find(|i| i.id == r.id) {
                None => Some("left the fleet during the run: SSM lists it under the tags no more (terminated, or its tags changed)".into()),
                Some(i) if i.ping != Ping::Online => {
                    Some(format!("left the fleet during the run: its SSM agent is {} (stopping or stopped)", i.ping))
                }
                Some(_) => None,
            };
            if let Some(why) = &r.left {
                runner.info(&format!("  {} {why}", r.id));
            }
        }
    }

    /// Polls a command until it is done, printing each instance's status as it changes. Polls
    /// back off from 0.5 s to 5 s while nothing changes.
    async fn follow(&self, id: &CommandId, targets: usize, concurrency: Limit, purpose: Purpose) -> Followed {
        let (world, runner) = (self.world, self.cx.runner);
        let names: BTreeMap<InstanceId, String> =
            self.instances.borrow().iter().filter_map(|i| Some((i.id.clone(), i.name.clone()?))).collect();
        let started = world.now();
        let timeout = Duration::from_secs(u64::from(self.timeout));
        let deadline = started + command_deadline(targets, concurrency, self.timeout);
        // Past the deadline, running scripts get their own execution timeout to end.
        let last_word = deadline + timeout;
        let mut seen: BTreeMap<InstanceId, (InvocationStatus, StatusDetail)> = BTreeMap::new();
        let mut invocations: Vec<Invocation> = vec![];
        let mut stopped = None;
        let mut interval = POLL_MIN;
        let mut failures = 0u32;
        loop {
            match world.command_progress(id).await {
                Ok((state, now)) => {
                    if failures > 0 {
                        runner.info(&format!("  following command {id} again after {failures} failed poll(s)"));
                        failures = 0;
                    }
                    let changed = self.print_changes(&now, &mut seen, &names, started);
                    invocations = now;
                    if state.status.is_terminal() && invocations.iter().all(Invocation::is_done) {
                        runner.info(&format!(
                            "  command {id} {} after {:.1}s: {} of {} instances done, {} failed",
                            state.status,
                            elapsed(world.now(), started),
                            state.completed_count,
                            state.target_count,
                            state.error_count
                        ));
                        return Followed { invocations, stopped, abandoned: vec![] };
                    }
                    interval = if changed { POLL_MIN } else { interval.mul_f64(1.5).min(POLL_MAX) };
                }
                Err(e) if e.kind == ErrorKind::Expired => {
                    // No later call can succeed: stop following now, not at the deadline.
                    self.cx.cancel.session_expired(&e.brief());
                    let why = format!("command {id} could not be followed: the AWS session expired ({})", e.brief());
                    return Followed { invocations, stopped: Some(why), abandoned: vec![] };
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        runner.warning("ec2-deploy", &format!("{e}; retrying while the command may still run"));
                    }
                    interval = (POLL_MIN * 2u32.saturating_pow(failures.min(5))).min(RETRY_MAX);
                    if world.now() >= last_word {
                        let why = format!("command {id} could not be followed to its end: {e}");
                        return Followed { invocations, stopped: Some(why), abandoned: vec![] };
                    }
                }
            }
            let now = world.now();
            if now >= deadline && stopped.is_none() {
                let took = now.duration_since(started).unwrap_or_default().as_secs();
                let waves = waves(targets, concurrency);
                stopped = Some(format!(
                    "command {id} did not finish within {took}s ({waves} wave(s) of `command-timeout` plus delivery); what had not started was cancelled, running scripts were waited for"
                ));
                self.cancel_not_started(id, &invocations, "the deadline passed").await;
            }
            if now >= last_word {
                // Their execution timeout has passed: whatever SSM says, nothing useful runs.
                let abandoned: Vec<InstanceId> =
                    invocations.iter().filter(|i| !i.is_done()).map(|i| i.instance_id.clone()).collect();
                if let Err(e) = world.cancel_command(id, Some(&abandoned)).await {
                    runner.warning("ec2-deploy", &e.to_string());
                }
                return Followed { invocations, stopped, abandoned };
            }
            if let Some(stop) = self.cx.stop_for(purpose) {
                // Invocations SSM has not started are cancelled; running scripts are left to
                // finish (see crate::cancel for why).
                self.cancel_not_started(id, &invocations, &describe(&stop)).await;
                return Followed { invocations, stopped, abandoned: vec![] };
            }
            self.pause(interval, purpose).await;
        }
    }

    /// Prints each invocation whose status changed since `seen` (and records it); whether any did.
    fn print_changes(
        &self,
        now: &[Invocation],
        seen: &mut BTreeMap<InstanceId, (InvocationStatus, StatusDetail)>,
        names: &BTreeMap<InstanceId, String>,
        started: std::time::SystemTime,
    ) -> bool {
        let mut changed = false;
        for inv in now {
            let status = (inv.status.clone(), inv.detail.clone());
            if seen.get(&inv.instance_id) == Some(&status) {
                continue;
            }
            changed = true;
            let name = names.get(&inv.instance_id).map(String::as_str).unwrap_or("-");
            let detail =
                if inv.detail.as_str() != inv.status.as_str() { format!(" ({})", inv.detail) } else { String::new() };
            self.cx.runner.info(&format!(
                "  +{:>5.1}s  {}  {:<16} {}{}",
                elapsed(self.world.now(), started),
                inv.instance_id,
                name,
                inv.status,
                detail
            ));
            seen.insert(inv.instance_id.clone(), status);
        }
        changed
    }

    /// Waits `interval` between polls. A cancel cuts the wait short; for a command that
    /// restores, only the second one.
    async fn pause(&self, interval: Duration, purpose: Purpose) {
        match purpose {
            Purpose::Deploy => tokio::select! {
                _ = self.world.sleep(interval) => {}
                _ = self.cx.cancel.cancelled() => {}
            },
            Purpose::Restore => tokio::select! {
                _ = self.world.sleep(interval) => {}
                _ = self.cx.cancel.hurried() => {}
            },
        }
    }

    async fn cancel_not_started(&self, id: &CommandId, invocations: &[Invocation], why: &str) {
        let waiting: Vec<InstanceId> =
            invocations.iter().filter(|i| i.status.not_started()).map(|i| i.instance_id.clone()).collect();
        let result = if invocations.is_empty() {
            self.world.cancel_command(id, None).await
        } else if !waiting.is_empty() {
            self.world.cancel_command(id, Some(&waiting)).await
        } else {
            Ok(())
        };
        if let Err(e) = result {
            self.cx.runner.warning("ec2-deploy: stopped", &e.to_string());
        }
        self.cx.runner.info(&format!(
            "  {why}: {} invocation(s) not started were cancelled, the others finish on their instances",
            waiting.len()
        ));
    }
}

/// What following a command found.
struct Followed {
    invocations: Vec<Invocation>,
    stopped: Option<String>,
    /// Invocations still running past their execution timeout, given up on.
    abandoned: Vec<InstanceId>,
}

fn describe(stop: &Stop) -> String {
    match stop {
        Stop::Cancelled => "cancelled".to_string(),
        Stop::LockLost(lost) => lost.to_string(),
        Stop::SessionExpired(why) => format!("the AWS session expired ({why})"),
    }
}

/// Failed and Execution Timed Out count against MaxErrors; delivery problems do not.
fn counts_as_error(detail: &StatusDetail) -> bool {
    matches!(detail, StatusDetail::Failed | StatusDetail::ExecutionTimedOut)
}

/// The script ran on the instance (so it has output worth showing).
fn ran(inv: &Invocation) -> bool {
    matches!(inv.detail, StatusDetail::Failed | StatusDetail::ExecutionTimedOut | StatusDetail::Cancelled)
}

fn elapsed(now: SystemTime, since: SystemTime) -> f64 {
    now.duration_since(since).unwrap_or_default().as_secs_f64()
}
