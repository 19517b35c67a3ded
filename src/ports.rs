//! The edges of a deploy, one trait each, in the domain's words.
//!
//! The deploy logic (`plan`, `apply`) talks only to these traits, so it runs the same against
//! AWS and GitHub (the adapters in [`crate::aws`], [`crate::github::api`] and
//! [`crate::docker`]) and against the in-memory world the unit tests drive through faults and
//! interleavings (`crate::fake`). SDK types, SDK errors and how they are classified stay inside
//! the adapters: a port speaks of instances, commands, invocations and releases, and fails with a
//! [`ServiceError`] whose [`ErrorKind`] says what the caller can do about it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::model::{
    CommandId, CommandState, Digest, EnvVar, EnvironmentName, ImageTag, InstanceId, Invocation, InvocationOutput,
    Limit, ManagedInstance, ParameterName, RegistryHost, Repository, Secret, SecretId, TagFilter, TargetGroupArn,
};

/// What a failed call means to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The thing asked about does not exist.
    NotFound,
    /// Create-if-absent found it present.
    AlreadyExists,
    /// Rate exceeded, after the SDK's own retries: wait and ask again.
    Throttled,
    /// The network, a timeout or a 5xx: ask again.
    Unavailable,
    /// Credentials or permissions.
    Access,
    /// The session's credentials expired (a role session shorter than the deploy).
    Expired,
    /// Anything else the service refused.
    Other,
}

/// A failed call to AWS (or GitHub), with what we were doing when it failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{context}: {message}{}", self.hint())]
pub struct ServiceError {
    pub context: String,
    pub kind: ErrorKind,
    /// The service's own error code, when it gave one (`ParameterNotFound`).
    pub code: Option<String>,
    pub message: String,
}

impl ServiceError {
    /// `context: message`, without the hint.
    pub fn brief(&self) -> String {
        format!("{}: {}", self.context, self.message)
    }

    pub fn new(context: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> ServiceError {
        ServiceError { context: context.into(), kind, code: None, message: message.into() }
    }

    /// Parameter Store refused the write: throttled, or other writes to the same parameter were
    /// in flight (TooManyUpdates). Either way nothing was written.
    pub fn write_refused(&self) -> bool {
        self.kind == ErrorKind::Throttled
    }

    /// Asking again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::Throttled | ErrorKind::Unavailable)
    }

    fn hint(&self) -> &'static str {
        match self.kind {
            ErrorKind::Access => "\n  hint: check the runner's AWS credentials (aws-actions/configure-aws-credentials) and that its role allows this call",
            ErrorKind::Expired => "\n  hint: the AWS session expired during the deploy; give configure-aws-credentials a longer role-duration-seconds",
            _ => "",
        }
    }

    /// The same error, said while doing something else.
    pub fn context(mut self, context: impl Into<String>) -> ServiceError {
        self.context = context.into();
        self
    }
}

pub type Result<T> = std::result::Result<T, ServiceError>;

/// One version of a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub value: String,
    pub version: i64,
}

/// SSM Parameter Store, with its real semantics: every put makes a new version, numbered one
/// more than the last (the number is the put's own: two puts never get the same one); a put
/// that must not overwrite fails with [`ErrorKind::AlreadyExists`]; the history keeps the last
/// 100 versions, oldest first. It holds the release record and the deploy lock.
pub trait ParameterStore {
    fn get_parameter(&self, name: &ParameterName) -> impl Future<Output = Result<Option<Parameter>>>;
    /// Writes a new version; returns its number.
    fn put_parameter(&self, name: &ParameterName, value: &str, overwrite: bool) -> impl Future<Output = Result<i64>>;
    fn parameter_history(&self, name: &ParameterName) -> impl Future<Output = Result<Vec<Parameter>>>;
    fn delete_parameter(&self, name: &ParameterName) -> impl Future<Output = Result<()>>;
}

/// Which instances a command goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandTargets {
    /// Every managed instance with these tags, resolved by SSM when it sends.
    Tags(Vec<TagFilter>),
    /// These instances (at most [`IDS_PER_COMMAND`]).
    Ids(Vec<InstanceId>),
}

/// SendCommand takes at most 50 instance ids.
pub const IDS_PER_COMMAND: usize = 50;

/// One Run Command (`AWS-RunShellScript`) to send.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    pub targets: CommandTargets,
    pub script: String,
    pub max_concurrency: Limit,
    pub max_errors: Limit,
    /// Seconds the script may run on one instance (the document's executionTimeout).
    pub execution_timeout: u32,
    /// Seconds SSM keeps trying to deliver to an instance (SendCommand's TimeoutSeconds).
    pub delivery_timeout: u32,
    pub comment: String,
}

