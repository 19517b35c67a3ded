//! One deploy: gather facts (read-only) → plan → build/push → roll out → report.
//!
//! Nothing changes before the plan succeeded: bad input, a missing repository, tag, secret or
//! target group, or no reachable instance stop the run first.
//!
//! Two ways to roll out:
//! - **By tags** (no target groups): one Run Command to the tags; SSM's MaxConcurrency and
//!   MaxErrors do the rolling, which is what scales to thousands of instances. When more instances
//!   fail than `max-errors` allows, the ones that switched go back to what they ran before.
//! - **In batches** (target groups given): [`crate::rollout`] drains, swaps and re-admits one batch
//!   at a time through the load balancer, and rolls back on a failed batch.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::aws::{AwsError, Clients};
use crate::build::Docker;
use crate::fleet::{Dispatch, Fleet, Invocation, Targets};
use crate::github::Runner;
use crate::github_api::{GitHub, State};
use crate::inputs::{DeployRequest, Limit};
use crate::instance::{self, Mode, ScriptParams};
use crate::lock::{self, Lock, LockError};
use crate::plan::{self, Facts, ImageSource, Plan};
use crate::registry::Ecr;
use crate::release::{self, Recorded, Release, Releases};
use crate::report::{self, DeployReport, InstanceReport};
use crate::rollout::{self, RollbackReport};
use crate::traffic::Traffic;
use crate::{secrets, Error};

/// Seconds SSM keeps trying to reach an instance's agent. The plan has just seen every agent
/// online, so a long wait only delays the report of an instance that went away.
const DELIVERY_TIMEOUT: u32 = 120;
const POLL_MIN: Duration = Duration::from_secs(1);
const POLL_MAX: Duration = Duration::from_secs(5);
/// SendCommand takes at most 50 instance ids.
const IDS_PER_COMMAND: usize = 50;

pub enum Outcome {
    DryRun(Box<Plan>),
    Finished(Box<DeployReport>),
}

pub struct Context<'a> {
    pub runner: &'a Runner,
    pub cancel: &'a crate::cancel::Cancel,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub workdir: &'a Path,
}

pub async fn run(req: &DeployRequest, cx: &Context<'_>) -> Result<Outcome, Error> {
    let runner = cx.runner;
    if let Some(token) = &req.github_token {
        runner.mask(&token.0);
    }
    let clients = Clients::load(req.region.as_deref()).await?;
    let ecr = Ecr::new(clients.ecr.clone());
    let fleet = Fleet::new(clients.ssm.clone());
    let traffic = Traffic::new(clients.elb.clone(), req.target_groups.clone());

    let releases = Releases::new(clients.ssm.clone(), req.release_parameter.clone());
    let github = match GitHub::from_env(cx.env, req.github_token.as_ref().map(|t| t.0.as_str())) {
        Ok(g) => g,
        Err(e) => {
            runner.notice("ec2-deploy: GitHub", &format!("no GitHub deployment: {e}"));
            None
        }
    };

    runner.group("Plan");
    let gathered = gather(req, &clients, &ecr, &fleet, &traffic, &releases, github.as_ref(), cx.env).await;
    let planned = gathered.and_then(|(facts, req)| plan::make(&req, facts).map(|p| (p, req)).map_err(Error::Plan));
    let (plan, req) = match planned {
        Ok(p) => p,
        Err(e) => {
            runner.end_group();
            return Err(e);
        }
    };
    let req = &req;
    runner.info(&plan.to_string());
    runner.end_group();
    if plan.dry_run {
        return Ok(Outcome::DryRun(Box::new(plan)));
    }

    // One deploy at a time per environment: the first change is taking the lock.
    let by = run_url(cx.env)
        .unwrap_or_else(|| format!("ec2-deploy on {}", (cx.env)("HOSTNAME").unwrap_or_else(|| "a terminal".into())));
    let lock = Lock::acquire(
        clients.ssm.clone(),
        lock::name(&req.release_parameter),
        by,
        Duration::from_secs(u64::from(req.lock_timeout)),
        cx.cancel,
        |h| {
            runner.info(&format!(
                "Waiting for the deploy lock: held by {} (input `lock-timeout`: {}s)",
                h.by, req.lock_timeout
            ))
        },
    )
    .await
    .map_err(|e| match e {
        LockError::Aws(e) => Error::Aws(e),
        LockError::Cancelled => Error::Cancelled,
        held => Error::Locked(held.to_string()),
    })?;
    let renewing = async {
        loop {
            tokio::time::sleep(lock::RENEW).await;
            if let Err(e) = lock.renew().await {
                runner.warning("ec2-deploy: lock", &e.to_string());
            }
        }
    };
    let result = tokio::select! {
        r = deploy(req, &plan, cx, &ecr, &fleet, &traffic, &releases, github.as_ref()) => r,
        _ = renewing => unreachable!("renewing never ends"),
    };
    if let Err(e) = lock.release().await {
        runner.warning("ec2-deploy: lock", &format!("{e}; it expires by itself within {}s", lock::LEASE.as_secs()));
    }
    result
}

