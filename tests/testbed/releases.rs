//! Releases: the record in SSM Parameter Store, rollback from its history, Auto Scaling boots from
//! user-data, GitHub Deployments, and the run-order guard.
//!
//! GitHub is a local HTTP server (wiremock) that checks the method, path, auth header and body of
//! every request octocrab sends and answers 404 to anything unexpected, which fails the test.

use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use std::time::Duration;

use super::support::{unique, ActionRun, Bed};
use super::{inputs, set, version_of};

const TOKEN: &str = "ghs_not_a_real_token_0123456789";

fn release_inputs(bed: &Bed, repo: &str, suite: &str, tag: &str, parameter: &str) -> Vec<(String, String)> {
    let mut i = inputs(bed, repo, suite, tag, &format!("VERSION={tag}"));
    set(&mut i, "release-parameter", parameter);
    i
}

fn run(bed: &Bed, inputs: Vec<(String, String)>, env: &[(&str, &str)]) -> super::support::RunResult {
    let borrowed: Vec<(&str, &str)> = inputs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut action = ActionRun::new(&borrowed);
    action.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    action.run(bed)
}

fn history(bed: &Bed, parameter: &str) -> Vec<serde_json::Value> {
    let h = bed.aws_json(&["ssm", "get-parameter-history", "--name", parameter]);
    h["Parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| serde_json::from_str(p["Value"].as_str().unwrap()).unwrap())
        .collect()
}

#[test]
fn deploy_v1_v2_then_rollback_brings_v1_back_without_building() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 3, &["Role=web"]);
    let repo = unique("releases");
    bed.create_repository(&repo);
    let parameter = format!("/ec2-deploy/test/{repo}");
    for tag in ["v1", "v2"] {
        let r = run(&bed, release_inputs(&bed, &repo, &suite, tag, &parameter), &[]);
        assert_eq!(r.code, 0, "{}", r.log());
        assert!(
            r.stdout.contains(&format!(
                "Recorded the release as version {} of {parameter}",
                if tag == "v1" { 1 } else { 2 }
            )),
            "{}",
            r.stdout
        );
    }
    let mut i = release_inputs(&bed, &repo, &suite, "ignored-by-rollback", &parameter);
    set(&mut i, "rollback", "true");
    let r = run(&bed, i, &[]);
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(r.stdout.contains("rollback   to version 1 of the release record: v1"), "{}", r.stdout);
    assert!(!r.stdout.contains("Build and push"), "a rollback built an image:\n{}", r.stdout);
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some("v1"));
    }
    let h = history(&bed, &parameter);
    assert_eq!(h.len(), 3, "{h:#?}");
    assert_eq!(h[2]["image"], h[0]["image"], "the live record is v1's image again");
    assert_eq!(h[2]["tag"], "v1");

    // `ec2-deploy status` shows the live release and the history.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ec2-deploy"))
        .args(["status", "--release-parameter", &parameter])
        .envs(["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].map(|k| (k, bed.get(k))))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("{parameter}: live release v1 (version 3)")), "{text}");
    assert_eq!(text.lines().filter(|l| l.trim_start().starts_with(char::is_numeric)).count(), 3, "{text}");

    // Nothing earlier than the live image to go back to on a fresh record: exit 2, nothing changes.
    let mut i = release_inputs(&bed, &repo, &suite, "x", &format!("/ec2-deploy/test/{repo}-empty"));
    set(&mut i, "rollback", "true");
    let r = run(&bed, i, &[]);
    assert_eq!(r.code, 2, "{}", r.log());
    assert!(r.stdout.contains("records no earlier release"), "{}", r.stdout);
}

fn env_names(ip: &str) -> Vec<String> {
    let (_, body) = super::support::http_get(&format!("http://{ip}:3000/env")).expect("the app answers");
    body.lines().map(str::to_string).collect()
}

#[test]
fn rollback_after_a_settings_only_change_restores_the_settings_everywhere() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("settings");
    bed.create_repository(&repo);
    let parameter = format!("/ec2-deploy/test/{repo}");
    // One image, deployed with ALPHA, then with BETA.
    for env in ["ALPHA=1", "BETA=1"] {
        let mut i = release_inputs(&bed, &repo, &suite, "v1", &parameter);
        set(&mut i, "env", env);
        let r = run(&bed, i, &[]);
        assert_eq!(r.code, 0, "{}", r.log());
    }
    for ip in &web.ips {
        assert!(env_names(ip).contains(&"BETA".to_string()));
    }
    let mut i = release_inputs(&bed, &repo, &suite, "v1", &parameter);
    set(&mut i, "rollback", "true");
    let r = run(&bed, i, &[]);
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(r.stdout.contains("rollback   to version 1 of the release record: v1"), "{}", r.stdout);
    for ip in &web.ips {
        let names = env_names(ip);
        assert!(names.contains(&"ALPHA".to_string()) && !names.contains(&"BETA".to_string()), "{ip}: {names:?}");
    }
    // The record marks version 2 as rolled back from, and `status` shows it.
    let h = history(&bed, &parameter);
    assert_eq!(h[2]["rolled_back_from"], 2, "{h:#?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ec2-deploy"))
        .args(["status", "--release-parameter", &parameter])
        .envs(["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].map(|k| (k, bed.get(k))))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.trim_start().starts_with("2 ") && l.contains("rolled back from")), "{text}");
    assert!(text.lines().any(|l| l.trim_start().starts_with("3 ") && l.contains("rollback from version 2")), "{text}");
}

#[test]
fn a_fresh_instance_running_only_the_user_data_serves_the_live_release() {
    let bed = Bed::load();
    let suite = unique("s");
    let _web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("boot");
    bed.create_repository(&repo);
    let secret = unique("boot/secret");
    bed.create_secret(&secret, r#"{"BOOT_SECRET": "only-on-the-instance"}"#);
    let parameter = format!("/ec2-deploy/test/{repo}");
    let mut i = release_inputs(&bed, &repo, &suite, "v7", &parameter);
    set(&mut i, "secret-id", &secret);
    let r = run(&bed, i, &[]);
    assert_eq!(r.code, 0, "{}", r.log());

    // A replacement instance that Auto Scaling launched into a group with a launch lifecycle hook
    // (the example's, ec2-deploy-launch): never deployed to, it only runs the user-data at boot,
    // which completes the hook once the release serves.
    let fresh = bed.fleet_in(&unique("asg"), 2, &["Role=web"]);
    let group = unique("web-asg");
    let tag = format!("Key=aws:autoscaling:groupName,Value={group}");
    bed.aws(&["ec2", "create-tags", "--resources", &fresh.ids[0], &fresh.ids[1], "--tags", &tag]);
    let script =
        std::fs::read_to_string(std::path::Path::new(bed.get("TESTBED_ROOT")).join("examples/user-data.sh")).unwrap();
    let boot = |id: &str, parameter: &str| {
        let user_data = bed.put_file(id, "user-data.sh", &script);
        bed.on_instance(id, &["env", &format!("RELEASE_PARAMETER={parameter}"), "bash", &user_data])
    };
    let out = boot(&fresh.ids[0], &parameter);
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "user-data failed:\n{text}");
    assert_eq!(version_of(&fresh.ips[0]).as_deref(), Some("v7"));
    let (_, names) = super::support::http_get(&format!("http://{}:3000/env", fresh.ips[0])).unwrap();
    assert!(names.lines().any(|l| l == "BOOT_SECRET"), "{names}");
    assert_eq!(bed.lifecycle_actions(&fresh.ids[0]), [(group.clone(), "ec2-deploy-launch".into(), "CONTINUE".into())]);
    assert!(text.contains(&format!("lifecycle hook ec2-deploy-launch of {group} completed: CONTINUE")), "{text}");

    // One whose release cannot start (its Docker engine is down) abandons the launch: the group
    // replaces it instead of putting it in service on nothing.
    bed.testbed(&["docker-stop", &fresh.ids[1]]);
    let out = boot(&fresh.ids[1], &parameter);
    assert!(!out.status.success());
    assert_eq!(bed.lifecycle_actions(&fresh.ids[1]), [(group, "ec2-deploy-launch".into(), "ABANDON".into())]);
    bed.testbed(&["docker-start", &fresh.ids[1]]);

    // Before the first deploy there is no record: nothing to start, and nothing failed (the
    // first deploy reaches the instance by its tags); the launch goes on.
    let out = boot(&fresh.ids[1], &format!("/ec2-deploy/test/{}", unique("none")));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("no release recorded in /ec2-deploy/test/none-"), "{text}");
    assert_eq!(bed.lifecycle_actions(&fresh.ids[1]).last().unwrap().2, "CONTINUE");
}

