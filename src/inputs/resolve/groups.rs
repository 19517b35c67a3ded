//! The inputs by group (the image, the targets, the container, the rollout, pre-deploy, the
//! alarms, the report), each read and checked on its own; [`super::resolve_service`] puts the
//! groups together into one request.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{
    default_container_name, default_release_parameter, parse_bool, parse_build_target, parse_seconds, parse_url,
    Origin, Resolver,
};
use crate::inputs::{Files, InputError, PreDeploy, RunContext};
use crate::model::{
    parse_command, stage_cache, BuildSecret, ContainerName, ContainerSpec, Cpus, Digest, EnvVar, EnvironmentName,
    HealthPath, ImageName, ImageTag, InstanceId, IpRange, KeyValue, Limit, LogDriver, Memory, ParameterName, Platform,
    PortMapping, ProxyHttps, Region, RegistryHost, Repository, RunOptions, SecretId, SecretSource, StageCache,
    TagFilter, TargetGroupArn, User, Volume, DEFAULT_DRAIN_TIMEOUT, DEFAULT_PROXY_IMAGE,
};
use crate::ports::{BuildSpec, DeploymentMode};

mod proxy;
use proxy::{proxy_https, proxy_trusted};

/// Inputs that cannot go together: a rollback or a converge deploys a recorded release, not a
/// digest; and not both at once.
pub(super) fn mode_conflicts(r: &mut Resolver, image: &ImageInputs, rollout: &RolloutInputs) {
    if rollout.rollback && image.digest.is_some() {
        r.missing("rollback", "cannot go with `image-digest`: a rollback deploys the previous recorded release");
    }
    if rollout.converge && image.digest.is_some() {
        r.missing("converge", "cannot go with `image-digest`: a converge deploys the live recorded release");
    }
    if rollout.converge && rollout.rollback {
        r.missing("converge", "cannot go with `rollback`: a converge redeploys the live release, a rollback the one before it; run one, then the other");
    }
}

/// `pre-deploy` with where and how long it runs (within `command-timeout`, `timeout`).
pub(super) fn pre_deploy_inputs(r: &mut Resolver, timeout: u32) -> Option<PreDeploy> {
    // Each parsed whether or not `pre-deploy` is given: a bad value is an error either way.
    let pre_deploy_target = r.parse("pre-deploy-target", InstanceId::parse);
    let pre_deploy_timeout = r.parse("pre-deploy-timeout", parse_seconds(1, 172_800)).unwrap_or(300);
    let pre_deploy = r.parse("pre-deploy", parse_command).map(|command| PreDeploy {
        command,
        target: pre_deploy_target.clone(),
        timeout: pre_deploy_timeout,
    });
    if pre_deploy_target.is_some() && r.get("pre-deploy").is_none() {
        if let Some(v) = r.get("pre-deploy-target") {
            r.error(&v.origin, "needs `pre-deploy`: it says where that command runs");
        }
    }
    if let Some(p) = pre_deploy.as_ref().filter(|p| p.timeout >= timeout) {
        let origin = r.get("pre-deploy-timeout").map(|v| v.origin).unwrap_or(Origin::Default("pre-deploy-timeout"));
        r.error(
            &origin,
            format!("{}s does not fit in `command-timeout` ({timeout}s), which bounds the whole script", p.timeout),
        );
    }
    pre_deploy
}

/// The alarms watched while a release bakes.
pub(super) struct WatchInputs {
    pub(super) alarms: Vec<crate::model::AlarmSelector>,
    pub(super) bake_time: u32,
    pub(super) ignore_alarms_at_start: bool,
}

pub(super) fn watch_inputs(r: &mut Resolver) -> WatchInputs {
    let alarms = r.parse_lines("alarms", crate::model::AlarmSelector::parse);
    let bake_time = r.parse("bake-time", parse_seconds(0, 3600)).unwrap_or(0);
    let ignore_alarms_at_start = r.parse("ignore-alarms-at-start", parse_bool).unwrap_or(false);
    if alarms.is_empty() {
        for name in ["bake-time", "ignore-alarms-at-start"] {
            if let Some(v) = r.get(name).filter(|v| !matches!(v.origin, Origin::Default(_))) {
                r.error(&v.origin, "needs `alarms`: it is about the alarms watched while the release bakes");
            }
        }
    }
    WatchInputs { alarms, bake_time, ignore_alarms_at_start }
}

