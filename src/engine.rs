//! One deploy: gather facts (read-only) → plan → build/push → Run Command → follow → report.
//!
//! Nothing changes before the plan succeeded: bad input, a missing repository, tag or secret, or
//! no reachable instance stop the run first.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::aws::{AwsError, Clients};
use crate::build::Docker;
use crate::fleet::{Dispatch, Fleet, Invocation};
use crate::github::Runner;
use crate::inputs::DeployRequest;
use crate::instance::{self, ScriptParams};
use crate::plan::{self, Facts, ImageSource, Plan};
use crate::registry::Ecr;
use crate::report::{self, DeployReport};
use crate::{secrets, Error};

/// Seconds SSM keeps trying to reach an instance's agent. The plan has just seen every agent
/// online, so a long wait only delays the report of an instance that went away.
const DELIVERY_TIMEOUT: u32 = 120;
const POLL_MIN: Duration = Duration::from_secs(1);
const POLL_MAX: Duration = Duration::from_secs(5);

pub enum Outcome {
    DryRun(Box<Plan>),
    Finished(DeployReport),
}

pub struct Context<'a> {
    pub runner: &'a Runner,
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

    runner.group("Plan");
    let (auth, exists, instances, secret) = tokio::join!(
        ecr.auth(),
        ecr.repository_exists(&req.repository),
        fleet.find(&req.targets),
        async {
            match &req.container.secret_id {
                Some(id) => secrets::describe(&clients.secrets, id).await.map(Some),
                None => Ok(None),
            }
        }
    );
    let auth = auth?;
    runner.mask(&auth.password.0);
    let exists = exists?;
    let registry = req.registry.clone().unwrap_or_else(|| auth.host.clone());
    let (existing_digest, cache_from) = if exists {
        let digest = ecr.digest_of(&req.repository, &req.image_tag).await?;
        let cache = if digest.is_none() && req.build {
            ecr.latest_tag(&req.repository).await?
        } else {
            None
        };
        (digest, cache)
    } else {
        (None, None)
    };
    let facts = Facts {
        region: clients.region.clone(),
        registry: registry.clone(),
        repository_exists: exists,
        existing_digest,
        cache_from,
        instances: instances?,
        secret_arn: secret?,
    };
    let plan = plan::make(req, facts).map_err(Error::Plan);
    let plan = match plan {
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

    let started = Instant::now();
    let digest = match &plan.source {
        ImageSource::Existing { digest } => {
            runner.info(&format!(
                "{} is already in the registry ({digest}): not rebuilding",
                plan.image
            ));
            digest.clone()
        }
        ImageSource::Build { cache_from } => {
            runner.group(&format!("Build and push {}", plan.image));
            let docker = Docker::new(cx.env)?;
            let result = async {
                docker
                    .login(&registry, &auth.username, &auth.password)
                    .await?;
                docker
                    .build(
                        &req.build_spec,
                        cx.workdir,
                        &plan.image,
                        cache_from.as_deref(),
                    )
                    .await?;
                docker.push(&plan.image).await
            }
            .await;
            runner.end_group();
            result?
        }
    };
    let image = format!("{}/{}@{}", registry, plan.repository, digest);
    runner.set_output("image", &image).map_err(Error::output)?;
    runner
        .set_output("image-tag", &plan.image_tag)
        .map_err(Error::output)?;

    let script = instance::render(&ScriptParams {
        image: &image,
        registry: &registry,
        release: &plan.image_tag,
        container: &plan.container,
    })?;
    let dispatch = Dispatch {
        targets: &plan.targets,
        script: &script,
        max_concurrency: plan.max_concurrency,
        max_errors: plan.max_errors,
        execution_timeout: plan.timeout,
        delivery_timeout: DELIVERY_TIMEOUT,
        comment: format!(
            "ec2-deploy {} {}",
            plan.environment.as_deref().unwrap_or(""),
            plan.image_tag
        ),
    };
    let command_id = fleet.send(&dispatch).await?;
    runner
        .set_output("command-id", &command_id)
        .map_err(Error::output)?;
    runner.group(&format!(
        "Deploy to {} instances (SSM command {command_id})",
        plan.instances.len()
    ));
    let followed = follow(&fleet, &command_id, &plan, runner).await;
    runner.end_group();
    let invocations = followed?;

    // The full output of every instance whose script ran and did not succeed, for the log and
    // the report. (Invocations that never started have no output to show.)
    let mut outputs = vec![];
    let ran_and_failed = |i: &&Invocation| {
        i.status != "Success"
            && matches!(
                i.details.as_str(),
                "Failed" | "Execution Timed Out" | "Cancelled"
            )
    };
    for inv in invocations.iter().filter(ran_and_failed) {
        match fleet.output(&command_id, &inv.instance_id).await {
            Ok(out) => {
                runner.group(&format!(
                    "Output of {} ({}: {})",
                    inv.instance_id, inv.status, inv.details
                ));
                runner.untrusted(&format!("{}\n--- stderr ---\n{}", out.stdout, out.stderr));
                runner.end_group();
                outputs.push((inv.instance_id.clone(), out));
            }
            Err(e) => runner.warning(
                "ec2-deploy",
                &format!("could not read the output of {}: {e}", inv.instance_id),
            ),
        }
    }
    let report = DeployReport {
        environment: plan.environment.clone(),
        image,
        image_tag: plan.image_tag.clone(),
        command_id,
        instances: report::instance_reports(&plan.instances, &invocations, &outputs),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(Outcome::Finished(report))
}

/// Polls the command until it is done, printing each instance's status as it changes. Polls
/// back off from 1 s to 5 s while nothing changes.
async fn follow(
    fleet: &Fleet,
    command_id: &str,
    plan: &Plan,
    runner: &Runner,
) -> Result<Vec<Invocation>, Error> {
    let started = Instant::now();
    let deadline =
        started + Duration::from_secs(u64::from(plan.timeout) + u64::from(DELIVERY_TIMEOUT) + 120);
    let names: BTreeMap<&str, &str> = plan
        .instances
        .iter()
        .filter_map(|i| Some((i.id.as_str(), i.name.as_deref()?)))
        .collect();
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
                let detail = if inv.details != inv.status {
                    format!(" ({})", inv.details)
                } else {
                    String::new()
                };
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
                "  command {}: {} of {} instances done, {} failed",
                state.status, state.completed_count, state.target_count, state.error_count
            ));
            return Ok(invocations);
        }
        if Instant::now() > deadline {
            let _ = fleet.cancel(command_id).await;
            return Err(Error::Aws(AwsError {
                context: format!("following SSM command {command_id}"),
                code: None,
                message: "it did not finish within timeout + delivery time; it was cancelled"
                    .into(),
                access: false,
            }));
        }
        interval = if changed {
            POLL_MIN
        } else {
            (interval.mul_f64(1.5)).min(POLL_MAX)
        };
        tokio::time::sleep(interval).await;
    }
}
