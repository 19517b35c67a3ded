//! The optional YAML config file (default `.github/ec2-deploy.yml`): values for any input, per
//! environment, so dev and prod differ only where they are written to differ.
//!
//! ```yaml
//! defaults:                 # every environment
//!   ecr-repository: shop
//!   ports: ["80:3000"]
//! environments:
//!   production:
//!     targets: [Role=web, Env=prod]
//!     secret-id: prod/shop
//!     max-concurrency: 25%
//! ```
//!
//! An environment (or `defaults`) may list several services of the same instances under
//! `services:`, each a block of the same keys; one step deploys them in the order listed
//! (`defaults.services` first, then those the environment adds), each with its own container,
//! record and lock. A key of a service wins over the same key of its environment and of
//! `defaults`:
//!
//! ```yaml
//! environments:
//!   production:
//!     targets: [Role=app]
//!     services:
//!       web: { ports: ["80:3000"] }
//!       worker: { command: bin/worker --queue default }
//! ```
//!
//! Keys are the input names. Unknown keys are errors, reported with their path and line by
//! serde_yaml (`environments.production: unknown field `secretid` … at line 7 column 5`).

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Deserialize;

/// A config value: a scalar, a list (one item per line of a multi-line input) or a map
/// (`KEY: value` pairs for `env` and `build-args`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    Scalar(Scalar),
    List(Vec<Scalar>),
    Map(BTreeMap<String, Scalar>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Text(s) => f.write_str(s),
        }
    }
}

impl ConfigValue {
    /// The value as the equivalent action input's text.
    pub fn as_input_text(&self) -> String {
        match self {
            ConfigValue::Scalar(s) => s.to_string(),
            ConfigValue::List(items) => items.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
            ConfigValue::Map(map) => map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n"),
        }
    }
}

/// The inputs a config block may set (all but `environment`, `config`, `dry-run` and
/// `github-token`, which belong to the run, not to the environment).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Block {
    aws_region: Option<ConfigValue>,
    ecr_repository: Option<ConfigValue>,
    registry: Option<ConfigValue>,
    image_tag: Option<ConfigValue>,
    image_digest: Option<ConfigValue>,
    build: Option<ConfigValue>,
    context: Option<ConfigValue>,
    file: Option<ConfigValue>,
    dockerfile: Option<ConfigValue>,
    build_args: Option<ConfigValue>,
    build_secrets: Option<ConfigValue>,
    target: Option<ConfigValue>,
    platform: Option<ConfigValue>,
    targets: Option<ConfigValue>,
    container_name: Option<ConfigValue>,
    ports: Option<ConfigValue>,
    env: Option<ConfigValue>,
    secret_id: Option<ConfigValue>,
    health_check_path: Option<ConfigValue>,
    health_check_timeout: Option<ConfigValue>,
    pre_deploy: Option<ConfigValue>,
    pre_deploy_target: Option<ConfigValue>,
    pre_deploy_timeout: Option<ConfigValue>,
    command: Option<ConfigValue>,
    volumes: Option<ConfigValue>,
    memory: Option<ConfigValue>,
    cpus: Option<ConfigValue>,
    log_driver: Option<ConfigValue>,
    log_options: Option<ConfigValue>,
    labels: Option<ConfigValue>,
    user: Option<ConfigValue>,
    max_concurrency: Option<ConfigValue>,
    max_errors: Option<ConfigValue>,
    pull_concurrency: Option<ConfigValue>,
    boot_wait: Option<ConfigValue>,
    on_offline: Option<ConfigValue>,
    target_groups: Option<ConfigValue>,
    batch_size: Option<ConfigValue>,
    canary: Option<ConfigValue>,
    alarms: Option<ConfigValue>,
    bake_time: Option<ConfigValue>,
    ignore_alarms_at_start: Option<ConfigValue>,
    command_timeout: Option<ConfigValue>,
    timeout: Option<ConfigValue>,
    release_parameter: Option<ConfigValue>,
    proxy: Option<ConfigValue>,
    proxy_image: Option<ConfigValue>,
    proxy_trusted: Option<ConfigValue>,
    drain_timeout: Option<ConfigValue>,
    proxy_hosts: Option<ConfigValue>,
    proxy_acme_email: Option<ConfigValue>,
    proxy_acme_ca: Option<ConfigValue>,
    proxy_acme_ca_root: Option<ConfigValue>,
    lock_timeout: Option<ConfigValue>,
    environment_url: Option<ConfigValue>,
    github_deployment: Option<ConfigValue>,
    /// Several services of the same instances (only in an environment or `defaults`).
    services: Option<IndexMap<String, Option<Block>>>,
}