/// SSM Run Command and the managed-instance inventory.
pub trait RunCommand {
    /// Managed instances whose tags match every filter, sorted by id.
    fn find_instances(&self, tags: &[TagFilter]) -> impl Future<Output = Result<Vec<ManagedInstance>>>;
    fn send_command(&self, request: &CommandRequest) -> impl Future<Output = Result<CommandId>>;
    /// The command's state and every invocation so far.
    fn command_progress(&self, id: &CommandId) -> impl Future<Output = Result<(CommandState, Vec<Invocation>)>>;
    /// An instance's full output.
    fn invocation_output(
        &self,
        id: &CommandId,
        instance: &InstanceId,
    ) -> impl Future<Output = Result<InvocationOutput>>;
    /// Cancels the command on these instances (all of them with `None`).
    fn cancel_command(&self, id: &CommandId, instances: Option<&[InstanceId]>) -> impl Future<Output = Result<()>>;
}

/// A target's state in one target group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy(String),
    Draining,
    /// Not registered (or deregistration finished).
    Unused,
    Unavailable,
    Other(String),
}

impl TargetState {
    pub fn describe(&self) -> String {
        match self {
            TargetState::Initial => "initial".into(),
            TargetState::Healthy => "healthy".into(),
            TargetState::Unhealthy(why) => format!("unhealthy ({why})"),
            TargetState::Draining => "draining".into(),
            TargetState::Unused => "unused".into(),
            TargetState::Unavailable => "unavailable".into(),
            TargetState::Other(s) => s.clone(),
        }
    }
}

/// How a target group treats a target (for the waits' limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupTimings {
    /// The deregistration delay: how long draining may take.
    pub deregistration_delay: Duration,
    /// Interval × healthy threshold + one timeout: how long a registered target may take to
    /// pass its checks.
    pub time_to_healthy: Duration,
}

/// ELBv2 target groups.
pub trait LoadBalancer {
    /// The groups of `groups` that do not exist.
    fn missing_target_groups(&self, groups: &[TargetGroupArn]) -> impl Future<Output = Result<Vec<TargetGroupArn>>>;
    /// The slowest timings among `groups`.
    fn group_timings(&self, groups: &[TargetGroupArn]) -> impl Future<Output = Result<GroupTimings>>;
    fn deregister(&self, groups: &[TargetGroupArn], ids: &[InstanceId]) -> impl Future<Output = Result<()>>;
    fn register(&self, groups: &[TargetGroupArn], ids: &[InstanceId]) -> impl Future<Output = Result<()>>;
    /// Each (group, instance, state) for `ids`.
    fn target_states(
        &self,
        groups: &[TargetGroupArn],
        ids: &[InstanceId],
    ) -> impl Future<Output = Result<Vec<(TargetGroupArn, InstanceId, TargetState)>>>;
}

/// Where to push and how to log in.
#[derive(Debug, Clone)]
pub struct RegistryAuth {
    pub host: RegistryHost,
    pub username: String,
    pub password: Secret,
}

/// ECR.
pub trait Registry {
    fn registry_auth(&self) -> impl Future<Output = Result<RegistryAuth>>;
    fn repository_exists(&self, repository: &Repository) -> impl Future<Output = Result<bool>>;
    /// The digest `tag` points at, or `None` when the repository has no such tag.
    fn digest_of(&self, repository: &Repository, tag: &ImageTag) -> impl Future<Output = Result<Option<Digest>>>;
    fn has_digest(&self, repository: &Repository, digest: &Digest) -> impl Future<Output = Result<bool>>;
    /// The most recently pushed tag: the layer cache for the next build.
    fn latest_tag(&self, repository: &Repository) -> impl Future<Output = Result<Option<ImageTag>>>;
}

/// Secrets Manager, asked only whether a secret exists: its value is read on the instances.
pub trait Secrets {
    /// The secret's ARN, or `None` when there is no such secret.
    fn secret_arn(&self, id: &SecretId) -> impl Future<Output = Result<Option<String>>>;
}

/// CloudWatch alarms, read only.
pub trait Alarms {
    /// Every alarm that one of `selectors` names or prefixes (each once).
    fn alarms(
        &self,
        selectors: &[crate::model::AlarmSelector],
    ) -> impl Future<Output = Result<Vec<crate::model::AlarmStatus>>>;
}

/// Time: the real clock, or the fake world's, which moves only when someone sleeps.
pub trait Clock {
    fn now(&self) -> SystemTime;
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()>;
}

