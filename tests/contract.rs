//! action.yml is the source of truth for inputs and outputs: the input table in the code, the
//! README's tables and `ec2-deploy --help` must say the same.

use std::collections::BTreeMap;

use ec2_deploy_action::inputs::INPUTS;

#[derive(serde::Deserialize)]
struct Action {
    inputs: BTreeMap<String, ActionInput>,
    outputs: BTreeMap<String, ActionOutput>,
    runs: serde_yaml::Value,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionInput {
    description: String,
    default: Option<String>,
    deprecation_message: Option<String>,
}

#[derive(serde::Deserialize)]
struct ActionOutput {
    description: String,
}

fn action() -> Action {
    serde_yaml::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/action.yml")).unwrap()).unwrap()
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The rows of the README table under `## {heading}`, as cells.
fn readme_table(heading: &str) -> Vec<Vec<String>> {
    let text = readme();
    let start = text.find(&format!("## {heading}\n")).unwrap_or_else(|| panic!("README has no ## {heading}"));
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

#[test]
fn action_yml_declares_exactly_the_inputs_the_code_reads() {
    let action = action();
    let code: Vec<&str> = INPUTS.iter().map(|s| s.name).collect();
    let yml: Vec<&str> = action.inputs.keys().map(String::as_str).collect();
    let mut code_sorted = code.clone();
    code_sorted.sort();
    assert_eq!(yml, code_sorted);
    for spec in INPUTS {
        let input = &action.inputs[spec.name];
        assert_eq!(input.description, spec.description, "description of {}", spec.name);
        // An input the config file may hold has its default in the code and its description only
        // (see action_yml_defaults_never_override_the_config_file).
        let want_default = match spec.name {
            "github-token" => Some("${{ github.token }}"),
            _ if spec.in_config => None,
            _ => spec.default,
        };
        assert_eq!(input.default.as_deref(), want_default, "default of {}", spec.name);
        if let (true, Some(d)) = (spec.in_config, spec.default) {
            assert!(
                spec.description.contains(&format!("Default: {d}.")),
                "{}: the description must say its default",
                spec.name
            );
        }
    }
    for spec in INPUTS {
        let input = &action.inputs[spec.name];
        // A reader of action.yml learns which inputs the config file may hold, and which old
        // names are deprecated (the runner warns on those).
        let says_config = spec.description.contains("in the config file");
        match spec.replaced_by {
            Some(new) => {
                assert!(INPUTS.iter().any(|s| s.name == new), "{} is replaced by an unknown input", spec.name);
                let message = input
                    .deprecation_message
                    .as_deref()
                    .unwrap_or_else(|| panic!("{}: no deprecationMessage", spec.name));
                assert!(message.contains(new), "{}: the deprecationMessage does not name {new}", spec.name);
                assert!(spec.description.starts_with("Deprecated"), "{}", spec.name);
            }
            None => {
                assert!(input.deprecation_message.is_none(), "{} is not deprecated", spec.name);
                assert_eq!(
                    says_config, spec.in_config,
                    "{}: the description must say whether the config file may hold it",
                    spec.name
                );
            }
        }
    }
    assert_eq!(action.runs["using"], "docker");
    assert_eq!(action.runs["args"][0], "action", "the image must run `ec2-deploy action`");
    let image = action.runs["image"].as_str().unwrap();
    assert_eq!(runs_image_problem(image), None, "action.yml runs.image");
}

/// What is wrong with action.yml's `runs.image`, if anything: the Dockerfile (main), or a prebuilt
/// image pinned by digest (a release commit, written by scripts/release). A tag alone moves under
/// a user who pinned the action; a placeholder owner names someone else's package.
fn runs_image_problem(image: &str) -> Option<String> {
    if image == "Dockerfile" {
        return None;
    }
    let Some(reference) = image.strip_prefix("docker://") else {
        return Some(format!("{image}: neither Dockerfile nor docker://…"));
    };
    let Some((name, digest)) = reference.split_once("@sha256:") else {
        return Some(format!("{image}: not pinned by digest (a tag moves under users who pinned the action)"));
    };
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(format!("{image}: a digest of {} characters", digest.len()));
    }
    let path: Vec<&str> = name.split('/').collect();
    if path.len() < 3 {
        return Some(format!("{image}: expected registry/owner/name"));
    }
    let owner = path[1].to_ascii_lowercase();
    if ["org", "owner", "<owner>", "your-org", "example", "user"].contains(&owner.as_str()) {
        return Some(format!("{image}: {owner} is a placeholder owner"));
    }
    None
}

#[test]
fn runs_image_must_be_the_dockerfile_or_pinned_by_digest() {
    let digest = "0".repeat(64);
    assert_eq!(runs_image_problem("Dockerfile"), None);
    assert_eq!(runs_image_problem(&format!("docker://ghcr.io/acme/ec2-deploy-action:v1.2.3@sha256:{digest}")), None);
    for bad in [
        "docker://ghcr.io/org/ec2-deploy-action:v1".to_string(),
        "docker://ghcr.io/acme/ec2-deploy-action:v1".to_string(),
        format!("docker://ghcr.io/org/ec2-deploy-action:v1@sha256:{digest}"),
        format!("docker://ghcr.io/acme/ec2-deploy-action:v1@sha256:{}", &digest[..12]),
        "ghcr.io/acme/ec2-deploy-action:v1".to_string(),
    ] {
        assert!(runs_image_problem(&bad).is_some(), "{bad} passed");
    }
}

#[test]
fn the_readme_tables_match_action_yml() {
    let action = action();
    let rows = readme_table("Inputs");
    let names: Vec<String> = rows.iter().map(|r| r[0].trim_matches('`').to_string()).collect();
    let order: Vec<String> = INPUTS.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, order, "README inputs table: names and order");
    for row in &rows {
        let name = row[0].trim_matches('`');
        let input = &action.inputs[name];
        // The README shows the default that applies, wherever it is applied.
        let spec = INPUTS.iter().find(|s| s.name == name).unwrap();
        let want = input.default.as_deref().or(spec.default).unwrap_or("");
        assert_eq!(row[1].trim_matches('`'), want, "README default of {name}");
        assert_eq!(row[2], input.description, "README description of {name}");
    }
    let rows = readme_table("Outputs");
    let names: Vec<&str> = rows.iter().map(|r| r[0].trim_matches('`')).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, action.outputs.keys().map(String::as_str).collect::<Vec<_>>(), "README outputs table");
    for row in &rows {
        assert_eq!(row[1], action.outputs[row[0].trim_matches('`')].description);
    }
}

