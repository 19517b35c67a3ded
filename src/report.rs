//! What a deploy did, per instance, as the user reads it: step outputs, the job summary table and
//! one annotation per failed instance. Pure: built from SSM's answers and the script's own
//! `ec2-deploy-result` / `ec2-deploy: error:` lines.

use serde::Serialize;

use crate::fleet::{Invocation, InvocationOutput, ManagedInstance};
use crate::instance::step_for_exit_code;
use crate::rollout::{BatchOutcome, BatchReport, RollbackReport};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceReport {
    pub id: String,
    pub name: Option<String>,
    /// SSM's invocation status (Success, Failed, TimedOut, Cancelled), or NotTargeted.
    pub status: String,
    pub details: String,
    pub response_code: Option<i32>,
    /// deployed | unchanged, from the script.
    pub outcome: Option<String>,
    pub previous: Option<String>,
    pub current: Option<String>,
    /// For a failure: the step and why, in words.
    pub step: Option<String>,
    pub reason: Option<String>,
}

impl InstanceReport {
    pub fn ok(&self) -> bool {
        self.status == "Success"
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub environment: Option<String>,
    pub image: String,
    pub image_tag: String,
    /// One Run Command for a deploy by tags; one (or more) per batch behind a load balancer.
    pub command_ids: Vec<String>,
    /// The deploy's result on every instance.
    pub instances: Vec<InstanceReport>,
    /// Behind a load balancer: each batch and how it went.
    pub batches: Vec<BatchReport>,
    /// After a failure: what going back to the previous release did.
    pub rollback: Option<RollbackReport>,
    /// Failed instances the run may have and still succeed (max-errors, without target groups).
    pub tolerated: usize,
    /// The version of the release record this deploy wrote (after a success).
    pub release_version: Option<i64>,
    /// The run was cancelled (SIGINT/SIGTERM): nothing new was started after that.
    pub cancelled: bool,
    /// Instances left out because their SSM agent was not connected (on-offline: skip).
    pub skipped: Vec<String>,
    pub seconds: f64,
}

impl DeployReport {
    pub fn success(&self) -> bool {
        !self.instances.is_empty()
            && !self.cancelled
            && self.rollback.is_none()
            && self.batches.iter().all(|b| b.outcome == BatchOutcome::Done)
            && self.failed().count() <= self.tolerated
    }

    pub fn failed(&self) -> impl Iterator<Item = &InstanceReport> {
        self.instances.iter().filter(|i| !i.ok())
    }

    /// The rollback's result for one instance, if it was rolled back.
    pub fn rolled_back(&self, id: &str) -> Option<&InstanceReport> {
        self.rollback.as_ref()?.instances.iter().find(|r| r.id == id)
    }
}

/// `ec2-deploy-result outcome=… previous=… current=…` from the script's stdout.
fn parse_result(stdout: &str) -> Option<(String, String, String)> {
    let line = stdout.lines().rev().find(|l| l.starts_with("ec2-deploy-result "))?;
    let field = |name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('='))).map(str::to_string)
    };
    Some((field("outcome")?, field("previous")?, field("current")?))
}

/// The script's own explanation of a failure (its last `ec2-deploy: error:` line).
fn parse_error(stderr: &str) -> Option<String> {
    stderr.lines().rev().find_map(|l| l.strip_prefix("ec2-deploy: error: ")).map(str::to_string)
}

/// Why an invocation failed, when the script itself could not say.
fn ssm_reason(inv: &Invocation) -> String {
    match inv.status.as_str() {
        "InProgress" | "Cancelling" => {
            return "the run was cancelled while the script ran; it finishes on the instance".into()
        }
        "Pending" | "Delayed" => return "the run was cancelled before the script started".into(),
        _ => {}
    }
    match inv.details.as_str() {
        "Delivery Timed Out" => "the SSM agent never picked the command up (agent offline?)".into(),
        "Undeliverable" => "SSM could not deliver the command (instance stopped or terminated?)".into(),
        "Execution Timed Out" => "the script ran longer than `timeout`".into(),
        "Terminated" => "not started: too many other instances failed (max-errors)".into(),
        "Cancelled" => "the command was cancelled".into(),
        "Access Denied" => "SSM was denied access to the instance".into(),
        "Invalid Platform" => "the instance is not Linux".into(),
        other => format!("SSM reports {other}"),
    }
}