/// The other window: a deploy (its catch-up of a joining instance) finished on the instance before
/// its boot script started, but wrote the record after the boot script read it. The interleaving
/// is forced: the boot reads a parameter frozen as the record was before that deploy wrote it
/// (its value and its version 1), after the deploy of v2 (version 2) left the instance. The boot
/// keeps v2 rather than put the instance back on v1.
#[test]
fn a_boot_that_read_the_record_before_a_finished_deploy_wrote_it_keeps_the_newer_release() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let (id, ip) = (&web.ids[0], &web.ips[0]);
    let repo = unique("bootlate");
    bed.create_repository(&repo);
    let parameter = format!("/ec2-deploy/test/{repo}");
    let r = run(&bed, release_inputs(&bed, &repo, &suite, "v1", &parameter), &[]);
    assert_eq!(r.code, 0, "{}", r.log());
    // The record as the boot script read it: version 1, v1.
    let frozen = format!("{parameter}-as-read");
    let value =
        bed.aws(&["ssm", "get-parameter", "--name", &parameter, "--query", "Parameter.Value", "--output", "text"]);
    bed.aws(&["ssm", "put-parameter", "--name", &frozen, "--type", "String", "--value", value.trim_end_matches('\n')]);
    let r = run(&bed, release_inputs(&bed, &repo, &suite, "v2", &parameter), &[]);
    assert_eq!(r.code, 0, "{}", r.log());
    assert_eq!(version_of(ip).as_deref(), Some("v2"));

    let script =
        std::fs::read_to_string(std::path::Path::new(bed.get("TESTBED_ROOT")).join("examples/user-data.sh")).unwrap();
    let user_data = bed.put_file(id, "user-data.sh", &script);
    let out =
        bed.on_instance(id, &["env", &format!("RELEASE_PARAMETER={frozen}"), "LIFECYCLE_HOOK=", "bash", &user_data]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("runs version 2 of the record, newer than the version 1 this boot read: it keeps it"),
        "{text}"
    );
    assert_eq!(version_of(ip).as_deref(), Some("v2"), "{text}");
}

