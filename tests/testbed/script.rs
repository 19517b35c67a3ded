//! The on-instance script at its edges, on real Docker engines: a daemon that does not answer, a
//! container that crash-loops under its restart policy, a script killed mid-swap with SIGKILL (as
//! the SSM agent kills at the execution timeout), and a failing container that prints its secret.

use std::time::Duration;

use super::support::{http_get, unique, wait_until, Bed};
use super::{inputs, run_with, set, version_of};

fn containers(bed: &Bed, id: &str) -> String {
    let out = bed.on_instance(id, &["docker", "ps", "--all", "--format", "{{.Names}} {{.Status}}"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_docker_daemon_that_does_not_answer_stops_the_script_before_it_changes_anything() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("nodaemon");
    bed.create_repository(&repo);
    let r = run_with(&bed, inputs(&bed, &repo, &suite, "v1", "VERSION=v1"));
    assert_eq!(r.code, 0, "{}", r.log());

    bed.testbed(&["docker-stop", &web.ids[0]]);
    let r = run_with(&bed, inputs(&bed, &repo, &suite, "v2", "VERSION=v2"));
    bed.testbed(&["docker-start", &web.ids[0]]);
    assert_eq!(r.code, 1, "{}", r.log());
    let row = r.summary.lines().find(|l| l.contains(web.ids[0].as_str())).unwrap();
    assert!(row.contains("the Docker daemon on this instance does not answer"), "{row}");
    assert!(!row.contains("ecr:GetAuthorizationToken"), "a misleading hint: {row}");
    // Nothing was removed: once the engine is back, v1 runs again by its restart policy.
    wait_until("v1 to answer again", Duration::from_secs(30), || version_of(&web.ips[0]).as_deref() == Some("v1"));
}

#[test]
fn a_container_that_crash_loops_under_its_restart_policy_is_not_healthy() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("crashloop");
    bed.create_repository(&repo);
    // No health path and no HEALTHCHECK: "healthy" is "running, without restarting".
    let bare = |tag: &str, env: &str| {
        let mut i = inputs(&bed, &repo, &suite, tag, &format!("VERSION={tag}"));
        i.retain(|(k, _)| k != "health-check-path");
        set(&mut i, "target", "bare");
        set(&mut i, "env", env);
        set(&mut i, "health-check-timeout", "12");
        i
    };
    let r = run_with(&bed, bare("v1", "A=1"));
    assert_eq!(r.code, 0, "{}", r.log());
    // It answers, then exits 2 s after each start; its restart policy brings it back each time.
    let r = run_with(&bed, bare("v2", "DEMO_HEALTH=crash:2"));
    assert_eq!(r.code, 1, "{}", r.log());
    let row = r.summary.lines().find(|l| l.contains(web.ids[0].as_str())).unwrap();
    assert!(row.contains("keeps restarting") && row.contains("the release that was running kept serving"), "{row}");
    assert_eq!(version_of(&web.ips[0]).as_deref(), Some("v1"));
}

#[test]
fn a_script_killed_mid_swap_leaves_the_previous_container_running() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("killed");
    bed.create_repository(&repo);
    let container = repo.clone();
    // Without the proxy v1 is stopped while v2 starts; with it, v1 serves throughout. Either way
    // a SIGKILL leaves v1 serving and no v2 behind.
    for proxy in ["false", "true"] {
        let mut i = inputs(&bed, &repo, &suite, "v1", "VERSION=v1");
        set(&mut i, "proxy", proxy);
        let r = run_with(&bed, i);
        assert_eq!(r.code, 0, "{}", r.log());

        // v2 takes 40 s to turn healthy: the script sits in its health wait, mid-swap.
        let mut i = inputs(&bed, &repo, &suite, "v2", "VERSION=v2\nHEALTH=delay:40");
        set(&mut i, "health-check-timeout", "60");
        set(&mut i, "command-timeout", "120");
        set(&mut i, "proxy", proxy);
        let borrowed: Vec<(&str, &str)> = i.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // The run's workspace lives as long as `action`.
        let action = super::support::ActionRun::new(&borrowed);
        let running = action.spawn(&bed);
        wait_until("v2 to start next to v1", Duration::from_secs(90), || {
            containers(&bed, &web.ids[0]).lines().any(|l| l.starts_with(&format!("{container}-next Up")))
        });
        // The agent's way at an execution timeout: SIGKILL to the script's process group.
        let pids = std::process::Command::new("pgrep").args(["-f", "ssm/.*/_script.sh"]).output().unwrap();
        let mut killed = 0;
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if String::from_utf8_lossy(&environ).contains(&format!("AWS_SSM_INSTANCE_ID={}", web.ids[0])) {
                let pgid = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
                let pgid = pgid.rsplit(") ").next().unwrap().split_whitespace().nth(2).unwrap().to_string();
                let kill = std::process::Command::new("kill")
                    .args(["-s", "KILL", "--", &format!("-{pgid}")])
                    .status()
                    .unwrap();
                killed += usize::from(kill.success());
            }
        }
        assert!(killed > 0, "no script of {} to kill", web.ids[0]);
        let r = running.wait();
        assert_eq!(r.code, 1, "{}", r.log());
        wait_until("v1 to run again", Duration::from_secs(30), || version_of(&web.ips[0]).as_deref() == Some("v1"));
        wait_until("v2 to be gone", Duration::from_secs(30), || !containers(&bed, &web.ids[0]).contains("-next"));
        let log = bed.on_instance(&web.ids[0], &["cat", &format!("/var/lib/ec2-deploy/{container}/guard.log")]);
        assert!(
            String::from_utf8_lossy(&log.stdout).contains("died mid-swap"),
            "proxy {proxy}: {}",
            String::from_utf8_lossy(&log.stdout)
        );
        let _ = bed.on_instance(&web.ids[0], &["rm", "-f", &format!("/var/lib/ec2-deploy/{container}/guard.log")]);
    }
}

