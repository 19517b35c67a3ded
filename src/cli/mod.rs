//! The command line: `ec2-deploy action` for the runner, `plan` / `deploy` for people, and the
//! commands that operate a live service (`status`, `releases`, `logs`, `exec`: [`operate`]).
//!
//! The flags of `plan` and `deploy` are generated from the same input table as `action.yml`, so a
//! flag and an input never disagree. `github-token` has no flag (a flag would put the token in
//! the process arguments): the CLI reads `GITHUB_TOKEN`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Command};

mod operate;

use crate::deploy::{self, Outcome};
use crate::github::Runner;
use crate::inputs::{self, Disk, RawInputs, RunContext, INPUTS};
use crate::live::Live;
use crate::lock::Lease;
use crate::model::ParameterName;
use crate::model::RegistryHost;
use crate::plan::RunInfo;
use crate::report::summary::{instances_json, summary_markdown};
use crate::report::DeployReport;
use crate::{Error, Exit};

pub fn command() -> Command {
    Command::new("ec2-deploy")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Deploy a container image to EC2 instances found by tag, through SSM Run Command.")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("action").about("Run as the GitHub Action: read INPUT_* and GITHUB_* from the environment"),
        )
        .subcommand(input_flags(
            Command::new("plan").about("Show what a deploy would do, changing nothing (deploy --dry-run)"),
        ))
        .subcommand(
            input_flags(Command::new("rollback").about(
                "Redeploy the release before the live one, or the version --to names, from the release record (no build)",
            ))
            .mut_arg("rollback-to", |a| a.visible_alias("to")),
        )
        .subcommand(
            input_flags(Command::new("status").about(
                "Show an environment's live release and its history (from the release record), and which instances with its targets run something else (drifted), asked by a read-only command",
            ))
            .arg(
                Arg::new("fail-on-drift")
                    .long("fail-on-drift")
                    .action(ArgAction::SetTrue)
                    .help("Exit 1 when an instance runs something other than the live release, or could not be asked (offline)"),
            ),
        )
        .subcommand(input_flags(Command::new("releases").about(
            "Show each service's recorded releases: version, tag, when, commit, image, and the rollbacks (the history `status` shows first), without asking any instance",
        )))
        .subcommand(logs_command())
        .subcommand(exec_command())
        .subcommand(maintenance_command())
        .subcommand(input_flags(Command::new("converge").about(
            "Redeploy the live release, from the release record and without building, to the instances that drifted from it (converge: true)",
        )))
        .subcommand(
            Command::new("user-data")
                .about("Print the user-data script that boots an Auto Scaling instance into the recorded release")
                .arg(
                    Arg::new("release-parameter")
                        .long("release-parameter")
                        .value_name("NAME")
                        .required(true)
                        .action(clap::ArgAction::Append)
                        .help("The release record the instance boots from; repeat it for each service of the instance, started in that order"),
                )
                .arg(
                    Arg::new("lifecycle-hook")
                        .long("lifecycle-hook")
                        .value_name("NAME")
                        .help("The Auto Scaling launch lifecycle hook the script completes once every release serves (CONTINUE), or when one does not (ABANDON); the instance's role needs autoscaling:DescribeAutoScalingInstances and autoscaling:CompleteLifecycleAction"),
                ),
        )
        .subcommand(
            input_flags(Command::new("deploy").about("Build, push and deploy")).arg(
                Arg::new("dry-run")
                    .long("dry-run")
                    .action(ArgAction::SetTrue)
                    .help(inputs::spec("dry-run").expect("dry-run is an input").description),
            ),
        )
}

