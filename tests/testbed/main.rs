//! End-to-end tests on the test bed: the real binary, run as the GitHub runner runs it, deploying
//! the demo app to simulated instances through emulated SSM, a real registry and real Docker
//! engines. Needs `scripts/testbed up` and DEMO_CONTEXT (scripts/test does both).

mod build;
mod drift;
mod https;
mod operate;
mod options;
mod proxy;
mod releases;
mod rolling;
mod safety;
mod script;
mod services;
mod streams;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{http_get, unique, wait_until, ActionRun, Bed};

/// The inputs every deploy here shares: the demo app, tagged instances of one suite.
fn inputs(bed: &Bed, repo: &str, suite: &str, tag: &str, build_args: &str) -> Vec<(String, String)> {
    [
        ("environment", "test"),
        ("ecr-repository", repo),
        ("registry", bed.get("TESTBED_REGISTRY")),
        ("image-tag", tag),
        ("build-args", build_args),
        ("targets", &format!("Suite={suite}\nRole=web")),
        ("ports", "3000:3000"),
        ("health-check-path", "/health"),
        ("health-check-timeout", "10"),
        // The demo app without its HEALTHCHECK (examples/demo-app/Dockerfile says why); the
        // health path decides.
        ("target", "bare"),
        ("github-token", "ghs_not_a_real_token_0123456789"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn run_with(bed: &Bed, inputs: Vec<(String, String)>) -> support::RunResult {
    let borrowed: Vec<(&str, &str)> = inputs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ActionRun::new(&borrowed).run(bed)
}

fn set(inputs: &mut Vec<(String, String)>, name: &str, value: &str) {
    inputs.retain(|(k, _)| k != name);
    inputs.push((name.to_string(), value.to_string()));
}

/// An operator's command (`ec2-deploy status`, `logs`) for the suite's web instances, run as a
/// workflow or a terminal runs it: exit code, stdout, stderr.
fn operate(bed: &Bed, command: &str, repo: &str, suite: &str, extra: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ec2-deploy"))
        .args([command, "--environment", "test", "--ecr-repository", repo])
        .args(["--targets", &format!("Suite={suite}"), "--targets", "Role=web"])
        .args(extra)
        .envs(["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].map(|k| (k, bed.get(k))))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("--- ec2-deploy {command} {}\n{stdout}{stderr}", extra.join(" "));
    (out.status.code().unwrap_or(-1), stdout.into_owned(), stderr.into_owned())
}

fn version_of(ip: &str) -> Option<String> {
    http_get(&format!("http://{ip}:3000/version")).filter(|(s, _)| *s == 200).map(|(_, b)| b.trim().to_string())
}

fn started_at(bed: &Bed, id: &str, container: &str) -> String {
    let out = bed.on_instance(id, &["docker", "inspect", "--format", "{{.State.StartedAt}}", container]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn deploys_v1_then_v2_to_the_tagged_instances_only() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 3, &["Role=web"]);
    let worker = bed.fleet_in(&suite, 1, &["Role=worker"]);
    let repo = unique("shop");
    bed.create_repository(&repo);

    let r1 = run_with(&bed, inputs(&bed, &repo, &suite, "v1", "VERSION=v1"));
    assert_eq!(r1.code, 0, "{}", r1.log());
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some("v1"), "{ip} after v1");
    }

    let r2 = run_with(&bed, inputs(&bed, &repo, &suite, "v2", "VERSION=v2"));
    assert_eq!(r2.code, 0, "{}", r2.log());
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some("v2"), "{ip} after v2");
    }
    // Its logs rotate, by default: the bed's engines default to json-file, as Docker's do.
    let log = bed.on_instance(&web.ids[0], &["docker", "inspect", "--format", "{{json .HostConfig.LogConfig}}", &repo]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert_eq!(log.trim(), r#"{"Type":"json-file","Config":{"max-file":"3","max-size":"10m"}}"#);

    // The instance with other tags was never touched.
    let ps = bed.on_instance(&worker.ids[0], &["docker", "ps", "--all", "--quiet"]);
    assert!(ps.status.success());
    assert_eq!(String::from_utf8_lossy(&ps.stdout).trim(), "", "the worker got a container");
    assert_eq!(version_of(&worker.ips[0]), None);

    // Outputs, as the runner reads them.
    let o = &r2.outputs;
    let image = &o["image"];
    let prefix = format!("{}/{repo}@sha256:", bed.get("TESTBED_REGISTRY"));
    assert!(image.starts_with(&prefix) && image.len() == prefix.len() + 64, "image output {image:?}");
    let ecr_digest = bed.aws(&[
        "ecr",
        "describe-images",
        "--repository-name",
        &repo,
        "--image-ids",
        "imageTag=v2",
        "--query",
        "imageDetails[0].imageDigest",
        "--output",
        "text",
    ]);
    assert_eq!(image.rsplit_once('@').unwrap().1, ecr_digest.trim(), "deployed by the digest ECR has for the tag");
    assert_eq!(o["digest"], ecr_digest.trim());
    // What ran before: the first deploy had no previous release, the second names the first's.
    assert_eq!(r1.outputs.get("previous-image"), None, "{}", r1.outputs_raw);
    assert_eq!(o["previous-image"], r1.outputs["image"]);
    // The record's version this run wrote, as SSM numbers it; no GitHub here, so no deployment.
    let parameter = format!("/ec2-deploy/test/{repo}");
    let version =
        bed.aws(&["ssm", "get-parameter", "--name", &parameter, "--query", "Parameter.Version", "--output", "text"]);
    assert_eq!(o["release-version"], version.trim());
    assert_eq!(r1.outputs["release-version"].parse::<i64>().unwrap() + 1, version.trim().parse::<i64>().unwrap());
    assert_eq!(o["deployment-id"], "");
    assert_eq!(o["image-tag"], "v2");
    assert_eq!(o["result"], "success");
    // The pull before the first batch, when there was one, then the deploy's command.
    let deploy_command = o["command-id"].split(' ').next_back().unwrap();
    let cmd = bed.aws_json(&["ssm", "list-commands", "--command-id", deploy_command]);
    assert_eq!(cmd["Commands"][0]["Status"], "Success");
    let instances: serde_json::Value = serde_json::from_str(&o["instances"]).unwrap();
    let mut ids: Vec<&str> = instances.as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want: Vec<&str> = web.ids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(ids, want);
    for i in instances.as_array().unwrap() {
        assert_eq!(
            (i["status"].as_str(), i["response_code"].as_i64(), i["outcome"].as_str()),
            (Some("Success"), Some(0), Some("deployed"))
        );
        assert_eq!(
            (&i["image_before"], &i["image_after"]),
            (&r1.outputs["image"].clone().into(), &image.clone().into())
        );
    }

    // The job summary has a row per instance, with what ran before and after.
    assert!(r2.summary.contains("✅ ec2-deploy: `v2` deployed to test"), "{}", r2.summary);
    for id in &web.ids {
        let row = r2
            .summary
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no row for {id}:\n{}", r2.summary));
        assert!(row.contains("✅ Success") && row.contains(" → "), "{row}");
    }

    // Through the load balancer, once the instances are in its target group, every answer is v2.
    let slice = bed.load_balancer();
    let tg = slice.target_group_arn.as_str();
    let targets: Vec<String> = web.ids.iter().map(|id| format!("Id={id}")).collect();
    let mut register = vec!["elbv2", "register-targets", "--target-group-arn", tg, "--targets"];
    register.extend(targets.iter().map(String::as_str));
    bed.aws(&register);
    let lb = &slice.url;
    wait_until("the targets to be healthy", Duration::from_secs(30), || {
        let h = bed.aws_json(&["elbv2", "describe-target-health", "--target-group-arn", tg]);
        h["TargetHealthDescriptions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["TargetHealth"]["State"] == "healthy")
            .count()
            >= 3
    });
    let answers: Vec<Option<(u16, String)>> = (0..12).map(|_| http_get(&format!("{lb}/version"))).collect();
    let mut deregister = vec!["elbv2", "deregister-targets", "--target-group-arn", tg, "--targets"];
    deregister.extend(targets.iter().map(String::as_str));
    bed.aws(&deregister);
    assert!(answers.iter().all(|a| a.as_ref() == Some(&(200, "v2\n".to_string()))), "{answers:?}");

    // The same release again: verified, not restarted.
    let before: Vec<String> = web.ids.iter().map(|id| started_at(&bed, id, &repo)).collect();
    let r3 = run_with(&bed, inputs(&bed, &repo, &suite, "v2", "VERSION=v2"));
    assert_eq!(r3.code, 0, "{}", r3.log());
    assert!(r3.stdout.contains("is already in the registry"), "a tag in the registry is not rebuilt:\n{}", r3.stdout);
    let after: Vec<String> = web.ids.iter().map(|id| started_at(&bed, id, &repo)).collect();
    assert_eq!(before, after, "a redeploy of the running release restarted containers");
    let instances: serde_json::Value = serde_json::from_str(&r3.outputs["instances"]).unwrap();
    assert!(instances.as_array().unwrap().iter().all(|i| i["outcome"] == "unchanged"), "{instances}");
}

#[test]
fn secret_keys_reach_the_containers_and_values_appear_nowhere_else() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("secrets");
    bed.create_repository(&repo);
    let values = [unique("pw-value-x9"), unique("token-value-q7")];
    let secret = unique("app/secret");
    bed.create_secret(&secret, &format!(r#"{{"DB_PASSWORD": "{}", "API_TOKEN": "{}"}}"#, values[0], values[1]));

    // Watch every process's arguments on the machine (instances share its process table) for the
    // whole deploy.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let sampler = {
        let (stop, seen, values) = (stop.clone(), seen.clone(), values.clone());
        std::thread::spawn(move || {
            let mut samples = 0;
            while !stop.load(Ordering::SeqCst) {
                let ps = std::process::Command::new("ps").args(["-eo", "args"]).output().unwrap();
                let text = String::from_utf8_lossy(&ps.stdout);
                for line in text.lines().filter(|l| values.iter().any(|v| l.contains(v.as_str()))) {
                    seen.lock().unwrap().push(line.to_string());
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        })
    };
    let mut i = inputs(&bed, &repo, &suite, "v1", "VERSION=v1");
    set(&mut i, "secret-id", &secret);
    set(&mut i, "env", "PLAIN_SETTING=visible");
    let r = run_with(&bed, i);
    stop.store(true, Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(samples > 10, "the process sampler barely ran ({samples} samples)");
    assert_eq!(*seen.lock().unwrap(), Vec::<String>::new(), "secret values in process arguments");

    for (id, ip) in web.ids.iter().zip(&web.ips) {
        let (status, names) = http_get(&format!("http://{ip}:3000/env")).unwrap();
        assert_eq!(status, 200);
        for key in ["DB_PASSWORD", "API_TOKEN", "PLAIN_SETTING"] {
            assert!(names.lines().any(|l| l == key), "{key} missing on {id}: {names}");
        }
        // The values are on the instance, in a file only root can read.
        let env_file = format!("/var/lib/ec2-deploy/{repo}/env");
        let stat = bed.on_instance(id, &["stat", "-c", "%a %U", &env_file]);
        assert_eq!(String::from_utf8_lossy(&stat.stdout).trim(), "600 root");
        let content = String::from_utf8_lossy(&bed.on_instance(id, &["cat", &env_file]).stdout).into_owned();
        assert!(content.contains(&format!("DB_PASSWORD={}", values[0])), "the secret never reached {id}");
    }

    let (command, invocations) = bed.commands_and_outputs(&r.outputs["command-id"]);
    assert!(command.contains("SECRET_ID="), "the command names the secret it reads");
    for v in &values {
        for (place, text) in [
            ("the SSM command text", &command),
            ("the instances' output", &invocations),
            ("the action's stdout", &r.stdout),
            ("the action's stderr", &r.stderr),
            ("the job summary", &r.summary),
            ("the step outputs", &r.outputs_raw),
        ] {
            assert!(!text.contains(v.as_str()), "a secret value appears in {place}");
        }
    }
    // The GitHub token is masked and never printed otherwise.
    assert!(r.stdout.contains("::add-mask::ghs_not_a_real_token_0123456789"));
    assert_eq!(r.stdout.matches("ghs_not_a_real_token_0123456789").count(), 1);

    // The same from Parameter Store: a SecureString parameter (`ssm:NAME`), read on the instance
    // with decryption; the runner only asks what it is (DescribeParameters).
    let parameter = format!("/{}", unique("app/env"));
    let stored = unique("ssm-value-k3");
    bed.aws(&[
        "ssm",
        "put-parameter",
        "--name",
        &parameter,
        "--type",
        "SecureString",
        "--value",
        &format!(r#"{{"FROM_SSM": "{stored}"}}"#),
    ]);
    let mut i = inputs(&bed, &repo, &suite, "v2", "VERSION=v2");
    set(&mut i, "secret-id", &format!("ssm:{parameter}"));
    let r = run_with(&bed, i);
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(r.stdout.contains(&format!("(found: Parameter Store SecureString {parameter})")), "{}", r.stdout);
    for (id, ip) in web.ids.iter().zip(&web.ips) {
        let (_, names) = http_get(&format!("http://{ip}:3000/env")).unwrap();
        assert!(names.lines().any(|l| l == "FROM_SSM"), "FROM_SSM missing on {id}: {names}");
        let env_file = format!("/var/lib/ec2-deploy/{repo}/env");
        let content = String::from_utf8_lossy(&bed.on_instance(id, &["cat", &env_file]).stdout).into_owned();
        assert!(content.contains(&format!("FROM_SSM={stored}")), "the parameter's value never reached {id}");
    }
    let (command, invocations) = bed.commands_and_outputs(&r.outputs["command-id"]);
    for text in [&command, &invocations, &r.stdout, &r.stderr, &r.summary, &r.outputs_raw] {
        assert!(!text.contains(stored.as_str()), "the parameter's value appears outside the instance");
    }
}

#[test]
fn a_release_that_fails_its_health_check_is_undone_and_reported() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("unhealthy");
    bed.create_repository(&repo);
    let r1 = run_with(&bed, inputs(&bed, &repo, &suite, "good", "VERSION=good"));
    assert_eq!(r1.code, 0, "{}", r1.log());

    // All at once: both instances try the bad release, both put the good one back.
    let mut i = inputs(&bed, &repo, &suite, "bad", "VERSION=bad\nHEALTH=fail");
    set(&mut i, "health-check-timeout", "4");
    set(&mut i, "max-concurrency", "100%");
    let r2 = run_with(&bed, i);
    assert_eq!(r2.code, 1, "{}", r2.log());
    assert_eq!(r2.outputs["result"], "failed");
    assert!(r2.summary.contains("❌ ec2-deploy: `bad` failed on 2 of 2 instances in test"), "{}", r2.summary);
    for (id, ip) in web.ids.iter().zip(&web.ips) {
        let row = r2.summary.lines().find(|l| l.contains(id.as_str())).unwrap();
        assert!(row.contains("| health check |"), "{row}");
        // The proxy never moved: the good release served throughout.
        assert!(
            row.contains("GET /health on container port 3000 answered 503; the release that was running kept serving"),
            "{row}"
        );
        assert!(
            r2.stdout.contains(&format!("::error title=ec2-deploy%3A instance failed::{id}")),
            "no annotation for {id}"
        );
        assert_eq!(version_of(ip).as_deref(), Some("good"), "{id} is not back on the previous release");
    }
    let instances: serde_json::Value = serde_json::from_str(&r2.outputs["instances"]).unwrap();
    assert!(
        instances.as_array().unwrap().iter().all(|i| i["status"] == "Failed" && i["response_code"] == 15),
        "{instances}"
    );

    // One at a time with max-errors 0 (the defaults on two instances): SSM stops after the first
    // failure, so the second instance is never touched, and the report says so.
    let mut i = inputs(&bed, &repo, &suite, "bad", "VERSION=bad\nHEALTH=fail");
    set(&mut i, "health-check-timeout", "4");
    let r3 = run_with(&bed, i);
    assert_eq!(r3.code, 1, "{}", r3.log());
    let rows: Vec<&str> =
        web.ids.iter().map(|id| r3.summary.lines().find(|l| l.contains(id.as_str())).unwrap()).collect();
    assert_eq!(
        rows.iter().filter(|r| r.contains("| health check |") && r.contains("kept serving")).count(),
        1,
        "{rows:#?}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.contains("Terminated") && r.contains("too many other instances failed (max-errors)"))
            .count(),
        1,
        "{rows:#?}"
    );
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some("good"));
    }
}

#[test]
fn a_first_deploy_that_never_gets_healthy_fails_with_the_reason() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("neverhealthy");
    bed.create_repository(&repo);
    // No health path: the image's own HEALTHCHECK decides, and it fails.
    let mut i = inputs(&bed, &repo, &suite, "v1", "VERSION=v1\nHEALTH=fail");
    i.retain(|(k, _)| k != "health-check-path");
    set(&mut i, "target", "app");
    set(&mut i, "health-check-timeout", "8");
    let r = run_with(&bed, i);
    assert_eq!(r.code, 1, "{}", r.log());
    let row = r.summary.lines().find(|l| l.contains(web.ids[0].as_str()));
    assert!(row.is_some_and(|row| row.contains("HEALTHCHECK says unhealthy")), "{row:?}\n{}", r.log());
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("dryrun");
    bed.create_repository(&repo);
    let tag = unique("t");
    let mut i = inputs(&bed, &repo, &suite, &tag, "VERSION=v1");
    set(&mut i, "dry-run", "true");
    let r = run_with(&bed, i);
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(
        r.stdout.contains(&format!("Plan: deploy {}/{repo}:{tag} to test", bed.get("TESTBED_REGISTRY"))),
        "{}",
        r.stdout
    );
    for id in &web.ids {
        assert!(r.stdout.contains(id.as_str()), "the plan does not list {id}");
    }
    assert!(r.stdout.contains("Dry run: nothing was built, pushed or sent."));
    assert_eq!(r.outputs["result"], "dry-run");
    assert_eq!(bed.commands_mentioning(&tag), Vec::<serde_json::Value>::new(), "a command was sent");
    let images = bed.aws_json(&["ecr", "describe-images", "--repository-name", &repo]);
    assert_eq!(images["imageDetails"], serde_json::json!([]), "something was pushed");
    for ip in &web.ips {
        assert_eq!(version_of(ip), None);
    }
}

#[test]
fn problems_found_by_the_plan_stop_the_run_before_anything_changes() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("planfail");
    bed.create_repository(&repo);

    type Change = Box<dyn Fn(&mut Vec<(String, String)>)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        ("no targets", Box::new(|i| i.retain(|(k, _)| k != "targets")), "input `targets`: is required"),
        (
            "no matching instance",
            Box::new(|i| set(i, "targets", "Suite=nobody-has-this")),
            "no instance managed by SSM has tags Suite=nobody-has-this",
        ),
        (
            "missing secret",
            Box::new(|i| set(i, "secret-id", "no/such/secret")),
            "input `secret-id`: secret \"no/such/secret\" does not exist",
        ),
        (
            "unknown repository",
            Box::new(|i| set(i, "ecr-repository", "no-such-repo")),
            "input `ecr-repository`: repository \"no-such-repo\" does not exist",
        ),
        ("bad limit", Box::new(|i| set(i, "max-concurrency", "lots")), "input `max-concurrency`: expected a number"),
        ("unknown tag without build", Box::new(|i| set(i, "build", "false")), "is not in repository"),
    ];
    for (name, change, message) in cases {
        let tag = unique("t");
        let mut i = inputs(&bed, &repo, &suite, &tag, "VERSION=v1");
        change(&mut i);
        let r = run_with(&bed, i);
        assert_eq!(r.code, 2, "{name}: {}", r.log());
        assert!(r.stdout.contains("::error title=ec2-deploy%3A "), "{name}: no annotation\n{}", r.stdout);
        assert!(r.stdout.contains(message), "{name}: expected {message:?} in\n{}", r.stdout);
        assert_eq!(r.outputs["result"], "failed", "{name}");
        assert_eq!(bed.commands_mentioning(&tag), Vec::<serde_json::Value>::new(), "{name}: a command was sent");
    }
    let images = bed.aws_json(&["ecr", "describe-images", "--repository-name", &repo]);
    assert_eq!(images["imageDetails"], serde_json::json!([]), "something was pushed");
    for ip in &web.ips {
        assert_eq!(version_of(ip), None);
    }
}

#[test]
fn an_instance_whose_agent_is_offline_stops_the_plan_and_is_named() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("offline");
    bed.create_repository(&repo);
    let script = std::path::Path::new(bed.get("TESTBED_ROOT")).join("scripts/testbed");
    let st = std::process::Command::new(&script)
        .args(["offline", &web.ids[1]])
        .env("TESTBED_STATE", bed.get("TESTBED_STATE"))
        .status()
        .unwrap();
    assert!(st.success());
    let tag = unique("t");
    let r = run_with(&bed, inputs(&bed, &repo, &suite, &tag, "VERSION=v1"));
    assert_eq!(r.code, 2, "{}", r.log());
    assert!(
        r.stdout
            .contains(&format!("1 matching instance(s) have no SSM agent connection ({} ConnectionLost)", web.ids[1])),
        "{}",
        r.stdout
    );
    assert_eq!(bed.commands_mentioning(&tag), Vec::<serde_json::Value>::new());
}

#[test]
fn a_container_that_cannot_start_is_reported_with_dockers_reason() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("portbusy");
    bed.create_repository(&repo);
    // Something else on the instance already listens on port 3000.
    let squatter = bed.on_instance(&web.ids[0], &["busybox", "httpd", "-p", "3000", "-h", "/tmp"]);
    assert!(squatter.status.success(), "{}", String::from_utf8_lossy(&squatter.stderr));
    // Without the proxy the container cannot start; with it, the proxy cannot.
    for (proxy, what) in [("false", "docker start failed"), ("true", "the proxy did not start")] {
        let mut i = inputs(&bed, &repo, &suite, "v1", "VERSION=v1");
        set(&mut i, "proxy", proxy);
        let r = run_with(&bed, i);
        assert_eq!(r.code, 1, "{}", r.log());
        let row = r.summary.lines().find(|l| l.contains(web.ids[0].as_str())).unwrap();
        assert!(row.contains("| start |"), "{row}");
        assert!(row.contains(what) && row.contains("3000"), "{row}");
        assert!(row.contains("(there was no previous container)"), "{row}");
        let ps = bed.on_instance(&web.ids[0], &["docker", "ps", "--all", "--quiet"]);
        assert_eq!(String::from_utf8_lossy(&ps.stdout).trim(), "", "a failed container was left behind");
    }
}

