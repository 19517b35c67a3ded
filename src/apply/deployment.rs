//! The run's GitHub deployment: created and set in progress before anything changes, concluded
//! at the end. GitHub is a reporting channel: every failure here is a notice, never a failed
//! deploy.

use crate::github::Runner;
use crate::plan::Plan;
use crate::ports::{DeploymentMode, DeploymentState, GitHub, World};

/// Finds the deployment to report to and sets it in progress; a notice instead when there is
/// none. With `github-deployment: auto` that is the job's own deployment when the job sets
/// `environment:` (GitHub makes one per such job, so a second would double every run), else a new
/// one; `create` always makes one, `off` none.
pub async fn announce<W: World>(world: &W, plan: &Plan, runner: &Runner) -> Option<u64> {
    let a = &plan.announce;
    if a.mode == DeploymentMode::Off {
        return None;
    }
    let github = world.github();
    let (Some(gh), Some(env), Some(sha)) = (github, a.environment.as_ref(), a.sha.as_deref()) else {
        if github.is_none() {
            runner
                .notice("ec2-deploy: GitHub", "no github-token or GITHUB_REPOSITORY: no GitHub deployment is recorded");
        } else if a.environment.is_none() {
            runner.notice("ec2-deploy: GitHub", "no `environment`: no GitHub deployment is recorded");
        }
        return None;
    };
    let job_deployment = match (a.mode, a.log_url.as_deref()) {
        (DeploymentMode::Auto, Some(run_url)) => match gh.find_job_deployment(sha, env, run_url).await {
            Ok(found) => found,
            Err(e) => {
                runner.notice("ec2-deploy: GitHub", &format!("{e}; creating one for this run instead"));
                None
            }
        },
        _ => None,
    };
    let id = match job_deployment {
        Some(id) => {
            runner.info(&format!("Reporting to the job's GitHub deployment {id} ({env})"));
            id
        }
        None => match gh.create_deployment(sha, env, &format!("ec2-deploy: {}", a.what), a.payload.clone()).await {
            Ok(id) => id,
            Err(e) => {
                runner.notice(
                    "ec2-deploy: GitHub",
                    &format!("no GitHub deployment: {e} (does the token have deployments: write?)"),
                );
                return None;
            }
        },
    };
    if let Err(e) = gh
        .set_deployment_status(
            id,
            DeploymentState::InProgress,
            &a.what,
            a.log_url.as_deref(),
            a.environment_url.as_deref(),
        )
        .await
    {
        runner.notice("ec2-deploy: GitHub", &e.to_string());
    }
    Some(id)
}

/// Sets the deployment's final status.
pub async fn conclude<W: World>(
    world: &W,
    plan: &Plan,
    deployment: Option<u64>,
    state: DeploymentState,
    text: &str,
    runner: &Runner,
) {
    let (Some(gh), Some(id)) = (world.github(), deployment) else { return };
    let a = &plan.announce;
    if let Err(e) = gh.set_deployment_status(id, state, text, a.log_url.as_deref(), a.environment_url.as_deref()).await
    {
        runner.notice("ec2-deploy: GitHub", &e.to_string());
    }
}
