//! The plan: request + what was found → exactly what will happen, before anything changes.
//!
//! [`facts::gather`] asks the world with read-only calls (under the deploy lock, so what it reads
//! cannot change under the run); [`make`] decides, purely; the plan is printed ([`text`]) and is
//! all a dry run does. Every reason not to go ahead is reported at once, each with the input to
//! fix. Apply (`crate::apply`) reads nothing but the plan: the image and how it is obtained, the
//! instances and how they are rolled through, the record to write and the deployment to report.

pub mod facts;
pub mod guard;
mod make;
mod text;

use std::time::Duration;

use serde::Serialize;

pub use facts::{gather, Facts, RunInfo};
pub use make::{make, RECORD_LIMIT};

use crate::model::{
    command_deadline, ContainerSpec, Digest, EnvironmentName, ImageName, ImageRef, ImageTag, InstanceDrift, InstanceId,
    Limit, ManagedInstance, ParameterName, PortMapping, Region, RegistryHost, Repository, TagFilter, TargetGroupArn,
};
use crate::ports::{BuildSpec, GroupTimings, RegistryAuth};
use crate::release::Recorded;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum ImageSource {
    /// Build and push; the layer cache comes from this image.
    Build { spec: BuildSpec, cache_from: Option<String> },
    /// The image is already in the registry: deploy that digest, build nothing.
    Existing { digest: Digest },
}

/// Where the per-instance proxy's image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum ProxySource {
    /// Copied from `from` to `to` in the deploy's repository before the rollout.
    Copy { from: ImageName, to: ImageTag },
    /// Already in the deploy's registry (a copy made earlier, or the recorded one a rollback uses).
    Existing { image: ImageRef },
}

/// The proxy that holds the first of the ports on each instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyPlan {
    pub source: ProxySource,
    /// The port it holds (the first of `ports`).
    pub port: PortMapping,
    /// The other ports, published by the container itself.
    pub direct: Vec<PortMapping>,
    /// The live release runs without the proxy: each instance moves to it on this deploy.
    pub migration: bool,
}

impl Plan {
    /// Which way requests reach the instances while they swap, and what that guarantees: the
    /// job summary's "Mode" line.
    pub fn mode(&self) -> String {
        let lb = matches!(self.rollout, Rollout::Batches { .. });
        let behind = if lb { " behind the target groups" } else { "" };
        match &self.proxy {
            Some(p) if p.migration || !p.direct.is_empty() => {
                let mut caveats = vec![];
                if p.migration {
                    caveats.push("this deploy moves each instance from publishing the port itself to the proxy (a short gap, reported per instance)".to_string());
                }
                if !p.direct.is_empty() {
                    let ports: Vec<String> = p.direct.iter().map(ToString::to_string).collect();
                    caveats.push(format!("{} is published by the container and stops during its swap", ports.join(", ")));
                }
                format!(
                    "proxy on each instance{behind} (port {}){}; {}",
                    p.port.host,
                    if lb { ", each batch drained first" } else { "" },
                    caveats.join("; ")
                )
            }
            Some(p) => format!(
                "proxy on each instance{behind} (port {}): the port answers throughout; no request dropped{}",
                p.port.host,
                if lb { ", no drain needed" } else { "" }
            ),
            None if lb => "target groups, each batch drained first: no request dropped through the load balancer; requests straight to an instance fail while it swaps (proxy: false)".into(),
            None if self.container.ports.is_empty() => "no published port: the container is replaced in place".into(),
            None => "direct publishing (proxy: false): the old container stops before the new one starts, so requests to an instance fail while it swaps".into(),
        }
    }
}

/// The tag the proxy's image gets in the deploy's repository: `ec2-deploy-proxy-` and the pinned
/// digest's first 12 hex digits, or the image's name made a tag.
pub fn proxy_tag(image: &ImageName) -> ImageTag {
    let suffix: String = match image.digest() {
        Some(d) => d.as_str()[7..19].to_string(),
        None => image.as_str().chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect(),
    };
    let tag: String = format!("ec2-deploy-proxy-{suffix}").chars().take(128).collect();
    ImageTag::parse(&tag).expect("letters, digits, . and -, starting with a letter")
}

