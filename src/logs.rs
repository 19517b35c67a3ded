//! Logs: the last lines each instance's container printed, without SSH.
//!
//! `ec2-deploy logs` sends the live release's recorded header with `MODE=logs` (see
//! `instance/script/03-logs.sh`) to every online instance with the environment's tags: a read-only
//! Run Command that prints `docker logs --tail N` of the service's container, each value of the
//! release's secret masked on the instance (it reads the secret there, as a deploy does). SSM
//! returns at most 24,000 characters of a script's output; past that the script leaves out the
//! oldest lines and says how many it had, and this says that they were cut.

use crate::apply::command::{ask, print_prefixed, Answered, Question};
use crate::apply::Context;
use crate::model::{InvocationOutput, ManagedInstance};
use crate::ports::World;
use crate::release::Recorded;
use crate::Error;

/// Seconds the logs command may run on one instance: it reads the secret and the container's log.
pub const LOGS_TIMEOUT: u32 = 120;

/// What one instance answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLogs {
    pub instance: ManagedInstance,
    pub answer: Answer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The lines (newest last), and what was left out when SSM's limit cut them.
    Lines { lines: Vec<String>, cut: Option<Cut> },
    /// Not asked: its SSM agent is not connected.
    Offline { ping: String },
    /// The command failed there: why.
    Failed { why: String },
}

/// The script had more than SSM returns: `shown` of `lines` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub lines: usize,
    pub shown: usize,
}

/// What to ask each instance for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// How many of the newest (matching) lines.
    pub lines: u32,
    /// `docker logs --since`: a duration back from now (`10m`, `1h30m`) or an RFC 3339 time.
    pub since: Option<String>,
    /// An extended regular expression (`grep -E`) the lines must match, after the masking.
    pub grep: Option<String>,
}

impl Query {
    pub fn last(lines: u32) -> Query {
        Query { lines, since: None, grep: None }
    }
}

/// `--since`: a duration as docker reads it (`90s`, `10m`, `1h30m`) or an RFC 3339 time.
pub fn parse_since(text: &str) -> Result<String, String> {
    let t = text.trim();
    let is_duration = !t.is_empty() && {
        let mut rest = t;
        let mut ok = true;
        while !rest.is_empty() && ok {
            let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
            let unit_end = rest[digits..].find(|c: char| c.is_ascii_digit()).map_or(rest.len(), |i| digits + i);
            ok = digits > 0
                && rest[..digits].parse::<f64>().is_ok()
                && ["ns", "us", "µs", "ms", "s", "m", "h"].contains(&&rest[digits..unit_end]);
            rest = &rest[unit_end..];
        }
        ok
    };
    if is_duration || t.parse::<jiff::Timestamp>().is_ok() {
        Ok(t.to_string())
    } else {
        Err(format!("expected a duration like 10m or 1h30m, or an RFC 3339 time like 2026-12-05T10:00:00Z, got {t:?}"))
    }
}

/// Asks `instances` for their container's lines, and prints them, each line prefixed with the
/// instance's id.
pub async fn show<W: World>(
    world: &W,
    cx: &Context<'_>,
    req: &crate::inputs::DeployRequest,
    live: &Recorded,
    instances: &[ManagedInstance],
    query: &Query,
) -> Result<Vec<InstanceLogs>, Error> {
    let found = ask_instances(world, cx, req, live, instances, query).await?;
    for l in &found {
        print(cx, l);
    }
    Ok(found)
}

