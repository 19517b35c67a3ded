//! The secret is checked, never read: the runner only asks whether it exists (DescribeSecret);
//! its value is fetched on each instance by the instance's own role.

use super::{classify, unless_missing};
use crate::live::Live;
use crate::model::SecretId;
use crate::ports::{Result, Secrets};

impl Secrets for Live {
    async fn secret_arn(&self, id: &SecretId) -> Result<Option<String>> {
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
