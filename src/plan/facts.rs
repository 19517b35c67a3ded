//! The plan's read-only look-ups: the release history, the registry, the instances by tag, the
//! secret and the target groups, asked together. Nothing here changes anything.

use serde::Serialize;

use super::guard;
use crate::inputs::DeployRequest;
use crate::model::{Digest, ImageTag, ManagedInstance, ParameterName, Region, Repository, TargetGroupArn};
use crate::ports::{GroupTimings, RegistryAuth, ServiceError, World};
use crate::release::{Recorded, Releases, UnreadableVersion};

/// What the run's environment says about the run itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunInfo {
    /// The commit being deployed (GITHUB_SHA).
    pub commit: Option<String>,
    /// The pushed commit's time, from the push event (GITHUB_EVENT_PATH).
    pub commit_time: Option<String>,
    /// `{GITHUB_SERVER_URL}/{GITHUB_REPOSITORY}/actions/runs/{GITHUB_RUN_ID}`
    pub run_url: Option<String>,
    /// GITHUB_EVENT_NAME (`push`, `workflow_dispatch`, …).
    pub event_name: Option<String>,
    /// Who this run is, for the lock's holder: the run's URL, or the host.
    pub by: String,
    /// When the runner's AWS session ends, when known: `AWS_CREDENTIAL_EXPIRATION` (RFC 3339, the
    /// name the AWS CLI and botocore read; configure-aws-credentials' `aws-expiration` output).
    pub credentials_expire: Option<std::time::SystemTime>,
}

impl RunInfo {
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>, commit: Option<String>) -> RunInfo {
        let run_url = (|| {
            Some(format!(
                "{}/{}/actions/runs/{}",
                env("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into()),
                env("GITHUB_REPOSITORY")?,
                env("GITHUB_RUN_ID")?
            ))
        })();
        let commit_time = env("GITHUB_EVENT_PATH")
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|event| event["head_commit"]["timestamp"].as_str().map(str::to_string));
        let by = run_url
            .clone()
            .unwrap_or_else(|| format!("ec2-deploy on {}", env("HOSTNAME").unwrap_or_else(|| "a terminal".into())));
        let credentials_expire = env("AWS_CREDENTIAL_EXPIRATION")
            .and_then(|t| crate::release::epoch_of(t.trim()))
            .and_then(|s| u64::try_from(s).ok())
            .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        RunInfo { commit, commit_time, run_url, event_name: env("GITHUB_EVENT_NAME"), by, credentials_expire }
    }
}

/// What the read-only calls found.
#[derive(Debug, Clone)]
pub struct Facts {
    pub region: Region,
    pub auth: RegistryAuth,
    pub repository_exists: bool,
    /// The digest of the image to deploy, when the registry has it.
    pub existing_digest: Option<Digest>,
    /// A tag to take the layer cache from.
    pub cache_from: Option<ImageTag>,
    /// The digest the proxy's tag has in the repository, when a pinned proxy image was copied
    /// there before.
    pub proxy_existing: Option<Digest>,
    pub instances: Vec<ManagedInstance>,
    /// `None`: no secret asked for; `Some(None)`: asked for and missing.
    pub secret_arn: Option<Option<String>>,
    /// Target groups given that do not exist.
    pub missing_target_groups: Vec<TargetGroupArn>,
    pub group_timings: Option<GroupTimings>,
    /// The release the environment runs now, from the release record.
    pub live: Option<Recorded>,
    /// With `rollback`: the recorded release to go back to (None: there is none).
    pub rollback_to: Option<Recorded>,
    /// The record's readable versions, oldest first (for a `rollback-to` that names none of them).
    pub versions: Vec<i64>,
    /// A version of the record that had to be read and could not be.
    pub unreadable: Option<UnreadableVersion>,
    /// The run-order guard's verdict: why this commit must not replace the live one.
    pub older_than_live: Option<String>,
    /// With `converge`: every instance with the tags, as the read-only check found it (filled in
    /// by the deploy once these facts name the live release; see `crate::drift`).
    pub drift: Option<Vec<crate::model::InstanceDrift>>,
    /// The watched alarms (input `alarms`) as they are now.
    pub alarms: Vec<crate::model::AlarmStatus>,
    /// The deploy lock this run holds while it reads these facts and applies the plan.
    pub lock: Option<ParameterName>,
    pub run: RunInfo,
}

