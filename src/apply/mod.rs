//! Apply: walk the plan, and nothing but the plan.
//!
//! 1. [`deployment`]: the GitHub deployment is created and set in progress;
//! 2. [`build`]: the image is the one the registry has, or is built and pushed now;
//! 3. the script header is rendered, once, for the release (by digest) and its settings;
//! 4. the instances are rolled through: [`by_tags`] (one Run Command, SSM does the rolling) or
//!    [`batches`] (drained from the load balancer, swapped, healthy again, batch by batch);
//!    [`command`] sends and follows each Run Command, [`traffic`] moves instances in and out of
//!    the target groups;
//! 5. [`record`]: after a success, the release is written as the record's new version;
//! 6. the GitHub deployment is concluded.
//!
//! The deploy lock is held around all of it (see `crate::deploy`).

pub mod batches;
pub mod build;
pub mod by_tags;
pub mod catch_up;
pub mod command;
pub mod deployment;
pub mod pull;
pub mod record;
pub mod traffic;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use command::{Commands, Order, Targets};
use traffic::Traffic;

use crate::cancel::Cancel;
use crate::github::Runner;
use crate::instance::{self, Mode, ScriptParams};
use crate::lock::LockLost;
use crate::model::{ImageRef, InstanceId, Limit, Running};
use crate::plan::{Plan, PreDeployPlan, Rollout as Strategy};
use crate::ports::{Clock, DeploymentState, ErrorKind, ParameterStore, ServiceError, World};
use crate::release::{rfc3339, Release};
use crate::report::{DeployReport, InstanceReport};
use crate::Error;

/// What a run hands to apply besides the plan: where to report, how to learn of a cancel or of
/// a lost lock, and what relative paths are relative to.
pub struct Context<'a> {
    pub runner: &'a Runner,
    pub cancel: &'a Cancel,
    pub workdir: &'a Path,
    /// Asked before anything new starts: does this run still hold the deploy lock?
    pub lock: &'a dyn Guard,
}

/// The deploy lock as apply sees it.
pub trait Guard {
    fn may_start(&self) -> Result<(), LockLost>;
}

/// A read-only run (a dry run, `status`) holds no lock, and nothing takes one from it.
pub struct Unlocked;

impl Guard for Unlocked {
    fn may_start(&self) -> Result<(), LockLost> {
        Ok(())
    }
}

impl<W: ParameterStore + Clock> Guard for crate::lock::DeployLock<'_, W> {
    fn may_start(&self) -> Result<(), LockLost> {
        self.check()
    }
}

/// Why a run must start nothing new: it was cancelled, or another run holds its lock now.
/// Either way what runs on instances finishes, what is out of the load balancer goes back in,
/// and nothing is rolled back (after a lost lock the environment is another run's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Cancelled,
    LockLost(LockLost),
    /// The runner's AWS session expired: nothing can be changed any more.
    SessionExpired(String),
}

impl Context<'_> {
    /// Why nothing new may start, if anything.
    pub fn stop(&self) -> Option<Stop> {
        self.stop_for(Purpose::Deploy)
    }

    /// The same, for work of this purpose: a rollback under way is finished through a cancel
    /// (it is how the run puts back what it changed), but not after the lock was lost.
    pub fn stop_for(&self, purpose: Purpose) -> Option<Stop> {
        if let Some(why) = self.cancel.expired_session() {
            return Some(Stop::SessionExpired(why.to_string()));
        }
        let cancelled = match purpose {
            Purpose::Deploy => self.cancel.is_cancelled(),
            Purpose::Restore => self.cancel.is_hurried(),
        };
        if cancelled {
            return Some(Stop::Cancelled);
        }
        self.lock.may_start().err().map(Stop::LockLost)
    }
}

/// What a step is for: rolling the new release out (a cancel stops it), or putting back what ran
/// before (only the second signal, or a lost lock, stops it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Deploy,
    Restore,
}

