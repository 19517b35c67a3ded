//! The script itself: as shipped (comments left out, within SSM's size), the rules its text keeps
//! (no bare expansion of an array that may be empty; its parts in order), and some of its
//! functions run by bash: the proxy's Caddy config (read back as JSON), the health wait, the
//! registry's region.

use super::{script, SCRIPT};

fn config(assignments: &str) -> serde_json::Value {
    let script = format!(
        "set -euo pipefail\nproxy_hold=${{proxy_hold:-}}\n{assignments}\n{}{}proxy_config\n",
        script_function("json_words"),
        script_function("proxy_config")
    );
    let out = std::process::Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn plain_http_has_no_automatic_https_and_trusts_the_given_hops() {
    let c = config(
        "PROXY_TRUSTED=(10.0.0.0/8 ::1)\nPROXY_HOSTS=()\nPROXY_ACME_EMAIL='' PROXY_ACME_CA='' PROXY_ACME_CA_ROOT=''",
    );
    let server = &c["apps"]["http"]["servers"]["ec2-deploy"];
    assert_eq!(server["listen"], serde_json::json!([":80"]));
    assert_eq!(server["automatic_https"]["disable"], true);
    assert_eq!(server["trusted_proxies"]["ranges"], serde_json::json!(["10.0.0.0/8", "::1"]));
    assert!(server["routes"][0].get("match").is_none(), "{c}");
    assert!(c["apps"].get("tls").is_none(), "{c}");
    let none = config("PROXY_TRUSTED=()\nPROXY_HOSTS=()\nPROXY_ACME_EMAIL='' PROXY_ACME_CA='' PROXY_ACME_CA_ROOT=''");
    assert!(none["apps"]["http"]["servers"]["ec2-deploy"].get("trusted_proxies").is_none(), "{none}");
    // A request is tried 4 times over 300 ms; with ports of the container's own (proxy_hold), held
    // up to that many seconds, until a container is behind the proxy again.
    let lb = |c: &serde_json::Value| {
        c["apps"]["http"]["servers"]["ec2-deploy"]["routes"][0]["handle"][0]["load_balancing"].clone()
    };
    assert_eq!(lb(&none), serde_json::json!({"retries": 3, "try_interval": "100ms"}));
    let held = config(
        "proxy_hold=75\nPROXY_TRUSTED=()\nPROXY_HOSTS=()\nPROXY_ACME_EMAIL='' PROXY_ACME_CA='' PROXY_ACME_CA_ROOT=''",
    );
    assert_eq!(lb(&held), serde_json::json!({"try_duration": "75s", "try_interval": "100ms"}));
}

#[test]
fn hosts_get_443_a_host_match_and_an_acme_issuer_with_the_given_ca() {
    let c = config(
        "PROXY_TRUSTED=()\nPROXY_HOSTS=(app.example.com www.example.com)\nPROXY_ACME_EMAIL=ops@example.com \
         PROXY_ACME_CA=https://ca.internal/dir PROXY_ACME_CA_ROOT='-----BEGIN CERTIFICATE-----'",
    );
    let hosts = serde_json::json!(["app.example.com", "www.example.com"]);
    let server = &c["apps"]["http"]["servers"]["ec2-deploy"];
    assert_eq!(server["listen"], serde_json::json!([":443"]));
    assert!(server.get("automatic_https").is_none(), "Caddy's automatic HTTPS stays on: {c}");
    assert_eq!(server["routes"][0]["match"][0]["host"], hosts);
    let policy = &c["apps"]["tls"]["automation"]["policies"][0];
    assert_eq!(policy["subjects"], hosts);
    assert_eq!(
        policy["issuers"][0],
        serde_json::json!({"module": "acme", "ca": "https://ca.internal/dir", "email": "ops@example.com",
            "trusted_roots_pem_files": ["/ec2-deploy/acme-ca-root.pem"]})
    );
    let bare = config("PROXY_TRUSTED=()\nPROXY_HOSTS=(app.example.com)\nPROXY_ACME_EMAIL='' PROXY_ACME_CA=https://ca/dir PROXY_ACME_CA_ROOT=''");
    assert_eq!(
        bare["apps"]["tls"]["automation"]["policies"][0]["issuers"][0],
        serde_json::json!({"module": "acme", "ca": "https://ca/dir"})
    );
}

/// A command is the script, a header (at most the record's 8 KB: the plan refuses a bigger one)
/// and a few mode lines; SSM takes 64 KB of document and parameters. The shipped script leaves
/// room for all of it, and differs from the source only by whole comment lines.
#[test]
fn the_shipped_script_is_the_source_without_comments_and_fits_ssm_with_any_header() {
    let shipped = script();
    assert!(shipped.len() + crate::plan::RECORD_LIMIT + 2048 <= 64 * 1024, "{} bytes", shipped.len());
    assert!(shipped.len() < SCRIPT.len() * 3 / 4, "{} of {} bytes", shipped.len(), SCRIPT.len());
    let code: Vec<&str> = SCRIPT
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') || l.contains("# shellcheck") || l.starts_with(super::SCRIPT_MARK))
        .collect();
    assert_eq!(shipped.lines().collect::<Vec<_>>(), code);
    let out = std::process::Command::new("bash").args(["-n", "-c", shipped]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_script_never_expands_a_possibly_empty_array_bare() {
    let never_empty = ["create_args", "run_args"];
    let mut bare = vec![];
    for (n, line) in SCRIPT.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("\"${") {
            let after = &rest[at + 3..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let guarded = rest[..at].ends_with(&format!("${{{name}[@]+"));
            if after[name.len()..].starts_with("[@]}\"") && !guarded && !never_empty.contains(&name.as_str()) {
                bare.push(format!("line {}: {}", n + 1, line.trim()));
            }
            rest = &after[name.len()..];
        }
    }
    assert!(bare.is_empty(), "bare expansions of arrays that may be empty:\n{}", bare.join("\n"));
}

/// SCRIPT is every part of `script/`, in the order of their names, nothing else.
#[test]
fn the_script_is_its_parts_in_order() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/instance/script");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let whole: String = names.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    assert!(names.len() > 1 && names.iter().all(|p| p.extension().is_some_and(|e| e == "sh")), "{names:?}");
    assert!(whole == SCRIPT, "SCRIPT's include_str! list differs from the files in {}", dir.display());
}

#[test]
fn the_script_logs_in_to_the_region_an_ecr_host_names() {
    let script = SCRIPT;
    let start = script.find("registry_region() {").unwrap();
    let function = &script[start..start + script[start..].find("\n}\n").unwrap() + 3];
    let region_for = |registry: &str| {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("set -eu\n{function}\nregion=eu-west-1 REGISTRY=\"$1\" registry_region"))
            .arg("bash")
            .arg(registry)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(region_for("123456789012.dkr.ecr.us-east-2.amazonaws.com"), "us-east-2");
    assert_eq!(region_for("123456789012.dkr.ecr-fips.us-west-1.amazonaws.com"), "us-west-1");
    assert_eq!(region_for("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"), "cn-north-1");
    assert_eq!(region_for("localhost:5000"), "eu-west-1");
}

/// One function of the script, as its text: `name() {` to the first `}` at the start of a line
/// (or the line itself for a one-line function).
fn script_function(name: &str) -> String {
    let start = SCRIPT.find(&format!("\n{name}() {{")).unwrap() + 1;
    let end =
        start + SCRIPT[start..].find("\n}\n").map(|e| e + 3).unwrap_or_else(|| SCRIPT[start..].find('\n').unwrap() + 1);
    SCRIPT[start..end].to_string()
}

/// `wait_healthy` with `docker` replaced by `docker_stub` (a bash function), for a container
/// named `app` without a health path; prints the reason and whether it was healthy.
fn wait_healthy_with(docker_stub: &str) -> String {
    let body = format!(
        "set -eu\n{docker_stub}\n{}{}{}{}network=n HEALTH_TIMEOUT=8 HEALTH_PATH= HEALTH_PORT=80\nif wait_healthy app; then echo healthy; else echo \"$health_reason\"; fi",
        script_function("inspect"),
        script_function("upstream_of"),
        script_function("now_ms"),
        script_function("wait_healthy"),
    );
    let out = std::process::Command::new("bash").arg("-c").arg(&body).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A container removed with `docker rm --force` while the script waits on it passes through
/// `removing` (and can be `dead`) before it is gone; the bed met that state only by chance
/// (a CI run reported "the container is removing"). A `docker` stand-in replays the states so
/// every one of them is asked about, in order, on every run.
#[test]
fn a_container_removed_while_the_script_waits_is_reported_as_disappeared() {
    for state in ["removing", "dead", ""] {
        let docker = format!(
            "docker() {{ case \"$*\" in *State.Status*) [ -z '{state}' ] || echo '{state} 0 137' ;; *RestartCount*) echo 0 ;; esac; }}"
        );
        let reason = wait_healthy_with(&docker);
        assert!(reason.starts_with("the container disappeared"), "state {state:?}: {reason}");
    }
}

/// Without a health path or HEALTHCHECK, "healthy" is "still running, not restarted, a few
/// seconds on". A CI run under load passed a container that exits 2 s after each start: the
/// script looked at the container, then (the daemon slow to answer the next question) found
/// the seconds up and called it healthy — from a look taken before they were up, and before
/// the exit. Here the stand-in daemon takes 3.1 s over that next question, and the container
/// exits meanwhile: only a look taken after the seconds are up may call it healthy.
#[test]
fn a_container_is_healthy_without_a_check_only_by_a_look_after_its_seconds_are_up() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, "running 0 0\n").unwrap();
    let docker = format!(
        r#"docker() {{
  case "$*" in
*State.Status*) cat '{s}' ;;
*State.Health*) echo none; if [ ! -e '{s}.crashed' ]; then sleep 3.1; echo 'restarting 1 1' >'{s}'; : >'{s}.crashed'; fi ;;
*RestartCount*) cut -d' ' -f2 '{s}' ;;
  esac
}}"#,
        s = state.display()
    );
    let reason = wait_healthy_with(&docker);
    assert!(reason.starts_with("the container keeps restarting"), "{reason}");

    // And one that stays up is healthy, by a look after its seconds.
    std::fs::write(&state, "running 0 0\n").unwrap();
    let steady = format!(
        r#"docker() {{ case "$*" in *State.Status*) cat '{s}' ;; *State.Health*) echo none ;; *RestartCount*) echo 0 ;; esac; }}"#,
        s = state.display()
    );
    assert_eq!(wait_healthy_with(&steady), "healthy\n");
}
