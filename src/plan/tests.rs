use super::*;
use crate::fake::REGISTRY;
use crate::inputs::DeployRequest;
use crate::model::Ping;
use crate::model::{ContainerName, EnvVar, HealthPath, PortMapping, Secret, SecretId};

fn tag(k: &str, v: &str) -> TagFilter {
    TagFilter { key: k.into(), values: vec![v.into()] }
}

pub fn request() -> DeployRequest {
    DeployRequest {
        environment: EnvironmentName::parse("production").ok(),
        region: Region::parse("eu-west-1").ok(),
        repository: Repository::parse("shop").unwrap(),
        registry: None,
        image_tag: ImageTag::parse("v2").unwrap(),
        build: true,
        build_spec: BuildSpec {
            context: ".".into(),
            dockerfile: None,
            args: vec![],
            target: None,
            platform: None,
            secrets: vec![],
            stage_cache: Default::default(),
        },
        targets: vec![tag("Role", "web"), tag("Env", "prod")],
        container: ContainerSpec {
            name: ContainerName::parse("shop").unwrap(),
            ports: vec![PortMapping { host: 80, container: 3000 }],
            env: vec![EnvVar { name: "RUST_LOG".into(), value: "info".into() }],
            secret_id: SecretId::parse("prod/shop").ok(),
            health_check_path: HealthPath::parse("/health").ok(),
            health_check_timeout: 60,
            drain_timeout: 30,
            https: None,
            proxy: true,
            proxy_trusted: vec![],
            options: Default::default(),
        },
        max_concurrency: Limit::Percent(50),
        max_errors: Limit::Count(0),
        pull_concurrency: Limit::Count(10),
        boot_wait: 300,
        target_groups: vec![],
        skip_offline: false,
        batch_size: Limit::Percent(25),
        canary: true,
        timeout: 600,
        release_parameter: ParameterName::parse("/ec2-deploy/production/shop").unwrap(),
        legacy_release_parameter: None,
        service: None,
        alarms: vec![],
        bake_time: 0,
        ignore_alarms_at_start: false,
        rollback: false,
        rollback_to: None,
        converge: false,
        lock_timeout: 600,
        environment_url: None,
        github_deployment: crate::ports::DeploymentMode::Auto,
        commit: None,
        image_digest: None,
        dry_run: true,
        github_token: None,
        config_file: None,
        proxy_image: ImageName::parse(crate::model::DEFAULT_PROXY_IMAGE).unwrap(),
        warnings: vec![],
        pre_deploy: None,
    }
}

fn instance(id: &str, name: &str, ip: &str, ping: Ping) -> ManagedInstance {
    ManagedInstance { id: InstanceId::parse(id).unwrap(), name: Some(name.into()), ping, ip: Some(ip.into()) }
}

/// The target group the batch tests deploy through.
fn group() -> Vec<TargetGroupArn> {
    vec![TargetGroupArn::parse("arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef")
        .unwrap()]
}

pub fn facts() -> Facts {
    Facts {
        region: Region::parse("eu-west-1").unwrap(),
        auth: RegistryAuth {
            host: RegistryHost::parse(REGISTRY).unwrap(),
            username: "AWS".into(),
            password: Secret("x".into()),
        },
        repository_exists: true,
        existing_digest: None,
        cache_from: ImageTag::parse("v1").ok(),
        proxy_existing: None,
        instances: vec![
            instance("i-0123456789abcdef0", "web-1", "10.0.1.11", Ping::Online),
            instance("i-0123456789abcdef1", "web-2", "10.0.2.12", Ping::Online),
        ],
        secret_arn: Some(Some("arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/shop-AbCdEf".into())),
        missing_target_groups: vec![],
        group_timings: None,
        live: None,
        rollback_to: None,
        versions: vec![],
        unreadable: None,
        older_than_live: None,
        drift: None,
        alarms: vec![],
        lock: None,
        run: RunInfo::default(),
    }
}

