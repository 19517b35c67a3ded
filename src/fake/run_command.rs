//! Run Command in the fake world: invocations that start and end as time and the limits allow,
//! and a script that changes an instance the way the on-instance script would.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

impl World {
    // ---- Run Command simulation ------------------------------------------------------------

    /// Starts and finishes invocations as time allows.
    pub(super) fn step_commands(&self) {
        let now = self.now();
        let mut commands = lock(&self.commands);
        let mut instances = lock(&self.instances);
        for command in commands.iter_mut() {
            let total = command.invocations.len();
            let concurrency = command.request.max_concurrency.of(total, true).max(1);
            let max_errors = command.request.max_errors.of(total, false);
            let execution = Duration::from_secs(u64::from(command.request.execution_timeout));
            let delivery = Duration::from_secs(u64::from(command.request.delivery_timeout));
            // Finish what is due.
            for inv in command.invocations.iter_mut() {
                if inv.status == InvocationStatus::InProgress {
                    let started = inv.started.expect("started");
                    let hangs = instances[&inv.instance].faults.hangs;
                    if hangs {
                        continue;
                    }
                    if inv.ends.is_some_and(|e| e <= now) {
                        let inst = instances.get_mut(&inv.instance).expect("an instance");
                        run_script(inst, &command.request.script, inv);
                        inst.busy = false;
                    } else if now >= started + execution {
                        inv.status = InvocationStatus::TimedOut;
                        inv.detail = StatusDetail::ExecutionTimedOut;
                        inv.code = Some(-1);
                        instances.get_mut(&inv.instance).expect("an instance").busy = false;
                    }
                }
            }
            let errors = command
                .invocations
                .iter()
                .filter(|i| matches!(i.detail, StatusDetail::Failed | StatusDetail::ExecutionTimedOut))
                .count();
            // Past MaxErrors, what has not started never will.
            if errors > max_errors {
                for inv in command.invocations.iter_mut().filter(|i| i.status.not_started()) {
                    inv.status = InvocationStatus::Cancelled;
                    inv.detail = StatusDetail::Terminated;
                }
            }
            // Start what concurrency allows, in order; offline agents wait for delivery.
            for i in 0..total {
                let in_progress =
                    command.invocations.iter().filter(|i| i.status == InvocationStatus::InProgress).count();
                let inv = &mut command.invocations[i];
                if !inv.status.not_started() {
                    continue;
                }
                let inst = instances.get_mut(&inv.instance).expect("an instance");
                if inst.terminated {
                    inv.status = InvocationStatus::Failed;
                    inv.detail = StatusDetail::Undeliverable;
                    continue;
                }
                if inst.ping != Ping::Online || inst.faults.never_reports {
                    if now >= command.sent + delivery {
                        inv.status = InvocationStatus::TimedOut;
                        inv.detail = StatusDetail::DeliveryTimedOut;
                    } else {
                        inv.status = InvocationStatus::Delayed;
                        inv.detail = StatusDetail::Delayed;
                    }
                    continue;
                }
                if in_progress >= concurrency {
                    continue;
                }
                inv.status = InvocationStatus::InProgress;
                inv.detail = StatusDetail::InProgress;
                inv.started = Some(now);
                inv.ends = Some(now + Duration::from_secs(inst.faults.script_seconds.unwrap_or(3)));
                inst.busy = true;
            }
        }
        // The fleet's count: every command's invocations in progress.
        let running: usize = commands
            .iter()
            .map(|c| c.invocations.iter().filter(|i| i.status == InvocationStatus::InProgress).count())
            .sum();
        let mut peak = lock(&self.peak_in_progress);
        *peak = (*peak).max(running);
    }
}

/// What the on-instance script computes as `ec2-deploy.config`: the image, ports and environment.
pub fn config_id(image: &str, ports: &[String], env: &[String]) -> String {
    let text = format!("{image}\n{}\n{}", ports.join("\n"), env.join("\n"));
    digest_of(&text).as_str()[7..23].to_string()
}

