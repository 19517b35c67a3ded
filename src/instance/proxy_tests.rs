//! The proxy's Caddy config as the script writes it (its `proxy_config` function, run by bash
//! with the header's values), read back as JSON.

use super::SCRIPT;

/// The shell function `name` from the script, as written there (up to its closing brace).
fn function(name: &str) -> String {
    let start = SCRIPT.find(&format!("\n{name}() {{\n")).unwrap_or_else(|| panic!("no function {name}"));
    let body = &SCRIPT[start + 1..];
    let end = body.find("\n}\n").expect("the function ends");
    body[..end + 3].to_string()
}

fn config(assignments: &str) -> serde_json::Value {
    let script = format!(
        "set -euo pipefail\n{assignments}\n{}{}proxy_config\n",
        function("json_words"),
        function("proxy_config")
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
