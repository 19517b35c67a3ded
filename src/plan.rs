//! The plan: request + what was found in AWS → exactly what will happen, before anything changes.
//!
//! Pure: the engine gathers the [`Facts`] with read-only calls, [`make`] decides, the plan is
//! printed (and is all a dry run does). Every reason not to go ahead is reported at once, each
//! with the input to fix.

use std::fmt;

use serde::Serialize;

use crate::fleet::{ManagedInstance, Ping};
use crate::inputs::{ContainerSpec, DeployRequest, Limit, TagFilter};
use crate::release::Recorded;

/// What the read-only calls found.
#[derive(Debug, Clone)]
pub struct Facts {
    pub region: String,
    pub registry: String,
    pub repository_exists: bool,
    /// The digest of the requested tag, when the registry has it.
    pub existing_digest: Option<String>,
    /// A tag to take the layer cache from.
    pub cache_from: Option<String>,
    pub instances: Vec<ManagedInstance>,
    /// `None`: no secret asked for; `Some(None)`: asked for and missing.
    pub secret_arn: Option<Option<String>>,
    /// Target groups given that do not exist.
    pub missing_target_groups: Vec<String>,
    /// The release the environment runs now, from the release record.
    pub live: Option<Recorded>,
    /// With `rollback`: the recorded release to go back to (None: there is none).
    pub rollback_to: Option<Recorded>,
    /// The run-order guard's verdict: why this commit must not replace the live one.
    pub older_than_live: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum ImageSource {
    /// Build and push; the cache comes from this reference.
    Build { cache_from: Option<String> },
    /// The tag is already in the registry: deploy that digest, build nothing.
    Existing { digest: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub environment: Option<String>,
    pub region: String,
    pub registry: String,
    pub repository: String,
    pub image_tag: String,
    /// `registry/repository:tag`
    pub image: String,
    pub source: ImageSource,
    pub targets: Vec<TagFilter>,
    pub instances: Vec<ManagedInstance>,
    /// With `on-offline: skip`: matching instances left out because their agent is not connected.
    pub skipped: Vec<ManagedInstance>,
    pub container: ContainerSpec,
    pub secret_arn: Option<String>,
    pub max_concurrency: Limit,
    pub max_errors: Limit,
    pub release_parameter: String,
    pub live: Option<Recorded>,
    pub rollback_to: Option<Recorded>,
    pub target_groups: Vec<String>,
    /// With target groups: the instance ids of each batch, in order.
    pub batches: Vec<Vec<String>>,
    pub timeout: u32,
    pub dry_run: bool,
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
    #[error("input `rollback`: {parameter} records no earlier release with a different image to go back to")]
    NothingToRollBack { parameter: String },
    #[error("this push deploys an older commit than the live release ({0}); redeploy it explicitly (workflow_dispatch with `image-tag`) if that is what you want")]
    OlderThanLive(String),
}

/// Decides what will happen, or why it cannot.
pub fn make(req: &DeployRequest, facts: Facts) -> Result<Plan, Vec<PlanError>> {
    let mut errors = vec![];
    if !facts.repository_exists {
        errors.push(PlanError::RepositoryMissing { repository: req.repository.clone(), region: facts.region.clone() });
    }
    if req.rollback && facts.rollback_to.is_none() {
        errors.push(PlanError::NothingToRollBack { parameter: req.release_parameter.clone() });
    }
    if let Some(why) = &facts.older_than_live {
        errors.push(PlanError::OlderThanLive(why.clone()));
    }
    let source = match (&facts.existing_digest, req.build) {
        (None, _) if req.image_digest.is_some() => {
            if facts.repository_exists {
                errors.push(PlanError::DigestMissing {
                    digest: req.image_digest.clone().unwrap_or_default(),
                    repository: req.repository.clone(),
                });
            }
            ImageSource::Build { cache_from: None }
        }
        (Some(digest), _) => ImageSource::Existing { digest: digest.clone() },
        (None, true) => ImageSource::Build {
            cache_from: facts.cache_from.as_ref().map(|tag| format!("{}/{}:{}", facts.registry, req.repository, tag)),
        },
        (None, false) => {
            if facts.repository_exists {
                errors.push(PlanError::TagMissing { tag: req.image_tag.clone(), repository: req.repository.clone() });
            }
            ImageSource::Build { cache_from: None }
        }
    };
    let targets_text = req.targets.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and ");
    if facts.instances.is_empty() {
        errors.push(PlanError::NoInstances { targets: targets_text.clone() });
    }
    let offline: Vec<&ManagedInstance> = facts.instances.iter().filter(|i| i.ping != Ping::Online).collect();
    let skipped: Vec<ManagedInstance> =
        if req.skip_offline { offline.iter().map(|i| (*i).clone()).collect() } else { vec![] };
    if req.skip_offline && !facts.instances.is_empty() && offline.len() == facts.instances.len() {
        errors.push(PlanError::AllOffline { targets: targets_text });
    }
    if !offline.is_empty() && !req.skip_offline {
        errors.push(PlanError::Offline {
            count: offline.len(),
            list: offline.iter().map(|i| format!("{} {}", i.id, i.ping)).collect::<Vec<_>>().join(", "),
        });
    }
    let secret_arn = match (&req.container.secret_id, facts.secret_arn) {
        (Some(id), Some(None)) | (Some(id), None) => {
            errors.push(PlanError::SecretMissing { id: id.clone(), region: facts.region.clone() });
            None
        }
        (_, Some(arn)) => arn,
        (None, None) => None,
    };
    for arn in &facts.missing_target_groups {
        errors.push(PlanError::TargetGroupMissing { arn: arn.clone() });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let instances: Vec<ManagedInstance> =
        facts.instances.into_iter().filter(|i| !skipped.iter().any(|s| s.id == i.id)).collect();
    let batches = if req.target_groups.is_empty() {
        vec![]
    } else {
        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        crate::rollout::batches(&ids, req.canary, req.batch_size)
    };
    Ok(Plan {
        environment: req.environment.clone(),
        region: facts.region,
        image: format!("{}/{}:{}", facts.registry, req.repository, req.image_tag),
        registry: facts.registry,
        repository: req.repository.clone(),
        image_tag: req.image_tag.clone(),
        source,
        targets: req.targets.clone(),
        instances,
        skipped,
        container: req.container.clone(),
        secret_arn,
        max_concurrency: req.max_concurrency,
        max_errors: req.max_errors,
        release_parameter: req.release_parameter.clone(),
        live: facts.live,
        rollback_to: facts.rollback_to,
        target_groups: req.target_groups.clone(),
        batches,
        timeout: req.timeout,
        dry_run: req.dry_run,
    })
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env = self.environment.as_deref().unwrap_or("(no environment)");
        writeln!(f, "Plan: deploy {} to {env} in {}", self.image, self.region)?;
        match &self.source {
            ImageSource::Build { cache_from } => writeln!(
                f,
                "  image      build and push{}",
                cache_from
                    .as_ref()
                    .map(|c| format!(" (layer cache from {c})"))
                    .unwrap_or_else(|| " (no earlier image to take a layer cache from)".into())
            )?,
            ImageSource::Existing { digest } => {
                writeln!(f, "  image      already in the registry as {digest}: nothing to build")?
            }
        }
        if let Some(to) = &self.rollback_to {
            writeln!(
                f,
                "  rollback   to version {} of the release record: {} (deployed {})",
                to.version, to.release.tag, to.release.deployed_at
            )?;
        }
        match &self.live {
            Some(live) => writeln!(
                f,
                "  release    live: version {} of {} ({}, deployed {})",
                live.version, self.release_parameter, live.release.tag, live.release.deployed_at
            )?,
            None => writeln!(f, "  release    first release recorded in {}", self.release_parameter)?,
        }
        let c = &self.container;
        let ports = if c.ports.is_empty() {
            "none".to_string()
        } else {
            c.ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        writeln!(f, "  container  {} (ports {ports})", c.name)?;
        let env_names: Vec<&str> = c.env.iter().map(|e| e.name.as_str()).collect();
        writeln!(f, "  env        {}", if env_names.is_empty() { "none".to_string() } else { env_names.join(", ") })?;
        match (&c.secret_id, &self.secret_arn) {
            (Some(id), Some(arn)) => {
                writeln!(f, "  secret     {id} (found: {arn}); its keys become env vars, read on each instance")?
            }
            _ => writeln!(f, "  secret     none")?,
        }
        match &c.health_check_path {
            Some(path) => {
                writeln!(f, "  health     GET {path} on port {} within {}s", c.ports[0].host, c.health_check_timeout)?
            }
            None => writeln!(
                f,
                "  health     the image's HEALTHCHECK if it has one, else running; within {}s",
                c.health_check_timeout
            )?,
        }
        if self.batches.is_empty() {
            writeln!(
                f,
                "  rollout    one SSM Run Command to the tags, max-concurrency {}, max-errors {}, timeout {}s per instance",
                self.max_concurrency, self.max_errors, self.timeout
            )?;
        } else {
            let groups: Vec<&str> =
                self.target_groups.iter().map(|g| g.split_once("targetgroup/").map(|(_, n)| n).unwrap_or(g)).collect();
            writeln!(
                f,
                "  rollout    {} batches through target groups {}: drain, swap, healthy; timeout {}s per instance",
                self.batches.len(),
                groups.join(", "),
                self.timeout
            )?;
            for (n, batch) in self.batches.iter().enumerate() {
                let canary = if n == 0 && batch.len() == 1 && self.batches.len() > 1 { " (canary)" } else { "" };
                writeln!(f, "    batch {}{canary}: {}", n + 1, batch.join(", "))?;
            }
        }
        let targets = self.targets.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and ");
        writeln!(f, "  instances  {} with tags {targets}:", self.instances.len())?;
        for i in &self.instances {
            writeln!(
                f,
                "    {}  {:<16} {:<15} {}",
                i.id,
                i.name.as_deref().unwrap_or("-"),
                i.ip.as_deref().unwrap_or("-"),
                i.ping
            )?;
        }
        if !self.skipped.is_empty() {
            writeln!(f, "  skipped    {} with no SSM agent connection (on-offline: skip):", self.skipped.len())?;
            for i in &self.skipped {
                writeln!(f, "    {}  {:<16} {}", i.id, i.name.as_deref().unwrap_or("-"), i.ping)?;
            }
        }
        if self.dry_run {
            writeln!(f, "Dry run: nothing was built, pushed or sent.")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::{BuildSpec, EnvVar, PortMapping};

    fn request() -> DeployRequest {
        DeployRequest {
            environment: Some("production".into()),
            region: Some("eu-west-1".into()),
            repository: "shop".into(),
            registry: None,
            image_tag: "v2".into(),
            build: true,
            build_spec: BuildSpec { context: ".".into(), dockerfile: None, args: vec![], target: None },
            targets: vec![
                TagFilter { key: "Role".into(), values: vec!["web".into()] },
                TagFilter { key: "Env".into(), values: vec!["prod".into()] },
            ],
            container: ContainerSpec {
                name: "shop".into(),
                ports: vec![PortMapping { host: 80, container: 3000 }],
                env: vec![EnvVar { name: "RUST_LOG".into(), value: "info".into() }],
                secret_id: Some("prod/shop".into()),
                health_check_path: Some("/health".into()),
                health_check_timeout: 60,
            },
            max_concurrency: Limit::Percent(50),
            max_errors: Limit::Count(0),
            target_groups: vec![],
            skip_offline: false,
            batch_size: Limit::Percent(25),
            canary: true,
            timeout: 600,
            release_parameter: "/ec2-deploy/production/shop".into(),
            rollback: false,
            lock_timeout: 600,
            environment_url: None,
            commit: None,
            image_digest: None,
            dry_run: true,
            github_token: None,
            config_file: None,
        }
    }

    fn instance(id: &str, name: &str, ip: &str, ping: Ping) -> ManagedInstance {
        ManagedInstance { id: id.into(), name: Some(name.into()), ping, ip: Some(ip.into()) }
    }

    fn facts() -> Facts {
        Facts {
            region: "eu-west-1".into(),
            registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
            repository_exists: true,
            existing_digest: None,
            cache_from: Some("v1".into()),
            instances: vec![
                instance("i-0123456789abcdef0", "web-1", "10.0.1.11", Ping::Online),
                instance("i-0123456789abcdef1", "web-2", "10.0.2.12", Ping::Online),
            ],
            secret_arn: Some(Some("arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/shop-AbCdEf".into())),
            missing_target_groups: vec![],
            live: None,
            rollback_to: None,
            older_than_live: None,
        }
    }

    #[test]
    fn plan_text_for_a_build() {
        let plan = make(&request(), facts()).unwrap();
        insta::assert_snapshot!(plan.to_string());
    }

    #[test]
    fn plan_text_for_an_existing_tag() {
        let mut f = facts();
        f.existing_digest = Some("sha256:feedface".into());
        let mut req = request();
        req.container.secret_id = None;
        req.dry_run = false;
        f.secret_arn = None;
        let plan = make(&req, f).unwrap();
        assert_eq!(plan.source, ImageSource::Existing { digest: "sha256:feedface".into() });
        insta::assert_snapshot!(plan.to_string());
    }

    #[test]
    fn every_reason_not_to_go_ahead_is_reported() {
        let mut f = facts();
        f.instances = vec![];
        f.secret_arn = Some(None);
        let errs = make(&request(), f).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        insta::assert_snapshot!(text.join("\n"));
    }

    #[test]
    fn offline_instances_stop_the_plan() {
        let mut f = facts();
        f.instances[1].ping = Ping::ConnectionLost;
        let errs = make(&request(), f).unwrap_err();
        assert_eq!(errs, vec![PlanError::Offline { count: 1, list: "i-0123456789abcdef1 ConnectionLost".into() }]);
    }

    #[test]
    fn plan_text_for_batches_behind_a_load_balancer() {
        let mut req = request();
        req.target_groups =
            vec!["arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef".into()];
        req.batch_size = Limit::Count(1);
        let mut f = facts();
        f.instances.push(instance("i-0123456789abcdef2", "web-3", "10.0.3.13", Ping::Online));
        let plan = make(&req, f).unwrap();
        assert_eq!(plan.batches.len(), 3);
        insta::assert_snapshot!(plan.to_string());
    }

    #[test]
    fn with_on_offline_skip_offline_instances_are_left_out_and_named() {
        let mut req = request();
        req.skip_offline = true;
        let mut f = facts();
        f.instances[1].ping = Ping::ConnectionLost;
        let plan = make(&req, f.clone()).unwrap();
        assert_eq!(plan.instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["i-0123456789abcdef0"]);
        assert_eq!(plan.skipped.len(), 1);
        assert!(
            plan.to_string()
                .contains("  skipped    1 with no SSM agent connection (on-offline: skip):\n    i-0123456789abcdef1"),
            "{plan}"
        );
        f.instances[0].ping = Ping::ConnectionLost;
        assert!(matches!(make(&req, f).unwrap_err()[..], [PlanError::AllOffline { .. }]));
    }

    #[test]
    fn a_missing_tag_without_build_stops_the_plan() {
        let mut req = request();
        req.build = false;
        let errs = make(&req, facts()).unwrap_err();
        assert_eq!(errs, vec![PlanError::TagMissing { tag: "v2".into(), repository: "shop".into() }]);
    }
}
