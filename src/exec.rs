//! Exec: a one-off command in the live release, on one instance or all, without SSH.
//!
//! `ec2-deploy exec` sends the live release's recorded header with `MODE=exec` (see
//! `instance/script/11-predeploy.sh`, which a deploy's `pre-deploy` shares): a new container of the
//! release's image, with its environment (the secret read on the instance), volumes, limits and
//! user, beside the serving container, which it does not touch. The command's last 200 lines come
//! back (secrets masked on the instance), with its exit code.

use crate::apply::command::{ask, print_prefixed, Answered, Question};
use crate::apply::Context;
use crate::model::{InstanceId, InvocationOutput, ManagedInstance, Ping};
use crate::ports::World;
use crate::release::Recorded;
use crate::Error;

/// Seconds SSM gives the script beyond the command's own limit: login, pull, the secret, cleanup.
const SCRIPT_MARGIN: u32 = 180;

/// Where the command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Where {
    /// The first online instance with the targets (by id).
    One,
    /// This instance, which must have the targets.
    Instance(InstanceId),
    /// The one instance with the targets whose Name tag this is.
    Named(String),
    /// Every online instance with the targets.
    All,
}

/// What one instance answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceExec {
    pub instance: ManagedInstance,
    pub answer: Answer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The command ran: its exit code (`None`: stopped at the time limit) and output lines.
    Exited { code: Option<i32>, lines: Vec<String> },
    /// Not asked: its SSM agent is not connected.
    Offline { ping: String },
    /// The command could not run there: why.
    Failed { why: String },
}

impl InstanceExec {
    pub fn succeeded(&self) -> bool {
        matches!(self.answer, Answer::Exited { code: Some(0), .. })
    }
}

/// The instances `at` picks among those with the request's targets, or an error naming the
/// instance that does not have them (nothing is sent then).
pub fn chosen(instances: &[ManagedInstance], at: &Where) -> Result<Vec<ManagedInstance>, String> {
    let mut sorted = instances.to_vec();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    match at {
        Where::All => Ok(sorted),
        Where::One => match sorted.iter().find(|i| i.ping == Ping::Online) {
            Some(first) => Ok(vec![first.clone()]),
            None => Err("no instance with the targets has a connected SSM agent".into()),
        },
        Where::Instance(id) => match sorted.iter().find(|i| &i.id == id) {
            Some(i) => Ok(vec![i.clone()]),
            None => Err(format!("{id} is not among the instances with the targets ({})", listed(&sorted))),
        },
        Where::Named(name) => match sorted.iter().filter(|i| i.name.as_deref() == Some(name)).collect::<Vec<_>>()[..] {
            [one] => Ok(vec![one.clone()]),
            [] => Err(format!("no instance with the targets is named {name} ({})", listed(&sorted))),
            ref many => Err(format!(
                "{} instances with the targets are named {name} ({}): give one's id",
                many.len(),
                many.iter().map(|i| i.id.as_str()).collect::<Vec<_>>().join(", ")
            )),
        },
    }
}

/// `--instance`: an instance id, else a Name tag.
pub fn where_of(text: &str) -> Where {
    match InstanceId::parse(text.trim()) {
        Ok(id) => Where::Instance(id),
        Err(_) => Where::Named(text.trim().to_string()),
    }
}

