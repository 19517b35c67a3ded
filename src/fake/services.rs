//! Target groups, ECR, Secrets Manager, the build and GitHub in the fake world.

use super::*;

impl LoadBalancer for World {
    async fn missing_target_groups(&self, groups: &[TargetGroupArn]) -> Result<Vec<TargetGroupArn>> {
        let known = lock(&self.groups);
        Ok(groups.iter().filter(|g| !known.contains_key(*g)).cloned().collect())
    }

    async fn group_timings(&self, _groups: &[TargetGroupArn]) -> Result<GroupTimings> {
        Ok(self.group_timings)
    }

    async fn deregister(&self, groups: &[TargetGroupArn], ids: &[InstanceId]) -> Result<()> {
        self.session("elbv2:DeregisterTargets")?;
        let until = self.now() + self.group_timings.deregistration_delay;
        let mut g = lock(&self.groups);
        for group in groups {
            let members = g.get_mut(group).ok_or_else(|| not_found(format!("target group {group}")))?;
            for id in ids {
                if matches!(members.get(id), Some(Member::Registered { .. })) {
                    members.insert(id.clone(), Member::Draining { until });
                }
            }
        }
        drop(g);
        self.note(format!("out {}", ids.iter().map(short).collect::<Vec<_>>().join(",")));
        Ok(())
    }

    async fn register(&self, groups: &[TargetGroupArn], ids: &[InstanceId]) -> Result<()> {
        self.session("elbv2:RegisterTargets")?;
        let since = self.now();
        let mut g = lock(&self.groups);
        for group in groups {
            let members = g.get_mut(group).ok_or_else(|| not_found(format!("target group {group}")))?;
            for id in ids {
                if !matches!(members.get(id), Some(Member::Registered { .. })) {
                    members.insert(id.clone(), Member::Registered { since });
                }
            }
        }
        drop(g);
        self.note(format!("in {}", ids.iter().map(short).collect::<Vec<_>>().join(",")));
        Ok(())
    }

    async fn target_states(
        &self,
        groups: &[TargetGroupArn],
        ids: &[InstanceId],
    ) -> Result<Vec<(TargetGroupArn, InstanceId, TargetState)>> {
        self.session("elbv2:DescribeTargetHealth")?;
        let now = self.now();
        let g = lock(&self.groups);
        let instances = lock(&self.instances);
        let mut out = vec![];
        for group in groups {
            let members = g.get(group).ok_or_else(|| not_found(format!("target group {group}")))?;
            for id in ids {
                let inst = &instances[id];
                let state = match members.get(id) {
                    None => TargetState::Unused,
                    Some(Member::Draining { until }) if *until <= now && !inst.faults.drain_stuck => {
                        TargetState::Unused
                    }
                    Some(Member::Draining { .. }) => TargetState::Draining,
                    Some(Member::Registered { since }) => {
                        let healthy =
                            inst.running.as_ref().is_some_and(|c| !inst.faults.unhealthy_in_lb.contains(&c.image));
                        if now < *since + self.group_timings.time_to_healthy / 2 {
                            TargetState::Initial
                        } else if healthy {
                            TargetState::Healthy
                        } else {
                            TargetState::Unhealthy("Health checks failed with these codes: [503]".into())
                        }
                    }
                };
                out.push((group.clone(), id.clone(), state));
            }
        }
        Ok(out)
    }
}

impl Registry for World {
    async fn registry_auth(&self) -> Result<RegistryAuth> {
        Ok(RegistryAuth {
            host: RegistryHost::parse(REGISTRY).expect("valid"),
            username: "AWS".into(),
            password: Secret("fake-ecr-password".into()),
        })
    }

    async fn repository_exists(&self, repository: &Repository) -> Result<bool> {
        Ok(lock(&self.repositories).contains(repository.as_str()))
    }

    async fn digest_of(&self, repository: &Repository, tag: &ImageTag) -> Result<Option<Digest>> {
        Ok(lock(&self.images).get(&(repository.to_string(), tag.to_string())).cloned())
    }

    async fn has_digest(&self, repository: &Repository, digest: &Digest) -> Result<bool> {
        Ok(lock(&self.images).iter().any(|((r, _), d)| r == repository.as_str() && d == digest))
    }

    async fn latest_tag(&self, repository: &Repository) -> Result<Option<ImageTag>> {
        Ok(lock(&self.images)
            .keys()
            .rfind(|(r, t)| r == repository.as_str() && !crate::plan::is_reserved_tag(t))
            .and_then(|(_, t)| ImageTag::parse(t).ok()))
    }
}

