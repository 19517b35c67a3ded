//! Drift: `ec2-deploy status` asks every instance of the environment which release it runs (a
//! read-only command through the bed's SSM), `--fail-on-drift` fails on the ones that differ, and
//! `converge: true` puts the live release back on those only.

use ec2_deploy_action::instance::SCRIPT;

use super::support::{unique, wait_until, Bed};
use super::{inputs, operate, run_with, set, started_at, version_of};

/// `ec2-deploy status` for the suite's web instances, as a scheduled workflow runs it.
fn status(bed: &Bed, repo: &str, suite: &str, extra: &[&str]) -> (i32, String, String) {
    operate(bed, "status", repo, suite, extra)
}

#[test]
fn status_lists_an_instance_put_back_on_the_previous_release_and_converge_fixes_it_alone() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 3, &["Role=web"]);
    let repo = unique("drift");
    bed.create_repository(&repo);
    for tag in ["v1", "v2"] {
        let r = run_with(&bed, inputs(&bed, &repo, &suite, tag, &format!("VERSION={tag}")));
        assert_eq!(r.code, 0, "{}", r.log());
    }
    let container = &repo;
    let parameter = format!("/ec2-deploy/test/{container}");

    // Someone puts instance 2 back on v1 by hand: v1's recorded header and the same script, run
    // on the instance (as a stale boot or a copied command would).
    let history = bed.aws_json(&["ssm", "get-parameter-history", "--name", &parameter]);
    let v1: serde_json::Value = serde_json::from_str(history["Parameters"][0]["Value"].as_str().unwrap()).unwrap();
    let script = bed.put_file(&web.ids[1], "v1.sh", &format!("{}{SCRIPT}", v1["header"].as_str().unwrap()));
    let by_hand = bed.on_instance(&web.ids[1], &["bash", &script]);
    assert!(by_hand.status.success(), "{}", String::from_utf8_lossy(&by_hand.stderr));
    let versions = |ips: &[String]| ips.iter().map(|ip| version_of(ip).unwrap_or_default()).collect::<Vec<_>>();
    assert_eq!(versions(&web.ips), ["v2", "v1", "v2"]);

    // status: instance 2 listed as drifted, with the release it runs; the others on the live one.
    let (code, out, err) = status(&bed, &repo, &suite, &["--fail-on-drift"]);
    assert_eq!(code, 1, "--fail-on-drift exits 1\n{out}\n{err}");
    assert!(out.contains(&format!("{parameter}: live release v2 (version 2)")), "{out}");
    assert!(out.contains("3, 1 drifted from the live release v2"), "{out}");
    // Where the live release's deploy spent its time, at each phase's slowest instance.
    let took = out.lines().find(|l| l.starts_with("  took    ")).unwrap_or_else(|| panic!("{out}"));
    assert!(
        took.contains("s in all") && took.contains("per phase, at its slowest instance: ") && took.contains(" health "),
        "{took}"
    );
    let line = |id: &str| out.lines().find(|l| l.trim_start().starts_with(id)).unwrap_or_default().to_string();
    assert!(line(&web.ids[1]).contains("drifted: another release (runs v1:"), "{out}");
    for id in [&web.ids[0], &web.ids[2]] {
        assert!(line(id).contains("on the live release"), "{out}");
    }
    assert!(err.contains(&format!("1 instance(s) do not run the live release: {}", web.ids[1])), "{err}");
    // `releases`: the same history, and no instance asked.
    let (code, out, err) = operate(&bed, "releases", &repo, &suite, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("{parameter}: live release v2 (version 2)")), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("1  v1 ")), "{out}");
    assert!(!out.contains("instances with tags") && !out.contains("Asking"), "{out}");
    // The check changed nothing, and without the flag the same listing exits 0.
    assert_eq!(versions(&web.ips), ["v2", "v1", "v2"]);
    let (code, out, _) = status(&bed, &repo, &suite, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 instance(s) drifted"), "{out}");

    // converge: the live release on instance 2 only; the others are not even restarted.
    let started: Vec<String> = web.ids.iter().map(|id| started_at(&bed, id, container)).collect();
    let mut i = inputs(&bed, &repo, &suite, "ignored-by-converge", "VERSION=ignored");
    set(&mut i, "converge", "true");
    let r = run_with(&bed, i);
    assert_eq!(r.code, 0, "{}", r.log());
    assert!(r.stdout.contains("Plan: converge"), "{}", r.stdout);
    assert!(!r.stdout.contains("Build and push"), "a converge built an image:\n{}", r.stdout);
    let deployed: Vec<serde_json::Value> = serde_json::from_str(&r.outputs["instances"]).unwrap();
    assert_eq!(deployed.len(), 1, "{deployed:?}");
    assert_eq!(deployed[0]["id"], web.ids[1].as_str());
    assert_eq!(r.outputs["release-version"], "2", "the record names v2 already");
    assert!(r.summary.contains("Converge: 1 of 3 instance(s) ran something else"), "{}", r.summary);
    assert_eq!(versions(&web.ips), ["v2", "v2", "v2"]);
    for n in [0, 2] {
        assert_eq!(started_at(&bed, &web.ids[n], container), started[n], "{} was restarted", web.ids[n]);
    }
    let history = bed.aws_json(&["ssm", "get-parameter-history", "--name", &parameter]);
    assert_eq!(history["Parameters"].as_array().unwrap().len(), 2, "no new version");

    let (code, out, err) = status(&bed, &repo, &suite, &["--fail-on-drift"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("3, 0 drifted from the live release v2"), "{out}");
}

/// The check (`MODE=check`, what `status` sends) on a real engine, through each way an instance
/// can leave the live release: the secret's values rotated, the proxy stopped, the container
/// stopped, the container gone. It changes nothing itself: each state stays until fixed.
#[test]
fn the_check_tells_each_way_an_instance_leaves_the_release_and_changes_nothing() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 1, &["Role=web"]);
    let (id, ip) = (&web.ids[0], &web.ips[0]);
    let repo = unique("check");
    bed.create_repository(&repo);
    let secret = unique("drift-secret");
    bed.create_secret(&secret, r#"{"TOKEN":"first"}"#);
    let mut i = inputs(&bed, &repo, &suite, "v1", "VERSION=v1");
    set(&mut i, "secret-id", &secret);
    let r = run_with(&bed, i);
    assert_eq!(r.code, 0, "{}", r.log());
    let container = repo.as_str();
    let parameter = format!("/ec2-deploy/test/{container}");
    let record: serde_json::Value = serde_json::from_str(&bed.aws(&[
        "ssm",
        "get-parameter",
        "--name",
        &parameter,
        "--query",
        "Parameter.Value",
        "--output",
        "text",
    ]))
    .unwrap();
    let check = ec2_deploy_action::instance::check_script(record["header"].as_str().unwrap()).unwrap();
    let path = bed.put_file(id, "check.sh", &check);
    let state = || {
        let out = bed.on_instance(id, &["bash", &path]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(!stdout.contains("first") && !stdout.contains("second"), "a secret value in the output: {stdout}");
        stdout.lines().last().unwrap_or_default().split_whitespace().nth(1).unwrap_or_default().to_string()
    };
    assert_eq!(state(), "state=current");
    bed.aws(&[
        "secretsmanager",
        "put-secret-value",
        "--secret-id",
        &secret,
        "--secret-string",
        r#"{"TOKEN":"second"}"#,
    ]);
    assert_eq!(state(), "state=other-settings", "the container still has the old secret value");
    assert_eq!(state(), "state=other-settings", "and the check did not change that");
    bed.aws(&["secretsmanager", "put-secret-value", "--secret-id", &secret, "--secret-string", r#"{"TOKEN":"first"}"#]);
    assert_eq!(state(), "state=current");
    let proxy = format!("ec2-deploy-proxy-{container}");
    assert!(bed.on_instance(id, &["docker", "stop", &proxy]).status.success());
    assert_eq!(state(), "state=proxy-down");
    assert!(bed.on_instance(id, &["docker", "start", &proxy]).status.success());
    assert_eq!(state(), "state=current");
    // The app's process dies (killed from outside, as the kernel's OOM killer would): Docker
    // starts it again under its restart policy. Between crashes a crash loop runs: the check
    // says restarting, with the count, for 300 s after a restart.
    let inspect = |format: &str| {
        let out = bed.on_instance(id, &["docker", "inspect", "--format", format, container]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let pid = inspect("{{.State.Pid}}");
    assert!(bed.on_instance(id, &["kill", "-KILL", &pid]).status.success());
    wait_until("Docker restarts the container", std::time::Duration::from_secs(30), || {
        inspect("{{.RestartCount}} {{.State.Running}}") == "1 true"
    });
    assert_eq!(state(), "state=restarting");
    let out = bed.on_instance(id, &["bash", &path]);
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    assert!(line.ends_with(" restarts=1 exit=- maintenance=off"), "running again, so no exit code: {line}");
    assert!(bed.on_instance(id, &["docker", "stop", container]).status.success());
    assert_eq!(state(), "state=stopped");
    assert_eq!(version_of(ip), None, "still stopped: the check starts nothing");
    assert!(bed.on_instance(id, &["docker", "rm", container]).status.success());
    assert_eq!(state(), "state=missing");
}
