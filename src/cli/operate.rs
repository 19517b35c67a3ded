//! The commands that operate a live service without changing its release: `status` (the record's
//! history and which instances drifted from the live release), `logs` (what the container printed
//! on each instance) and `exec` (a one-off command in a new container of the live release). They
//! resolve the inputs as a converge would (the live release comes from the record, so no image is
//! needed), talk to AWS alone and report to no GitHub deployment.

use std::path::PathBuf;
use std::sync::Mutex;

use clap::ArgMatches;

use super::raw_from_flags;
use crate::deploy;
use crate::github::Runner;
use crate::inputs::{self, DeployRequest, Disk, InputError, RunContext};
use crate::live::Live;
use crate::model::ParameterName;
use crate::release::{Entry, Releases};
use crate::{Error, Exit};

/// Where `out!` and `err!` write: the terminal (stdout, stderr), or, when the action runs one
/// of these commands, a buffer that [`in_action`] prints as untrusted text and puts in the job
/// summary once the command ends.
static CAPTURE: Mutex<Option<String>> = Mutex::new(None);

fn emit(stderr: bool, line: String) {
    let mut capture = CAPTURE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match capture.as_mut() {
        Some(buffer) => {
            buffer.push_str(&line);
            buffer.push('\n');
        }
        None if stderr => eprintln!("{line}"),
        None => println!("{line}"),
    }
}

macro_rules! out {
    () => { emit(false, String::new()) };
    ($($t:tt)*) => { emit(false, format!($($t)*)) };
}
macro_rules! err {
    ($($t:tt)*) => { emit(true, format!($($t)*)) };
}

/// Runs the command `name` (one of [`inputs::OPERATE`]) with its flags.
pub fn dispatch(name: &str, m: &ArgMatches) -> Exit {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    match name {
        "status" => rt.block_on(status(m)),
        "releases" => rt.block_on(releases(m)),
        "logs" => rt.block_on(logs(m)),
        "maintenance" => rt.block_on(maintenance(m)),
        _ => rt.block_on(exec(m)),
    }
}

/// The action's input `operation` names one of these commands: `operation-args` are its
/// arguments (parsed by the command's own flags; the other inputs stand for its input flags).
/// What it prints goes to the log as untrusted text (nothing in it is taken for a workflow
/// command) and to the job summary; its exit code is the step's.
pub fn in_action(runner: &Runner, op: &str, raw: &inputs::RawInputs) -> Exit {
    let bad = |why: String| {
        runner.error("ec2-deploy: bad input", &format!("input `operation-args`: {why}"));
        let _ = runner.set_output("result", "failed");
        Exit::BadInput
    };
    let words = match raw.get("operation-args").map(shlex::split) {
        None => vec![],
        Some(Some(words)) => words,
        Some(None) => return bad("unbalanced quotes".into()),
    };
    let argv = ["ec2-deploy".to_string(), op.to_string()].into_iter().chain(words.iter().cloned());
    let matches = match super::command().try_get_matches_from(argv) {
        Ok(matches) => matches,
        Err(e) => return bad(format!("for `{op}`: {}", e.render().to_string().trim())),
    };
    let m = matches.subcommand().map(|(_, m)| m.clone()).expect("the operation's command");
    if op == "logs" && m.get_flag("follow") {
        return bad("`--follow` reads until it is interrupted, which needs a terminal; use --since".into());
    }
    let _ = super::ACTION_INPUTS.set(raw.clone());
    *CAPTURE.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(String::new());
    let exit = dispatch(op, &m);
    let text = CAPTURE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take().unwrap_or_default();
    runner.untrusted(&text);
    let args = if words.is_empty() {
        String::new()
    } else {
        format!(" {}", shlex::try_join(words.iter().map(String::as_str)).unwrap_or_default())
    };
    let (icon, result) = if exit == Exit::Success { ("✅", "success") } else { ("❌", "failed") };
    // A fence longer than any run of backticks in the text: nothing in it closes the block.
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let summary =
        format!("## {icon} ec2-deploy {op}{args}: exit {}\n\n{fence}text\n{}\n{fence}\n", exit as u8, text.trim_end());
    if let Err(e) = runner.summary(&summary) {
        runner.warning("ec2-deploy: runner", &format!("writing the job summary: {e}"));
    }
    let _ = runner.set_output("result", result);
    exit
}