/// The tag under which a stage of the Dockerfile keeps its layer cache in the deploy's
/// repository: `ec2-deploy-cache-` and the stage's name. Each build moves it.
pub fn cache_tag(stage: &str) -> String {
    format!("{CACHE_TAG_PREFIX}{stage}").chars().take(128).collect()
}

const CACHE_TAG_PREFIX: &str = "ec2-deploy-cache-";

/// Tags that are not releases: the proxy's image and the stages' layer caches. None is a release
/// to deploy, nor the earlier image a build takes its layer cache from.
pub fn is_reserved_tag(tag: &str) -> bool {
    tag.starts_with("ec2-deploy-proxy-") || tag.starts_with(CACHE_TAG_PREFIX)
}

/// How the instances are rolled through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "strategy", rename_all = "kebab-case")]
pub enum Rollout {
    /// One command (to the tags, or to the instance ids when some were skipped); SSM's
    /// MaxConcurrency and MaxErrors do the rolling.
    ByTags { max_concurrency: Limit, max_errors: Limit, by_ids: bool },
    /// Batch by batch through the load balancer: drain, swap, healthy.
    Batches {
        target_groups: Vec<TargetGroupArn>,
        batches: Vec<Vec<InstanceId>>,
        /// Each batch leaves the load balancer while it changes. Not with the proxy: the proxy
        /// keeps serving through the swap, so taking the batch out would only add the groups'
        /// deregistration delay.
        drain: bool,
        #[serde(skip)]
        timings: GroupTimings,
    },
}

/// The one-off command before anything is switched, and where it runs.
#[derive(Debug, Clone, Serialize)]
pub struct PreDeployPlan {
    pub command: Vec<String>,
    pub target: InstanceId,
    pub timeout: u32,
    pub skipped: Option<String>,
}

/// The CloudWatch alarms watched while the release bakes.
#[derive(Debug, Clone, Serialize)]
pub struct WatchPlan {
    pub selectors: Vec<crate::model::AlarmSelector>,
    /// Seconds held after each batch (after a deploy by tags: after the command).
    pub bake: u32,
    /// The alarms and their states when the plan was made.
    pub at_start: Vec<crate::model::AlarmStatus>,
    /// In ALARM at the start with `ignore-alarms-at-start`: not watched.
    pub ignored: Vec<String>,
}

/// With `converge`: the live release goes back to the instances that drifted from it, and only
/// to them.
#[derive(Debug, Clone, Serialize)]
pub struct ConvergePlan {
    /// Every instance with the tags, as the check found it before anything moved.
    pub survey: Vec<InstanceDrift>,
}

impl ConvergePlan {
    /// The instances that run the live release already: this run leaves them alone.
    pub fn in_step(&self) -> impl Iterator<Item = &ManagedInstance> {
        self.survey.iter().filter(|d| !d.drifted()).map(|d| &d.instance)
    }

    pub fn drifted(&self) -> impl Iterator<Item = &InstanceDrift> {
        self.survey.iter().filter(|d| d.drifted())
    }
}

/// What the run writes to the release record when it succeeds.
#[derive(Debug, Clone, Serialize)]
pub struct RecordPlan {
    pub parameter: ParameterName,
    /// The release the environment runs now.
    pub live: Option<Recorded>,
    /// With `rollback`: the recorded release it goes back to.
    pub rollback_to: Option<Recorded>,
    /// The commit recorded with the release (for a rollback, the restored release's own).
    pub commit: Option<String>,
    pub commit_time: Option<String>,
    pub run_url: Option<String>,
}

