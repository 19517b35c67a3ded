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