/// Everything after the plan, under the lock.
#[allow(clippy::too_many_arguments)]
async fn deploy(
    req: &DeployRequest,
    plan: &Plan,
    cx: &Context<'_>,
    ecr: &Ecr,
    fleet: &Fleet,
    traffic: &Traffic,
    releases: &Releases,
    github: Option<&GitHub>,
) -> Result<Outcome, Error> {
    let runner = cx.runner;
    let started = Instant::now();
    let deployment = announce(github, plan, req, cx, runner).await;
    let result = roll_out(req, plan, cx, ecr, fleet, traffic).await;
    let report = match result {
        Ok(mut report) => {
            report.seconds = started.elapsed().as_secs_f64();
            if report.success() {
                match record(releases, plan, req, &report, cx).await {
                    Ok(version) => {
                        runner.info(&format!("Recorded the release as version {version} of {}", releases.name));
                        report.release_version = Some(version);
                    }
                    Err(e) => {
                        conclude(
                            github,
                            deployment,
                            State::Error,
                            "deployed, but the release record could not be written",
                            req,
                            cx,
                            runner,
                        )
                        .await;
                        return Err(Error::Aws(AwsError {
                            context: "the deploy succeeded on every instance, but".into(),
                            message: format!("{e}; Auto Scaling boots and rollbacks will not know this release until a deploy records it"),
                            ..e
                        }));
                    }
                }
            }
            report
        }
        Err(e) => {
            conclude(github, deployment, State::Error, &e.to_string(), req, cx, runner).await;
            return Err(e);
        }
    };
    let (state, text) = if report.success() {
        (State::Success, format!("{} deployed to {} instances", plan.image_tag, report.instances.len()))
    } else {
        (
            State::Failure,
            format!("{} failed on {} of {} instances", plan.image_tag, report.failed().count(), report.instances.len()),
        )
    };
    conclude(github, deployment, state, &text, req, cx, runner).await;
    Ok(Outcome::Finished(Box::new(report)))
}

/// Build (unless the image is there), then roll out; the report of what happened.
async fn roll_out(
    req: &DeployRequest,
    plan: &Plan,
    cx: &Context<'_>,
    ecr: &Ecr,
    fleet: &Fleet,
    traffic: &Traffic,
) -> Result<DeployReport, Error> {
    let runner = cx.runner;
    let auth = ecr.auth().await?;
    runner.mask(&auth.password.0);
    let digest = match &plan.source {
        ImageSource::Existing { digest } => {
            runner.info(&format!("{} is already in the registry ({digest}): not rebuilding", plan.image));
            digest.clone()
        }
        ImageSource::Build { cache_from } => {
            runner.group(&format!("Build and push {}", plan.image));
            let docker = Docker::new(cx.env)?;
            let build_started = Instant::now();
            let build = async {
                docker.login(&plan.registry, &auth.username, &auth.password).await?;
                docker.build(&req.build_spec, cx.workdir, &plan.image, cache_from.as_deref()).await?;
                docker.push(&plan.image).await
            };
            let result = tokio::select! {
                r = build => r,
                _ = cx.cancel.cancelled() => {
                    runner.end_group();
                    return Err(Error::Cancelled);
                }
            };
            runner.end_group();
            let digest = result?;
            runner.info(&format!("Built and pushed {} in {:.1}s", plan.image, build_started.elapsed().as_secs_f64()));
            digest
        }
    };
    let image = format!("{}/{}@{}", plan.registry, plan.repository, digest);
    runner.set_output("image", &image).map_err(Error::output)?;
    runner.set_output("image-tag", &plan.image_tag).map_err(Error::output)?;

    if cx.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let deployer = Deployer { fleet, runner, plan, image: &image, cancel: cx.cancel, command_ids: Default::default() };
    let mut report = if plan.batches.is_empty() {
        deploy_by_tags(&deployer).await?
    } else {
        deploy_in_batches(&deployer, traffic).await?
    };
    report.command_ids = deployer.command_ids.take();
    Ok(report)
}

