//! Inputs: the action's inputs, the CLI's flags and the YAML config become one typed
//! [`DeployRequest`].
//!
//! Raw values are strings looked up through a function (the runner's `INPUT_*` environment, or
//! the CLI's flags), so tests never touch the process environment. Resolution overlays them:
//! explicit input > the config file's environment block > its `defaults` block > built-in
//! default. Validation collects every problem at once and each message names the input (or
//! config path) and what is expected, because a deploy that fails one typo at a time is a slow
//! deploy.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{ConfigFile, ConfigValue};

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
}

const fn input(name: &'static str, description: &'static str) -> InputSpec {
    InputSpec { name, description, default: None, multiline: false, in_config: true }
}
const fn lines(name: &'static str, description: &'static str) -> InputSpec {
    InputSpec { name, description, default: None, multiline: true, in_config: true }
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

/// Every input, in the order the README and `action.yml` list them.
pub const INPUTS: &[InputSpec] = &[
    not_in_config(input("environment", "Deployment environment (e.g. production); selects a block of the config file and names the GitHub deployment.")),
    not_in_config(input("config", "YAML config with per-environment values for any input below. Default: .github/ec2-deploy.yml when it exists.")),
    input("aws-region", "AWS region. Default: AWS_REGION or AWS_DEFAULT_REGION."),
    input("ecr-repository", "ECR repository name (required), e.g. my-service."),
    input("registry", "Registry host to push to and pull from. Default: the ECR registry of the account and region."),
    input("image-tag", "Image tag to build and deploy. Default: the commit SHA."),
    input("image-digest", "Deploy this image digest (sha256:...) of the repository instead of a tag; nothing is built."),
    with_default(input("build", "true: build and push the image unless the tag is already in the registry; false: deploy an existing tag."), "true"),
    with_default(input("context", "Docker build context."), "."),
    input("dockerfile", "Dockerfile path. Default: Dockerfile in the context."),
    lines("build-args", "Build arguments, one KEY=VALUE per line (not for secrets)."),
    input("target", "Build stage to build (docker build --target)."),
    lines("targets", "Instances to deploy to, by tag: one Key=Value[,Value...] per line; lines are ANDed, values ORed (required)."),
    input("container-name", "Name of the container on each instance. Default: the repository name."),
    lines("ports", "Published ports, one host:container per line."),
    lines("env", "Plain environment variables for the container, one KEY=VALUE per line (not for secrets)."),
    input("secret-id", "Secrets Manager secret holding a JSON object; each key becomes an environment variable, fetched on the instance."),
    input("health-check-path", "HTTP path checked on the instance (on the first published port) before a new container counts as healthy. Default: the image's HEALTHCHECK, else running."),
    with_default(input("health-check-timeout", "Seconds a new container has to become healthy before the previous one is put back."), "60"),
    with_default(input("max-concurrency", "Without target-groups: instances updated at once, a number or a percentage (SSM MaxConcurrency)."), "50%"),
    with_default(input("max-errors", "Without target-groups: failed instances tolerated, a number or a percentage (SSM MaxErrors); past it the switched instances are rolled back."), "0"),
    with_default(input("on-offline", "Instances whose SSM agent is not connected: fail (stop before changing anything) or skip (deploy to the others and name them)."), "fail"),
    lines("target-groups", "ELBv2 target group ARNs, one per line: deploy in batches, each drained from them before its swap and healthy in them before the next batch."),
    with_default(input("batch-size", "With target-groups: instances per batch after the canary, a number or a percentage."), "25%"),
    with_default(input("canary", "With target-groups: true to deploy to one instance first, as its own batch."), "true"),
    with_default(input("timeout", "Seconds the on-instance script may run on each instance."), "600"),
    input("release-parameter", "SSM parameter holding the environment's release record (history = its versions). Default: /ec2-deploy/<environment>/<ecr-repository>."),
    not_in_config(with_default(input("rollback", "true: redeploy the release before the live one, from the release record, without building."), "false")),
    with_default(input("lock-timeout", "Seconds to wait while another deploy of the same environment holds its lock, before failing."), "600"),
    input("environment-url", "URL of the deployed service, shown on the GitHub deployment."),
    not_in_config(with_default(input("dry-run", "true: print the plan and change nothing."), "false")),
    not_in_config(input("github-token", "Token for GitHub Deployments. Default: the workflow's token.")),
];

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

/// A count or a percentage, as SSM's MaxConcurrency and MaxErrors take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum Limit {
    Count(u32),
    Percent(u8),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Count(n) => write!(f, "{n}"),
            Limit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl From<Limit> for String {
    fn from(l: Limit) -> String {
        l.to_string()
    }
}

impl Limit {
    /// `min` is the smallest count allowed (1 for concurrency, 0 for errors).
    pub fn parse(text: &str, min: u32) -> Result<Limit, String> {
        let t = text.trim();
        let expected = if min == 0 {
            "a number (0 or more) or a percentage such as \"10%\""
        } else {
            "a number (1 or more) or a percentage such as \"25%\""
        };
        if let Some(p) = t.strip_suffix('%') {
            match p.trim().parse::<u8>() {
                Ok(p) if p <= 100 && (p as u32) >= min => Ok(Limit::Percent(p)),
                _ => Err(format!("expected {expected} between {min}% and 100%, got {text:?}")),
            }
        } else {
            match t.parse::<u32>() {
                Ok(n) if n >= min && n <= 100_000 => Ok(Limit::Count(n)),
                _ => Err(format!("expected {expected}, got {text:?}")),
            }
        }
    }
}

/// `Key=Value[,Value…]`: the instances whose tag `Key` has one of the values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagFilter {
    pub key: String,
    pub values: Vec<String>,
}

