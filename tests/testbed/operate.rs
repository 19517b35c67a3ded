//! Operating the service without SSH: `ec2-deploy logs` reads each instance's container log
//! through the bed's SSM (a read-only Run Command), with the release's secret masked on the
//! instance, and says when SSM's output limit cut what it had; `ec2-deploy exec` runs a one-off
//! command in a new container of the live release, beside the serving one.

use super::support::{unique, Bed};
use super::{inputs, operate, run_with, set, version_of};

#[test]
fn logs_show_each_instances_last_lines_with_the_secret_masked_and_say_when_ssm_cut_them() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("logs");
    bed.create_repository(&repo);
    let secret = unique("logs/secret");
    let value = unique("s3cr3t-never-shown");
    bed.create_secret(&secret, &format!(r#"{{"SESSION_KEY": "{value}"}}"#));
    // The app prints (stdout) thirty lines of 1,000 characters (30 KB, past the 24,000 characters
    // SSM returns), then its secret's value; and (stderr) that it listens: Docker stamps the two
    // streams as it reads them, so that line may come before or after the others. (One value of
    // 30 KB would not do: `env` is recorded with the release, which must fit in 8 KB.)
    let big = "x".repeat(1000);
    let mut i = inputs(&bed, &repo, &suite, "v1", "VERSION=v1");
    set(&mut i, "secret-id", &secret);
    let names = format!("{}SESSION_KEY", "BIG,".repeat(30));
    set(&mut i, "env", &format!("BIG={big}\nDEMO_LOG_ENV={names}"));
    let r = run_with(&bed, i);
    assert_eq!(r.code, 0, "{}", r.log());

    // The newest two lines of each instance, prefixed with its id, the value masked: the
    // secret's line is one of them, wherever the stderr line fell.
    let (code, out, err) = operate(&bed, "logs", &repo, &suite, &["--lines", "2"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for id in &web.ids {
        let mine: Vec<&str> = out.lines().filter(|l| l.starts_with(&format!("{id} | "))).collect();
        assert_eq!(mine.len(), 2, "{id} did not show its last 2 lines:\n{out}");
        assert!(mine.iter().any(|l| l.ends_with(" SESSION_KEY=***")), "{out}");
    }
    assert!(!out.contains("cut:"), "{out}");

    // The same from a workflow step (input `operation`): in the log as untrusted text, and in
    // the job summary; the step's inputs stand for the flags.
    let mut step = inputs(&bed, &repo, &suite, "v1", "VERSION=v1");
    set(&mut step, "secret-id", &secret);
    set(&mut step, "operation", "logs");
    set(&mut step, "operation-args", "--lines 2");
    let s = run_with(&bed, step);
    assert_eq!(s.code, 0, "{}", s.log());
    assert!(s.summary.starts_with("## ✅ ec2-deploy logs --lines 2: exit 0"), "{}", s.summary);
    assert!(s.stdout.contains("::stop-commands::"), "{}", s.stdout);
    assert_eq!(s.outputs["result"], "success");
    for id in &web.ids {
        assert_eq!(s.summary.lines().filter(|l| l.starts_with(&format!("{id} | "))).count(), 2, "{}", s.summary);
    }
    for text in [&s.stdout, &s.summary] {
        assert!(!text.contains(&value), "the secret's value is shown:\n{text}");
    }

    // All 32 lines do not fit: the newest that do are shown, and the cut is said.
    let (code, out, err) = operate(&bed, "logs", &repo, &suite, &["--lines", "100"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for id in &web.ids {
        let mine: Vec<&str> = out.lines().filter(|l| l.starts_with(&format!("{id} | "))).collect();
        assert!(mine.len() < 32 && mine.len() >= 20, "{} lines shown:\n{out}", mine.len());
        assert!(mine.iter().any(|l| l.ends_with(" SESSION_KEY=***")), "a newest line was cut:\n{out}");
        assert!(out.contains(&format!("only the newest {} of 32 lines are shown", mine.len())), "{out}");
    }
    for text in [&out, &err] {
        assert!(!text.contains(&value), "the secret's value is shown:\n{text}");
    }

    // An instance whose container is gone answers so, and the command exits 1 naming it.
    let rm = bed.on_instance(&web.ids[1], &["docker", "rm", "--force", &repo]);
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    let (code, out, err) = operate(&bed, "logs", &repo, &suite, &["--lines", "2"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains(&format!("{} | ", web.ids[0])), "{out}");
    assert!(out.contains(&format!("{} (", web.ids[1])) && out.contains("no logs:"), "{out}");
    assert!(err.contains(&format!("no logs from 1 instance(s): {}", web.ids[1])), "{err}");

    // Bad input: exit 2 naming the flag, before any call.
    let (code, _, err) = operate(&bed, "logs", &repo, &suite, &["--lines", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--lines"), "{err}");
}

#[test]
fn exec_runs_a_one_off_in_the_live_release_and_leaves_the_serving_container_alone() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("exec");
    bed.create_repository(&repo);
    let secret = unique("exec/secret");
    let value = unique("s3cr3t-exec");
    bed.create_secret(&secret, &format!(r#"{{"SESSION_KEY": "{value}"}}"#));
    let mut i = inputs(&bed, &repo, &suite, "v1", "VERSION=v1");
    set(&mut i, "secret-id", &secret);
    set(&mut i, "env", "DEMO_LOG_ENV=SESSION_KEY");
    let r = run_with(&bed, i);
    assert_eq!(r.code, 0, "{}", r.log());
    let serving = |id: &str| {
        let out = bed.on_instance(id, &["docker", "inspect", "--format", "{{.Id}} {{.State.StartedAt}}", &repo]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let before: Vec<String> = web.ids.iter().map(|id| serving(id)).collect();
    let mut ids = web.ids.clone();
    ids.sort();

    // By default on the first instance (by id): the release's environment and secret (masked),
    // the command's output and exit code; a failure exits 1 naming the instance.
    let (code, out, err) = operate(&bed, "exec", &repo, &suite, &["--", "--exit", "3"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains(&format!("==> {} (", ids[0])) && out.contains("exit code 3"), "{out}");
    assert!(out.contains(&format!("{} | SESSION_KEY=***", ids[0])), "{out}");
    assert!(out.contains(&format!("{} | demo-app: migration 7 failed, exiting with 3 as asked", ids[0])), "{out}");
    assert!(!out.contains(&format!("{} | ", ids[1])), "it ran on one instance only:\n{out}");
    assert!(err.contains(&format!("did not exit 0 on 1 instance(s): {}", ids[0])), "{err}");

    // On every instance: both exit 0.
    let (code, out, err) = operate(&bed, "exec", &repo, &suite, &["--all", "--", "--exit", "0"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for id in &ids {
        assert!(out.contains(&format!("{id} | demo-app: migration 7 failed, exiting with 0 as asked")), "{out}");
    }
    for text in [&out, &err] {
        assert!(!text.contains(&value), "the secret's value is shown:\n{text}");
    }

    // The serving containers are the same ones, never restarted; no one-off container is left.
    let after: Vec<String> = web.ids.iter().map(|id| serving(id)).collect();
    assert_eq!(before, after, "a serving container was replaced or restarted");
    for (id, ip) in web.ids.iter().zip(&web.ips) {
        let names = bed.on_instance(id, &["docker", "ps", "--all", "--format", "{{.Names}}"]);
        let names = String::from_utf8_lossy(&names.stdout).to_string();
        assert!(!names.lines().any(|n| n == format!("{repo}-exec")), "{names}");
        assert_eq!(version_of(ip).as_deref(), Some("v1"));
    }

    // Bad input: exit 2, nothing run.
    let (code, _, err) = operate(&bed, "exec", &repo, &suite, &[]);
    assert_eq!(code, 2, "no command: {err}");
    let (code, _, err) =
        operate(&bed, "exec", &repo, &suite, &["--instance", "i-0123456789abcdef0", "--", "--exit", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("i-0123456789abcdef0 is not among the instances with the targets"), "{err}");
}

/// `logs --grep`, `--since`, `--instance` (by Name tag) and `--follow` on real containers: each
/// narrows what is shown to what was asked, and `--follow` prints a line the app prints after it
/// started, once, and stops at Ctrl-C with exit 0.
#[test]
fn logs_narrow_by_pattern_time_and_instance_and_follow_new_lines_until_interrupted() {
    use std::io::BufRead;
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("logq");
    bed.create_repository(&repo);
    let r = run_with(&bed, inputs(&bed, &repo, &suite, "v1", "VERSION=v1"));
    assert_eq!(r.code, 0, "{}", r.log());
    let say = |ip: &str, text: &str| {
        let answer = super::support::http_get(&format!("http://{ip}:3000/log?text={text}"));
        assert_eq!(answer.map(|(s, _)| s), Some(200), "{text}");
    };
    let shown = |out: &str, id: &str| -> Vec<String> {
        out.lines().filter(|l| l.starts_with(&format!("{id} | "))).map(str::to_string).collect()
    };
    let before = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let marker = unique("marker");
    say(&web.ips[0], &marker);

    // --grep: the matching lines only, from each instance.
    let (code, out, err) = operate(&bed, "logs", &repo, &suite, &["--grep", "marker-[0-9]+"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(shown(&out, &web.ids[0]).len(), 1, "{out}");
    assert!(shown(&out, &web.ids[0])[0].ends_with(&format!(" {marker}")), "{out}");
    assert!(shown(&out, &web.ids[1]).is_empty(), "{out}");
    // --since: what came after that time (the marker alone).
    let since = (before + jiff::SignedDuration::from_millis(1050)).to_string();
    let (code, out, err) = operate(&bed, "logs", &repo, &suite, &["--since", &since]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(shown(&out, &web.ids[0]).len(), 1, "{out}");
    assert!(shown(&out, &web.ids[1]).is_empty(), "{out}");
    // --instance by its Name tag: that instance alone.
    let names = bed.aws_json(&[
        "ec2",
        "describe-tags",
        "--filters",
        &format!("Name=resource-id,Values={}", web.ids[1]),
        "Name=key,Values=Name",
    ]);
    let name = names["Tags"][0]["Value"].as_str().expect("a Name tag").to_string();
    let (code, out, err) = operate(&bed, "logs", &repo, &suite, &["--instance", &name, "--lines", "3"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!shown(&out, &web.ids[1]).is_empty() && shown(&out, &web.ids[0]).is_empty(), "{out}");
    // Bad input names the flag and asks nothing.
    for (flag, value) in [("--since", "yesterday"), ("--instance", "no-such-name")] {
        let (code, _, err) = operate(&bed, "logs", &repo, &suite, &[flag, value]);
        assert_eq!(code, 2, "{flag}: {err}");
        assert!(err.contains(flag), "{err}");
    }

    // --follow: a line printed after it started comes once, then Ctrl-C ends it with 0.
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_ec2-deploy"))
        .args(["logs", "--environment", "test", "--ecr-repository", &repo, "--targets", &format!("Suite={suite}")])
        .args(["--targets", "Role=web", "--instance", &web.ids[0], "--follow", "--lines", "5"])
        .envs(["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].map(|k| (k, bed.get(k))))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = std::io::BufReader::new(follow.stdout.take().unwrap());
    let reader = std::thread::spawn(move || stdout.lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    let mut seen = vec![];
    let mut wait_for = |what: &dyn Fn(&str) -> bool, secs: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            seen.push(line.clone());
            if what(&line) {
                return true;
            }
        }
        false
    };
    assert!(wait_for(&|l: &str| l.ends_with(&format!(" {marker}")), 30), "the first ask:\n{seen:#?}");
    let later = unique("later");
    say(&web.ips[0], &later);
    assert!(wait_for(&|l: &str| l.ends_with(&format!(" {later}")), 30), "no new line:\n{seen:#?}");
    // Another ask: nothing is printed twice.
    wait_for(&|_: &str| false, 6);
    let kill = std::process::Command::new("kill").args(["-INT", &follow.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = follow.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{seen:#?}");
    for word in [&marker, &later] {
        assert_eq!(seen.iter().filter(|l| l.ends_with(&format!(" {word}"))).count(), 1, "{word}:\n{seen:#?}");
    }
}

/// The whole HTTP answer (status line, headers, body) to a GET of `path` on port 3000.
fn raw_get(ip: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((ip, 3000)).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// `maintenance on`: each request gets 503 with the page and `Retry-After`, while the app keeps
/// running untouched (same container, not restarted) and its health path still answers; `off`
/// brings the app back. `--fail-health` fails the health path too, `--instance` asks one
/// instance, and a deploy ends maintenance.
#[test]
fn maintenance_puts_a_page_in_front_of_the_running_app_and_takes_it_away() {
    let bed = Bed::load();
    let suite = unique("s");
    let web = bed.fleet_in(&suite, 2, &["Role=web"]);
    let repo = unique("maint");
    bed.create_repository(&repo);
    let r = run_with(&bed, inputs(&bed, &repo, &suite, "v1", "VERSION=v1"));
    assert_eq!(r.code, 0, "{}", r.log());
    let started = |id: &str| {
        let out = bed.on_instance(id, &["docker", "inspect", "--format", "{{.Id}} {{.State.StartedAt}}", &repo]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let before: Vec<String> = web.ids.iter().map(|id| started(id)).collect();
    let pages = |id: &str| {
        let out = bed.on_instance(id, &["docker", "ps", "--all", "--format", "{{.Names}}"]);
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("ec2-deploy-maintenance-")).count()
    };

    let (code, out, err) =
        operate(&bed, "maintenance", &repo, &suite, &["on", "--message", "Back at 14:00", "--retry-after", "120"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for (id, ip) in web.ids.iter().zip(&web.ips) {
        assert!(out.contains(id.as_str()) && out.matches("maintenance on").count() == 2, "{out}");
        let page = raw_get(ip, "/version");
        assert!(page.starts_with("HTTP/1.1 503"), "{page}");
        assert!(page.to_ascii_lowercase().contains("retry-after: 120"), "{page}");
        assert!(page.ends_with("\r\n\r\nBack at 14:00"), "{page}");
        assert_eq!(super::support::http_get(&format!("http://{ip}:3000/health")).map(|(s, _)| s), Some(200));
    }
    assert_eq!(web.ids.iter().map(|id| started(id)).collect::<Vec<_>>(), before, "the app was touched");
    // `status` says so, per instance (the live release still runs there: not drifted).
    let (code, out, err) = operate(&bed, "status", &repo, &suite, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    for id in &web.ids {
        // Its last line: the survey's (the command's progress lines name it too).
        let line = out.lines().rfind(|l| l.contains(id.as_str())).unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains("on the live release; maintenance page on"), "{out}");
    }

    let (code, out, err) = operate(&bed, "maintenance", &repo, &suite, &["off"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for (id, ip) in web.ids.iter().zip(&web.ips) {
        assert_eq!(version_of(ip).as_deref(), Some("v1"));
        assert_eq!(pages(id), 0, "{id}: the page's container is left");
    }

    // One instance, its health path failing too; then a deploy ends it.
    let (code, out, err) =
        operate(&bed, "maintenance", &repo, &suite, &["on", "--fail-health", "--instance", &web.ids[0]]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(raw_get(&web.ips[0], "/health").starts_with("HTTP/1.1 503"));
    assert_eq!(version_of(&web.ips[1]).as_deref(), Some("v1"), "the other instance was changed");
    let r = run_with(&bed, inputs(&bed, &repo, &suite, "v2", "VERSION=v2"));
    assert_eq!(r.code, 0, "{}", r.log());
    for (id, ip) in web.ids.iter().zip(&web.ips) {
        assert_eq!(version_of(ip).as_deref(), Some("v2"));
        assert_eq!(pages(id), 0, "{id}: the page's container is left after the deploy");
    }
}