/// Where the run is reported: the GitHub deployment and the environment's URL.
pub(super) struct ReportInputs {
    pub(super) environment_url: Option<String>,
    pub(super) github_deployment: DeploymentMode,
}

pub(super) fn report_inputs(r: &mut Resolver) -> ReportInputs {
    let environment_url = r.parse("environment-url", parse_url);
    let github_deployment = r
        .parse("github-deployment", |t| match t {
            "auto" => Ok(DeploymentMode::Auto),
            "create" => Ok(DeploymentMode::Create),
            "off" => Ok(DeploymentMode::Off),
            _ => Err(format!("expected auto, create or off, got {t:?}")),
        })
        .unwrap_or(DeploymentMode::Auto);
    ReportInputs { environment_url, github_deployment }
}

/// The build's context, Dockerfile and file secrets exist in the workspace.
pub(super) fn check_build_inputs(
    r: &mut Resolver,
    ctx: &RunContext,
    files: &dyn Files,
    image: &ImageInputs,
) -> StageCache {
    let dockerfile = check_build_files(r, ctx, files, &image.context, &image.dockerfile);
    for secret in &image.build_secrets {
        if let SecretSource::File { path } = &secret.source {
            if !files.is_file(&ctx.workdir.join(path)) {
                r.missing(
                    "build-secrets",
                    &format!("{}: {} is not a file in the workspace", secret.id, path.display()),
                );
            }
        }
    }
    let Some((path, shown)) = dockerfile else { return StageCache::default() };
    let text = match files.read(&path) {
        Ok(text) => text,
        Err(e) => {
            return StageCache {
                stages: vec![],
                notes: vec![format!("{shown} could not be read ({e}): only the built stage's layers are cached")],
            }
        }
    };
    match stage_cache(&text, image.target.as_deref()) {
        Ok(cache) => cache,
        Err(e) => {
            let origin = r.get("target").map(|v| v.origin).unwrap_or(Origin::Input("target"));
            r.error(&origin, format!("{e} ({shown}); give one of them, or leave `target` out to build the last stage"));
            StageCache::default()
        }
    }
}

/// `release-parameter`, or the default (per container), with the default from before it was per
/// container (per repository) when that differs: a record there is read and moved.
pub(super) fn release_parameters(
    environment: Option<&EnvironmentName>,
    given: Option<ParameterName>,
    container_name: &ContainerName,
    repository: &Repository,
) -> Result<(ParameterName, Option<ParameterName>), Vec<InputError>> {
    if let Some(p) = given {
        return Ok((p, None));
    }
    let default_parameter = |name: &str| {
        ParameterName::parse(&default_release_parameter(environment, name)).map_err(|e| {
            vec![InputError {
                what: "input `release-parameter`".into(),
                message: format!("the default does not fit SSM: {e}"),
            }]
        })
    };
    let per_container = default_parameter(container_name.as_str())?;
    let before = default_parameter(repository.as_str()).ok().filter(|p| *p != per_container);
    Ok((per_container, before))
}

/// The image: where it lives, which one, and how to build it.
pub(super) struct ImageInputs {
    pub(super) region: Option<Region>,
    pub(super) repository: Option<Repository>,
    pub(super) registry: Option<RegistryHost>,
    pub(super) tag: Option<ImageTag>,
    pub(super) digest: Option<Digest>,
    pub(super) build: bool,
    pub(super) context: Option<(PathBuf, Origin)>,
    pub(super) dockerfile: Option<(PathBuf, Origin)>,
    pub(super) build_args: Vec<EnvVar>,
    pub(super) target: Option<String>,
    pub(super) platform: Option<Platform>,
    pub(super) build_secrets: Vec<BuildSecret>,
}

impl ImageInputs {
    pub(super) fn build_spec(&self) -> BuildSpec {
        BuildSpec {
            context: self.context.as_ref().map(|(c, _)| c.clone()).unwrap_or_else(|| PathBuf::from(".")),
            dockerfile: self.dockerfile.as_ref().map(|(d, _)| d.clone()),
            args: self.build_args.clone(),
            target: self.target.clone(),
            platform: self.platform.clone(),
            secrets: self.build_secrets.clone(),
            stage_cache: Default::default(),
        }
    }
}