#[test]
fn cli_help_offers_every_input_as_a_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ec2-deploy")).args(["deploy", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for spec in INPUTS {
        if spec.name == "github-token" {
            assert!(!help.contains("--github-token"), "a token flag would put the token in process arguments");
            continue;
        }
        assert!(help.contains(&format!("--{}", spec.name)), "--{} missing from deploy --help", spec.name);
        let first_words: String = spec.description.split_whitespace().take(6).collect::<Vec<_>>().join(" ");
        assert!(flat.contains(&first_words), "--{}: help does not say {first_words:?}", spec.name);
    }
}

#[test]
fn the_example_config_resolves_for_each_environment() {
    use ec2_deploy_action::inputs::{resolve, Disk, RawInputs, RunContext};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    for environment in ["development", "production"] {
        let raw = RawInputs::from_lookup(|name| match name {
            "environment" => Some(environment.to_string()),
            "config" => Some("ec2-deploy.yml".to_string()),
            // The examples folder has no app to build: this is about the config.
            "build" => Some("false".to_string()),
            _ => None,
        });
        let env = |k: &str| (k == "GITHUB_SHA").then(|| "abc".to_string());
        let ctx = RunContext { env: &env, workdir: dir.into() };
        let req = resolve(&raw, &ctx, &Disk).unwrap_or_else(|e| panic!("{environment}: {e:?}")).remove(0);
        assert_eq!(req.repository.as_str(), "threads");
        assert_eq!(req.targets.len(), 2, "{environment}");
        assert_eq!(req.target_groups.len(), usize::from(environment == "production"));
    }
}

/// Reproducible image: each base the Dockerfile builds from is pinned by digest, and the Rust one
/// is at least the crate's `rust-version` (the oldest toolchain the locked dependencies accept).
#[test]
fn the_dockerfile_pins_its_bases_by_digest_and_builds_with_a_new_enough_rust() {
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let bases: BTreeMap<&str, &str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("ARG "))
        .filter_map(|l| l.split_once('='))
        .filter(|(name, _)| name.ends_with("_IMAGE"))
        .collect();
    assert_eq!(bases.keys().copied().collect::<Vec<_>>(), ["RUNTIME_IMAGE", "RUST_IMAGE"]);
    for (name, reference) in &bases {
        let (_, digest) =
            reference.split_once("@sha256:").unwrap_or_else(|| panic!("{name}={reference}: not pinned by digest"));
        assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{name}: digest {digest:?}");
        assert!(
            dockerfile.lines().any(|l| l.starts_with("FROM ") && l.contains(&format!(" ${{{name}}}"))),
            "{name} is declared but not built from"
        );
    }
    let rust_tag = bases["RUST_IMAGE"].split_once("rust:").unwrap().1;
    let image_rust: Vec<u32> = rust_tag.split('-').next().unwrap().split('.').map(|p| p.parse().unwrap()).collect();
    let msrv = include_str!("../Cargo.toml").lines().find_map(|l| l.strip_prefix("rust-version = ")).unwrap();
    let msrv: Vec<u32> = msrv.trim_matches('"').split('.').map(|p| p.parse().unwrap()).collect();
    assert!(image_rust >= msrv, "the image builds with Rust {image_rust:?}, older than rust-version {msrv:?}");
}

