//! Inputs: the action's inputs, the CLI's flags and the YAML config become one typed
//! [`DeployRequest`].
//!
//! Raw values are strings looked up through a function (the runner's `INPUT_*` environment, or
//! the CLI's flags), so tests never touch the process environment. [`resolve`] overlays them
//! (explicit input > the config file's environment block > its `defaults` block > built-in
//! default) and parses each into the [model](crate::model)'s types. Validation collects every
//! problem at once and each message names the input (or config path) and what is expected,
//! because a deploy that fails one typo at a time is a slow deploy. Nothing here talks to AWS:
//! local files the deploy needs (config, build context, Dockerfile) are checked here too, so bad
//! input never reaches a service.
//!
//! [`INPUTS`] is the one table that drives the CLI's flags, the config file's keys, `action.yml`
//! and the README (a contract test keeps them in step).

pub mod config;
mod resolve;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use resolve::{default_container_name, default_release_parameter, resolve};

use crate::model::{
    ContainerSpec, Digest, EnvironmentName, ImageName, ImageTag, Limit, ParameterName, Region, RegistryHost,
    Repository, Secret, TagFilter, TargetGroupArn,
};
use crate::ports::BuildSpec;

/// One input of the action (and flag of the CLI). `action.yml` must describe the same set; a
/// test checks that they agree.
#[derive(Debug, Clone, Copy)]
pub struct InputSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub default: Option<&'static str>,
    /// One item per line (`targets`, `ports`, …); the CLI takes the flag repeatedly.
    pub multiline: bool,
    /// May be set in the YAML config file.
    pub in_config: bool,
    /// An old name kept working: the input that replaces it (a deprecation warning names it).
    pub replaced_by: Option<&'static str>,
}

const fn input(name: &'static str, description: &'static str) -> InputSpec {
    InputSpec { name, description, default: None, multiline: false, in_config: true, replaced_by: None }
}
const fn lines(name: &'static str, description: &'static str) -> InputSpec {
    InputSpec { name, description, default: None, multiline: true, in_config: true, replaced_by: None }
}
const fn deprecated(mut spec: InputSpec, replaced_by: &'static str) -> InputSpec {
    spec.replaced_by = Some(replaced_by);
    spec
}
const fn with_default(mut spec: InputSpec, default: &'static str) -> InputSpec {
    spec.default = Some(default);
    spec
}
const fn not_in_config(mut spec: InputSpec) -> InputSpec {
    spec.in_config = false;
    spec
}

pub const DEFAULT_CONFIG: &str = ".github/ec2-deploy.yml";

