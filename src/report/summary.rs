//! The job summary and the `instances` output, from a [`DeployReport`].

use serde::Serialize;

use super::{BatchOutcome, DeployReport, Outcome};

/// The `instances` output: a JSON array of id, name, status, response code, outcome.
pub fn instances_json(report: &DeployReport) -> String {
    #[derive(Serialize)]
    struct Row<'a> {
        id: &'a str,
        name: Option<&'a str>,
        status: &'a str,
        response_code: Option<i32>,
        outcome: Option<&'a str>,
        /// The image the instance ran before this run, and after it (`none`: nothing ran).
        image_before: Option<&'a str>,
        image_after: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rollback: Option<&'a str>,
        /// Why it counts as having left the fleet during the run (not a failure).
        #[serde(skip_serializing_if = "Option::is_none")]
        left: Option<&'a str>,
    }
    let rows: Vec<Row> = report
        .instances
        .iter()
        .map(|i| Row {
            id: i.id.as_str(),
            name: i.name.as_deref(),
            status: i.status.as_str(),
            response_code: i.response_code,
            outcome: i.outcome.map(Outcome::as_str),
            image_before: i.previous.as_ref().map(|r| r.image.as_str()),
            image_after: i.current.as_ref().map(|r| r.image.as_str()),
            rollback: report.rolled_back(&i.id).map(|r| if r.ok() { "rolled-back" } else { "failed" }),
            left: i.left.as_deref(),
        })
        .collect();
    serde_json::to_string(&rows).expect("plain data serialises")
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The fleet section: what the plan named, what got the release, what joined meanwhile and got
/// it too, what was left out, and what is drifted after this run — what `ec2-deploy status` would
/// list: instances with the tags that do not run the live release. After a success (and after
/// any converge) the live release is this one, so that is every instance not on it; after a
/// failure the record still names the release before, so it is the instances left on this one.
/// A converge counts the instances it left alone, which run the release already.
fn fleet(report: &DeployReport) -> String {
    let in_step = report.converge.as_ref().map(|c| c.in_step).unwrap_or(0);
    let on_release = report
        .instances
        .iter()
        .filter(|i| i.ok())
        .filter(|i| !report.rollback.as_ref().is_some_and(|r| r.instances.iter().any(|b| b.id == i.id && b.ok())))
        .count()
        + in_step;
    let left = report.left().count();
    let fleet = (report.planned + report.caught_up.len() + report.skipped.len() + in_step).saturating_sub(left);
    let mut md = format!(
        "### Fleet\n\n| Planned | On the release now | Caught up | Left during the run | Skipped (offline) | Drifted |\n|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} |\n\n",
        report.planned,
        on_release,
        report.caught_up.len(),
        left,
        report.skipped.len(),
        if report.success() || report.converge.is_some() { fleet.saturating_sub(on_release) } else { on_release }
    );
    if let Some(c) = &report.converge {
        let drifted: Vec<String> = c.drifted.iter().map(|(id, why)| format!("`{id}`: {}", cell(why))).collect();
        md.push_str(&match drifted.len() {
            0 => format!("Converge: all {in_step} instance(s) ran the live release already; nothing was deployed.\n\n"),
            n => format!(
                "Converge: {n} of {} instance(s) ran something else than the live release and got it again ({}); the other {in_step} ran it already and were left alone.\n\n",
                n + in_step,
                drifted.join("; ")
            ),
        });
    }
    if !report.caught_up.is_empty() {
        let ids: Vec<&str> = report.caught_up.iter().map(|i| i.as_str()).collect();
        md.push_str(&format!(
            "The fleet changed under the deploy: `{}` joined the tags after the plan and got the release too.\n\n",
            ids.join("`, `")
        ));
    }
    md
}

pub fn summary_markdown(report: &DeployReport) -> String {
    let failed = report.failed().count();
    let mut md = title(report, failed);
    md.push_str(&format!(
        "Image `{}` · SSM command{} `{}` · {:.1}s\n\n",
        report.image,
        if report.command_ids.len() > 1 { "s" } else { "" },
        report.command_ids.join("`, `"),
        report.seconds
    ));
    if !report.mode.is_empty() {
        md.push_str(&format!("Mode: {}\n\n", cell(&report.mode)));
    }
    if let Some(pre) = &report.pre_deploy {
        md.push_str(&format!("Pre-deploy: {}\n\n", cell(pre)));
    }
    md.push_str(&batch_table(report));
    md.push_str(&fleet(report));
    if !report.skipped.is_empty() {
        md.push_str(&format!(
            "Skipped, SSM agent not connected (`on-offline: skip`): `{}`.\n\n",
            report.skipped.iter().map(|i| i.as_str()).collect::<Vec<_>>().join("`, `")
        ));
    }
    if report.success() && failed > 0 {
        md.push_str(&format!("{failed} failed instance(s) are within `max-errors` ({}).\n\n", report.tolerated));
    }
    md.push_str(&instance_table(report));
    md.push_str(&super::timings::table(report));
    md.push_str(&rollback_section(report));
    md
}

