//! ECR through its API: does the repository exist, which digest a tag has, the registry host and
//! the credentials to push with. The runner needs no aws CLI.

use aws_sdk_ecr::types::{ImageIdentifier, TagStatus};
use base64::Engine as _;

use super::{classify, unless_missing};
use crate::live::Live;
use crate::model::{Digest, ImageTag, RegistryHost, Repository, Secret};
use crate::plan::is_reserved_tag;
use crate::ports::{ErrorKind, Registry, RegistryAuth, Result, ServiceError};

impl Live {
    /// The digests DescribeImages finds for one image id, or `None` when ECR has no such image.
    async fn describe_image(
        &self,
        repository: &Repository,
        image: ImageIdentifier,
        what: &str,
    ) -> Result<Option<Vec<String>>> {
        let result = self.aws.ecr.describe_images().repository_name(repository.as_str()).image_ids(image).send().await;
        let found = result
            .map(|out| out.image_details().iter().filter_map(|d| d.image_digest().map(str::to_string)).collect())
            .map_err(|e| {
                classify(format!("looking up {what} in ECR repository {repository}"), e, &["ImageNotFoundException"])
            });
        unless_missing(found)
    }
}

impl Registry for Live {
    async fn registry_auth(&self) -> Result<RegistryAuth> {
        let context = "getting an ECR authorization token";
        let out = self.aws.ecr.get_authorization_token().send().await.map_err(|e| classify(context, e, &[]))?;
        let bad = |what: &str| ServiceError::new(context, ErrorKind::Other, format!("ECR returned {what}"));
        let data = out.authorization_data().first().ok_or_else(|| bad("no authorization data"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.authorization_token().unwrap_or_default())
            .map_err(|_| bad("a token that is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("a token that is not text"))?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| bad("a token without user:password"))?;
        let endpoint = data.proxy_endpoint().unwrap_or_default();
        let host = endpoint.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
        let host = RegistryHost::parse(host).map_err(|_| bad(&format!("a registry endpoint {endpoint:?}")))?;
        Ok(RegistryAuth { host, username: username.to_string(), password: Secret(password.to_string()) })
    }

    async fn repository_exists(&self, repository: &Repository) -> Result<bool> {
        let result = self.aws.ecr.describe_repositories().repository_names(repository.as_str()).send().await;
        let found = result.map_err(|e| {
            classify(format!("looking up ECR repository {repository}"), e, &["RepositoryNotFoundException"])
        });
        Ok(unless_missing(found)?.is_some())
    }

    async fn digest_of(&self, repository: &Repository, tag: &ImageTag) -> Result<Option<Digest>> {
        let image = ImageIdentifier::builder().image_tag(tag.as_str()).build();
        let found = self.describe_image(repository, image, &format!("tag {tag}")).await?;
        Ok(found.and_then(|digests| digests.into_iter().find_map(|d| Digest::parse(&d).ok())))
    }

    async fn has_digest(&self, repository: &Repository, digest: &Digest) -> Result<bool> {
        let image = ImageIdentifier::builder().image_digest(digest.as_str()).build();
        Ok(self.describe_image(repository, image, digest.as_str()).await?.is_some_and(|d| !d.is_empty()))
    }

    async fn latest_tag(&self, repository: &Repository) -> Result<Option<ImageTag>> {
        let mut pages = self
            .aws
            .ecr
            .describe_images()
            .repository_name(repository.as_str())
            .filter(aws_sdk_ecr::types::DescribeImagesFilter::builder().tag_status(TagStatus::Tagged).build())
            .into_paginator()
            .send();
        let mut best: Option<(aws_sdk_ecr::primitives::DateTime, ImageTag)> = None;
        // A cache hint is not worth walking a huge repository for: look at the first pages only.
        for _ in 0..10 {
            let Some(page) = pages.next().await else {
                break;
            };
            let page = page.map_err(|e| classify(format!("listing images of {repository}"), e, &[]))?;
            for image in page.image_details() {
                // The proxy's copy and the stages' caches are no release: never the image's layer cache.
                let tag =
                    image.image_tags().iter().filter(|t| !is_reserved_tag(t)).find_map(|t| ImageTag::parse(t).ok());
                if let (Some(pushed), Some(tag)) = (image.image_pushed_at(), tag) {
                    if best.as_ref().is_none_or(|(t, _)| pushed > t) {
                        best = Some((*pushed, tag));
                    }
                }
            }
        }
        Ok(best.map(|(_, tag)| tag))
    }
}
