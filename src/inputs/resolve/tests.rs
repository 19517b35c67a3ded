//! Resolving inputs: overlay order, defaults, wording of every error.

use super::*;
use crate::inputs::action_env_name;
use crate::model::{EnvVar, Limit, PortMapping, Region, SecretId, TagFilter};
use std::collections::HashMap;
use std::path::Path;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A workspace at /ws with a Dockerfile, plus `files`.
struct MapFiles(HashMap<PathBuf, String>);

impl Files for MapFiles {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.0.get(path).cloned().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.0.keys().any(|f| f.starts_with(path) && f != path)
    }
    fn is_file(&self, path: &Path) -> bool {
        self.0.contains_key(path)
    }
}

fn resolve_with(
    inputs: &[(&str, &str)],
    context: &[(&str, &str)],
    files: &[(&str, &str)],
) -> Result<DeployRequest, Vec<String>> {
    resolve_all(inputs, context, files).map(|mut all| {
        assert_eq!(all.len(), 1, "one request expected");
        all.remove(0)
    })
}

fn resolve_all(
    inputs: &[(&str, &str)],
    context: &[(&str, &str)],
    files: &[(&str, &str)],
) -> Result<Vec<DeployRequest>, Vec<String>> {
    let action_env = env(&inputs
        .iter()
        .map(|(k, v)| (Box::leak(action_env_name(k).into_boxed_str()) as &str, *v))
        .collect::<Vec<_>>());
    let raw = RawInputs::from_action_env(|k| action_env.get(k).cloned());
    let ctx_env = env(context);
    let lookup = move |k: &str| ctx_env.get(k).cloned();
    let ctx = RunContext { env: &lookup, workdir: PathBuf::from("/ws") };
    let mut files: HashMap<PathBuf, String> =
        files.iter().map(|(p, t)| (Path::new("/ws").join(p), t.to_string())).collect();
    files.entry(PathBuf::from("/ws/Dockerfile")).or_insert_with(|| "FROM scratch".into());
    resolve(&raw, &ctx, &MapFiles(files)).map_err(|errs| errs.iter().map(ToString::to_string).collect())
}

const MINIMAL: &[(&str, &str)] = &[("ecr-repository", "web"), ("targets", "Role=web")];

#[test]
fn hyphenated_inputs_arrive_as_the_runner_names_them() {
    assert_eq!(action_env_name("aws-region"), "INPUT_AWS-REGION");
    assert_eq!(action_env_name("ecr-repository"), "INPUT_ECR-REPOSITORY");
    let raw = RawInputs::from_action_env(|k| (k == "INPUT_AWS-REGION").then(|| "eu-west-1".to_string()));
    assert_eq!(raw.get("aws-region"), Some("eu-west-1"));
}

#[test]
fn defaults_fill_what_is_not_given() {
    let req = resolve_with(MINIMAL, &[("GITHUB_SHA", "abc123"), ("AWS_REGION", "eu-west-1")], &[]).unwrap();
    assert_eq!(req.image_tag.as_str(), "abc123");
    assert_eq!(req.region.as_ref().map(Region::as_str), Some("eu-west-1"));
    assert_eq!(req.container.name.as_str(), "web");
    assert_eq!(req.max_concurrency, Limit::Percent(50));
    assert_eq!(req.max_errors, Limit::Count(0));
    assert_eq!(req.timeout, 600);
    assert_eq!(req.container.health_check_timeout, 60);
    assert!(req.build && !req.dry_run);
    assert_eq!(req.build_spec.context, PathBuf::from("."));
    assert_eq!(req.config_file, None);
}

#[test]
fn region_falls_back_to_aws_default_region() {
    let req = resolve_with(MINIMAL, &[("GITHUB_SHA", "a"), ("AWS_DEFAULT_REGION", "ap-northeast-2")], &[]).unwrap();
    assert_eq!(req.region.as_ref().map(Region::as_str), Some("ap-northeast-2"));
}