/// An instance booting while a deploy reaches it: the user-data reads the record (still the old
/// release), then waits for the instance's deploy lock while the deploy of the new release runs
/// there. The interleaving is forced: `flock` in the user-data's PATH is a gate that waits for a
/// file the test creates once that deploy is over (the deploy's own script uses the real one).
#[test]
fn a_boot_that_waited_while_a_deploy_reached_the_instance_keeps_the_newer_release() {
    let bed = Bed::load();
    let suite = unique("s");
    let _web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("bootrace");
    bed.create_repository(&repo);
    let parameter = format!("/ec2-deploy/test/{repo}");
    let r = run(&bed, release_inputs(&bed, &repo, &suite, "v1", &parameter), &[]);
    assert_eq!(r.code, 0, "{}", r.log());

    let joining = unique("asg");
    let fresh = bed.fleet_in(&joining, 1, &["Role=web"]);
    let id = fresh.ids[0].clone();
    let script =
        std::fs::read_to_string(std::path::Path::new(bed.get("TESTBED_ROOT")).join("examples/user-data.sh")).unwrap();
    let user_data = bed.put_file(&id, "user-data.sh", &script);
    let gate = bed.put_file(
        &id,
        "flock",
        "#!/bin/sh\nwhile [ ! -e /tmp/gate-open ]; do sleep 0.1; done\nexec /usr/bin/flock \"$@\"\n",
    );
    let gate_dir = std::path::Path::new(&gate).parent().unwrap().to_str().unwrap().to_string();
    bed.on_instance(&id, &["chmod", "+x", &gate]);
    let boot = {
        let (id, user_data, parameter) = (id.clone(), user_data.clone(), parameter.clone());
        std::thread::spawn(move || {
            let bed = Bed::load();
            let boot =
                format!("PATH={gate_dir}:$PATH RELEASE_PARAMETER={parameter} LIFECYCLE_HOOK= exec bash {user_data}");
            bed.on_instance(&id, &["bash", "-c", &boot])
        })
    };
    // The boot has read the record (v1) once it waits at the gate.
    super::support::wait_until("the boot to wait for the lock", Duration::from_secs(30), || {
        let out = bed.on_instance(&id, &["pgrep", "-f", "/tmp/flock"]);
        out.status.success()
    });
    let r = run(&bed, release_inputs(&bed, &repo, &joining, "v2", &parameter), &[]);
    assert_eq!(r.code, 0, "{}", r.log());
    assert_eq!(version_of(&fresh.ips[0]).as_deref(), Some("v2"));
    let open = std::path::Path::new(bed.get("TESTBED_STATE")).join("instances").join(&id).join("fs/tmp/gate-open");
    std::fs::write(open, "").unwrap();
    let out = boot.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("a deploy reached this instance while it booted"), "{stdout}");
    assert_eq!(version_of(&fresh.ips[0]).as_deref(), Some("v2"), "the boot put the older release back");
}

