//! What a deploy did, per instance and per batch, as the user reads it: the types behind the step
//! outputs, the job summary ([`summary`]) and the annotations. Pure: built from SSM's answers and
//! the script's own `ec2-deploy-result` / `ec2-deploy: error:` lines.

pub mod summary;
pub mod timings;

use std::fmt;

use serde::Serialize;

use crate::instance::step_for_exit_code;
use crate::model::{
    ImageRef, InstanceId, Invocation, InvocationOutput, InvocationStatus, ManagedInstance, Running, StatusDetail,
};

/// The status and detail of a planned instance SSM did not target (not an SSM value).
const NOT_TARGETED: &str = "NotTargeted";

/// What the script says it did on an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The new release runs.
    Deployed,
    /// It already ran this release: nothing restarted.
    Unchanged,
    /// Back on the release it ran before.
    RolledBack,
}

impl Outcome {
    fn parse(text: &str) -> Option<Outcome> {
        match text {
            "deployed" => Some(Outcome::Deployed),
            "unchanged" => Some(Outcome::Unchanged),
            "rolled-back" => Some(Outcome::RolledBack),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::Unchanged => "unchanged",
            Outcome::RolledBack => "rolled-back",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceReport {
    pub id: InstanceId,
    pub name: Option<String>,
    /// SSM's invocation status; `NotTargeted` when SSM never targeted a planned instance.
    pub status: InvocationStatus,
    pub detail: StatusDetail,
    pub response_code: Option<i32>,
    pub outcome: Option<Outcome>,
    pub previous: Option<Running>,
    pub current: Option<Running>,
    /// For a failure: the step and why, in words.
    pub step: Option<String>,
    pub reason: Option<String>,
    /// Milliseconds the proxied port did not answer while this instance moved from publishing it
    /// itself to the proxy (once, on the first deploy with the proxy).
    pub gap_ms: Option<u64>,
    /// Where the script's time went: each phase it went through (`login`, `pull`, `start`,
    /// `health`, …) with its milliseconds, in order.
    pub phases: Vec<(String, u64)>,
    /// How many docker commands the script ran from its lock on (absent from older scripts).
    pub docker_calls: Option<u32>,
    /// The instance left the fleet during the run (why, in words): SSM could not reach it and
    /// lists it under the tags no more, or its agent is gone. Not a failure: the run's result is
    /// about the instances that remain.
    pub left: Option<String>,
    /// What a read-only check (`MODE=check`) found on the instance.
    pub check: Option<Check>,
}

/// A check's line: `ec2-deploy-check state=… image=… release=…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `current`, or why not (`missing`, `stopped`, `other-release`, `other-settings`,
    /// `proxy-down`, `changing`, `restarting`).
    pub state: String,
    /// The image the container runs (`-` when there is none).
    pub image: String,
    /// Its `ec2-deploy.release` label: the release's tag (`-` when there is none).
    pub release: String,
    /// How many times Docker restarted it, and its last exit code (`-`: no container, or a check
    /// by an older script).
    pub restarts: String,
    pub exit: String,
    /// The proxy answers with the maintenance page (`maintenance=on`; absent from older scripts).
    pub maintenance: bool,
}

/// The script's last line starting with `prefix` (`ec2-deploy-result `), as a reader of its
/// `name=value` fields.
fn script_line<'a>(stdout: &'a str, prefix: &str) -> Option<impl Fn(&str) -> Option<String> + 'a> {
    let line = stdout.lines().rev().find(|l| l.starts_with(prefix))?;
    Some(move |name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('='))).map(str::to_string)
    })
}

fn parse_check(stdout: &str) -> Option<Check> {
    let field = script_line(stdout, "ec2-deploy-check ")?;
    Some(Check {
        state: field("state")?,
        image: field("image")?,
        release: field("release").unwrap_or_else(|| "-".into()),
        restarts: field("restarts").unwrap_or_else(|| "-".into()),
        exit: field("exit").unwrap_or_else(|| "-".into()),
        maintenance: field("maintenance").as_deref() == Some("on"),
    })
}

impl InstanceReport {
    pub fn ok(&self) -> bool {
        self.status == InvocationStatus::Success
    }

    /// In the plan, but SSM did not target it (see [`InstanceReport::not_targeted`]).
    pub fn not_targeted_by_ssm(&self) -> bool {
        self.detail == StatusDetail::Other(NOT_TARGETED.into())
    }

    /// Did not succeed, and is still in the fleet: a failure of the run.
    pub fn failed(&self) -> bool {
        !self.ok() && self.left.is_none()
    }

