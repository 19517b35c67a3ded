//! Rolling deploys: batches through the load balancer (haproxy following the target group) under
//! steady load, failures at each phase, rollbacks, and the by-tags rollback past max-errors.
//!
//! Instance-specific failures are made the way they happen on real hosts: a network rule on one
//! instance cuts its containers off from a dependency the new release checks (`DEMO_HEALTH=tcp:…`),
//! or a container vanishes while its health is being checked.

use std::time::{Duration, Instant};

use super::support::{unique, wait_until, ActionRun, Bed, Fleet, LbSlice, Load};
use super::{inputs, run_with, set, version_of};

/// Three instances of a suite of their own, running v1 of a new repository through the test's
/// slice of the load balancer: (fleet, its ids in batch order, repository, suite).
fn three_on_v1<'a>(bed: &'a Bed, lb: &LbSlice, name: &str) -> (Fleet<'a>, Vec<String>, String, String) {
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 3, &["Role=web"]);
    let order = sorted(&web.ids);
    let repo = unique(name);
    bed.create_repository(&repo);
    let r1 = run_with(bed, lb_inputs(bed, lb, &repo, &suite, "v1", "VERSION=v1"));
    assert_eq!(r1.code, 0, "{}", r1.log());
    (web, order, repo, suite)
}

fn lb_inputs(bed: &Bed, lb: &LbSlice, repo: &str, suite: &str, tag: &str, build_args: &str) -> Vec<(String, String)> {
    let mut i = inputs(bed, repo, suite, tag, build_args);
    set(&mut i, "target-groups", &lb.target_group_arn);
    set(&mut i, "batch-size", "1");
    // The drain path: each batch leaves the load balancer while it swaps (proxy.rs and the test
    // below cover the proxy behind the load balancer).
    set(&mut i, "proxy", "false");
    i
}

