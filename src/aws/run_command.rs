//! Run Command and the managed-instance inventory over aws-sdk-ssm.
//!
//! Following costs one ListCommands plus one ListCommandInvocations per 50 instances per poll,
//! whatever the fleet size: per-instance GetCommandInvocation is only for the instances whose
//! full output the user needs (the failed ones).

use std::time::Duration;

use aws_sdk_ssm::types::{InstanceInformationStringFilter, Target};

use super::classify;
use crate::live::Live;
use crate::model::{
    CommandId, CommandState, InstanceId, Invocation, InvocationOutput, InvocationStatus, ManagedInstance, Ping,
    StatusDetail, TagFilter,
};
use crate::ports::{CommandRequest, CommandTargets, ErrorKind, Result, RunCommand, ServiceError};

impl RunCommand for Live {
    async fn find_instances(&self, tags: &[TagFilter]) -> Result<Vec<ManagedInstance>> {
        let mut request = self.aws.ssm.describe_instance_information().max_results(50);
        for t in tags {
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
                page.map_err(|e| classify("finding instances by tag (ssm:DescribeInstanceInformation)", e, &[]))?;
            for info in page.instance_information_list() {
                let Some(id) = info.instance_id().and_then(|id| InstanceId::parse(id).ok()) else {
                    continue;
                };
                out.push(ManagedInstance {
                    id,
                    name: info.computer_name().map(str::to_string),
                    ping: Ping::from_aws(info.ping_status().map(|p| p.as_str()).unwrap_or("unknown")),
                    ip: info.ip_address().map(str::to_string),
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn send_command(&self, r: &CommandRequest) -> Result<CommandId> {
        let mut request = self.aws.ssm.send_command().document_name("AWS-RunShellScript");
        request = match &r.targets {
            CommandTargets::Tags(tags) => request.set_targets(Some(
                tags.iter()
                    .map(|t| Target::builder().key(format!("tag:{}", t.key)).set_values(Some(t.values.clone())).build())
                    .collect(),
            )),
            CommandTargets::Ids(ids) => request.set_instance_ids(Some(ids.iter().map(|i| i.to_string()).collect())),
        };
        let out = request
            .parameters("commands", vec![r.script.clone()])
            .parameters("executionTimeout", vec![r.execution_timeout.to_string()])
            .max_concurrency(r.max_concurrency.to_string())
            .max_errors(r.max_errors.to_string())
            .timeout_seconds(r.delivery_timeout as i32)
            .comment(r.comment.chars().take(100).collect::<String>())
            .send()
            .await
            .map_err(|e| classify("sending the command (ssm:SendCommand)", e, &[]))?;
        out.command()
            .and_then(|c| c.command_id())
            .map(|id| CommandId(id.to_string()))
            .ok_or_else(|| ServiceError::new("ssm:SendCommand", ErrorKind::Other, "no command id in the answer"))
    }

    async fn command_progress(&self, id: &CommandId) -> Result<(CommandState, Vec<Invocation>)> {
        let commands = self
            .aws
            .ssm
            .list_commands()
            .command_id(&id.0)
            .send()
            .await
            .map_err(|e| classify("following the command (ssm:ListCommands)", e, &[]))?;
        let state = commands
            .commands()
            .first()
            .map(|c| CommandState {
                status: InvocationStatus::from_aws(c.status().map(|s| s.as_str()).unwrap_or("Pending")),
                target_count: c.target_count(),
                completed_count: c.completed_count(),
                error_count: c.error_count(),
            })
            .unwrap_or_default();
        let mut pages = self
            .aws
            .ssm
            .list_command_invocations()
            .command_id(&id.0)
            .details(true)
            .max_results(50)
            .into_paginator()
            .send();
        let mut invocations = vec![];
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("following the command (ssm:ListCommandInvocations)", e, &[]))?;
            for inv in page.command_invocations() {
                let Some(instance_id) = inv.instance_id().and_then(|i| InstanceId::parse(i).ok()) else {
                    continue;
                };
                let status = InvocationStatus::from_aws(inv.status().map(|s| s.as_str()).unwrap_or("Pending"));
                let plugin = inv.command_plugins().first();
                invocations.push(Invocation {
                    instance_id,
                    detail: StatusDetail::from_aws(inv.status_details().unwrap_or("Pending")),
                    response_code: plugin
                        .map(|p| p.response_code())
                        .filter(|_| !matches!(status, InvocationStatus::Pending)),
                    output: plugin.and_then(|p| p.output()).unwrap_or_default().to_string(),
                    status,
                });
            }
        }
        Ok((state, invocations))
    }

    /// Right after SendCommand SSM may not know the invocation yet (InvocationDoesNotExist):
    /// that is retried a few times.
    async fn invocation_output(&self, id: &CommandId, instance: &InstanceId) -> Result<InvocationOutput> {
        let mut attempt = 0;
        loop {
            let result =
                self.aws.ssm.get_command_invocation().command_id(&id.0).instance_id(instance.as_str()).send().await;
            match result {
                Ok(out) => {
                    return Ok(InvocationOutput {
                        stdout: out.standard_output_content().unwrap_or_default().to_string(),
                        stderr: out.standard_error_content().unwrap_or_default().to_string(),
                    })
                }
                Err(e) => {
                    let e = classify(
                        format!("reading the output of {instance} (ssm:GetCommandInvocation)"),
                        e,
                        &["InvocationDoesNotExist"],
                    );
                    if e.kind == ErrorKind::NotFound && attempt < 5 {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn cancel_command(&self, id: &CommandId, instances: Option<&[InstanceId]>) -> Result<()> {
        self.aws
            .ssm
            .cancel_command()
            .command_id(&id.0)
            .set_instance_ids(instances.map(|ids| ids.iter().map(|i| i.to_string()).collect()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(format!("cancelling command {id} (ssm:CancelCommand)"), e, &[]))
    }
}