impl fmt::Display for TagFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.values.join(","))
    }
}

impl TagFilter {
    pub fn parse(line: &str) -> Result<TagFilter, String> {
        let Some((key, values)) = line.split_once('=') else {
            return Err(format!("expected Key=Value[,Value...], got {line:?}"));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("the tag key is empty in {line:?}: expected Key=Value[,Value...]"));
        }
        if key.len() > 128 {
            return Err(format!("tag key {key:?} is longer than 128 characters"));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(format!("tag key {key:?}: keys starting with aws: are reserved by AWS and cannot be targeted"));
        }
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        if values.iter().any(|v| v.is_empty()) {
            return Err(format!("a value of tag {key:?} is empty in {line:?}: expected Key=Value[,Value...]"));
        }
        if values.len() > 5 {
            return Err(format!("tag {key:?} has {} values; SSM accepts at most 5 per key", values.len()));
        }
        if let Some(v) = values.iter().find(|v| v.len() > 256) {
            return Err(format!("tag value {:?}… is longer than 256 characters", &v[..32]));
        }
        Ok(TagFilter { key: key.to_string(), values })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PortMapping {
    pub host: u16,
    pub container: u16,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.container)
    }
}

impl PortMapping {
    pub fn parse(text: &str) -> Result<PortMapping, String> {
        let port = |p: &str| match p.trim().parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            _ => Err(format!("expected host:container with ports from 1 to 65535, got {text:?}")),
        };
        let (h, c) =
            text.split_once(':').ok_or_else(|| format!("expected host:container such as 80:3000, got {text:?}"))?;
        Ok(PortMapping { host: port(h)?, container: port(c)? })
    }
}

/// `NAME=value` for the container's environment or a build argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

impl EnvVar {
    pub fn parse(line: &str) -> Result<EnvVar, String> {
        let (name, value) =
            line.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {:?}", redact_after_eq(line)))?;
        let name = name.trim();
        if !is_env_name(name) {
            return Err(format!(
                "{name:?} is not a valid variable name: use letters, digits and underscores, not starting with a digit"
            ));
        }
        Ok(EnvVar { name: name.to_string(), value: value.to_string() })
    }
}

