//! The universe the tests run in: the local test bed (scripts/testbed up), read from its env
//! file. Each test gets instances and names of its own (a unique `Suite` tag), so tests never see
//! each other's deploys. Assertions go through the aws CLI and plain HTTP, never through the
//! code under test.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Bed {
    pub env: BTreeMap<String, String>,
}

impl Bed {
    pub fn load() -> Bed {
        let path = std::env::var("TESTBED_ENV").unwrap_or_else(|_| "/var/tmp/ec2-deploy-testbed/env".into());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("the test bed is not up ({path}: {e}); run `scripts/testbed up` or use scripts/test")
        });
        let env = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains('='))
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        Bed { env }
    }

    pub fn get(&self, key: &str) -> &str {
        self.env.get(key).unwrap_or_else(|| panic!("{key} missing from the test bed env file"))
    }

    pub fn testbed(&self, args: &[&str]) -> String {
        let script = Path::new(self.get("TESTBED_ROOT")).join("scripts/testbed");
        let out = Command::new(script).args(args).env("TESTBED_STATE", self.get("TESTBED_STATE")).output().unwrap();
        assert!(out.status.success(), "scripts/testbed {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `aws …` against the emulated AWS; panics unless it succeeds.
    /// Every command of a run's `command-id` output (the pull first, when there was one, then
    /// the deploy's): their texts, and their invocations with output, as SSM returns them.
    pub fn commands_and_outputs(&self, command_ids: &str) -> (String, String) {
        let (mut commands, mut invocations) = (String::new(), String::new());
        for id in command_ids.split(' ') {
            commands.push_str(&self.aws(&["ssm", "list-commands", "--command-id", id, "--output", "json"]));
            invocations.push_str(&self.aws(&[
                "ssm",
                "list-command-invocations",
                "--command-id",
                id,
                "--details",
                "--output",
                "json",
            ]));
        }
        (commands, invocations)
    }

    pub fn aws(&self, args: &[&str]) -> String {
        let out = self.aws_output(args);
        assert!(out.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `aws …` through the bed's warm aws CLI (testbed/aws_server.py: the same CLI, forked from
    /// a process that loaded it once, which saves most of the CPU of a suite's few hundred calls).
    pub fn aws_output(&self, args: &[&str]) -> Output {
        use std::os::unix::process::ExitStatusExt;
        let request = serde_json::json!({
            "args": args,
            "env": self.aws_env().into_iter().collect::<BTreeMap<_, _>>(),
        });
        let mut stream = std::os::unix::net::UnixStream::connect(self.get("TESTBED_AWS_SOCKET"))
            .unwrap_or_else(|e| panic!("the bed's warm aws CLI ({}): {e}", self.get("TESTBED_AWS_SOCKET")));
        stream.write_all(request.to_string().as_bytes()).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let answer: serde_json::Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("aws {args:?}: the warm aws CLI answered {answer:?}: {e}"));
        let text = |k: &str| answer[k].as_str().unwrap_or_default().as_bytes().to_vec();
        Output {
            status: std::process::ExitStatus::from_raw((answer["code"].as_i64().unwrap_or(255) as i32 & 0xff) << 8),
            stdout: text("stdout"),
            stderr: text("stderr"),
        }
    }

    pub fn aws_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.aws(&all)).unwrap()
    }

    fn aws_env(&self) -> Vec<(String, String)> {
        ["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
            .iter()
            .map(|k| (k.to_string(), self.get(k).to_string()))
            .collect()
    }

    /// Runs a command on a simulated instance, as its SSM agent would.
    pub fn on_instance(&self, id: &str, cmd: &[&str]) -> Output {
        Command::new(self.get("TESTBED_EXEC"))
            .arg(id)
            .args(cmd)
            .env("TESTBED_STATE", self.get("TESTBED_STATE"))
            .output()
            .unwrap()
    }

    /// Writes a file into the instance's own /tmp (as EC2 hands user-data to an instance: a file
    /// on it); returns its path as the instance sees it.
    pub fn put_file(&self, id: &str, name: &str, content: &str) -> String {
        let dir = Path::new(self.get("TESTBED_STATE")).join("instances").join(id).join("fs/tmp");
        std::fs::write(dir.join(name), content).unwrap();
        format!("/tmp/{name}")
    }

    /// A slice of the bed's load balancer for this test alone: a target group and the haproxy
    /// frontend that follows it. Held until dropped; a test that finds every slice taken waits
    /// for one (the lock is a file lock, so it holds across test processes).
    pub fn load_balancer(&self) -> LbSlice {
        let n: usize = self.get("TESTBED_LB_SLICES").parse().expect("TESTBED_LB_SLICES is a number");
        let dir = Path::new(self.get("TESTBED_STATE")).join("slices");
        std::fs::create_dir_all(&dir).unwrap();
        let open = |k: usize| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("{k}.lock")))
                .unwrap()
        };
        let slice = |k: usize, lock: std::fs::File| LbSlice {
            target_group_arn: self.get(&format!("TESTBED_TG_{k}_ARN")).to_string(),
            url: self.get(&format!("TESTBED_LB_{k}_URL")).to_string(),
            _lock: lock,
        };
        for k in 0..n {
            let file = open(k);
            if file.try_lock().is_ok() {
                return slice(k, file);
            }
        }
        let k = std::process::id() as usize % n;
        let file = open(k);
        file.lock().unwrap();
        slice(k, file)
    }

    /// Instances tagged `Suite=<suite>` plus `tags`, terminated when the fleet is dropped.
    pub fn fleet_in(&self, suite: &str, n: usize, tags: &[&str]) -> Fleet<'_> {
        let mut args =
            vec!["add-instance".to_string(), "--count".into(), n.to_string(), "--tag".into(), format!("Suite={suite}")];
        for t in tags {
            args.extend(["--tag".to_string(), t.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ids: Vec<String> = self.testbed(&args).split_whitespace().map(str::to_string).collect();
        assert_eq!(ids.len(), n);
        let info = self.aws_json(&[
            "ssm",
            "describe-instance-information",
            "--filters",
            &format!("Key=tag:Suite,Values={suite}"),
        ]);
        let ips = ids
            .iter()
            .map(|id| {
                info["InstanceInformationList"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|i| i["InstanceId"] == id.as_str())
                    .map(|i| i["IPAddress"].as_str().unwrap().to_string())
                    .unwrap()
            })
            .collect();
        Fleet { bed: self, ids, ips }
    }

    /// `n` moto instances tagged `Suite=<suite>`, `Role=web` whose SSM agents are simulated
    /// without a host (they take a command and succeed after a moment); terminated on drop.
    pub fn local_agents(&self, suite: &str, n: usize) -> LocalAgents<'_> {
        let ami = self.aws(&["ec2", "describe-images", "--query", "Images[0].ImageId", "--output", "text"]);
        let tags = format!(
            "ResourceType=instance,Tags=[{{Key=Suite,Value={suite}}},{{Key=Role,Value=web}},{{Key=testbed:agent,Value=local}}]"
        );
        let out = self.aws_json(&[
            "ec2",
            "run-instances",
            "--image-id",
            ami.trim(),
            "--count",
            &n.to_string(),
            "--instance-type",
            "t3.micro",
            "--tag-specifications",
            &tags,
        ]);
        let ids = out["Instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["InstanceId"].as_str().unwrap().to_string())
            .collect();
        LocalAgents { bed: self, ids }
    }

    /// A simulated agent loses its connection (as `scripts/testbed offline` does for an instance).
    pub fn set_local_agent_offline(&self, id: &str) {
        let dir = Path::new(self.get("TESTBED_STATE")).join("instances").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("offline"), "").unwrap();
    }

    /// Invocations running now, and the most at once, of the commands with this comment.
    pub fn in_progress(&self, comment: &str) -> serde_json::Value {
        let query: String = comment
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        self.hook(&format!("/in-progress?comment={query}"))
    }

    /// Calls a path on the bed's hook (the moto extension's side door) and returns its JSON answer.
    pub fn hook(&self, path: &str) -> serde_json::Value {
        let url = format!("{}{path}", self.get("TESTBED_HOOK_URL"));
        let (status, body) = http_get(&url).unwrap_or_else(|| panic!("no answer from {url}"));
        assert_eq!(status, 200, "{url}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The CompleteLifecycleAction calls the bed's Auto Scaling has had for this instance, as
    /// (group, hook, result).
    pub fn lifecycle_actions(&self, instance: &str) -> Vec<(String, String, String)> {
        let all = self.hook("/lifecycle-actions");
        all.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["instance"] == instance)
            .map(|a| {
                (
                    a["group"].as_str().unwrap().into(),
                    a["hook"].as_str().unwrap().into(),
                    a["result"].as_str().unwrap().into(),
                )
            })
            .collect()
    }

    pub fn create_repository(&self, name: &str) {
        self.aws(&["ecr", "create-repository", "--repository-name", name]);
    }

    pub fn create_secret(&self, name: &str, json: &str) {
        self.aws(&["secretsmanager", "create-secret", "--name", name, "--secret-string", json]);
    }

    /// The SSM commands whose comment mentions `needle` (the engine puts the tag there).
    pub fn commands_mentioning(&self, needle: &str) -> Vec<serde_json::Value> {
        let all = self.aws_json(&["ssm", "list-commands"]);
        all["Commands"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["Comment"].as_str().unwrap_or("").contains(needle))
            .cloned()
            .collect()
    }
}

/// A target group of the bed with the load balancer (haproxy) that follows it, held by one test.
pub struct LbSlice {
    pub target_group_arn: String,
    /// Where the load balancer answers (`http://127.0.0.1:PORT`).
    pub url: String,
    _lock: std::fs::File,
}

pub struct Fleet<'a> {
    bed: &'a Bed,
    pub ids: Vec<String>,
    pub ips: Vec<String>,
}

impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        let mut args = vec!["remove-instance"];
        args.extend(self.ids.iter().map(String::as_str));
        self.bed.testbed(&args);
    }
}

pub struct LocalAgents<'a> {
    bed: &'a Bed,
    pub ids: Vec<String>,
}

impl Drop for LocalAgents<'_> {
    fn drop(&mut self) {
        let mut args = vec!["ec2", "terminate-instances", "--instance-ids"];
        args.extend(self.ids.iter().map(String::as_str));
        let _ = self.bed.aws_output(&args);
        for id in &self.ids {
            let _ = std::fs::remove_dir_all(Path::new(self.bed.get("TESTBED_STATE")).join("instances").join(id));
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{n}-{:x}", std::process::id(), nanos % 0xfffff)
}

/// One `ec2-deploy action` run, as the runner starts it: INPUT_* and GITHUB_* in the
/// environment, GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files, the workspace as working directory.
pub struct ActionRun {
    pub inputs: Vec<(String, String)>,
    /// More (or overriding) environment: GITHUB_API_URL, GITHUB_EVENT_NAME, another GITHUB_SHA.
    pub env: Vec<(String, String)>,
    pub workspace: PathBuf,
    _dir: tempfile::TempDir,
}

pub struct RunResult {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub outputs: BTreeMap<String, String>,
    pub outputs_raw: String,
    pub summary: String,
}

impl RunResult {
    pub fn log(&self) -> String {
        format!("exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

impl ActionRun {
    /// A workspace holding the demo app's build context (DEMO_CONTEXT, made by scripts/test).
    pub fn new(inputs: &[(&str, &str)]) -> ActionRun {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("workspace");
        std::fs::create_dir_all(&workspace).unwrap();
        let context =
            std::env::var("DEMO_CONTEXT").expect("DEMO_CONTEXT: the demo app's build context (scripts/demo-context)");
        for f in ["Dockerfile", "demo-app"] {
            std::fs::copy(Path::new(&context).join(f), workspace.join(f)).unwrap();
        }
        ActionRun {
            inputs: inputs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            env: vec![],
            workspace,
            _dir: dir,
        }
    }

    pub fn run(&self, bed: &Bed) -> RunResult {
        self.spawn(bed).wait()
    }

    /// Starts the run without waiting for it (to signal it, say).
    pub fn spawn(&self, bed: &Bed) -> Running {
        self.start(bed, true)
    }

    /// Starts the run and leaves its stdout to the caller (`running.child.stdout`), to read it
    /// as it comes.
    pub fn spawn_reading_stdout(&self, bed: &Bed) -> Running {
        self.start(bed, false)
    }

    fn start(&self, bed: &Bed, drain_stdout: bool) -> Running {
        let output = self._dir.path().join("github_output");
        let summary = self._dir.path().join("step_summary");
        std::fs::write(&output, "").unwrap();
        std::fs::write(&summary, "").unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ec2-deploy"));
        cmd.arg("action").current_dir(&self.workspace).env_clear();
        cmd.env("PATH", std::env::var("PATH").unwrap());
        for k in ["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DOCKER_HOST"] {
            cmd.env(k, bed.get(k));
        }
        cmd.env("EC2_DEPLOY_DOCKER", bed.get("TESTBED_DOCKER"))
            .env("GITHUB_ACTIONS", "true")
            .env("CI", "true")
            .env("GITHUB_WORKSPACE", &self.workspace)
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env("GITHUB_SHA", "4b825dc642cb6eb9a060e54bf8d69288fbee4904")
            .env("GITHUB_REPOSITORY", "octo/shop")
            .env("GITHUB_RUN_ID", "1")
            .env("GITHUB_SERVER_URL", "https://github.com");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // The proxy's image is the bed's (no public registry here), unless the test names one.
        if !self.inputs.iter().any(|(k, _)| k == "proxy-image") {
            cmd.env("INPUT_PROXY-IMAGE", bed.get("TESTBED_PROXY_IMAGE"));
        }
        for (name, value) in &self.inputs {
            cmd.env(format!("INPUT_{}", name.to_uppercase()), value);
        }
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        // Read both pipes as the run writes them (a full pipe would stall it), unless the test
        // takes stdout to read it line by line itself.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            pipe.map(|mut p| {
                std::thread::spawn(move || {
                    let mut text = Vec::new();
                    let _ = p.read_to_end(&mut text);
                    text
                })
            })
        };
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let stdout =
            if drain_stdout { drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>)) } else { None };
        Running { child, output, summary, stdout, stderr }
    }
}