/// The release being rolled out, and the commands that roll it.
pub struct Rollout<'a, W> {
    pub commands: Commands<'a, W>,
    /// The deploy script: the release's header, then the script body.
    pub script: String,
    pub plan: &'a Plan,
    /// The proxy's image in the deploy's registry (for the rollback's header too).
    pub proxy_image: Option<crate::model::ImageRef>,
}

impl<W: World> Rollout<'_, W> {
    fn world(&self) -> &W {
        self.commands.world
    }

    /// Sends each instance back to what it ran before (one command per previous release).
    pub async fn roll_back(&self, targets: &[(InstanceId, Running)]) -> Result<Vec<InstanceReport>, Error> {
        let mut by_release: HashMap<&Running, Vec<InstanceId>> = HashMap::new();
        for (id, running) in targets {
            by_release.entry(running).or_default().push(id.clone());
        }
        let mut reports = vec![];
        for (to, ids) in by_release {
            // What the instances go back to is, as a rule, the live release: then with its own
            // settings (its proxy above all: this run's may have none), else with this run's.
            let live = self.plan.record.live.as_ref().map(|l| &l.release).filter(|l| l.image.to_string() == to.image);
            let script = instance::render(&ScriptParams {
                mode: Mode::Rollback { to },
                registry: &self.plan.registry,
                release: live.map_or(&self.plan.image_tag, |l| &l.tag),
                container: live.map_or(&self.plan.container, |l| &l.container),
                proxy: live.map_or(self.proxy_image.as_ref(), |l| l.proxy_image.as_ref()),
            })?;
            let n = ids.len() as u32;
            let order = Order {
                targets: Targets::Ids(&ids),
                script: &script,
                action: "rollback",
                concurrency: Limit::Count(n),
                errors: Limit::Percent(100),
                purpose: Purpose::Restore,
                read_outputs: false,
            };
            let outcome = self.commands.run(order).await?;
            reports.extend(outcome.reports);
        }
        Ok(reports)
    }
}

impl crate::report::RollbackReport {
    /// Adds what sending instances back did (see [`Rollout::roll_back`]): each instance's report,
    /// and a problem for each one that could not go back, or `context: error` when the command
    /// itself failed.
    pub fn absorb(&mut self, rolled_back: Result<Vec<InstanceReport>, Error>, context: &str) {
        match rolled_back {
            Ok(reports) => {
                for i in reports.iter().filter(|i| !i.ok()) {
                    self.problems.push(format!(
                        "{}: rollback failed: {}",
                        i.id,
                        i.reason.as_deref().unwrap_or(i.detail.as_str())
                    ));
                }
                self.instances.extend(reports);
            }
            Err(e) => self.problems.push(format!("{context}: {e}")),
        }
    }
}

/// Of `ids`, the instances that switched to the new release with what each ran before; and, as
/// problems to report, the ones that ran nothing before (they keep the new release).
pub fn rollback_targets(ids: &[InstanceId], instances: &[InstanceReport]) -> (Vec<(InstanceId, Running)>, Vec<String>) {
    let mut targets = vec![];
    let mut first_deploys = vec![];
    for id in ids {
        let Some(r) = instances.iter().find(|r| &r.id == id) else { continue };
        if !r.switched() {
            continue;
        }
        match &r.previous {
            Some(prev) if !prev.is_none() => targets.push((id.clone(), prev.clone())),
            _ => first_deploys.push(format!("{id}: it ran nothing before this deploy, so it keeps the new release")),
        }
    }
    (targets, first_deploys)
}