/// `{GITHUB_SERVER_URL}/{GITHUB_REPOSITORY}/actions/runs/{GITHUB_RUN_ID}`
fn run_url(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    Some(format!(
        "{}/{}/actions/runs/{}",
        env("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into()),
        env("GITHUB_REPOSITORY")?,
        env("GITHUB_RUN_ID")?
    ))
}

/// Creates the GitHub deployment and sets it in progress; a notice instead when it cannot.
async fn announce(
    github: Option<&GitHub>,
    plan: &Plan,
    req: &DeployRequest,
    cx: &Context<'_>,
    runner: &Runner,
) -> Option<u64> {
    let (Some(gh), Some(env), Some(sha)) = (github, plan.environment.as_deref(), req.commit.as_deref()) else {
        if github.is_none() {
            runner
                .notice("ec2-deploy: GitHub", "no github-token or GITHUB_REPOSITORY: no GitHub deployment is recorded");
        } else if plan.environment.is_none() {
            runner.notice("ec2-deploy: GitHub", "no `environment`: no GitHub deployment is recorded");
        }
        return None;
    };
    let what =
        if req.rollback { format!("rollback to {}", plan.image_tag) } else { format!("deploy {}", plan.image_tag) };
    let payload = serde_json::json!({ "image_tag": plan.image_tag, "image_digest": req.image_digest, "repository": plan.repository, "rollback": req.rollback });
    let id = match gh.create_deployment(sha, env, &format!("ec2-deploy: {what}"), payload).await {
        Ok(id) => id,
        Err(e) => {
            runner.notice(
                "ec2-deploy: GitHub",
                &format!("no GitHub deployment: {e} (does the token have deployments: write?)"),
            );
            return None;
        }
    };
    if let Err(e) =
        gh.set_status(id, State::InProgress, &what, run_url(cx.env).as_deref(), req.environment_url.as_deref()).await
    {
        runner.notice("ec2-deploy: GitHub", &e.to_string());
    }
    Some(id)
}

async fn conclude(
    github: Option<&GitHub>,
    deployment: Option<u64>,
    state: State,
    text: &str,
    req: &DeployRequest,
    cx: &Context<'_>,
    runner: &Runner,
) {
    let (Some(gh), Some(id)) = (github, deployment) else { return };
    if let Err(e) = gh.set_status(id, state, text, run_url(cx.env).as_deref(), req.environment_url.as_deref()).await {
        runner.notice("ec2-deploy: GitHub", &e.to_string());
    }
}

/// Writes the deployed release as the record's new version.
async fn record(
    releases: &Releases,
    plan: &Plan,
    req: &DeployRequest,
    report: &DeployReport,
    cx: &Context<'_>,
) -> Result<i64, AwsError> {
    let header = instance::header(&ScriptParams {
        mode: Mode::Deploy,
        image: &report.image,
        registry: &plan.registry,
        release: &plan.image_tag,
        container: &plan.container,
    })
    .expect("the same values were quoted for the deploy");
    let release = Release {
        image: report.image.clone(),
        tag: plan.image_tag.clone(),
        registry: plan.registry.clone(),
        commit: req.commit.clone(),
        commit_time: event_commit_time(cx.env),
        deployed_at: release::now(),
        run_url: run_url(cx.env),
        container: plan.container.clone(),
        header,
    };
    releases.record(&release).await
}

/// The pushed commit's time, from the push event (GITHUB_EVENT_PATH), in seconds since the epoch.
fn event_commit_time(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let text = std::fs::read_to_string(env("GITHUB_EVENT_PATH")?).ok()?;
    let event: serde_json::Value = serde_json::from_str(&text).ok()?;
    event["head_commit"]["timestamp"].as_str().map(str::to_string)
}

fn epoch(time: &str) -> Option<i64> {
    aws_sdk_ssm::primitives::DateTime::from_str(time, aws_sdk_ssm::primitives::DateTimeFormat::DateTime)
        .ok()
        .map(|t| t.secs())
}

/// The run-order guard: a push must not put an older commit over the live release. Explicit
/// redeploys (image-digest, workflow_dispatch) and rollbacks are not pushes and pass.
async fn run_order(
    req: &DeployRequest,
    live: Option<&Recorded>,
    github: Option<&GitHub>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    if env("GITHUB_EVENT_NAME").as_deref() != Some("push") || req.rollback || req.image_digest.is_some() {
        return None;
    }
    let live = live?;
    let (commit, live_commit) = (req.commit.as_deref()?, live.release.commit.as_deref()?);
    if commit == live_commit {
        return None;
    }
    if let Some(gh) = github {
        if let Ok(status) = gh.compare(live_commit, commit).await {
            return (status == "behind")
                .then(|| format!("GitHub says {commit} is behind the live commit {live_commit}"));
        }
    }
    // GitHub could not be asked: compare the commits' times.
    let (mine, theirs) = (event_commit_time(env)?, live.release.commit_time.clone()?);
    (epoch(&mine)? < epoch(&theirs)?)
        .then(|| format!("{commit} was committed at {mine}, before the live commit {live_commit} ({theirs})"))
}

/// The read-only calls of the plan, run together. For a rollback, the request becomes the
/// recorded release it goes back to (its image and its container settings).
#[allow(clippy::too_many_arguments)]
async fn gather(
    req: &DeployRequest,
    clients: &Clients,
    ecr: &Ecr,
    fleet: &Fleet,
    traffic: &Traffic,
    releases: &Releases,
    github: Option<&GitHub>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Facts, DeployRequest), Error> {
    let history = releases.history().await?;
    let live = history.last().cloned();
    let rollback_to = if req.rollback { release::previous(&history).cloned() } else { None };
    let mut req = req.clone();
    if let Some(to) = &rollback_to {
        req.image_tag = to.release.tag.clone();
        req.container = to.release.container.clone();
        req.build = false;
        req.image_digest = to.release.image.rsplit_once('@').map(|(_, d)| d.to_string());
        req.registry = Some(to.release.registry.clone());
    }
    let req_ref = &req;
    let (auth, exists, instances, secret, missing_groups) = tokio::join!(
        ecr.auth(),
        ecr.repository_exists(&req_ref.repository),
        fleet.find(&req_ref.targets),
        async {
            match &req_ref.container.secret_id {
                Some(id) => secrets::describe(&clients.secrets, id).await.map(Some),
                None => Ok(None),
            }
        },
        traffic.check_groups(),
    );
    let auth = auth?;
    let exists = exists?;
    let registry = req.registry.clone().unwrap_or_else(|| auth.host.clone());
    let (existing_digest, cache_from) = match (&req.image_digest, exists) {
        (_, false) => (None, None),
        (Some(digest), true) => (ecr.has_digest(&req.repository, digest).await?.then(|| digest.clone()), None),
        (None, true) => {
            let digest = ecr.digest_of(&req.repository, &req.image_tag).await?;
            let cache = if digest.is_none() && req.build { ecr.latest_tag(&req.repository).await? } else { None };
            (digest, cache)
        }
    };
    let older_than_live = run_order(&req, live.as_ref(), github, env).await;
    let facts = Facts {
        region: clients.region.clone(),
        registry,
        repository_exists: exists,
        existing_digest,
        cache_from,
        instances: instances?,
        secret_arn: secret?,
        missing_target_groups: missing_groups?,
        live,
        rollback_to,
        older_than_live,
    };
    Ok((facts, req))
}

/// Sends Run Commands for this deploy and turns what SSM reports into per-instance reports.
struct Deployer<'a> {
    fleet: &'a Fleet,
    runner: &'a Runner,
    plan: &'a Plan,
    image: &'a str,
    cancel: &'a crate::cancel::Cancel,
    command_ids: std::cell::RefCell<Vec<String>>,
}