#[test]
fn multiline_inputs_are_split_trimmed_and_comments_skipped() {
    let req = resolve_with(
        &[
            ("ecr-repository", "team/web"),
            ("image-tag", "v1"),
            ("targets", "Role=web\n  Env = prod , staging \n# a comment\n\n"),
            ("ports", "80:3000\n8443:8443"),
            ("env", "RUST_LOG=info\nGREETING=hello = world"),
            ("build-args", "VERSION=1.2"),
        ],
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(
        req.targets,
        vec![
            TagFilter { key: "Role".into(), values: vec!["web".into()] },
            TagFilter { key: "Env".into(), values: vec!["prod".into(), "staging".into()] },
        ]
    );
    assert_eq!(
        req.container.ports,
        vec![PortMapping { host: 80, container: 3000 }, PortMapping { host: 8443, container: 8443 }]
    );
    assert_eq!(req.container.env[1], EnvVar { name: "GREETING".into(), value: "hello = world".into() });
    assert_eq!(req.container.name.as_str(), "web", "the last path component of the repository");
    assert_eq!(req.build_spec.args, vec![EnvVar { name: "VERSION".into(), value: "1.2".into() }]);
}

const CONFIG: &str = "
defaults:
  ecr-repository: shop
  targets:
    - Role=web
  max-concurrency: 1
environments:
  production:
    targets: [Role=web, Env=prod]
    secret-id: prod/shop
    env:
      LOG: warn
  development:
    targets: Role=web
";

#[test]
fn config_environment_overrides_defaults_and_inputs_override_both() {
    let files = [(DEFAULT_CONFIG, CONFIG)];
    let req = resolve_with(&[("environment", "production"), ("image-tag", "v1")], &[], &files).unwrap();
    assert_eq!(req.repository.as_str(), "shop");
    assert_eq!(req.targets.len(), 2);
    assert_eq!(req.container.secret_id.as_ref().map(SecretId::as_str), Some("prod/shop"));
    assert_eq!(req.max_concurrency, Limit::Count(1));
    assert_eq!(req.container.env, vec![EnvVar { name: "LOG".into(), value: "warn".into() }]);
    assert_eq!(req.config_file, Some(PathBuf::from(DEFAULT_CONFIG)));

    let req =
        resolve_with(&[("environment", "production"), ("image-tag", "v1"), ("max-concurrency", "25%")], &[], &files)
            .unwrap();
    assert_eq!(req.max_concurrency, Limit::Percent(25));
    let req = resolve_with(&[("environment", "development"), ("image-tag", "v1")], &[], &files).unwrap();
    assert_eq!(req.targets.len(), 1);
    assert_eq!(req.container.secret_id, None);
}

#[test]
fn an_explicit_config_file_must_exist_but_the_default_may_not() {
    let errs = resolve_with(&[("config", "deploy/ec2.yml"), ("image-tag", "v1")], &[], &[]).unwrap_err();
    assert!(errs[0].starts_with("input `config`: cannot read deploy/ec2.yml"), "{errs:?}");
    assert!(resolve_with(&[("image-tag", "v1"), ("ecr-repository", "a1"), ("targets", "A=b")], &[], &[]).is_ok());
}

#[test]
fn unknown_environment_lists_the_known_ones() {
    let errs =
        resolve_with(&[("environment", "prod"), ("image-tag", "v1")], &[], &[(DEFAULT_CONFIG, CONFIG)]).unwrap_err();
    assert_eq!(
        errs[0],
        "input `environment`: \"prod\" is not an environment of .github/ec2-deploy.yml (it has: development, production); \
         add an `environments.prod` block or pick one of those"
    );
}

#[test]
fn errors_name_the_config_path_a_bad_value_came_from() {
    let cfg = "environments:\n  production:\n    ecr-repository: shop\n    targets: [Role=web]\n    max-errors: lots\n";
    let errs =
        resolve_with(&[("environment", "production"), ("image-tag", "v1")], &[], &[(DEFAULT_CONFIG, cfg)]).unwrap_err();
    assert_eq!(
        errs,
        vec!["`environments.production.max-errors` in .github/ec2-deploy.yml: expected a number (0 or more) or a percentage such as \"10%\", got \"lots\""]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let errs = resolve_with(&[("max-concurrency", "abc"), ("ports", "80")], &[], &[]).unwrap_err();
    assert_eq!(
        errs,
        vec![
            "input `ecr-repository`: is required: the ECR repository to push to and deploy from",
            "input `image-tag`: is required outside GitHub Actions (there is no GITHUB_SHA to default to)",
            "input `targets`: is required: one Key=Value[,Value...] per line naming the instances' tags, e.g. Role=web",
            "input `ports`: expected host:container such as 80:3000, got \"80\"",
            "input `max-concurrency`: expected a number (1 or more) or a percentage such as \"25%\", got \"abc\"",
        ]
    );
}

#[test]
fn health_check_path_needs_a_port() {
    let errs = resolve_with(
        &[("ecr-repository", "web"), ("targets", "A=b"), ("image-tag", "v"), ("health-check-path", "/health")],
        &[],
        &[],
    )
    .unwrap_err();
    assert_eq!(
        errs,
        vec!["input `health-check-path`: needs `ports`: the path is checked on the first published host port"]
    );
}

#[test]
fn github_token_never_shows_in_debug_output() {
    let req = resolve_with(
        &[("ecr-repository", "web"), ("targets", "A=b"), ("image-tag", "v"), ("github-token", "ghs_sekrit")],
        &[],
        &[],
    )
    .unwrap();
    assert!(!format!("{req:?}").contains("ghs_sekrit"));
}

#[test]
fn a_missing_build_context_or_dockerfile_is_an_input_error() {
    let errs = resolve_with(
        &[("ecr-repository", "web"), ("targets", "A=b"), ("image-tag", "v"), ("context", "app")],
        &[],
        &[],
    )
    .unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("input `context`: the build context app is not a directory"), "{errs:?}");
    let errs = resolve_with(
        &[("ecr-repository", "web"), ("targets", "A=b"), ("image-tag", "v"), ("file", "deploy/Dockerfile")],
        &[],
        &[],
    )
    .unwrap_err();
    assert!(errs[0].starts_with("input `file`: deploy/Dockerfile is not a file in the workspace"), "{errs:?}");
    // Nothing is built: nothing is needed on disk.
    let ok = resolve_with(
        &[("ecr-repository", "web"), ("targets", "A=b"), ("image-tag", "v"), ("context", "app"), ("build", "false")],
        &[],
        &[],
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn the_old_timeout_name_still_works_with_a_warning_naming_the_new_one() {
    let ctx = &[("GITHUB_SHA", "abc123")];
    let mut inputs = MINIMAL.to_vec();
    inputs.push(("timeout", "900"));
    let req = resolve_with(&inputs, ctx, &[]).unwrap();
    assert_eq!(req.timeout, 900);
    assert_eq!(req.warnings.len(), 1, "{:?}", req.warnings);
    assert!(
        req.warnings[0].starts_with("input `timeout` is deprecated: rename it to `command-timeout`"),
        "{:?}",
        req.warnings
    );
    // From the config file too, naming where it is.
    let req = resolve_with(MINIMAL, ctx, &[(".github/ec2-deploy.yml", "defaults:\n  timeout: 700\n")]).unwrap();
    assert_eq!(req.timeout, 700);
    assert!(
        req.warnings[0].starts_with("`defaults.timeout` in .github/ec2-deploy.yml is deprecated"),
        "{:?}",
        req.warnings
    );
    // The new name: no warning; the default: 600.
    let mut inputs = MINIMAL.to_vec();
    inputs.push(("command-timeout", "1200"));
    let req = resolve_with(&inputs, ctx, &[]).unwrap();
    assert_eq!((req.timeout, req.warnings.len()), (1200, 0));
    assert_eq!(resolve_with(MINIMAL, ctx, &[]).unwrap().timeout, 600);
}

#[test]
fn the_registry_must_be_an_ecr_host_unless_aws_is_a_stand_in() {
    let mut inputs = MINIMAL.to_vec();
    inputs.push(("registry", "ghcr.io"));
    let errs = resolve_with(&inputs, &[("GITHUB_SHA", "abc123")], &[]).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("input `registry`: ghcr.io is not an ECR registry host"), "{errs:?}");
    // Another region's ECR is fine; so is any host when AWS itself is a local stand-in.
    let mut inputs = MINIMAL.to_vec();
    inputs.push(("registry", "123456789012.dkr.ecr.us-east-1.amazonaws.com"));
    let req = resolve_with(&inputs, &[("GITHUB_SHA", "abc123"), ("AWS_REGION", "eu-west-1")], &[]).unwrap();
    assert_eq!(req.registry.unwrap().ecr_region().unwrap().as_str(), "us-east-1");
    let mut inputs = MINIMAL.to_vec();
    inputs.push(("registry", "localhost:5000"));
    assert!(
        resolve_with(&inputs, &[("GITHUB_SHA", "abc123"), ("AWS_ENDPOINT_URL", "http://localhost:5001")], &[]).is_ok()
    );
}

const SERVICES: &str = "defaults:
  ecr-repository: team/shop
  targets: [Role=app]
  memory: 256m
environments:
  production:
    services:
      web:
        ports: [\"80:3000\"]
        memory: 512m
      worker:
        command: bin/worker --queue default
";

#[test]
fn each_service_gets_its_own_container_record_and_settings_in_the_files_order() {
    let all = resolve_all(
        &[("environment", "production"), ("image-tag", "v1")],
        &[],
        &[(".github/ec2-deploy.yml", SERVICES)],
    )
    .unwrap();
    let names: Vec<_> = all.iter().map(|r| (r.service.as_deref().unwrap(), r.container.name.as_str())).collect();
    assert_eq!(names, [("web", "web"), ("worker", "worker")]);
    assert_eq!(all[0].release_parameter.as_str(), "/ec2-deploy/production/web");
    assert_eq!(all[1].release_parameter.as_str(), "/ec2-deploy/production/worker");
    // The earlier default (per repository) is where a record of before may be.
    assert_eq!(all[0].legacy_release_parameter.as_ref().unwrap().as_str(), "/ec2-deploy/production/team/shop");
    // A service's key wins over the environment's and the defaults'.
    assert_eq!(all[0].container.options.memory.as_ref().unwrap().to_string(), "512m");
    assert_eq!(all[1].container.options.memory.as_ref().unwrap().to_string(), "256m");
    assert!(all[1].container.ports.is_empty());
    assert_eq!(all[1].container.options.command, ["bin/worker", "--queue", "default"]);
    // `service` picks some, deployed in the file's order whatever order it names them in.
    let some = resolve_all(
        &[("environment", "production"), ("image-tag", "v1"), ("service", "worker")],
        &[],
        &[(".github/ec2-deploy.yml", SERVICES)],
    )
    .unwrap();
    assert_eq!(some.len(), 1);
    assert_eq!(some[0].service.as_deref(), Some("worker"));
}

#[test]
fn without_services_the_record_is_per_container_and_the_repository_default_is_kept_as_the_earlier_one() {
    let req = resolve_with(
        &[("ecr-repository", "shop"), ("targets", "Role=web"), ("image-tag", "v1"), ("environment", "prod")],
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(req.release_parameter.as_str(), "/ec2-deploy/prod/shop");
    assert_eq!(req.legacy_release_parameter, None, "the same parameter: nothing to look for");
    let req = resolve_with(
        &[("ecr-repository", "shop"), ("targets", "Role=web"), ("image-tag", "v1"), ("container-name", "api")],
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(req.release_parameter.as_str(), "/ec2-deploy/default/api");
    assert_eq!(req.legacy_release_parameter.as_ref().unwrap().as_str(), "/ec2-deploy/default/shop");
    let given = resolve_with(
        &[
            ("ecr-repository", "shop"),
            ("targets", "Role=web"),
            ("image-tag", "v1"),
            ("container-name", "api"),
            ("release-parameter", "/x/y"),
        ],
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(given.legacy_release_parameter, None, "a given record is the record");
}

#[test]
fn services_that_would_share_a_container_or_a_record_or_are_unknown_are_refused() {
    let err = resolve_all(
        &[("environment", "production"), ("image-tag", "v1"), ("container-name", "shop")],
        &[],
        &[(".github/ec2-deploy.yml", SERVICES)],
    )
    .unwrap_err();
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].starts_with("services web and worker: both run a container named shop"), "{err:?}");
    let err = resolve_all(
        &[("environment", "production"), ("image-tag", "v1"), ("release-parameter", "/a/b")],
        &[],
        &[(".github/ec2-deploy.yml", SERVICES)],
    )
    .unwrap_err();
    assert!(err[0].starts_with("services web and worker: both record their releases in /a/b"), "{err:?}");
    let err = resolve_all(
        &[("environment", "production"), ("image-tag", "v1"), ("service", "web,cron")],
        &[],
        &[(".github/ec2-deploy.yml", SERVICES)],
    )
    .unwrap_err();
    assert_eq!(err, ["input `service`: \"cron\" is not a service of this environment (it has: web, worker)"]);
    let err = resolve_all(
        &[("ecr-repository", "shop"), ("targets", "Role=web"), ("image-tag", "v1"), ("service", "web")],
        &[],
        &[],
    )
    .unwrap_err();
    assert!(err[0].contains("lists no `services`"), "{err:?}");
    let bad = "defaults:\n  ecr-repository: shop\n  targets: [Role=app]\n  services:\n    Web_1!: {}\n";
    let err = resolve_all(&[("image-tag", "v1")], &[], &[(".github/ec2-deploy.yml", bad)]).unwrap_err();
    assert!(
        err[0].starts_with("`services.Web_1!` in .github/ec2-deploy.yml: the service's name is its container's name"),
        "{err:?}"
    );
}

/// A rollback or a converge deploys a recorded release with its own tag: outside GitHub Actions
/// (no GITHUB_SHA) they need no `image-tag`, and they build nothing, so no build context either.
#[test]
fn a_rollback_or_a_converge_needs_no_image_tag_and_no_build_context() {
    for mode in ["rollback", "converge"] {
        let inputs = [MINIMAL, &[(mode, "true"), ("context", "missing-dir")]].concat();
        let req = resolve_with(&inputs, &[("AWS_REGION", "eu-west-1")], &[]).unwrap();
        assert_eq!((req.rollback, req.converge), (mode == "rollback", mode == "converge"));
    }
    // `operation: rollback` and `operation: converge` are the same.
    for mode in ["rollback", "converge"] {
        let inputs = [MINIMAL, &[("operation", mode), ("context", "missing-dir")]].concat();
        let req = resolve_with(&inputs, &[("AWS_REGION", "eu-west-1")], &[]).unwrap();
        assert_eq!((req.rollback, req.converge), (mode == "rollback", mode == "converge"));
    }
    let inputs = [MINIMAL, &[("operation", "converge"), ("rollback", "true")]].concat();
    let errs = resolve_with(&inputs, &[("AWS_REGION", "eu-west-1")], &[]).unwrap_err();
    assert!(errs[0].starts_with("input `converge`: cannot go with `rollback`"), "{errs:?}");
    // A deploy still needs a tag.
    let errs = resolve_with(MINIMAL, &[("AWS_REGION", "eu-west-1")], &[]).unwrap_err();
    assert!(errs[0].starts_with("input `image-tag`: is required outside GitHub Actions"), "{errs:?}");
}

#[test]
fn the_proxy_trusts_the_private_ranges_unless_told_otherwise_and_nobody_without_ports() {
    let with = |extra: &[(&str, &str)]| {
        let mut inputs = vec![("ecr-repository", "web"), ("targets", "A=b"), ("image-tag", "v"), ("ports", "80:3000")];
        inputs.extend_from_slice(extra);
        resolve_with(&inputs, &[], &[])
    };
    let trusted = |req: DeployRequest| req.container.proxy_trusted.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(trusted(with(&[]).unwrap()), crate::model::PRIVATE_RANGES);
    assert_eq!(trusted(with(&[("proxy-trusted", "none")]).unwrap()), Vec::<String>::new());
    assert_eq!(
        trusted(with(&[("proxy-trusted", "203.0.113.7\n10.1.0.0/16\n2001:db8::/32")]).unwrap()),
        ["203.0.113.7", "10.1.0.0/16", "2001:db8::/32"]
    );
    let both = trusted(with(&[("proxy-trusted", "private\n198.51.100.0/24")]).unwrap());
    assert_eq!(both.len(), crate::model::PRIVATE_RANGES.len() + 1);
    // Without the proxy there is no hop to trust: nothing is recorded.
    assert_eq!(trusted(with(&[("proxy", "false")]).unwrap()), Vec::<String>::new());

    let errs = with(&[("proxy-trusted", "10.0.0.0/33")]).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("input `proxy-trusted`: expected an IP address or a CIDR range such as 10.0.0.0/8, got \"10.0.0.0/33\"; or `private`"), "{errs:?}");
    let errs = with(&[("proxy-trusted", "none\n10.0.0.0/8")]).unwrap_err();
    assert_eq!(
        errs,
        ["input `proxy-trusted`: `none` trusts no hop: give it alone, or list the ranges to trust without it"]
    );
}

const MULTI_STAGE: &str = "FROM base AS deps\nRUN make deps\nFROM deps AS build\nCOPY . .\nRUN make\n\
                           FROM base AS runtime\nCOPY --from=build /out /out\n";

#[test]
fn a_build_knows_the_stages_its_image_copies_from() {
    let inputs = [("ecr-repository", "web"), ("targets", "Role=web"), ("image-tag", "v1"), ("file", "app/Dockerfile")];
    let req = resolve_with(&inputs, &[], &[("app/Dockerfile", MULTI_STAGE)]).unwrap();
    assert_eq!(req.build_spec.stage_cache.stages, ["build"]);
    // a deploy that builds nothing reads no Dockerfile
    let req = resolve_with(&[inputs[0], inputs[1], inputs[2], ("build", "false")], &[], &[]).unwrap();
    assert!(req.build_spec.stage_cache.stages.is_empty());
}

#[test]
fn a_target_that_is_no_stage_of_the_dockerfile_is_refused_naming_the_stages() {
    let inputs = [
        ("ecr-repository", "web"),
        ("targets", "Role=web"),
        ("image-tag", "v1"),
        ("file", "app/Dockerfile"),
        ("target", "runtim"),
    ];
    let errs = resolve_with(&inputs, &[], &[("app/Dockerfile", MULTI_STAGE)]).unwrap_err();
    assert_eq!(
        errs,
        ["input `target`: no stage of the Dockerfile is named \"runtim\"; its stages are deps, build, runtime (app/Dockerfile); give one of them, or leave `target` out to build the last stage"]
    );
}

#[test]
fn a_dockerfile_that_cannot_be_read_still_builds_with_a_note() {
    let inputs = [("ecr-repository", "web"), ("targets", "Role=web"), ("image-tag", "v1")];
    // the workspace's Dockerfile, with text no parser takes
    let req = resolve_with(&inputs, &[], &[("Dockerfile", "FROM base AS a\nCOPY --from=a\n")]).unwrap();
    assert!(req.build_spec.stage_cache.stages.is_empty());
    assert!(req.build_spec.stage_cache.notes[0].starts_with("the Dockerfile was not understood here"));
}

#[test]
fn tags_ec2_deploy_keeps_for_itself_are_no_image_tag() {
    for tag in ["ec2-deploy-cache-deps", "ec2-deploy-proxy-d8542f48d34a"] {
        let errs = resolve_with(&[MINIMAL[0], MINIMAL[1], ("image-tag", tag)], &[], &[]).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0]
                .starts_with(&format!("input `image-tag`: \"{tag}\" starts like the tags ec2-deploy keeps for itself")),
            "{errs:?}"
        );
    }
}

#[test]
fn drain_timeout_defaults_to_30_and_must_fit_with_the_health_check_in_the_command_timeout() {
    let req = resolve_with(MINIMAL, &[("GITHUB_SHA", "a")], &[]).unwrap();
    assert_eq!(req.container.drain_timeout, 30);
    let req = resolve_with(&[MINIMAL[0], MINIMAL[1], ("drain-timeout", "120")], &[("GITHUB_SHA", "a")], &[]).unwrap();
    assert_eq!(req.container.drain_timeout, 120);
    let errs = resolve_with(
        &[MINIMAL[0], MINIMAL[1], ("drain-timeout", "590"), ("health-check-timeout", "20")],
        &[("GITHUB_SHA", "a")],
        &[],
    )
    .unwrap_err();
    assert_eq!(
        errs,
        ["input `drain-timeout`: 590s, after `health-check-timeout` (20s), does not fit in `command-timeout` (600s), which bounds the whole script"]
    );
}

#[test]
fn proxy_hosts_turn_on_https_with_lets_encrypt_unless_told_otherwise() {
    let with = |extra: &[(&str, &str)]| {
        let mut inputs = vec![("ecr-repository", "web"), ("targets", "A=b"), ("image-tag", "v"), ("ports", "80:3000")];
        inputs.extend_from_slice(extra);
        resolve_with(&inputs, &[], &[])
    };
    assert_eq!(with(&[]).unwrap().container.https, None);
    let https = with(&[("proxy-hosts", "app.example.com\nwww.example.com")]).unwrap().container.https.unwrap();
    assert_eq!(https.hosts.iter().map(|h| h.as_str()).collect::<Vec<_>>(), ["app.example.com", "www.example.com"]);
    assert_eq!(https.ca.as_str(), crate::model::LETS_ENCRYPT);
    assert_eq!((https.email, https.ca_root), (None, None));
    let https = with(&[
        ("proxy-hosts", "app.example.com"),
        ("proxy-acme-ca", "letsencrypt-staging"),
        ("proxy-acme-email", "ops@example.com"),
    ])
    .unwrap()
    .container
    .https
    .unwrap();
    assert_eq!(https.ca.as_str(), crate::model::LETS_ENCRYPT_STAGING);
    assert_eq!(https.email.unwrap().as_str(), "ops@example.com");

    // Each mistake named, with its fix.
    let err = |extra: &[(&str, &str)]| with(extra).unwrap_err();
    assert_eq!(
        err(&[("proxy-acme-email", "ops@example.com")]),
        ["input `proxy-acme-email`: needs `proxy-hosts`: the host names the proxy gets certificates for"]
    );
    assert_eq!(
        err(&[("proxy-hosts", "app.example.com"), ("proxy", "false")]),
        ["input `proxy-hosts`: HTTPS on the instance needs the proxy (`proxy: true`)"]
    );
    assert!(err(&[("proxy-hosts", "*.example.com")])[0].contains("a wildcard needs the DNS challenge"));
    assert!(err(&[("proxy-hosts", "a.example.com\na.example.com")])[0].contains("a.example.com is listed twice"));
    assert!(err(&[("proxy-hosts", "a.example.com"), ("proxy-acme-ca", "http://ca/dir")])[0]
        .starts_with("input `proxy-acme-ca`: expected `letsencrypt`, `letsencrypt-staging` or an ACME directory URL"));
    let e = err(&[("proxy-hosts", "a.example.com"), ("ports", "80:3000\n443:8443")]);
    assert!(
        e[0].starts_with("input `proxy-hosts`: the proxy serves HTTPS on host port 443, which `ports` publishes too"),
        "{e:?}"
    );
}

/// `dockerfile` was this action's name for what docker/build-push-action calls `file`: still
/// read, with a warning; both at once is an error naming the old one.
#[test]
fn the_old_dockerfile_name_still_works_with_a_warning_naming_file() {
    let base = [("ecr-repository", "web"), ("targets", "Role=web"), ("image-tag", "v1")];
    let files = &[("app/Dockerfile", MULTI_STAGE)];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut inputs = base.to_vec();
        inputs.extend_from_slice(extra);
        resolve_with(&inputs, &[], files)
    };
    let req = with(&[("dockerfile", "app/Dockerfile")]).unwrap();
    assert_eq!(req.build_spec.stage_cache.stages, ["build"], "the old name's Dockerfile is the one read");
    assert_eq!(
        req.warnings,
        ["input `dockerfile` is deprecated: rename it to `file` (same meaning: the Dockerfile's path, docker/build-push-action's name)"]
    );
    assert!(with(&[("file", "app/Dockerfile")]).unwrap().warnings.is_empty());
    assert_eq!(
        with(&[("file", "app/Dockerfile"), ("dockerfile", "app/Dockerfile")]).unwrap_err(),
        ["input `dockerfile`: is the old name of `file`, which is also set: keep only `file`"]
    );
}
