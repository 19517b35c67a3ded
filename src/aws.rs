//! The one place that builds the AWS configuration and hands out clients, and the error type
//! every AWS adapter returns.
//!
//! Credentials, region and endpoint come from the standard chain (the runner's `AWS_*` variables
//! from aws-actions/configure-aws-credentials, `AWS_ENDPOINT_URL` for the test bed). Retries are
//! adaptive: SSM throttles hard (`ThrottlingException: Rate exceeded`) and a deploy must ride it out.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata};

pub struct Clients {
    pub ecr: aws_sdk_ecr::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub region: String,
}

impl Clients {
    pub async fn load(region: Option<&str>) -> Result<Clients, AwsError> {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::adaptive().with_max_attempts(10));
        if let Some(region) = region {
            loader = loader.region(Region::new(region.to_string()));
        }
        let config = loader.load().await;
        let region = config.region().map(|r| r.to_string()).ok_or_else(|| AwsError {
            context: "choosing the AWS region".into(),
            code: Some(NO_REGION.into()),
            message: "no region: set input `aws-region`, or AWS_REGION in the environment".into(),
            access: false,
        })?;
        Ok(Clients {
            ecr: aws_sdk_ecr::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            secrets: aws_sdk_secretsmanager::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            region,
        })
    }
}

/// A failed AWS call, with what we were doing when it failed.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}{}", if *.access { "\n  hint: check the runner's AWS credentials (aws-actions/configure-aws-credentials) and that its role allows this call" } else { "" })]
pub struct AwsError {
    pub context: String,
    pub code: Option<String>,
    pub message: String,
    /// Credentials or permissions: the user must fix access, not inputs.
    pub access: bool,
}

/// Our own code for "no region configured": a problem with the inputs, not with AWS.
pub const NO_REGION: &str = "ec2-deploy.NoRegion";

const ACCESS_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "UnauthorizedOperation",
];

impl AwsError {
    pub fn new<E, R>(context: impl Into<String>, err: SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let code = err.code().map(str::to_string);
        let message = match (&err, err.message()) {
            (SdkError::ServiceError(_), Some(m)) => {
                format!("{} ({m})", code.as_deref().unwrap_or("error"))
            }
            _ => DisplayErrorContext(&err).to_string(),
        };
        // No credentials at all surfaces as a dispatch/construction failure, not a service code.
        let access = code.as_deref().is_some_and(|c| ACCESS_CODES.contains(&c))
            || message.contains("no credentials")
            || message.contains("failed to load credentials")
            || message.contains("the credential provider was not enabled");
        AwsError { context: context.into(), code, message, access }
    }

    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// For a look-up whose "not found" error means absent: `Ok(None)` for that error code, the value
/// for a success, the error otherwise.
pub fn unless_missing<T>(result: Result<T, AwsError>, not_found: &str) -> Result<Option<T>, AwsError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is(not_found) => Ok(None),
        Err(e) => Err(e),
    }
}
