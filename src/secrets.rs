//! The secret is checked, never read: the runner only asks whether it exists (DescribeSecret);
//! its value is fetched on each instance by the instance's own role.

use crate::aws::{unless_missing, AwsError};

/// The secret's ARN, or `None` when there is no such secret.
pub async fn describe(client: &aws_sdk_secretsmanager::Client, id: &str) -> Result<Option<String>, AwsError> {
    let result = client.describe_secret().secret_id(id).send().await;
    let found = result
        .map(|out| out.arn().unwrap_or(id).to_string())
        .map_err(|e| AwsError::new(format!("looking up secret {id} (secretsmanager:DescribeSecret)"), e));
    unless_missing(found, "ResourceNotFoundException")
}