/// The request's tag when a rollback or a converge is given none: never deployed or shown (the
/// plan takes the recorded release's own tag).
pub(super) const FROM_THE_RECORD: &str = "from-the-release-record";

pub(super) fn image_inputs(r: &mut Resolver, ctx: &RunContext) -> ImageInputs {
    let region = match r.parse("aws-region", Region::parse) {
        Some(v) => Some(v),
        None => ctx.var("AWS_REGION").or_else(|| ctx.var("AWS_DEFAULT_REGION")).and_then(|v| Region::parse(&v).ok()),
    };
    let repository = r.parse("ecr-repository", Repository::parse);
    if r.get("ecr-repository").is_none() {
        r.missing("ecr-repository", "is required: the ECR repository to push to and deploy from");
    }
    let registry = r.parse("registry", RegistryHost::parse);
    // Both the runner and the instances log in with an ECR token (for the host's own region), so
    // any other host can only work against an AWS stand-in that serves its own registry.
    let stand_in = ctx.var("AWS_ENDPOINT_URL").or_else(|| ctx.var("AWS_ENDPOINT_URL_ECR")).is_some();
    if let Some(host) = registry.as_ref().filter(|h| h.ecr_region().is_none() && !stand_in) {
        let origin = r.get("registry").map(|v| v.origin).unwrap_or(Origin::Input("registry"));
        r.error(
            &origin,
            format!(
                "{host} is not an ECR registry host: expected <account>.dkr.ecr.<region>.amazonaws.com (the runner and the instances log in with ECR tokens); leave it out for this account's registry in the deploy's region"
            ),
        );
    }
    let tag = match r.get("image-tag") {
        Some(v) if crate::plan::is_reserved_tag(v.text.trim()) => {
            r.error(
                &v.origin,
                format!(
                    "{:?} starts like the tags ec2-deploy keeps for itself (ec2-deploy-proxy-…, ec2-deploy-cache-…), which are never releases; choose another tag",
                    v.text.trim()
                ),
            );
            None
        }
        Some(_) => r.parse("image-tag", ImageTag::parse),
        None => match ctx.var("GITHUB_SHA") {
            Some(sha) => ImageTag::parse(sha.trim())
                .map_err(|e| r.missing("image-tag", &format!("defaults to GITHUB_SHA, which is not a tag: {e}")))
                .ok(),
            // A rollback or a converge deploys a recorded release: its own tag.
            None if ["rollback", "converge"]
                .into_iter()
                .any(|n| r.get(n).is_some_and(|v| parse_bool(&v.text) == Ok(true)))
                || r.get("rollback-to").is_some()
                || r.get("operation").is_some_and(|v| matches!(v.text.trim(), "rollback" | "converge")) =>
            {
                Some(ImageTag::parse(FROM_THE_RECORD).expect("a valid tag"))
            }
            None => {
                r.missing("image-tag", "is required outside GitHub Actions (there is no GITHUB_SHA to default to)");
                None
            }
        },
    };
    ImageInputs {
        region,
        repository,
        registry,
        tag,
        digest: r.parse("image-digest", Digest::parse),
        build: r.parse("build", parse_bool).unwrap_or(true),
        context: r.single("context").map(|(c, o)| (PathBuf::from(c), o)),
        dockerfile: {
            let name = renamed(r, "file", "dockerfile", "the Dockerfile's path, docker/build-push-action's name");
            r.single(name).map(|(d, o)| (PathBuf::from(d), o))
        },
        build_args: r.parse_lines("build-args", EnvVar::parse),
        target: r.parse("target", parse_build_target),
        platform: r.parse("platform", Platform::parse),
        build_secrets: build_secrets(r, ctx),
    }
}

