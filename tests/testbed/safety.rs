//! Deploy safety on the bed: runs that race for the lock, in the wrong order, after a holder was
//! killed; limits across more than 50 instances.

use std::time::Duration;

use super::support::{unique, wait_until, ActionRun, Bed, Running};
use super::{inputs, set, version_of};

fn start(bed: &Bed, inputs: &[(String, String)], env: &[(&str, &str)]) -> (ActionRun, Running) {
    let borrowed: Vec<(&str, &str)> = inputs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut action = ActionRun::new(&borrowed);
    action.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let running = action.spawn(bed);
    (action, running)
}

fn lock_state(bed: &Bed, lock: &str) -> String {
    let out =
        bed.aws_output(&["ssm", "get-parameter", "--name", lock, "--query", "Parameter.Value", "--output", "text"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn event(dir: &std::path::Path, name: &str, time: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::json!({ "head_commit": { "timestamp": time } }).to_string()).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn an_older_push_queued_behind_a_newer_rollout_refuses_and_the_newer_stays_live() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("order");
    bed.create_repository(&repo);
    let parameter = format!("/ec2-deploy/test/{repo}");
    let dir = tempfile::tempdir().unwrap();
    let (newer, older) = ("2222222222222222222222222222222222222222", "1111111111111111111111111111111111111111");
    let run_inputs = |tag: &str, health: &str| {
        let mut i = inputs(&bed, &repo, &suite, tag, &format!("VERSION={tag}\nHEALTH={health}"));
        set(&mut i, "release-parameter", &parameter);
        set(&mut i, "health-check-timeout", "30");
        i.retain(|(k, _)| k != "github-token");
        i
    };
    let newer_event = event(dir.path(), "newer.json", "2026-11-25T12:00:00Z");
    let older_event = event(dir.path(), "older.json", "2026-11-24T09:00:00Z");
    // The newer commit rolls out (its release takes 6 s to turn healthy) ...
    let (_a, first) = start(
        &bed,
        &run_inputs("newer", "delay:6"),
        &[("GITHUB_SHA", newer), ("GITHUB_EVENT_NAME", "push"), ("GITHUB_EVENT_PATH", &newer_event)],
    );
    let lock = format!("{parameter}-lock");
    wait_until("the newer run to hold the lock", Duration::from_secs(120), || {
        lock_state(&bed, &lock).contains(r#""state":"held""#)
    });
    // ... and a push of an older commit arrives meanwhile: it waits for the lock, then plans.
    let (_b, second) = start(
        &bed,
        &run_inputs("older", "ok"),
        &[("GITHUB_SHA", older), ("GITHUB_EVENT_NAME", "push"), ("GITHUB_EVENT_PATH", &older_event)],
    );
    let (first, second) = (first.wait(), second.wait());
    assert_eq!(first.code, 0, "{}", first.log());
    assert_eq!(second.code, 2, "{}", second.log());
    assert!(second.stdout.contains("Waiting for the deploy lock"), "{}", second.stdout);
    assert!(second.stdout.contains("this push deploys an older commit than the live release"), "{}", second.stdout);
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some("newer"));
    }
    let live = bed.aws_json(&["ssm", "get-parameter", "--name", &parameter]);
    let record: serde_json::Value = serde_json::from_str(live["Parameter"]["Value"].as_str().unwrap()).unwrap();
    assert_eq!(record["commit"], newer);
}

/// When each of a run's commands was requested and when its last invocation ended.
fn command_windows(bed: &Bed, tag: &str) -> Vec<(f64, f64)> {
    bed.commands_mentioning(&format!(" {tag} "))
        .iter()
        .map(|c| {
            let id = c["CommandId"].as_str().unwrap();
            let invs = bed.aws_json(&["ssm", "list-command-invocations", "--command-id", id, "--details"]);
            let time = |v: &serde_json::Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
            let start = time(&c["RequestedDateTime"]).unwrap_or_else(|| panic!("{c}"));
            let end = invs["CommandInvocations"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|i| time(&i["CommandPlugins"][0]["ResponseFinishDateTime"]))
                .fold(start, f64::max);
            (start, end)
        })
        .collect()
}

#[test]
fn after_a_killed_holder_four_runs_never_deploy_at_once() {
    let bed = Bed::load();
    let suite = unique("s");
    let _web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let repo = unique("race");
    bed.create_repository(&repo);
    let parameter = format!("/ec2-deploy/test/{repo}");
    let lease = [("EC2_DEPLOY_LOCK_LEASE", "8")];
    let run_inputs = |tag: &str| {
        let mut i = inputs(&bed, &repo, &suite, tag, &format!("VERSION={tag}\nHEALTH=delay:2"));
        set(&mut i, "release-parameter", &parameter);
        set(&mut i, "lock-timeout", "300");
        set(&mut i, "health-check-timeout", "20");
        i
    };
    // A holder that is killed (SIGKILL: no release, no more renewals) while it deploys.
    let (_h, mut holder) = start(&bed, &run_inputs(&unique("dead")), &lease);
    let lock = format!("{parameter}-lock");
    wait_until("the holder to take the lock", Duration::from_secs(120), || {
        lock_state(&bed, &lock).contains(r#""state":"held""#)
    });
    holder.child.kill().unwrap();
    let _ = holder.wait();
    // Once its lease (8 s) has lapsed, four runs start together.
    std::thread::sleep(Duration::from_secs(9));
    let tags: Vec<String> = (1..=4).map(|n| unique(&format!("r{n}"))).collect();
    let runs: Vec<_> = tags.iter().map(|t| start(&bed, &run_inputs(t), &lease)).collect();
    let results: Vec<_> = runs.into_iter().map(|(_a, r)| r.wait()).collect();
    for r in &results {
        assert!(
            r.code == 0 || (r.code == 1 && r.stdout.contains("holds the lock")),
            "a run neither deployed nor failed naming the lock:\n{}",
            r.log()
        );
    }
    assert!(results.iter().any(|r| r.code == 0));
    // Never two deploys on the fleet at once: the runs' command windows do not overlap.
    let mut windows: Vec<(f64, f64, &str)> = vec![];
    for t in &tags {
        windows.extend(command_windows(&bed, t).into_iter().map(|(s, e)| (s, e, t.as_str())));
    }
    assert!(windows.len() >= 2 && windows.iter().all(|(s, e, _)| e > s), "{windows:?}");
    windows.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    for pair in windows.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two deploys overlapped: {pair:?}");
    }
}

#[test]
fn over_fifty_instances_max_concurrency_holds_for_the_whole_fleet() {
    let bed = Bed::load();
    let suite = unique("many");
    // 61 instances whose agents take each command and succeed after a moment (the scale
    // benchmark's simulated agents); one of them offline, so the deploy goes by instance id.
    let agents = bed.local_agents(&suite, 61);
    bed.set_local_agent_offline(&agents.ids[60]);
    let repo = unique("many");
    bed.create_repository(&repo);
    let tag = unique("t");
    let mut i = inputs(&bed, &repo, &suite, &tag, "VERSION=v1");
    i.retain(|(k, _)| !matches!(k.as_str(), "health-check-path" | "ports"));
    set(&mut i, "on-offline", "skip");
    set(&mut i, "max-concurrency", "10");
    let (_a, run) = start(&bed, &i, &[]);
    let r = run.wait();
    assert_eq!(r.code, 0, "{}", r.log());
    let commands = bed.commands_mentioning(&format!(" {tag} deploy"));
    assert_eq!(commands.len(), 2, "60 instances by id: two commands, one after the other");
    let counts = bed.in_progress(commands[0]["Comment"].as_str().unwrap());
    assert!(counts["peak"].as_u64().unwrap() <= 10, "{counts}");
    assert!(counts["peak"].as_u64().unwrap() >= 2, "nothing ran at once: {counts}");
    let instances: serde_json::Value = serde_json::from_str(&r.outputs["instances"]).unwrap();
    assert_eq!(instances.as_array().unwrap().len(), 60);
}

/// Scale-in during a deploy (#26): one instance of three is terminated while the first runs its
/// swap (one at a time). It is named as having left, the other two end on v2, nothing rolls
/// back, and the release is recorded. The fake world's test orders the same calls exactly; here
/// the instance goes once the deploy's first invocation runs and the last one still waits.
#[test]
fn an_instance_terminated_during_a_deploy_left_the_fleet_and_the_others_get_the_release() {
    let bed = Bed::load();
    let suite = unique("s");
    let mut web = bed.fleet_in(&suite, 3, &["Role=web"]);
    let repo = unique("scalein");
    bed.create_repository(&repo);
    let (_a, first) = start(&bed, &inputs(&bed, &repo, &suite, "v1", "VERSION=v1"), &[]);
    let first = first.wait();
    assert_eq!(first.code, 0, "{}", first.log());
    // v2 takes 2 s to turn healthy: each instance's turn lasts that long at least. Its tag is
    // this test's alone, so the command's comment finds it at once among every test's.
    let tag = unique("v2");
    let mut v2 = inputs(&bed, &repo, &suite, &tag, "VERSION=v2\nHEALTH=delay:2");
    set(&mut v2, "max-concurrency", "1");
    let (_b, second) = start(&bed, &v2, &[]);
    let mut gone = String::new();
    wait_until("the deploy's first instance to run its script", Duration::from_secs(180), || {
        for command in bed.commands_mentioning(&format!(" {tag} deploy")) {
            let id = command["CommandId"].as_str().unwrap();
            let invs = bed.aws_json(&["ssm", "list-command-invocations", "--command-id", id]);
            let invs = invs["CommandInvocations"].as_array().unwrap();
            let ours = |i: &&serde_json::Value| web.ids.iter().any(|w| i["InstanceId"] == w.as_str());
            if invs.iter().filter(ours).count() != 3 || invs.iter().all(|i| i["Status"] == "Pending") {
                continue;
            }
            if let Some(last) = invs.iter().rev().find(|i| i["Status"] == "Pending") {
                gone = last["InstanceId"].as_str().unwrap().to_string();
                return true;
            }
        }
        false
    });
    // Terminated at once, as Auto Scaling does (EC2 first; the bed's engine and namespace for it
    // go after the run: stopping them takes seconds, more under load).
    bed.aws(&["ec2", "terminate-instances", "--instance-ids", &gone]);
    let r = second.wait();
    bed.testbed(&["remove-instance", &gone]);
    let at = web.ids.iter().position(|i| *i == gone).unwrap();
    web.ids.remove(at);
    web.ips.remove(at);
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(r.stdout.contains(&format!("{gone} left the fleet during the run")), "{}", r.log());
    let row = r.summary.lines().find(|l| l.contains(&gone) && l.contains("🚪 Left the fleet"));
    assert!(row.is_some(), "{}", r.summary);
    assert!(!r.summary.contains("Rolled back"), "{}", r.summary);
    let instances: serde_json::Value = serde_json::from_str(&r.outputs["instances"]).unwrap();
    let left: Vec<&str> = instances
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["left"].is_string())
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [gone.as_str()]);
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some("v2"));
    }
}