#[test]
fn plan_text_for_a_build() {
    let plan = make(&request(), facts()).unwrap();
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn plan_text_for_an_existing_tag() {
    let mut f = facts();
    f.existing_digest = Some(crate::fake::digest_of("shop:v2"));
    f.lock = ParameterName::parse("/ec2-deploy/production/shop-lock").ok();
    let mut req = request();
    req.container.secret_id = None;
    req.dry_run = false;
    f.secret_arn = None;
    let plan = make(&req, f).unwrap();
    assert!(matches!(plan.source, ImageSource::Existing { .. }));
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn every_reason_not_to_go_ahead_is_reported() {
    let mut f = facts();
    f.instances = vec![];
    f.secret_arn = Some(None);
    let errs = make(&request(), f).unwrap_err();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    insta::assert_snapshot!(text.join("\n"));
}

#[test]
fn offline_instances_stop_the_plan() {
    let mut f = facts();
    f.instances[1].ping = Ping::ConnectionLost;
    let errs = make(&request(), f).unwrap_err();
    assert_eq!(errs, vec![PlanError::Offline { count: 1, list: "i-0123456789abcdef1 ConnectionLost".into() }]);
}

#[test]
fn plan_text_for_batches_behind_a_load_balancer() {
    let mut req = request();
    req.target_groups = group();
    req.batch_size = Limit::Count(1);
    let mut f = facts();
    f.instances.push(instance("i-0123456789abcdef2", "web-3", "10.0.3.13", Ping::Online));
    let plan = make(&req, f).unwrap();
    assert!(matches!(&plan.rollout, Rollout::Batches { batches, .. } if batches.len() == 3));
    insta::assert_snapshot!(plan.to_string());
}

#[test]
fn with_on_offline_skip_offline_instances_are_left_out_and_named() {
    let mut req = request();
    req.skip_offline = true;
    let mut f = facts();
    f.instances[1].ping = Ping::ConnectionLost;
    let plan = make(&req, f.clone()).unwrap();
    assert_eq!(plan.instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["i-0123456789abcdef0"]);
    assert_eq!(plan.skipped.len(), 1);
    assert!(matches!(plan.rollout, Rollout::ByTags { by_ids: true, .. }));
    assert!(
        plan.to_string()
            .contains("  skipped    1 with no SSM agent connection (on-offline: skip):\n    i-0123456789abcdef1"),
        "{plan}"
    );
    f.instances[0].ping = Ping::ConnectionLost;
    assert!(matches!(make(&req, f).unwrap_err()[..], [PlanError::AllOffline { .. }]));
}

#[test]
fn a_missing_tag_without_build_stops_the_plan() {
    let mut req = request();
    req.build = false;
    let errs = make(&req, facts()).unwrap_err();
    assert_eq!(errs, vec![PlanError::TagMissing { tag: "v2".into(), repository: "shop".into() }]);
}

#[test]
fn batches_start_with_a_canary() {
    let ids: Vec<InstanceId> = (1..=10).map(crate::fake::id).collect();
    let n = |b: Vec<Vec<InstanceId>>| b.iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(n(batches(&ids[..3], true, Limit::Count(1))), [1, 1, 1]);
    assert_eq!(n(batches(&ids[..5], true, Limit::Count(2))), [1, 2, 2]);
    assert_eq!(n(batches(&ids, true, Limit::Percent(50))), [1, 5, 4]);
    assert_eq!(n(batches(&ids[..4], false, Limit::Percent(50))), [2, 2]);
    assert_eq!(n(batches(&ids[..1], true, Limit::Count(1))), [1]);
    assert_eq!(n(batches(&ids[..3], true, Limit::Percent(1))), [1, 1, 1]);
}

#[test]
fn with_the_proxy_batches_need_no_drain() {
    let mut req = request();
    req.target_groups = group();
    let plan = make(&req, facts()).unwrap();
    assert!(matches!(&plan.rollout, Rollout::Batches { drain: false, .. }), "{plan}");
    assert!(plan.mode().contains("no request dropped"), "{}", plan.mode());

    // Without it, or with a port the container publishes itself, each batch still drains.
    req.container.proxy = false;
    let plan = make(&req, facts()).unwrap();
    assert!(matches!(&plan.rollout, Rollout::Batches { drain: true, .. }));
    assert!(plan.proxy.is_none());
    req.container.proxy = true;
    req.container.ports.push(PortMapping { host: 9090, container: 9090 });
    let plan = make(&req, facts()).unwrap();
    assert!(matches!(&plan.rollout, Rollout::Batches { drain: true, .. }));
    assert!(
        plan.to_string().contains("9090:9090 published by the container itself: not zero-downtime there"),
        "{plan}"
    );
    assert!(plan.to_string().contains("port 80 holds its requests meanwhile, up to"), "{plan}");
}

#[test]
fn the_first_deploy_with_the_proxy_announces_the_move_and_drains() {
    let mut req = request();
    req.target_groups = group();
    let mut f = facts();
    let mut live_container = req.container.clone();
    live_container.proxy = false;
    f.live = Some(crate::release::Recorded {
        version: 3,
        release: crate::release::Release {
            tag: ImageTag::parse("v1").unwrap(),
            image: ImageRef::parse(&format!("{REGISTRY}/shop@sha256:{}", "1".repeat(64))).unwrap(),
            deployed_at: "2026-11-30T10:00:00Z".into(),
            commit: None,
            commit_time: None,
            run_url: None,
            container: live_container,
            header: String::new(),
            proxy_image: None,
            timings: None,
            rolled_back_from: None,
        },
    });
    let plan = make(&req, f).unwrap();
    assert!(plan.proxy.as_ref().is_some_and(|p| p.migration));
    // The move leaves the port without an answer for a moment: the batch leaves the load balancer.
    assert!(matches!(&plan.rollout, Rollout::Batches { drain: true, .. }));
    insta::assert_snapshot!(plan.to_string());
}
