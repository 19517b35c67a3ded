//! Maintenance: the proxy answers 503 with a page while the app keeps running, without SSH.
//!
//! `ec2-deploy maintenance on|off` sends the live release's recorded header with
//! `MODE=maintenance` (see `instance/script/09-maintenance.sh`) to the online instances with the
//! environment's tags: on each, a second Caddy from the proxy's image serves the page, and the
//! proxy's upstream file points at it (as a deploy points it at a new container: the proxy is
//! not replaced and no connection is dropped); `off` points it back at the app. The app's
//! health path still reaches the app (a load balancer's checks keep passing) unless asked
//! otherwise. A deploy or rollback ends maintenance on the instances it switches.

use crate::apply::command::{ask, Answered, Question};
use crate::apply::Context;
use crate::model::ManagedInstance;
use crate::ports::World;
use crate::release::Recorded;
use crate::Error;

/// Seconds the maintenance command may run on one instance (it may wait for the deploy lock).
pub const MAINTENANCE_TIMEOUT: u32 = 180;

/// What is asked of each instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    pub on: bool,
    /// The page's text (plain text).
    pub message: String,
    /// The page's `Retry-After`, in seconds.
    pub retry_after: u32,
    /// The health path answers 503 too (the load balancer takes the instances out).
    pub fail_health: bool,
}

/// What one instance answered: `None` when it did as asked, else why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceMaintenance {
    pub instance: ManagedInstance,
    pub failed: Option<String>,
}

/// Puts `instances` in maintenance or takes them out, and prints each one's answer.
pub async fn set<W: World>(
    world: &W,
    cx: &Context<'_>,
    req: &crate::inputs::DeployRequest,
    live: &Recorded,
    instances: &[ManagedInstance],
    m: &Maintenance,
) -> Result<Vec<InstanceMaintenance>, Error> {
    let script =
        crate::instance::maintenance_script(&live.release.header, m.on, &m.message, m.retry_after, m.fail_health)?;
    let question = Question {
        script: &script,
        action: "maintenance",
        timeout: MAINTENANCE_TIMEOUT,
        comment: format!("{} maintenance", crate::apply::command::comment(req.environment.as_ref(), &live.release.tag)),
        read_outputs: true,
    };
    let state = if m.on { "on" } else { "off" };
    let answers = ask(world, cx, instances, &req.targets, question, |n| {
        format!("Maintenance {state} for {} on {n} instance(s)", live.release.container.name)
    })
    .await?;
    let found: Vec<InstanceMaintenance> = instances
        .iter()
        .map(|i| {
            let failed = match answers.of(i) {
                Answered::Offline(ping) => Some(format!("not asked: its SSM agent is {ping}")),
                Answered::Report(r, Some(out))
                    if r.ok() && out.stdout.contains(&format!("ec2-deploy-maintenance state={state}")) =>
                {
                    None
                }
                Answered::Report(r, _) => Some(r.why_not()),
                Answered::NoReport => Some("no report from the command".into()),
            };
            InstanceMaintenance { instance: i.clone(), failed }
        })
        .collect();
    for f in &found {
        let name = f.instance.name.as_deref().unwrap_or("-");
        match &f.failed {
            None => cx.runner.info(&format!("{}  {name}  maintenance {state}", f.instance.id)),
            Some(why) => cx.runner.info(&format!("{}  {name}  not changed: {why}", f.instance.id)),
        }
    }
    Ok(found)
}