/// A block's own keys, and the blocks of its services in the order the file lists them.
type Parsed = (BTreeMap<String, ConfigValue>, IndexMap<String, BTreeMap<String, ConfigValue>>);

impl Block {
    /// Splits off the services; `at` is the block's path, for the error a nested `services` gets.
    fn split(mut self, at: &str) -> Result<Parsed, String> {
        let mut services = IndexMap::new();
        for (name, block) in self.services.take().unwrap_or_default() {
            let block = block.unwrap_or_default();
            if block.services.is_some() {
                return Err(format!("{at}.services.{name}: a service cannot have `services` of its own"));
            }
            services.insert(name, block.into_map());
        }
        Ok((self.into_map(), services))
    }

    fn into_map(self) -> BTreeMap<String, ConfigValue> {
        let fields = [
            ("aws-region", self.aws_region),
            ("ecr-repository", self.ecr_repository),
            ("registry", self.registry),
            ("image-tag", self.image_tag),
            ("image-digest", self.image_digest),
            ("build", self.build),
            ("context", self.context),
            ("file", self.file),
            ("dockerfile", self.dockerfile),
            ("build-args", self.build_args),
            ("build-secrets", self.build_secrets),
            ("target", self.target),
            ("platform", self.platform),
            ("targets", self.targets),
            ("container-name", self.container_name),
            ("ports", self.ports),
            ("env", self.env),
            ("secret-id", self.secret_id),
            ("health-check-path", self.health_check_path),
            ("health-check-timeout", self.health_check_timeout),
            ("pre-deploy", self.pre_deploy),
            ("pre-deploy-target", self.pre_deploy_target),
            ("pre-deploy-timeout", self.pre_deploy_timeout),
            ("command", self.command),
            ("volumes", self.volumes),
            ("memory", self.memory),
            ("cpus", self.cpus),
            ("log-driver", self.log_driver),
            ("log-options", self.log_options),
            ("labels", self.labels),
            ("user", self.user),
            ("max-concurrency", self.max_concurrency),
            ("max-errors", self.max_errors),
            ("pull-concurrency", self.pull_concurrency),
            ("boot-wait", self.boot_wait),
            ("on-offline", self.on_offline),
            ("target-groups", self.target_groups),
            ("batch-size", self.batch_size),
            ("canary", self.canary),
            ("alarms", self.alarms),
            ("bake-time", self.bake_time),
            ("ignore-alarms-at-start", self.ignore_alarms_at_start),
            ("command-timeout", self.command_timeout),
            ("timeout", self.timeout),
            ("release-parameter", self.release_parameter),
            ("proxy", self.proxy),
            ("proxy-image", self.proxy_image),
            ("proxy-trusted", self.proxy_trusted),
            ("drain-timeout", self.drain_timeout),
            ("proxy-hosts", self.proxy_hosts),
            ("proxy-acme-email", self.proxy_acme_email),
            ("proxy-acme-ca", self.proxy_acme_ca),
            ("proxy-acme-ca-root", self.proxy_acme_ca_root),
            ("lock-timeout", self.lock_timeout),
            ("environment-url", self.environment_url),
            ("github-deployment", self.github_deployment),
        ];
        fields.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Option<Block>,
    #[serde(default)]
    environments: BTreeMap<String, Option<Block>>,
}

/// A parsed config file: the `defaults` block and each environment's block, keyed by input name,
/// and the blocks of their services.
#[derive(Debug, Default)]
pub struct ConfigFile {
    pub defaults: BTreeMap<String, ConfigValue>,
    pub environments: BTreeMap<String, BTreeMap<String, ConfigValue>>,
    pub default_services: IndexMap<String, BTreeMap<String, ConfigValue>>,
    pub environment_services: BTreeMap<String, IndexMap<String, BTreeMap<String, ConfigValue>>>,
}

impl ConfigFile {
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        if text.trim().is_empty() {
            return Ok(ConfigFile::default());
        }
        let file: File = serde_yaml::from_str(text).map_err(|e| {
            format!("{e}; keys are input names (see action.yml), under `defaults:` or `environments: <name>:`")
        })?;
        let mut parsed = ConfigFile::default();
        if let Some(block) = file.defaults {
            (parsed.defaults, parsed.default_services) = block.split("defaults")?;
        }
        for (name, block) in file.environments {
            let (own, services) = block.unwrap_or_default().split(&format!("environments.{name}"))?;
            parsed.environments.insert(name.clone(), own);
            parsed.environment_services.insert(name, services);
        }
        Ok(parsed)
    }