/// Runs `pre-deploy` on its instance and prints its output (the script's last 200 lines of it,
/// secrets masked there); an error (with the output's tail) when it fails, before anything is
/// switched. Its line for the summary: what ran, where, how long.
async fn pre_deploy<W: World>(r: &Rollout<'_, W>, pre: &PreDeployPlan, image: &ImageRef) -> Result<String, Error> {
    let runner = r.commands.cx.runner;
    let words = shlex::try_join(pre.command.iter().map(String::as_str)).unwrap_or_default();
    runner.group(&format!("Pre-deploy on {}: {words}", pre.target));
    let header = instance::header(&ScriptParams {
        mode: Mode::PreDeploy { image, command: &pre.command, timeout: pre.timeout },
        registry: &r.plan.registry,
        release: &r.plan.image_tag,
        container: &r.plan.container,
        proxy: None,
    })?;
    let script = format!("{header}{}", instance::script());
    let ids = [pre.target.clone()];
    let order = Order {
        targets: Targets::Ids(&ids),
        script: &script,
        action: "pre-deploy",
        concurrency: Limit::Count(1),
        errors: Limit::Count(0),
        purpose: Purpose::Deploy,
        read_outputs: true,
    };
    let started = r.world().now();
    let outcome = r.commands.run(order).await;
    let seconds = r.world().now().duration_since(started).unwrap_or_default().as_secs_f64();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            runner.end_group();
            return Err(e);
        }
    };
    let report = outcome.reports.first();
    if outcome.stopped.is_none() && report.is_some_and(InstanceReport::ok) {
        // Printed as it came, never as workflow commands: the app's output could look like one.
        if let Some((_, out)) = outcome.outputs.iter().find(|(id, _)| *id == pre.target) {
            let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.starts_with("ec2-deploy-one-off ")).collect();
            runner.untrusted(&lines.join("\n"));
        }
        runner.end_group();
        runner.info(&format!("Pre-deploy succeeded on {} in {seconds:.1}s", pre.target));
        return Ok(format!("`{words}` on `{}` succeeded in {seconds:.1}s", pre.target));
    }
    runner.end_group();
    let reason = outcome
        .stopped
        .or_else(|| report.map(|i| i.reason.clone().unwrap_or_else(|| i.detail.to_string())))
        .unwrap_or_else(|| "no report from the instance".into());
    let sent = r.commands.sent.borrow().last().cloned();
    let output = match sent {
        Some(id) => match r.world().invocation_output(&id, &pre.target).await {
            Ok(out) => format!("{}{}", out.stdout, out.stderr),
            Err(e) => format!("(its output could not be read: {e})"),
        },
        None => String::new(),
    };
    let lines: Vec<&str> = output.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    Err(Error::PreDeploy { instance: pre.target.to_string(), reason, output: tail })
}

/// How often the alarms are read during a bake.
pub const ALARM_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Holds for the bake time while the watched alarms are read every [`ALARM_POLL`]: why the
/// release must go back (an alarm in ALARM, with its reason; or alarms that could not be read
/// at the end of the bake), or `None`. Without `alarms`, returns at once. A stop (cancel, lost
/// lock) ends the bake early: the run stops anyway.
pub async fn bake<W: World>(r: &Rollout<'_, W>, after: &str) -> Option<String> {
    let watch = r.plan.watch.as_ref()?;
    let (world, runner) = (r.world(), r.commands.cx.runner);
    let deadline = world.now() + std::time::Duration::from_secs(watch.bake.into());
    if watch.bake > 0 {
        runner.info(&format!("  baking {}s after {after}, watching the alarms", watch.bake));
    }
    loop {
        let unreadable = match world.alarms(&watch.selectors).await {
            Ok(alarms) => {
                let firing = alarms
                    .iter()
                    .find(|a| a.state == crate::model::AlarmState::Alarm && !watch.ignored.contains(&a.name));
                if let Some(a) = firing {
                    return Some(format!("alarm {} went into ALARM after {after}: {}", a.name, a.reason));
                }
                None
            }
            Err(e) => Some(e),
        };
        let now = world.now();
        if now >= deadline || r.commands.cx.stop().is_some() {
            return unreadable
                .map(|e| format!("the alarms could not be read at the end of the bake after {after}: {e}"));
        }
        world.sleep(ALARM_POLL.min(deadline.duration_since(now).unwrap_or_default())).await;
    }
}