    /// Why its command did not succeed: the script's reason, else SSM's status and detail.
    pub fn why_not(&self) -> String {
        self.reason.clone().unwrap_or_else(|| format!("{} ({})", self.status, self.detail))
    }

    /// The new release runs here, switched by this deploy (not already running).
    pub fn switched(&self) -> bool {
        self.ok() && self.outcome == Some(Outcome::Deployed)
    }

    /// A planned instance no command was sent to, and why.
    pub fn not_started(instance: &ManagedInstance, why: &str) -> InstanceReport {
        InstanceReport {
            id: instance.id.clone(),
            name: instance.name.clone(),
            status: InvocationStatus::Cancelled,
            detail: StatusDetail::Terminated,
            response_code: None,
            outcome: None,
            previous: None,
            current: None,
            step: Some("not started".into()),
            reason: Some(why.to_string()),
            gap_ms: None,
            phases: vec![],
            docker_calls: None,
            left: None,
            check: None,
        }
    }

    /// A planned instance SSM never targeted.
    pub fn not_targeted(instance: &ManagedInstance) -> InstanceReport {
        InstanceReport {
            id: instance.id.clone(),
            name: instance.name.clone(),
            status: InvocationStatus::Other(NOT_TARGETED.into()),
            detail: StatusDetail::Other(NOT_TARGETED.into()),
            response_code: None,
            outcome: None,
            previous: None,
            current: None,
            step: Some("delivery".into()),
            reason: Some("it was in the plan but SSM did not target it (tags changed or instance gone?)".into()),
            gap_ms: None,
            phases: vec![],
            docker_calls: None,
            left: None,
            check: None,
        }
    }
}

/// Where in a batch something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Drain,
    Swap,
    Healthy,
    /// Healthy and back in the load balancer, then a watched alarm went off.
    Bake,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Drain => "drain",
            Phase::Swap => "swap",
            Phase::Healthy => "load balancer health",
            Phase::Bake => "bake",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum BatchOutcome {
    Done,
    Failed {
        phase: Phase,
        reason: String,
    },
    NotStarted,
    /// Stopped by a cancel; the batch was registered again.
    Cancelled,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    pub number: usize,
    pub ids: Vec<InstanceId>,
    pub outcome: BatchOutcome,
    pub seconds: f64,
    /// Instances that joined the tags during the deploy (see `apply::catch_up`).
    pub catch_up: bool,
}

/// What going back to the previous release did, after a failure.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RollbackReport {
    pub instances: Vec<InstanceReport>,
    /// Problems that leave the fleet other than it was before the deploy.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub environment: Option<String>,
    pub image: ImageRef,
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
    /// The environment's release before this deploy (from its record), if it had one.
    pub previous_image: Option<ImageRef>,
    /// The GitHub deployment this run reported to (its own, or the job's).
    pub deployment_id: Option<u64>,
    /// The run was cancelled (SIGINT/SIGTERM): nothing new was started after that.
    pub cancelled: bool,
    /// Why the run stopped before its end, when something other than a cancel stopped it (the
    /// deploy lock was lost, the deadline passed).
    pub stopped: Option<String>,
    /// Instances left out because their SSM agent was not connected (on-offline: skip).
    pub skipped: Vec<InstanceId>,
    /// Which way requests reached the instances during the swap, and what that guarantees.
    pub mode: String,
    /// Behind target groups: each batch left the load balancer while it swapped.
    pub drained: bool,
    /// The watched alarm that went off, and when: every switched instance went back.
    pub alarm: Option<String>,
    /// How many instances the plan named (the fleet section compares it with what happened).
    pub planned: usize,
    /// Instances that joined the tags during the deploy and got the release too.
    pub caught_up: Vec<InstanceId>,
    /// A converge: what the check found before anything moved.
    pub converge: Option<ConvergeReport>,
    /// The `pre-deploy` command that ran (and succeeded) before the rollout: what, where, how long.
    pub pre_deploy: Option<String>,
    /// Milliseconds the pull before the first batch took (pull-first), when there was one.
    pub pull_ms: Option<u64>,
    pub seconds: f64,
}

/// What a converge found: the drifted instances (each with why), and how many ran the live
/// release already and were left alone.
#[derive(Debug, Clone, Serialize)]
pub struct ConvergeReport {
    pub drifted: Vec<(InstanceId, String)>,
    pub in_step: usize,
}