enum Target<'a> {
    Tags,
    Ids(&'a [String]),
}

impl Deployer<'_> {
    fn script(&self, mode: Mode, image: &str) -> Result<String, Error> {
        let p = self.plan;
        Ok(instance::render(&ScriptParams {
            mode,
            image,
            registry: &p.registry,
            release: &p.image_tag,
            container: &p.container,
        })?)
    }

    /// One Run Command (several when more than 50 ids), followed to the end.
    async fn command(
        &self,
        target: Target<'_>,
        mode: Mode,
        image: &str,
        concurrency: Limit,
        errors: Limit,
    ) -> Result<Vec<InstanceReport>, Error> {
        let script = self.script(mode, image)?;
        let action = if mode == Mode::Rollback { "rollback" } else { "deploy" };
        let comment =
            format!("ec2-deploy {action} {} {}", self.plan.environment.as_deref().unwrap_or(""), self.plan.image_tag);
        // Each command with the instances it was meant for (None: all the planned ones).
        let chunks: Vec<(Targets, Option<&[String]>)> = match target {
            Target::Tags => vec![(Targets::Tags(&self.plan.targets), None)],
            Target::Ids(ids) => ids.chunks(IDS_PER_COMMAND).map(|c| (Targets::Ids(c), Some(c))).collect(),
        };
        let mut sent = vec![];
        for (targets, meant_for) in chunks {
            if self.cancel.is_cancelled() {
                break;
            }
            let dispatch = Dispatch {
                targets,
                script: &script,
                max_concurrency: concurrency,
                max_errors: errors,
                execution_timeout: self.plan.timeout,
                delivery_timeout: DELIVERY_TIMEOUT,
                comment: comment.clone(),
            };
            let id = self.fleet.send(&dispatch).await?;
            self.runner.info(&format!("  SSM command {id} ({action})"));
            self.command_ids.borrow_mut().push(id.clone());
            sent.push((id, meant_for));
        }
        let names: BTreeMap<&str, &str> =
            self.plan.instances.iter().filter_map(|i| Some((i.id.as_str(), i.name.as_deref()?))).collect();
        let mut reports = vec![];
        for (id, meant_for) in sent {
            let invocations = follow(self.fleet, &id, &names, self.plan.timeout, self.runner, self.cancel).await?;
            let mut outputs = vec![];
            // The full output of every instance whose script ran and did not succeed. (Invocations
            // that never started have no output to show.)
            let ran_and_failed = |i: &&Invocation| {
                i.status != "Success" && matches!(i.details.as_str(), "Failed" | "Execution Timed Out" | "Cancelled")
            };
            for inv in invocations.iter().filter(ran_and_failed) {
                match self.fleet.output(&id, &inv.instance_id).await {
                    Ok(out) => {
                        self.runner.group(&format!("Output of {} ({}: {})", inv.instance_id, inv.status, inv.details));
                        self.runner.untrusted(&format!("{}\n--- stderr ---\n{}", out.stdout, out.stderr));
                        self.runner.end_group();
                        outputs.push((inv.instance_id.clone(), out));
                    }
                    Err(e) => self
                        .runner
                        .warning("ec2-deploy", &format!("could not read the output of {}: {e}", inv.instance_id)),
                }
            }
            let planned: Vec<_> = match meant_for {
                None => self.plan.instances.clone(),
                Some(ids) => self.plan.instances.iter().filter(|i| ids.contains(&i.id)).cloned().collect(),
            };
            reports.extend(report::instance_reports(&planned, &invocations, &outputs));
        }
        Ok(reports)
    }

    /// Sends each instance back to the image it ran before (grouped: one command per image).
    async fn rollback(&self, targets: &[(String, String)]) -> Result<Vec<InstanceReport>, Error> {
        let mut by_image: HashMap<&str, Vec<String>> = HashMap::new();
        for (id, image) in targets {
            by_image.entry(image.as_str()).or_default().push(id.clone());
        }
        let mut reports = vec![];
        for (image, ids) in by_image {
            let n = ids.len() as u32;
            reports.extend(
                self.command(Target::Ids(&ids), Mode::Rollback, image, Limit::Count(n), Limit::Percent(100)).await?,
            );
        }
        Ok(reports)
    }
}