/// What happened when the AWS session expired mid-rollout, and what to do about it.
fn session_expired(plan: &Plan, why: &str) -> String {
    let worst = plan.worst_case();
    format!(
        "the AWS session expired during the rollout ({why}); nothing was started after that, and what was out of the load balancer was put back where the call still worked (see above). What to do: give aws-actions/configure-aws-credentials `role-duration-seconds: {}` or more (this rollout may take up to {}s with a full rollback; the role's MaxSessionDuration must allow it), then run the deploy again: instances already on this release are not restarted, the others get it, and the deploy lock frees itself within its lease",
        worst.role_duration_seconds(),
        worst.with_rollback.as_secs()
    )
}

/// Applies the plan: the deploy's report, or why it could not run to the end.
pub async fn apply<W: World>(plan: &Plan, world: &W, cx: &Context<'_>) -> Result<DeployReport, Error> {
    let runner = cx.runner;
    let started = world.now();
    // A converge that found every instance on the live release has nothing to announce.
    let deployment = if nothing_to_converge(plan) { None } else { deployment::announce(world, plan, runner).await };
    let (mut report, release) = match roll_out(plan, world, cx).await {
        Ok(r) => r,
        Err(e) => {
            deployment::conclude(world, plan, deployment, DeploymentState::Error, &e.to_string(), runner).await;
            return Err(e);
        }
    };
    report.seconds = world.now().duration_since(started).unwrap_or_default().as_secs_f64();
    report.deployment_id = deployment;
    if report.success() && plan.converge.is_some() {
        // A converge writes no new version: the record names this release already.
        report.release_version = plan.record.live.as_ref().map(|live| live.version);
    } else if report.success() {
        let release = Release { timings: Some(timings(plan, &report)), ..release };
        match record::write(world, plan, &release).await {
            Ok(version) => {
                runner.info(&format!("Recorded the release as version {version} of {}", plan.record.parameter));
                report.release_version = Some(version);
            }
            Err(e) => {
                let text = "deployed, but the release record could not be written";
                deployment::conclude(world, plan, deployment, DeploymentState::Error, text, runner).await;
                return Err(Error::NotRecorded {
                    release: format!("{} ({})", plan.image_tag, release.image),
                    parameter: plan.record.parameter.to_string(),
                    error: e,
                });
            }
        }
    }
    let (state, text) = if report.success() && plan.converge.is_some() {
        (
            DeploymentState::Success,
            format!("{} converged: {} drifted instance(s) redeployed", plan.image_tag, report.instances.len()),
        )
    } else if report.success() {
        (DeploymentState::Success, format!("{} deployed to {} instances", plan.image_tag, report.instances.len()))
    } else {
        (
            DeploymentState::Failure,
            format!("{} failed on {} of {} instances", plan.image_tag, report.failed().count(), report.instances.len()),
        )
    };
    deployment::conclude(world, plan, deployment, state, &text, runner).await;
    Ok(report)
}

/// A converge whose check found no instance drifted.
fn nothing_to_converge(plan: &Plan) -> bool {
    plan.converge.is_some() && plan.instances.is_empty()
}

