//! Operating the service without SSH: `ec2-deploy logs` reads each instance's container log
//! through the bed's SSM (a read-only Run Command), with the release's secret masked on the
//! instance, and says when SSM's output limit cut what it had.

use super::support::{unique, Bed};
use super::{inputs, operate, run_with, set};

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
    // The app prints (stdout) six lines of 5,000 characters (30 KB, past the 24,000 characters
    // SSM returns), then its secret's value; and (stderr) that it listens: Docker stamps the two
    // streams as it reads them, so that line may come before or after the others.
    let big = "x".repeat(5000);
    let mut i = inputs(&bed, &repo, &suite, "v1", "VERSION=v1");
    set(&mut i, "secret-id", &secret);
    set(&mut i, "env", &format!("BIG={big}\nDEMO_LOG_ENV=BIG,BIG,BIG,BIG,BIG,BIG,SESSION_KEY"));
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

    // All eight lines do not fit: the newest that do are shown, and the cut is said.
    let (code, out, err) = operate(&bed, "logs", &repo, &suite, &["--lines", "100"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for id in &web.ids {
        let mine: Vec<&str> = out.lines().filter(|l| l.starts_with(&format!("{id} | "))).collect();
        assert!(mine.len() < 8 && mine.len() >= 5, "{out}");
        assert!(mine.iter().any(|l| l.ends_with(" SESSION_KEY=***")), "a newest line was cut:\n{out}");
        assert!(out.contains(&format!("only the newest {} of 8 lines are shown", mine.len())), "{out}");
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