#[test]
fn a_failing_container_that_prints_its_secret_shows_it_masked() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("leaky");
    bed.create_repository(&repo);
    let secret = unique("leaky/secret");
    let value = "s3cr3t-value-that-must-not-leak";
    bed.create_secret(&secret, &format!(r#"{{"SESSION_KEY": "{value}"}}"#));
    let mut i = inputs(&bed, &repo, &suite, "v1", "VERSION=v1");
    set(&mut i, "secret-id", &secret);
    let r = run_with(&bed, i.clone());
    assert_eq!(r.code, 0, "{}", r.log());
    // v2 logs its configuration, then fails its health check: its last lines are shown.
    set(&mut i, "image-tag", "v2");
    set(&mut i, "build-args", "VERSION=v2\nHEALTH=fail");
    set(&mut i, "env", "DEMO_LOG_ENV=SESSION_KEY");
    set(&mut i, "health-check-timeout", "5");
    let r = run_with(&bed, i);
    assert_eq!(r.code, 1, "{}", r.log());
    assert!(r.stdout.contains("SESSION_KEY=***"), "the container's log line is not shown masked:\n{}", r.stdout);
    for (what, text) in
        [("stdout", &r.stdout), ("stderr", &r.stderr), ("summary", &r.summary), ("outputs", &r.outputs_raw)]
    {
        assert!(!text.contains(value), "the secret's value is in the {what}");
    }
    let answer = http_get(&format!("http://{}:3000/version", web.ips[0]));
    assert_eq!(answer.map(|(_, b)| b.trim().to_string()).as_deref(), Some("v1"));
}

/// A release that fails its health check, where what ran before cannot start again (its bind
/// mount's source can no longer be made: its directory became a file): the script says why and
/// exits 16, "what ran before could not be restored". It used to stop under `set -e` at the
/// failed `docker start` (exit 1, no reason of its own).
#[test]
fn a_previous_container_that_cannot_start_again_is_reported_as_not_restored() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("norestore");
    bed.create_repository(&repo);
    // A path of the instance's Docker engine (it runs on this machine's file system).
    let dir = std::path::Path::new(bed.get("TESTBED_STATE")).join("binds").join(&repo);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/marker"), "v1").unwrap();
    let release = |tag: &str, args: &str, volumes: &str| {
        let mut i = inputs(&bed, &repo, &suite, tag, args);
        set(&mut i, "proxy", "false"); // v1 stops before v2 starts: the restore must start it
        set(&mut i, "volumes", volumes);
        set(&mut i, "health-check-timeout", "5");
        i
    };
    let r = run_with(&bed, release("v1", "VERSION=v1", &format!("{}:/marker:ro", dir.join("sub/marker").display())));
    assert_eq!(r.code, 0, "{}", r.log());

    std::fs::remove_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub"), "a file where the mount's directory was").unwrap();
    let r = run_with(&bed, release("v2", "VERSION=v2\nHEALTH=fail", ""));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r.code, 1, "{}", r.log());
    let row = r.summary.lines().find(|l| l.contains(web.ids[0].as_str())).unwrap();
    assert!(row.contains("health check, previous NOT restored"), "exit 16: {row}");
    assert!(row.contains("what ran before could not be started again") && row.contains("not a directory"), "{row}");
}
