//! The fake world: every [port](crate::ports) in memory, with the real services' semantics, for
//! unit tests that drive a whole deploy through faults and interleavings no test bed can produce
//! on demand (a throttling storm on one call, an instance that never reports, a record write
//! that fails after a successful rollout, two runs whose calls interleave in a chosen order).
//!
//! What it keeps of the real semantics:
//! - **Parameter Store**: every put is a new version numbered one more than the last and
//!   returns it; create-if-absent fails when the name exists; history is oldest first and keeps
//!   100 versions.
//! - **Run Command**: an invocation goes Pending → InProgress → a terminal status; no more than
//!   MaxConcurrency run at once, and past MaxErrors the ones not started end `Terminated`; an
//!   offline agent's invocation stays `Delayed` until the delivery timeout, then `Delivery Timed
//!   Out`; a script that outlives its execution timeout ends `Execution Timed Out`; a cancel
//!   stops only what has not started. Each instance runs the script header it is sent the way
//!   the on-instance script does: a deploy keeps the running container as the previous one, a failed health
//!   check puts it back, a rollback swaps back to the kept one, a redeploy of what runs changes
//!   nothing.
//! - **Load balancer**: a registered target is `initial` until its checks pass (or fail), a
//!   deregistered one drains for the group's delay before it is `unused`.
//! - **Time** moves only when someone sleeps ([`Clock`]), so a test's timings are exact.
//!
//! Every call that changes something is written to [`World::log`], so a test can assert the
//! order of events.

pub mod explore;
mod run_command;
mod services;

pub use run_command::{config_id, header_values};
pub use services::FakeGitHub;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::model::{
    CommandId, CommandState, Digest, EnvironmentName, ImageTag, InstanceId, Invocation, InvocationOutput,
    InvocationStatus, ManagedInstance, ParameterName, Ping, Region, RegistryHost, Repository, Secret, SecretId,
    StatusDetail, TagFilter, TargetGroupArn,
};
use crate::ports::{
    BuildError, BuildRequest, Built, Clock, CommandRequest, CommandTargets, Comparison, CopyRequest, DeploymentState,
    ErrorKind, GitHub, GitHubError, GroupTimings, ImageBuilder, LoadBalancer, Parameter, ParameterStore, Registry,
    RegistryAuth, Result, RunCommand, Secrets, ServiceError, TargetState,
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub const REGISTRY: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

/// What runs in a container on a fake instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub image: String,
    /// The identity of its settings, as the on-instance script computes it (image, ports, environment).
    pub config: String,
    pub env: Vec<String>,
}

/// How a fake instance misbehaves.
#[derive(Debug, Clone, Default)]
pub struct InstanceFaults {
    /// Images that fail their health check here (the previous container is put back).
    pub unhealthy_images: BTreeSet<String>,
    /// Going back to the kept container fails its health check (the newer one runs again).
    pub rollback_fails: bool,
    /// The agent never picks a command up (it stays Delayed until the delivery timeout).
    pub never_reports: bool,
    /// Seconds the script takes (default 3).
    pub script_seconds: Option<u64>,
    /// Unhealthy at the load balancer while running these images.
    pub unhealthy_in_lb: BTreeSet<String>,
    /// Draining never finishes.
    pub drain_stuck: bool,
    /// A release whose environment has this entry fails its health check here.
    pub unhealthy_env: Option<String>,
    /// The script starts and then nothing more is heard of it: no end, and SSM never times it
    /// out (an agent that died mid-script).
    pub hangs: bool,
    /// What a `pre-deploy` command exits with here (0: it succeeds).
    pub pre_deploy_exit: i32,
    /// The release cannot be pulled here (the script exits 12).
    pub pull_fails: bool,
    /// The next this many scripts find the instance still booting: its Docker daemon does not
    /// answer yet (they exit 20, changing nothing).
    pub booting_scripts: usize,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub ping: Ping,
    pub running: Option<Container>,
    /// The kept `<name>-previous` container.
    pub previous: Option<Container>,
    pub faults: InstanceFaults,
    /// Whether a script is running on it right now.
    pub busy: bool,
    /// Terminated (Auto Scaling took it away): SSM lists it no more and cannot deliver to it.
    pub terminated: bool,
}