/// The heading: what happened, in one line.
fn title(report: &DeployReport, failed: usize) -> String {
    let env = report.environment.as_deref().unwrap_or("(no environment)");
    if let Some(why) = &report.stopped {
        format!("## ❌ ec2-deploy: `{}` to {env} stopped before its end\n\n{}\n\n", report.image_tag, cell(why))
    } else if report.cancelled {
        format!("## ⏹ ec2-deploy: `{}` to {env} was cancelled\n\nNothing new was started after the cancel; scripts already running on instances finish there.\n\n", report.image_tag)
    } else if report.success() && report.converge.is_some() {
        format!("## ✅ ec2-deploy: {env} converged on `{}`\n\n", report.image_tag)
    } else if report.success() {
        format!("## ✅ ec2-deploy: `{}` deployed to {env}\n\n", report.image_tag)
    } else if let Some(alarm) = &report.alarm {
        format!(
            "## ❌ ec2-deploy: `{}` to {env} rolled back: an alarm went off\n\n🚨 {}\n\n",
            report.image_tag,
            cell(alarm)
        )
    } else {
        format!(
            "## ❌ ec2-deploy: `{}` failed on {failed} of {} instances in {env}\n\n",
            report.image_tag,
            report.instances.len()
        )
    }
}

/// The batches, when the rollout went in batches.
fn batch_table(report: &DeployReport) -> String {
    let mut md = String::new();
    if !report.batches.is_empty() {
        md.push_str("| Batch | Instances | Result | Time | Slowest phase |\n|---|---|---|---|---|\n");
        for b in &report.batches {
            let result = match &b.outcome {
                BatchOutcome::Done if report.drained => "✅ drained, swapped, healthy".to_string(),
                BatchOutcome::Done => "✅ swapped behind the proxy, healthy".to_string(),
                BatchOutcome::Failed { phase, reason } => {
                    format!("❌ failed at {phase}: {}", cell(reason))
                }
                BatchOutcome::NotStarted => "not started".to_string(),
                BatchOutcome::Cancelled => "⏹ cancelled: back in the load balancer".to_string(),
            };
            let ids: Vec<&str> = b.ids.iter().map(|i| i.as_str()).collect();
            let number = if b.catch_up { format!("{} (catch-up)", b.number) } else { b.number.to_string() };
            let slowest = super::timings::slowest_of(report, &b.ids).unwrap_or_else(|| "-".into());
            md.push_str(&format!("| {number} | {} | {result} | {:.1}s | {slowest} |\n", ids.join(", "), b.seconds));
        }
        md.push('\n');
    }
    md
}

/// One row per instance: its outcome, step, image change and why.
fn instance_table(report: &DeployReport) -> String {
    let mut md = String::new();
    md.push_str("| Instance | Name | Status | Step | Before → after | Detail |\n|---|---|---|---|---|---|\n");
    for i in &report.instances {
        let change = match (&i.previous, &i.current, i.outcome) {
            (_, Some(cur), Some(Outcome::Unchanged)) => format!("{} (unchanged)", cur.short()),
            (Some(prev), Some(cur), _) => format!("{} → {}", prev.short(), cur.short()),
            _ => "-".into(),
        };
        let status = if i.ok() {
            "✅ Success".to_string()
        } else if i.left.is_some() {
            "🚪 Left the fleet".to_string()
        } else {
            format!("❌ {}", i.detail)
        };
        md.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            i.id,
            cell(i.name.as_deref().unwrap_or("-")),
            status,
            cell(i.step.as_deref().unwrap_or("-")),
            cell(&change),
            cell(&match (&i.reason, i.gap_ms) {
                _ if i.left.is_some() => i.left.clone().unwrap_or_default(),
                (Some(reason), _) => reason.clone(),
                (None, Some(gap)) => format!("moved to the proxy: port gap {gap} ms (once)"),
                (None, None) => String::new(),
            }),
        ));
    }
    md
}

/// The rollback, when there was one: complete or not, per instance.
fn rollback_section(report: &DeployReport) -> String {
    let mut md = String::new();
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
                let now = if r.ok() { r.current.as_ref() } else { r.previous.as_ref() };
                md.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    r.id,
                    if r.ok() { "✅" } else { "❌" },
                    now.map(|n| n.short()).unwrap_or_else(|| "-".into()),
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
    use crate::report::tests::report;

    #[test]
    fn summary_snapshot() {
        insta::assert_snapshot!(summary_markdown(&report()));
    }

    #[test]
    fn instances_output_is_json() {
        let v: serde_json::Value = serde_json::from_str(&instances_json(&report())).unwrap();
        assert_eq!(v[1]["id"], "i-00000000000000002");
        assert_eq!(v[1]["status"], "Failed");
        assert_eq!(v[1]["response_code"], 15);
        assert_eq!(v[0]["outcome"], "deployed");
        assert_eq!(v[0]["image_before"], format!("r/shop@{}", super::super::tests::digest('1')));
        assert_eq!(v[0]["image_after"], format!("r/shop@{}", super::super::tests::digest('2')));
        assert!(v[2]["image_before"].is_null() && v[2]["image_after"].is_null(), "{v}");
    }
}
