//! Several services of one config on the same instances: a web and a worker from one repository,
//! each with its own container, proxy, record and lock; a rollback of one leaves the other
//! running untouched; an instance booting from the user-data starts both; two services on one
//! host port are refused before anything changes.

use super::started_at;
use super::support::{http_get, unique, ActionRun, Bed, RunResult};

fn answer(ip: &str, port: u16) -> Option<String> {
    http_get(&format!("http://{ip}:{port}/version")).filter(|(s, _)| *s == 200).map(|(_, b)| b.trim().to_string())
}

/// The config file: both services from one repository, each told apart by DEMO_VERSION (the
/// demo app's `/version`), the worker on host port `worker_port`.
fn config(bed: &Bed, repo: &str, suite: &str, web: &str, worker: &str, release: &str, worker_port: u16) -> String {
    format!(
        r#"defaults:
  ecr-repository: {repo}
  registry: {registry}
  targets: [Suite={suite}]
  health-check-path: /health
  health-check-timeout: 10
environments:
  test:
    services:
      {web}:
        ports: ["3000:3000"]
        env: {{DEMO_VERSION: web-{release}}}
      {worker}:
        ports: ["{worker_port}:3000"]
        env: {{DEMO_VERSION: worker-{release}}}
        command: serve --as worker
"#,
        registry = bed.get("TESTBED_REGISTRY"),
    )
}

fn run(bed: &Bed, config: &str, extra: &[(&str, &str)]) -> RunResult {
    let mut inputs = vec![
        ("environment", "test"),
        ("image-tag", "v1"),
        ("build-args", "VERSION=v1"),
        ("github-token", "ghs_not_a_real_token_0123456789"),
    ];
    inputs.extend_from_slice(extra);
    let run = ActionRun::new(&inputs);
    std::fs::create_dir_all(run.workspace.join(".github")).unwrap();
    std::fs::write(run.workspace.join(".github/ec2-deploy.yml"), config).unwrap();
    run.run(bed)
}

