//! The fleet through SSM: find managed instances by tag, send the Run Command, follow its
//! invocations, fetch a failed instance's output, cancel.
//!
//! Following costs one ListCommands plus one ListCommandInvocations per 50 instances per poll,
//! whatever the fleet size: per-instance GetCommandInvocation is only for the instances whose
//! full output the user needs (the failed ones).

use std::time::Duration;

use aws_sdk_ssm::types::{InstanceInformationStringFilter, Target};
use serde::Serialize;

use crate::aws::AwsError;
use crate::inputs::{Limit, TagFilter};

pub struct Fleet {
    client: aws_sdk_ssm::Client,
}

/// The SSM agent's connection, as DescribeInstanceInformation reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Ping {
    Online,
    ConnectionLost,
    Inactive,
    Other(String),
}

impl std::fmt::Display for Ping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ping::Online => f.write_str("Online"),
            Ping::ConnectionLost => f.write_str("ConnectionLost"),
            Ping::Inactive => f.write_str("Inactive"),
            Ping::Other(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagedInstance {
    pub id: String,
    pub name: Option<String>,
    pub ping: Ping,
    pub ip: Option<String>,
}

/// Which instances a command goes to.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// Every managed instance with these tags, resolved by SSM when it sends.
    Tags(&'a [TagFilter]),
    /// These instances (at most 50).
    Ids(&'a [String]),
}

/// One Run Command to send.
pub struct Dispatch<'a> {
    pub targets: Targets<'a>,
    pub script: &'a str,
    pub max_concurrency: Limit,
    pub max_errors: Limit,
    /// Seconds the script may run on one instance (the document's executionTimeout).
    pub execution_timeout: u32,
    /// Seconds SSM keeps trying to deliver to an instance (SendCommand's TimeoutSeconds).
    pub delivery_timeout: u32,
    pub comment: String,
}

/// The command as a whole: SSM's Status (Pending, InProgress, Success, Failed, TimedOut,
/// Cancelled, Cancelling) and its counts.
#[derive(Debug, Clone, Default)]
pub struct CommandState {
    pub status: String,
    pub details: String,
    pub target_count: i32,
    pub completed_count: i32,
    pub error_count: i32,
}

impl CommandState {
    pub fn is_done(&self) -> bool {
        matches!(self.status.as_str(), "Success" | "Failed" | "TimedOut" | "Cancelled")
    }
}

/// One instance's invocation as ListCommandInvocations reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub instance_id: String,
    pub status: String,
    /// StatusDetails: more precise than status (Delivery Timed Out, Terminated, Undeliverable…).
    pub details: String,
    pub response_code: Option<i32>,
    /// The first 2,500 characters of output.
    pub output: String,
}

impl Invocation {
    pub fn is_done(&self) -> bool {
        matches!(self.status.as_str(), "Success" | "Failed" | "TimedOut" | "Cancelled")
    }
}

/// One instance's full output (up to SSM's 24,000 / 8,000 characters).
#[derive(Debug, Clone, Default)]
pub struct InvocationOutput {
    pub stdout: String,
    pub stderr: String,
}

impl Fleet {
    pub fn new(client: aws_sdk_ssm::Client) -> Self {
        Fleet { client }
    }