/// The requests the flags and the config file resolve to, as a converge would.
fn requests(m: &ArgMatches) -> Result<Vec<DeployRequest>, Vec<InputError>> {
    let env = |k: &str| std::env::var(k).ok();
    let mut raw = raw_from_flags(m);
    // What a converge would ask: the live release comes from the record, so no tag is needed.
    raw.set("converge", "true");
    let ctx = RunContext { env: &env, workdir: PathBuf::from(".") };
    inputs::resolve(&raw, &ctx, &Disk)
}

/// AWS alone, in the requests' region.
async fn aws(req: &DeployRequest, command: &str) -> Result<Live, Exit> {
    match crate::aws::Clients::load(req.region.as_ref(), None).await {
        Ok(clients) => Ok(Live::new(clients, None, None)),
        Err(e) => {
            err!("ec2-deploy {command}: {e}");
            Err(Exit::BadInput)
        }
    }
}

/// What the commands here share: the flags' requests, AWS, a terminal context.
struct Operator {
    command: &'static str,
    requests: Vec<DeployRequest>,
    world: Live,
    runner: Runner,
    cancel: crate::cancel::Cancel,
}

impl Operator {
    async fn new(m: &ArgMatches, command: &'static str) -> Result<Operator, Exit> {
        let requests = requests(m).map_err(|errors| {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            err!("ec2-deploy {command}: {}", text.join("\n  "));
            Exit::BadInput
        })?;
        Operator::with(requests, command).await
    }

    /// For requests resolved already. AWS only: these commands report to no GitHub deployment.
    async fn with(requests: Vec<DeployRequest>, command: &'static str) -> Result<Operator, Exit> {
        let world = aws(&requests[0], command).await?;
        let cancel = crate::cancel::Cancel::default();
        cancel.on_signals();
        Ok(Operator { command, requests, world, runner: Runner::through(emit), cancel })
    }

    fn cx(&self) -> crate::apply::Context<'_> {
        crate::apply::Context {
            runner: &self.runner,
            cancel: &self.cancel,
            workdir: std::path::Path::new("."),
            lock: &crate::apply::Unlocked,
        }
    }

    /// The request completed from its record, and the record's history.
    async fn history(&self, req: &DeployRequest) -> Result<(DeployRequest, crate::release::History), Exit> {
        let command = self.command;
        let req = deploy::with_record(req, &self.world, &self.runner).await.map_err(|e| {
            err!("ec2-deploy {command}: {e}");
            e.exit()
        })?;
        let history = Releases::new(req.release_parameter.clone()).history(&self.world).await.map_err(|e| {
            err!("ec2-deploy {command}: {e}");
            Exit::Access
        })?;
        Ok((req, history))
    }

    /// The one request a command that reads one service runs on; several are bad input, named
    /// (`why` says what needs one).
    fn one_service(&self, why: &str) -> Result<&DeployRequest, Exit> {
        if self.requests.len() > 1 {
            let names: Vec<&str> = self.requests.iter().filter_map(|r| r.service.as_deref()).collect();
            err!(
                "ec2-deploy {}: {why}the environment has {} services ({}): name one with --service",
                self.command,
                names.len(),
                names.join(", ")
            );
            return Err(Exit::BadInput);
        }
        Ok(&self.requests[0])
    }

    /// The instances with the request's targets, or the ones `at` picks among them (one that is
    /// not among them is bad input, named, and nothing is sent).
    async fn instances(
        &self,
        req: &DeployRequest,
        at: Option<&crate::exec::Where>,
    ) -> Result<Vec<crate::model::ManagedInstance>, Exit> {
        let command = self.command;
        let all = crate::ports::RunCommand::find_instances(&self.world, &req.targets).await.map_err(|e| {
            err!("ec2-deploy {command}: {e}");
            Error::from(e).exit()
        })?;
        match at {
            None => Ok(all),
            Some(at) => crate::exec::chosen(&all, at).map_err(|why| {
                use crate::exec::Where;
                let flag = if matches!(at, Where::Instance(_) | Where::Named(_)) { "--instance: " } else { "" };
                err!("ec2-deploy {command}: {flag}{why}; nothing was sent");
                Exit::BadInput
            }),
        }
    }

    /// The request completed from its record, and the record's live release.
    async fn live(&self, req: &DeployRequest) -> Result<(DeployRequest, crate::release::Recorded), Exit> {
        let command = self.command;
        let (req, history) = self.history(req).await?;
        match history.live() {
            Ok(Some(live)) => {
                let live = live.clone();
                Ok((req, live))
            }
            Ok(None) => {
                err!(
                    "ec2-deploy {command}: {}: no release recorded yet, so no container to run",
                    req.release_parameter
                );
                Err(Exit::DeployFailed)
            }
            Err(e) => {
                err!("ec2-deploy {command}: {e}");
                Err(Exit::DeployFailed)
            }
        }
    }
}