fn health(bed: &Bed, lb: &LbSlice, ids: &[String]) -> Vec<String> {
    let mut args = vec!["elbv2", "describe-target-health", "--target-group-arn", &lb.target_group_arn, "--targets"];
    let targets: Vec<String> = ids.iter().map(|id| format!("Id={id}")).collect();
    args.extend(targets.iter().map(String::as_str));
    let out = bed.aws_json(&args);
    ids.iter()
        .map(|id| {
            out["TargetHealthDescriptions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["Target"]["Id"] == id.as_str())
                .map(|d| d["TargetHealth"]["State"].as_str().unwrap().to_string())
                .unwrap_or_default()
        })
        .collect()
}

fn all_healthy(bed: &Bed, lb: &LbSlice, ids: &[String]) {
    let states = health(bed, lb, ids);
    assert!(states.iter().all(|s| s == "healthy"), "not all registered and healthy: {states:?}");
}

/// The emulated AWS endpoint's address: a dependency every instance's containers can reach, until
/// a test cuts one off.
pub(super) fn dependency(bed: &Bed) -> String {
    bed.get("AWS_ENDPOINT_URL").trim_start_matches("http://").to_string()
}

/// Rejects the instance's containers' connections to `addr`, as a network ACL on that host would.
pub(super) fn cut_off(bed: &Bed, id: &str, addr: &str) {
    let (host, port) = addr.split_once(':').unwrap();
    let out = bed
        .on_instance(id, &["iptables", "-I", "DOCKER-USER", "-d", host, "-p", "tcp", "--dport", port, "-j", "REJECT"]);
    assert!(out.status.success(), "iptables on {id}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The names of the instance's running containers of release v2 (empty until one runs).
fn v2_containers(bed: &Bed, id: &str) -> String {
    let out =
        bed.on_instance(id, &["docker", "ps", "--format", "{{.Names}}", "--filter", "label=ec2-deploy.release=v2"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sorted(ids: &[String]) -> Vec<String> {
    let mut v = ids.to_vec();
    v.sort();
    v
}

fn row<'a>(summary: &'a str, starts: &str) -> &'a str {
    summary
        .lines()
        .find(|l| l.starts_with(starts))
        .unwrap_or_else(|| panic!("no line starting {starts:?} in\n{summary}"))
}

#[test]
fn a_rolling_deploy_behind_the_load_balancer_drops_no_request() {
    let bed = Bed::load();
    let lb = bed.load_balancer();
    let (web, _, repo, suite) = three_on_v1(&bed, &lb, "rolling");
    all_healthy(&bed, &lb, &web.ids);

    let load = Load::start(&format!("{}/version", lb.url), 3);
    let started = Instant::now();
    let r2 = run_with(&bed, lb_inputs(&bed, &lb, &repo, &suite, "v2", "VERSION=v2"));
    let count = load.stop();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(r2.code, 0, "{}", r2.log());
    println!(
        "rolling deploy under load: {} requests in {seconds:.1}s, {} failed, answers {:?}",
        count.ok + count.failed,
        count.failed,
        count.bodies
    );
    assert_eq!(count.failed, 0, "requests failed during the rolling deploy: {:?}", count.failures);
    assert!(count.ok >= 5000, "only {} requests during the deploy", count.ok);
    assert!(
        count.bodies.contains_key("v1") && count.bodies.contains_key("v2"),
        "the load did not span the rollout: {:?}",
        count.bodies
    );

    for n in 1..=3 {
        assert!(row(&r2.summary, &format!("| {n} |")).contains("✅ drained, swapped, healthy"), "{}", r2.summary);
    }
    // Pulled everywhere before batch 1; where each instance's time went, and its docker commands:
    // 24 per swap with the proxy on an idle bed (2026-12-06); this ceiling catches growth.
    assert!(r2.stdout.contains("Pulled v2 on 3 instances in"), "{}", r2.log());
    let phases = r2.summary.split("### Time per phase").nth(1).unwrap_or_else(|| panic!("{}", r2.summary));
    assert!(phases.contains("| start | health |") && phases.contains("Slowest phase: "), "{phases}");
    let calls: Vec<u32> = phases
        .lines()
        .filter(|l| l.starts_with("| `i-"))
        .map(|l| l.trim_end_matches(" |").rsplit("| ").next().unwrap().trim().parse().unwrap())
        .collect();
    assert_eq!(calls.len(), 3, "{phases}");
    assert!(calls.iter().all(|&n| (1..=40).contains(&n)), "docker calls per swap: {calls:?}");
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some("v2"));
    }
    all_healthy(&bed, &lb, &web.ids);
    assert_eq!(
        r2.outputs["command-id"].split(' ').count(),
        4,
        "the pull before the first batch, one command per batch"
    );

    // With the proxy (v3 moves each instance to it, so its batches still drain; v4 does not need
    // to): no request dropped either way.
    for (tag, drained) in [("v3", true), ("v4", false)] {
        let mut i = lb_inputs(&bed, &lb, &repo, &suite, tag, &format!("VERSION={tag}"));
        set(&mut i, "proxy", "true");
        let load = Load::start(&format!("{}/version", lb.url), 3);
        let started = Instant::now();
        let r = run_with(&bed, i);
        let count = load.stop();
        assert_eq!(r.code, 0, "{}", r.log());
        println!(
            "{tag} with the proxy behind the load balancer: {} requests in {:.1}s, {} failed",
            count.ok + count.failed,
            started.elapsed().as_secs_f64(),
            count.failed
        );
        assert_eq!(count.failed, 0, "requests failed during {tag}: {:?}", count.failures);
        let expected = if drained { "✅ drained, swapped, healthy" } else { "✅ swapped behind the proxy, healthy" };
        for n in 1..=3 {
            assert!(row(&r.summary, &format!("| {n} |")).contains(expected), "{}", r.summary);
        }
        all_healthy(&bed, &lb, &web.ids);
    }
}

#[test]
fn a_failed_batch_rolls_back_itself_and_the_batches_before_it_and_leaves_the_rest() {
    let bed = Bed::load();
    let lb = bed.load_balancer();
    let (web, order, repo, suite) = three_on_v1(&bed, &lb, "batchfail");

    // v2 needs a dependency that the instance of batch 2 cannot reach.
    cut_off(&bed, &order[1], &dependency(&bed));
    let load = Load::start(&format!("{}/version", lb.url), 3);
    let mut i = lb_inputs(&bed, &lb, &repo, &suite, "v2", &format!("VERSION=v2\nHEALTH=tcp:{}", dependency(&bed)));
    set(&mut i, "health-check-timeout", "5");
    let r2 = run_with(&bed, i);
    let count = load.stop();
    assert_eq!(r2.code, 1, "{}", r2.log());
    assert_eq!(count.failed, 0, "requests failed during the failed rollout: {:?}", count.failures);

    assert!(row(&r2.summary, "| 1 |").contains("✅"), "{}", r2.summary);
    let batch2 = row(&r2.summary, "| 2 |");
    assert!(batch2.contains("❌ failed at swap") && batch2.contains(&order[1]), "{batch2}");
    assert!(row(&r2.summary, "| 3 |").contains("not started"), "{}", r2.summary);
    assert!(r2.summary.contains("### ↩️ Rolled back"), "{}", r2.summary);
    // Batch 1 went back, batch 2 put its previous container back itself, batch 3 never moved.
    for id in &order {
        let ip = &web.ips[web.ids.iter().position(|x| x == id).unwrap()];
        assert_eq!(version_of(ip).as_deref(), Some("v1"), "{id}");
    }
    let instances: serde_json::Value = serde_json::from_str(&r2.outputs["instances"]).unwrap();
    let first = instances.as_array().unwrap().iter().find(|i| i["id"] == order[0].as_str()).unwrap();
    assert_eq!(first["rollback"], "rolled-back", "{instances}");
    all_healthy(&bed, &lb, &web.ids);
    assert!(r2.stdout.contains("::error title=ec2-deploy%3A batch failed::batch 2/3 failed at swap"), "{}", r2.stdout);
}

#[test]
fn a_container_killed_mid_batch_and_a_failed_rollback_are_reported_not_hidden() {
    let bed = Bed::load();
    let lb = bed.load_balancer();
    let (web, order, repo, suite) = three_on_v1(&bed, &lb, "killed");

    // While v2 rolls: once batch 1's instance runs v2, its kept previous container is removed (so
    // its rollback cannot work); once batch 2's v2 container exists, it is killed and removed
    // before it is healthy (v2 takes 4 s to turn healthy).
    let watcher = {
        let (first, second, repo) = (order[0].clone(), order[1].clone(), repo.clone());
        std::thread::spawn(move || {
            let bed = Bed::load();
            let started = Instant::now();
            let (mut removed_previous, mut killed) = (false, false);
            let v2_on = |id: &str| v2_containers(&bed, id);
            while !(removed_previous && killed) && started.elapsed() < Duration::from_secs(90) {
                // Once v2 serves under the container's own name, v1 is the kept container.
                if !removed_previous && v2_on(&first) == repo {
                    removed_previous = bed
                        .on_instance(&first, &["docker", "rm", "--force", &format!("{repo}-previous")])
                        .status
                        .success();
                }
                let container = v2_on(&second);
                if !killed && !container.is_empty() {
                    killed = bed.on_instance(&second, &["docker", "rm", "--force", &container]).status.success();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (removed_previous, killed)
        })
    };
    let mut i = lb_inputs(&bed, &lb, &repo, &suite, "v2", "VERSION=v2\nHEALTH=delay:4");
    set(&mut i, "health-check-timeout", "20");
    let r2 = run_with(&bed, i);
    assert_eq!(watcher.join().unwrap(), (true, true), "the faults were not injected");
    assert_eq!(r2.code, 1, "{}", r2.log());
    assert_eq!(r2.outputs["result"], "failed");
    let batch2 = row(&r2.summary, "| 2 |");
    assert!(batch2.contains("failed at swap") && batch2.contains("the container disappeared"), "{batch2}");
    assert!(r2.summary.contains("### ⚠️ Rollback incomplete"), "{}", r2.summary);
    let problem = r2
        .summary
        .lines()
        .find(|l| l.starts_with(&format!("- {}", order[0])))
        .unwrap_or_else(|| panic!("{}", r2.summary));
    assert!(problem.contains("cannot roll back"), "{problem}");
    // Nothing is left without a running release: batch 1 keeps v2, the others run v1.
    let ip = |id: &String| web.ips[web.ids.iter().position(|x| x == id).unwrap()].clone();
    assert_eq!(version_of(&ip(&order[0])).as_deref(), Some("v2"));
    assert_eq!(version_of(&ip(&order[1])).as_deref(), Some("v1"));
    assert_eq!(version_of(&ip(&order[2])).as_deref(), Some("v1"));
    all_healthy(&bed, &lb, &web.ids);
}

#[test]
fn without_target_groups_past_max_errors_the_switched_instances_go_back() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 3, &["Role=web"]);
    let repo = unique("maxerrors");
    bed.create_repository(&repo);
    let r1 = run_with(&bed, inputs(&bed, &repo, &suite, "v1", "VERSION=v1"));
    assert_eq!(r1.code, 0, "{}", r1.log());
    cut_off(&bed, &web.ids[2], &dependency(&bed));
    let v2 = |max_errors: &str| {
        let mut i = inputs(&bed, &repo, &suite, "v2", &format!("VERSION=v2\nHEALTH=tcp:{}", dependency(&bed)));
        set(&mut i, "health-check-timeout", "5");
        set(&mut i, "max-concurrency", "100%");
        set(&mut i, "max-errors", max_errors);
        run_with(&bed, i)
    };

    // One failure, none allowed: the two that switched go back to v1.
    let r2 = v2("0");
    assert_eq!(r2.code, 1, "{}", r2.log());
    assert!(r2.summary.contains("### ↩️ Rolled back"), "{}", r2.summary);
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some("v1"));
    }
    let instances: serde_json::Value = serde_json::from_str(&r2.outputs["instances"]).unwrap();
    let rolled: Vec<&serde_json::Value> =
        instances.as_array().unwrap().iter().filter(|i| i["rollback"] == "rolled-back").collect();
    assert_eq!(rolled.len(), 2, "{instances}");

    // One failure, one allowed: a success with a warning; the failed instance kept v1.
    let r3 = v2("1");
    assert_eq!(r3.code, 0, "{}", r3.log());
    assert_eq!(r3.outputs["result"], "success");
    assert!(r3.summary.contains("1 failed instance(s) are within `max-errors` (1)"), "{}", r3.summary);
    assert!(
        r3.stdout.contains("::warning title=ec2-deploy::1 instance(s) failed, within max-errors (1)"),
        "{}",
        r3.stdout
    );
    assert_eq!(version_of(&web.ips[0]).as_deref(), Some("v2"));
    assert_eq!(version_of(&web.ips[1]).as_deref(), Some("v2"));
    assert_eq!(version_of(&web.ips[2]).as_deref(), Some("v1"));
}