/// The instances, by tag.
pub(super) fn target_inputs(r: &mut Resolver) -> Vec<TagFilter> {
    let targets = r.parse_lines("targets", TagFilter::parse);
    let given =
        r.get("targets").is_some_and(|v| v.text.lines().map(str::trim).any(|l| !l.is_empty() && !l.starts_with('#')));
    if !given {
        r.missing(
            "targets",
            "is required: one Key=Value[,Value...] per line naming the instances' tags, e.g. Role=web",
        );
        return targets;
    }
    r.no_duplicates("targets", targets.iter().map(|t| t.key.as_str()), |k| {
        format!("tag key {k:?} appears twice; put its values on one line: {k}=a,b")
    });
    let keys: BTreeSet<&str> = targets.iter().map(|t| t.key.as_str()).collect();
    if keys.len() > 5 {
        let origin = r.get("targets").expect("given").origin;
        r.error(&origin, format!("{} tag keys given; SSM accepts at most 5", keys.len()));
    }
    targets
}

/// What runs on each instance.
pub(super) struct ContainerInputs {
    pub(super) name: Option<ContainerName>,
    pub(super) ports: Vec<PortMapping>,
    pub(super) env: Vec<EnvVar>,
    pub(super) secret_id: Option<SecretId>,
    pub(super) health_check_path: Option<HealthPath>,
    pub(super) health_check_timeout: u32,
    pub(super) proxy_trusted: Vec<IpRange>,
    pub(super) drain_timeout: u32,
    pub(super) https: Option<ProxyHttps>,
    pub(super) options: RunOptions,
}

impl ContainerInputs {
    /// The container named `name`, behind the proxy when `proxy` is on and it has a port.
    pub(super) fn spec(self, name: ContainerName, proxy: bool) -> ContainerSpec {
        let proxy = proxy && !self.ports.is_empty();
        ContainerSpec {
            name,
            proxy,
            proxy_trusted: if proxy { self.proxy_trusted } else { vec![] },
            ports: self.ports,
            env: self.env,
            secret_id: self.secret_id,
            health_check_path: self.health_check_path,
            health_check_timeout: self.health_check_timeout,
            drain_timeout: self.drain_timeout,
            https: self.https.filter(|_| proxy),
            options: self.options,
        }
    }
}

pub(super) fn container_inputs(r: &mut Resolver, repository: Option<&Repository>) -> ContainerInputs {
    let name = match (r.get("container-name"), r.service) {
        (Some(_), _) => r.parse("container-name", ContainerName::parse),
        // A service's container is named after the service.
        (None, Some(service)) => match ContainerName::parse(service) {
            Ok(name) => Some(name),
            Err(e) => {
                let origin = Origin::Config { file: r.file.clone(), path: format!("services.{service}") };
                r.error(&origin, format!("the service's name is its container's name by default: {e}; rename the service or give it a `container-name`"));
                None
            }
        },
        (None, None) => repository.map(default_container_name),
    };
    let ports = r.parse_lines("ports", PortMapping::parse);
    let env = r.parse_lines("env", EnvVar::parse);
    r.no_duplicates("env", env.iter().map(|e| e.name.as_str()), |n| format!("{n} is set twice"));
    let secret_id = r.parse("secret-id", SecretId::parse);
    let health_check_path = r.parse("health-check-path", HealthPath::parse);
    if let (Some(_), true) = (&health_check_path, ports.is_empty()) {
        if let Some(v) = r.get("health-check-path") {
            r.error(&v.origin, "needs `ports`: the path is checked on the first published host port");
        }
    }
    let health_check_timeout = r.parse("health-check-timeout", parse_seconds(1, 3600)).unwrap_or(60);
    let options = run_options(r);
    let proxy_trusted = proxy_trusted(r);
    let drain_timeout = r.parse("drain-timeout", parse_seconds(0, 3600)).unwrap_or(DEFAULT_DRAIN_TIMEOUT);
    let https = proxy_https(r);
    ContainerInputs {
        name,
        ports,
        env,
        secret_id,
        health_check_path,
        health_check_timeout,
        proxy_trusted,
        drain_timeout,
        https,
        options,
    }
}

/// `build-secrets`: each from a variable that is set, or a file of the workspace that exists.
pub(super) fn build_secrets(r: &mut Resolver, ctx: &RunContext) -> Vec<BuildSecret> {
    let secrets = r.parse_lines("build-secrets", |line| BuildSecret::parse(line, |name| ctx.var(name)));
    r.no_duplicates("build-secrets", secrets.iter().map(|s| s.id.as_str()), |id| format!("id {id} is given twice"));
    secrets
}

