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

/// The rows of the README tables under `## {heading}` (one, or one per `###` group), as cells,
/// without their header and separator lines.
fn readme_table(heading: &str) -> Vec<Vec<String>> {
    let text = readme();
    let start = text.find(&format!("## {heading}\n")).unwrap_or_else(|| panic!("README has no ## {heading}"));
    let section = &text[start + heading.len() + 4..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut lines = section.lines().filter(|l| l.starts_with('|'));
    let header = lines.next().unwrap_or_else(|| panic!("README has no table under ## {heading}")).to_string();
    lines
        .filter(|l| *l != header && !l.starts_with("|---"))
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
        if matches!(spec.name, "operation" | "operation-args") {
            // The action's way to name a command and its arguments: the CLI names it itself.
            assert!(!help.contains(&format!("--{} ", spec.name)), "--{} is the action's, not a flag", spec.name);
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

/// One story across the examples: the config's targets, in each environment the infrastructure
/// allows, are exactly the tags its Auto Scaling group puts on the instances (each tag's value the
/// stack parameter it refers to: the service's name, the environment's).
#[test]
fn the_example_config_targets_the_tags_the_example_infrastructure_puts_on_its_instances() {
    let read = |path: &str| std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let infra: serde_yaml::Value = serde_yaml::from_str(&read("examples/infrastructure.yml")).unwrap();
    let config: serde_yaml::Value = serde_yaml::from_str(&read("examples/ec2-deploy.yml")).unwrap();
    let parameters = &infra["Parameters"];
    let allowed: Vec<&str> =
        parameters["Environment"]["AllowedValues"].as_sequence().unwrap().iter().filter_map(|v| v.as_str()).collect();
    let group = infra["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .find(|r| r["Type"].as_str() == Some("AWS::AutoScaling::AutoScalingGroup"))
        .expect("an Auto Scaling group");
    // Each tag: its key, and the parameter its value refers to (`!Ref Name`).
    let tags: Vec<(&str, &str)> = group["Properties"]["Tags"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| match &t["Value"] {
            serde_yaml::Value::Tagged(r) => (t["Key"].as_str().unwrap(), r.value.as_str().unwrap()),
            other => panic!("tag {:?}: a fixed value {other:?}", t["Key"]),
        })
        .collect();
    assert_eq!(allowed, ["development", "production"]);
    for environment in allowed {
        let mut expected: Vec<String> = tags
            .iter()
            .map(|(key, parameter)| match *parameter {
                "Environment" => format!("{key}={environment}"),
                other => format!("{key}={}", parameters[other]["Default"].as_str().unwrap()),
            })
            .collect();
        let mut targets: Vec<String> = config["environments"][environment]["targets"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{environment}: no targets"))
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        expected.sort();
        targets.sort();
        assert_eq!(targets, expected, "examples/ec2-deploy.yml, {environment}");
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
    for workflow in ["deploy.yml", "operate.yml"] {
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

fn root_file(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Each step that uses this action, in a workflow file or a README `yaml` block: where, and its
/// `with:` keys.
fn action_steps() -> Vec<(String, Vec<String>)> {
    fn walk(where_: &str, v: &serde_yaml::Value, out: &mut Vec<(String, Vec<String>)>) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                let uses = m.get("uses").and_then(|u| u.as_str()).unwrap_or_default();
                if uses.contains("ec2-deploy-action") && !uses.starts_with("docker://") {
                    let keys = m
                        .get("with")
                        .and_then(|w| w.as_mapping())
                        .map(|w| w.keys().filter_map(|k| k.as_str().map(str::to_string)).collect())
                        .unwrap_or_default();
                    out.push((where_.to_string(), keys));
                }
                m.values().for_each(|v| walk(where_, v, out));
            }
            serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| walk(where_, v, out)),
            _ => {}
        }
    }
    let mut out = vec![];
    for (where_, v) in example_workflows() {
        walk(&where_, &v, &mut out);
    }
    out
}

/// The workflows a user copies: each file of examples/workflows and each README yaml block
/// with steps (`uses:`), parsed, with where it is.
fn example_workflows() -> Vec<(String, serde_yaml::Value)> {
    let mut out = vec![];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workflows");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let v: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        out.push((path.display().to_string(), v));
    }
    let readme = readme();
    for (n, block) in readme.split("```yaml\n").skip(1).enumerate() {
        let block = &block[..block.find("```").unwrap()];
        if !block.contains("uses:") {
            continue;
        }
        let v: serde_yaml::Value = serde_yaml::from_str(block)
            .unwrap_or_else(|e| panic!("README yaml block {} does not parse: {e}\n{block}", n + 1));
        out.push((format!("README yaml block {}", n + 1), v));
    }
    out
}

/// A workflow in examples/ or the README that passes an input action.yml lacks would fail at the
/// user's first run (GitHub warns "Unexpected input" and the value is never read).
#[test]
fn every_example_step_passes_only_inputs_action_yml_declares() {
    let action = action();
    let steps = action_steps();
    assert!(steps.len() >= 5, "too few steps found to be checking anything: {steps:?}");
    let unknown: Vec<String> = steps
        .iter()
        .flat_map(|(w, keys)| keys.iter().filter(|k| !action.inputs.contains_key(*k)).map(move |k| format!("{w}: {k}")))
        .collect();
    assert!(unknown.is_empty(), "inputs action.yml does not declare:\n{}", unknown.join("\n"));
}

/// GitHub's runners no longer run actions on Node 20: every action an example uses is at a major
/// that runs on Node 24 (the first such major of each, as their releases say).
#[test]
fn the_examples_use_action_majors_that_run_on_node_24() {
    let node24 = [
        ("actions/checkout", 5),
        ("aws-actions/configure-aws-credentials", 5),
        ("aws-actions/amazon-ecr-login", 2),
        ("docker/build-push-action", 7),
        ("docker/setup-buildx-action", 4),
        ("docker/setup-qemu-action", 4),
        ("docker/login-action", 4),
    ];
    fn uses(v: &serde_yaml::Value, out: &mut Vec<String>) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                out.extend(m.get("uses").and_then(|u| u.as_str()).map(str::to_string));
                m.values().for_each(|v| uses(v, out));
            }
            serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| uses(v, out)),
            _ => {}
        }
    }
    let mut seen = 0;
    let mut old = vec![];
    for (file, v) in example_workflows() {
        let mut all = vec![];
        uses(&v, &mut all);
        for uses in &all {
            let Some((action, version)) = uses.split_once("@v") else { continue };
            let Some((_, first)) = node24.iter().find(|(a, _)| *a == action) else { continue };
            seen += 1;
            let major: u32 = version.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
            if major < *first {
                old.push(format!("{file}: {uses} (Node 24 from v{first})"));
            }
        }
    }
    assert!(seen >= 10, "too few action uses found to be checking anything ({seen})");
    assert!(old.is_empty(), "actions at a major that runs on Node 20:\n{}", old.join("\n"));
}