/// One row per planned instance (and per unexpected one SSM targeted as well).
pub fn instance_reports(
    planned: &[ManagedInstance],
    invocations: &[Invocation],
    outputs: &[(String, InvocationOutput)],
) -> Vec<InstanceReport> {
    let name_of = |id: &str| planned.iter().find(|p| p.id == id).and_then(|p| p.name.clone());
    let mut rows: Vec<InstanceReport> = invocations
        .iter()
        .map(|inv| {
            let full = outputs.iter().find(|(id, _)| *id == inv.instance_id).map(|(_, o)| o);
            let stdout = full.map(|o| o.stdout.as_str()).unwrap_or(&inv.output);
            let result = parse_result(stdout);
            let ok = inv.status == "Success";
            let script_ran = inv.response_code.is_some_and(|c| c >= 0) && inv.details == "Failed";
            let (step, reason) = if ok {
                (None, None)
            } else if script_ran {
                let code = inv.response_code.unwrap_or(-1);
                let reason = full.and_then(|o| parse_error(&o.stderr)).or_else(|| parse_error(&inv.output));
                (
                    Some(step_for_exit_code(code).to_string()),
                    Some(reason.unwrap_or_else(|| format!("the script exited with {code}"))),
                )
            } else {
                let step = match inv.details.as_str() {
                    _ if !inv.is_done() => "cancelled",
                    "Execution Timed Out" => "script",
                    "Terminated" => "not started",
                    "Cancelled" => "cancelled",
                    _ => "delivery",
                };
                (Some(step.to_string()), Some(ssm_reason(inv)))
            };
            InstanceReport {
                id: inv.instance_id.clone(),
                name: name_of(&inv.instance_id),
                status: inv.status.clone(),
                details: inv.details.clone(),
                response_code: inv.response_code,
                outcome: result.as_ref().map(|r| r.0.clone()),
                previous: result.as_ref().map(|r| r.1.clone()),
                current: result.as_ref().map(|r| r.2.clone()),
                step,
                reason,
            }
        })
        .collect();
    for p in planned {
        if !rows.iter().any(|r| r.id == p.id) {
            rows.push(InstanceReport {
                id: p.id.clone(),
                name: p.name.clone(),
                status: "NotTargeted".into(),
                details: "NotTargeted".into(),
                response_code: None,
                outcome: None,
                previous: None,
                current: None,
                step: Some("delivery".into()),
                reason: Some("it was in the plan but SSM did not target it (tags changed or instance gone?)".into()),
            });
        }
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

/// The `instances` output: a JSON array of id, name, status, response code, outcome.
pub fn instances_json(report: &DeployReport) -> String {
    #[derive(Serialize)]
    struct Row<'a> {
        id: &'a str,
        name: Option<&'a str>,
        status: &'a str,
        response_code: Option<i32>,
        outcome: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rollback: Option<&'a str>,
    }
    let rows: Vec<Row> = report
        .instances
        .iter()
        .map(|i| Row {
            id: &i.id,
            name: i.name.as_deref(),
            status: &i.status,
            response_code: i.response_code,
            outcome: i.outcome.as_deref(),
            rollback: report.rolled_back(&i.id).map(|r| if r.ok() { "rolled-back" } else { "failed" }),
        })
        .collect();
    serde_json::to_string(&rows).expect("plain data serialises")
}

fn short_image(image: &str) -> String {
    match image.rsplit_once("@sha256:") {
        Some((repo, digest)) => {
            format!("{}@sha256:{}", repo.rsplit('/').next().unwrap_or(repo), &digest[..digest.len().min(12)])
        }
        None => image.rsplit('/').next().unwrap_or(image).to_string(),
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The job summary: a headline and a table with a row per instance.
pub fn summary_markdown(report: &DeployReport) -> String {
    let env = report.environment.as_deref().unwrap_or("(no environment)");
    let failed = report.failed().count();
    let mut md = if report.cancelled {
        format!("## ⏹ ec2-deploy: `{}` to {env} was cancelled\n\nNothing new was started after the cancel; scripts already running on instances finish there.\n\n", report.image_tag)
    } else if report.success() {
        format!("## ✅ ec2-deploy: `{}` deployed to {env}\n\n", report.image_tag)
    } else {
        format!(
            "## ❌ ec2-deploy: `{}` failed on {failed} of {} instances in {env}\n\n",
            report.image_tag,
            report.instances.len()
        )
    };
    md.push_str(&format!(
        "Image `{}` · SSM command{} `{}` · {:.1}s\n\n",
        report.image,
        if report.command_ids.len() > 1 { "s" } else { "" },
        report.command_ids.join("`, `"),
        report.seconds
    ));
    if !report.batches.is_empty() {
        md.push_str("| Batch | Instances | Result | Time |\n|---|---|---|---|\n");
        for b in &report.batches {
            let result = match &b.outcome {
                BatchOutcome::Done => "✅ drained, swapped, healthy".to_string(),
                BatchOutcome::Failed { phase, reason } => {
                    format!("❌ failed at {phase}: {}", cell(reason))
                }
                BatchOutcome::NotStarted => "not started".to_string(),
                BatchOutcome::Cancelled => "⏹ cancelled: back in the load balancer".to_string(),
            };
            md.push_str(&format!("| {} | {} | {result} | {:.1}s |\n", b.number, b.ids.join(", "), b.seconds));
        }
        md.push('\n');
    }
    if !report.skipped.is_empty() {
        md.push_str(&format!(
            "Skipped, SSM agent not connected (`on-offline: skip`): `{}`.\n\n",
            report.skipped.join("`, `")
        ));
    }
    if report.success() && failed > 0 {
        md.push_str(&format!("{failed} failed instance(s) are within `max-errors` ({}).\n\n", report.tolerated));
    }
    md.push_str("| Instance | Name | Status | Step | Before → after | Detail |\n|---|---|---|---|---|---|\n");
    for i in &report.instances {
        let change = match (&i.previous, &i.current, i.outcome.as_deref()) {
            (_, Some(cur), Some("unchanged")) => format!("{} (unchanged)", short_image(cur)),
            (Some(prev), Some(cur), _) => format!("{} → {}", short_image(prev), short_image(cur)),
            _ => "-".into(),
        };
        let status = if i.ok() { "✅ Success".to_string() } else { format!("❌ {}", i.details) };
        md.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            i.id,
            cell(i.name.as_deref().unwrap_or("-")),
            status,
            cell(i.step.as_deref().unwrap_or("-")),
            cell(&change),
            cell(i.reason.as_deref().unwrap_or("")),
        ));
    }
    if let Some(rollback) = &report.rollback {
        if rollback.problems.is_empty() {
            md.push_str(
                "\n### ↩️ Rolled back\n\nEvery instance that had switched runs its previous release again.\n\n",
            );
        } else {
            md.push_str("\n### ⚠️ Rollback incomplete\n\n");
            for p in &rollback.problems {
                md.push_str(&format!("- {}\n", cell(p)));
            }
            md.push('\n');
        }
        if !rollback.instances.is_empty() {
            md.push_str("| Instance | Rollback | Now runs | Detail |\n|---|---|---|---|\n");
            for r in &rollback.instances {
                let now = if r.ok() { r.current.as_deref() } else { r.previous.as_deref() };
                md.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    r.id,
                    if r.ok() { "✅" } else { "❌" },
                    now.map(short_image).unwrap_or_else(|| "-".into()),
                    cell(r.reason.as_deref().unwrap_or(""))
                ));
            }
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Ping;

    fn inv(id: &str, status: &str, details: &str, code: Option<i32>, output: &str) -> Invocation {
        Invocation {
            instance_id: id.into(),
            status: status.into(),
            details: details.into(),
            response_code: code,
            output: output.into(),
        }
    }

    fn planned(ids: &[&str]) -> Vec<ManagedInstance> {
        ids.iter()
            .enumerate()
            .map(|(n, id)| ManagedInstance {
                id: id.to_string(),
                name: Some(format!("web-{}", n + 1)),
                ping: Ping::Online,
                ip: None,
            })
            .collect()
    }

    fn report() -> DeployReport {
        let ok_out = "ec2-deploy: release v2\nec2-deploy-result outcome=deployed previous=r/shop@sha256:111111111111aaaa current=r/shop@sha256:222222222222bbbb\n";
        let invocations = vec![
            inv("i-1", "Success", "Success", Some(0), ok_out),
            inv("i-2", "Failed", "Failed", Some(15), "ec2-deploy: release v2\n"),
            inv("i-3", "TimedOut", "Delivery Timed Out", Some(-1), ""),
        ];
        let outputs = vec![(
            "i-2".to_string(),
            InvocationOutput {
                stdout: "ec2-deploy: release v2\n".into(),
                stderr:
                    "  | boom\nec2-deploy: error: GET /health on port 80 answered 503; the previous container is back\n"
                        .into(),
            },
        )];
        DeployReport {
            environment: Some("production".into()),
            image: "r/shop@sha256:222222222222bbbb".into(),
            image_tag: "v2".into(),
            command_ids: vec!["c0ffee".into()],
            batches: vec![],
            rollback: None,
            tolerated: 0,
            release_version: None,
            cancelled: false,
            skipped: vec![],
            instances: instance_reports(&planned(&["i-1", "i-2", "i-3", "i-4"]), &invocations, &outputs),
            seconds: 12.34,
        }
    }

    #[test]
    fn rows_explain_each_failure_in_words() {
        let r = report();
        assert!(!r.success());
        let by_id = |id: &str| r.instances.iter().find(|i| i.id == id).unwrap().clone();
        assert_eq!(by_id("i-1").outcome.as_deref(), Some("deployed"));
        assert_eq!(by_id("i-2").step.as_deref(), Some("health check"));
        assert_eq!(
            by_id("i-2").reason.as_deref(),
            Some("GET /health on port 80 answered 503; the previous container is back")
        );
        assert_eq!(by_id("i-3").reason.as_deref(), Some("the SSM agent never picked the command up (agent offline?)"));
        assert_eq!(by_id("i-4").status, "NotTargeted");
    }

    #[test]
    fn summary_snapshot() {
        insta::assert_snapshot!(summary_markdown(&report()));
    }

    #[test]
    fn instances_output_is_json() {
        let v: serde_json::Value = serde_json::from_str(&instances_json(&report())).unwrap();
        assert_eq!(v[1]["id"], "i-2");
        assert_eq!(v[1]["status"], "Failed");
        assert_eq!(v[1]["response_code"], 15);
    }
}
