//! [`make`]: the request and the facts → the plan, or every reason it cannot be. Each step below
//! decides one part of the plan and adds what stops it to the errors; the plan is made only when
//! there are none.

use std::time::Duration;

use super::facts::{self, Facts};
use super::{
    batches, proxy_tag, Announce, ConvergePlan, ImageSource, Plan, PlanError, PreDeployPlan, ProxyPlan, ProxySource,
    RecordPlan, Rollout, WatchPlan,
};
use crate::inputs::DeployRequest;
use crate::model::{
    AlarmSelector, AlarmState, AlarmStatus, ContainerSpec, Digest, ImageRef, ImageTag, InstanceId, ManagedInstance,
    Ping, RegistryHost, Repository,
};
use crate::ports::GroupTimings;
use crate::release::Recorded;

/// What this run deploys: the request's image and settings, or (rollback, converge) a recorded
/// release's.
struct Deployed {
    recorded: Option<Recorded>,
    registry: RegistryHost,
    repository: Repository,
    image_tag: ImageTag,
    container: ContainerSpec,
    /// The digest asked for: the recorded release's, or `image-digest`.
    wanted_digest: Option<Digest>,
}

/// The largest value Parameter Store takes (the advanced tier, which Intelligent-Tiering moves a
/// record over 4 KB to).
pub const RECORD_LIMIT: usize = 8192;

/// How long the release record this deploy writes will be, known before anything changes: the
/// record and its script header rendered with digests of their real length (the image is not
/// built yet) and the longest dates and versions it can hold.
fn record_size(facts: &Facts, d: &Deployed) -> usize {
    let digest = Digest::parse(&format!("sha256:{}", "0".repeat(64))).expect("a digest");
    let image = ImageRef { registry: d.registry.clone(), repository: d.repository.clone(), digest };
    let proxy = d.container.proxied_port().map(|_| image.clone());
    let header = crate::instance::header(&crate::instance::ScriptParams {
        mode: crate::instance::Mode::Deploy { image: &image },
        registry: &d.registry,
        release: &d.image_tag,
        container: &d.container,
        proxy: proxy.as_ref(),
    })
    .and_then(|h| crate::instance::versioned(h, 99_999_999))
    .unwrap_or_default();
    let from = d.recorded.as_ref().map(|r| &r.release);
    let release = crate::release::Release {
        image,
        tag: d.image_tag.clone(),
        commit: from.map_or(facts.run.commit.clone(), |r| r.commit.clone()),
        commit_time: from.map_or(facts.run.commit_time.clone(), |r| r.commit_time.clone()),
        deployed_at: "2026-12-05T00:00:00.000000000+00:00".into(),
        run_url: facts.run.run_url.clone(),
        container: d.container.clone(),
        header,
        rolled_back_from: Some(i64::MAX),
        proxy_image: proxy,
        // The most a recorded deploy's timings take: every phase the script reports, with
        // milliseconds of a long run.
        timings: Some(crate::release::Timings {
            total_ms: 99_999_999,
            pull_ms: Some(99_999_999),
            batches: 9_999,
            phases: ["prepare", "login", "pull", "secret", "predeploy", "start", "health", "switch", "drain", "finish"]
                .map(|p| (p.to_string(), 99_999_999))
                .to_vec(),
        }),
    };
    crate::release::schema::encode(&release).len()
}

