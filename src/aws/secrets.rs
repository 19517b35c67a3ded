//! The secret is checked, never read: the runner only asks whether it exists (DescribeSecret, or
//! DescribeParameters for an `ssm:` one); its value is fetched on each instance by the
//! instance's own role.

use super::{classify, unless_missing};
use crate::live::Live;
use crate::model::SecretId;
use crate::ports::{Result, Secrets};

impl Secrets for Live {
    async fn secret_arn(&self, id: &SecretId) -> Result<Option<String>> {
        if let Some(name) = id.parameter() {
            return self.parameter_kind(name).await;
        }
        let result = self.aws.secrets.describe_secret().secret_id(id.as_str()).send().await;
        let found = result.map(|out| out.arn().unwrap_or(id.as_str()).to_string()).map_err(|e| {
            classify(
                format!("looking up secret {id} (secretsmanager:DescribeSecret)"),
                e,
                &["ResourceNotFoundException"],
            )
        });
        unless_missing(found)
    }
}

impl Live {
    /// A Parameter Store parameter's type (`Parameter Store SecureString /app/env`), found by
    /// DescribeParameters: metadata only, so the runner never holds the value, encrypted or not.
    async fn parameter_kind(&self, name: &str) -> Result<Option<String>> {
        let filter = aws_sdk_ssm::types::ParameterStringFilter::builder()
            .key("Name")
            .option("Equals")
            .values(name)
            .build()
            .expect("key is set");
        let found = self
            .aws
            .ssm
            .describe_parameters()
            .parameter_filters(filter)
            .send()
            .await
            .map_err(|e| classify(format!("looking up parameter {name} (ssm:DescribeParameters)"), e, &[]))?;
        Ok(found.parameters().first().map(|p| {
            let kind = p.r#type().map_or("parameter".to_string(), |t| t.as_str().to_string());
            format!("Parameter Store {kind} {}", p.name().unwrap_or(name))
        }))
    }
}
