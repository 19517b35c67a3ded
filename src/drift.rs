//! Drift: which instances of an environment run something other than its live release.
//!
//! Each online instance with the environment's tags is asked, by a read-only Run Command, whether
//! it runs the live release as a deploy of it would leave it: the release's recorded header with
//! `MODE=check` (see `instance/script/03-check.sh`). The script compares the container's image and its
//! settings' identity (the `ec2-deploy.config` label, which covers the secret's values as they
//! are now), and whether its proxy runs; it takes no lock, pulls nothing and changes nothing.
//! An instance whose agent is offline cannot be asked: it counts as drifted, since nothing shows
//! that it runs the release. `ec2-deploy status` prints the survey; `converge` redeploys the live
//! release to the drifted instances only.

use crate::apply::command::{ask, Answered, Question};
use crate::apply::Context;
pub use crate::model::{DriftState as State, InstanceDrift};
use crate::model::{ManagedInstance, TagFilter};
use crate::ports::World;
use crate::release::Recorded;
use crate::Error;

/// Seconds the check may run on one instance: it reads a few container fields and the secret.
pub const CHECK_TIMEOUT: u32 = 120;

/// The check's state, in words.
fn describe(c: &crate::report::Check) -> String {
    let runs = match (c.image.as_str(), c.release.as_str()) {
        ("-", _) => String::new(),
        (image, "-") => format!(" (runs {image})"),
        (image, release) => format!(" (runs {release}: {image})"),
    };
    let what = match c.state.as_str() {
        "missing" => "no container of this name",
        "stopped" => "its container is stopped",
        "other-release" => "another release",
        "other-settings" => "the live release's image with other settings or secret values",
        "proxy-down" => "its proxy is not running",
        "changing" => "a deploy is swapping its container, or one stopped mid-swap",
        "restarting" => {
            let exit = if c.exit == "-" { String::new() } else { format!(", exit code {}", c.exit) };
            return format!("its container keeps restarting ({} restart(s){exit}){runs}", c.restarts);
        }
        other => return format!("the check said {other:?}{runs}"),
    };
    format!("{what}{runs}")
}

/// Asks each of `instances` (those with the environment's tags) whether it runs `live`. Offline
/// ones are not asked; the online ones get one read-only command (by id, in chunks of 50).
pub async fn survey<W: World>(
    world: &W,
    cx: &Context<'_>,
    live: &Recorded,
    instances: &[ManagedInstance],
    tags: &[TagFilter],
    comment: &str,
) -> Result<Vec<InstanceDrift>, Error> {
    let question = Question {
        script: &crate::instance::check_script(&live.release.header)?,
        action: "check",
        timeout: CHECK_TIMEOUT,
        comment: comment.to_string(),
        read_outputs: false,
    };
    let answers = ask(world, cx, instances, tags, question, |n| {
        format!(
            "Asking {n} instance(s) which release they run (a read-only check of {} {})",
            live.release.tag,
            live.release.image.digest.short()
        )
    })
    .await?;
    Ok(instances
        .iter()
        .map(|i| {
            let state = match answers.of(i) {
                Answered::Offline(ping) => State::Offline { ping },
                Answered::Report(r, _) => match (&r.check, r.ok()) {
                    (Some(c), true) if c.state == "current" => State::Current,
                    (Some(c), true) => State::Drifted { why: describe(c) },
                    (None, true) => State::Unknown { why: "the check printed no result".into() },
                    (_, false) => State::Unknown { why: r.why_not() },
                },
                Answered::NoReport => State::Unknown { why: "no report from the check".into() },
            };
            let maintenance =
                matches!(answers.of(i), Answered::Report(r, _) if r.check.as_ref().is_some_and(|c| c.maintenance));
            InstanceDrift { instance: i.clone(), state, maintenance }
        })
        .collect())
}

