//! The secret is checked, never read: the runner only asks whether it exists (DescribeSecret);
//! its value is fetched on each instance by the instance's own role.

use crate::aws::AwsError;

/// The secret's ARN, or `None` when there is no such secret.
pub async fn describe(client: &aws_sdk_secretsmanager::Client, id: &str) -> Result<Option<String>, AwsError> {
    match client.describe_secret().secret_id(id).send().await {
        Ok(out) => Ok(Some(out.arn().unwrap_or(id).to_string())),
        Err(e) => {
            let e = AwsError::new(format!("looking up secret {id} (secretsmanager:DescribeSecret)"), e);
            if e.is("ResourceNotFoundException") {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}
