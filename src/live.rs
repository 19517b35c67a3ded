//! The real world a deploy talks to: AWS through the SDK ([`crate::aws`]), the docker CLI
//! ([`crate::docker`]) and GitHub's REST API ([`crate::github::api`]). Each adapter implements its
//! [port](crate::ports) for [`Live`]; the deploy logic sees only the ports.

use std::time::{Duration, SystemTime};

use crate::aws::Clients;
use crate::docker::Docker;
use crate::github::api::GitHubApi;
use crate::model::Digest;
use crate::model::Region;
use crate::ports::{BuildError, BuildRequest, Built, Clock, CopyRequest, ImageBuilder, World};

pub struct Live {
    pub aws: Clients,
    /// What `EC2_DEPLOY_DOCKER` names (default `docker` on PATH).
    docker_program: Option<String>,
    docker: std::sync::OnceLock<Docker>,
    pub github: Option<GitHubApi>,
}

impl Live {
    pub fn new(aws: Clients, docker_program: Option<String>, github: Option<GitHubApi>) -> Live {
        Live { aws, docker_program, docker: Default::default(), github }
    }

    /// The world of one run: AWS clients for the request's region, GitHub when there is a token
    /// and a repository (else a notice says why there is no deployment), and the docker CLI that
    /// `EC2_DEPLOY_DOCKER` names.
    pub async fn connect(
        region: Option<&Region>,
        ecr_region: Option<&Region>,
        github_token: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
        runner: &crate::github::Runner,
    ) -> Result<Live, crate::aws::NoRegion> {
        let aws = Clients::load(region, ecr_region).await?;
        let github = match GitHubApi::from_env(env, github_token) {
            Ok(g) => g,
            Err(e) => {
                runner.notice("ec2-deploy: GitHub", &format!("no GitHub deployment: {e}"));
                None
            }
        };
        Ok(Live::new(aws, env("EC2_DEPLOY_DOCKER").filter(|p| !p.is_empty()), github))
    }

    /// The docker CLI with a private DOCKER_CONFIG, made on first use (a deploy that builds
    /// nothing never needs one).
    pub(crate) fn docker(&self) -> Result<&Docker, BuildError> {
        if let Some(d) = self.docker.get() {
            return Ok(d);
        }
        let d = Docker::new(|_| self.docker_program.clone())?;
        Ok(self.docker.get_or_init(|| d))
    }
}

impl Clock for Live {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await
    }
}

impl World for Live {
    type GitHub = GitHubApi;

    fn github(&self) -> Option<&GitHubApi> {
        self.github.as_ref()
    }

    fn region(&self) -> &Region {
        &self.aws.region
    }
}

/// Images are built, copied and pushed by the docker CLI (see [`crate::docker`]).
impl ImageBuilder for Live {
    async fn copy_image(&self, r: &CopyRequest<'_>) -> Result<Digest, BuildError> {
        let docker = self.docker()?;
        docker.login(r.registry.as_str(), &r.auth.username, &r.auth.password).await?;
        docker.copy(r.from, r.to).await
    }

    /// The stages the image copies from are built first, each with its own inline cache (the
    /// image's build then finds them in BuildKit's local cache), and pushed after the image.
    async fn build_and_push(&self, r: &BuildRequest<'_>) -> Result<Built, BuildError> {
        let docker = self.docker()?;
        docker.login(r.registry.as_str(), &r.auth.username, &r.auth.password).await?;
        let mut cache_from: Vec<&str> = r.stage_caches.iter().map(|s| s.image.as_str()).collect();
        cache_from.extend(r.cache_from);
        for stage in &r.stage_caches {
            println!("Stage {}, kept as {} for the next build's layer cache", stage.stage, stage.image);
            docker.build(r.spec, r.workdir, &stage.image, &cache_from, Some(&stage.stage)).await?;
        }
        docker.build(r.spec, r.workdir, r.image, &cache_from, r.spec.target.as_deref()).await?;
        let digest = docker.push(r.image).await?;
        let mut warnings = vec![];
        let pushing = std::time::Instant::now();
        for stage in &r.stage_caches {
            if let Err(e) = docker.push_quietly(&stage.image).await {
                warnings.push(format!(
                    "the layer cache of stage {} was not pushed to {} ({e}): the next build runs that stage again. \
                     A repository with immutable tags refuses to move its tag: exclude ec2-deploy-cache-* from immutability",
                    stage.stage, stage.image
                ));
            }
        }
        if !r.stage_caches.is_empty() {
            println!(
                "Pushed the layer cache of {} stage(s) in {:.1}s",
                r.stage_caches.len(),
                pushing.elapsed().as_secs_f64()
            );
        }
        Ok(Built { digest, warnings })
    }
}