/// Decides what will happen, or why it cannot.
pub fn make(req: &DeployRequest, mut facts: Facts) -> Result<Plan, Vec<PlanError>> {
    let mut errors = refusals(req, &facts);
    let deployed = deployed(req, &facts);
    let source = image_source(req, &facts, &deployed, &mut errors);
    if facts.instances.is_empty() {
        errors.push(PlanError::NoInstances { targets: targets_text(req) });
    }
    // Judged on every instance with the tags: a converge keeps only the drifted ones below.
    let every_offline = !facts.instances.is_empty() && facts.instances.iter().all(|i| i.ping != Ping::Online);
    // A converge deploys to the drifted instances only (the offline ones count as drifted).
    let converge = facts.drift.take().map(|survey| ConvergePlan { survey });
    if let Some(c) = &converge {
        facts.instances.retain(|i| c.drifted().any(|d| d.instance.id == i.id));
    }
    let skipped = offline_instances(req, &facts, every_offline, &mut errors);
    let secret_arn = secret_arn(&deployed.container, &facts, &mut errors);
    for arn in &facts.missing_target_groups {
        errors.push(PlanError::TargetGroupMissing { arn: arn.to_string() });
    }
    if let Some(target) = req.pre_deploy.as_ref().and_then(|p| p.target.as_ref()) {
        if !facts.instances.iter().any(|i| &i.id == target && !skipped.iter().any(|s| &s.id == target)) {
            errors.push(PlanError::PreDeployTarget { id: target.to_string() });
        }
    }
    let watch = watch_plan(req, &facts.alarms, &mut errors);
    let bytes = record_size(&facts, &deployed);
    if bytes > RECORD_LIMIT {
        errors.push(PlanError::RecordTooBig { bytes, limit: RECORD_LIMIT });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let instances: Vec<ManagedInstance> =
        std::mem::take(&mut facts.instances).into_iter().filter(|i| !skipped.iter().any(|s| s.id == i.id)).collect();
    let proxy = proxy_plan(req, &facts, &deployed);
    let rollout = rollout(req, &instances, &skipped, converge.is_some(), &proxy, facts.group_timings);
    let pre_deploy = pre_deploy_plan(req, &facts, &deployed, &rollout, &instances);
    let (announce, record) = announce_and_record(req, &mut facts, &deployed, converge.is_some());
    let Deployed { registry, repository, image_tag, container, .. } = deployed;
    let mut plan = Plan {
        environment: req.environment.clone(),
        region: facts.region,
        image: format!("{registry}/{repository}:{image_tag}"),
        registry,
        repository,
        image_tag,
        source,
        targets: req.targets.clone(),
        instances,
        skipped,
        container,
        secret_arn,
        proxy,
        rollout,
        pre_deploy,
        timeout: req.timeout,
        pull_first: None,
        boot_wait: req.boot_wait,
        watch,
        converge,
        record,
        lock: facts.lock,
        announce,
        dry_run: req.dry_run,
        auth: facts.auth,
    };
    // One pull per instance at once beats one per batch; a single batch pulls in its own swap.
    plan.pull_first = Some(req.pull_concurrency).filter(|_| plan.batches() > 1);
    Ok(plan)
}

/// What stops the run whatever it deploys: an unreadable record, nothing to roll back or
/// converge to, a commit older than the live one.
fn refusals(req: &DeployRequest, facts: &Facts) -> Vec<PlanError> {
    let mut errors = vec![];
    if let Some(e) = &facts.unreadable {
        errors.push(PlanError::Unreadable(e.to_string()));
    }
    let parameter = req.release_parameter.to_string();
    match (req.rollback_to, &facts.rollback_to, &facts.live) {
        _ if !req.rollback || facts.unreadable.is_some() => {}
        (Some(version), None, _) => {
            let known = facts.versions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            let known = if known.is_empty() { "none".to_string() } else { known };
            errors.push(PlanError::NoSuchVersion { parameter, version, known });
        }
        (Some(version), Some(_), Some(live)) if live.version == version => {
            errors.push(PlanError::RollbackToLive { version });
        }
        (None, None, _) => errors.push(PlanError::NothingToRollBack { parameter }),
        _ => {}
    }
    if req.converge && facts.live.is_none() && facts.unreadable.is_none() {
        errors.push(PlanError::NothingToConverge { parameter: req.release_parameter.to_string() });
    }
    if let Some(why) = &facts.older_than_live {
        errors.push(PlanError::OlderThanLive(why.clone()));
    }
    errors
}

/// A rollback deploys the recorded release before the live one; a converge the live one: its
/// image, tag and settings. Anything else deploys the request's.
fn deployed(req: &DeployRequest, facts: &Facts) -> Deployed {
    let recorded = facts::recorded_release(req, facts.rollback_to.as_ref(), facts.live.as_ref()).cloned();
    match recorded {
        Some(to) => Deployed {
            registry: to.release.image.registry.clone(),
            repository: to.release.image.repository.clone(),
            image_tag: to.release.tag.clone(),
            container: to.release.container.clone(),
            wanted_digest: Some(to.release.image.digest.clone()),
            recorded: Some(to),
        },
        None => Deployed {
            recorded: None,
            registry: req.registry.clone().unwrap_or_else(|| facts.auth.host.clone()),
            repository: req.repository.clone(),
            image_tag: req.image_tag.clone(),
            container: req.container.clone(),
            wanted_digest: req.image_digest.clone(),
        },
    }
}

/// Where the image comes from: the registry has it, or it is built (a digest asked for that the
/// registry lacks, or a tag without `build`, stops the plan).
fn image_source(req: &DeployRequest, facts: &Facts, d: &Deployed, errors: &mut Vec<PlanError>) -> ImageSource {
    let repository = &d.repository;
    if !facts.repository_exists {
        errors.push(PlanError::RepositoryMissing {
            repository: repository.to_string(),
            region: facts.region.to_string(),
        });
    }
    match (&facts.existing_digest, &d.wanted_digest) {
        (Some(digest), _) => ImageSource::Existing { digest: digest.clone() },
        (None, Some(digest)) => {
            if facts.repository_exists {
                errors.push(match (&d.recorded, req.converge) {
                    (Some(to), false) => {
                        PlanError::RollbackImageGone { version: to.version, image: to.release.image.to_string() }
                    }
                    (Some(live), true) => {
                        PlanError::LiveImageGone { version: live.version, image: live.release.image.to_string() }
                    }
                    (None, _) => {
                        PlanError::DigestMissing { digest: digest.to_string(), repository: repository.to_string() }
                    }
                });
            }
            ImageSource::Build { spec: req.build_spec.clone(), cache_from: None }
        }
        (None, None) if req.build => ImageSource::Build {
            spec: req.build_spec.clone(),
            cache_from: facts.cache_from.as_ref().map(|tag| format!("{}/{repository}:{tag}", d.registry)),
        },
        (None, None) => {
            if facts.repository_exists {
                errors.push(PlanError::TagMissing { tag: d.image_tag.to_string(), repository: repository.to_string() });
            }
            ImageSource::Build { spec: req.build_spec.clone(), cache_from: None }
        }
    }
}

/// The instances left out because their agent is offline (`on-offline: skip`); without skip, an
/// offline instance stops the plan, as does every instance with the tags offline.
fn offline_instances(
    req: &DeployRequest,
    facts: &Facts,
    every_offline: bool,
    errors: &mut Vec<PlanError>,
) -> Vec<ManagedInstance> {
    let offline: Vec<&ManagedInstance> = facts.instances.iter().filter(|i| i.ping != Ping::Online).collect();
    if req.skip_offline && every_offline {
        errors.push(PlanError::AllOffline { targets: targets_text(req) });
    }
    if !offline.is_empty() && !req.skip_offline {
        errors.push(PlanError::Offline {
            count: offline.len(),
            list: offline.iter().map(|i| format!("{} {}", i.id, i.ping)).collect::<Vec<_>>().join(", "),
        });
    }
    if req.skip_offline {
        offline.into_iter().cloned().collect()
    } else {
        vec![]
    }
}

/// The tags that find the instances, in words.
fn targets_text(req: &DeployRequest) -> String {
    req.targets.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and ")
}

/// The secret's ARN, when the container names one; a missing secret stops the plan.
fn secret_arn(container: &ContainerSpec, facts: &Facts, errors: &mut Vec<PlanError>) -> Option<String> {
    match (&container.secret_id, &facts.secret_arn) {
        (Some(id), Some(None)) | (Some(id), None) => {
            errors.push(PlanError::SecretMissing { id: id.to_string(), region: facts.region.to_string() });
            None
        }
        (_, Some(arn)) => arn.clone(),
        (None, None) => None,
    }
}

/// The per-instance proxy, when the container has a proxied port: its image (the recorded
/// release's, the copy already in the repository, or one to copy there).
fn proxy_plan(req: &DeployRequest, facts: &Facts, d: &Deployed) -> Option<ProxyPlan> {
    // The live release ran without the proxy: this deploy moves each instance to it, with a short
    // gap on the port while the proxy takes it over.
    let migration = d.container.proxied_port().is_some()
        && facts.live.as_ref().is_some_and(|live| live.release.container.proxied_port().is_none());
    d.container.proxied_port().map(|port| ProxyPlan {
        source: match d.recorded.as_ref().and_then(|to| to.release.proxy_image.clone()) {
            Some(image) => ProxySource::Existing { image },
            None => match &facts.proxy_existing {
                Some(digest) => ProxySource::Existing {
                    image: ImageRef {
                        registry: d.registry.clone(),
                        repository: d.repository.clone(),
                        digest: digest.clone(),
                    },
                },
                None => ProxySource::Copy { from: req.proxy_image.clone(), to: proxy_tag(&req.proxy_image) },
            },
        },
        port,
        direct: d.container.direct_ports().to_vec(),
        migration,
    })
}

/// By tags (one command, SSM's concurrency) or in batches behind the target groups, drained
/// unless every port answers through the proxy on each swap.
fn rollout(
    req: &DeployRequest,
    instances: &[ManagedInstance],
    skipped: &[ManagedInstance],
    converge: bool,
    proxy: &Option<ProxyPlan>,
    timings: Option<GroupTimings>,
) -> Rollout {
    if req.target_groups.is_empty() {
        return Rollout::ByTags {
            max_concurrency: req.max_concurrency,
            max_errors: req.max_errors,
            by_ids: !skipped.is_empty() || converge,
        };
    }
    // Every port of the container keeps answering through each swap: the proxy holds the only one.
    let zero_downtime = proxy.as_ref().is_some_and(|p| p.direct.is_empty() && !p.migration);
    let ids: Vec<InstanceId> = instances.iter().map(|i| i.id.clone()).collect();
    Rollout::Batches {
        target_groups: req.target_groups.clone(),
        batches: batches(&ids, req.canary, req.batch_size),
        drain: !zero_downtime,
        timings: timings.unwrap_or(GroupTimings {
            deregistration_delay: Duration::from_secs(300),
            time_to_healthy: Duration::from_secs(155),
        }),
    }
}

/// `pre-deploy`, on the instance that would get the release first, with why it is skipped when
/// it is (none when there is no instance to run it on: a converge with nothing drifted).
fn pre_deploy_plan(
    req: &DeployRequest,
    facts: &Facts,
    d: &Deployed,
    rollout: &Rollout,
    instances: &[ManagedInstance],
) -> Option<PreDeployPlan> {
    let p = req.pre_deploy.as_ref()?;
    // The canary, or the first instance: the one that would get the release first.
    let first = match rollout {
        Rollout::Batches { batches, .. } => batches.first().and_then(|b| b.first()).cloned(),
        Rollout::ByTags { .. } => instances.first().map(|i| i.id.clone()),
    };
    let live_already = facts.live.as_ref().is_some_and(|live| {
        d.wanted_digest.as_ref().or(facts.existing_digest.as_ref()) == Some(&live.release.image.digest)
            && live.release.container == d.container
    });
    Some(PreDeployPlan {
        command: p.command.clone(),
        target: p.target.clone().or(first)?,
        timeout: p.timeout,
        skipped: if facts.rollback_to.is_some() {
            Some("a rollback never runs it".into())
        } else if req.converge {
            Some("a converge redeploys the live release, and does not run it again".into())
        } else if live_already {
            Some("this release is live already, and a redeploy of it does not run it again".into())
        } else {
            None
        },
    })
}

/// The GitHub deployment to report to, and the release record to write: what the run is (a
/// deploy, a rollback or a converge) and the commit it deploys.
fn announce_and_record(req: &DeployRequest, facts: &mut Facts, d: &Deployed, converge: bool) -> (Announce, RecordPlan) {
    let rollback_to = facts.rollback_to.take();
    let image_tag = &d.image_tag;
    let (what, commit, commit_time) = match (&rollback_to, &d.recorded) {
        (Some(to), _) => {
            (format!("rollback to {}", to.release.tag), to.release.commit.clone(), to.release.commit_time.clone())
        }
        (None, Some(live)) => {
            (format!("converge to {}", live.release.tag), live.release.commit.clone(), live.release.commit_time.clone())
        }
        (None, None) => (format!("deploy {image_tag}"), facts.run.commit.clone(), facts.run.commit_time.clone()),
    };
    let announce = Announce {
        sha: facts.run.commit.clone(),
        environment: req.environment.clone(),
        payload: serde_json::json!({
            "image_tag": image_tag,
            "image_digest": d.wanted_digest,
            "repository": d.repository,
            "rollback": rollback_to.is_some(),
            "converge": converge,
        }),
        what,
        environment_url: req.environment_url.clone(),
        log_url: facts.run.run_url.clone(),
        mode: req.github_deployment,
    };
    let record = RecordPlan {
        parameter: req.release_parameter.clone(),
        live: facts.live.take(),
        rollback_to,
        commit,
        commit_time,
        run_url: facts.run.run_url.clone(),
    };
    (announce, record)
}

/// The alarms to watch: each name must exist and each prefix match one; one in ALARM already
/// stops the plan unless `ignore-alarms-at-start`, which leaves it unwatched.
fn watch_plan(req: &DeployRequest, alarms: &[AlarmStatus], errors: &mut Vec<PlanError>) -> Option<WatchPlan> {
    if req.alarms.is_empty() {
        return None;
    }
    for selector in &req.alarms {
        if !alarms.iter().any(|a| selector.matches(&a.name)) {
            errors.push(PlanError::AlarmMissing(match selector {
                AlarmSelector::Name(n) => format!("there is no CloudWatch alarm named {n:?}"),
                AlarmSelector::Prefix(p) => format!("no CloudWatch alarm's name starts with {p:?}"),
            }));
        }
    }
    let firing: Vec<&AlarmStatus> = alarms.iter().filter(|a| a.state == AlarmState::Alarm).collect();
    if !firing.is_empty() && !req.ignore_alarms_at_start {
        let list: Vec<String> = firing.iter().map(|a| format!("{} ({})", a.name, a.reason)).collect();
        errors.push(PlanError::AlarmAtStart(format!(
            "{} {}",
            list.join(", "),
            if list.len() == 1 { "is" } else { "are" }
        )));
    }
    Some(WatchPlan {
        selectors: req.alarms.clone(),
        bake: req.bake_time,
        at_start: alarms.to_vec(),
        ignored: firing.iter().map(|a| a.name.clone()).collect(),
    })
}