/// Failed instances a run may have and still succeed.
fn tolerated(limit: Limit, total: usize) -> usize {
    match limit {
        Limit::Count(n) => n as usize,
        Limit::Percent(p) => total * p as usize / 100,
    }
}

async fn deploy_by_tags(d: &Deployer<'_>) -> Result<DeployReport, Error> {
    let plan = d.plan;
    d.runner.group(&format!("Deploy to {} instances", plan.instances.len()));
    // Skipped instances still carry the tags: then the command goes to the others by id.
    let ids: Vec<String> = plan.instances.iter().map(|i| i.id.clone()).collect();
    let target = if plan.skipped.is_empty() { Target::Tags } else { Target::Ids(&ids) };
    let result = d.command(target, Mode::Deploy, d.image, plan.max_concurrency, plan.max_errors).await;
    d.runner.end_group();
    let instances = result?;
    let allowed = tolerated(plan.max_errors, instances.len());
    let failed = instances.iter().filter(|i| !i.ok()).count();
    let mut report = new_report(d, instances);
    report.tolerated = allowed;
    report.cancelled = d.cancel.is_cancelled();
    if failed > allowed && !report.cancelled {
        // Too many failures: the instances that switched go back to what they ran before.
        let targets: Vec<(String, String)> = report
            .instances
            .iter()
            .filter(|i| i.outcome.as_deref() == Some("deployed"))
            .filter_map(|i| Some((i.id.clone(), i.previous.clone().filter(|p| p != "none")?)))
            .collect();
        let first_deploys: Vec<String> = report
            .instances
            .iter()
            .filter(|i| i.outcome.as_deref() == Some("deployed") && i.previous.as_deref() == Some("none"))
            .map(|i| format!("{}: it ran nothing before this deploy, so it keeps the new release", i.id))
            .collect();
        if !targets.is_empty() || !first_deploys.is_empty() {
            d.runner.group(&format!("Rollback: {failed} failed, max-errors allows {allowed}"));
            let mut rollback = RollbackReport { instances: vec![], problems: first_deploys };
            if !targets.is_empty() {
                match d.rollback(&targets).await {
                    Ok(r) => {
                        for i in r.iter().filter(|i| !i.ok()) {
                            rollback.problems.push(format!(
                                "{}: rollback failed: {}",
                                i.id,
                                i.reason.as_deref().unwrap_or(&i.details)
                            ));
                        }
                        rollback.instances = r;
                    }
                    Err(e) => rollback.problems.push(format!("rolling back: {e}")),
                }
            }
            for p in &rollback.problems {
                d.runner.error("ec2-deploy: rollback", p);
            }
            d.runner.end_group();
            report.rollback = Some(rollback);
        }
    } else if failed > 0 {
        d.runner.warning("ec2-deploy", &format!("{failed} instance(s) failed, within max-errors ({allowed})"));
    }
    Ok(report)
}

