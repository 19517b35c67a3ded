//! [`resolve`]: raw inputs (plus the config file) → a typed [`DeployRequest`], or every problem.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::config::{ConfigFile, ConfigValue};
use super::{spec, DeployRequest, Files, InputError, PreDeploy, RawInputs, RunContext, DEFAULT_CONFIG};
use crate::model::{
    parse_command, BuildSecret, ContainerName, ContainerSpec, Cpus, Digest, EnvVar, EnvironmentName, HealthPath,
    ImageName, ImageTag, InstanceId, KeyValue, Limit, LogDriver, Memory, ParameterName, Platform, PortMapping, Region,
    RegistryHost, Repository, RunOptions, Secret, SecretId, SecretSource, TagFilter, TargetGroupArn, User, Volume,
    DEFAULT_PROXY_IMAGE,
};
use crate::ports::{BuildSpec, DeploymentMode};

/// Where a value came from, for error messages that point at the thing to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Input(&'static str),
    Config { file: String, path: String },
    Default(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Input(name) => write!(f, "input `{name}`"),
            Origin::Config { file, path } => write!(f, "`{path}` in {file}"),
            Origin::Default(name) => write!(f, "the default of input `{name}`"),
        }
    }
}

/// A value with its origin, while resolving.
struct Val {
    text: String,
    origin: Origin,
}

struct Resolver<'a> {
    raw: &'a RawInputs,
    env_block: Option<&'a BTreeMap<String, ConfigValue>>,
    defaults_block: Option<&'a BTreeMap<String, ConfigValue>>,
    /// The service being resolved, with its blocks in the environment and in `defaults`.
    service: Option<&'a str>,
    service_env_block: Option<&'a BTreeMap<String, ConfigValue>>,
    service_defaults_block: Option<&'a BTreeMap<String, ConfigValue>>,
    file: String,
    env_name: Option<EnvironmentName>,
    errors: Vec<InputError>,
    warnings: Vec<String>,
}

impl Resolver<'_> {
    fn get(&self, name: &'static str) -> Option<Val> {
        if let Some(v) = self.raw.get(name) {
            return Some(Val { text: v.to_string(), origin: Origin::Input(name) });
        }
        let from_block = |block: Option<&BTreeMap<String, ConfigValue>>, prefix: String| {
            block.and_then(|b| b.get(name)).map(|v| Val {
                text: v.as_input_text(),
                origin: Origin::Config { file: self.file.clone(), path: format!("{prefix}.{name}") },
            })
        };
        if let Some(service) = self.service {
            if let Some(env) = &self.env_name {
                if let Some(v) = from_block(self.service_env_block, format!("environments.{env}.services.{service}")) {
                    return Some(v);
                }
            }
            if let Some(v) = from_block(self.service_defaults_block, format!("defaults.services.{service}")) {
                return Some(v);
            }
        }
        if let Some(env) = &self.env_name {
            if let Some(v) = from_block(self.env_block, format!("environments.{env}")) {
                return Some(v);
            }
        }
        if let Some(v) = from_block(self.defaults_block, "defaults".to_string()) {
            return Some(v);
        }
        spec(name).and_then(|s| s.default).map(|d| Val { text: d.to_string(), origin: Origin::Default(name) })
    }

    fn error(&mut self, origin: &Origin, message: impl Into<String>) {
        self.errors.push(InputError { what: origin.to_string(), message: message.into() });
    }

    fn missing(&mut self, name: &'static str, message: &str) {
        self.errors.push(InputError { what: format!("input `{name}`"), message: message.to_string() });
    }

    /// A single-line value: no control characters.
    fn single(&mut self, name: &'static str) -> Option<(String, Origin)> {
        let v = self.get(name)?;
        let text = v.text.trim().to_string();
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            self.error(&v.origin, format!("contains the control character {c:?}; expected a single line of text"));
            return None;
        }
        Some((text, v.origin))
    }

    /// A multi-line value: its non-empty lines, trimmed, with the origin of the whole.
    fn lines(&mut self, name: &'static str) -> (Vec<String>, Option<Origin>) {
        let Some(v) = self.get(name) else {
            return (vec![], None);
        };
        let mut out = vec![];
        for line in v.text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(c) = line.chars().find(|c| c.is_control()) {
                self.error(&v.origin, format!("a line contains the control character {c:?}"));
                continue;
            }
            out.push(line.to_string());
        }
        (out, Some(v.origin))
    }

    fn parse<T>(&mut self, name: &'static str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let (text, origin) = self.single(name)?;
        match parse(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(&origin, e);
                None
            }
        }
    }

    fn parse_lines<T>(&mut self, name: &'static str, parse: impl Fn(&str) -> Result<T, String>) -> Vec<T> {
        let (lines, origin) = self.lines(name);
        let mut out = vec![];
        for line in lines {
            match parse(&line) {
                Ok(v) => out.push(v),
                Err(e) => self.error(origin.as_ref().expect("lines have an origin"), e),
            }
        }
        out
    }

    /// Reports names that appear twice among `items` (with `what` saying how to fix it).
    fn no_duplicates<'i>(
        &mut self,
        name: &'static str,
        items: impl Iterator<Item = &'i str>,
        what: impl Fn(&str) -> String,
    ) {
        let Some(origin) = self.get(name).map(|v| v.origin) else { return };
        let mut seen = BTreeSet::new();
        for item in items {
            if !seen.insert(item) {
                self.error(&origin, what(item));
            }
        }
    }
}

pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(format!("expected true or false, got {text:?}")),
    }
}

fn parse_seconds(min: u32, max: u32) -> impl Fn(&str) -> Result<u32, String> {
    move |text| match text.trim().parse::<i64>() {
        Ok(n) if n >= min as i64 && n <= max as i64 => Ok(n as u32),
        _ => Err(format!("expected a whole number of seconds from {min} to {max}, got {text:?}")),
    }
}

fn parse_build_target(t: &str) -> Result<String, String> {
    if !t.is_empty() && t.len() <= 128 && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(t.to_string())
    } else {
        Err(format!("expected a build stage name, got {t:?}"))
    }
}

fn parse_url(u: &str) -> Result<String, String> {
    if (u.starts_with("https://") || u.starts_with("http://")) && !u.chars().any(char::is_whitespace) {
        Ok(u.to_string())
    } else {
        Err(format!("expected an http(s) URL, got {u:?}"))
    }
}

/// `/ec2-deploy/<environment>/<name>`: per service, the name is the container's (before, it was
/// the repository's; see [`DeployRequest::legacy_release_parameter`]).
pub fn default_release_parameter(environment: Option<&EnvironmentName>, name: &str) -> String {
    format!("/ec2-deploy/{}/{name}", environment.map(EnvironmentName::as_str).unwrap_or("default"))
}

/// The container's name when none is given: the repository's last component.
pub fn default_container_name(repository: &Repository) -> ContainerName {
    let last = repository.last_component();
    let name = if last.len() >= 2 { last.to_string() } else { format!("{last}-app") };
    ContainerName::parse(&name).unwrap_or_else(|_| ContainerName::parse("app").expect("a valid name"))
}