    /// Managed instances whose tags match every filter (SSM's own tag semantics: AND across
    /// filters, OR across a filter's values), sorted by id.
    pub async fn find(&self, targets: &[TagFilter]) -> Result<Vec<ManagedInstance>, AwsError> {
        let mut request = self.client.describe_instance_information().max_results(50);
        for t in targets {
            let filter = InstanceInformationStringFilter::builder()
                .key(format!("tag:{}", t.key))
                .set_values(Some(t.values.clone()))
                .build()
                .expect("key and values are set");
            request = request.filters(filter);
        }
        let mut pages = request.into_paginator().send();
        let mut out = vec![];
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| AwsError::new("finding instances by tag (ssm:DescribeInstanceInformation)", e))?;
            for info in page.instance_information_list() {
                let Some(id) = info.instance_id() else {
                    continue;
                };
                let ping = match info.ping_status().map(|p| p.as_str()) {
                    Some("Online") => Ping::Online,
                    Some("ConnectionLost") => Ping::ConnectionLost,
                    Some("Inactive") => Ping::Inactive,
                    other => Ping::Other(other.unwrap_or("unknown").to_string()),
                };
                out.push(ManagedInstance {
                    id: id.to_string(),
                    name: info.computer_name().map(str::to_string),
                    ping,
                    ip: info.ip_address().map(str::to_string),
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub async fn send(&self, d: &Dispatch<'_>) -> Result<String, AwsError> {
        let mut request = self.client.send_command().document_name("AWS-RunShellScript");
        request = match d.targets {
            Targets::Tags(tags) => request.set_targets(Some(
                tags.iter()
                    .map(|t| Target::builder().key(format!("tag:{}", t.key)).set_values(Some(t.values.clone())).build())
                    .collect(),
            )),
            Targets::Ids(ids) => request.set_instance_ids(Some(ids.to_vec())),
        };
        let out = request
            .parameters("commands", vec![d.script.to_string()])
            .parameters("executionTimeout", vec![d.execution_timeout.to_string()])
            .max_concurrency(d.max_concurrency.to_string())
            .max_errors(d.max_errors.to_string())
            .timeout_seconds(d.delivery_timeout as i32)
            .comment(truncate(&d.comment, 100))
            .send()
            .await
            .map_err(|e| AwsError::new("sending the deploy command (ssm:SendCommand)", e))?;
        out.command().and_then(|c| c.command_id()).map(str::to_string).ok_or_else(|| AwsError {
            context: "ssm:SendCommand".into(),
            code: None,
            message: "no command id in the answer".into(),
            access: false,
        })
    }

    /// The command's state and every invocation so far.
    pub async fn progress(&self, command_id: &str) -> Result<(CommandState, Vec<Invocation>), AwsError> {
        let commands = self
            .client
            .list_commands()
            .command_id(command_id)
            .send()
            .await
            .map_err(|e| AwsError::new("following the deploy command (ssm:ListCommands)", e))?;
        let state = commands
            .commands()
            .first()
            .map(|c| CommandState {
                status: c.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                details: c.status_details().unwrap_or_default().to_string(),
                target_count: c.target_count(),
                completed_count: c.completed_count(),
                error_count: c.error_count(),
            })
            .unwrap_or_default();
        let mut pages = self
            .client
            .list_command_invocations()
            .command_id(command_id)
            .details(true)
            .max_results(50)
            .into_paginator()
            .send();
        let mut invocations = vec![];
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| AwsError::new("following the deploy command (ssm:ListCommandInvocations)", e))?;
            for inv in page.command_invocations() {
                let plugin = inv.command_plugins().first();
                invocations.push(Invocation {
                    instance_id: inv.instance_id().unwrap_or_default().to_string(),
                    status: inv.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                    details: inv.status_details().unwrap_or_default().to_string(),
                    response_code: plugin
                        .map(|p| p.response_code())
                        .filter(|_| inv.status().is_some_and(|s| s.as_str() != "Pending")),
                    output: plugin.and_then(|p| p.output()).unwrap_or_default().to_string(),
                });
            }
        }
        Ok((state, invocations))
    }

    /// An instance's full output. Right after SendCommand SSM may not know the invocation yet
    /// (InvocationDoesNotExist): that is retried a few times.
    pub async fn output(&self, command_id: &str, instance_id: &str) -> Result<InvocationOutput, AwsError> {
        let mut attempt = 0;
        loop {
            match self.client.get_command_invocation().command_id(command_id).instance_id(instance_id).send().await {
                Ok(out) => {
                    return Ok(InvocationOutput {
                        stdout: out.standard_output_content().unwrap_or_default().to_string(),
                        stderr: out.standard_error_content().unwrap_or_default().to_string(),
                    })
                }
                Err(e) => {
                    let e = AwsError::new(format!("reading the output of {instance_id} (ssm:GetCommandInvocation)"), e);
                    if e.is("InvocationDoesNotExist") && attempt < 5 {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Cancels the command's invocations on these instances only.
    pub async fn cancel_instances(&self, command_id: &str, ids: &[String]) -> Result<(), AwsError> {
        self.client
            .cancel_command()
            .command_id(command_id)
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new("cancelling invocations that had not started (ssm:CancelCommand)", e))
    }

    pub async fn cancel(&self, command_id: &str) -> Result<(), AwsError> {
        self.client
            .cancel_command()
            .command_id(command_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::new("cancelling the deploy command (ssm:CancelCommand)", e))
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