fn new_report(d: &Deployer<'_>, instances: Vec<InstanceReport>) -> DeployReport {
    DeployReport {
        environment: d.plan.environment.clone(),
        image: d.image.to_string(),
        image_tag: d.plan.image_tag.clone(),
        command_ids: vec![],
        instances,
        batches: vec![],
        rollback: None,
        tolerated: 0,
        release_version: None,
        cancelled: false,
        skipped: d.plan.skipped.iter().map(|i| i.id.clone()).collect(),
        seconds: 0.0,
    }
}

/// The load balancer side of a batch, over ELBv2.
struct LbAdapter<'a> {
    traffic: &'a Traffic,
    cancel: &'a crate::cancel::Cancel,
    drain_limit: Duration,
    healthy_limit: Duration,
}

impl rollout::Lb for LbAdapter<'_> {
    async fn take_out(&self, ids: &[String]) -> Result<(), String> {
        self.traffic.deregister(ids).await.map_err(|e| e.to_string())?;
        tokio::select! {
            r = self.traffic.wait_drained(ids, self.drain_limit) => r.map_err(|e| e.to_string()),
            _ = self.cancel.cancelled() => Err("cancelled while draining".into()),
        }
    }

    async fn put_back(&self, ids: &[String]) -> Result<(), String> {
        self.traffic.register(ids).await.map_err(|e| e.to_string())?;
        tokio::select! {
            r = self.traffic.wait_healthy(ids, self.healthy_limit) => r.map_err(|e| e.to_string()),
            _ = self.cancel.cancelled() => Err("cancelled while waiting for health".into()),
        }
    }

    async fn readmit(&self, ids: &[String]) -> Result<(), String> {
        self.traffic.register(ids).await.map_err(|e| e.to_string())
    }
}