fn github_env(server: &MockServer) -> Vec<(String, String)> {
    vec![("GITHUB_API_URL".into(), server.uri())]
}

/// Answers 404 to anything no other mock expects, and fails the test if it is ever called.
async fn unexpected_requests_fail(server: &MockServer) {
    Mock::given(|_: &Request| true)
        .respond_with(ResponseTemplate::new(404))
        .with_priority(u8::MAX)
        .expect(0)
        .named("any request the test did not expect")
        .mount(server)
        .await;
}

async fn expect_deployment(server: &MockServer, id: u64, description: &str) {
    Mock::given(method("POST"))
        .and(path("/repos/octo/shop/deployments"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("accept", "application/vnd.github+json"))
        .and(body_partial_json(serde_json::json!({
            "ref": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
            "environment": "test",
            "description": description,
            "auto_merge": false,
            "required_contexts": [],
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({ "id": id })))
        .expect(1)
        .named("create the deployment")
        .mount(server)
        .await;
}

/// The job has no deployment of its own (no `environment:`): the search finds none, once.
async fn no_job_deployment(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/repos/octo/shop/deployments"))
        .and(query_param("sha", "4b825dc642cb6eb9a060e54bf8d69288fbee4904"))
        .and(query_param("environment", "test"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([])))
        .expect(1)
        .named("look for the job's deployment")
        .mount(server)
        .await;
}

async fn expect_status(server: &MockServer, id: u64, state: &str) {
    Mock::given(method("POST"))
        .and(path(format!("/repos/octo/shop/deployments/{id}/statuses")))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_partial_json(serde_json::json!({
            "state": state,
            "log_url": "https://github.com/octo/shop/actions/runs/1",
            "environment_url": "https://shop.example.com",
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({ "id": 1, "state": state })))
        .expect(1)
        .named(format!("deployment status {state}"))
        .mount(server)
        .await;
}

#[test]
fn github_deployments_record_success_failure_and_rollback() {
    let bed = Bed::load();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(MockServer::start());
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("deployments");
    bed.create_repository(&repo);
    let parameter = format!("/ec2-deploy/test/{repo}");
    let with_url = |mut i: Vec<(String, String)>| {
        set(&mut i, "environment-url", "https://shop.example.com");
        i
    };

    let env = github_env(&server);

    // A success: the deployment, in_progress, then success.
    rt.block_on(async {
        unexpected_requests_fail(&server).await;
        no_job_deployment(&server).await;
        expect_deployment(&server, 42, "ec2-deploy: deploy v1").await;
        expect_status(&server, 42, "in_progress").await;
        expect_status(&server, 42, "success").await;
    });
    // This deploy reads a secret: its value must not appear in any request sent to GitHub.
    let secret_value = unique("gh-secret-value");
    let secret = unique("gh/secret");
    bed.create_secret(&secret, &format!(r#"{{"TOKEN": "{secret_value}"}}"#));
    let mut i = with_url(release_inputs(&bed, &repo, &suite, "v1", &parameter));
    set(&mut i, "secret-id", &secret);
    let r = run(&bed, i, &[(&env[0].0, &env[0].1)]);
    assert_eq!(r.code, 0, "{}", r.log());
    rt.block_on(server.verify());
    let sent = rt.block_on(server.received_requests()).expect("wiremock records requests");
    assert_eq!(sent.len(), 4, "the search for the job's deployment, the deployment, two statuses");
    for request in &sent {
        assert!(!String::from_utf8_lossy(&request.body).contains(&secret_value), "a secret value was sent to GitHub");
    }
    rt.block_on(server.reset());

    // A failure: a release that never turns healthy.
    rt.block_on(async {
        unexpected_requests_fail(&server).await;
        no_job_deployment(&server).await;
        expect_deployment(&server, 43, "ec2-deploy: deploy v2").await;
        expect_status(&server, 43, "in_progress").await;
        expect_status(&server, 43, "failure").await;
    });
    let mut i = with_url(release_inputs(&bed, &repo, &suite, "v2", &parameter));
    set(&mut i, "build-args", "VERSION=v2\nHEALTH=fail");
    set(&mut i, "health-check-timeout", "3");
    let r = run(&bed, i, &[(&env[0].0, &env[0].1)]);
    assert_eq!(r.code, 1, "{}", r.log());
    rt.block_on(server.verify());
    rt.block_on(server.reset());

    // A rollback (v3 good, then back to v1): a deployment that says so, and success.
    let r = run(&bed, release_inputs(&bed, &repo, &suite, "v3", &parameter), &[]);
    assert_eq!(r.code, 0, "{}", r.log());
    rt.block_on(async {
        unexpected_requests_fail(&server).await;
        no_job_deployment(&server).await;
        expect_deployment(&server, 44, "ec2-deploy: rollback to v1").await;
        expect_status(&server, 44, "in_progress").await;
        expect_status(&server, 44, "success").await;
    });
    let mut i = with_url(release_inputs(&bed, &repo, &suite, "v3", &parameter));
    set(&mut i, "rollback", "true");
    let r = run(&bed, i, &[(&env[0].0, &env[0].1)]);
    assert_eq!(r.code, 0, "{}", r.log());
    rt.block_on(server.verify());
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some("v1"));
    }

    // GitHub refusing (no permission) is a notice, never a failed deploy.
    rt.block_on(server.reset());
    rt.block_on(async {
        Mock::given(method("POST"))
            .and(path("/repos/octo/shop/deployments"))
            .respond_with(
                ResponseTemplate::new(403)
                    .set_body_json(serde_json::json!({ "message": "Resource not accessible by integration" })),
            )
            .mount(&server)
            .await;
    });
    let r = run(&bed, release_inputs(&bed, &repo, &suite, "v3", &parameter), &[(&env[0].0, &env[0].1)]);
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(r.stdout.contains("::notice title=ec2-deploy%3A GitHub::no GitHub deployment"), "{}", r.stdout);
}

/// A job with `environment: test` already has the deployment GitHub made for it (in progress,
/// linked to the run). The run reports to that one: it creates none, and the job's deployment ends
/// with the environment URL and the final status — one deployment for the run.
#[test]
fn a_job_with_an_environment_gets_one_deployment_the_jobs_own() {
    let bed = Bed::load();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(MockServer::start());
    let suite = unique("s");
    let _web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("jobdeploy");
    bed.create_repository(&repo);
    let parameter = format!("/ec2-deploy/test/{repo}");
    rt.block_on(async {
        unexpected_requests_fail(&server).await;
        // An older deployment of the same commit by another run, then the job's own.
        Mock::given(method("GET"))
            .and(path("/repos/octo/shop/deployments"))
            .and(query_param("sha", "4b825dc642cb6eb9a060e54bf8d69288fbee4904"))
            .and(query_param("environment", "test"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([{ "id": 77 }, { "id": 12 }])))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/repos/octo/shop/deployments/77/statuses"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([
                { "state": "in_progress", "log_url": "https://github.com/octo/shop/actions/runs/1/job/31" }
            ])))
            .expect(1)
            .mount(&server)
            .await;
        expect_status(&server, 77, "in_progress").await;
        expect_status(&server, 77, "success").await;
    });
    let mut i = release_inputs(&bed, &repo, &suite, "v1", &parameter);
    set(&mut i, "environment-url", "https://shop.example.com");
    let env = github_env(&server);
    let r = run(&bed, i, &[(&env[0].0, &env[0].1)]);
    assert_eq!(r.code, 0, "{}", r.log());
    rt.block_on(server.verify());
    let sent = rt.block_on(server.received_requests()).unwrap();
    let created = sent.iter().filter(|q| q.method.as_str() == "POST" && q.url.path().ends_with("/deployments")).count();
    assert_eq!(created, 0, "the run made a second deployment");
    assert_eq!(r.outputs["deployment-id"], "77");
    assert!(r.stdout.contains("Reporting to the job's GitHub deployment 77 (test)"), "{}", r.stdout);
}