/// `command`, `volumes`, `memory`, `cpus`, `log-driver`, `log-options`, `labels`, `user`.
pub(super) fn run_options(r: &mut Resolver) -> RunOptions {
    let volumes = r.parse_lines("volumes", Volume::parse);
    r.no_duplicates("volumes", volumes.iter().map(|v| v.destination.as_str()), |d| format!("{d} is mounted twice"));
    let log_driver = r.parse("log-driver", LogDriver::parse);
    let log_options = r.parse_lines("log-options", KeyValue::parse);
    r.no_duplicates("log-options", log_options.iter().map(|o| o.key.as_str()), |k| format!("{k} is set twice"));
    if !log_options.is_empty() && r.get("log-driver").is_none() {
        if let Some(v) = r.get("log-options") {
            r.error(&v.origin, "needs `log-driver`: options belong to a driver");
        }
    }
    let labels = r.parse_lines("labels", KeyValue::parse_label);
    r.no_duplicates("labels", labels.iter().map(|l| l.key.as_str()), |k| format!("{k} is set twice"));
    RunOptions {
        command: r.parse("command", parse_command).unwrap_or_default(),
        volumes,
        memory: r.parse("memory", Memory::parse),
        cpus: r.parse("cpus", Cpus::parse),
        log_driver,
        log_options,
        labels,
        user: r.parse("user", User::parse),
    }
}

/// How the instances are rolled through, and the record and lock that frame it.
pub(super) struct RolloutInputs {
    pub(super) max_concurrency: Limit,
    pub(super) max_errors: Limit,
    pub(super) pull_concurrency: Limit,
    pub(super) boot_wait: u32,
    pub(super) skip_offline: bool,
    pub(super) target_groups: Vec<TargetGroupArn>,
    pub(super) batch_size: Limit,
    pub(super) canary: bool,
    pub(super) timeout: u32,
    pub(super) release_parameter: Option<ParameterName>,
    pub(super) rollback: bool,
    pub(super) rollback_to: Option<i64>,
    pub(super) converge: bool,
    pub(super) lock_timeout: u32,
    pub(super) proxy: bool,
    pub(super) proxy_image: ImageName,
}

pub(super) fn rollout_inputs(r: &mut Resolver, health_check_timeout: u32) -> RolloutInputs {
    let max_concurrency = r.parse("max-concurrency", |t| Limit::parse(t, 1)).unwrap_or(Limit::Percent(50));
    let max_errors = r.parse("max-errors", |t| Limit::parse(t, 0)).unwrap_or(Limit::Count(0));
    let pull_concurrency = r.parse("pull-concurrency", |t| Limit::parse(t, 1)).unwrap_or(Limit::Count(10));
    let skip_offline = r
        .parse("on-offline", |t| match t {
            "fail" => Ok(false),
            "skip" => Ok(true),
            _ => Err(format!("expected fail or skip, got {t:?}")),
        })
        .unwrap_or(false);
    let target_groups = r.parse_lines("target-groups", TargetGroupArn::parse);
    let batch_size = r.parse("batch-size", |t| Limit::parse(t, 1)).unwrap_or(Limit::Percent(25));
    let canary = r.parse("canary", parse_bool).unwrap_or(true);
    let timeout = command_timeout(r);
    if health_check_timeout >= timeout {
        if let Some(v) = r.get("health-check-timeout") {
            r.error(
                &v.origin,
                format!(
                    "{health_check_timeout}s does not fit in `command-timeout` ({timeout}s), which bounds the whole script"
                ),
            );
        }
    }
    let rollback_to = r.parse("rollback-to", |text| match text.trim().parse::<i64>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(format!(
            "expected a version of the release record (1, 2, …), got {text:?}; `ec2-deploy status` lists them"
        )),
    });
    let operation = r.parse("operation", |t| match t.trim() {
        op if crate::inputs::OPERATIONS.contains(&op) => Ok(op.to_string()),
        other => Err(format!("expected one of {}, got {other:?}", crate::inputs::OPERATIONS.join(", "))),
    });
    let operate = operation.as_deref().is_some_and(|op| crate::inputs::OPERATE.contains(&op));
    if !operate && r.get("operation-args").is_some() {
        r.missing(
            "operation-args",
            "is for the operations releases, status, logs, exec and maintenance; a deploy, rollback or converge takes its own inputs",
        );
    }
    RolloutInputs {
        max_concurrency,
        max_errors,
        pull_concurrency,
        boot_wait: r.parse("boot-wait", parse_seconds(0, 3600)).unwrap_or(300),
        skip_offline,
        target_groups,
        batch_size,
        canary,
        timeout,
        release_parameter: r.parse("release-parameter", ParameterName::parse),
        rollback: r.parse("rollback", parse_bool).unwrap_or(false)
            || rollback_to.is_some()
            || operation.as_deref() == Some("rollback"),
        rollback_to,
        converge: r.parse("converge", parse_bool).unwrap_or(false) || operation.as_deref() == Some("converge"),
        lock_timeout: r.parse("lock-timeout", parse_seconds(0, 3600)).unwrap_or(600),
        proxy: r.parse("proxy", parse_bool).unwrap_or(true),
        proxy_image: r
            .parse("proxy-image", ImageName::parse)
            .unwrap_or_else(|| ImageName::parse(DEFAULT_PROXY_IMAGE).expect("the default is an image name")),
    }
}