/// The GitHub deployment the run reports to.
#[derive(Debug, Clone, Serialize)]
pub struct Announce {
    pub sha: Option<String>,
    pub environment: Option<EnvironmentName>,
    /// `deploy v2` / `rollback to v1`
    pub what: String,
    pub payload: serde_json::Value,
    pub environment_url: Option<String>,
    pub log_url: Option<String>,
    pub mode: crate::ports::DeploymentMode,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub environment: Option<EnvironmentName>,
    pub region: Region,
    pub registry: RegistryHost,
    pub repository: Repository,
    pub image_tag: ImageTag,
    /// `registry/repository:tag`
    pub image: String,
    pub source: ImageSource,
    pub targets: Vec<TagFilter>,
    pub instances: Vec<ManagedInstance>,
    /// With `on-offline: skip`: matching instances left out because their agent is not connected.
    pub skipped: Vec<ManagedInstance>,
    pub container: ContainerSpec,
    pub secret_arn: Option<String>,
    /// The per-instance proxy, when the container has a port and `proxy` is on.
    pub proxy: Option<ProxyPlan>,
    pub rollout: Rollout,
    /// `pre-deploy`, when asked for (with why it is skipped, when it is).
    pub pre_deploy: Option<PreDeployPlan>,
    /// Seconds the script may run on one instance.
    pub timeout: u32,
    /// With more than one batch (or wave): every instance pulls the release first, this many at
    /// once, before the first one switches; each batch then only starts, checks and switches.
    pub pull_first: Option<Limit>,
    /// Seconds an instance that joined during the deploy and is still booting is waited for.
    pub boot_wait: u32,
    /// `alarms`: watched during the bake after each batch.
    pub watch: Option<WatchPlan>,
    /// `converge`: what the check found, and so which instances this run deploys to.
    pub converge: Option<ConvergePlan>,
    pub record: RecordPlan,
    /// The deploy lock, held while the plan is applied (None: a dry run takes none).
    pub lock: Option<ParameterName>,
    pub announce: Announce,
    pub dry_run: bool,
    /// Credentials to push with (fetched once, for the plan's look-ups and the build).
    #[serde(skip)]
    pub auth: RegistryAuth,
}

/// The longest the rollout can take once it starts (the build and the lock wait come before):
/// every wave of instances using all of `command-timeout`, every drain and health wait its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorstCase {
    pub rollout: Duration,
    /// The rollout failing at its very end, then every instance going back.
    pub with_rollback: Duration,
}

impl WorstCase {
    /// A `role-duration-seconds` that covers the worst case with 15 minutes to spare, in whole
    /// quarter hours, within what STS allows (15 minutes to 12 hours).
    pub fn role_duration_seconds(&self) -> u64 {
        let quarter = 900;
        (self.with_rollback.as_secs() + quarter).div_ceil(quarter).saturating_mul(quarter).clamp(quarter, 43_200)
    }
}

impl Plan {
    /// How many batches (or SSM waves, by tags) switch one after another.
    pub fn batches(&self) -> usize {
        match &self.rollout {
            Rollout::ByTags { max_concurrency, .. } => {
                crate::model::waves(self.instances.len(), *max_concurrency) as usize
            }
            Rollout::Batches { batches, .. } => batches.len(),
        }
    }

    /// See [`WorstCase`]; the same bounds the run's own deadlines use.
    pub fn worst_case(&self) -> WorstCase {
        let command = |targets: usize, concurrency: Limit| command_deadline(targets, concurrency, self.timeout);
        let rollout = match &self.rollout {
            Rollout::ByTags { max_concurrency, .. } => command(self.instances.len(), *max_concurrency),
            Rollout::Batches { batches, drain, timings, .. } => batches
                .iter()
                .map(|b| {
                    let drained =
                        if *drain { timings.deregistration_delay + Duration::from_secs(30) } else { Duration::ZERO };
                    drained
                        + command(b.len(), Limit::Count(b.len() as u32))
                        + timings.time_to_healthy
                        + Duration::from_secs(30)
                        + self.bake()
                })
                .sum(),
        };
        let rollout = match &self.rollout {
            Rollout::ByTags { .. } => rollout + self.bake(),
            Rollout::Batches { .. } => rollout,
        };
        // The pull before the first batch: once (a rollback pulls nothing).
        let pull = self.pull_first.map(|c| command(self.instances.len(), c)).unwrap_or_default();
        WorstCase { rollout: pull + rollout, with_rollback: pull + rollout * 2 }
    }

    /// The hold after each batch while the alarms are watched.
    pub fn bake(&self) -> Duration {
        self.watch.as_ref().map(|w| Duration::from_secs(w.bake.into())).unwrap_or_default()
    }

    /// The image by digest, once the digest is known (from the registry, or from the push).
    pub fn image_ref(&self, digest: Digest) -> ImageRef {
        ImageRef { registry: self.registry.clone(), repository: self.repository.clone(), digest }
    }

