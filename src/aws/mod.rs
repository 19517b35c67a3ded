//! AWS through the SDK: the one place that builds the AWS configuration and hands out clients,
//! and the adapters that implement the [ports](crate::ports) over them. SDK types and errors do
//! not leave this module: each call's error is classified here into a
//! [`ServiceError`](crate::ports::ServiceError).
//!
//! Credentials, region and endpoint come from the standard chain (the runner's `AWS_*` variables
//! from aws-actions/configure-aws-credentials, `AWS_ENDPOINT_URL` for the test bed). Retries are
//! adaptive: SSM throttles hard (`ThrottlingException: Rate exceeded`) and a deploy must ride it out.

mod alarms;
mod ecr;
mod elb;
mod parameters;
mod run_command;
mod secrets;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region as SdkRegion};
use aws_sdk_ssm::config::http::HttpResponse;
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata};

use crate::model::Region;
use crate::ports::{ErrorKind, ServiceError};

pub struct Clients {
    pub ecr: aws_sdk_ecr::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub region: Region,
}

/// No region configured: a problem with the inputs, not with AWS.
#[derive(Debug, thiserror::Error)]
#[error("no AWS region: set input `aws-region`, or AWS_REGION in the environment")]
pub struct NoRegion;

impl Clients {
    /// Clients for `region` (else the environment's). ECR's speaks to `ecr_region` when given:
    /// a registry host of another region is served, and its tokens issued, by that region's ECR.
    pub async fn load(region: Option<&Region>, ecr_region: Option<&Region>) -> Result<Clients, NoRegion> {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::adaptive().with_max_attempts(10));
        if let Some(region) = region {
            loader = loader.region(SdkRegion::new(region.to_string()));
        }
        let config = loader.load().await;
        let region = config.region().and_then(|r| Region::parse(r.as_ref()).ok()).ok_or(NoRegion)?;
        Ok(Clients {
            ecr: match ecr_region {
                Some(r) => aws_sdk_ecr::Client::from_conf(
                    aws_sdk_ecr::config::Builder::from(&config).region(SdkRegion::new(r.to_string())).build(),
                ),
                None => aws_sdk_ecr::Client::new(&config),
            },
            ssm: aws_sdk_ssm::Client::new(&config),
            secrets: aws_sdk_secretsmanager::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
            region,
        })
    }
}

const ACCESS_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "UnauthorizedOperation",
];
const EXPIRED_CODES: &[&str] = &["ExpiredToken", "ExpiredTokenException", "RequestExpired"];
/// Throttling, and Parameter Store's TooManyUpdates (writes to one parameter too close together):
/// the request was refused, so asking again later is safe. The SDK's own retries do not cover the
/// latter.
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "Throttled",
    "TooManyUpdates",
];

/// Classifies an SDK error. `not_found` and `exists` are the operation's own codes for "no such
/// thing" and "already there".
pub(crate) fn classify<E>(
    context: impl Into<String>,
    err: SdkError<E, HttpResponse>,
    not_found: &[&str],
) -> ServiceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().map(str::to_string);
    let message = match (&err, err.message()) {
        (SdkError::ServiceError(_), Some(m)) => format!("{} ({m})", code.as_deref().unwrap_or("error")),
        _ => DisplayErrorContext(&err).to_string(),
    };
    let is = |codes: &[&str]| code.as_deref().is_some_and(|c| codes.contains(&c));
    let kind = if is(not_found) {
        ErrorKind::NotFound
    } else if is(&["ParameterAlreadyExists", "AlreadyExistsException", "ResourceExistsException"]) {
        ErrorKind::AlreadyExists
    } else if is(EXPIRED_CODES) {
        ErrorKind::Expired
    } else if is(ACCESS_CODES)
        // No credentials at all surfaces as a construction failure, not a service code.
        || message.contains("no credentials")
        || message.contains("failed to load credentials")
        || message.contains("the credential provider was not enabled")
    {
        ErrorKind::Access
    } else if is(THROTTLING_CODES) {
        ErrorKind::Throttled
    } else if matches!(err, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_))
        || matches!(&err, SdkError::ServiceError(s) if s.raw().status().is_server_error())
    {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Other
    };
    ServiceError { context: context.into(), kind, code, message }
}

/// For a look-up whose "not found" means absent: `Ok(None)` for that, the value for a success,
/// the error otherwise.
pub(crate) fn unless_missing<T>(result: Result<T, ServiceError>) -> Result<Option<T>, ServiceError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