/// The header's assignments, unquoted (`NAME=value` lines before the script body).
pub fn header_values(script: &str) -> BTreeMap<String, String> {
    script
        .lines()
        .take_while(|l| !l.starts_with(crate::instance::SCRIPT_MARK))
        .filter_map(|l| {
            let (name, value) = l.split_once('=')?;
            if !name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') || value.starts_with('(')
            {
                return None;
            }
            let value = shlex::split(value).and_then(|v| v.into_iter().next()).unwrap_or_default();
            Some((name.to_string(), value))
        })
        .collect()
}

fn array(values: &BTreeMap<String, String>, name: &str) -> Vec<String> {
    (0..).map_while(|i| values.get(&format!("{name}_{i}")).cloned()).collect()
}

fn or_dash(config: &str) -> &str {
    if config.is_empty() {
        "-"
    } else {
        config
    }
}

/// The script, as the on-instance script would run it on this instance.
fn run_script(inst: &mut Instance, script: &str, inv: &mut FakeInvocation) {
    let v = header_values(script);
    let image = v.get("IMAGE").cloned().unwrap_or_default();
    let env = array(&v, "ENV_VARS");
    let ports = array(&v, "PORTS");
    let config = config_id(&image, &ports, &env);
    let before = inst.running.clone();
    let describe = |c: &Option<Container>| match c {
        Some(c) => (c.image.clone(), c.config.clone()),
        None => ("none".to_string(), String::new()),
    };
    let (prev_image, prev_config) = describe(&before);
    // The script's phases as it reports them: its time (script_seconds) split among three.
    let ms = inst.faults.script_seconds.unwrap_or(3) * 1000;
    let phases = format!("pull:{},start:{},health:{}", ms / 4, ms / 4, ms - 2 * (ms / 4));
    let finish = |inv: &mut FakeInvocation, code: i32, outcome: Option<(&str, &Option<Container>)>, error: &str| {
        inv.code = Some(code);
        if code == 0 {
            let (outcome, now) = outcome.expect("an outcome");
            let (cur_image, cur_config) = describe(now);
            inv.status = InvocationStatus::Success;
            inv.detail = StatusDetail::Success;
            // As the script writes it: `-` for a container without settings (one it adopted).
            let (prev_config, cur_config) = (or_dash(&prev_config), or_dash(&cur_config));
            inv.stdout = format!(
                "ec2-deploy-result outcome={outcome} previous={prev_image} current={cur_image} previous_config={prev_config} current_config={cur_config} phases={phases}\n"
            );
        } else {
            inv.status = InvocationStatus::Failed;
            inv.detail = StatusDetail::Failed;
            inv.stderr = format!("ec2-deploy: error: {error}\n");
        }
    };
    if inst.faults.booting_scripts > 0 {
        inst.faults.booting_scripts -= 1;
        return finish(inv, 20, None, "the Docker daemon on this instance does not answer (is it running? systemctl start docker); nothing was changed");
    }
    match v.get("MODE").map(String::as_str) {
        Some("check") => check(inst, &image, &config, inv),
        Some("predeploy") => predeploy(inst, inv),
        Some("pull") => pull(inst, &image, inv),
        Some("exec") => exec(inst, inv),
        Some("logs") => logs(inst, &v, inv),
        Some("rollback") => {
            let expect = v.get("ROLLBACK_CONFIG").cloned().unwrap_or_default();
            let matches_expected =
                |c: &Container| if expect.is_empty() { c.image == image } else { c.config == expect };
            if inst.running.as_ref().is_some_and(matches_expected) {
                let now = inst.running.clone();
                return finish(inv, 0, Some(("unchanged", &now)), "");
            }
            if !inst.previous.as_ref().is_some_and(matches_expected) {
                return finish(
                    inv,
                    18,
                    None,
                    &format!("cannot roll back to {image}: the previous container here runs something else"),
                );
            }
            if inst.faults.rollback_fails {
                return finish(
                    inv,
                    19,
                    None,
                    "rollback failed: the previous release is unhealthy; the newer one runs again",
                );
            }
            std::mem::swap(&mut inst.running, &mut inst.previous);
            let now = inst.running.clone();
            finish(inv, 0, Some(("rolled-back", &now)), "")
        }
        _ => {
            if inst.running.as_ref().is_some_and(|c| c.config == config) {
                let now = inst.running.clone();
                return finish(inv, 0, Some(("unchanged", &now)), "");
            }
            if inst.faults.unhealthy_images.contains(&image)
                || inst.faults.unhealthy_env.as_ref().is_some_and(|e| env.contains(e))
            {
                return finish(inv, 15, None, "GET /health answered 503; the previous container is back");
            }
            inst.previous = inst.running.take();
            inst.running = Some(Container { image, config, env });
            let now = inst.running.clone();
            finish(inv, 0, Some(("deployed", &now)), "")
        }
    }
}

/// MODE=check: read-only, like the script's: what runs, next to the release in the header.
fn check(inst: &Instance, image: &str, config: &str, inv: &mut FakeInvocation) {
    let state = match &inst.running {
        None => "missing",
        Some(c) if c.image != image => "other-release",
        Some(c) if c.config != config => "other-settings",
        Some(_) => "current",
    };
    let running = inst.running.as_ref().map(|c| c.image.as_str()).unwrap_or("-");
    inv.code = Some(0);
    inv.status = InvocationStatus::Success;
    inv.detail = StatusDetail::Success;
    inv.stdout = format!("ec2-deploy-check state={state} image={running} release=- restarts=0 exit=0\n");
}

/// MODE=logs: the container's last LOG_LINES lines of a fixed log (a start and the requests it
/// served), with the script's count on stderr; no container is exit 22, as the script's.
fn logs(inst: &Instance, v: &BTreeMap<String, String>, inv: &mut FakeInvocation) {
    let Some(c) = &inst.running else {
        inv.code = Some(22);
        inv.status = InvocationStatus::Failed;
        inv.detail = StatusDetail::Failed;
        inv.stderr = "ec2-deploy: error: there is no container of this name on this instance\n".into();
        return;
    };
    let all = [format!("2026-12-05T00:00:00Z starting {}", c.image), "2026-12-05T00:00:01Z GET / 200".to_string()];
    let wanted: usize = v.get("LOG_LINES").and_then(|n| n.parse().ok()).unwrap_or(100);
    let shown: Vec<&String> = all.iter().skip(all.len().saturating_sub(wanted)).collect();
    let text: String = shown.iter().map(|l| format!("{l}\n")).collect();
    inv.code = Some(0);
    inv.status = InvocationStatus::Success;
    inv.detail = StatusDetail::Success;
    inv.stderr = format!(
        "ec2-deploy-logs lines={n} bytes={b} shown_lines={n} shown_bytes={b}\n",
        n = shown.len(),
        b = text.len()
    );
    inv.stdout = text;
}

/// MODE=exec: the one-off's exit code is the instance's pre-deploy fault; its output one line, then
/// the script's `ec2-deploy-one-off exit=N`. The serving container is not touched.
fn exec(inst: &Instance, inv: &mut FakeInvocation) {
    let code = inst.faults.pre_deploy_exit;
    inv.stdout =
        format!("ec2-deploy: exec: running it\n  | one-off on {}\nec2-deploy-one-off exit={code}\n", inst.name);
    if code == 0 {
        inv.code = Some(0);
        inv.status = InvocationStatus::Success;
        inv.detail = StatusDetail::Success;
    } else {
        inv.code = Some(21);
        inv.status = InvocationStatus::Failed;
        inv.detail = StatusDetail::Failed;
        inv.stderr = format!("ec2-deploy: error: exec exited with {code}\n");
    }
}

/// MODE=predeploy: the instance's pre-deploy fault decides.
fn pull(inst: &Instance, image: &str, inv: &mut FakeInvocation) {
    if inst.faults.pull_fails {
        inv.code = Some(12);
        inv.status = InvocationStatus::Failed;
        inv.detail = StatusDetail::Failed;
        inv.stderr = format!("ec2-deploy: error: cannot pull {image} (does the instance role allow ECR pulls, and can the instance reach the registry?)\n");
    } else {
        inv.code = Some(0);
        inv.status = InvocationStatus::Success;
        inv.detail = StatusDetail::Success;
        inv.stdout = format!("ec2-deploy-pulled image={image} phases=pull:800\n");
    }
}

fn predeploy(inst: &Instance, inv: &mut FakeInvocation) {
    inv.code = Some(inst.faults.pre_deploy_exit);
    if inst.faults.pre_deploy_exit == 0 {
        inv.status = InvocationStatus::Success;
        inv.detail = StatusDetail::Success;
        inv.stdout =
            "ec2-deploy: pre-deploy: running it\n  | migrated 3 tables\nec2-deploy: pre-deploy succeeded\n".into();
    } else {
        inv.code = Some(21);
        inv.status = InvocationStatus::Failed;
        inv.detail = StatusDetail::Failed;
        inv.stdout = "  | migration 7 failed: relation exists\n".into();
        inv.stderr = format!("ec2-deploy: error: pre-deploy exited with {}\n", inst.faults.pre_deploy_exit);
    }
}

impl RunCommand for World {
    async fn find_instances(&self, tags: &[TagFilter]) -> Result<Vec<ManagedInstance>> {
        self.session("ssm:DescribeInstanceInformation")?;
        self.joins_due();
        Ok(lock(&self.instances)
            .iter()
            .filter(|(_, i)| !i.terminated)
            .filter(|(_, i)| tags.iter().all(|t| i.tags.get(&t.key).is_some_and(|v| t.values.contains(v))))
            .map(|(id, i)| ManagedInstance {
                id: id.clone(),
                name: Some(i.name.clone()),
                ping: i.ping.clone(),
                ip: None,
            })
            .collect())
    }

    async fn send_command(&self, request: &CommandRequest) -> Result<CommandId> {
        self.session("ssm:SendCommand")?;
        {
            let mut faults = lock(&self.faults);
            match faults.send_fails_after {
                Some(0) => {
                    faults.send_fails_after = None;
                    return Err(ServiceError::new(
                        "ssm:SendCommand",
                        ErrorKind::Unavailable,
                        "InternalServerError (the fault the test asked for)",
                    ));
                }
                Some(n) => faults.send_fails_after = Some(n - 1),
                None => {}
            }
        }
        let targets: Vec<InstanceId> = match &request.targets {
            CommandTargets::Ids(ids) => ids.clone(),
            CommandTargets::Tags(tags) => self.find_instances(tags).await?.into_iter().map(|i| i.id).collect(),
        };
        let mode = header_values(&request.script).get("MODE").cloned().unwrap_or_default();
        if mode == "pull" {
            if let Some(n) = lock(&self.faults).terminated_at_pull.take() {
                self.terminate(n);
            }
        }
        let mut commands = lock(&self.commands);
        let id = CommandId(format!("cmd-{}", commands.len() + 1));
        self.note(format!("send {mode} {}", targets.iter().map(short).collect::<Vec<_>>().join(",")));
        commands.push(FakeCommand {
            id: id.clone(),
            request: request.clone(),
            sent: self.now(),
            invocations: targets
                .into_iter()
                .map(|instance| FakeInvocation {
                    instance,
                    status: InvocationStatus::Pending,
                    detail: StatusDetail::Pending,
                    code: None,
                    stdout: String::new(),
                    stderr: String::new(),
                    started: None,
                    ends: None,
                })
                .collect(),
            cancelled: false,
        });
        drop(commands);
        self.step_commands();
        Ok(id)
    }

    async fn command_progress(&self, id: &CommandId) -> Result<(CommandState, Vec<Invocation>)> {
        self.session("ssm:ListCommandInvocations")?;
        {
            let mut f = lock(&self.faults);
            if f.throttle_progress > 0 {
                f.throttle_progress -= 1;
                return Err(ServiceError::new("ssm:ListCommandInvocations", ErrorKind::Throttled, "Rate exceeded"));
            }
            if f.unavailable_progress > 0 {
                f.unavailable_progress -= 1;
                return Err(ServiceError::new(
                    "ssm:ListCommandInvocations",
                    ErrorKind::Unavailable,
                    "connection reset",
                ));
            }
        }
        self.step_commands();
        let commands = lock(&self.commands);
        let c = commands.iter().find(|c| &c.id == id).ok_or_else(|| not_found(format!("command {id}")))?;
        let invocations: Vec<Invocation> = c
            .invocations
            .iter()
            .map(|i| Invocation {
                instance_id: i.instance.clone(),
                status: i.status.clone(),
                detail: i.detail.clone(),
                response_code: i.code,
                output: format!("{}{}", i.stdout, i.stderr),
            })
            .collect();
        let done = invocations.iter().all(Invocation::is_done);
        let errors = c
            .invocations
            .iter()
            .filter(|i| !matches!(i.status, InvocationStatus::Success) && i.status.is_terminal())
            .count();
        let status = if !done {
            InvocationStatus::InProgress
        } else if c.cancelled {
            InvocationStatus::Cancelled
        } else if errors > 0 {
            InvocationStatus::Failed
        } else {
            InvocationStatus::Success
        };
        let state = CommandState {
            status,
            target_count: invocations.len() as i32,
            completed_count: invocations.iter().filter(|i| i.is_done()).count() as i32,
            error_count: errors as i32,
        };
        Ok((state, invocations))
    }

    async fn invocation_output(&self, id: &CommandId, instance: &InstanceId) -> Result<InvocationOutput> {
        self.session("ssm:GetCommandInvocation")?;
        let commands = lock(&self.commands);
        let c = commands.iter().find(|c| &c.id == id).ok_or_else(|| not_found(format!("command {id}")))?;
        let i =
            c.invocations.iter().find(|i| &i.instance == instance).ok_or_else(|| not_found(format!("{instance}")))?;
        Ok(InvocationOutput { stdout: i.stdout.clone(), stderr: i.stderr.clone() })
    }

    /// As SSM does: what has not started never will, and a running script is killed where it is
    /// (here: between stopping the old container and starting the new one, the worst place).
    async fn cancel_command(&self, id: &CommandId, instances: Option<&[InstanceId]>) -> Result<()> {
        self.session("ssm:CancelCommand")?;
        let mut commands = lock(&self.commands);
        let mut all = lock(&self.instances);
        let c = commands.iter_mut().find(|c| &c.id == id).ok_or_else(|| not_found(format!("command {id}")))?;
        let (mut cancelled, mut killed) = (vec![], vec![]);
        for inv in c.invocations.iter_mut().filter(|i| instances.is_none_or(|ids| ids.contains(&i.instance))) {
            if inv.status.not_started() {
                cancelled.push(short(&inv.instance));
            } else if inv.status == InvocationStatus::InProgress {
                let inst = all.get_mut(&inv.instance).expect("an instance");
                inst.previous = inst.running.take().or(inst.previous.take());
                inst.busy = false;
                inv.code = Some(-1);
                killed.push(short(&inv.instance));
            } else {
                continue;
            }
            inv.status = InvocationStatus::Cancelled;
            inv.detail = StatusDetail::Cancelled;
        }
        if instances.is_none() {
            c.cancelled = true;
        }
        drop(all);
        drop(commands);
        self.note(format!("cancel {}", cancelled.join(",")));
        if !killed.is_empty() {
            self.note(format!("killed {}", killed.join(",")));
        }
        Ok(())
    }
}