/// What each instance answers, without printing it.
async fn ask_instances<W: World>(
    world: &W,
    cx: &Context<'_>,
    req: &crate::inputs::DeployRequest,
    live: &Recorded,
    instances: &[ManagedInstance],
    query: &Query,
) -> Result<Vec<InstanceLogs>, Error> {
    let question = Question {
        script: &crate::instance::logs_script(&live.release.header, query)?,
        action: "logs",
        timeout: LOGS_TIMEOUT,
        comment: format!("{} logs", crate::apply::command::comment(req.environment.as_ref(), &live.release.tag)),
        read_outputs: true,
    };
    let what = format!(
        "the last {} lines{}{}",
        query.lines,
        query.since.as_ref().map(|s| format!(" since {s}")).unwrap_or_default(),
        query.grep.as_ref().map(|g| format!(" matching {g}")).unwrap_or_default()
    );
    let answers = ask(world, cx, instances, &req.targets, question, |n| {
        format!("Asking {n} instance(s) for {what} of {}", live.release.container.name)
    })
    .await?;
    Ok(instances
        .iter()
        .map(|i| {
            let answer = match answers.of(i) {
                Answered::Offline(ping) => Answer::Offline { ping },
                Answered::Report(r, Some(out)) if r.ok() => lines_of(out),
                Answered::Report(r, _) => Answer::Failed { why: r.why_not() },
                Answered::NoReport => Answer::Failed { why: "no report from the command".into() },
            };
            InstanceLogs { instance: i.clone(), answer }
        })
        .collect())
}

/// Seconds between two asks of `--follow`.
pub const FOLLOW_EVERY: u64 = 5;

/// `--follow`: asks again every [`FOLLOW_EVERY`] seconds for the lines since the newest one seen
/// (a little before, so that none falls between two asks) and prints only the new ones, until
/// the run is cancelled (Ctrl-C). Each ask is one read-only command.
pub async fn follow<W: World>(
    world: &W,
    cx: &Context<'_>,
    req: &crate::inputs::DeployRequest,
    live: &Recorded,
    instances: &[ManagedInstance],
    query: &Query,
) -> Result<(), Error> {
    use std::collections::HashMap;
    cx.runner.info(&format!("Following: a read-only command every {FOLLOW_EVERY}s for the new lines; Ctrl-C to stop"));
    let mut newest: HashMap<String, jiff::Timestamp> = HashMap::new();
    let mut query = query.clone();
    loop {
        let found = match ask_instances(world, cx, req, live, instances, &query).await {
            // Ctrl-C is how one stops following.
            Err(Error::Cancelled) => return Ok(()),
            found => found?,
        };
        for l in found {
            let id = l.instance.id.to_string();
            match &l.answer {
                Answer::Lines { lines, .. } => {
                    let seen = newest.get(&id).copied();
                    let new: Vec<String> = lines
                        .iter()
                        .filter(|line| seen.is_none_or(|s| stamp(line).is_none_or(|t| t > s)))
                        .cloned()
                        .collect();
                    if let Some(t) = lines.iter().filter_map(|line| stamp(line)).max() {
                        newest.insert(id.clone(), seen.map_or(t, |s| s.max(t)));
                    }
                    print_prefixed(cx, &l.instance.id, &new);
                }
                _ => print(cx, &l),
            }
        }
        // From the oldest of the newest lines seen (the clocks of the instances may differ).
        if let Some(from) = newest.values().min() {
            query.since = Some((*from - jiff::SignedDuration::from_secs(1)).to_string());
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(FOLLOW_EVERY)) => {}
            _ = cx.cancel.cancelled() => return Ok(()),
        }
    }
}

/// The time Docker stamped a line with (`--timestamps`: RFC 3339 with nanoseconds, first).
fn stamp(line: &str) -> Option<jiff::Timestamp> {
    line.split_whitespace().next()?.parse().ok()
}

/// The lines of a successful answer, with the script's count (`ec2-deploy-logs …` on stderr).
fn lines_of(out: &InvocationOutput) -> Answer {
    let lines: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    let field = |name: &str| -> Option<usize> {
        let line = out.stderr.lines().rev().find(|l| l.starts_with("ec2-deploy-logs "))?;
        line.split_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    };
    let cut = match (field("lines"), field("shown_lines")) {
        (Some(all), Some(shown)) if shown < all => Some(Cut { lines: all, shown }),
        _ => None,
    };
    Answer::Lines { lines, cut }
}