/// Turns raw inputs (plus the config file and the build's local files) into requests, one per
/// service (one when the config file lists no `services`), or every problem found.
pub fn resolve(raw: &RawInputs, ctx: &RunContext, files: &dyn Files) -> Result<Vec<DeployRequest>, Vec<InputError>> {
    let mut errors = vec![];
    let environment = match raw.get("environment").map(str::trim) {
        Some(e) => EnvironmentName::parse(e)
            .map_err(|m| errors.push(InputError { what: "input `environment`".into(), message: m }))
            .ok(),
        None => None,
    };
    let config = read_config(raw, ctx, files, &mut errors);
    let env_block = match (&config, &environment) {
        (Some((c, path)), Some(env)) => {
            let block = c.environments.get(env.as_str());
            if block.is_none() {
                let known: Vec<&str> = c.environments.keys().map(String::as_str).collect();
                errors.push(InputError {
                    what: "input `environment`".into(),
                    message: format!(
                        "{:?} is not an environment of {} (it has: {}); add an `environments.{env}` block or pick one of those",
                        env.as_str(),
                        path.display(),
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                });
            }
            block
        }
        _ => None,
    };
    let services = config.as_ref().map(|(c, _)| c.services_of(environment.as_ref().map(EnvironmentName::as_str)));
    let services = services.unwrap_or_default();
    let chosen = chosen_services(raw, &services, &mut errors);
    let file = config
        .as_ref()
        .map(|(_, p)| p.display().to_string())
        .unwrap_or_else(|| raw.get("config").unwrap_or(DEFAULT_CONFIG).trim().to_string());
    let mut requests = vec![];
    let mut problems: Vec<InputError> = errors;
    for service in chosen.iter().map(|s| Some(s.as_str())).chain(services.is_empty().then_some(None)) {
        let (c, _) = config.as_ref().map(|(c, p)| (Some(c), Some(p))).unwrap_or((None, None));
        let r = Resolver {
            raw,
            env_block,
            defaults_block: c.map(|c| &c.defaults),
            service,
            service_env_block: service.and_then(|s| {
                let env = environment.as_ref()?;
                c?.environment_services.get(env.as_str())?.get(s)
            }),
            service_defaults_block: service.and_then(|s| c?.default_services.get(s)),
            file: file.clone(),
            env_name: environment.clone(),
            errors: vec![],
            warnings: vec![],
        };
        match resolve_service(r, raw, ctx, files, environment.clone(), config.as_ref().map(|(_, p)| p.clone())) {
            Ok(req) => requests.push(req),
            // An environment-wide problem is found once per service: say it once.
            Err(errs) => problems.extend(errs.into_iter().filter(|e| !problems.contains(e)).collect::<Vec<_>>()),
        }
    }
    if problems.is_empty() {
        one_instance_each(&requests, &mut problems);
    }
    if problems.is_empty() {
        Ok(requests)
    } else {
        Err(problems)
    }
}

/// The services this run deploys: input `service` (names, one per line or comma-separated) picks
/// among those the config file lists; without it, all of them.
fn chosen_services(raw: &RawInputs, services: &[String], errors: &mut Vec<InputError>) -> Vec<String> {
    let Some(given) = raw.get("service") else { return services.to_vec() };
    let names: Vec<&str> = given.split([',', '\n']).map(str::trim).filter(|n| !n.is_empty()).collect();
    let mut chosen = vec![];
    for name in names {
        if services.iter().any(|s| s == name) {
            if !chosen.iter().any(|c: &String| c == name) {
                chosen.push(name.to_string());
            }
        } else {
            errors.push(InputError {
                what: "input `service`".into(),
                message: if services.is_empty() {
                    format!("{name:?}: the config file lists no `services` for this environment; leave `service` out")
                } else {
                    format!("{name:?} is not a service of this environment (it has: {})", services.join(", "))
                },
            });
        }
    }
    // Deployed in the file's order, whatever order the input names them in.
    services.iter().filter(|s| chosen.contains(s)).cloned().collect()
}

/// Two services of one step must not share a container or a record (and so a lock).
fn one_instance_each(requests: &[DeployRequest], problems: &mut Vec<InputError>) {
    for (i, a) in requests.iter().enumerate() {
        for b in &requests[i + 1..] {
            let (sa, sb) = (a.service.as_deref().unwrap_or("-"), b.service.as_deref().unwrap_or("-"));
            if a.container.name == b.container.name {
                problems.push(InputError {
                    what: format!("services {sa} and {sb}"),
                    message: format!(
                        "both run a container named {}; give each its own `container-name` (or leave it out: a service's defaults to the service's name)",
                        a.container.name
                    ),
                });
            } else if a.release_parameter == b.release_parameter {
                problems.push(InputError {
                    what: format!("services {sa} and {sb}"),
                    message: format!(
                        "both record their releases in {}; give each its own `release-parameter` (or leave it out: the default is per container)",
                        a.release_parameter
                    ),
                });
            }
        }
    }
}

/// One service's request (or the only one's, `r.service` being `None`).
fn resolve_service(
    mut r: Resolver,
    raw: &RawInputs,
    ctx: &RunContext,
    files: &dyn Files,
    environment: Option<EnvironmentName>,
    config_file: Option<PathBuf>,
) -> Result<DeployRequest, Vec<InputError>> {
    let image = image_inputs(&mut r, ctx);
    let targets = target_inputs(&mut r);
    let container = container_inputs(&mut r, image.repository.as_ref());
    let service = r.service.map(str::to_string);
    let rollout = rollout_inputs(&mut r, container.health_check_timeout);
    if rollout.rollback && image.digest.is_some() {
        r.missing("rollback", "cannot go with `image-digest`: a rollback deploys the previous recorded release");
    }
    if rollout.converge && image.digest.is_some() {
        r.missing("converge", "cannot go with `image-digest`: a converge deploys the live recorded release");
    }
    if rollout.converge && rollout.rollback {
        r.missing("converge", "cannot go with `rollback`: a converge redeploys the live release, a rollback the one before it; run one, then the other");
    }
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
    if let Some(p) = pre_deploy.as_ref().filter(|p| p.timeout >= rollout.timeout) {
        let origin = r.get("pre-deploy-timeout").map(|v| v.origin).unwrap_or(Origin::Default("pre-deploy-timeout"));
        r.error(
            &origin,
            format!(
                "{}s does not fit in `command-timeout` ({}s), which bounds the whole script",
                p.timeout, rollout.timeout
            ),
        );
    }
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
    let environment_url = r.parse("environment-url", parse_url);
    let github_deployment = r
        .parse("github-deployment", |t| match t {
            "auto" => Ok(DeploymentMode::Auto),
            "create" => Ok(DeploymentMode::Create),
            "off" => Ok(DeploymentMode::Off),
            _ => Err(format!("expected auto, create or off, got {t:?}")),
        })
        .unwrap_or(DeploymentMode::Auto);
    let dry_run = r.parse("dry-run", parse_bool).unwrap_or(false);
    let github_token = raw.get("github-token").map(|t| Secret(t.trim().to_string()));
    // What a build needs on disk, checked now: a missing context fails here, naming the input,
    // not halfway through a deploy.
    if image.build && image.digest.is_none() && !rollout.rollback && !rollout.converge {
        check_build_files(&mut r, ctx, files, &image.context, &image.dockerfile);
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
    }

    if !r.errors.is_empty() {
        return Err(r.errors);
    }
    let repository = image.repository.expect("checked above");
    let container_name = container.name.expect("checked above");
    let default_parameter = |name: &str| {
        ParameterName::parse(&default_release_parameter(environment.as_ref(), name)).map_err(|e| {
            vec![InputError {
                what: "input `release-parameter`".into(),
                message: format!("the default does not fit SSM: {e}"),
            }]
        })
    };
    let (release_parameter, legacy_release_parameter) = match rollout.release_parameter {
        Some(p) => (p, None),
        None => {
            let per_container = default_parameter(container_name.as_str())?;
            let before = default_parameter(repository.as_str()).ok().filter(|p| *p != per_container);
            (per_container, before)
        }
    };
    Ok(DeployRequest {
        environment,
        region: image.region,
        repository,
        registry: image.registry,
        image_tag: image.tag.expect("checked above"),
        image_digest: image.digest,
        build: image.build,
        build_spec: BuildSpec {
            context: image.context.map(|(c, _)| c).unwrap_or_else(|| PathBuf::from(".")),
            dockerfile: image.dockerfile.map(|(d, _)| d),
            args: image.build_args,
            target: image.target,
            platform: image.platform,
            secrets: image.build_secrets,
        },
        targets,
        container: ContainerSpec {
            name: container_name,
            proxy: rollout.proxy && !container.ports.is_empty(),
            ports: container.ports,
            env: container.env,
            secret_id: container.secret_id,
            health_check_path: container.health_check_path,
            health_check_timeout: container.health_check_timeout,
            options: container.options,
        },
        proxy_image: rollout.proxy_image,
        pre_deploy,
        alarms,
        bake_time,
        ignore_alarms_at_start,
        warnings: std::mem::take(&mut r.warnings),
        max_concurrency: rollout.max_concurrency,
        max_errors: rollout.max_errors,
        skip_offline: rollout.skip_offline,
        target_groups: rollout.target_groups,
        batch_size: rollout.batch_size,
        canary: rollout.canary,
        timeout: rollout.timeout,
        release_parameter,
        legacy_release_parameter,
        service,
        lock_timeout: rollout.lock_timeout,
        rollback: rollout.rollback,
        converge: rollout.converge,
        environment_url,
        github_deployment,
        commit: ctx.var("GITHUB_SHA"),
        dry_run,
        github_token,
        config_file,
    })
}

/// The config file: given explicitly (it must exist) or the default (read when present).
fn read_config(
    raw: &RawInputs,
    ctx: &RunContext,
    files: &dyn Files,
    errors: &mut Vec<InputError>,
) -> Option<(ConfigFile, PathBuf)> {
    let (path, explicit) = match raw.get("config") {
        Some(p) => (PathBuf::from(p.trim()), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    match files.read(&ctx.workdir.join(&path)) {
        Ok(text) => match ConfigFile::parse(&text) {
            Ok(c) => Some((c, path)),
            Err(e) => {
                errors.push(InputError { what: format!("config file {}", path.display()), message: e });
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => None,
        Err(e) => {
            errors.push(InputError {
                what: "input `config`".into(),
                message: format!(
                    "cannot read {}: {e}; give the path of a YAML file relative to the workspace",
                    path.display()
                ),
            });
            None
        }
    }
}

/// The image: where it lives, which one, and how to build it.
struct ImageInputs {
    region: Option<Region>,
    repository: Option<Repository>,
    registry: Option<RegistryHost>,
    tag: Option<ImageTag>,
    digest: Option<Digest>,
    build: bool,
    context: Option<(PathBuf, Origin)>,
    dockerfile: Option<(PathBuf, Origin)>,
    build_args: Vec<EnvVar>,
    target: Option<String>,
    platform: Option<Platform>,
    build_secrets: Vec<BuildSecret>,
}

/// The request's tag when a rollback or a converge is given none: never deployed or shown (the
/// plan takes the recorded release's own tag).
const FROM_THE_RECORD: &str = "from-the-release-record";

fn image_inputs(r: &mut Resolver, ctx: &RunContext) -> ImageInputs {
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
        Some(_) => r.parse("image-tag", ImageTag::parse),
        None => match ctx.var("GITHUB_SHA") {
            Some(sha) => ImageTag::parse(sha.trim())
                .map_err(|e| r.missing("image-tag", &format!("defaults to GITHUB_SHA, which is not a tag: {e}")))
                .ok(),
            // A rollback or a converge deploys a recorded release: its own tag.
            None if ["rollback", "converge"]
                .into_iter()
                .any(|n| r.get(n).is_some_and(|v| parse_bool(&v.text) == Ok(true))) =>
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
        dockerfile: r.single("dockerfile").map(|(d, o)| (PathBuf::from(d), o)),
        build_args: r.parse_lines("build-args", EnvVar::parse),
        target: r.parse("target", parse_build_target),
        platform: r.parse("platform", Platform::parse),
        build_secrets: build_secrets(r, ctx),
    }
}

/// The instances, by tag.
fn target_inputs(r: &mut Resolver) -> Vec<TagFilter> {
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
struct ContainerInputs {
    name: Option<ContainerName>,
    ports: Vec<PortMapping>,
    env: Vec<EnvVar>,
    secret_id: Option<SecretId>,
    health_check_path: Option<HealthPath>,
    health_check_timeout: u32,
    options: RunOptions,
}

fn container_inputs(r: &mut Resolver, repository: Option<&Repository>) -> ContainerInputs {
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
    ContainerInputs { name, ports, env, secret_id, health_check_path, health_check_timeout, options }
}

/// `build-secrets`: each from a variable that is set, or a file of the workspace that exists.
fn build_secrets(r: &mut Resolver, ctx: &RunContext) -> Vec<BuildSecret> {
    let secrets = r.parse_lines("build-secrets", |line| BuildSecret::parse(line, |name| ctx.var(name)));
    r.no_duplicates("build-secrets", secrets.iter().map(|s| s.id.as_str()), |id| format!("id {id} is given twice"));
    secrets
}

/// `command`, `volumes`, `memory`, `cpus`, `log-driver`, `log-options`, `labels`, `user`.
fn run_options(r: &mut Resolver) -> RunOptions {
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
struct RolloutInputs {
    max_concurrency: Limit,
    max_errors: Limit,
    skip_offline: bool,
    target_groups: Vec<TargetGroupArn>,
    batch_size: Limit,
    canary: bool,
    timeout: u32,
    release_parameter: Option<ParameterName>,
    rollback: bool,
    converge: bool,
    lock_timeout: u32,
    proxy: bool,
    proxy_image: ImageName,
}

fn rollout_inputs(r: &mut Resolver, health_check_timeout: u32) -> RolloutInputs {
    let max_concurrency = r.parse("max-concurrency", |t| Limit::parse(t, 1)).unwrap_or(Limit::Percent(50));
    let max_errors = r.parse("max-errors", |t| Limit::parse(t, 0)).unwrap_or(Limit::Count(0));
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
    RolloutInputs {
        max_concurrency,
        max_errors,
        skip_offline,
        target_groups,
        batch_size,
        canary,
        timeout,
        release_parameter: r.parse("release-parameter", ParameterName::parse),
        rollback: r.parse("rollback", parse_bool).unwrap_or(false),
        converge: r.parse("converge", parse_bool).unwrap_or(false),
        lock_timeout: r.parse("lock-timeout", parse_seconds(0, 3600)).unwrap_or(600),
        proxy: r.parse("proxy", parse_bool).unwrap_or(true),
        proxy_image: r
            .parse("proxy-image", ImageName::parse)
            .unwrap_or_else(|| ImageName::parse(DEFAULT_PROXY_IMAGE).expect("the default is an image name")),
    }
}

/// `command-timeout`, or its old name `timeout` with a warning; both at once is an error.
fn command_timeout(r: &mut Resolver) -> u32 {
    let given = |r: &Resolver, name| r.get(name).filter(|v| !matches!(v.origin, Origin::Default(_)));
    let (new, old) = (given(r, "command-timeout"), given(r, "timeout"));
    let name = match (&new, &old) {
        (Some(_), Some(old)) => {
            r.error(
                &old.origin,
                "is the old name of `command-timeout`, which is also set: keep only `command-timeout`",
            );
            "command-timeout"
        }
        (None, Some(old)) => {
            r.warnings.push(format!(
                "{} is deprecated: rename it to `command-timeout` (same meaning: seconds the on-instance script may run on each instance)",
                old.origin
            ));
            "timeout"
        }
        _ => "command-timeout",
    };
    r.parse(name, parse_seconds(30, 172_800)).unwrap_or(600)
}

/// The build context must be a directory and the Dockerfile a file, relative to the workspace.
fn check_build_files(
    r: &mut Resolver,
    ctx: &RunContext,
    files: &dyn Files,
    context: &Option<(PathBuf, Origin)>,
    dockerfile: &Option<(PathBuf, Origin)>,
) {
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
        return;
    }
    match dockerfile {
        Some((p, origin)) => {
            if !files.is_file(&ctx.workdir.join(p)) {
                r.error(origin, format!("{} is not a file in the workspace; fix the path, {hint}", p.display()));
            }
        }
        None => {
            if !files.is_file(&context_dir.join("Dockerfile")) {
                r.missing(
                    "dockerfile",
                    &format!(
                        "the build context {} has no Dockerfile; give `dockerfile`, {hint}",
                        display_dir(&context_path)
                    ),
                );
            }
        }
    }
}

fn display_dir(p: &Path) -> String {
    let s = p.display().to_string();
    if s.is_empty() {
        ".".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests;