/// `ec2-deploy logs`: for each service, the live release's container's last lines on each
/// instance with its targets, or the one `--instance` names (see [`crate::logs`]); `--follow`
/// keeps reading (one service). Exits 1 when an instance could not answer.
pub(super) async fn logs(m: &ArgMatches) -> Exit {
    let since = match m.get_one::<String>("since").map(|s| crate::logs::parse_since(s)).transpose() {
        Ok(since) => since,
        Err(e) => {
            err!("ec2-deploy logs: --since: {e}");
            return Exit::BadInput;
        }
    };
    let grep = m.get_one::<String>("grep").cloned();
    if grep.as_deref().is_some_and(|g| g.is_empty() || g.contains('\n')) {
        err!("ec2-deploy logs: --grep: expected a pattern on one line");
        return Exit::BadInput;
    }
    let query = crate::logs::Query { lines: *m.get_one::<u32>("lines").expect("has a default"), since, grep };
    let at = m.get_one::<String>("instance").map(|a| crate::exec::where_of(a));
    let follow = m.get_flag("follow");
    let op = match Operator::new(m, "logs").await {
        Ok(op) => op,
        Err(exit) => return exit,
    };
    if follow {
        if let Err(exit) = op.one_service("--follow reads one service; ") {
            return exit;
        }
    }
    let mut unanswered = vec![];
    for req in &op.requests {
        if let Some(service) = &req.service {
            out!("# Service {service}\n");
        }
        let (req, live) = match op.live(req).await {
            Ok(found) => found,
            Err(exit) => return exit,
        };
        let instances = match op.instances(&req, at.as_ref()).await {
            Ok(instances) => instances,
            Err(exit) => return exit,
        };
        let cx = op.cx();
        let asked = if follow {
            crate::logs::follow(&op.world, &cx, &req, &live, &instances, &query).await.map(|()| vec![])
        } else {
            crate::logs::show(&op.world, &cx, &req, &live, &instances, &query).await
        };
        match asked {
            Ok(found) => unanswered.extend(
                found
                    .into_iter()
                    .filter(|l| !matches!(l.answer, crate::logs::Answer::Lines { .. }))
                    .map(|l| l.instance.id.to_string()),
            ),
            Err(e) => {
                err!("ec2-deploy logs: {e}");
                return e.exit();
            }
        }
        out!();
    }
    if unanswered.is_empty() {
        return Exit::Success;
    }
    err!("ec2-deploy logs: no logs from {} instance(s): {}", unanswered.len(), unanswered.join(", "));
    Exit::DeployFailed
}

/// `ec2-deploy maintenance on|off`: for each service, the page in front of its app on each
/// instance with its targets, or the one `--instance` names (see [`crate::maintenance`]). Exits 1
/// when an instance did not change.
pub(super) async fn maintenance(m: &ArgMatches) -> Exit {
    let wanted = crate::maintenance::Maintenance {
        on: m.get_one::<String>("state").is_some_and(|s| s == "on"),
        message: m.get_one::<String>("message").cloned().unwrap_or_default(),
        retry_after: *m.get_one::<u32>("retry-after").expect("has a default"),
        fail_health: m.get_flag("fail-health"),
    };
    let at = m.get_one::<String>("instance").map(|a| crate::exec::where_of(a));
    let op = match Operator::new(m, "maintenance").await {
        Ok(op) => op,
        Err(exit) => return exit,
    };
    let mut unchanged = vec![];
    for req in &op.requests {
        if let Some(service) = &req.service {
            out!("# Service {service}\n");
        }
        let (req, live) = match op.live(req).await {
            Ok(found) => found,
            Err(exit) => return exit,
        };
        if !live.release.container.proxy {
            err!(
                "ec2-deploy maintenance: the live release of {} runs without the proxy (proxy: false): there is nothing to put a page in front of it",
                live.release.container.name
            );
            return Exit::BadInput;
        }
        let instances = match op.instances(&req, at.as_ref()).await {
            Ok(instances) => instances,
            Err(exit) => return exit,
        };
        match crate::maintenance::set(&op.world, &op.cx(), &req, &live, &instances, &wanted).await {
            Ok(found) => {
                unchanged.extend(found.into_iter().filter(|f| f.failed.is_some()).map(|f| f.instance.id.to_string()))
            }
            Err(e) => {
                err!("ec2-deploy maintenance: {e}");
                return e.exit();
            }
        }
        out!();
    }
    if unchanged.is_empty() {
        return Exit::Success;
    }
    err!("ec2-deploy maintenance: not changed on {} instance(s): {}", unchanged.len(), unchanged.join(", "));
    Exit::DeployFailed
}