fn redact_after_eq(line: &str) -> String {
    if line.len() > 40 {
        format!("{}…", line.chars().take(40).collect::<String>())
    } else {
        line.to_string()
    }
}

pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A value that must not be printed (tokens). `Debug` shows only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildSpec {
    pub context: PathBuf,
    pub dockerfile: Option<PathBuf>,
    pub args: Vec<EnvVar>,
    pub target: Option<String>,
}

/// What runs on each instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    pub ports: Vec<PortMapping>,
    pub env: Vec<EnvVar>,
    pub secret_id: Option<String>,
    pub health_check_path: Option<String>,
    pub health_check_timeout: u32,
}

/// Everything a deploy needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    pub environment: Option<String>,
    pub region: Option<String>,
    pub repository: String,
    pub registry: Option<String>,
    pub image_tag: String,
    pub image_digest: Option<String>,
    pub build: bool,
    pub build_spec: BuildSpec,
    pub targets: Vec<TagFilter>,
    pub container: ContainerSpec,
    pub max_concurrency: Limit,
    pub max_errors: Limit,
    pub target_groups: Vec<String>,
    /// Skip instances whose agent is not connected (instead of stopping the plan).
    pub skip_offline: bool,
    pub batch_size: Limit,
    pub canary: bool,
    pub timeout: u32,
    pub release_parameter: String,
    pub rollback: bool,
    pub lock_timeout: u32,
    pub environment_url: Option<String>,
    /// The commit being deployed (GITHUB_SHA), recorded with the release.
    pub commit: Option<String>,
    pub dry_run: bool,
    pub github_token: Option<Secret>,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
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

/// A value with its origin, while resolving.
struct Val {
    text: String,
    origin: Origin,
}

struct Resolver<'a> {
    raw: &'a RawInputs,
    env_block: Option<&'a BTreeMap<String, ConfigValue>>,
    defaults_block: Option<&'a BTreeMap<String, ConfigValue>>,
    file: String,
    env_name: Option<String>,
    errors: Vec<InputError>,
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

/// ECR repository names: lowercase path components of letters and digits separated by `.`,
/// `_` or `-`, joined by `/`; 2 to 256 characters.
pub fn parse_repository(text: &str) -> Result<String, String> {
    let ok_component = |c: &str| {
        !c.is_empty()
            && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-'))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if (2..=256).contains(&text.len()) && text.split('/').all(ok_component) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "expected an ECR repository name such as my-service or team/my-service (lowercase letters, digits, . _ - and /), got {text:?}"
        ))
    }
}

/// Docker tags: up to 128 of letters, digits, `_`, `.`, `-`, not starting with `.` or `-`.
pub fn parse_tag(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 128
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !text.starts_with(['.', '-']);
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!("expected a Docker tag (up to 128 letters, digits, _ . -, not starting with . or -), got {text:?}"))
    }
}

pub fn parse_container_name(text: &str) -> Result<String, String> {
    let ok = text.len() >= 2
        && text.len() <= 128
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !text.ends_with("-previous");
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "expected a container name (2-128 letters, digits, _ . -, starting with a letter or digit, not ending in -previous), got {text:?}"
        ))
    }
}

fn parse_registry(text: &str) -> Result<String, String> {
    let host = text.trim();
    let ok = !host.is_empty()
        && !host.contains("://")
        && !host.contains('/')
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if ok {
        Ok(host.to_string())
    } else {
        Err(format!("expected a registry host such as 123456789012.dkr.ecr.eu-west-1.amazonaws.com (no scheme, no path), got {text:?}"))
    }
}

fn parse_region(text: &str) -> Result<String, String> {
    let ok = text.len() <= 32
        && text.split('-').count() >= 3
        && text.split('-').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!("expected an AWS region such as eu-west-1, got {text:?}"))
    }
}

fn parse_health_path(text: &str) -> Result<String, String> {
    if text.starts_with('/') && text.len() <= 1024 && !text.chars().any(|c| c.is_whitespace()) {
        Ok(text.to_string())
    } else {
        Err(format!("expected an HTTP path starting with / and without spaces, such as /health, got {text:?}"))
    }
}