/// Which of two names of one input to read: `new`, or its old name `old` with a warning (what
/// it means, for the warning); both given at once is an error.
fn renamed(r: &mut Resolver, new: &'static str, old: &'static str, meaning: &str) -> &'static str {
    let given = |r: &Resolver, name| r.get(name).filter(|v| !matches!(v.origin, Origin::Default(_)));
    match (given(r, new), given(r, old)) {
        (Some(_), Some(o)) => {
            r.error(&o.origin, format!("is the old name of `{new}`, which is also set: keep only `{new}`"));
            new
        }
        (None, Some(o)) => {
            r.warnings.push(format!("{} is deprecated: rename it to `{new}` (same meaning: {meaning})", o.origin));
            old
        }
        _ => new,
    }
}

/// `command-timeout`, or its old name `timeout` with a warning; both at once is an error.
pub(super) fn command_timeout(r: &mut Resolver) -> u32 {
    let name = renamed(r, "command-timeout", "timeout", "seconds the on-instance script may run on each instance");
    r.parse(name, parse_seconds(30, 172_800)).unwrap_or(600)
}

/// The build context must be a directory and the Dockerfile a file, relative to the workspace.
pub(super) fn check_build_files(
    r: &mut Resolver,
    ctx: &RunContext,
    files: &dyn Files,
    context: &Option<(PathBuf, Origin)>,
    dockerfile: &Option<(PathBuf, Origin)>,
) -> Option<(PathBuf, String)> {
    let hint = "or set `build: false` to deploy a tag the repository already has";
    let (context_path, context_origin) = match context {
        Some((p, o)) => (p.clone(), o.clone()),
        None => (PathBuf::from("."), Origin::Default("context")),
    };
    let context_dir = ctx.workdir.join(&context_path);
    if !files.is_dir(&context_dir) {
        r.error(
            &context_origin,
            format!("the build context {} is not a directory in the workspace; check out the code first, fix the path, {hint}", context_path.display()),
        );
        return None;
    }
    match dockerfile {
        Some((p, origin)) => {
            if files.is_file(&ctx.workdir.join(p)) {
                return Some((ctx.workdir.join(p), p.display().to_string()));
            }
            r.error(origin, format!("{} is not a file in the workspace; fix the path, {hint}", p.display()));
        }
        None => {
            if files.is_file(&context_dir.join("Dockerfile")) {
                return Some((context_dir.join("Dockerfile"), context_path.join("Dockerfile").display().to_string()));
            }
            r.missing(
                "file",
                &format!(
                    "the build context {} has no Dockerfile; give `file` (the Dockerfile's path), {hint}",
                    display_dir(&context_path)
                ),
            );
        }
    }
    None
}

pub(super) fn display_dir(p: &Path) -> String {
    let s = p.display().to_string();
    if s.is_empty() {
        ".".into()
    } else {
        s
    }
}