/// `ec2-deploy exec -- COMMAND…`: the command in a new container of the live release, on one
/// instance or all (see [`crate::exec`]). One service: the config's services are named with
/// `--service`. Exits 0 when it exited 0 everywhere it was run, 1 otherwise (each named).
pub(super) async fn exec(m: &ArgMatches) -> Exit {
    use crate::exec::Where;
    let command: Vec<String> = m.get_many::<String>("cmd").expect("required").cloned().collect();
    let timeout = *m.get_one::<u32>("exec-timeout").expect("has a default");
    let at = match (m.get_one::<String>("instance"), m.get_flag("all")) {
        (Some(at), _) => crate::exec::where_of(at),
        (None, true) => Where::All,
        (None, false) => Where::One,
    };
    let op = match Operator::new(m, "exec").await {
        Ok(op) => op,
        Err(exit) => return exit,
    };
    let req = match op.one_service("") {
        Ok(req) => req,
        Err(exit) => return exit,
    };
    let (req, live) = match op.live(req).await {
        Ok(found) => found,
        Err(exit) => return exit,
    };
    let on = match op.instances(&req, Some(&at)).await {
        Ok(on) => on,
        Err(exit) => return exit,
    };
    match crate::exec::run(&op.world, &op.cx(), &req, &live, &command, timeout, on).await {
        Ok(found) => {
            let failed: Vec<String> =
                found.iter().filter(|e| !e.succeeded()).map(|e| e.instance.id.to_string()).collect();
            if failed.is_empty() {
                return Exit::Success;
            }
            err!("ec2-deploy exec: did not exit 0 on {} instance(s): {}", failed.len(), failed.join(", "));
            Exit::DeployFailed
        }
        Err(e) => {
            err!("ec2-deploy exec: {e}");
            e.exit()
        }
    }
}

/// `ec2-deploy releases`: for each service, the record's history (what `status` prints first),
/// without asking any instance; with `--release-parameter` and no targets, that record's.
pub(super) async fn releases(m: &ArgMatches) -> Exit {
    // The record alone needs no targets: `--release-parameter` names it.
    if requests(m).is_err() && m.get_one::<String>("release-parameter").is_some() {
        return record_only(m).await;
    }
    let op = match Operator::new(m, "releases").await {
        Ok(op) => op,
        Err(exit) => return exit,
    };
    for req in &op.requests {
        if let Some(service) = &req.service {
            out!("# Service {service}\n");
        }
        let (req, history) = match op.history(req).await {
            Ok(found) => found,
            Err(exit) => return exit,
        };
        if let Err(exit) = print_history(&req.release_parameter, &history) {
            return exit;
        }
        out!();
    }
    Exit::Success
}

/// `ec2-deploy status`: for each service, the live release and the history from its record, then
/// each instance with its targets: on the live release, or drifted (and why). Without the inputs
/// a deploy would resolve (no `targets` in the flags or the config file), a record named by
/// `--release-parameter` is still shown, without the instances.
pub(super) async fn status(m: &ArgMatches) -> Exit {
    let fail_on_drift = m.get_flag("fail-on-drift");
    let requests = match requests(m) {
        Ok(requests) => requests,
        Err(errors) => {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            if fail_on_drift || m.get_one::<String>("release-parameter").is_none() {
                err!("ec2-deploy status: {}", text.join("\n  "));
                return Exit::BadInput;
            }
            out!("(the instances were not asked: {})\n", text.join("; "));
            return record_only(m).await;
        }
    };
    let op = match Operator::with(requests, "status").await {
        Ok(op) => op,
        Err(exit) => return exit,
    };
    let mut drifted = vec![];
    for req in &op.requests {
        if let Some(service) = &req.service {
            out!("# Service {service}\n");
        }
        let (req, history) = match op.history(req).await {
            Ok(found) => found,
            Err(exit) => return exit,
        };
        let live = match print_history(&req.release_parameter, &history) {
            Ok(Some(live)) => live,
            Ok(None) => continue,
            Err(exit) => return exit,
        };
        match crate::drift::show(&op.world, &op.cx(), &req, live).await {
            Ok(survey) => drifted.extend(survey.into_iter().filter(crate::drift::InstanceDrift::drifted)),
            Err(e) => {
                err!("ec2-deploy status: {e}");
                return e.exit();
            }
        }
        out!();
    }
    if drifted.is_empty() {
        return Exit::Success;
    }
    let ids: Vec<&str> = drifted.iter().map(|d| d.instance.id.as_str()).collect();
    let advice = "`ec2-deploy converge` (the action's `converge: true`) redeploys the live release to them";
    if fail_on_drift {
        err!(
            "ec2-deploy status: drift: {} instance(s) do not run the live release: {}; {advice}",
            ids.len(),
            ids.join(", ")
        );
        return Exit::DeployFailed;
    }
    out!("{} instance(s) drifted: {}; {advice}", ids.len(), ids.join(", "));
    Exit::Success
}