/// A run in progress.
pub struct Running {
    pub child: std::process::Child,
    output: PathBuf,
    summary: PathBuf,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Running {
    pub fn wait(self) -> RunResult {
        let out = self.child.wait_with_output().unwrap();
        let drained = |t: Option<std::thread::JoinHandle<Vec<u8>>>, piped: Vec<u8>| match t {
            Some(t) => t.join().unwrap(),
            None => piped,
        };
        let (stdout, stderr) = (drained(self.stdout, out.stdout), drained(self.stderr, out.stderr));
        let outputs_raw = std::fs::read_to_string(&self.output).unwrap();
        RunResult {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            outputs: parse_github_output(&outputs_raw),
            outputs_raw,
            summary: std::fs::read_to_string(&self.summary).unwrap(),
        }
    }
}

/// Parses a GITHUB_OUTPUT file the way the runner does (`name=value` or `name<<DELIM`).
pub fn parse_github_output(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delim)) = line.split_once("<<") {
            let mut value = vec![];
            loop {
                let l = lines.next().unwrap_or_else(|| panic!("output {name}: delimiter {delim} never closed"));
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.insert(name.to_string(), value.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            out.insert(name.to_string(), value.to_string());
        } else if !line.is_empty() {
            panic!("GITHUB_OUTPUT line the runner would reject: {line:?}");
        }
    }
    out
}