#[derive(Debug, Clone)]
struct FakeInvocation {
    instance: InstanceId,
    status: InvocationStatus,
    detail: StatusDetail,
    code: Option<i32>,
    stdout: String,
    stderr: String,
    started: Option<SystemTime>,
    ends: Option<SystemTime>,
}

#[derive(Debug, Clone)]
struct FakeCommand {
    id: CommandId,
    request: CommandRequest,
    sent: SystemTime,
    invocations: Vec<FakeInvocation>,
    cancelled: bool,
}

/// Membership of a target in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    Registered { since: SystemTime },
    Draining { until: SystemTime },
}

/// Faults injected into calls: each is consumed as it fires.
#[derive(Debug, Default)]
pub struct CallFaults {
    /// The next `n` command_progress calls fail with a throttling error.
    pub throttle_progress: usize,
    /// The next `n` command_progress calls fail as the network would.
    pub unavailable_progress: usize,
    /// Writes to these parameters fail (access denied).
    pub failing_parameters: BTreeSet<String>,
    /// The next `n` writes to each of these parameters are refused with TooManyUpdates, as
    /// Parameter Store refuses writes too close together (nothing is written).
    pub busy_parameters: std::collections::BTreeMap<String, usize>,
    /// The build fails.
    pub build_fails: bool,
    /// Pushing a stage's layer cache fails (as an ECR repository with immutable tags refuses it).
    pub stage_cache_push_fails: bool,
    /// The role session has expired: every AWS call fails with ExpiredToken from now on.
    pub session_expired: bool,
    /// SendCommand succeeds this many more times, then fails once (Run Command unavailable).
    pub send_fails_after: Option<usize>,
    /// This instance is terminated as the pull before the first batch is sent (after the plan
    /// named it, before SSM delivers to it).
    pub terminated_at_pull: Option<u32>,
}

/// The fake world's time. `Paused`: tokio's paused clock (the test runs in a runtime started
/// paused; time jumps to the next timer whenever every task waits, so waits cost nothing and
/// their order is exact). `Manual`: a counter that only a sleep moves, for tests that run the
/// code under another scheduler (the lock's interleaving tests).
enum FakeClock {
    Paused { base: SystemTime, start: tokio::time::Instant },
    Manual(Mutex<SystemTime>),
}

const EPOCH: u64 = 1_790_000_000;

/// A hook run before each parameter-store call (see [`World::store_step`]).
pub type StoreStep = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

pub struct World {
    clock: FakeClock,
    region: Region,
    params: Mutex<BTreeMap<String, Vec<Parameter>>>,
    instances: Mutex<BTreeMap<InstanceId, Instance>>,
    commands: Mutex<Vec<FakeCommand>>,
    groups: Mutex<BTreeMap<TargetGroupArn, BTreeMap<InstanceId, Member>>>,
    pub group_timings: GroupTimings,
    images: Mutex<BTreeMap<(String, String), Digest>>,
    repositories: Mutex<BTreeSet<String>>,
    secrets: Mutex<BTreeMap<String, String>>,
    alarms: Mutex<BTreeMap<String, crate::model::AlarmStatus>>,
    /// Alarms that go into ALARM once this many deploy commands have been sent (an ordering the
    /// tests control: "during the bake of batch 2" is "after the second command").
    alarm_after_commands: Mutex<Vec<(String, usize)>>,
    /// Instances that join the tag set (booted from the record: running `image`) once this many
    /// deploy commands have been sent: an Auto Scaling launch in the middle of a rollout.
    joins_after_commands: Mutex<Vec<(u32, usize, String)>>,
    pub faults: Mutex<CallFaults>,
    log: Mutex<Vec<String>>,
    /// The most invocations in progress at once, over every command.
    peak_in_progress: Mutex<usize>,
    pub github: Option<FakeGitHub>,
    /// Each store call and its answer, for the explorer (taken as it goes).
    trace: Mutex<Vec<String>>,
    /// Called at the start of every parameter-store call: the interleaving tests yield to their
    /// scheduler here, so each store call is one step they can order.
    pub store_step: Option<StoreStep>,
}