impl DeployReport {
    pub fn success(&self) -> bool {
        // A converge that found nothing drifted, or only instances left out as offline
        // (on-offline: skip), has nothing to deploy, and succeeds.
        (!self.instances.is_empty()
            || self.converge.as_ref().is_some_and(|c| c.drifted.iter().all(|(id, _)| self.skipped.contains(id))))
            && !self.cancelled
            && self.stopped.is_none()
            && self.alarm.is_none()
            && self.rollback.is_none()
            && self.batches.iter().all(|b| b.outcome == BatchOutcome::Done)
            && self.failed().count() <= self.tolerated
    }

    pub fn failed(&self) -> impl Iterator<Item = &InstanceReport> {
        self.instances.iter().filter(|i| i.failed())
    }

    /// The instances that left the fleet during the run.
    pub fn left(&self) -> impl Iterator<Item = &InstanceReport> {
        self.instances.iter().filter(|i| i.left.is_some())
    }

    /// The rollback's result for one instance, if it was rolled back.
    pub fn rolled_back(&self, id: &InstanceId) -> Option<&InstanceReport> {
        self.rollback.as_ref()?.instances.iter().find(|r| &r.id == id)
    }
}

/// `ec2-deploy-result outcome=… previous=… current=… [previous_config=… current_config=…]
/// [gap_ms=…] [phases=NAME:MS,…]` from the script's stdout.
fn parse_result(stdout: &str) -> Option<ResultLine> {
    let field = script_line(stdout, "ec2-deploy-result ")?;
    // The script writes `-` for the settings of a container it did not start (it has no label):
    // no settings, which is how a rollback must ask for it back.
    let running = |image: &str, config: &str| {
        Some(Running { image: field(image)?, config: field(config).filter(|c| c != "-").unwrap_or_default() })
    };
    Some(ResultLine {
        outcome: Outcome::parse(&field("outcome")?)?,
        previous: running("previous", "previous_config")?,
        current: running("current", "current_config")?,
        gap_ms: field("gap_ms").and_then(|g| g.parse().ok()),
        phases: field("phases").map(|p| parse_phases(&p)).unwrap_or_default(),
        docker_calls: field("docker_calls").and_then(|n| n.parse().ok()),
    })
}

/// What the script's result line says.
struct ResultLine {
    outcome: Outcome,
    previous: Running,
    current: Running,
    gap_ms: Option<u64>,
    phases: Vec<(String, u64)>,
    docker_calls: Option<u32>,
}

/// `login:80,pull:412,…`; a part that does not read as `NAME:MS` is left out.
fn parse_phases(text: &str) -> Vec<(String, u64)> {
    text.split(',')
        .filter_map(|part| {
            let (name, ms) = part.split_once(':')?;
            Some((name.to_string(), ms.parse().ok()?))
        })
        .collect()
}

/// The script's own explanation of a failure (its last `ec2-deploy: error:` line).
fn parse_error(stderr: &str) -> Option<String> {
    stderr.lines().rev().find_map(|l| l.strip_prefix("ec2-deploy: error: ")).map(str::to_string)
}

/// Why an invocation failed, when the script itself could not say.
fn ssm_reason(inv: &Invocation) -> String {
    match inv.status {
        InvocationStatus::InProgress | InvocationStatus::Cancelling => {
            return "the run stopped following while the script ran; it finishes on the instance".into()
        }
        InvocationStatus::Pending | InvocationStatus::Delayed => {
            return "the run stopped before the script started".into()
        }
        _ => {}
    }
    match &inv.detail {
        StatusDetail::DeliveryTimedOut => "the SSM agent never picked the command up (agent offline?)".into(),
        StatusDetail::Undeliverable => "SSM could not deliver the command (instance stopped or terminated?)".into(),
        StatusDetail::ExecutionTimedOut => "the script ran longer than `command-timeout`".into(),
        StatusDetail::Terminated => "not started: too many other instances failed (max-errors)".into(),
        StatusDetail::Cancelled => "the command was cancelled".into(),
        StatusDetail::AccessDenied => "SSM was denied access to the instance".into(),
        StatusDetail::InvalidPlatform => "the instance is not Linux".into(),
        other => format!("SSM reports {other}"),
    }
}