/// A plain HTTP/1.1 GET: (status, body), or None when nothing answers.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    http_get_with(url, &[])
}

/// A GET with extra request headers (`Name: value`, as a load balancer adds them).
pub fn http_get_with(url: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut stream = TcpStream::connect_timeout(&host.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.set_nodelay(true).ok()?;
    // One write: see the demo app on Nagle and delayed ACKs.
    let extra: String = headers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Steady HTTP load on one URL from a few threads, counting every answer, until stopped.
/// Bounded: each thread stops by itself after 120 s or 100,000 requests.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<LoadCount>>,
}

#[derive(Debug, Default, Clone)]
pub struct LoadCount {
    pub ok: u64,
    pub failed: u64,
    /// Answers by body (the release that served them).
    pub bodies: BTreeMap<String, u64>,
    /// The first few failures, for the assertion message.
    pub failures: Vec<String>,
}

impl Load {
    pub fn start(url: &str, threads: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.to_string());
                std::thread::spawn(move || {
                    let mut count = LoadCount::default();
                    let started = Instant::now();
                    while !stop.load(Ordering::SeqCst)
                        && started.elapsed() < Duration::from_secs(120)
                        && count.ok + count.failed < 100_000
                    {
                        match http_get(&url) {
                            Some((200, body)) => {
                                count.ok += 1;
                                *count.bodies.entry(body.trim().to_string()).or_default() += 1;
                            }
                            other => {
                                count.failed += 1;
                                if count.failures.len() < 5 {
                                    count.failures.push(format!("{other:?}"));
                                }
                            }
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    count
                })
            })
            .collect();
        Load { stop, threads }
    }

    pub fn stop(self) -> LoadCount {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = LoadCount::default();
        for t in self.threads {
            let c = t.join().unwrap();
            total.ok += c.ok;
            total.failed += c.failed;
            for (k, v) in c.bodies {
                *total.bodies.entry(k).or_default() += v;
            }
            total.failures.extend(c.failures);
        }
        total
    }
}