impl Default for World {
    fn default() -> Self {
        World {
            clock: FakeClock::Paused {
                base: SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH),
                start: tokio::time::Instant::now(),
            },
            region: Region::parse("eu-west-1").expect("valid"),
            params: Default::default(),
            instances: Default::default(),
            commands: Default::default(),
            groups: Default::default(),
            group_timings: GroupTimings {
                deregistration_delay: Duration::from_secs(5),
                time_to_healthy: Duration::from_secs(10),
            },
            images: Default::default(),
            repositories: Default::default(),
            secrets: Default::default(),
            alarms: Default::default(),
            alarm_after_commands: Default::default(),
            joins_after_commands: Default::default(),
            faults: Default::default(),
            log: Default::default(),
            peak_in_progress: Default::default(),
            github: None,
            trace: Default::default(),
            store_step: None,
        }
    }
}

/// `NN` for `i-000000000000000NN`, as the event log writes instances.
fn short(n: &InstanceId) -> String {
    n.as_str().trim_start_matches("i-").trim_start_matches('0').to_string()
}

/// `i-000000000000000NN`
pub fn id(n: u32) -> InstanceId {
    InstanceId::parse(&format!("i-{n:017x}")).expect("valid")
}

pub fn digest_of(text: &str) -> Digest {
    use std::hash::{Hash, Hasher};
    let mut out = String::from("sha256:");
    for salt in 0..4u8 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (text, salt).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    Digest::parse(&out).expect("64 hex digits")
}

impl World {
    /// A world on tokio's paused clock: create it inside a runtime started paused.
    pub fn new() -> World {
        World::default()
    }