/// `ec2-deploy status`'s fleet part: asks every instance with the request's tags (offline ones
/// included, as not asked) and prints one line each; returns what it found.
pub async fn show<W: World>(
    world: &W,
    cx: &Context<'_>,
    req: &crate::inputs::DeployRequest,
    live: &Recorded,
) -> Result<Vec<InstanceDrift>, Error> {
    let instances = world.find_instances(&req.targets).await?;
    let targets: Vec<String> = req.targets.iter().map(ToString::to_string).collect();
    let comment = format!("{} status", crate::apply::command::comment(req.environment.as_ref(), &live.release.tag));
    let survey = survey(world, cx, live, &instances, &req.targets, &comment).await?;
    let drifted = survey.iter().filter(|d| d.drifted()).count();
    cx.runner.info(&format!(
        "\n  instances with tags {}: {}, {drifted} drifted from the live release {}",
        targets.join(" and "),
        survey.len(),
        live.release.tag
    ));
    for d in &survey {
        let mut state = if d.drifted() { format!("drifted: {}", d.why()) } else { "on the live release".into() };
        if d.maintenance {
            state.push_str("; maintenance page on (the proxy answers 503; `ec2-deploy maintenance off` ends it)");
        }
        cx.runner.info(&format!("  {}  {:<16} {state}", d.instance.id, d.instance.name.as_deref().unwrap_or("-")));
    }
    Ok(survey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::tests::{deploy, image, report, request, world};
    use crate::model::Ping;
    use crate::release::Releases;

    #[test]
    fn a_restart_loop_is_drift_with_its_count_and_last_exit_code() {
        let c = crate::report::Check {
            state: "restarting".into(),
            image: "r/shop@sha256:ab".into(),
            release: "v2".into(),
            restarts: "7".into(),
            exit: "1".into(),
            maintenance: false,
        };
        assert_eq!(
            describe(&c),
            "its container keeps restarting (7 restart(s), exit code 1) (runs v2: r/shop@sha256:ab)"
        );
    }

    /// Instance 2 put back on v1 by hand, instance 3 offline: the status lists both as drifted,
    /// each with why, and sends nothing but the read-only check to the online ones.
    #[tokio::test(start_paused = true)]
    async fn status_lists_the_drifted_and_the_offline_instances() {
        let w = world(3);
        for tag in ["v1", "v2"] {
            let (result, log) = deploy(&w, &request(tag)).await;
            assert!(report(result, &log).success(), "{log:#?}");
        }
        w.set_running(2, &image("v1"), &[]);
        w.set_ping(3, Ping::ConnectionLost);
        let sent = w.commands_sent();
        let req = request("v2");
        let history = Releases::new(req.release_parameter.clone()).history(&w).await.unwrap();
        let live = history.live().unwrap().unwrap();
        let runner = crate::github::Runner::capture();
        let cancel = crate::cancel::Cancel::default();
        let cx = Context {
            runner: &runner,
            cancel: &cancel,
            workdir: std::path::Path::new("."),
            lock: &crate::apply::Unlocked,
        };
        let survey = show(&w, &cx, &req, live).await.unwrap();
        let states: Vec<bool> = survey.iter().map(InstanceDrift::drifted).collect();
        assert_eq!(states, [false, true, true]);
        assert_eq!(w.commands_sent(), sent + 1, "one command: the check");
        assert_eq!(w.log().last().unwrap(), "send check 1,2");
        let out = runner.captured().join("\n");
        assert!(out.contains("3, 2 drifted from the live release v2"), "{out}");
        assert!(out.contains(&format!("drifted: another release (runs {})", image("v1"))), "{out}");
        assert!(out.contains("drifted: not asked: its SSM agent is ConnectionLost"), "{out}");
        assert!((1..=3).all(|n| w.instance(n).running.is_some()), "nothing removed");
        assert_eq!(w.instance(2).running.unwrap().image, image("v1"), "nothing changed");
    }

    fn check(state: &str, image: &str, release: &str) -> crate::report::Check {
        crate::report::Check {
            state: state.into(),
            image: image.into(),
            release: release.into(),
            restarts: "0".into(),
            exit: "-".into(),
            maintenance: false,
        }
    }

    #[test]
    fn a_check_line_reads_as_words() {
        assert_eq!(
            describe(&check("other-release", "r/app@sha256:1", "v1")),
            "another release (runs v1: r/app@sha256:1)"
        );
        assert_eq!(describe(&check("missing", "-", "-")), "no container of this name");
        assert_eq!(describe(&check("what", "-", "-")), "the check said \"what\"");
    }
}
