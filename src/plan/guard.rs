//! The run-order guard: a push must not put an older commit over the live release. GitHub's
//! compare API decides; when GitHub cannot be asked, the commits' times do. Explicit redeploys
//! (`image-digest`, `workflow_dispatch`), rollbacks and converges (the live release again) pass.
//!
//! It runs while the plan's facts are gathered, under the deploy lock, so the live release it
//! compares with is the one the deploy would replace: a push that waited for the lock behind a
//! newer deploy compares with what that deploy recorded.

use super::RunInfo;
use crate::inputs::DeployRequest;
use crate::ports::{Comparison, GitHub};
use crate::release::{epoch_of, Recorded};

/// Why this commit must not replace the live one, or `None`.
pub async fn older_than_live<G: GitHub>(
    req: &DeployRequest,
    live: Option<&Recorded>,
    github: Option<&G>,
    run: &RunInfo,
) -> Option<String> {
    if run.event_name.as_deref() != Some("push") || req.rollback || req.converge || req.image_digest.is_some() {
        return None;
    }
    let live = live?;
    let (commit, live_commit) = (req.commit.as_deref()?, live.release.commit.as_deref()?);
    if commit == live_commit {
        return None;
    }
    if let Some(gh) = github {
        if let Ok(status) = gh.compare(live_commit, commit).await {
            return (status == Comparison::Behind)
                .then(|| format!("GitHub says {commit} is behind the live commit {live_commit}"));
        }
    }
    // GitHub could not be asked: compare the commits' times.
    let (mine, theirs) = (run.commit_time.as_deref()?, live.release.commit_time.as_deref()?);
    (epoch_of(mine)? < epoch_of(theirs)?)
        .then(|| format!("{commit} was committed at {mine}, before the live commit {live_commit} ({theirs})"))
}
