//! The release record: what an environment runs, in a versioned SSM Parameter.
//!
//! Every successful deploy writes a new version (Parameter Store keeps the last 100: that is the
//! history). The record holds everything an instance needs to run the release — the image by
//! digest, the container's name, ports, plain env, secret id and health check, and the script
//! header rendered from them — so an Auto Scaling boot (`examples/user-data.sh`) needs only the
//! parameter's name, and a rollback needs nothing but the history.

use aws_sdk_ssm::primitives::{DateTime, DateTimeFormat};
use aws_sdk_ssm::types::{ParameterTier, ParameterType};
use serde::{Deserialize, Serialize};

use crate::aws::{unless_missing, AwsError};
use crate::inputs::ContainerSpec;

/// One release, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// `registry/repository@sha256:…`
    pub image: String,
    pub tag: String,
    pub registry: String,
    pub commit: Option<String>,
    /// The commit's time (from the push event), for the run-order guard when GitHub cannot be asked.
    #[serde(default)]
    pub commit_time: Option<String>,
    /// When it was deployed (RFC 3339).
    pub deployed_at: String,
    pub run_url: Option<String>,
    pub container: ContainerSpec,
    /// The on-instance script's header for this release, rendered by the one quoting function.
    pub header: String,
}

/// A recorded release and the parameter version that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    pub version: i64,
    pub release: Release,
}

pub struct Releases {
    client: aws_sdk_ssm::Client,
    pub name: String,
}

/// `/ec2-deploy/<environment>/<repository>`
pub fn default_parameter(environment: Option<&str>, repository: &str) -> String {
    format!("/ec2-deploy/{}/{repository}", environment.unwrap_or("default"))
}

pub fn now() -> String {
    DateTime::from(std::time::SystemTime::now()).fmt(DateTimeFormat::DateTime).unwrap_or_default()
}

impl Releases {
    pub fn new(client: aws_sdk_ssm::Client, name: String) -> Self {
        Releases { client, name }
    }

    /// Every recorded release, oldest first. Versions that do not parse as a release (written by
    /// something else) are skipped.
    pub async fn history(&self) -> Result<Vec<Recorded>, AwsError> {
        let mut pages = self.client.get_parameter_history().name(&self.name).max_results(50).into_paginator().send();
        let mut out = vec![];
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let e = AwsError::new(format!("reading the release history in SSM parameter {}", self.name), e);
                    if e.is("ParameterNotFound") {
                        return Ok(vec![]);
                    }
                    return Err(e);
                }
            };
            for p in page.parameters() {
                if let Some(release) = p.value().and_then(|v| serde_json::from_str::<Release>(v).ok()) {
                    out.push(Recorded { version: p.version(), release });
                }
            }
        }
        out.sort_by_key(|r| r.version);
        Ok(out)
    }

    pub async fn current(&self) -> Result<Option<Recorded>, AwsError> {
        let result = self.client.get_parameter().name(&self.name).send().await;
        let found =
            result.map_err(|e| AwsError::new(format!("reading the live release in SSM parameter {}", self.name), e));
        Ok(unless_missing(found, "ParameterNotFound")?.and_then(|out| {
            let p = out.parameter()?;
            let release = serde_json::from_str::<Release>(p.value()?).ok()?;
            Some(Recorded { version: p.version(), release })
        }))
    }

    /// Writes `release` as the parameter's new version; returns the version.
    pub async fn record(&self, release: &Release) -> Result<i64, AwsError> {
        let value = serde_json::to_string(release).expect("a release serialises");
        let out = self
            .client
            .put_parameter()
            .name(&self.name)
            .value(value)
            .r#type(ParameterType::String)
            // Over 4 KB (a long env) needs the advanced tier; Intelligent-Tiering picks it only then.
            .tier(ParameterTier::IntelligentTiering)
            .overwrite(true)
            .description("ec2-deploy: the release this environment runs (image, container, script header)")
            .send()
            .await
            .map_err(|e| AwsError::new(format!("recording the release in SSM parameter {}", self.name), e))?;
        Ok(out.version())
    }
}

/// The release to go back to: the latest recorded one before the live one that runs a different
/// image (a redeploy of the same image is not a release to go back to).
pub fn previous(history: &[Recorded]) -> Option<&Recorded> {
    let live = history.last()?;
    history.iter().rev().skip(1).find(|r| r.release.image != live.release.image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(version: i64, image: &str) -> Recorded {
        Recorded {
            version,
            release: Release {
                image: image.into(),
                tag: image.into(),
                registry: "r".into(),
                commit: None,
                commit_time: None,
                deployed_at: "2026-11-25T00:00:00Z".into(),
                run_url: None,
                container: ContainerSpec {
                    name: "shop".into(),
                    ports: vec![],
                    env: vec![],
                    secret_id: None,
                    health_check_path: None,
                    health_check_timeout: 60,
                },
                header: String::new(),
            },
        }
    }

    #[test]
    fn previous_skips_redeploys_of_the_live_image() {
        let h = vec![rec(1, "a"), rec(2, "b"), rec(3, "c"), rec(4, "c")];
        assert_eq!(previous(&h).unwrap().version, 2);
        assert_eq!(previous(&[rec(1, "a")]), None);
        assert_eq!(previous(&[]), None);
        let h = vec![rec(1, "a"), rec(2, "b"), rec(3, "a")];
        assert_eq!(previous(&h).unwrap().release.image, "b");
    }

    #[test]
    fn parameter_names() {
        assert_eq!(default_parameter(Some("production"), "team/shop"), "/ec2-deploy/production/team/shop");
        assert_eq!(default_parameter(None, "shop"), "/ec2-deploy/default/shop");
    }
}