/// The recorded release a run deploys, settings included, instead of the request's: the one a
/// rollback goes back to, or for a converge the live one.
pub fn recorded_release<'a>(
    req: &DeployRequest,
    rollback_to: Option<&'a Recorded>,
    live: Option<&'a Recorded>,
) -> Option<&'a Recorded> {
    rollback_to.or(if req.converge { live } else { None })
}

/// Asks the world for everything the plan needs.
pub async fn gather<W: World>(
    world: &W,
    req: &DeployRequest,
    run: &RunInfo,
    lock: Option<&ParameterName>,
) -> Result<Facts, ServiceError> {
    let history = Releases::new(req.release_parameter.clone()).history(world).await?;
    let mut unreadable = None;
    let live = history.live().unwrap_or_else(|e| {
        unreadable = Some(e);
        None
    });
    let rollback_to = if req.rollback && unreadable.is_none() {
        let found = match req.rollback_to {
            Some(version) => history.release_at(version),
            None => history.rollback_target(),
        };
        found.unwrap_or_else(|e| {
            unreadable = Some(e);
            None
        })
    } else {
        None
    };
    let versions = history.versions();
    let live = live.cloned();
    let rollback_to = rollback_to.cloned();
    let recorded = recorded_release(req, rollback_to.as_ref(), live.as_ref()).cloned();
    let (repository, container) = match &recorded {
        Some(to) => (to.release.image.repository.clone(), to.release.container.clone()),
        None => (req.repository.clone(), req.container.clone()),
    };
    let (auth, exists, instances, secret, missing_groups, timings) = tokio::join!(
        world.registry_auth(),
        world.repository_exists(&repository),
        world.find_instances(&req.targets),
        async {
            match &container.secret_id {
                Some(id) => world.secret_arn(id).await.map(Some),
                None => Ok(None),
            }
        },
        world.missing_target_groups(&req.target_groups),
        async {
            if req.target_groups.is_empty() {
                Ok(None)
            } else {
                world.group_timings(&req.target_groups).await.map(Some)
            }
        },
    );
    let (auth, exists, missing_groups) = (auth?, exists?, missing_groups?);
    let (existing_digest, cache_from) = image_facts(world, req, &repository, recorded.as_ref(), exists).await?;
    // A pinned proxy image copied before is not copied again (an unpinned one may have moved).
    let proxy_existing = if container.proxy && exists && req.proxy_image.digest().is_some() {
        world.digest_of(&repository, &super::proxy_tag(&req.proxy_image)).await?
    } else {
        None
    };
    let older_than_live = guard::older_than_live(req, live.as_ref(), world.github(), run).await;
    let alarms = if req.alarms.is_empty() { vec![] } else { world.alarms(&req.alarms).await? };
    Ok(Facts {
        region: world.region().clone(),
        auth,
        repository_exists: exists,
        existing_digest,
        cache_from,
        proxy_existing,
        instances: instances?,
        secret_arn: secret?,
        missing_target_groups: missing_groups.clone(),
        // The timings of groups that do not exist cannot be read: the plan stops on those anyway.
        group_timings: if missing_groups.is_empty() { timings? } else { None },
        live,
        rollback_to,
        versions,
        unreadable,
        older_than_live,
        drift: None,
        alarms,
        lock: lock.cloned(),
        run: run.clone(),
    })
}

/// The digest of the image to deploy (when the registry has it) and a tag to take the cache from.
async fn image_facts<W: World>(
    world: &W,
    req: &DeployRequest,
    repository: &Repository,
    rollback_to: Option<&Recorded>,
    exists: bool,
) -> Result<(Option<Digest>, Option<ImageTag>), ServiceError> {
    if !exists {
        return Ok((None, None));
    }
    let wanted = rollback_to.map(|to| &to.release.image.digest).or(req.image_digest.as_ref());
    if let Some(digest) = wanted {
        return Ok((world.has_digest(repository, digest).await?.then(|| digest.clone()), None));
    }
    let digest = world.digest_of(repository, &req.image_tag).await?;
    let cache = if digest.is_none() && req.build { world.latest_tag(repository).await? } else { None };
    Ok((digest, cache))
}
