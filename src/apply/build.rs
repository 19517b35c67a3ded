//! The image to deploy: the one the registry has, or one built and pushed now.

use super::Context;
use crate::model::{Digest, ImageRef};
use crate::plan::{cache_tag, ImageSource, Plan, ProxySource};
use crate::ports::{BuildRequest, CopyRequest, StageImage, World};
use crate::Error;

/// The per-instance proxy's image in the deploy's registry: copied there now, or already there.
pub async fn proxy<W: World>(plan: &Plan, world: &W, cx: &Context<'_>) -> Result<Option<ImageRef>, Error> {
    let Some(proxy) = &plan.proxy else { return Ok(None) };
    match &proxy.source {
        ProxySource::Existing { image } => Ok(Some(image.clone())),
        ProxySource::Copy { from, to } => {
            let target = format!("{}/{}:{to}", plan.registry, plan.repository);
            cx.runner.group(&format!("Copy the proxy {from} to {target}"));
            let request = CopyRequest { from: from.as_str(), to: &target, registry: &plan.registry, auth: &plan.auth };
            let copied = tokio::select! {
                r = world.copy_image(&request) => r,
                _ = cx.cancel.cancelled() => {
                    cx.runner.end_group();
                    return Err(Error::Cancelled);
                }
            };
            cx.runner.end_group();
            let digest = copied?;
            cx.runner.info(&format!("The proxy is {target} ({digest})"));
            Ok(Some(plan.image_ref(digest)))
        }
    }
}

/// The digest to deploy: the existing image's, or the one the push stored.
pub async fn obtain<W: World>(plan: &Plan, world: &W, cx: &Context<'_>) -> Result<Digest, Error> {
    let runner = cx.runner;
    match &plan.source {
        ImageSource::Existing { digest } => {
            runner.info(&format!("{} is already in the registry ({digest}): not rebuilding", plan.image));
            Ok(digest.clone())
        }
        ImageSource::Build { spec, cache_from } => {
            runner.group(&format!("Build and push {}", plan.image));
            let started = world.now();
            let request = BuildRequest {
                spec,
                workdir: cx.workdir,
                image: &plan.image,
                cache_from: cache_from.as_deref(),
                stage_caches: spec
                    .stage_cache
                    .stages
                    .iter()
                    .map(|stage| StageImage {
                        stage: stage.clone(),
                        image: format!("{}/{}:{}", plan.registry, plan.repository, cache_tag(stage)),
                    })
                    .collect(),
                registry: &plan.registry,
                auth: &plan.auth,
            };
            let result = tokio::select! {
                r = world.build_and_push(&request) => r,
                _ = cx.cancel.cancelled() => {
                    runner.end_group();
                    return Err(Error::Cancelled);
                }
            };
            runner.end_group();
            let built = result?;
            for warning in &built.warnings {
                runner.warning("Layer cache", warning);
            }
            let digest = built.digest;
            let took = world.now().duration_since(started).unwrap_or_default().as_secs_f64();
            runner.info(&format!("Built and pushed {} in {took:.1}s", plan.image));
            Ok(digest)
        }
    }
}