/// Build (unless the image is there), render the release, roll it out.
async fn roll_out<W: World>(plan: &Plan, world: &W, cx: &Context<'_>) -> Result<(DeployReport, Release), Error> {
    let runner = cx.runner;
    runner.mask(&plan.auth.password.0);
    let digest = build::obtain(plan, world, cx).await?;
    let image = plan.image_ref(digest);
    let proxy_image = build::proxy(plan, world, cx).await?;
    // Known before anything moves, so an attestation or a later step has them even when the
    // rollout fails.
    image_outputs(plan, &image, runner).map_err(Error::Output)?;
    // The one rendering of this release's header: sent to the instances and recorded.
    let header = instance::header(&ScriptParams {
        mode: Mode::Deploy { image: &image },
        registry: &plan.registry,
        release: &plan.image_tag,
        container: &plan.container,
        proxy: proxy_image.as_ref(),
    })?;
    // The record's version this release will be: the live one's next (a converge writes none).
    let live = plan.record.live.as_ref().map_or(0, |l| l.version);
    let header = instance::versioned(header, if plan.converge.is_some() { live } else { live + 1 })?;
    let release = release(plan, &image, &header, proxy_image.clone(), world.now());
    if let Some(e) = stopped_before_rollout(cx) {
        return Err(e);
    }
    let rollout = Rollout {
        commands: Commands {
            world,
            cx,
            instances: RefCell::new(plan.instances.clone()),
            tags: &plan.targets,
            timeout: plan.timeout,
            comment: command::comment(plan.environment.as_ref(), &plan.image_tag),
            sent: RefCell::new(vec![]),
        },
        script: format!("{header}{}", instance::script()),
        plan,
        proxy_image,
    };
    let mut pull_ms = None;
    if let Some(concurrency) = plan.pull_first {
        pull_ms = Some(pull::pull_first(&rollout, &header, concurrency).await?);
        if let Some(e) = stopped_before_rollout(cx) {
            return Err(e);
        }
    }
    let mut ran_first = None;
    if let Some(pre) = &plan.pre_deploy {
        match &pre.skipped {
            Some(why) => cx.runner.info(&format!("Pre-deploy: not run: {why}")),
            None => ran_first = Some(pre_deploy(&rollout, pre, &image).await?),
        }
    }
    let mut report = starting_report(plan, image);
    report.pre_deploy = ran_first;
    report.pull_ms = pull_ms;
    if nothing_to_converge(plan) {
        if plan.skipped.is_empty() {
            runner.info(&format!(
                "Converge: every instance with the tags runs the live release {}: nothing to do",
                plan.image_tag
            ));
        } else {
            runner.info(&format!(
                "Converge: the drifted instance(s) are offline and skipped (on-offline: skip), the others run the live release {}: nothing was deployed",
                plan.image_tag
            ));
        }
        return Ok((report, release));
    }
    run_strategy(&rollout, world, cx, &mut report).await?;
    match cx.stop() {
        Some(Stop::Cancelled) => report.cancelled = true,
        Some(Stop::LockLost(lost)) => report.stopped = Some(lost.to_string()),
        Some(Stop::SessionExpired(why)) => report.stopped = Some(session_expired(plan, &why)),
        None => {}
    }
    report.command_ids = rollout.commands.sent.take().iter().map(ToString::to_string).collect();
    Ok((report, release))
}

/// The outputs known before anything moves: the image, its digest and tag, the one it replaces.
fn image_outputs(plan: &Plan, image: &ImageRef, runner: &crate::github::Runner) -> std::io::Result<()> {
    runner.set_output("image", &image.to_string())?;
    runner.set_output("digest", image.digest.as_str())?;
    runner.set_output("image-tag", plan.image_tag.as_str())?;
    if let Some(live) = &plan.record.live {
        runner.set_output("previous-image", &live.release.image.to_string())?;
    }
    Ok(())
}

/// Where this run's time went, as the record keeps it: the whole run (build included), the pull
/// before the rollout, and each phase at its slowest instance.
fn timings(plan: &Plan, report: &DeployReport) -> crate::release::Timings {
    let mut phases: Vec<(String, u64)> = vec![];
    for (phase, ms) in report.instances.iter().flat_map(|i| &i.phases) {
        match phases.iter_mut().find(|(p, _)| p == phase) {
            Some((_, slowest)) => *slowest = (*slowest).max(*ms),
            None => phases.push((phase.clone(), *ms)),
        }
    }
    crate::release::Timings {
        total_ms: (report.seconds * 1000.0) as u64,
        pull_ms: report.pull_ms,
        batches: plan.batches() as u32,
        phases,
    }
}

