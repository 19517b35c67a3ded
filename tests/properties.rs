//! Properties over arbitrary input (proptest).
//!
//! - Injection: whatever text reaches the generated shell header (env values, container spec,
//!   image, release, secret id, health path), bash gives it back byte for byte and runs nothing
//!   else.
//! - Robustness: resolving inputs and parsing the config file never panic, whatever they are
//!   given (any UTF-8, multi-byte characters at every length around each limit, in every input
//!   and every config value); they answer with a value or with errors.

use std::path::PathBuf;
use std::process::Command;

use ec2_deploy_action::inputs::config::ConfigFile;
use ec2_deploy_action::inputs::{resolve, Disk, RawInputs, RunContext, INPUTS};
use ec2_deploy_action::instance::{header, Mode, ScriptParams};
use ec2_deploy_action::model::{
    ContainerName, ContainerSpec, Digest, EnvVar, HealthPath, ImageRef, ImageTag, PortMapping, RegistryHost,
    Repository, SecretId,
};
use proptest::prelude::*;

/// Any text without NUL (which the quoting function refuses, tested elsewhere), including
/// quotes, `$()`, backticks, newlines, control characters and non-ASCII.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\u{0}]{0,40}",
        "[$`'\"\\\\;|&(){}<>*?! \n\t#~=-]{0,20}",
        Just("$(touch /tmp/ec2-deploy-pwned)".to_string()),
        Just("'; touch /tmp/ec2-deploy-pwned; '".to_string()),
    ]
}

/// Multi-byte characters (2, 3 and 4 bytes) and ASCII, repeated to every length around the
/// limits the inputs have (32 and 40 for excerpts in messages, 64, 128, 256, 1011, 1024, 2048),
/// behind prefixes that shift where each character's bytes fall.
fn near_limits() -> impl Strategy<Value = String> {
    let lengths: Vec<usize> = [
        0usize, 1, 2, 31, 32, 33, 39, 40, 41, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1010, 1011, 1012, 1023, 1024,
        1025, 2047, 2048, 2049,
    ]
    .to_vec();
    (
        proptest::sample::select(lengths),
        proptest::sample::select(vec!['é', '日', '𝄞', 'a', '=', ',', '/', '%', '\n']),
        proptest::sample::select(vec!["", "x", "Role=", "Role=x", "A=", "KEY=", "80:", "/", "arn:", "sha256:"]),
    )
        .prop_map(|(n, c, prefix)| format!("{prefix}{}", c.to_string().repeat(n)))
}