/// The IAM actions a policy allows (`Action` as a string or a list), wildcards as written.
fn policy_actions(path: &str) -> Vec<String> {
    let policy: serde_json::Value = serde_json::from_str(&root_file(path)).unwrap();
    let mut out = vec![];
    for statement in policy["Statement"].as_array().unwrap() {
        assert_eq!(statement["Effect"], "Allow", "{path}: only Allow statements are expected");
        match &statement["Action"] {
            serde_json::Value::String(a) => out.push(a.clone()),
            serde_json::Value::Array(a) => out.extend(a.iter().map(|a| a.as_str().unwrap().to_string())),
            other => panic!("{path}: Action {other}"),
        }
    }
    out
}

fn allows(actions: &[String], wanted: &str) -> bool {
    actions.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => wanted.starts_with(prefix),
        None => a == wanted,
    })
}

fn pascal(snake_or_kebab: &str) -> String {
    snake_or_kebab
        .split(['_', '-'])
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The runner's policy allows every AWS API call the code makes (found in src/aws/: each
/// `.<client>.<operation>()` of the SDK clients), plus what `docker push` and a cache pull need
/// from ECR's registry API (not SDK calls, so not found by the scan).
#[test]
fn the_runner_policy_allows_every_call_the_code_makes() {
    let prefix = |client: &str| match client {
        "ssm" => "ssm",
        "ecr" => "ecr",
        "secrets" => "secretsmanager",
        "elb" => "elasticloadbalancing",
        "cloudwatch" => "cloudwatch",
        other => panic!("a client the test does not know: {other}"),
    };
    let call = regex_lite_calls();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/aws");
    let mut wanted = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (client, operation) in call(&text) {
            wanted.insert(format!("{}:{}", prefix(&client), pascal(&operation)));
        }
    }
    assert!(wanted.len() >= 15, "the scan found too few calls to be checking anything: {wanted:?}");
    for push in [
        "ecr:BatchCheckLayerAvailability",
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:PutImage",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
    ] {
        wanted.insert(push.to_string());
    }
    let allowed = policy_actions("examples/iam/runner-policy.json");
    let missing: Vec<&String> = wanted.iter().filter(|w| !allows(&allowed, w)).collect();
    assert!(missing.is_empty(), "examples/iam/runner-policy.json does not allow {missing:?}");
}