/// The CloudFormation sketch boots instances the deploy script can run on: it installs and starts
/// Docker (Amazon Linux 2023 has none) and checks for every tool the script's prerequisite check
/// names, plus a JSON reader for the secret. A tool added to the script fails this until the
/// sketch provides it.
#[test]
fn the_cloudformation_sketch_provides_what_the_deploy_script_checks_for() {
    let script = ec2_deploy_action::instance::SCRIPT;
    let needed: Vec<&str> = script
        .lines()
        .find_map(|l| l.strip_prefix("for tool in ").and_then(|l| l.strip_suffix("; do")))
        .expect("the script's prerequisite loop")
        .split_whitespace()
        .collect();
    assert!(needed.contains(&"docker"), "{needed:?}");
    let sketch = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/infrastructure.yml")).unwrap();
    // The launch template's user data: the block under `Fn::Base64: !Sub |`, as indented.
    let mut lines = sketch.lines().skip_while(|l| !l.trim_end().ends_with("Fn::Base64: !Sub |")).skip(1);
    let first = lines.next().expect("the launch template's user data");
    let indent = first.len() - first.trim_start().len();
    let user_data: String = std::iter::once(first)
        .chain(lines.take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent))
        .map(|l| format!("{}\n", l.get(indent..).unwrap_or("")))
        .collect();
    assert!(user_data.contains("dnf install -y docker"), "Docker is not installed:\n{user_data}");
    assert!(user_data.contains("systemctl enable --now docker"), "Docker is not started:\n{user_data}");
    let checked: Vec<&str> = user_data
        .lines()
        .find_map(|l| l.trim().strip_prefix("for tool in ").and_then(|l| l.strip_suffix("; do")))
        .expect("the sketch's prerequisite check")
        .split_whitespace()
        .collect();
    for tool in &needed {
        assert!(checked.contains(tool), "the sketch does not provide {tool} (the script checks for {needed:?})");
    }
    assert!(checked.iter().any(|t| matches!(*t, "jq" | "python3")), "no JSON reader for the secret: {checked:?}");
    // The role names the example workflows assume.
    assert!(sketch.contains("Default: github-deploy"), "the deploy role is not named as the examples assume");
    for workflow in ["deploy.yml", "redeploy.yml"] {
        let text =
            std::fs::read_to_string(format!("{}/examples/workflows/{workflow}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(text.contains(":role/github-deploy"), "{workflow}");
    }
}

/// The runner hands a Docker action every input that has a `default:` in action.yml, given or
/// not. So an input the config file may hold must have no default there: the runner's default
/// would arrive as an explicit input and override the config file (the code applies the default
/// itself, after the config file). Here the action is resolved as the runner would start it.
#[test]
fn action_yml_defaults_never_override_the_config_file() {
    use ec2_deploy_action::inputs::{resolve, Disk, RawInputs, RunContext};
    let action = action();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".github")).unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    std::fs::write(
        dir.path().join(".github/ec2-deploy.yml"),
        "defaults:\n  ecr-repository: shop\n  targets: [Role=web]\n  max-concurrency: 25%\n  health-check-timeout: 45\n  command-timeout: 900\n  canary: false\n",
    )
    .unwrap();
    // What the runner sets: each input with a default, as INPUT_<NAME>.
    let runner_env: BTreeMap<String, String> = action
        .inputs
        .iter()
        .filter_map(|(name, input)| input.default.as_ref().map(|d| (name.clone(), d.clone())))
        .filter(|(name, _)| name != "github-token")
        .collect();
    let raw = RawInputs::from_lookup(|name| runner_env.get(name).cloned());
    let env = |k: &str| (k == "GITHUB_SHA").then(|| "abc".to_string());
    let ctx = RunContext { env: &env, workdir: dir.path().into() };
    let req = resolve(&raw, &ctx, &Disk).unwrap_or_else(|e| panic!("{e:?}")).remove(0);
    assert_eq!(req.max_concurrency.to_string(), "25%", "the runner's default overrode the config file");
    assert_eq!(req.container.health_check_timeout, 45);
    assert_eq!(req.timeout, 900);
    assert!(!req.canary);
    for spec in INPUTS.iter().filter(|s| s.in_config) {
        assert_eq!(
            action.inputs[spec.name].default, None,
            "{}: a default in action.yml hides the config file",
            spec.name
        );
    }
}
