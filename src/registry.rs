//! ECR through its API: does the repository exist, which digest a tag has, the registry host
//! and the credentials to push with. The runner needs no aws CLI.

use aws_sdk_ecr::types::{ImageIdentifier, TagStatus};
use base64::Engine as _;

use crate::aws::{unless_missing, AwsError};
use crate::inputs::Secret;

pub struct Ecr {
    client: aws_sdk_ecr::Client,
}

/// Where to push and how to log in (a 12-hour token).
pub struct RegistryAuth {
    /// `123456789012.dkr.ecr.eu-west-1.amazonaws.com`
    pub host: String,
    pub username: String,
    pub password: Secret,
}

impl Ecr {
    pub fn new(client: aws_sdk_ecr::Client) -> Self {
        Ecr { client }
    }

    pub async fn repository_exists(&self, name: &str) -> Result<bool, AwsError> {
        let result = self.client.describe_repositories().repository_names(name).send().await;
        let found = result.map_err(|e| AwsError::new(format!("looking up ECR repository {name}"), e));
        Ok(unless_missing(found, "RepositoryNotFoundException")?.is_some())
    }

    /// The digest `tag` points at, or `None` when the tag is not in the repository.
    pub async fn digest_of(&self, repository: &str, tag: &str) -> Result<Option<String>, AwsError> {
        let image = ImageIdentifier::builder().image_tag(tag).build();
        let found = self.describe_image(repository, image, &format!("tag {tag}")).await?;
        Ok(found.and_then(|digests| digests.into_iter().next()))
    }

    /// Whether the repository has an image with this digest.
    pub async fn has_digest(&self, repository: &str, digest: &str) -> Result<bool, AwsError> {
        let image = ImageIdentifier::builder().image_digest(digest).build();
        Ok(self.describe_image(repository, image, digest).await?.is_some_and(|d| !d.is_empty()))
    }

    /// The digests DescribeImages finds for one image id, or `None` when ECR has no such image.
    async fn describe_image(
        &self,
        repository: &str,
        image: ImageIdentifier,
        what: &str,
    ) -> Result<Option<Vec<String>>, AwsError> {
        let result = self.client.describe_images().repository_name(repository).image_ids(image).send().await;
        let found = result
            .map(|out| out.image_details().iter().filter_map(|d| d.image_digest().map(str::to_string)).collect())
            .map_err(|e| AwsError::new(format!("looking up {what} in ECR repository {repository}"), e));
        unless_missing(found, "ImageNotFoundException")
    }

    /// The most recently pushed tag of the repository: the layer cache for the next build.
    pub async fn latest_tag(&self, repository: &str) -> Result<Option<String>, AwsError> {
        let mut pages = self
            .client
            .describe_images()
            .repository_name(repository)
            .filter(aws_sdk_ecr::types::DescribeImagesFilter::builder().tag_status(TagStatus::Tagged).build())
            .into_paginator()
            .send();
        let mut best: Option<(aws_sdk_ecr::primitives::DateTime, String)> = None;
        // A cache hint is not worth walking a huge repository for: look at the first pages only.
        for _ in 0..10 {
            let Some(page) = pages.next().await else {
                break;
            };
            let page = page.map_err(|e| AwsError::new(format!("listing images of {repository}"), e))?;
            for image in page.image_details() {
                if let (Some(pushed), Some(tag)) = (image.image_pushed_at(), image.image_tags().first()) {
                    if best.as_ref().is_none_or(|(t, _)| pushed > t) {
                        best = Some((*pushed, tag.clone()));
                    }
                }
            }
        }
        Ok(best.map(|(_, tag)| tag))
    }

    pub async fn auth(&self) -> Result<RegistryAuth, AwsError> {
        let context = "getting an ECR authorization token";
        let out = self.client.get_authorization_token().send().await.map_err(|e| AwsError::new(context, e))?;
        let data = out.authorization_data().first().ok_or_else(|| AwsError {
            context: context.into(),
            code: None,
            message: "ECR returned no authorization data".into(),
            access: false,
        })?;
        let bad = |what: &str| AwsError {
            context: context.into(),
            code: None,
            message: format!("ECR returned {what}"),
            access: false,
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.authorization_token().unwrap_or_default())
            .map_err(|_| bad("a token that is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("a token that is not text"))?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| bad("a token without user:password"))?;
        let endpoint = data.proxy_endpoint().unwrap_or_default();
        let host =
            endpoint.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/').to_string();
        Ok(RegistryAuth { host, username: username.to_string(), password: Secret(password.to_string()) })
    }
}