/// The record alone (see [`status`]): the one `--release-parameter` names.
async fn record_only(m: &ArgMatches) -> Exit {
    let get = |name: &str| m.get_one::<String>(name).cloned();
    let parameter = match ParameterName::parse(&get("release-parameter").unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => {
            err!("ec2-deploy status: --release-parameter: {e}");
            return Exit::BadInput;
        }
    };
    let region = match get("aws-region").map(|r| crate::model::Region::parse(&r)).transpose() {
        Ok(r) => r,
        Err(e) => {
            err!("ec2-deploy status: --aws-region: {e}");
            return Exit::BadInput;
        }
    };
    let clients = match crate::aws::Clients::load(region.as_ref(), None).await {
        Ok(c) => c,
        Err(e) => {
            err!("ec2-deploy status: {e}");
            return Exit::BadInput;
        }
    };
    let world = Live::new(clients, None, None);
    let history = match Releases::new(parameter.clone()).history(&world).await {
        Ok(h) => h,
        Err(e) => {
            err!("ec2-deploy status: {e}");
            return Exit::Access;
        }
    };
    match print_history(&parameter, &history) {
        Ok(_) => Exit::Success,
        Err(exit) => exit,
    }
}

/// Prints the live release and the record's versions; returns the live one (`None`: nothing is
/// recorded yet), or the exit code when the live version cannot be read.
fn print_history<'h>(
    parameter: &ParameterName,
    history: &'h crate::release::History,
) -> Result<Option<&'h crate::release::Recorded>, Exit> {
    let live = match history.live() {
        Ok(Some(live)) => live,
        Ok(None) => {
            out!("{parameter}: no release recorded yet");
            return Ok(None);
        }
        Err(e) => {
            err!("ec2-deploy status: {e}");
            return Err(Exit::DeployFailed);
        }
    };
    out!(
        "{parameter}: live release {} (version {}), deployed {}",
        live.release.tag,
        live.version,
        live.release.deployed_at
    );
    out!("  image   {}", live.release.image);
    if let Some(url) = &live.release.run_url {
        out!("  run     {url}");
    }
    if let Some(t) = &live.release.timings {
        out!("  took    {t}");
    }
    out!("\n  version  tag                   deployed              commit    image");
    let left = history.rolled_back();
    for entry in history.entries.iter().rev() {
        match entry {
            Entry::Release(r) => {
                let mut notes = vec![];
                if r.version == live.version {
                    notes.push("live".to_string());
                }
                if let Some(from) = r.release.rolled_back_from {
                    notes.push(format!("rollback from version {from}"));
                }
                if left.contains(&r.version) {
                    notes.push("rolled back from; rollback skips it".to_string());
                }
                out!(
                    "  {:>7}  {:<20}  {:<20}  {:<8}  {}{}",
                    r.version,
                    r.release.tag.as_str(),
                    r.release.deployed_at,
                    r.release
                        .commit
                        .as_deref()
                        .map(|c| c.chars().take(8).collect::<String>())
                        .unwrap_or_else(|| "-".into()),
                    r.release.image.digest.short(),
                    if notes.is_empty() { String::new() } else { format!("  ({})", notes.join("; ")) }
                )
            }
            Entry::Unreadable { version, reason } => out!("  {version:>7}  unreadable: {reason}"),
        }
    }
    Ok(Some(live))
}