/// Any text but NUL, short or around a limit.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof!["[^\u{0}]{0,30}", near_limits()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn the_header_gives_every_value_back_and_runs_nothing_else(
        registry in "[a-z0-9.-]{1,20}(:[0-9]{1,5})?", repository in "[a-z0-9]{2,10}(/[a-z0-9]{1,10})?",
        digest in "[0-9a-f]{64}", release in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        secret in text().prop_filter("a secret id", |s| SecretId::parse(s).is_ok()),
        path in text().prop_filter("an HTTP path", |s| HealthPath::parse(&format!("/{s}")).is_ok()),
        values in proptest::collection::vec(text(), 0..4),
    ) {
        // Values that are validated before they reach the header take every form their type
        // allows; the free-text ones (env values, secret id, path) take anything but NUL.
        let image = ImageRef {
            registry: RegistryHost::parse(&registry).unwrap(),
            repository: Repository::parse(&repository).unwrap(),
            digest: Digest::parse(&format!("sha256:{digest}")).unwrap(),
        };
        let release = ImageTag::parse(&release).unwrap();
        let path = format!("/{path}");
        let env: Vec<EnvVar> = values.iter().enumerate().map(|(i, v)| EnvVar { name: format!("V{i}"), value: v.clone() }).collect();
        let container = ContainerSpec {
            name: ContainerName::parse("app").unwrap(),
            ports: vec![PortMapping { host: 8080, container: 80 }],
            env,
            secret_id: Some(SecretId::parse(&secret).unwrap()),
            health_check_path: Some(HealthPath::parse(&path).unwrap()),
            health_check_timeout: 30,
            drain_timeout: 30,
            https: None,
            proxy: false,
            proxy_trusted: vec![],
            options: Default::default(),
        };
        let h = header(&ScriptParams { mode: Mode::Deploy { image: &image }, registry: &image.registry, release: &release, container: &container, proxy: None }).unwrap();
        let (image, registry, release) = (image.to_string(), image.registry.to_string(), release.to_string());
        // Print each value NUL-terminated, so any byte (newlines included) can be compared.
        let script = format!(
            "{h}printf '%s\\0' \"$IMAGE\" \"$REGISTRY\" \"$RELEASE\" \"$SECRET_ID\" \"$HEALTH_PATH\" \"${{ENV_VARS[@]}}\""
        );
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash").arg("-c").arg(&script).current_dir(dir.path()).env("HOME", dir.path()).output().unwrap();
        prop_assert!(out.status.success(), "bash failed: {}", String::from_utf8_lossy(&out.stderr));
        prop_assert!(out.stderr.is_empty(), "bash said: {}", String::from_utf8_lossy(&out.stderr));
        let mut expected: Vec<u8> = vec![];
        for v in [&image, &registry, &release, &secret, &path] {
            expected.extend(v.as_bytes());
            expected.push(0);
        }
        for (i, v) in values.iter().enumerate() {
            expected.extend(format!("V{i}={v}").as_bytes());
            expected.push(0);
        }
        prop_assert_eq!(out.stdout, expected);
        prop_assert!(!std::path::Path::new("/tmp/ec2-deploy-pwned").exists(), "a value ran as code");
    }

    #[test]
    fn resolving_arbitrary_inputs_never_panics(values in proptest::collection::vec(proptest::option::of(any_value()), INPUTS.len())) {
        let raw = RawInputs::from_lookup(|name| {
            let i = INPUTS.iter().position(|s| s.name == name).unwrap();
            values[i].clone()
        });
        let env = |_: &str| None;
        let ctx = RunContext { env: &env, workdir: PathBuf::from("/nonexistent") };
        let _ = resolve(&raw, &ctx, &Disk);
    }

    #[test]
    fn resolving_an_arbitrary_config_file_never_panics(values in proptest::collection::vec(any_value(), INPUTS.len())) {
        // Every key the config file takes, each with a value of any shape and length.
        let mut yaml = String::from("environments:\n  prod:\n");
        for (spec, value) in INPUTS.iter().filter(|s| s.in_config).zip(&values) {
            yaml.push_str(&format!("    {}: {}\n", spec.name, serde_json::to_string(value).unwrap()));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".github")).unwrap();
        std::fs::write(dir.path().join(".github/ec2-deploy.yml"), &yaml).unwrap();
        let raw = RawInputs::from_lookup(|name| (name == "environment").then(|| "prod".to_string()));
        let env = |_: &str| None;
        let ctx = RunContext { env: &env, workdir: dir.path().to_path_buf() };
        let _ = resolve(&raw, &ctx, &Disk);
    }

    #[test]
    fn parsing_an_arbitrary_config_never_panics(text in "[^\u{0}]{0,200}") {
        let _ = ConfigFile::parse(&text);
    }

    #[test]
    fn parsing_yaml_shaped_configs_never_panics(
        keys in proptest::collection::vec("[a-z-]{1,20}", 1..6),
        values in proptest::collection::vec("[^\u{0}\n]{0,20}", 1..6),
    ) {
        let mut text = String::from("environments:\n  prod:\n");
        for (k, v) in keys.iter().zip(&values) {
            text.push_str(&format!("    {k}: {v}\n"));
        }
        let _ = ConfigFile::parse(&text);
    }
}