/// `ec2-deploy logs`: what the container printed, on each instance (see [`crate::logs`]).
fn logs_command() -> Command {
    input_flags(Command::new("logs").about(
                "Print the last lines the service's container printed on each instance with its targets, the secret's values masked, asked by a read-only command",
            ))
            .arg(
                Arg::new("lines")
                    .long("lines")
                    .value_name("N")
                    .default_value("100")
                    .value_parser(clap::value_parser!(u32).range(1..=100_000))
                    .help("How many of the newest lines to ask each instance for (SSM returns at most 24,000 characters of each: past that the oldest are left out, and the output says so)"),
            )
            .arg(
                Arg::new("since")
                    .long("since")
                    .value_name("WHEN")
                    .help("Only lines from then on: a duration back from now (90s, 10m, 1h30m) or an RFC 3339 time (2026-12-05T10:00:00Z)"),
            )
            .arg(
                Arg::new("grep")
                    .long("grep")
                    .value_name("PATTERN")
                    .help("Only lines that match this extended regular expression (grep -E, on the instance, after the secret's values are masked): the last --lines of them"),
            )
            .arg(
                Arg::new("instance")
                    .long("instance")
                    .value_name("ID|NAME")
                    .help("Only this instance (one with the targets), by id or by its Name tag"),
            )
            .arg(
                Arg::new("follow")
                    .long("follow")
                    .short('f')
                    .action(ArgAction::SetTrue)
                    .help("Keep reading: ask again every 5 s for the new lines (a read-only command each time) until Ctrl-C"),
            )
}

/// `ec2-deploy maintenance on|off`: a page in front of the app (see [`crate::maintenance`]).
fn maintenance_command() -> Command {
    input_flags(Command::new("maintenance").about(
        "Put the service in maintenance (the proxy answers 503 with a page and Retry-After, the app keeps running) or take it out, on each instance with its targets",
    ))
    .arg(
        Arg::new("state")
            .value_name("on|off")
            .required(true)
            .value_parser(["on", "off"])
            .help("on: the page; off: the app again"),
    )
    .arg(
        Arg::new("message")
            .long("message")
            .value_name("TEXT")
            .default_value("This service is down for maintenance. Please try again shortly.")
            .help("The page's text (plain text)"),
    )
    .arg(
        Arg::new("retry-after")
            .long("retry-after")
            .value_name("SECONDS")
            .default_value("60")
            .value_parser(clap::value_parser!(u32).range(1..=86_400))
            .help("The page's Retry-After header"),
    )
    .arg(
        Arg::new("fail-health")
            .long("fail-health")
            .action(ArgAction::SetTrue)
            .help("The health path answers 503 too, so a load balancer takes the instances out (by default it still reaches the app, and health checks keep passing)"),
    )
    .arg(
        Arg::new("instance")
            .long("instance")
            .value_name("ID|NAME")
            .help("Only this instance (one with the targets), by id or by its Name tag"),
    )
}

/// `ec2-deploy exec`: a one-off command in the live release (see [`crate::exec`]).
fn exec_command() -> Command {
    input_flags(Command::new("exec").about(
                "Run a one-off command in a new container of the live release (its image, environment, secret, volumes, limits and user) on one instance, or all, beside the serving container, which it does not touch; print its output and exit code",
            ))
            .arg(
                Arg::new("instance")
                    .long("instance")
                    .value_name("ID|NAME")
                    .conflicts_with("all")
                    .help("The instance to run it on (one with the targets), by id or by its Name tag. Default: the first online one, by id"),
            )
            .arg(Arg::new("all").long("all").action(ArgAction::SetTrue).help("Run it on every online instance with the targets, at once"))
            .arg(
                Arg::new("exec-timeout")
                    .long("exec-timeout")
                    .value_name("SECONDS")
                    .default_value("300")
                    .value_parser(clap::value_parser!(u32).range(1..=3600))
                    .help("Seconds the command may run before it is stopped (and counted as failed)"),
            )
            .arg(
                Arg::new("cmd")
                    .value_name("COMMAND")
                    .num_args(1..)
                    .last(true)
                    .required(true)
                    .help("The command and its arguments, after `--`: run as the image's entrypoint would run them, without a shell"),
            )
}