fn parse_digest(text: &str) -> Result<String, String> {
    let hex = text.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
        Ok(text.to_string())
    } else {
        Err(format!("expected an image digest such as sha256:<64 hex digits>, got {text:?}"))
    }
}

/// SSM parameter names: letters, digits, `_ . - /`; a path starts with `/`; at most 1011 characters.
fn parse_parameter_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 1011
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
        && !text.to_ascii_lowercase().trim_start_matches('/').starts_with("aws")
        && !text.to_ascii_lowercase().trim_start_matches('/').starts_with("ssm");
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!("expected an SSM parameter name such as /ec2-deploy/production/shop (letters, digits, _ . - /; not starting with aws or ssm), got {text:?}"))
    }
}

fn parse_target_group(text: &str) -> Result<String, String> {
    let ok = text.starts_with("arn:") && text.contains(":targetgroup/") && !text.chars().any(char::is_whitespace);
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "expected a target group ARN such as arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef, got {text:?}"
        ))
    }
}

fn parse_secret_id(text: &str) -> Result<String, String> {
    if !text.is_empty() && text.len() <= 2048 {
        Ok(text.to_string())
    } else {
        Err("expected a secret name or ARN of at most 2048 characters".to_string())
    }
}

fn parse_environment(text: &str) -> Result<String, String> {
    if !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Ok(text.to_string())
    } else {
        Err(format!("expected an environment name of letters, digits, - _ . (at most 64), got {text:?}"))
    }
}

