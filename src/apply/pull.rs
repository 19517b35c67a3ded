//! Pull first: with more than one batch, every instance pulls the release (and the proxy's
//! image) before the first one switches, `pull-concurrency` at once. A batch then costs start,
//! health and switch, not a pull as well; and an instance that cannot pull stops the run while
//! nothing has changed anywhere. The deploy script finds the image there and skips its own pull.

use super::command::{Order, Targets};
use super::{Purpose, Rollout};
use crate::instance;
use crate::model::{InstanceId, Limit};
use crate::ports::World;
use crate::report::InstanceReport;
use crate::Error;

/// Pulls the release's image (and the proxy's) on every instance before the first batch;
/// the milliseconds it took, or why it stopped the run.
pub async fn pull_first<W: World>(r: &Rollout<'_, W>, header: &str, concurrency: Limit) -> Result<u64, Error> {
    let (runner, world) = (r.commands.cx.runner, r.commands.world);
    let ids: Vec<InstanceId> = r.plan.instances.iter().map(|i| i.id.clone()).collect();
    runner.group(&format!("Pull {} on {} instances, {concurrency} at once", r.plan.image_tag, ids.len()));
    let script = instance::pull_script(header)?;
    let order = Order {
        targets: Targets::Ids(&ids),
        script: &script,
        action: "pull",
        concurrency,
        errors: Limit::Count(0),
        purpose: Purpose::Deploy,
        read_outputs: false,
    };
    let started = world.now();
    let outcome = r.commands.run(order).await;
    runner.end_group();
    let outcome = outcome?;
    let seconds = world.now().duration_since(started).unwrap_or_default().as_secs_f64();
    // An instance that left the fleet meanwhile needs no image: it is no failure of the pull.
    let failed: Vec<&InstanceReport> = outcome.reports.iter().filter(|i| i.failed()).collect();
    if failed.is_empty() && outcome.stopped.is_none() {
        runner.info(&format!("Pulled {} on {} instances in {seconds:.1}s", r.plan.image_tag, ids.len()));
        return Ok((seconds * 1000.0) as u64);
    }
    // The instances where the pull went wrong first; those it never reached after.
    let (reached, not_started): (Vec<&InstanceReport>, Vec<&InstanceReport>) = failed
        .into_iter()
        .partition(|i| i.response_code.is_some_and(|c| c > 0) || i.step.as_deref() != Some("not started"));
    let mut why: Vec<String> = reached
        .iter()
        .map(|i| {
            let name = i.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
            format!("{}{name}: {}", i.id, i.reason.as_deref().unwrap_or(i.detail.as_str()))
        })
        .collect();
    if !not_started.is_empty() {
        why.push(format!("{} more not asked after the first failure", not_started.len()));
    }
    if let Some(stopped) = outcome.stopped {
        why.push(stopped);
    }
    Err(Error::Pull { image: r.plan.image_tag.to_string(), why })
}