/// Every input, in the order the README and `action.yml` list them, in the README's groups.
pub const INPUTS: &[InputSpec] = &[
    // Where: the service, its registry, its instances
    not_in_config(input("environment", "Deployment environment (e.g. production); selects a block of the config file and names the GitHub deployment.")),
    not_in_config(input("config", "YAML config with per-environment values for any input below. Default: .github/ec2-deploy.yml when it exists.")),
    not_in_config(input("service", "Which of the config file's `services` to deploy (names, comma-separated), in the file's order. Default: every service the environment lists (each with its own container, record and lock), or the one service described by the inputs when it lists none.")),
    input("aws-region", "AWS region. Default: AWS_REGION or AWS_DEFAULT_REGION. Also in the config file."),
    input("ecr-repository", "ECR repository name, e.g. my-service. Required, as this input or in the config file."),
    input("registry", "ECR registry host (<account>.dkr.ecr.<region>.amazonaws.com) to push to and pull from; another region's works. Default: the ECR registry of the account and region. Also in the config file."),
    lines("targets", "Instances to deploy to, by tag: one Key=Value[,Value...] per line; lines are ANDed, values ORed. Required, as this input or in the config file."),
    // Build
    input("image-tag", "Image tag to build and deploy. Default: the commit SHA. Also in the config file."),
    input("image-digest", "Deploy this image digest (sha256:...) of the repository instead of a tag; nothing is built. Also in the config file."),
    with_default(input("build", "true: build and push the image unless the tag is already in the registry; false: deploy an existing tag. Default: true. Also in the config file."), "true"),
    with_default(input("context", "Docker build context. Default: .. Also in the config file."), "."),
    input("file", "Dockerfile path, as docker/build-push-action names it. Default: Dockerfile in the context. Also in the config file."),
    lines("build-args", "Build arguments, one KEY=VALUE per line (not for secrets). Also in the config file."),
    lines("build-secrets", "BuildKit secrets for RUN --mount=type=secret, one per line: id=ID,env=VARIABLE (a variable of the step's env) or id=ID,src=PATH (a workspace file); never a build argument, a layer or a log line. Also in the config file."),
    input("target", "Build stage to build (docker build --target). Also in the config file."),
    input("platform", "Platform to build the image for, e.g. linux/arm64 for Graviton instances (docker build --platform; without emulation on the runner, a Dockerfile whose RUN steps run on the target needs docker/setup-qemu-action first). Default: the runner's. Also in the config file."),
    // Container
    input("container-name", "Name of the container on each instance. Default: the repository name (its last component); a service's (see `service`): the service's name. Also in the config file."),
    lines("ports", "Published ports, one host:container per line. With `proxy`, the first is held by the instance's proxy; the others are published by the container. Also in the config file."),
    lines("env", "Plain environment variables for the container, one KEY=VALUE per line (not for secrets). Also in the config file."),
    input("secret-id", "Secrets Manager secret (name or ARN), or `ssm:/NAME`, a Parameter Store parameter (SecureString or String), holding a flat JSON object; each key becomes an environment variable, fetched on the instance with its role (and its KMS key's kms:Decrypt). Also in the config file."),
    input("health-check-path", "HTTP path checked on the first of `ports` before a new container counts as healthy (with `proxy`, on the new container itself, before the proxy sends it anything). Default: the image's HEALTHCHECK, else running. Also in the config file."),
    with_default(input("health-check-timeout", "Seconds a new container has to become healthy before the previous one is put back. Default: 60. Also in the config file."), "60"),
    input("command", "Command for the container, replacing the image's CMD: one line, split into words as a shell would (quotes respected) and never run by a shell. Also in the config file."),
    lines("volumes", "Volumes, one source:/path[:ro] per line: an absolute host path or a named volume, mounted at an absolute path in the container. Also in the config file."),
    input("memory", "Memory limit of the container: a whole number with a unit, b, k, m or g (e.g. 512m). Default: none. Also in the config file."),
    input("cpus", "CPUs the container may use, e.g. 0.5 or 2. Default: no limit. Also in the config file."),
    input("log-driver", "Docker logging driver of the container (json-file, local, journald, syslog, awslogs, gelf, fluentd, splunk, gcplogs, etwlogs or none). Default: the instance's Docker default. Also in the config file."),
    lines("log-options", "Options of `log-driver`, one key=value per line (e.g. awslogs-group=/shop); not for secrets (they travel in the SSM command). Default, with neither `log-driver` nor `log-options` given and the engine's default driver json-file: max-size=10m and max-file=3, so logs rotate instead of filling the disk. Also in the config file."),
    lines("labels", "Labels of the container, one key=value per line (ec2-deploy.* are ec2-deploy's own). Also in the config file."),
    input("user", "User the container runs as: a name or uid, optionally :group or :gid (e.g. 1000:1000). Default: the image's USER. Also in the config file."),
    input("pre-deploy", "A one-off command of the new release (e.g. a database migration), run before any instance is switched: in a container of the new image with the new environment and secret, on one instance of the deploy; non-zero exit: nothing is switched. Split into words like `command`. Not run by rollbacks, Auto Scaling boots or a redeploy of the live release. Also in the config file."),
    input("pre-deploy-target", "Instance id to run `pre-deploy` on. Default: the canary (the first batch's instance), else the first instance of the plan. Also in the config file."),
    with_default(input("pre-deploy-timeout", "Seconds `pre-deploy` may run before it is stopped (and the deploy fails); less than `command-timeout`. Default: 300. Also in the config file."), "300"),
    // Proxy
    with_default(input("proxy", "true: a proxy on each instance (Caddy) holds the first of `ports` and switches it to a new container only once that one is healthy, so no request is dropped, with or without a load balancer; false: the container publishes its ports itself (each instance is briefly dark during its swap). Default: true. Also in the config file."), "true"),
    input("proxy-image", "Image of the per-instance proxy: Caddy 2.11 or later (the version tested); the action copies it into the deploy's ECR repository, where instances pull it. Default: caddy:2.11.7-alpine, pinned by digest. Also in the config file."),
    with_default(lines("proxy-trusted", "With `proxy`: the hops in front of the instance (a load balancer) whose X-Forwarded-For, -Proto and -Host the proxy passes on to the app, so it sees the client's address and the original scheme and host: `private` (the private and loopback address ranges, where a load balancer in the VPC connects from), addresses or CIDR ranges one per line, or `none` (the app sees the proxy's own view: the peer's address, http). Default: private. Also in the config file."), "private"),
    with_default(input("drain-timeout", "With `proxy`: seconds the previous container keeps the connections it has at the switch (WebSockets, event streams, long requests and uploads) before it stops; new requests go to the new container at once, and the previous one stops as soon as its last connection closes. Default: 30. Also in the config file."), "30"),
    lines("proxy-hosts", "With `proxy`: host names the proxy serves over HTTPS on port 443, one per line (app.example.com; each must resolve to the instance), with certificates it obtains and renews from `proxy-acme-ca` by itself, kept in a Docker volume on the instance that outlives deploys and proxy changes; plain HTTP on the proxied port (80 for the CA's HTTP challenge) redirects to HTTPS. Default: none (plain HTTP only). Also in the config file."),
    input("proxy-acme-email", "With `proxy-hosts`: the email address the ACME CA writes to about the certificates (expiry, revocation). Also in the config file."),
    with_default(input("proxy-acme-ca", "With `proxy-hosts`: the ACME CA that issues the certificates: `letsencrypt`, `letsencrypt-staging` (untrusted certificates, for a try without Let's Encrypt's rate limits) or an ACME directory URL (https://…). Default: letsencrypt. Also in the config file."), "letsencrypt"),
    input("proxy-acme-ca-root", "With `proxy-hosts`: PEM certificates the proxy trusts when it talks to a private ACME CA (step-ca, pebble) whose TLS certificate is not publicly trusted. Also in the config file."),
    // Rollout
    with_default(input("max-concurrency", "Without target-groups: instances updated at once, a number of instances or a percentage of them (SSM MaxConcurrency). Default: 50%. Also in the config file."), "50%"),
    with_default(input("pull-concurrency", "Instances that pull the release's image (and the proxy's) at once, before the first batch switches, when the rollout has more than one batch or wave of instances: a number of instances or a percentage of them. A pull that fails stops the run with no instance switched. Default: 10. Also in the config file."), "10"),
    with_default(input("boot-wait", "Instances that join the targets during a deploy (an Auto Scaling launch) get the release too (the catch-up); one still booting (no Docker yet, or its boot's own deploy holds the lock) is sent it again every 10 s, for up to this many seconds. Default: 300. Also in the config file."), "300"),
    with_default(input("max-errors", "Without target-groups: failed instances tolerated, a number of instances or a percentage of them (SSM MaxErrors); past it the switched instances are rolled back. Default: 0. Also in the config file."), "0"),
    with_default(input("on-offline", "Instances whose SSM agent is not connected: fail (stop before changing anything) or skip (deploy to the others and name them). Default: fail. Also in the config file."), "fail"),
    lines("target-groups", "ELBv2 target group ARNs, one per line: deploy in batches, each healthy in them before the next batch (and drained from them before its swap, unless the proxy keeps it serving). Also in the config file."),
    with_default(input("batch-size", "With target-groups: instances per batch after the canary, a number of instances or a percentage of them. Default: 25%. Also in the config file."), "25%"),
    with_default(input("canary", "With target-groups: true to deploy to one instance first, as its own batch. Default: true. Also in the config file."), "true"),
    with_default(input("command-timeout", "Seconds the on-instance script may run on each instance (SSM's execution timeout; not a limit for the whole step). Default: 600. Also in the config file."), "600"),
    // Safety
    lines("alarms", "CloudWatch alarms to watch, one per line: a name, or a name prefix ending in *. The plan shows their states and refuses to start while one is in ALARM; after each batch (and after a deploy by tags) the run holds `bake-time` while it watches them, and an ALARM rolls back every switched instance and fails the run. Also in the config file."),
    with_default(input("bake-time", "Seconds to hold after each batch while `alarms` are watched (0: look once). Default: 0. Also in the config file."), "0"),
    with_default(input("ignore-alarms-at-start", "true: start even while some of `alarms` are in ALARM; those are named and not watched. Default: false. Also in the config file."), "false"),
    with_default(input("lock-timeout", "Seconds to wait while another deploy of the same environment holds its lock, before failing (0: fail at once). Default: 600. Also in the config file."), "600"),
    input("release-parameter", "SSM parameter holding the environment's release record (history = its versions). Default: /ec2-deploy/<environment>/<container-name>; a record under the earlier default, /ec2-deploy/<environment>/<ecr-repository>, of the same container is used where it is. Also in the config file."),
    not_in_config(with_default(input("dry-run", "true: print the plan and change nothing."), "false")),
    // Operations (instead of a deploy)
    not_in_config(with_default(input("operation", "What the step does: deploy (build when needed, then roll out), rollback, converge, or a command that deploys no release: releases, status, logs, exec or maintenance (the CLI's commands of those names; their output goes to the log and the job summary). `rollback: true` and `converge: true` still work. Default: deploy."), "deploy")),
    not_in_config(input("operation-args", "The arguments of releases, status, logs, exec or maintenance, as on the command line, split into words like `command`: e.g. `--lines 500 --grep ERROR` (logs), `--instance web-1 -- bin/rails db:migrate` (exec), `on --message 'Back soon'` (maintenance), `--fail-on-drift` (status). `logs --follow` needs a terminal: not here.")),
    not_in_config(with_default(input("rollback", "true: redeploy the latest earlier release that runs something else (image or settings) and that no rollback has left, from the release record, without building."), "false")),
    not_in_config(input("rollback-to", "A version of the release record to roll back to (the versions `ec2-deploy status` lists), instead of the one before the live release: any version but the live one whose image is still in its repository; implies `rollback`.")),
    not_in_config(with_default(input("converge", "true: redeploy the live release, from the release record and without building, to the instances with `targets` that run something else (drifted: another release, other settings, a stopped or missing container, the secret's values changed); the others are not touched and the record gets no new version. `ec2-deploy status` lists the drifted ones."), "false")),
    // GitHub
    input("environment-url", "URL of the deployed service, shown on the GitHub deployment. Also in the config file."),
    with_default(input("github-deployment", "Which GitHub deployment the run reports to: auto (the job's own when the job sets `environment:`, so a run makes one; else a new one), create (always a new one), or off. Default: auto. Also in the config file."), "auto"),
    not_in_config(input("github-token", "Token for GitHub Deployments. Default: the workflow's token.")),
    // Old names, still read
    deprecated(input("timeout", "Deprecated: the old name of `command-timeout`, still read (with a warning)."), "command-timeout"),
    deprecated(input("dockerfile", "Deprecated: the old name of `file`, still read (with a warning)."), "file"),
];