/// Turns raw inputs (plus the config file, read through `read_file`) into a request, or every
/// problem found.
pub fn resolve(
    raw: &RawInputs,
    ctx: &RunContext,
    read_file: impl Fn(&Path) -> std::io::Result<String>,
) -> Result<DeployRequest, Vec<InputError>> {
    let mut errors = vec![];
    let fail = |what: &str, message: String| InputError { what: what.to_string(), message };

    let environment = match raw.get("environment").map(str::trim) {
        Some(e) => match parse_environment(e) {
            Ok(e) => Some(e),
            Err(m) => {
                errors.push(fail("input `environment`", m));
                None
            }
        },
        None => None,
    };

    // The config file: given explicitly (must exist) or the default (read when present).
    let (config_path, explicit) = match raw.get("config") {
        Some(p) => (PathBuf::from(p.trim()), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let full_path = ctx.workdir.join(&config_path);
    let config = match read_file(&full_path) {
        Ok(text) => match ConfigFile::parse(&text) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(fail(&format!("config file {}", config_path.display()), e));
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => None,
        Err(e) => {
            errors.push(fail(
                "input `config`",
                format!(
                    "cannot read {}: {e}; give the path of a YAML file relative to the workspace",
                    config_path.display()
                ),
            ));
            None
        }
    };
    let config_file = config.as_ref().map(|_| config_path.clone());
    let file = config_path.display().to_string();
    let env_block = match (&config, &environment) {
        (Some(c), Some(env)) => match c.environments.get(env) {
            Some(block) => Some(block),
            None => {
                let known: Vec<&str> = c.environments.keys().map(String::as_str).collect();
                errors.push(fail(
                    "input `environment`",
                    format!(
                        "{env:?} is not an environment of {file} (it has: {}); add an `environments.{env}` block or pick one of those",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                ));
                None
            }
        },
        _ => None,
    };
    if let (Some(c), None) = (&config, &environment) {
        if !c.environments.is_empty() && errors.is_empty() {
            // Not an error: defaults still apply. The environment just was not chosen.
        }
    }

    let mut r = Resolver {
        raw,
        env_block,
        defaults_block: config.as_ref().map(|c| &c.defaults),
        file,
        env_name: environment.clone(),
        errors,
    };

    let region = match r.parse("aws-region", parse_region) {
        Some(v) => Some(v),
        None => ctx.var("AWS_REGION").or_else(|| ctx.var("AWS_DEFAULT_REGION")),
    };
    let repository = r.parse("ecr-repository", parse_repository);
    if r.get("ecr-repository").is_none() {
        r.errors
            .push(fail("input `ecr-repository`", "is required: the ECR repository to push to and deploy from".into()));
    }
    let registry = r.parse("registry", parse_registry);
    let image_tag = match r.get("image-tag") {
        Some(_) => r.parse("image-tag", parse_tag),
        None => match ctx.var("GITHUB_SHA") {
            Some(sha) => Some(sha),
            None => {
                r.errors.push(fail(
                    "input `image-tag`",
                    "is required outside GitHub Actions (there is no GITHUB_SHA to default to)".into(),
                ));
                None
            }
        },
    };
    let image_digest = r.parse("image-digest", parse_digest);
    let build = r.parse("build", parse_bool).unwrap_or(true);
    let context = r.single("context").map(|(c, _)| PathBuf::from(c)).unwrap_or_else(|| PathBuf::from("."));
    let dockerfile = r.single("dockerfile").map(|(d, _)| PathBuf::from(d));
    let build_args = r.parse_lines("build-args", EnvVar::parse);
    let target = r.parse("target", |t| {
        if t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            Ok(t.to_string())
        } else {
            Err(format!("expected a build stage name, got {t:?}"))
        }
    });

    let targets = r.parse_lines("targets", TagFilter::parse);
    let (target_lines, targets_origin) = r.lines("targets");
    if target_lines.is_empty() {
        r.errors.push(fail(
            "input `targets`",
            "is required: one Key=Value[,Value...] per line naming the instances' tags, e.g. Role=web".into(),
        ));
    } else {
        let origin = targets_origin.expect("lines have an origin");
        let mut seen = std::collections::BTreeSet::new();
        for t in &targets {
            if !seen.insert(t.key.clone()) {
                r.error(
                    &origin,
                    format!("tag key {:?} appears twice; put its values on one line: {}=a,b", t.key, t.key),
                );
            }
        }
        if seen.len() > 5 {
            r.error(&origin, format!("{} tag keys given; SSM accepts at most 5", seen.len()));
        }
    }

    let container_name = match r.get("container-name") {
        Some(_) => r.parse("container-name", parse_container_name),
        None => repository.as_ref().map(|repo| {
            let last = repo.rsplit('/').next().unwrap_or(repo);
            if last.len() >= 2 {
                last.to_string()
            } else {
                format!("{last}-app")
            }
        }),
    };
    let ports = r.parse_lines("ports", PortMapping::parse);
    let env = r.parse_lines("env", EnvVar::parse);
    let (env_lines, env_origin) = r.lines("env");
    drop(env_lines);
    if let Some(origin) = env_origin {
        let mut seen = std::collections::BTreeSet::new();
        for e in &env {
            if !seen.insert(&e.name) {
                r.error(&origin, format!("{} is set twice", e.name));
            }
        }
    }
    let secret_id = r.parse("secret-id", parse_secret_id);
    let health_check_path = r.parse("health-check-path", parse_health_path);
    if let (Some(_), true) = (&health_check_path, ports.is_empty()) {
        if let Some(v) = r.get("health-check-path") {
            r.error(&v.origin, "needs `ports`: the path is checked on the first published host port");
        }
    }
    let health_check_timeout = r.parse("health-check-timeout", parse_seconds(1, 3600)).unwrap_or(60);
    let max_concurrency = r.parse("max-concurrency", |t| Limit::parse(t, 1)).unwrap_or(Limit::Percent(50));
    let max_errors = r.parse("max-errors", |t| Limit::parse(t, 0)).unwrap_or(Limit::Count(0));
    let skip_offline = r
        .parse("on-offline", |t| match t {
            "fail" => Ok(false),
            "skip" => Ok(true),
            _ => Err(format!("expected fail or skip, got {t:?}")),
        })
        .unwrap_or(false);
    let target_groups = r.parse_lines("target-groups", parse_target_group);
    let batch_size = r.parse("batch-size", |t| Limit::parse(t, 1)).unwrap_or(Limit::Percent(25));
    let canary = r.parse("canary", parse_bool).unwrap_or(true);
    let timeout = r.parse("timeout", parse_seconds(30, 172_800)).unwrap_or(600);
    if health_check_timeout >= timeout {
        if let Some(v) = r.get("health-check-timeout") {
            r.error(
                &v.origin,
                format!(
                    "{health_check_timeout}s does not fit in `timeout` ({timeout}s), which bounds the whole script"
                ),
            );
        }
    }
    let release_parameter = r.parse("release-parameter", parse_parameter_name);
    let rollback = r.parse("rollback", parse_bool).unwrap_or(false);
    let lock_timeout = r.parse("lock-timeout", parse_seconds(0, 3600)).unwrap_or(600);
    if rollback && image_digest.is_some() {
        r.errors.push(fail(
            "input `rollback`",
            "cannot go with `image-digest`: a rollback deploys the previous recorded release".into(),
        ));
    }
    let environment_url = r.parse("environment-url", |u| {
        if (u.starts_with("https://") || u.starts_with("http://")) && !u.chars().any(char::is_whitespace) {
            Ok(u.to_string())
        } else {
            Err(format!("expected an http(s) URL, got {u:?}"))
        }
    });
    let dry_run = r.parse("dry-run", parse_bool).unwrap_or(false);
    let github_token = raw.get("github-token").map(|t| Secret(t.trim().to_string()));

    if !r.errors.is_empty() {
        return Err(r.errors);
    }
    let release_parameter = release_parameter.unwrap_or_else(|| {
        crate::release::default_parameter(environment.as_deref(), repository.as_deref().unwrap_or(""))
    });
    Ok(DeployRequest {
        environment,
        region,
        repository: repository.expect("checked above"),
        registry,
        image_tag: image_tag.expect("checked above"),
        image_digest,
        build,
        build_spec: BuildSpec { context, dockerfile, args: build_args, target },
        targets,
        container: ContainerSpec {
            name: container_name.expect("checked above"),
            ports,
            env,
            secret_id,
            health_check_path,
            health_check_timeout,
        },
        max_concurrency,
        max_errors,
        skip_offline,
        target_groups,
        batch_size,
        canary,
        timeout,
        release_parameter,
        lock_timeout,
        rollback,
        environment_url,
        commit: ctx.var("GITHUB_SHA"),
        dry_run,
        github_token,
        config_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn resolve_with(
        inputs: &[(&str, &str)],
        context: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> Result<DeployRequest, Vec<String>> {
        let action_env = env(&inputs
            .iter()
            .map(|(k, v)| (Box::leak(action_env_name(k).into_boxed_str()) as &str, *v))
            .collect::<Vec<_>>());
        let raw = RawInputs::from_action_env(|k| action_env.get(k).cloned());
        let ctx_env = env(context);
        let lookup = move |k: &str| ctx_env.get(k).cloned();
        let ctx = RunContext { env: &lookup, workdir: PathBuf::from("/ws") };
        let files: HashMap<PathBuf, String> =
            files.iter().map(|(p, t)| (Path::new("/ws").join(p), t.to_string())).collect();
        resolve(&raw, &ctx, |p| files.get(p).cloned().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)))
            .map_err(|errs| errs.iter().map(ToString::to_string).collect())
    }

    const MINIMAL: &[(&str, &str)] = &[("ecr-repository", "web"), ("targets", "Role=web")];

    #[test]
    fn hyphenated_inputs_arrive_as_the_runner_names_them() {
        assert_eq!(action_env_name("aws-region"), "INPUT_AWS-REGION");
        assert_eq!(action_env_name("ecr-repository"), "INPUT_ECR-REPOSITORY");
        let raw = RawInputs::from_action_env(|k| (k == "INPUT_AWS-REGION").then(|| "eu-west-1".to_string()));
        assert_eq!(raw.get("aws-region"), Some("eu-west-1"));
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let req = resolve_with(MINIMAL, &[("GITHUB_SHA", "abc123"), ("AWS_REGION", "eu-west-1")], &[]).unwrap();
        assert_eq!(req.image_tag, "abc123");
        assert_eq!(req.region.as_deref(), Some("eu-west-1"));
        assert_eq!(req.container.name, "web");
        assert_eq!(req.max_concurrency, Limit::Percent(50));
        assert_eq!(req.max_errors, Limit::Count(0));
        assert_eq!(req.timeout, 600);
        assert_eq!(req.container.health_check_timeout, 60);
        assert!(req.build && !req.dry_run);
        assert_eq!(req.build_spec.context, PathBuf::from("."));
        assert_eq!(req.config_file, None);
    }

    #[test]
    fn region_falls_back_to_aws_default_region() {
        let req = resolve_with(MINIMAL, &[("GITHUB_SHA", "a"), ("AWS_DEFAULT_REGION", "ap-northeast-2")], &[]).unwrap();
        assert_eq!(req.region.as_deref(), Some("ap-northeast-2"));
    }

    #[test]
    fn multiline_inputs_are_split_trimmed_and_comments_skipped() {
        let req = resolve_with(
            &[
                ("ecr-repository", "team/web"),
                ("image-tag", "v1"),
                ("targets", "Role=web\n  Env = prod , staging \n# a comment\n\n"),
                ("ports", "80:3000\n8443:8443"),
                ("env", "RUST_LOG=info\nGREETING=hello = world"),
                ("build-args", "VERSION=1.2"),
            ],
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(
            req.targets,
            vec![
                TagFilter { key: "Role".into(), values: vec!["web".into()] },
                TagFilter { key: "Env".into(), values: vec!["prod".into(), "staging".into()] },
            ]
        );
        assert_eq!(
            req.container.ports,
            vec![PortMapping { host: 80, container: 3000 }, PortMapping { host: 8443, container: 8443 }]
        );
        assert_eq!(req.container.env[1], EnvVar { name: "GREETING".into(), value: "hello = world".into() });
        assert_eq!(req.container.name, "web", "the last path component of the repository");
        assert_eq!(req.build_spec.args, vec![EnvVar { name: "VERSION".into(), value: "1.2".into() }]);
    }

    const CONFIG: &str = "
defaults:
  ecr-repository: shop
  targets:
    - Role=web
  max-concurrency: 1
environments:
  production:
    targets: [Role=web, Env=prod]
    secret-id: prod/shop
    env:
      LOG: warn
  development:
    targets: Role=web
";

    #[test]
    fn config_environment_overrides_defaults_and_inputs_override_both() {
        let files = [(DEFAULT_CONFIG, CONFIG)];
        let req = resolve_with(&[("environment", "production"), ("image-tag", "v1")], &[], &files).unwrap();
        assert_eq!(req.repository, "shop");
        assert_eq!(req.targets.len(), 2);
        assert_eq!(req.container.secret_id.as_deref(), Some("prod/shop"));
        assert_eq!(req.max_concurrency, Limit::Count(1));
        assert_eq!(req.container.env, vec![EnvVar { name: "LOG".into(), value: "warn".into() }]);
        assert_eq!(req.config_file, Some(PathBuf::from(DEFAULT_CONFIG)));

        let req = resolve_with(
            &[("environment", "production"), ("image-tag", "v1"), ("max-concurrency", "25%")],
            &[],
            &files,
        )
        .unwrap();
        assert_eq!(req.max_concurrency, Limit::Percent(25));
        let req = resolve_with(&[("environment", "development"), ("image-tag", "v1")], &[], &files).unwrap();
        assert_eq!(req.targets.len(), 1);
        assert_eq!(req.container.secret_id, None);
    }

    #[test]
    fn an_explicit_config_file_must_exist_but_the_default_may_not() {
        let errs = resolve_with(&[("config", "deploy/ec2.yml"), ("image-tag", "v1")], &[], &[]).unwrap_err();
        assert!(errs[0].starts_with("input `config`: cannot read deploy/ec2.yml"), "{errs:?}");
        assert!(resolve_with(&[("image-tag", "v1"), ("ecr-repository", "a1"), ("targets", "A=b")], &[], &[]).is_ok());
    }

    #[test]
    fn unknown_environment_lists_the_known_ones() {
        let errs = resolve_with(&[("environment", "prod"), ("image-tag", "v1")], &[], &[(DEFAULT_CONFIG, CONFIG)])
            .unwrap_err();
        assert_eq!(
            errs[0],
            "input `environment`: \"prod\" is not an environment of .github/ec2-deploy.yml (it has: development, production); \
             add an `environments.prod` block or pick one of those"
        );
    }

    #[test]
    fn errors_name_the_config_path_a_bad_value_came_from() {
        let cfg =
            "environments:\n  production:\n    ecr-repository: shop\n    targets: [Role=web]\n    max-errors: lots\n";
        let errs = resolve_with(&[("environment", "production"), ("image-tag", "v1")], &[], &[(DEFAULT_CONFIG, cfg)])
            .unwrap_err();
        assert_eq!(
            errs,
            vec!["`environments.production.max-errors` in .github/ec2-deploy.yml: expected a number (0 or more) or a percentage such as \"10%\", got \"lots\""]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errs = resolve_with(&[("max-concurrency", "abc"), ("ports", "80")], &[], &[]).unwrap_err();
        assert_eq!(
            errs,
            vec![
                "input `ecr-repository`: is required: the ECR repository to push to and deploy from",
                "input `image-tag`: is required outside GitHub Actions (there is no GITHUB_SHA to default to)",
                "input `targets`: is required: one Key=Value[,Value...] per line naming the instances' tags, e.g. Role=web",
                "input `ports`: expected host:container such as 80:3000, got \"80\"",
                "input `max-concurrency`: expected a number (1 or more) or a percentage such as \"25%\", got \"abc\"",
            ]
        );
    }

    #[test]
    fn tag_filter_wording() {
        assert_eq!(
            TagFilter::parse("=x").unwrap_err(),
            "the tag key is empty in \"=x\": expected Key=Value[,Value...]"
        );
        assert_eq!(
            TagFilter::parse("Key=").unwrap_err(),
            "a value of tag \"Key\" is empty in \"Key=\": expected Key=Value[,Value...]"
        );
        assert_eq!(TagFilter::parse("Role").unwrap_err(), "expected Key=Value[,Value...], got \"Role\"");
        assert!(TagFilter::parse("K=a,b,c,d,e,f").unwrap_err().contains("at most 5"));
    }

    #[test]
    fn limits() {
        assert_eq!(Limit::parse("10", 1), Ok(Limit::Count(10)));
        assert_eq!(Limit::parse("10%", 1), Ok(Limit::Percent(10)));
        assert_eq!(Limit::parse("0", 0), Ok(Limit::Count(0)));
        assert!(Limit::parse("0", 1).is_err());
        assert!(Limit::parse("101%", 0).is_err());
        assert!(Limit::parse("-1", 0).is_err());
        assert!(Limit::parse("1.5", 0).is_err());
    }

    #[test]
    fn health_check_path_needs_a_port() {
        let errs = resolve_with(
            &[("ecr-repository", "web"), ("targets", "A=b"), ("image-tag", "v"), ("health-check-path", "/health")],
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            errs,
            vec!["input `health-check-path`: needs `ports`: the path is checked on the first published host port"]
        );
    }

    #[test]
    fn github_token_never_shows_in_debug_output() {
        let req = resolve_with(
            &[("ecr-repository", "web"), ("targets", "A=b"), ("image-tag", "v"), ("github-token", "ghs_sekrit")],
            &[],
            &[],
        )
        .unwrap();
        assert!(!format!("{req:?}").contains("ghs_sekrit"));
    }
}