#[test]
fn the_run_order_guard_refuses_an_older_commit_on_push_but_allows_an_explicit_redeploy() {
    let bed = Bed::load();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(MockServer::start());
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("order");
    bed.create_repository(&repo);
    let parameter = format!("/ec2-deploy/test/{repo}");
    let (old, new) = ("1111111111111111111111111111111111111111", "2222222222222222222222222222222222222222");
    let dir = tempfile::tempdir().unwrap();
    let event = |name: &str, time: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, serde_json::json!({ "head_commit": { "timestamp": time } }).to_string()).unwrap();
        p.to_str().unwrap().to_string()
    };
    let new_event = event("new.json", "2026-11-25T12:00:00Z");
    let old_event = event("old.json", "2026-11-24T09:00:00Z");
    let api = server.uri();
    let push = |sha: &str, event_path: &str, with_github: bool| -> Vec<(String, String)> {
        let mut env = vec![
            ("GITHUB_SHA".to_string(), sha.to_string()),
            ("GITHUB_EVENT_NAME".into(), "push".into()),
            ("GITHUB_EVENT_PATH".into(), event_path.to_string()),
        ];
        if with_github {
            env.push(("GITHUB_API_URL".into(), api.clone()));
        }
        env
    };
    let run_env = |tag: &str, env: Vec<(String, String)>, no_token: bool| {
        let mut i = release_inputs(&bed, &repo, &suite, tag, &parameter);
        if no_token {
            i.retain(|(k, _)| k != "github-token");
        }
        let borrowed: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run(&bed, i, &borrowed)
    };

    // The live release is the newer commit (no GitHub: no token).
    let r = run_env("new", push(new, &new_event, false), true);
    assert_eq!(r.code, 0, "{}", r.log());

    // A push of the older commit, GitHub says it is behind: refused before anything moves.
    rt.block_on(async {
        Mock::given(method("GET"))
            .and(path(format!("/repos/octo/shop/compare/{new}...{old}")))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "status": "behind" })))
            .expect(1)
            .mount(&server)
            .await;
        unexpected_requests_fail(&server).await;
    });
    let r = run_env("old", push(old, &old_event, true), false);
    assert_eq!(r.code, 2, "{}", r.log());
    assert!(
        r.stdout
            .contains(&format!("this push deploys an older commit than the live release (GitHub says {old} is behind")),
        "{}",
        r.stdout
    );
    rt.block_on(server.verify());

    // Without GitHub, the commits' times decide: still refused.
    let r = run_env("old", push(old, &old_event, false), true);
    assert_eq!(r.code, 2, "{}", r.log());
    assert!(r.stdout.contains("was committed at 2026-11-24T09:00:00Z, before the live commit"), "{}", r.stdout);
    assert_eq!(version_of(&web.ips[0]).as_deref(), Some("new"));

    // An explicit redeploy of the older commit (workflow_dispatch) goes ahead.
    let mut env = push(old, &old_event, false);
    env[1].1 = "workflow_dispatch".into();
    let r = run_env("old", env, true);
    assert_eq!(r.code, 0, "{}", r.log());
    assert_eq!(version_of(&web.ips[0]).as_deref(), Some("old"));
}