/// The release this run records: the image, the commit, the settings and the rendered header.
fn release(
    plan: &Plan,
    image: &ImageRef,
    header: &str,
    proxy_image: Option<ImageRef>,
    now: std::time::SystemTime,
) -> Release {
    Release {
        image: image.clone(),
        tag: plan.image_tag.clone(),
        commit: plan.record.commit.clone(),
        commit_time: plan.record.commit_time.clone(),
        deployed_at: rfc3339(now),
        run_url: plan.record.run_url.clone(),
        container: plan.container.clone(),
        header: header.to_string(),
        // A rollback marks the release it leaves: the next rollback will not come back to it.
        rolled_back_from: plan.record.rollback_to.as_ref().and(plan.record.live.as_ref()).map(|live| live.version),
        proxy_image,
        timings: None,
    }
}

/// Nothing has moved yet: a cancel, a lost lock or an expired session stops the run here (why).
fn stopped_before_rollout(cx: &Context<'_>) -> Option<Error> {
    match cx.stop() {
        Some(Stop::Cancelled) => Some(Error::Cancelled),
        Some(Stop::LockLost(lost)) => Some(Error::LockLost(lost)),
        Some(Stop::SessionExpired(why)) => {
            Some(Error::Service(ServiceError::new("before the rollout", ErrorKind::Expired, why)))
        }
        None => None,
    }
}

/// The report before the rollout: what is deployed, to how many, in which mode.
fn starting_report(plan: &Plan, image: ImageRef) -> DeployReport {
    DeployReport {
        environment: plan.environment.as_ref().map(ToString::to_string),
        image,
        image_tag: plan.image_tag.to_string(),
        command_ids: vec![],
        instances: vec![],
        batches: vec![],
        rollback: None,
        tolerated: 0,
        release_version: None,
        previous_image: plan.record.live.as_ref().map(|live| live.release.image.clone()),
        deployment_id: None,
        cancelled: false,
        stopped: None,
        skipped: plan.skipped.iter().map(|i| i.id.clone()).collect(),
        mode: plan.mode(),
        drained: matches!(plan.rollout, Strategy::Batches { drain: true, .. }),
        alarm: None,
        planned: plan.instances.len(),
        caught_up: vec![],
        converge: plan.converge.as_ref().map(|c| crate::report::ConvergeReport {
            drifted: c.drifted().map(|d| (d.instance.id.clone(), d.why())).collect(),
            in_step: c.in_step().count(),
        }),
        pre_deploy: None,
        pull_ms: None,
        seconds: 0.0,
    }
}

/// The rollout itself, by tags or in batches, its results into `report`.
async fn run_strategy<W: World>(
    rollout: &Rollout<'_, W>,
    world: &W,
    cx: &Context<'_>,
    report: &mut DeployReport,
) -> Result<(), Error> {
    let plan = rollout.plan;
    match &plan.rollout {
        Strategy::ByTags { max_concurrency, max_errors, by_ids } => {
            let r = by_tags::run(rollout, *max_concurrency, *max_errors, *by_ids).await?;
            report.instances = r.instances;
            report.tolerated = r.tolerated;
            report.rollback = r.rollback;
            report.stopped = r.stopped;
            report.alarm = r.alarm;
            report.caught_up = r.caught_up;
        }
        Strategy::Batches { target_groups, batches, drain, timings } => {
            let traffic = Traffic::new(world, target_groups, *timings, cx.cancel, *drain);
            let r = batches::run(rollout, &traffic, batches).await;
            report.instances = r.instances;
            report.alarm = r.batches.iter().find_map(|b| match &b.outcome {
                crate::report::BatchOutcome::Failed { phase: crate::report::Phase::Bake, reason } => {
                    Some(format!("batch {}: {reason}", b.number))
                }
                _ => None,
            });
            report.caught_up = r.batches.iter().filter(|b| b.catch_up).flat_map(|b| b.ids.clone()).collect();
            report.batches = r.batches;
            report.rollback = r.rollback;
        }
    }
    Ok(())
}
