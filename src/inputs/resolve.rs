//! [`resolve`]: raw inputs (plus the config file) → a typed [`DeployRequest`], or every problem.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use super::config::{ConfigFile, ConfigValue};
use super::{spec, DeployRequest, Files, InputError, RawInputs, RunContext, DEFAULT_CONFIG};
use crate::model::{ContainerName, EnvironmentName, Repository, Secret};

mod groups;
use groups::*;

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
    if container.health_check_timeout + container.drain_timeout >= rollout.timeout {
        if let Some(v) = r.get("drain-timeout") {
            r.error(
                &v.origin,
                format!(
                    "{}s, after `health-check-timeout` ({}s), does not fit in `command-timeout` ({}s), which bounds the whole script",
                    container.drain_timeout, container.health_check_timeout, rollout.timeout
                ),
            );
        }
    }
    if !rollout.proxy || container.ports.is_empty() {
        if let Some(v) = r.get("proxy-hosts") {
            let why =
                if rollout.proxy { "a port (`ports`) for the proxy to hold" } else { "the proxy (`proxy: true`)" };
            r.error(&v.origin, format!("HTTPS on the instance needs {why}"));
        }
    }
    if let (Some(_), Some(v)) = (&container.https, r.get("proxy-hosts")) {
        if container.ports.iter().any(|p| p.host == 443) {
            r.error(&v.origin, "the proxy serves HTTPS on host port 443, which `ports` publishes too: take 443 out of `ports` (the proxied port, the first, is where HTTP arrives and is redirected: 80 for the CA's HTTP challenge)");
        }
    }
    mode_conflicts(&mut r, &image, &rollout);
    let pre_deploy = pre_deploy_inputs(&mut r, rollout.timeout);
    let watch = watch_inputs(&mut r);
    let report = report_inputs(&mut r);
    let dry_run = r.parse("dry-run", parse_bool).unwrap_or(false);
    let github_token = raw.get("github-token").map(|t| Secret(t.trim().to_string()));
    // What a build needs on disk, checked now: a missing context fails here, naming the input,
    // not halfway through a deploy.
    let mut build_spec = image.build_spec();
    if image.build && image.digest.is_none() && !rollout.rollback && !rollout.converge {
        build_spec.stage_cache = check_build_inputs(&mut r, ctx, files, &image);
    }

    if !r.errors.is_empty() {
        return Err(r.errors);
    }
    let repository = image.repository.clone().expect("checked above");
    let container_name = container.name.clone().expect("checked above");
    let (release_parameter, legacy_release_parameter) =
        release_parameters(environment.as_ref(), rollout.release_parameter.clone(), &container_name, &repository)?;
    Ok(DeployRequest {
        environment,
        region: image.region.clone(),
        repository,
        registry: image.registry.clone(),
        image_tag: image.tag.clone().expect("checked above"),
        image_digest: image.digest.clone(),
        build: image.build,
        build_spec,
        targets,
        container: container.spec(container_name, rollout.proxy),
        proxy_image: rollout.proxy_image,
        pre_deploy,
        alarms: watch.alarms,
        bake_time: watch.bake_time,
        ignore_alarms_at_start: watch.ignore_alarms_at_start,
        warnings: std::mem::take(&mut r.warnings),
        max_concurrency: rollout.max_concurrency,
        max_errors: rollout.max_errors,
        pull_concurrency: rollout.pull_concurrency,
        boot_wait: rollout.boot_wait,
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
        rollback_to: rollout.rollback_to,
        converge: rollout.converge,
        environment_url: report.environment_url,
        github_deployment: report.github_deployment,
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

#[cfg(test)]
mod tests;