fn versions(bed: &Bed, parameter: &str) -> usize {
    let out = bed.aws_output(&["ssm", "get-parameter-history", "--name", parameter, "--query", "length(Parameters)"]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn a_web_and_a_worker_from_one_config_have_their_own_records_and_a_rollback_of_one_leaves_the_other() {
    let bed = Bed::load();
    let suite = unique("s");
    let fleet = bed.fleet_in(&suite, 2, &[]);
    let repo = unique("svc");
    bed.create_repository(&repo);
    let (web, worker) = (unique("web"), unique("worker"));
    let (web_record, worker_record) = (format!("/ec2-deploy/test/{web}"), format!("/ec2-deploy/test/{worker}"));

    let r = run(&bed, &config(&bed, &repo, &suite, &web, &worker, "1", 3001), &[]);
    assert_eq!(r.code, 0, "{}", r.log());
    // Built once: the second service finds the tag in the registry.
    assert_eq!(r.stdout.matches("is already in the registry").count(), 1, "{}", r.stdout);
    for ip in &fleet.ips {
        assert_eq!(answer(ip, 3000).as_deref(), Some("web-1"), "{}", r.log());
        assert_eq!(answer(ip, 3001).as_deref(), Some("worker-1"));
    }
    for id in &fleet.ids {
        // Each service's proxy holds its own port and sends it to its own container.
        let out = bed.on_instance(id, &["docker", "ps", "--format", "{{.Names}}"]);
        let names = String::from_utf8_lossy(&out.stdout);
        for name in [&web, &worker] {
            assert!(names.lines().any(|l| l == name.as_str()), "{names}");
            assert!(names.lines().any(|l| l == format!("ec2-deploy-proxy-{name}")), "{names}");
        }
        let out = bed.on_instance(id, &["docker", "inspect", "--format", "{{json .Config.Cmd}}", &worker]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"["serve","--as","worker"]"#);
    }
    let services: serde_json::Value = serde_json::from_str(&r.outputs["services"]).unwrap();
    let rows: Vec<(&str, &str, &str)> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (s["service"].as_str().unwrap(), s["release-parameter"].as_str().unwrap(), s["result"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        rows,
        [(web.as_str(), web_record.as_str(), "success"), (worker.as_str(), worker_record.as_str(), "success")]
    );
    assert_eq!(r.outputs["result"], "success");
    assert!(r.summary.contains(&format!("# Service `{web}`")) && r.summary.contains(&format!("# Service `{worker}`")));

    let r = run(&bed, &config(&bed, &repo, &suite, &web, &worker, "2", 3001), &[]);
    assert_eq!(r.code, 0, "{}", r.log());
    assert_eq!((versions(&bed, &web_record), versions(&bed, &worker_record)), (2, 2));
    let web_started: Vec<String> = fleet.ids.iter().map(|id| started_at(&bed, id, &web)).collect();

    // The worker alone goes back; the web keeps its release and is not even restarted.
    let r = run(
        &bed,
        &config(&bed, &repo, &suite, &web, &worker, "2", 3001),
        &[("service", &worker), ("rollback", "true")],
    );
    assert_eq!(r.code, 0, "{}", r.log());
    for (n, ip) in fleet.ips.iter().enumerate() {
        assert_eq!(answer(ip, 3001).as_deref(), Some("worker-1"));
        assert_eq!(answer(ip, 3000).as_deref(), Some("web-2"));
        assert_eq!(started_at(&bed, &fleet.ids[n], &web), web_started[n]);
    }
    assert_eq!((versions(&bed, &web_record), versions(&bed, &worker_record)), (2, 3));
    // `status` of one service, from the same config file: its record, and both instances on it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ec2-deploy.yml");
    std::fs::write(&file, config(&bed, &repo, &suite, &web, &worker, "2", 3001)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ec2-deploy"))
        .args(["status", "--config", file.to_str().unwrap(), "--environment", "test", "--service", &worker])
        .envs(["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].map(|k| (k, bed.get(k))))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("# Service {worker}")) && !text.contains(&format!("# Service {web}")), "{text}");
    assert!(text.contains(&format!("{worker_record}: live release v1 (version 3)")), "{text}");
    assert!(text.contains("2, 0 drifted from the live release v1"), "{text}");

    // A replacement instance boots into both, from the user-data for both records.
    let fresh = bed.fleet_in(&unique("asg"), 1, &[]);
    let script = std::process::Command::new(env!("CARGO_BIN_EXE_ec2-deploy"))
        .args(["user-data", "--release-parameter", &web_record, "--release-parameter", &worker_record])
        .output()
        .unwrap();
    assert!(script.status.success());
    let user_data = bed.put_file(&fresh.ids[0], "user-data.sh", &String::from_utf8(script.stdout).unwrap());
    let out = bed.on_instance(&fresh.ids[0], &["bash", &user_data]);
    assert!(out.status.success(), "user-data failed:\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(answer(&fresh.ips[0], 3000).as_deref(), Some("web-2"));
    assert_eq!(answer(&fresh.ips[0], 3001).as_deref(), Some("worker-1"));
}

#[test]
fn two_services_on_one_host_port_are_refused_before_anything_changes() {
    let bed = Bed::load();
    let suite = unique("s");
    let fleet = bed.fleet_in(&suite, 1, &[]);
    let repo = unique("svcport");
    bed.create_repository(&repo);
    let (web, worker) = (unique("web"), unique("worker"));
    let r = run(&bed, &config(&bed, &repo, &suite, &web, &worker, "1", 3000), &[]);
    assert_eq!(r.code, 2, "{}", r.log());
    assert!(
        r.stdout.contains(&format!(
            "services {web} and {worker} both publish host port 3000, and both run on {}",
            fleet.ids[0]
        )),
        "{}",
        r.stdout
    );
    let out = bed.on_instance(&fleet.ids[0], &["docker", "ps", "--all", "--format", "{{.Names}}"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "", "nothing may have started");
    assert_eq!(versions(&bed, &format!("/ec2-deploy/test/{web}")), 0);
}