    /// The services an environment deploys, in order: those of `defaults`, then those the
    /// environment adds. Empty when the file lists none.
    pub fn services_of(&self, environment: Option<&str>) -> Vec<String> {
        let mut names: Vec<String> = self.default_services.keys().cloned().collect();
        if let Some(own) = environment.and_then(|e| self.environment_services.get(e)) {
            names.extend(own.keys().filter(|n| !self.default_services.contains_key(*n)).cloned());
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::INPUTS;

    #[test]
    fn a_block_accepts_exactly_the_inputs_marked_for_the_config_file() {
        let yaml: String = INPUTS.iter().filter(|s| s.in_config).map(|s| format!("  {}: x\n", s.name)).collect();
        let parsed = ConfigFile::parse(&format!("defaults:\n{yaml}")).unwrap();
        let want: Vec<&str> = INPUTS.iter().filter(|s| s.in_config).map(|s| s.name).collect();
        let mut got: Vec<&str> = parsed.defaults.keys().map(String::as_str).collect();
        got.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(got, want_sorted);
        for s in INPUTS.iter().filter(|s| !s.in_config) {
            assert!(
                ConfigFile::parse(&format!("defaults:\n  {}: x\n", s.name)).is_err(),
                "{} must not be accepted",
                s.name
            );
        }
    }

    #[test]
    fn unknown_keys_are_errors_with_path_and_line() {
        let err =
            ConfigFile::parse("environments:\n  production:\n    targets: [Role=web]\n    secretid: x\n").unwrap_err();
        assert!(err.starts_with("environments.production: unknown field `secretid`, expected one of"), "{err}");
        assert!(err.contains("at line 4 column 5"), "{err}");
        let err = ConfigFile::parse("default:\n  targets: x\n").unwrap_err();
        assert!(err.starts_with("unknown field `default`, expected `defaults` or `environments`"), "{err}");
    }

    #[test]
    fn services_keep_the_order_of_the_file_and_cannot_nest() {
        let parsed = ConfigFile::parse(
            "defaults:\n  services:\n    web: {ports: [\"80:3000\"]}\n    api:\nenvironments:\n  production:\n    targets: [Role=app]\n    services:\n      worker: {command: [bin/worker]}\n      web: {memory: 512m}\n",
        )
        .unwrap();
        assert_eq!(parsed.services_of(Some("production")), ["web", "api", "worker"]);
        assert_eq!(parsed.services_of(None), ["web", "api"]);
        assert_eq!(parsed.environment_services["production"]["web"]["memory"].as_input_text(), "512m");
        assert!(!parsed.environments["production"].contains_key("services"));
        let err = ConfigFile::parse("defaults:\n  services:\n    web:\n      services: {}\n").unwrap_err();
        assert_eq!(err, "defaults.services.web: a service cannot have `services` of its own");
        let err = ConfigFile::parse("defaults:\n  services:\n    web: {portz: x}\n").unwrap_err();
        assert!(err.contains("unknown field `portz`"), "{err}");
    }

    #[test]
    fn yaml_syntax_errors_say_where() {
        let err = ConfigFile::parse("defaults:\n  targets: [Role=web\n").unwrap_err();
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn lists_and_maps_become_input_lines() {
        let parsed = ConfigFile::parse(
            "defaults:\n  targets: [Role=web, Env=prod]\n  env: {B: 2, A: x}\n  max-errors: 1\n  build: false\n",
        )
        .unwrap();
        assert_eq!(parsed.defaults["targets"].as_input_text(), "Role=web\nEnv=prod");
        assert_eq!(parsed.defaults["env"].as_input_text(), "A=x\nB=2");
        assert_eq!(parsed.defaults["max-errors"].as_input_text(), "1");
        assert_eq!(parsed.defaults["build"].as_input_text(), "false");
    }
}