#[test]
fn a_signal_mid_rollout_leaves_every_instance_on_a_release_and_in_the_load_balancer() {
    let bed = Bed::load();
    let lb = bed.load_balancer();
    let (web, order, repo, suite) = three_on_v1(&bed, &lb, "signal");
    let ip = |id: &String| web.ips[web.ids.iter().position(|x| x == id).unwrap()].clone();

    // v2 takes 4 s to turn healthy: the signal lands while batch 2's script waits for it.
    let mut i = lb_inputs(&bed, &lb, &repo, &suite, "v2", "VERSION=v2\nHEALTH=delay:4");
    set(&mut i, "health-check-timeout", "20");
    let borrowed: Vec<(&str, &str)> = i.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let action = ActionRun::new(&borrowed);
    let running = action.spawn(&bed);
    let v2_on = |id: &str| !v2_containers(&bed, id).is_empty();
    wait_until("batch 2 to be swapping", Duration::from_secs(90), || v2_on(&order[1]));
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill").args(["-INT", &running.child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let r = running.wait();
    let took = signalled.elapsed();
    assert!(took < Duration::from_millis(7500), "took {took:?} to stop: the runner would have sent SIGTERM");
    assert_eq!(r.code, 1, "{}", r.log());
    assert_eq!(r.outputs["result"], "cancelled");
    assert!(r.summary.contains("was cancelled"), "{}", r.summary);
    assert!(row(&r.summary, "| 2 |").contains("cancelled"), "{}", r.summary);
    assert!(row(&r.summary, "| 3 |").contains("not started"), "{}", r.summary);

    // The script left running on batch 2 finishes by itself; then every instance serves a
    // release, batch 3 was never touched, and every instance is back in the load balancer.
    wait_until("batch 2 to serve a release", Duration::from_secs(30), || version_of(&ip(&order[1])).is_some());
    assert_eq!(version_of(&ip(&order[0])).as_deref(), Some("v2"));
    assert!(matches!(version_of(&ip(&order[1])).as_deref(), Some("v1" | "v2")));
    assert_eq!(version_of(&ip(&order[2])).as_deref(), Some("v1"));
    wait_until("every instance healthy in the load balancer", Duration::from_secs(30), || {
        health(&bed, &lb, &web.ids).iter().all(|s| s == "healthy")
    });
}