fn listed(instances: &[ManagedInstance]) -> String {
    instances
        .iter()
        .map(|i| format!("{}{}", i.id, i.name.as_ref().map(|n| format!(" {n}")).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `command` in the live release on `instances` (those offline are named, not asked) and
/// prints each one's output, prefixed with its id, and exit code.
pub async fn run<W: World>(
    world: &W,
    cx: &Context<'_>,
    req: &crate::inputs::DeployRequest,
    live: &Recorded,
    command: &[String],
    timeout: u32,
    instances: Vec<ManagedInstance>,
) -> Result<Vec<InstanceExec>, Error> {
    let words = shlex::try_join(command.iter().map(String::as_str)).unwrap_or_default();
    let question = Question {
        script: &crate::instance::exec_script(&live.release.header, command, timeout)?,
        action: "exec",
        timeout: timeout + SCRIPT_MARGIN,
        comment: format!("{} exec", crate::apply::command::comment(req.environment.as_ref(), &live.release.tag)),
        read_outputs: true,
    };
    let answers = ask(world, cx, &instances, &req.targets, question, |n| {
        format!(
            "Running `{words}` in release {} ({}) on {n} instance(s), at most {timeout}s",
            live.release.tag,
            live.release.image.digest.short()
        )
    })
    .await?;
    let found: Vec<InstanceExec> = instances
        .iter()
        .map(|i| {
            let answer = match answers.of(i) {
                Answered::Offline(ping) => Answer::Offline { ping },
                Answered::Report(r, output) => match output.and_then(exit_of) {
                    Some(code) => Answer::Exited { code, lines: output.map(lines_of).unwrap_or_default() },
                    None => Answer::Failed { why: r.why_not() },
                },
                Answered::NoReport => Answer::Failed { why: "no report from the command".into() },
            };
            InstanceExec { instance: i.clone(), answer }
        })
        .collect();
    for e in &found {
        print(cx, e);
    }
    Ok(found)
}

/// The script's `ec2-deploy-one-off exit=N` line: `Some(Some(N))`, `Some(None)` for a timeout,
/// `None` when the command never ran.
fn exit_of(out: &InvocationOutput) -> Option<Option<i32>> {
    let line = out.stdout.lines().rev().find(|l| l.starts_with("ec2-deploy-one-off "))?;
    match line.strip_prefix("ec2-deploy-one-off exit=")? {
        "timeout" => Some(None),
        code => code.parse().ok().map(Some),
    }
}

/// The command's own lines (the script prefixes them with `  | `).
fn lines_of(out: &InvocationOutput) -> Vec<String> {
    out.stdout.lines().filter_map(|l| l.strip_prefix("  | ")).map(str::to_string).collect()
}

fn print(cx: &Context<'_>, e: &InstanceExec) {
    let id = &e.instance.id;
    let name = e.instance.name.as_deref().unwrap_or("-");
    match &e.answer {
        Answer::Exited { code, lines } => {
            let how = match code {
                Some(c) => format!("exit code {c}"),
                None => "stopped at the time limit".into(),
            };
            cx.runner.info(&format!("==> {id} ({name}): {how}"));
            print_prefixed(cx, id, lines);
        }
        Answer::Offline { ping } => cx.runner.info(&format!("==> {id} ({name}): not asked: its SSM agent is {ping}")),
        Answer::Failed { why } => cx.runner.info(&format!("==> {id} ({name}): did not run: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::tests::{deploy, report, request, world};
    use crate::ports::RunCommand;
    use crate::release::Releases;

    /// On every instance: instance 1's command exits 0, instance 2's exits 3, instance 3 is
    /// offline. Each is named with its answer; the serving containers are the same ones after.
    #[tokio::test(start_paused = true)]
    async fn exec_runs_beside_the_serving_container_and_reports_each_exit_code() {
        let w = world(3);
        let (result, log) = deploy(&w, &request("v1")).await;
        assert!(report(result, &log).success(), "{log:#?}");
        let before: Vec<_> = (1..=3).map(|n| w.instance(n).running.clone()).collect();
        w.set_faults(2, |f| f.pre_deploy_exit = 3);
        w.set_ping(3, Ping::ConnectionLost);
        let req = request("v1");
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
        let all = w.find_instances(&req.targets).await.unwrap();
        let on = chosen(&all, &Where::All).unwrap();
        let found = run(&w, &cx, &req, live, &["bin/rake".into(), "db:version".into()], 60, on).await.unwrap();
        assert_eq!(w.log().last().unwrap(), "send exec 1,2");
        assert!(matches!(&found[0].answer, Answer::Exited { code: Some(0), lines } if lines.len() == 1), "{found:?}");
        assert!(matches!(&found[1].answer, Answer::Exited { code: Some(3), .. }), "{found:?}");
        assert!(matches!(&found[2].answer, Answer::Offline { .. }), "{found:?}");
        assert!(found[0].succeeded() && !found[1].succeeded());
        let out = runner.captured().join("\n");
        assert!(out.contains(&format!("{} | one-off on ", found[0].instance.id)), "{out}");
        assert!(out.contains("exit code 3"), "{out}");
        let after: Vec<_> = (1..=3).map(|n| w.instance(n).running.clone()).collect();
        assert_eq!(before, after, "a serving container changed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_is_the_first_online_instance_and_a_named_one_must_have_the_targets() {
        let w = world(3);
        w.set_ping(1, Ping::ConnectionLost);
        let all = w.find_instances(&request("v1").targets).await.unwrap();
        let mut ids: Vec<_> = all.iter().map(|i| i.id.clone()).collect();
        ids.sort();
        assert_eq!(chosen(&all, &Where::One).unwrap()[0].id, ids[1], "the first online one");
        assert_eq!(chosen(&all, &Where::Instance(ids[2].clone())).unwrap()[0].id, ids[2]);
        let nope = InstanceId::parse("i-0123456789abcdef0").unwrap();
        let e = chosen(&all, &Where::Instance(nope)).unwrap_err();
        assert!(e.starts_with("i-0123456789abcdef0 is not among the instances with the targets ("), "{e}");
        // By its Name tag; a name that is no instance's names the instances there are.
        let web2 = all.iter().find(|i| i.name.as_deref() == Some("web-2")).unwrap();
        assert_eq!(chosen(&all, &where_of("web-2")).unwrap()[0].id, web2.id);
        let e = chosen(&all, &where_of("web-9")).unwrap_err();
        assert!(e.starts_with("no instance with the targets is named web-9 (") && e.contains(" web-2"), "{e}");
    }

    #[test]
    fn the_exit_line_is_read_and_a_timeout_has_no_code() {
        let out = |stdout: &str| InvocationOutput { stdout: stdout.into(), stderr: String::new() };
        assert_eq!(exit_of(&out("  | hi\nec2-deploy-one-off exit=0\n")), Some(Some(0)));
        assert_eq!(exit_of(&out("ec2-deploy-one-off exit=timeout\n")), Some(None));
        assert_eq!(exit_of(&out("ec2-deploy: error: cannot pull\n")), None);
        assert_eq!(lines_of(&out("ec2-deploy: exec: running x\n  | hi\n  |   indented\n")), ["hi", "  indented"]);
    }
}