    /// A world whose time moves only when someone sleeps (no runtime needed).
    pub fn with_manual_clock() -> World {
        World {
            clock: FakeClock::Manual(Mutex::new(SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH))),
            ..World::default()
        }
    }

    /// `n` online instances tagged `Role=web`, `i-…01` to `i-…n`, running nothing yet.
    pub fn with_instances(n: u32) -> World {
        let w = World::new();
        for i in 1..=n {
            w.add_instance(i, &[("Role", "web")]);
        }
        w
    }

    pub fn add_instance(&self, n: u32, tags: &[(&str, &str)]) {
        let instance = Instance {
            name: format!("web-{n}"),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ping: Ping::Online,
            running: None,
            previous: None,
            faults: InstanceFaults::default(),
            busy: false,
            terminated: false,
        };
        lock(&self.instances).insert(id(n), instance);
    }

    pub fn instance(&self, n: u32) -> Instance {
        lock(&self.instances)[&id(n)].clone()
    }

    pub fn set_faults(&self, n: u32, f: impl FnOnce(&mut InstanceFaults)) {
        f(&mut lock(&self.instances).get_mut(&id(n)).expect("an instance").faults);
    }

    pub fn set_running(&self, n: u32, image: &str, env: &[&str]) {
        let env: Vec<String> = env.iter().map(|e| e.to_string()).collect();
        let config = config_id(image, &[], &env);
        lock(&self.instances).get_mut(&id(n)).expect("an instance").running =
            Some(Container { image: image.to_string(), config, env });
    }

    /// A container ec2-deploy did not start (run by hand before the first deploy): it has no
    /// settings label, so the script knows no identity for its settings.
    pub fn set_adopted(&self, n: u32, image: &str) {
        lock(&self.instances).get_mut(&id(n)).expect("an instance").running =
            Some(Container { image: image.to_string(), config: String::new(), env: vec![] });
    }

    /// Removes instance `n`'s container (as `docker rm` by hand would).
    pub fn remove_running(&self, n: u32) {
        lock(&self.instances).get_mut(&id(n)).expect("an instance").running = None;
    }

    /// Terminates instance `n`, as a scale-in would (see [`Instance::terminated`]).
    pub fn terminate(&self, n: u32) {
        lock(&self.instances).get_mut(&id(n)).expect("an instance").terminated = true;
    }

    pub fn set_ping(&self, n: u32, ping: Ping) {
        lock(&self.instances).get_mut(&id(n)).expect("an instance").ping = ping;
    }

    pub fn add_repository(&self, name: &str) {
        lock(&self.repositories).insert(name.to_string());
    }

    pub fn push_image(&self, repository: &str, tag: &str) -> Digest {
        let digest = digest_of(&format!("{repository}:{tag}"));
        lock(&self.repositories).insert(repository.to_string());
        lock(&self.images).insert((repository.to_string(), tag.to_string()), digest.clone());
        digest
    }

    pub fn add_secret(&self, name: &str) {
        lock(&self.secrets).insert(name.to_string(), format!("arn:aws:secretsmanager:eu-west-1:1:secret:{name}"));
    }

    pub fn add_target_group(&self, arn: &TargetGroupArn, members: &[u32]) {
        let now = self.now();
        let since = now - Duration::from_secs(3600);
        lock(&self.groups)
            .insert(arn.clone(), members.iter().map(|n| (id(*n), Member::Registered { since })).collect());
    }

    /// A CloudWatch alarm in `state`.
    pub fn set_alarm(&self, name: &str, state: crate::model::AlarmState) {
        let status =
            crate::model::AlarmStatus { name: name.into(), state, reason: format!("set to {state} by the test") };
        lock(&self.alarms).insert(name.into(), status);
    }

    /// The alarm goes into ALARM once `commands` more deploy commands have been sent.
    pub fn alarm_after_commands(&self, name: &str, commands: usize) {
        let sent = self.deploy_commands_sent();
        lock(&self.alarm_after_commands).push((name.into(), sent + commands));
    }

    /// Instance `n` (tagged `Role=web`, running `image` as its boot left it) joins once
    /// `commands` more deploy commands have been sent.
    pub fn join_after_commands(&self, n: u32, commands: usize, image: &str) {
        let sent = self.deploy_commands_sent();
        lock(&self.joins_after_commands).push((n, sent + commands, image.to_string()));
    }

    /// Adds the instances whose time to join has come.
    pub(crate) fn joins_due(&self) {
        let sent = self.deploy_commands_sent();
        let due: Vec<(u32, usize, String)> = {
            let mut joins = lock(&self.joins_after_commands);
            let (due, later) = joins.drain(..).partition(|(_, at, _)| sent >= *at);
            *joins = later;
            due
        };
        for (n, _, image) in due {
            let known = lock(&self.instances).contains_key(&id(n));
            if known {
                let mut instances = lock(&self.instances);
                let instance = instances.get_mut(&id(n)).expect("known");
                instance.tags.insert("Role".into(), "web".into());
            } else {
                self.add_instance(n, &[("Role", "web")]);
            }
            self.set_running(n, &image, &[]);
            self.note(format!("join {n}"));
        }
    }

    pub(crate) fn deploy_commands_sent(&self) -> usize {
        lock(&self.commands).iter().filter(|c| c.request.comment.ends_with(" deploy")).count()
    }

    /// What happened, in order.
    pub fn log(&self) -> Vec<String> {
        lock(&self.log).clone()
    }

    fn note(&self, event: String) {
        lock(&self.log).push(event);
    }

    pub fn parameter(&self, name: &str) -> Vec<Parameter> {
        lock(&self.params).get(name).cloned().unwrap_or_default()
    }

    pub fn put_raw(&self, name: &str, value: &str) -> i64 {
        let mut params = lock(&self.params);
        let versions = params.entry(name.to_string()).or_default();
        let version = versions.last().map(|p| p.version).unwrap_or(0) + 1;
        versions.push(Parameter { value: value.to_string(), version });
        if versions.len() > 100 {
            versions.remove(0);
        }
        version
    }

    /// Moves time on, as if the run waited.
    pub async fn advance(&self, d: Duration) {
        match &self.clock {
            FakeClock::Paused { .. } => tokio::time::advance(d).await,
            FakeClock::Manual(now) => *lock(now) += d,
        }
        self.step_commands();
    }

    pub fn peak_in_progress(&self) -> usize {
        *lock(&self.peak_in_progress)
    }

    /// Whether `n` is registered (not draining, not out) in every group that knows it.
    pub fn in_load_balancer(&self, n: u32) -> bool {
        lock(&self.groups).values().all(|g| matches!(g.get(&id(n)), Some(Member::Registered { .. })))
    }

    /// The script of every command sent, in order.
    pub fn scripts_sent(&self) -> Vec<String> {
        lock(&self.commands).iter().map(|c| c.request.script.clone()).collect()
    }

    pub fn commands_sent(&self) -> usize {
        lock(&self.commands).len()
    }

    /// The store calls made since the last take, with their answers.
    pub fn take_trace(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.trace))
    }

    fn traced(&self, entry: String) {
        lock(&self.trace).push(entry);
    }

    /// The store's contents and the clock, for the explorer's state.
    pub fn store_snapshot(&self) -> String {
        format!("{:?} {:?}", self.now(), *lock(&self.params))
    }

    async fn store_step(&self) {
        if let Some(step) = self.store_step {
            step().await;
        }
    }
}