#[test]
fn deploys_of_one_environment_wait_for_each_other_and_a_stale_lock_expires() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("locked");
    bed.create_repository(&repo);
    let parameter = format!("/ec2-deploy/test/{repo}");
    let lock = format!("{parameter}-lock");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let hold = |expires: u64| {
        let value = serde_json::json!({ "id": "other-run", "by": "https://github.com/octo/shop/actions/runs/99", "expires": expires }).to_string();
        bed.aws(&["ssm", "put-parameter", "--name", &lock, "--type", "String", "--overwrite", "--value", &value]);
    };

    // Another live run holds it: the deploy waits lock-timeout, then fails, having changed nothing.
    hold(now + 600);
    let tag = unique("t");
    let mut i = release_inputs(&bed, &repo, &suite, &tag, &parameter);
    set(&mut i, "lock-timeout", "3");
    let r = run(&bed, i, &[]);
    assert_eq!(r.code, 1, "{}", r.log());
    assert!(r.stdout.contains("holds the lock") && r.stdout.contains("actions/runs/99"), "{}", r.stdout);
    assert!(bed.commands_mentioning(&tag).is_empty(), "a command was sent while the lock was held");
    assert_eq!(version_of(&web.ips[0]), None);

    // Its run stopped renewing and the lease passed: taken over, deployed, released.
    hold(now - 10);
    let r = run(&bed, release_inputs(&bed, &repo, &suite, "v1", &parameter), &[]);
    assert_eq!(r.code, 0, "{}", r.log());
    assert_eq!(version_of(&web.ips[0]).as_deref(), Some("v1"));
    let released = bed.aws_json(&["ssm", "get-parameter", "--name", &lock]);
    assert!(
        released["Parameter"]["Value"].as_str().unwrap().contains(r#""state":"released""#),
        "the lock was not released: {released}"
    );

    // Two deploys at once: the second waits for the first, then deploys.
    let mut slow = release_inputs(&bed, &repo, &suite, "v2", &parameter);
    set(&mut slow, "build-args", "VERSION=v2\nHEALTH=delay:3");
    set(&mut slow, "health-check-timeout", "20");
    let borrowed: Vec<(&str, &str)> = slow.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let first = ActionRun::new(&borrowed);
    let running = first.spawn(&bed);
    super::support::wait_until("the first deploy to take the lock", std::time::Duration::from_secs(60), || {
        let out = bed.aws_output(&[
            "ssm",
            "get-parameter",
            "--name",
            &lock,
            "--query",
            "Parameter.Value",
            "--output",
            "text",
        ]);
        String::from_utf8_lossy(&out.stdout).contains(r#""state":"held""#)
    });
    let second = run(&bed, release_inputs(&bed, &repo, &suite, "v3", &parameter), &[]);
    let first = running.wait();
    assert_eq!(first.code, 0, "{}", first.log());
    assert_eq!(second.code, 0, "{}", second.log());
    assert!(second.stdout.contains("Waiting for the deploy lock: held by"), "{}", second.stdout);
    assert_eq!(version_of(&web.ips[0]).as_deref(), Some("v3"));
}

#[test]
fn a_deploy_cancelled_while_it_waits_for_the_lock_stops_at_once_and_takes_nothing() {
    use std::io::BufRead;
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("waiting");
    bed.create_repository(&repo);
    let parameter = format!("/ec2-deploy/test/{repo}");
    let lock = format!("{parameter}-lock");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let held = serde_json::json!({ "id": "other-run", "by": "https://github.com/octo/shop/actions/runs/98", "expires": now + 600 })
        .to_string();
    bed.aws(&["ssm", "put-parameter", "--name", &lock, "--type", "String", "--overwrite", "--value", &held]);

    let tag = unique("t");
    let mut i = release_inputs(&bed, &repo, &suite, &tag, &parameter);
    set(&mut i, "lock-timeout", "300");
    let borrowed: Vec<(&str, &str)> = i.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let action = ActionRun::new(&borrowed);
    let mut running = action.spawn_reading_stdout(&bed);
    // Read stdout as it comes, to signal once the run says it is waiting.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = std::io::BufReader::new(running.child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = String::new();
    while !seen.contains("Waiting for the deploy lock") {
        let line =
            lines.recv_timeout(std::time::Duration::from_secs(60)).unwrap_or_else(|_| panic!("no wait in:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
    }
    let signalled = std::time::Instant::now();
    let kill = std::process::Command::new("kill").args(["-TERM", &running.child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let r = running.wait();
    let took = signalled.elapsed();
    reader.join().unwrap();
    seen.extend(lines.try_iter().map(|l| l + "\n"));

    // It stopped well before the runner's SIGKILL (10 s after the first signal), said so, and
    // left the other run's lock, the registry and the fleet as they were.
    assert!(took < std::time::Duration::from_secs(3), "took {took:?} to stop after SIGTERM");
    assert_eq!(r.code, 1, "{seen}{}", r.stderr);
    assert_eq!(r.outputs["result"], "cancelled", "{seen}");
    assert!(r.stderr.contains("ec2-deploy: cancelled"), "{}", r.stderr);
    let lock_now = bed.aws_json(&["ssm", "get-parameter", "--name", &lock]);
    assert_eq!(lock_now["Parameter"]["Value"].as_str(), Some(held.as_str()), "the other run's lock changed");
    assert!(bed.commands_mentioning(&tag).is_empty(), "a command was sent");
    let images = bed.aws_json(&["ecr", "list-images", "--repository-name", &repo]);
    assert_eq!(images["imageIds"].as_array().map(Vec::len), Some(0), "an image was pushed: {images}");
    assert_eq!(version_of(&web.ips[0]), None);
}