/// The values of input `operation`: the three that deploy a release, then the CLI's commands
/// that deploy none (see [`OPERATE`]).
pub const OPERATIONS: [&str; 8] =
    ["deploy", "rollback", "converge", "releases", "status", "logs", "exec", "maintenance"];
/// The operations that run one of the CLI's operating commands instead of a deploy.
pub const OPERATE: [&str; 5] = ["releases", "status", "logs", "exec", "maintenance"];

pub fn spec(name: &str) -> Option<&'static InputSpec> {
    INPUTS.iter().find(|s| s.name == name)
}

/// Input values as given (empty means not given), before any validation.
#[derive(Debug, Clone, Default)]
pub struct RawInputs {
    values: BTreeMap<&'static str, String>,
}

impl RawInputs {
    /// Reads each input through `lookup(name)`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let values = INPUTS
            .iter()
            .filter_map(|s| lookup(s.name).filter(|v| !v.trim().is_empty()).map(|v| (s.name, v)))
            .collect();
        RawInputs { values }
    }

    /// The runner passes input `aws-region` as `INPUT_AWS-REGION`: upper-cased, hyphens kept,
    /// spaces turned into underscores.
    pub fn from_action_env(env: impl Fn(&str) -> Option<String>) -> Self {
        Self::from_lookup(|name| env(&action_env_name(name)))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn set(&mut self, name: &'static str, value: impl Into<String>) {
        self.values.insert(name, value.into());
    }
}