/// `.<client>\s*.<operation>(` in Rust source, across line breaks, for the SDK clients.
fn regex_lite_calls() -> impl Fn(&str) -> Vec<(String, String)> {
    |text: &str| {
        let flat: String = text.split_whitespace().collect::<Vec<_>>().join("");
        let mut out = vec![];
        for client in ["ssm", "ecr", "secrets", "elb", "cloudwatch"] {
            let needle = format!(".{client}.");
            let mut rest = flat.as_str();
            while let Some(i) = rest.find(&needle) {
                rest = &rest[i + needle.len()..];
                let op: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if !op.is_empty() && rest[op.len()..].starts_with("()") {
                    out.push((client.to_string(), op));
                }
            }
        }
        out
    }
}

/// The instances' policy allows every `aws <service> <command>` the on-instance script and the
/// boot script run, plus what `docker pull` from ECR needs.
#[test]
fn the_instance_policy_allows_every_call_the_instance_makes() {
    let script = format!(
        "{}\n{}",
        ec2_deploy_action::instance::SCRIPT,
        ec2_deploy_action::instance::user_data(
            &[ec2_deploy_action::model::ParameterName::parse("/ec2-deploy/production/web").unwrap()],
            Some("ec2-deploy-launch")
        )
        .unwrap()
    );
    let mut wanted = std::collections::BTreeSet::new();
    for line in script.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for w in words.windows(3) {
            // `aws …`, `$(aws …`, `x=$(aws …`
            let w0 = w[0].rsplit(['(', '=', '"']).next().unwrap_or_default();
            if w0 == "aws" && w[1].chars().all(|c| c.is_ascii_lowercase()) && !w[2].starts_with('-') {
                let command = w[2].trim_end_matches([')', '"', ';']);
                let action = match (w[1], command) {
                    ("ecr", "get-login-password") => "ecr:GetAuthorizationToken".to_string(),
                    (service, command) => format!("{service}:{}", pascal(command)),
                };
                wanted.insert(action);
            }
        }
    }
    assert!(wanted.len() >= 3, "the scan found too few calls to be checking anything: {wanted:?}");
    for pull in ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"] {
        wanted.insert(pull.to_string());
    }
    let allowed = policy_actions("examples/iam/instance-policy.json");
    let missing: Vec<&String> = wanted.iter().filter(|w| !allows(&allowed, w)).collect();
    assert!(missing.is_empty(), "examples/iam/instance-policy.json does not allow {missing:?} (wanted: {wanted:?})");
}

/// The README's size of the boot script (`ec2-deploy user-data`, the script it embeds included)
/// is the size it has, within a tenth.
#[test]
fn the_readme_states_the_boot_scripts_size() {
    let readme = readme();
    let at = readme.find("at about ").expect("the README states the boot script's size (\"at about N KB\")");
    let stated: f64 = readme[at + 9..].split_whitespace().next().unwrap().parse().unwrap();
    assert!(readme[at..].split_whitespace().nth(3) == Some("KB"), "{}", &readme[at..at + 40]);
    let parameter = ec2_deploy_action::model::ParameterName::parse("/ec2-deploy/production/web").unwrap();
    let actual = ec2_deploy_action::instance::user_data(&[parameter], None).unwrap().len() as f64 / 1000.0;
    assert!(
        (stated - actual).abs() <= actual / 10.0,
        "README: about {stated} KB; `ec2-deploy user-data`: {actual:.1} KB"
    );
}

/// The ECR lifecycle example expires untagged images only: never a tagged one (a release, which
/// rollbacks and the record point to; the proxy's `ec2-deploy-proxy-` image; a stage's current
/// `ec2-deploy-cache-` image), and the README names it.
#[test]
fn the_ecr_lifecycle_example_never_expires_a_tagged_image() {
    let policy: serde_json::Value = serde_json::from_str(&root_file("examples/ecr-lifecycle-policy.json")).unwrap();
    let rules = policy["rules"].as_array().expect("rules");
    assert!(!rules.is_empty());
    for rule in rules {
        assert_eq!(rule["selection"]["tagStatus"], "untagged", "{rule}");
        assert_eq!(rule["action"]["type"], "expire", "{rule}");
    }
    assert!(readme().contains("examples/ecr-lifecycle-policy.json"));
}