fn input_flags(mut cmd: Command) -> Command {
    // `operation` is the action's way to name a command, which the CLI names itself.
    for spec in INPUTS.iter().filter(|s| !matches!(s.name, "dry-run" | "github-token" | "operation" | "operation-args"))
    {
        let help = match spec.default {
            Some(d) if !spec.description.contains("Default:") => format!("{} [default: {d}]", spec.description),
            _ => spec.description.to_string(),
        };
        let mut arg = Arg::new(spec.name).long(spec.name).value_name("VALUE").help(help);
        arg =
            if spec.multiline { arg.action(ArgAction::Append).value_name("LINE") } else { arg.action(ArgAction::Set) };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// The action's inputs, when the action runs one of the operating commands (see
/// [`operate::in_action`]): the inputs its flags do not give.
static ACTION_INPUTS: std::sync::OnceLock<RawInputs> = std::sync::OnceLock::new();

fn raw_from_flags(m: &ArgMatches) -> RawInputs {
    let base = ACTION_INPUTS.get();
    let mut raw = RawInputs::from_lookup(|name| {
        if matches!(name, "dry-run" | "github-token") {
            return None;
        }
        let flag = m.try_get_many::<String>(name).ok().flatten();
        flag.map(|v| v.cloned().collect::<Vec<_>>().join("\n")).or_else(|| base?.get(name).map(str::to_string))
    });
    if m.try_get_one::<bool>("dry-run").ok().flatten().copied().unwrap_or(false) {
        raw.set("dry-run", "true");
    }
    if let Ok(token) = std::env::var("GITHUB_TOKEN") {
        raw.set("github-token", token);
    }
    raw
}

pub fn main() -> ExitCode {
    let matches = command().get_matches();
    let env = |k: &str| std::env::var(k).ok();
    let (runner, mut raw, workdir) = match matches.subcommand() {
        Some(("action", _)) => {
            let workdir = env("GITHUB_WORKSPACE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            let (runner, raw) = (Runner::from_env(&env), RawInputs::from_action_env(env));
            if let Some(op) = raw.get("operation").map(str::trim).filter(|op| inputs::OPERATE.contains(op)) {
                return ExitCode::from(operate::in_action(&runner, op, &raw) as u8);
            }
            (runner, raw, workdir)
        }
        Some(("user-data", m)) => {
            let mut parameters = vec![];
            for name in m.get_many::<String>("release-parameter").expect("required") {
                match ParameterName::parse(name) {
                    Ok(p) => parameters.push(p),
                    Err(e) => {
                        eprintln!("ec2-deploy: --release-parameter: {e}");
                        return ExitCode::from(Exit::BadInput as u8);
                    }
                }
            }
            let hook = m.get_one::<String>("lifecycle-hook").map(|h| h.trim());
            if let Some(bad) = hook.filter(|h| {
                h.is_empty() || h.len() > 255 || !h.chars().all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c))
            }) {
                eprintln!(
                    "ec2-deploy: --lifecycle-hook: {bad:?} is not a lifecycle hook name (1 to 255 letters, digits, -, _ or /)"
                );
                return ExitCode::from(Exit::BadInput as u8);
            }
            return match crate::instance::user_data(&parameters, hook) {
                Ok(script) => {
                    print!("{script}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ec2-deploy: --release-parameter: {e}");
                    ExitCode::from(Exit::BadInput as u8)
                }
            };
        }
        Some((name, m)) if inputs::OPERATE.contains(&name) => {
            return ExitCode::from(operate::dispatch(name, m) as u8);
        }
        Some((name, m)) => {
            let mut raw = raw_from_flags(m);
            if name == "plan" {
                raw.set("dry-run", "true");
            }
            if name == "rollback" {
                raw.set("rollback", "true");
            }
            if name == "converge" {
                raw.set("converge", "true");
            }
            (Runner::terminal(), raw, PathBuf::from("."))
        }
        None => unreachable!("clap requires a subcommand"),
    };
    if raw.get("github-token").is_none() {
        if let Some(t) = env("GITHUB_TOKEN") {
            raw.set("github-token", t);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ec2-deploy: cannot start: {e}");
            return ExitCode::from(Exit::DeployFailed as u8);
        }
    };
    let code = rt.block_on(run(&runner, &raw, &env, &workdir));
    ExitCode::from(code as u8)
}

/// Runs one deploy and reports it; returns the exit code.
pub async fn run(
    runner: &Runner,
    raw: &RawInputs,
    env: &dyn Fn(&str) -> Option<String>,
    workdir: &std::path::Path,
) -> Exit {
    let ctx = RunContext { env, workdir: workdir.to_path_buf() };
    let cancel = crate::cancel::Cancel::default();
    cancel.on_signals();
    let requests = match inputs::resolve(raw, &ctx, &Disk) {
        Ok(requests) => requests,
        Err(errors) => return fail(runner, Error::Inputs(errors)),
    };
    let mut warned = std::collections::BTreeSet::new();
    for req in &requests {
        if let Some(token) = &req.github_token {
            runner.mask(&token.0);
        }
        for secret in &req.build_spec.secrets {
            if let crate::model::SecretSource::Env { value, .. } = &secret.source {
                runner.mask(&value.0);
            }
        }
        for warning in req.warnings.iter().filter(|w| warned.insert(w.as_str())) {
            runner.warning("ec2-deploy: inputs", warning);
        }
    }
    // Services of one step share the region, the registry and the token (one set of inputs).
    let first = &requests[0];
    let ecr_region = first.registry.as_ref().and_then(RegistryHost::ecr_region);
    let token = first.github_token.as_ref().map(|t| t.0.as_str());
    let world = match Live::connect(first.region.as_ref(), ecr_region.as_ref(), token, env, runner).await {
        Ok(world) => world,
        Err(e) => return fail(runner, Error::NoRegion(e)),
    };
    let info = RunInfo::from_env(env, first.commit.clone());
    let cx = deploy::Context { runner, cancel: &cancel, workdir };
    if let [req] = requests.as_slice() {
        return match deploy::run(req, &world, &info, &cx, lease(env)).await {
            Ok(outcome) => report(runner, outcome),
            Err(e) => fail(runner, e),
        };
    }

    // Several services: checked together, then deployed one after the other; the first that
    // does not succeed stops the ones after it.
    if let Err(e) = deploy::check_shared_ports(&requests, &world).await {
        return fail(runner, e);
    }
    let mut rows = vec![];
    let mut exit = Exit::Success;
    for req in &requests {
        let service = req.service.as_deref().unwrap_or_default();
        if exit != Exit::Success {
            rows.push(serde_json::json!({ "service": service, "result": "not-deployed" }));
            let _ = runner
                .summary(&format!("# Service `{service}`\n\nNot deployed: a service before it did not succeed.\n\n"));
            continue;
        }
        runner.info(&format!("Service {service}: container {}, record {}", req.container.name, req.release_parameter));
        let _ = runner.summary(&format!("# Service `{service}`\n\n"));
        let (code, row) = match deploy::run(req, &world, &info, &cx, lease(env)).await {
            Ok(Outcome::DryRun(_)) => (Exit::Success, serde_json::json!({ "result": "dry-run" })),
            Ok(Outcome::Finished(r)) => {
                let code = finish(runner, &r);
                let result = if r.cancelled {
                    "cancelled"
                } else if r.success() {
                    "success"
                } else {
                    "failed"
                };
                (
                    code,
                    serde_json::json!({ "result": result, "release-version": r.release_version, "command-id": r.command_ids.join(" "), "image": r.image.to_string() }),
                )
            }
            Err(e) => {
                let result = if matches!(e, Error::Cancelled) { "cancelled" } else { "failed" };
                (fail(runner, e), serde_json::json!({ "result": result }))
            }
        };
        let mut row = row;
        row["service"] = service.into();
        row["container"] = req.container.name.as_str().into();
        row["release-parameter"] = req.release_parameter.as_str().into();
        rows.push(row);
        exit = code;
    }
    let overall = match (exit, requests[0].dry_run) {
        (Exit::Success, true) => "dry-run",
        (Exit::Success, false) => "success",
        _ if rows.iter().any(|r| r["result"] == "cancelled") => "cancelled",
        _ => "failed",
    };
    for (name, value) in [("services", serde_json::Value::from(rows).to_string()), ("result", overall.to_string())] {
        if let Err(e) = runner.set_output(name, &value) {
            runner.error("ec2-deploy: runner", &format!("writing step output {name}: {e}"));
        }
    }
    exit
}

/// Reports one deploy's outcome; returns the exit code.
fn report(runner: &Runner, outcome: Outcome) -> Exit {
    match outcome {
        Outcome::DryRun(_) => {
            let _ = runner.set_output("result", "dry-run");
            Exit::Success
        }
        Outcome::Finished(report) => finish(runner, &report),
    }
}

/// Reports an error that stopped a deploy (or all of them); returns the exit code.
fn fail(runner: &Runner, e: Error) -> Exit {
    runner.error(e.title(), &e.to_string());
    let _ = runner.set_output("result", if matches!(e, Error::Cancelled) { "cancelled" } else { "failed" });
    let _ = runner.summary(&format!("## ❌ {}\n\n```\n{e}\n```\n", e.title()));
    e.exit()
}

/// The deploy lock's lease: `EC2_DEPLOY_LOCK_LEASE` seconds (at least 4), or the default.
fn lease(env: &dyn Fn(&str) -> Option<String>) -> Lease {
    env("EC2_DEPLOY_LOCK_LEASE").and_then(|s| s.trim().parse().ok()).map(Lease::of_seconds).unwrap_or_default()
}

fn finish(runner: &Runner, report: &DeployReport) -> Exit {
    let success = report.success();
    for i in report.left() {
        let name = i.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
        runner.notice("ec2-deploy: left", &format!("{}{name} {}", i.id, i.left.as_deref().unwrap_or_default()));
    }
    let mut problems = vec![];
    for i in report.failed() {
        let what = format!(
            "{}{}: {} at step {}: {}",
            i.id,
            i.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default(),
            i.detail,
            i.step.as_deref().unwrap_or("-"),
            i.reason.as_deref().unwrap_or("")
        );
        runner.error("ec2-deploy: instance failed", &what);
        problems.push(what);
    }
    for (name, value) in [
        ("command-id", report.command_ids.join(" ")),
        ("instances", instances_json(report)),
        ("release-version", report.release_version.map(|v| v.to_string()).unwrap_or_default()),
        ("deployment-id", report.deployment_id.map(|v| v.to_string()).unwrap_or_default()),
        (
            "result",
            if report.cancelled {
                "cancelled"
            } else if success {
                "success"
            } else {
                "failed"
            }
            .to_string(),
        ),
    ] {
        if let Err(e) = runner.set_output(name, &value) {
            runner.error("ec2-deploy: runner", &format!("writing step output {name}: {e}"));
        }
    }
    if !report.skipped.is_empty() {
        runner.warning(
            "ec2-deploy: skipped",
            &format!(
                "not deployed, SSM agent not connected: {}",
                report.skipped.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(", ")
            ),
        );
    }
    let markdown = summary_markdown(report);
    if let Err(e) = runner.summary(&markdown) {
        runner.warning("ec2-deploy: runner", &format!("writing the job summary: {e}"));
    }
    if !runner.actions {
        runner.info(&markdown);
    }
    if let (true, Some(c)) = (success, &report.converge) {
        runner.info(&format!(
            "Converged on {}: {} drifted instance(s) redeployed, {} left alone, in {:.1}s.",
            report.image,
            report.instances.len(),
            c.in_step,
            report.seconds
        ));
        Exit::Success
    } else if success {
        runner.info(&format!(
            "Deployed {} to {} instances in {:.1}s.",
            report.image,
            report.instances.len(),
            report.seconds
        ));
        if let Some(slowest) = crate::report::timings::slowest(&report.instances) {
            runner.info(&format!("Slowest phase: {slowest} (the job summary has every phase per instance)."));
        }
        Exit::Success
    } else {
        runner.info(&format!("Deploy failed on {} of {} instances.", problems.len(), report.instances.len()));
        Exit::DeployFailed
    }
}