#[test]
fn a_throttling_storm_slows_the_deploy_down_but_it_completes() {
    // A hand-written fault (the emulator cannot produce it): while set, the bed's SSM answers
    // ThrottlingException to three of every four follow calls for this test's command.
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("throttled");
    bed.create_repository(&repo);
    let tag = unique("thr");
    let before = bed.hook("/calls")["Throttled"].as_u64().unwrap_or(0);
    bed.hook(&format!("/throttle?needle={tag}"));
    let r = run_with(&bed, inputs(&bed, &repo, &suite, &tag, &format!("VERSION={tag}")));
    let after = bed.hook("/throttle")["Throttled"].as_u64().unwrap_or(0);
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(after - before >= 3, "the storm never happened ({} throttled answers)", after - before);
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some(tag.as_str()));
    }
}

#[test]
fn with_on_offline_skip_the_online_instances_get_the_release_and_the_offline_one_is_named() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 3, &["Role=web"]);
    let repo = unique("skip");
    bed.create_repository(&repo);
    let script = std::path::Path::new(bed.get("TESTBED_ROOT")).join("scripts/testbed");
    let offline = &web.ids[2];
    let st = std::process::Command::new(&script)
        .args(["offline", offline])
        .env("TESTBED_STATE", bed.get("TESTBED_STATE"))
        .status()
        .unwrap();
    assert!(st.success());
    let mut i = inputs(&bed, &repo, &suite, "v1", "VERSION=v1");
    set(&mut i, "on-offline", "skip");
    let r = run_with(&bed, i);
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(
        r.stdout.contains(&format!(
            "::warning title=ec2-deploy%3A skipped::not deployed, SSM agent not connected: {offline}"
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.summary.contains(&format!("Skipped, SSM agent not connected (`on-offline: skip`): `{offline}`")),
        "{}",
        r.summary
    );
    assert_eq!(version_of(&web.ips[0]).as_deref(), Some("v1"));
    assert_eq!(version_of(&web.ips[1]).as_deref(), Some("v1"));
    assert_eq!(version_of(&web.ips[2]), None, "the offline instance got the release");
    let instances: serde_json::Value = serde_json::from_str(&r.outputs["instances"]).unwrap();
    assert_eq!(instances.as_array().unwrap().len(), 2, "{instances}");
}