pub fn action_env_name(input: &str) -> String {
    format!("INPUT_{}", input.replace(' ', "_").to_uppercase())
}

/// One problem with one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub what: String,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.message)
    }
}

/// Everything a deploy needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    pub environment: Option<EnvironmentName>,
    pub region: Option<Region>,
    pub repository: Repository,
    pub registry: Option<RegistryHost>,
    pub image_tag: ImageTag,
    pub image_digest: Option<Digest>,
    pub build: bool,
    pub build_spec: BuildSpec,
    pub targets: Vec<TagFilter>,
    pub container: ContainerSpec,
    pub max_concurrency: Limit,
    pub max_errors: Limit,
    /// Instances that pull the image at once before the first batch (see `plan::Plan::pull_first`).
    pub pull_concurrency: Limit,
    /// Seconds a joined instance that is still booting is waited for (see `plan::Plan::boot_wait`).
    pub boot_wait: u32,
    pub target_groups: Vec<TargetGroupArn>,
    /// Skip instances whose agent is not connected (instead of stopping the plan).
    pub skip_offline: bool,
    pub batch_size: Limit,
    pub canary: bool,
    /// Seconds the on-instance script may run on each instance.
    pub timeout: u32,
    pub release_parameter: ParameterName,
    /// Where the record's default was before it was per container
    /// (`/ec2-deploy/<environment>/<ecr-repository>`), when the record is defaulted and that
    /// differs: a record found there, of this container, is read and written in place.
    pub legacy_release_parameter: Option<ParameterName>,
    /// The config file's service this request deploys, when it lists `services`.
    pub service: Option<String>,
    pub rollback: bool,
    /// With `rollback`: the record's version to go back to (default: the one before the live one).
    pub rollback_to: Option<i64>,
    /// Redeploy the live release to the drifted instances only.
    pub converge: bool,
    pub lock_timeout: u32,
    pub environment_url: Option<String>,
    pub github_deployment: crate::ports::DeploymentMode,
    /// The commit being deployed (GITHUB_SHA), recorded with the release.
    pub commit: Option<String>,
    pub dry_run: bool,
    pub github_token: Option<Secret>,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// The per-instance proxy's image (when `container.proxy`).
    pub proxy_image: ImageName,
    /// CloudWatch alarms watched while the release bakes.
    pub alarms: Vec<crate::model::AlarmSelector>,
    /// Seconds held after each batch while the alarms are watched.
    pub bake_time: u32,
    /// Start even while watched alarms are in ALARM (those are then not watched).
    pub ignore_alarms_at_start: bool,
    /// The one-off command to run before any instance is switched.
    pub pre_deploy: Option<PreDeploy>,
    /// Things to fix that do not stop the deploy (a deprecated input name, …), printed as warnings.
    pub warnings: Vec<String>,
}

/// `pre-deploy`: what to run, where, for how long at most.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PreDeploy {
    pub command: Vec<String>,
    pub target: Option<crate::model::InstanceId>,
    pub timeout: u32,
}

/// What the run's environment says beyond the inputs (`GITHUB_SHA`, `AWS_REGION`, …), read
/// through a lookup like the inputs.
pub struct RunContext<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Directory relative paths (config, context) are taken from.
    pub workdir: PathBuf,
}

impl RunContext<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }
}

/// The local files resolving looks at: the config file, the build context and the Dockerfile.
pub trait Files {
    fn read(&self, path: &Path) -> std::io::Result<String>;
    fn is_dir(&self, path: &Path) -> bool;
    fn is_file(&self, path: &Path) -> bool;
}

/// The real file system.
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }
}