#[test]
fn a_signal_during_the_rollback_of_a_failed_batch_lets_it_finish_every_instance_in_and_on_v1() {
    let bed = Bed::load();
    let lb = bed.load_balancer();
    let (web, order, repo, suite) = three_on_v1(&bed, &lb, "sigrollback");
    let ip = |id: &String| web.ips[web.ids.iter().position(|x| x == id).unwrap()].clone();
    // v2 needs a dependency; instance 2 is cut off from it: batch 2 fails, batch 1 goes back.
    let dep = dependency(&bed);
    cut_off(&bed, &order[1], &dep);
    let mut i = lb_inputs(&bed, &lb, &repo, &suite, "v2", &format!("VERSION=v2\nHEALTH=tcp:{dep}"));
    set(&mut i, "health-check-timeout", "8");
    let borrowed: Vec<(&str, &str)> = i.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let action = ActionRun::new(&borrowed);
    let mut running = action.spawn_reading_stdout(&bed);
    let stdout = std::io::BufReader::new(running.child.stdout.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    while !seen.contains("batch 1: back to the previous release") {
        let line = lines.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| panic!("no rollback in:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
    }
    // The job is cancelled while batch 1 is being rolled back.
    let kill = std::process::Command::new("kill").args(["-INT", &running.child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let r = running.wait();
    reader.join().unwrap();
    seen.extend(lines.try_iter().map(|l| l + "\n"));
    assert_eq!(r.code, 1, "{seen}{}", r.stderr);
    assert!(r.summary.contains("Rolled back"), "{}", r.summary);
    for id in &web.ids {
        assert_eq!(version_of(&ip(id)).as_deref(), Some("v1"), "{id}:\n{seen}");
    }
    wait_until("every instance registered and healthy", Duration::from_secs(30), || {
        health(&bed, &lb, &web.ids).iter().all(|s| s == "healthy")
    });
}

/// A CloudWatch alarm in moto, OK until the test says otherwise.
fn alarm(bed: &Bed, name: &str) {
    bed.aws(&[
        "cloudwatch",
        "put-metric-alarm",
        "--alarm-name",
        name,
        "--namespace",
        "Shop",
        "--metric-name",
        "5xx",
        "--statistic",
        "Sum",
        "--period",
        "60",
        "--evaluation-periods",
        "1",
        "--threshold",
        "1",
        "--comparison-operator",
        "GreaterThanThreshold",
    ]);
    set_alarm(bed, name, "OK", "no 5xx");
}

fn set_alarm(bed: &Bed, name: &str, state: &str, reason: &str) {
    bed.aws(&["cloudwatch", "set-alarm-state", "--alarm-name", name, "--state-value", state, "--state-reason", reason]);
}

#[test]
fn an_alarm_during_the_bake_of_batch_2_rolls_back_batches_1_and_2_and_leaves_batch_3() {
    let bed = Bed::load();
    let lb = bed.load_balancer();
    let (web, order, repo, suite) = three_on_v1(&bed, &lb, "bake");
    let name = unique("shop-5xx");
    alarm(&bed, &name);
    // Once batch 2's instance runs v2, the alarm goes off: batch 1's bake is over by then, and
    // the first look after it is batch 2's bake.
    let watcher = {
        let (second, name) = (order[1].clone(), name.clone());
        std::thread::spawn(move || {
            let bed = Bed::load();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(120) {
                if !v2_containers(&bed, &second).is_empty() {
                    set_alarm(&bed, &name, "ALARM", "Threshold Crossed: 5xx above 1");
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        })
    };
    let mut i = lb_inputs(&bed, &lb, &repo, &suite, "v2", "VERSION=v2");
    set(&mut i, "alarms", &format!("{name}\n{}*", &name[..name.len() - 2]));
    set(&mut i, "bake-time", "8");
    let r2 = run_with(&bed, i);
    assert!(watcher.join().unwrap(), "the alarm was never set: {}", r2.log());
    assert_eq!(r2.code, 1, "{}", r2.log());
    assert!(r2.stdout.contains(&format!("  alarms     {name} OK;")), "{}", r2.stdout);
    let batch2 = row(&r2.summary, "| 2 |");
    assert!(
        batch2.contains("failed at bake") && batch2.contains(&name) && batch2.contains("Threshold Crossed"),
        "{batch2}"
    );
    assert!(row(&r2.summary, "| 3 |").contains("not started"), "{}", r2.summary);
    assert!(r2.summary.contains("rolled back: an alarm went off"), "{}", r2.summary);
    assert!(r2.stdout.contains(&format!("batch 2/3 failed at bake: alarm {name} went into ALARM")), "{}", r2.stdout);
    for id in &order {
        let ip = &web.ips[web.ids.iter().position(|x| x == id).unwrap()];
        assert_eq!(version_of(ip).as_deref(), Some("v1"), "{id}");
    }
    all_healthy(&bed, &lb, &web.ids);

    // Still in ALARM: the next deploy stops before anything moves.
    let mut i = lb_inputs(&bed, &lb, &repo, &suite, "v3", "VERSION=v3");
    set(&mut i, "alarms", &name);
    let r3 = run_with(&bed, i);
    assert_eq!(r3.code, 2, "{}", r3.log());
    assert!(r3.stdout.contains("already in ALARM before anything moved"), "{}", r3.stdout);
    assert!(!r3.stdout.contains("Built and pushed"), "nothing may be built: {}", r3.stdout);
    bed.aws(&["cloudwatch", "delete-alarms", "--alarm-names", &name]);
}

/// An Auto Scaling launch in the middle of a 3-batch rollout: a new instance with the fleet's
/// tags boots from `examples/user-data.sh`, i.e. from the record, which still names v1. The
/// catch-up gives it v2 before the record is written, and the summary names it.
#[test]
fn an_instance_that_joins_during_a_3_batch_deploy_ends_on_the_new_release() {
    let bed = Bed::load();
    let lb = bed.load_balancer();
    let (web, order, repo, suite) = three_on_v1(&bed, &lb, "catchup");
    let parameter = format!("/ec2-deploy/test/{repo}");
    // The launch's instance, started beforehand without the fleet's role (a bed instance takes
    // seconds to start, more under load; a real launch registers with SSM early in its boot).
    let out = bed.testbed(&["add-instance", "--tag", &format!("Suite={suite}"), "--tag", "Role=spare"]);
    let id = out.split_whitespace().next().unwrap().to_string();
    // Once batch 1's instance runs v2, the launch: the instance joins the tags (at once) and runs
    // its user-data (which reads v1 from the record unless the catch-up got there first).
    let launch = {
        let (first, parameter) = (order[0].clone(), parameter.clone());
        std::thread::spawn(move || {
            let bed = Bed::load();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(120) {
                if !v2_containers(&bed, &first).is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            bed.aws(&["ec2", "create-tags", "--resources", &id, "--tags", "Key=Role,Value=web"]);
            let script =
                std::fs::read_to_string(std::path::Path::new(bed.get("TESTBED_ROOT")).join("examples/user-data.sh"))
                    .unwrap();
            let user_data = bed.put_file(&id, "user-data.sh", &script);
            // Of no Auto Scaling group: no lifecycle hook to complete.
            let boot = bed.on_instance(
                &id,
                &["env", &format!("RELEASE_PARAMETER={parameter}"), "LIFECYCLE_HOOK=", "bash", &user_data],
            );
            (id, boot)
        })
    };
    let r2 = run_with(&bed, lb_inputs(&bed, &lb, &repo, &suite, "v2", "VERSION=v2"));
    let (joined, boot) = launch.join().unwrap();
    assert!(boot.status.success(), "user-data: {}", String::from_utf8_lossy(&boot.stderr));
    assert_eq!(r2.code, 0, "{}", r2.log());
    assert!(r2.summary.contains(&format!("`{joined}` joined the tags after the plan")), "{}", r2.summary);
    assert!(row(&r2.summary, "| 4 (catch-up) |").contains(&joined), "{}", r2.summary);
    let info = bed.aws_json(&[
        "ssm",
        "describe-instance-information",
        "--filters",
        &format!("Key=InstanceIds,Values={joined}"),
    ]);
    let ip = info["InstanceInformationList"][0]["IPAddress"].as_str().unwrap().to_string();
    assert_eq!(version_of(&ip).as_deref(), Some("v2"), "the instance that joined runs the new release");
    for ip in &web.ips {
        assert_eq!(version_of(ip).as_deref(), Some("v2"));
    }
    all_healthy(&bed, &lb, &web.ids);
    bed.testbed(&["remove-instance", &joined]);
}