/// Writes a parameter, asking again (after 0.25, 0.5, 1, 2 and 4 s) while Parameter Store refuses
/// the write ([`ServiceError::write_refused`]: nothing was written); any other error at once.
pub async fn put_parameter_patiently(
    world: &(impl ParameterStore + Clock),
    name: &ParameterName,
    value: &str,
    overwrite: bool,
) -> Result<i64> {
    let mut pause = Duration::from_millis(250);
    loop {
        match world.put_parameter(name, value, overwrite).await {
            Err(e) if e.write_refused() && pause <= Duration::from_secs(4) => {
                world.sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
}

/// Seconds since the epoch.
pub fn epoch_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What to build: the build context, Dockerfile, build arguments and stage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuildSpec {
    pub context: PathBuf,
    pub dockerfile: Option<PathBuf>,
    pub args: Vec<EnvVar>,
    pub target: Option<String>,
    /// `linux/arm64` for Graviton instances; the builder's own platform when not given.
    pub platform: Option<crate::model::Platform>,
    /// BuildKit secrets (`RUN --mount=type=secret,id=…`).
    pub secrets: Vec<crate::model::BuildSecret>,
    /// The stages the image copies from, each cached as an image of its own.
    pub stage_cache: crate::model::StageCache,
}

/// One build and push.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    pub spec: &'a BuildSpec,
    /// What relative paths in `spec` are relative to.
    pub workdir: &'a Path,
    /// `registry/repository:tag`
    pub image: &'a str,
    /// An image to take the layer cache from.
    pub cache_from: Option<&'a str>,
    /// The stages built and pushed beside the image, each as its own layer cache.
    pub stage_caches: Vec<StageImage>,
    /// The registry to log in to (the deploy's, which may not be the token's own host).
    pub registry: &'a RegistryHost,
    pub auth: &'a RegistryAuth,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{step}: {message}")]
pub struct BuildError {
    pub step: &'static str,
    pub message: String,
}

/// One copy of a public image into the deploy's registry.
#[derive(Debug, Clone)]
pub struct CopyRequest<'a> {
    /// Where the image is now, as `docker pull` names it.
    pub from: &'a str,
    /// `registry/repository:tag`
    pub to: &'a str,
    pub registry: &'a RegistryHost,
    pub auth: &'a RegistryAuth,
}

/// A stage of the Dockerfile kept as an image: `registry/repository:ec2-deploy-cache-<stage>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageImage {
    pub stage: String,
    pub image: String,
}

/// What a build and push made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The digest the registry stored the image under.
    pub digest: Digest,
    /// What went wrong without failing the build (a stage's cache that was not pushed).
    pub warnings: Vec<String>,
}

/// Builds an image and pushes it (BuildKit through the docker CLI).
pub trait ImageBuilder {
    /// Copies an image into the deploy's registry; returns the digest stored there.
    fn copy_image(&self, request: &CopyRequest<'_>) -> impl Future<Output = std::result::Result<Digest, BuildError>>;
    /// Builds the stages to cache and the image, then pushes the image and the stages.
    fn build_and_push(
        &self,
        request: &BuildRequest<'_>,
    ) -> impl Future<Output = std::result::Result<Built, BuildError>>;
}

/// The state of a GitHub deployment status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    InProgress,
    Success,
    Failure,
    Error,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::InProgress => "in_progress",
            DeploymentState::Success => "success",
            DeploymentState::Failure => "failure",
            DeploymentState::Error => "error",
        }
    }
}

/// How `head` relates to `base` in GitHub's compare API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    Ahead,
    Behind,
    Identical,
    Diverged,
    Other(String),
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {message}")]
pub struct GitHubError {
    pub what: String,
    pub message: String,
}

/// GitHub's REST API: Deployments and their statuses, and commit comparison for the run-order
/// guard. A reporting channel: a failure here becomes a notice, never a failed deploy.
pub trait GitHub {
    fn create_deployment(
        &self,
        sha: &str,
        environment: &EnvironmentName,
        description: &str,
        payload: serde_json::Value,
    ) -> impl Future<Output = std::result::Result<u64, GitHubError>>;
    fn set_deployment_status(
        &self,
        id: u64,
        state: DeploymentState,
        description: &str,
        log_url: Option<&str>,
        environment_url: Option<&str>,
    ) -> impl Future<Output = std::result::Result<(), GitHubError>>;
    fn compare(&self, base: &str, head: &str) -> impl Future<Output = std::result::Result<Comparison, GitHubError>>;
    /// The deployment GitHub made for this job (a job with `environment:` gets one): a deployment
    /// of `sha` to `environment` with a status that links to the run at `run_url`.
    fn find_job_deployment(
        &self,
        sha: &str,
        environment: &EnvironmentName,
        run_url: &str,
    ) -> impl Future<Output = std::result::Result<Option<u64>, GitHubError>>;
}

/// Which GitHub deployment a run reports to (input `github-deployment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentMode {
    /// The job's own deployment when the job has one, else a new one.
    Auto,
    /// Always a new deployment (a job without `environment:`, or one per step on purpose).
    Create,
    /// None.
    Off,
}

/// Everything a deploy talks to. The AWS adapters with GitHub and the docker CLI make one world,
/// `crate::fake::World` the other.
pub trait World:
    ParameterStore + RunCommand + LoadBalancer + Registry + Secrets + Alarms + ImageBuilder + Clock
{
    type GitHub: GitHub;
    /// GitHub, when there is a token and a repository to talk about.
    fn github(&self) -> Option<&Self::GitHub>;
    /// The AWS region the adapters talk to.
    fn region(&self) -> &crate::model::Region;
}