/// One row per planned instance (and per unexpected one SSM targeted as well).
pub fn instance_reports(
    planned: &[ManagedInstance],
    invocations: &[Invocation],
    outputs: &[(InstanceId, InvocationOutput)],
) -> Vec<InstanceReport> {
    let name_of = |id: &InstanceId| planned.iter().find(|p| &p.id == id).and_then(|p| p.name.clone());
    let mut rows: Vec<InstanceReport> = invocations
        .iter()
        .map(|inv| {
            let full = outputs.iter().find(|(id, _)| *id == inv.instance_id).map(|(_, o)| o);
            let stdout = full.map(|o| o.stdout.as_str()).unwrap_or(&inv.output);
            let result = parse_result(stdout);
            let ok = inv.status == InvocationStatus::Success;
            let script_ran = inv.response_code.is_some_and(|c| c >= 0) && inv.detail == StatusDetail::Failed;
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
                let step = match &inv.detail {
                    _ if !inv.is_done() => "cancelled",
                    StatusDetail::ExecutionTimedOut => "script",
                    StatusDetail::Terminated => "not started",
                    StatusDetail::Cancelled => "cancelled",
                    _ => "delivery",
                };
                (Some(step.to_string()), Some(ssm_reason(inv)))
            };
            let (outcome, previous, current, gap_ms, phases, docker_calls) = match result {
                Some(r) => (Some(r.outcome), Some(r.previous), Some(r.current), r.gap_ms, r.phases, r.docker_calls),
                None => (None, None, None, None, vec![], None),
            };
            InstanceReport {
                id: inv.instance_id.clone(),
                name: name_of(&inv.instance_id),
                status: inv.status.clone(),
                detail: inv.detail.clone(),
                response_code: inv.response_code,
                outcome,
                previous,
                current,
                step,
                reason,
                gap_ms,
                phases,
                docker_calls,
                left: None,
                check: if ok { parse_check(stdout) } else { None },
            }
        })
        .collect();
    for p in planned {
        if !rows.iter().any(|r| r.id == p.id) {
            rows.push(InstanceReport::not_targeted(p));
        }
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Ping;

    pub fn id(n: u32) -> InstanceId {
        InstanceId::parse(&format!("i-{n:017x}")).unwrap()
    }

    fn inv(n: u32, status: &str, detail: &str, code: Option<i32>, output: &str) -> Invocation {
        Invocation {
            instance_id: id(n),
            status: InvocationStatus::from_aws(status),
            detail: StatusDetail::from_aws(detail),
            response_code: code,
            output: output.into(),
        }
    }

    fn planned(n: u32) -> Vec<ManagedInstance> {
        (1..=n)
            .map(|i| ManagedInstance { id: id(i), name: Some(format!("web-{i}")), ping: Ping::Online, ip: None })
            .collect()
    }

    pub fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    pub fn report() -> DeployReport {
        let ok_out = format!(
            "ec2-deploy: release v2\nec2-deploy-result outcome=deployed previous=r/shop@{} current=r/shop@{} previous_config=aa current_config=bb phases=prepare:120,login:80,pull:1432,start:61,health:2210,switch:35,finish:90 docker_calls=31\n",
            digest('1'),
            digest('2')
        );
        let invocations = vec![
            inv(1, "Success", "Success", Some(0), &ok_out),
            inv(2, "Failed", "Failed", Some(15), "ec2-deploy: release v2\n"),
            inv(3, "TimedOut", "Delivery Timed Out", Some(-1), ""),
        ];
        let outputs = vec![(
            id(2),
            InvocationOutput {
                stdout: "ec2-deploy: release v2\n".into(),
                stderr:
                    "  | boom\nec2-deploy: error: GET /health on port 80 answered 503; the previous container is back\n"
                        .into(),
            },
        )];
        DeployReport {
            environment: Some("production".into()),
            image: ImageRef::parse(&format!("r/shop@{}", digest('2'))).unwrap(),
            image_tag: "v2".into(),
            command_ids: vec!["c0ffee".into()],
            batches: vec![],
            rollback: None,
            tolerated: 0,
            release_version: None,
            previous_image: None,
            deployment_id: None,
            cancelled: false,
            stopped: None,
            skipped: vec![],
            mode: "through the proxy".into(),
            drained: true,
            alarm: None,
            planned: 2,
            caught_up: vec![],
            converge: None,
            pre_deploy: None,
            pull_ms: None,
            instances: instance_reports(&planned(4), &invocations, &outputs),
            seconds: 12.34,
        }
    }

    #[test]
    fn rows_explain_each_failure_in_words() {
        let r = report();
        assert!(!r.success());
        let row = |n: u32| r.instances.iter().find(|i| i.id == id(n)).unwrap().clone();
        assert_eq!(row(1).outcome, Some(Outcome::Deployed));
        assert_eq!(row(1).previous.unwrap().config, "aa");
        assert_eq!(row(2).step.as_deref(), Some("health check"));
        assert_eq!(
            row(2).reason.as_deref(),
            Some("GET /health on port 80 answered 503; the previous container is back")
        );
        assert_eq!(row(3).reason.as_deref(), Some("the SSM agent never picked the command up (agent offline?)"));
        assert_eq!(row(4).status.as_str(), "NotTargeted");
    }
}