    pub fn is_rollback(&self) -> bool {
        self.record.rollback_to.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("input `ecr-repository`: repository {repository:?} does not exist in {region}; create it (aws ecr create-repository --repository-name {repository}) or fix the name/region")]
    RepositoryMissing { repository: String, region: String },
    #[error("input `image-tag`: tag {tag:?} is not in repository {repository:?}, and `build` is false; push it first, set `build: true`, or pick an existing tag")]
    TagMissing { tag: String, repository: String },
    #[error("input `targets`: no instance managed by SSM has tags {targets}; check the tags, that the instances run the SSM agent and that their role has AmazonSSMManagedInstanceCore")]
    NoInstances { targets: String },
    #[error("input `targets`: {count} matching instance(s) have no SSM agent connection ({list}); they would never receive the deploy. Bring their agents back, change the tags, or set `on-offline: skip`")]
    Offline { count: usize, list: String },
    #[error(
        "input `secret-id`: secret {id:?} does not exist in {region}; create it in Secrets Manager or fix the name"
    )]
    SecretMissing { id: String, region: String },
    #[error("input `targets`: every instance with tags {targets} has lost its SSM agent connection; nothing can be deployed")]
    AllOffline { targets: String },
    #[error("input `target-groups`: target group {arn} does not exist; check the ARN and the region")]
    TargetGroupMissing { arn: String },
    #[error("input `image-digest`: {digest} is not in repository {repository:?}; give a digest the repository has (aws ecr describe-images)")]
    DigestMissing { digest: String, repository: String },
    #[error("input `rollback`: {parameter} records no earlier release that runs something else to go back to (releases rolled back from are skipped)")]
    NothingToRollBack { parameter: String },
    #[error("input `env`: the release record would be {bytes} bytes, over the {limit} an SSM parameter holds (it keeps `env` and the run options twice: as settings and in the script header); move long values into the secret (`secret-id`), which is read on the instance and never recorded")]
    RecordTooBig { bytes: usize, limit: usize },
    #[error("input `rollback-to`: {parameter} has no version {version} (its versions: {known}); `ec2-deploy status` lists them")]
    NoSuchVersion { parameter: String, version: i64, known: String },
    #[error("input `rollback-to`: version {version} is the live release; nothing to roll back (a `converge` redeploys it to instances that drifted)")]
    RollbackToLive { version: i64 },
    #[error("input `rollback`: the release to go back to, version {version} ({image}), is no longer in its repository; redeploy another image with `image-digest`")]
    RollbackImageGone { version: i64, image: String },
    #[error(
        "input `converge`: {parameter} records no release yet, so there is nothing to converge to; deploy one first"
    )]
    NothingToConverge { parameter: String },
    #[error("input `converge`: the live release, version {version} ({image}), is no longer in its repository; deploy a new one instead")]
    LiveImageGone { version: i64, image: String },
    #[error(
        "input `release-parameter`: {0}; fix or remove that version, or upgrade ec2-deploy if a newer one wrote it"
    )]
    Unreadable(String),
    #[error("this push deploys an older commit than the live release ({0}); redeploy it explicitly (workflow_dispatch with `image-tag`) if that is what you want")]
    OlderThanLive(String),
    #[error("input `pre-deploy-target`: {id} is not one of the instances this deploy reaches (online, with the tags); pick one of them or leave it out for the canary")]
    PreDeployTarget { id: String },
    #[error("input `alarms`: {0}; create it, fix the name, or remove it from `alarms`")]
    AlarmMissing(String),
    #[error("input `alarms`: {0} already in ALARM before anything moved; deploy once it is OK again, or set `ignore-alarms-at-start: true` to deploy anyway (those alarms are then not watched)")]
    AlarmAtStart(String),
    #[error("services {first} and {second} both publish host port {port}, and both run on {instances}; give one of them another host port in `ports` (or other `targets`)")]
    SharedHostPort { first: String, second: String, port: u16, instances: String },
}

/// Splits the fleet into batches: a canary of one first (when asked and there is more than one
/// instance), then batches of `size`.
pub fn batches(ids: &[InstanceId], canary: bool, size: Limit) -> Vec<Vec<InstanceId>> {
    if ids.is_empty() {
        return vec![];
    }
    let per_batch = size.of(ids.len(), true).max(1);
    let (first, rest) = if canary && ids.len() > 1 { ids.split_at(1) } else { ids.split_at(0) };
    let mut out: Vec<Vec<InstanceId>> = vec![];
    if !first.is_empty() {
        out.push(first.to_vec());
    }
    out.extend(rest.chunks(per_batch).map(<[InstanceId]>::to_vec));
    out
}

#[cfg(test)]
pub(crate) mod tests;