impl World {
    /// `Err(ExpiredToken)` once the session has expired (see [`CallFaults::session_expired`]).
    pub(crate) fn session(&self, call: &str) -> Result<()> {
        if lock(&self.faults).session_expired {
            return Err(ServiceError::new(
                call,
                ErrorKind::Expired,
                "ExpiredTokenException (The security token included in the request is expired)",
            ));
        }
        Ok(())
    }
}

fn not_found(context: String) -> ServiceError {
    ServiceError::new(context, ErrorKind::NotFound, "not found")
}

impl Clock for World {
    fn now(&self) -> SystemTime {
        match &self.clock {
            FakeClock::Paused { base, start } => *base + start.elapsed(),
            FakeClock::Manual(now) => *lock(now),
        }
    }

    async fn sleep(&self, d: Duration) {
        match &self.clock {
            FakeClock::Paused { .. } => tokio::time::sleep(d).await,
            FakeClock::Manual(now) => {
                *lock(now) += d;
                self.traced(format!("slept {d:?}"));
                // A sleep is a point where the other contenders run.
                self.store_step().await;
            }
        }
        self.step_commands();
    }
}

impl ParameterStore for World {
    async fn get_parameter(&self, name: &ParameterName) -> Result<Option<Parameter>> {
        self.store_step().await;
        self.session("ssm:GetParameter")?;
        let found = lock(&self.params).get(name.as_str()).and_then(|v| v.last().cloned());
        self.traced(format!("get {name} -> {found:?}"));
        Ok(found)
    }

    async fn put_parameter(&self, name: &ParameterName, value: &str, overwrite: bool) -> Result<i64> {
        self.store_step().await;
        self.session("ssm:PutParameter")?;
        if lock(&self.faults).failing_parameters.contains(name.as_str()) {
            return Err(ServiceError::new(format!("writing {name}"), ErrorKind::Access, "AccessDeniedException"));
        }
        if let Some(n) = lock(&self.faults).busy_parameters.get_mut(name.as_str()).filter(|n| **n > 0) {
            *n -= 1;
            self.note(format!("put {name} refused: TooManyUpdates"));
            let mut e =
                ServiceError::new(format!("writing {name}"), ErrorKind::Throttled, "TooManyUpdates (try again)");
            e.code = Some("TooManyUpdates".into());
            return Err(e);
        }
        if !overwrite && lock(&self.params).get(name.as_str()).is_some_and(|v| !v.is_empty()) {
            self.traced(format!("put {name} -> exists"));
            return Err(ServiceError::new(
                format!("writing {name}"),
                ErrorKind::AlreadyExists,
                "ParameterAlreadyExists",
            ));
        }
        // Parameter Store's limit (the advanced tier's).
        if value.len() > 8192 {
            self.note(format!("put {name} refused: too long"));
            return Err(ServiceError::new(
                format!("writing {name}"),
                ErrorKind::Other,
                "ValidationException: Standard tier parameters support a maximum parameter value of 4096 characters. Advanced tier parameters support a maximum of 8192",
            ));
        }
        let version = self.put_raw(name.as_str(), value);
        self.note(format!("put {name} v{version}"));
        self.traced(format!("put {name} {value} -> v{version}"));
        Ok(version)
    }

    async fn parameter_history(&self, name: &ParameterName) -> Result<Vec<Parameter>> {
        self.store_step().await;
        self.session("ssm:GetParameterHistory")?;
        let history = self.parameter(name.as_str());
        self.traced(format!("history {name} -> {history:?}"));
        Ok(history)
    }

    async fn delete_parameter(&self, name: &ParameterName) -> Result<()> {
        self.store_step().await;
        self.session("ssm:DeleteParameter")?;
        lock(&self.params).remove(name.as_str());
        self.note(format!("delete {name}"));
        self.traced(format!("delete {name}"));
        Ok(())
    }
}

impl crate::ports::World for World {
    type GitHub = FakeGitHub;

    fn github(&self) -> Option<&FakeGitHub> {
        self.github.as_ref()
    }

    fn region(&self) -> &Region {
        &self.region
    }
}