impl Secrets for World {
    async fn secret_arn(&self, id: &SecretId) -> Result<Option<String>> {
        Ok(lock(&self.secrets).get(id.as_str()).cloned())
    }
}

impl crate::ports::Alarms for World {
    async fn alarms(&self, selectors: &[crate::model::AlarmSelector]) -> Result<Vec<crate::model::AlarmStatus>> {
        self.session("cloudwatch:DescribeAlarms")?;
        let sent = self.deploy_commands_sent();
        let due: Vec<String> =
            lock(&self.alarm_after_commands).iter().filter(|(_, n)| sent >= *n).map(|(a, _)| a.clone()).collect();
        let mut alarms = lock(&self.alarms);
        for name in due {
            if let Some(a) = alarms.get_mut(&name).filter(|a| a.state != crate::model::AlarmState::Alarm) {
                a.state = crate::model::AlarmState::Alarm;
                a.reason = "Threshold Crossed: 5xx rate above 1%".into();
                self.note(format!("alarm {name} ALARM"));
            }
        }
        Ok(alarms.values().filter(|a| selectors.iter().any(|s| s.matches(&a.name))).cloned().collect())
    }
}

impl ImageBuilder for World {
    async fn copy_image(&self, r: &CopyRequest<'_>) -> std::result::Result<Digest, BuildError> {
        let (repo_part, tag) = r.to.rsplit_once(':').expect("registry/repository:tag");
        let repository = repo_part.split_once('/').map(|(_, r)| r).unwrap_or(repo_part);
        self.note(format!("copy {} to {repository}:{tag}", r.from));
        Ok(self.push_image(repository, tag))
    }

    async fn build_and_push(&self, r: &BuildRequest<'_>) -> std::result::Result<Built, BuildError> {
        if lock(&self.faults).build_fails {
            return Err(BuildError { step: "build", message: "docker build exited with 1".into() });
        }
        let split = |image: &str| {
            let (repo_part, tag) = image.rsplit_once(':').expect("registry/repository:tag");
            let repository = repo_part.split_once('/').map(|(_, r)| r).unwrap_or(repo_part).to_string();
            (repository, tag.to_string())
        };
        let (repository, tag) = split(r.image);
        self.note(format!("build {repository}:{tag}"));
        let digest = self.push_image(&repository, &tag);
        let mut warnings = vec![];
        for stage in &r.stage_caches {
            let (repository, tag) = split(&stage.image);
            if lock(&self.faults).stage_cache_push_fails {
                warnings.push(format!("the layer cache of stage {} was not pushed: tag invalid", stage.stage));
            } else {
                self.note(format!("push stage {} as {repository}:{tag}", stage.stage));
                self.push_image(&repository, &tag);
            }
        }
        Ok(Built { digest, warnings })
    }
}

/// GitHub as a list of the calls made to it.
#[derive(Debug, Default)]
pub struct FakeGitHub {
    pub calls: Mutex<Vec<String>>,
    /// What compare answers.
    pub comparison: Mutex<Option<Comparison>>,
    /// The job's own deployment, when the job has one.
    pub job_deployment: Mutex<Option<u64>>,
}

impl GitHub for FakeGitHub {
    async fn create_deployment(
        &self,
        sha: &str,
        environment: &EnvironmentName,
        description: &str,
        _payload: serde_json::Value,
    ) -> std::result::Result<u64, GitHubError> {
        let mut calls = lock(&self.calls);
        calls.push(format!("deployment {sha} {environment} {description}"));
        Ok(calls.len() as u64)
    }

    async fn set_deployment_status(
        &self,
        id: u64,
        state: DeploymentState,
        _description: &str,
        _log_url: Option<&str>,
        _environment_url: Option<&str>,
    ) -> std::result::Result<(), GitHubError> {
        lock(&self.calls).push(format!("status {id} {}", state.as_str()));
        Ok(())
    }

    async fn find_job_deployment(
        &self,
        sha: &str,
        environment: &EnvironmentName,
        _run_url: &str,
    ) -> std::result::Result<Option<u64>, GitHubError> {
        lock(&self.calls).push(format!("find {sha} {environment}"));
        Ok(*lock(&self.job_deployment))
    }

    async fn compare(&self, base: &str, head: &str) -> std::result::Result<Comparison, GitHubError> {
        lock(&self.calls).push(format!("compare {base}...{head}"));
        lock(&self.comparison)
            .clone()
            .ok_or_else(|| GitHubError { what: "compare".into(), message: "no answer configured".into() })
    }
}
