//! Catch-up: instances that joined the tag set while the rollout ran get the new release too,
//! through the same path, before the release is recorded. An Auto Scaling launch during a deploy
//! boots from the record, which still names the release before this one (the record is written
//! only after a success); without this it would keep that release, silently.

use super::Rollout;
use crate::model::{ManagedInstance, Ping};
use crate::ports::World;

/// Rounds of catch-up at most: a fleet that keeps growing does not keep a deploy going forever
/// (what joins after the last round boots from the record this run writes).
pub const ROUNDS: usize = 3;

/// The online instances that match the tags now and were neither in the plan nor skipped by it
/// (nor caught up already, nor left alone by a converge). They join the commands' instances, so that reports, rollbacks and
/// the summary treat them like the others. One that joined offline is named in a warning.
pub async fn joined<W: World>(r: &Rollout<'_, W>) -> Vec<ManagedInstance> {
    let runner = r.commands.cx.runner;
    let found = match r.world().find_instances(&r.plan.targets).await {
        Ok(found) => found,
        Err(e) => {
            runner.warning(
                "ec2-deploy: catch-up",
                &format!("could not look for instances that joined the tags during the deploy: {e}"),
            );
            return vec![];
        }
    };
    let new: Vec<ManagedInstance> = {
        let known = r.commands.instances.borrow();
        found
            .into_iter()
            .filter(|i| !known.iter().any(|k| k.id == i.id) && !r.plan.skipped.iter().any(|s| s.id == i.id))
            // A converge left the instances on the live release alone: they did not join.
            .filter(|i| !r.plan.converge.as_ref().is_some_and(|c| c.in_step().any(|s| s.id == i.id)))
            .collect()
    };
    let (online, offline): (Vec<_>, Vec<_>) = new.into_iter().partition(|i| i.ping == Ping::Online);
    for i in &offline {
        runner.warning(
            "ec2-deploy: catch-up",
            &format!(
                "{} joined the tags during the deploy with no SSM agent connection ({}): it was not deployed to",
                i.id, i.ping
            ),
        );
    }
    if !online.is_empty() {
        let ids: Vec<&str> = online.iter().map(|i| i.id.as_str()).collect();
        runner.info(&format!("Catch-up: {} joined the tags during the deploy: {}", online.len(), ids.join(", ")));
        r.commands.instances.borrow_mut().extend(online.iter().cloned());
    }
    online
}