impl rollout::Swapper for Deployer<'_> {
    async fn deploy(&self, ids: &[String]) -> Result<Vec<InstanceReport>, String> {
        // The batch is out of the load balancer: all of it at once, stopping at the first failure.
        let n = ids.len() as u32;
        self.command(Target::Ids(ids), Mode::Deploy, self.image, Limit::Count(n), Limit::Count(0))
            .await
            .map_err(|e| e.to_string())
    }

    async fn rollback(&self, targets: &[(String, String)]) -> Result<Vec<InstanceReport>, String> {
        Deployer::rollback(self, targets).await.map_err(|e| e.to_string())
    }
}

async fn deploy_in_batches(d: &Deployer<'_>, traffic: &Traffic) -> Result<DeployReport, Error> {
    // Draining may take the groups' deregistration delay; health needs a few check intervals.
    let lb = LbAdapter {
        traffic,
        cancel: d.cancel,
        drain_limit: traffic.drain_limit().await? + Duration::from_secs(30),
        healthy_limit: traffic.healthy_limit().await? + Duration::from_secs(30),
    };
    let rollout = rollout::run(&lb, d, d.plan.batches.clone(), d.runner, d.cancel).await;
    let mut report = new_report(d, rollout.instances);
    report.cancelled = d.cancel.is_cancelled();
    report.batches = rollout.batches;
    report.rollback = rollout.rollback;
    Ok(report)
}

/// Polls a command until it is done, printing each instance's status as it changes. Polls back
/// off from 1 s to 5 s while nothing changes.
async fn follow(
    fleet: &Fleet,
    command_id: &str,
    names: &BTreeMap<&str, &str>,
    timeout: u32,
    runner: &Runner,
    cancel: &crate::cancel::Cancel,
) -> Result<Vec<Invocation>, Error> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(u64::from(timeout) + u64::from(DELIVERY_TIMEOUT) + 120);
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut interval = POLL_MIN;
    loop {
        let (state, invocations) = fleet.progress(command_id).await?;
        let mut changed = false;
        for inv in &invocations {
            let now = (inv.status.clone(), inv.details.clone());
            if seen.get(&inv.instance_id) != Some(&now) {
                changed = true;
                let name = names.get(inv.instance_id.as_str()).copied().unwrap_or("-");
                let detail = if inv.details != inv.status { format!(" ({})", inv.details) } else { String::new() };
                runner.info(&format!(
                    "  +{:>5.1}s  {}  {:<16} {}{}",
                    started.elapsed().as_secs_f64(),
                    inv.instance_id,
                    name,
                    inv.status,
                    detail
                ));
                seen.insert(inv.instance_id.clone(), now);
            }
        }
        if state.is_done() && invocations.iter().all(Invocation::is_done) {
            runner.info(&format!(
                "  command {command_id} {} after {:.1}s: {} of {} instances done, {} failed",
                state.status,
                started.elapsed().as_secs_f64(),
                state.completed_count,
                state.target_count,
                state.error_count
            ));
            return Ok(invocations);
        }
        if Instant::now() > deadline {
            let _ = fleet.cancel(command_id).await;
            return Err(Error::Aws(AwsError {
                context: format!("following SSM command {command_id}"),
                code: None,
                message: "it did not finish within timeout + delivery time; it was cancelled".into(),
                access: false,
            }));
        }
        if cancel.is_cancelled() {
            // Invocations SSM has not started are cancelled; running scripts are left to finish
            // (see crate::cancel for why).
            let waiting: Vec<String> = invocations
                .iter()
                .filter(|i| matches!(i.status.as_str(), "Pending" | "Delayed"))
                .map(|i| i.instance_id.clone())
                .collect();
            let result = if invocations.is_empty() {
                fleet.cancel(command_id).await
            } else if !waiting.is_empty() {
                fleet.cancel_instances(command_id, &waiting).await
            } else {
                Ok(())
            };
            if let Err(e) = result {
                runner.warning("ec2-deploy: cancelled", &e.to_string());
            }
            runner.info(&format!(
                "  cancelled: {} invocation(s) not started were cancelled, the others finish on their instances",
                waiting.len()
            ));
            return Ok(invocations);
        }
        interval = if changed { POLL_MIN } else { interval.mul_f64(1.5).min(POLL_MAX) };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = cancel.cancelled() => {}
        }
    }
}