pub fn print(cx: &Context<'_>, l: &InstanceLogs) {
    let id = &l.instance.id;
    let name = l.instance.name.as_deref().unwrap_or("-");
    match &l.answer {
        Answer::Lines { lines, cut } => {
            cx.runner.info(&format!("==> {id} ({name}): {} line(s)", lines.len()));
            if let Some(c) = cut {
                cx.runner.info(&format!(
                    "    cut: SSM returns at most 24,000 characters of output, so only the newest {} of {} lines are shown; ask for fewer with --lines",
                    c.shown, c.lines
                ));
            }
            print_prefixed(cx, id, lines);
        }
        Answer::Offline { ping } => cx.runner.info(&format!("==> {id} ({name}): not asked: its SSM agent is {ping}")),
        Answer::Failed { why } => cx.runner.info(&format!("==> {id} ({name}): no logs: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::tests::{deploy, report, request, world};
    use crate::model::Ping;
    use crate::release::Releases;

    /// Instance 1 answers its lines, instance 2 has no container (removed by hand), instance 3 is
    /// offline: each is named with what it answered, and only the online ones are sent anything.
    #[tokio::test(start_paused = true)]
    async fn logs_come_from_every_online_instance_each_line_prefixed_and_the_others_say_why() {
        let w = world(3);
        let (result, log) = deploy(&w, &request("v1")).await;
        assert!(report(result, &log).success(), "{log:#?}");
        w.remove_running(2);
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
        let instances = crate::ports::RunCommand::find_instances(&w, &req.targets).await.unwrap();
        let found = show(&w, &cx, &req, live, &instances, &Query::last(1)).await.unwrap();
        assert_eq!(w.log().last().unwrap(), "send logs 1,2");
        assert!(
            matches!(&found[0].answer, Answer::Lines { lines, cut: None } if lines == &["2026-12-05T00:00:01Z GET / 200"]),
            "{found:?}"
        );
        assert!(matches!(&found[1].answer, Answer::Failed { why } if why.contains("no container")), "{found:?}");
        assert!(matches!(&found[2].answer, Answer::Offline { .. }), "{found:?}");
        let out = runner.captured().join("\n");
        let first = &found[0].instance.id;
        assert!(out.contains(&format!("{first} | 2026-12-05T00:00:01Z GET / 200")), "{out}");
        assert!(out.contains("not asked: its SSM agent is ConnectionLost"), "{out}");
        assert!(w.instance(1).running.is_some(), "nothing changed");
    }

    #[test]
    fn since_takes_a_duration_or_an_rfc_3339_time_and_nothing_else() {
        for good in ["90s", "10m", "1h30m", "1.5h", "2026-12-05T10:00:00Z", "2026-12-05T10:00:00.5+09:00"] {
            assert_eq!(parse_since(good).as_deref(), Ok(good), "{good}");
        }
        for bad in ["", "10", "m", "10x", "yesterday", "10m;rm", "2026-12-05"] {
            let e = parse_since(bad).unwrap_err();
            assert!(e.starts_with("expected a duration like 10m or 1h30m, or an RFC 3339 time"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_stamp_is_dockers_rfc_3339_time_at_the_start_of_the_line() {
        let t = stamp("2026-12-05T22:18:14.1Z GET / 200").unwrap();
        assert!(t < stamp("2026-12-05T22:18:14.12Z x").unwrap(), "by time, not as text");
        assert_eq!(stamp("no time here"), None);
    }

    #[test]
    fn an_answer_cut_by_ssm_says_how_many_lines_it_had() {
        let out = |stderr: &str| InvocationOutput { stdout: "a\nb\n".into(), stderr: stderr.into() };
        assert_eq!(
            lines_of(&out("ec2-deploy-logs lines=900 bytes=40000 shown_lines=2 shown_bytes=4\n")),
            Answer::Lines { lines: vec!["a".into(), "b".into()], cut: Some(Cut { lines: 900, shown: 2 }) }
        );
        assert_eq!(
            lines_of(&out("ec2-deploy-logs lines=2 bytes=4 shown_lines=2 shown_bytes=4\n")),
            Answer::Lines { lines: vec!["a".into(), "b".into()], cut: None }
        );
    }
}
