//! Whole deploys against the fake world (`crate::fake`): inputs as a request, then plan, lock,
//! build, roll out and record, with the order of events and the end state of every instance,
//! target group and parameter checked. Time is tokio's paused clock: waits cost nothing.

use std::time::Duration;

use super::*;
use crate::cancel::Cancel;
use crate::fake::{id, World, REGISTRY};
use crate::github::Runner;
use crate::model::{
    ContainerName, ContainerSpec, EnvironmentName, HealthPath, ImageTag, Limit, ParameterName, PortMapping, Region,
    Repository, TagFilter, TargetGroupArn,
};
use crate::ports::{BuildSpec, Clock};
use crate::release::{schema, Releases};

pub const GROUP: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
pub const RECORD: &str = "/ec2-deploy/production/shop";
pub const PROXY_IMAGE: &str =
    "caddy:2.11.7-alpine@sha256:d8542f48d34a9cf4e4c11a478865229840e87e4c96ea3f439101f31a5d35f75f";

pub fn request(tag: &str) -> DeployRequest {
    DeployRequest {
        environment: EnvironmentName::parse("production").ok(),
        region: Region::parse("eu-west-1").ok(),
        repository: Repository::parse("shop").unwrap(),
        registry: None,
        image_tag: ImageTag::parse(tag).unwrap(),
        image_digest: None,
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
        targets: vec![TagFilter { key: "Role".into(), values: vec!["web".into()] }],
        container: ContainerSpec {
            name: ContainerName::parse("shop").unwrap(),
            ports: vec![PortMapping { host: 80, container: 3000 }],
            env: vec![],
            secret_id: None,
            health_check_path: HealthPath::parse("/health").ok(),
            health_check_timeout: 30,
            drain_timeout: 30,
            https: None,
            proxy: false,
            proxy_trusted: vec![],
            options: Default::default(),
        },
        max_concurrency: Limit::Percent(50),
        max_errors: Limit::Count(0),
        pull_concurrency: Limit::Count(10),
        boot_wait: 300,
        target_groups: vec![],
        skip_offline: false,
        batch_size: Limit::Count(1),
        canary: true,
        timeout: 600,
        release_parameter: ParameterName::parse(RECORD).unwrap(),
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
        commit: Some("c0ffee".into()),
        dry_run: false,
        github_token: None,
        config_file: None,
        proxy_image: crate::model::ImageName::parse(PROXY_IMAGE).unwrap(),
        warnings: vec![],
        pre_deploy: None,
    }
}

pub fn with_proxy(mut req: DeployRequest) -> DeployRequest {
    req.container.proxy = true;
    req
}

pub fn in_batches(mut req: DeployRequest) -> DeployRequest {
    req.target_groups = vec![TargetGroupArn::parse(GROUP).unwrap()];
    req
}

/// A world of `n` web instances, the repository, and the target group with all of them in it.
pub fn world(n: u32) -> World {
    let w = World::with_instances(n);
    w.add_repository("shop");
    w.add_target_group(&TargetGroupArn::parse(GROUP).unwrap(), &(1..=n).collect::<Vec<_>>());
    w
}

/// A world of `n` instances that v1 was deployed to, by tags.
pub async fn on_v1(n: u32) -> World {
    let w = world(n);
    let (result, log) = deploy(&w, &request("v1")).await;
    assert!(report(result, &log).success(), "{log:#?}");
    w
}

pub fn image(tag: &str) -> String {
    format!("{REGISTRY}/shop@{}", crate::fake::digest_of(&format!("shop:{tag}")))
}

/// One run of `req` in `w`: its result and the log a user would read.
pub async fn deploy(w: &World, req: &DeployRequest) -> (Result<Outcome, Error>, Vec<String>) {
    deploy_with(w, req, &Cancel::default()).await
}

pub async fn deploy_with(w: &World, req: &DeployRequest, cancel: &Cancel) -> (Result<Outcome, Error>, Vec<String>) {
    let info = RunInfo { commit: req.commit.clone(), by: "test run".into(), ..RunInfo::default() };
    deploy_as(w, req, cancel, &info).await
}

/// A run with what GitHub says about it (event, commit time).
pub async fn deploy_as(
    w: &World,
    req: &DeployRequest,
    cancel: &Cancel,
    info: &RunInfo,
) -> (Result<Outcome, Error>, Vec<String>) {
    let runner = Runner::capture();
    let cx = Context { runner: &runner, cancel, workdir: std::path::Path::new(".") };
    let result = run(req, w, info, &cx, Lease::default()).await;
    (result, runner.captured())
}

pub fn report(result: Result<Outcome, Error>, log: &[String]) -> DeployReport {
    match result {
        Ok(Outcome::Finished(r)) => *r,
        Ok(Outcome::DryRun(_)) => panic!("a dry run"),
        Err(e) => panic!("{e}\n{}", log.join("\n")),
    }
}

pub fn running(w: &World, n: u32) -> Option<String> {
    w.instance(n).running.map(|c| c.image)
}

pub fn records(w: &World) -> Vec<crate::release::Release> {
    w.parameter(RECORD).iter().map(|p| schema::decode(&p.value).unwrap()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_deploy_by_tags_builds_rolls_out_and_records_the_release_it_sent() {
    let w = world(3);
    let (result, log) = deploy(&w, &request("v1")).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert_eq!(
        w.log(),
        [
            "put /ec2-deploy/production/shop-lock v1",
            "build shop:v1",
            "send pull 1,2,3",
            "send deploy 1,2,3",
            "put /ec2-deploy/production/shop v1",
            "put /ec2-deploy/production/shop-lock v2"
        ]
    );
    for n in 1..=3 {
        assert_eq!(running(&w, n), Some(image("v1")));
    }
    // The record holds the release by digest with the very header the instances ran.
    let recorded = records(&w);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].image.to_string(), image("v1"));
    assert_eq!(r.release_version, Some(1));
    let sent = crate::fake::header_values(&recorded[0].header);
    assert_eq!(sent["IMAGE"], image("v1"));
    assert_eq!(sent["MODE"], "deploy");
    // The lock was taken, and released at the end.
    let lock = w.parameter("/ec2-deploy/production/shop-lock");
    assert!(lock.last().unwrap().value.contains("\"state\":\"released\""), "{lock:?}");
}

#[tokio::test(start_paused = true)]
async fn redeploying_what_runs_restarts_nothing_and_builds_nothing() {
    let w = on_v1(2).await;
    let (result, log) = deploy(&w, &request("v1")).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert_eq!(w.log().iter().filter(|e| e.starts_with("build")).count(), 1, "{:#?}", w.log());
    assert!(r.instances.iter().all(|i| i.outcome == Some(crate::report::Outcome::Unchanged)));
    assert!(log.iter().any(|l| l.contains("is already in the registry")), "{log:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_build_keeps_each_stage_copied_from_beside_the_image_but_never_as_a_release() {
    let w = world(1);
    // "a1" sorts before the cache's tag: the fake's newest tag would be the cache's without the filter
    let mut req = request("a1");
    req.build_spec.stage_cache.stages = vec!["deps".into()];
    let (result, log) = deploy(&w, &req).await;
    assert!(report(result, &log).success(), "{log:#?}");
    assert!(w.log().contains(&"push stage deps as shop:ec2-deploy-cache-deps".to_string()), "{:#?}", w.log());
    assert!(
        log.iter().any(|l| l.contains("stage deps copied from: built and pushed as :ec2-deploy-cache-deps")),
        "{log:#?}"
    );
    // The next build's own layer cache is the last release, never a stage's image.
    let mut next = request("b2");
    next.build_spec.stage_cache.stages = vec!["deps".into()];
    let (result, log) = deploy(&w, &next).await;
    assert!(report(result, &log).success(), "{log:#?}");
    assert!(log.iter().any(|l| l.contains(&format!("(layer cache from {REGISTRY}/shop:a1)"))), "{log:#?}");
    assert!(crate::plan::is_reserved_tag(&crate::plan::cache_tag("deps")));
}

#[tokio::test(start_paused = true)]
async fn a_stage_cache_that_cannot_be_pushed_is_a_warning_not_a_failed_deploy() {
    let w = world(1);
    w.faults.lock().unwrap().stage_cache_push_fails = true;
    let mut req = request("v1");
    req.build_spec.stage_cache.stages = vec!["deps".into()];
    let (result, log) = deploy(&w, &req).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert_eq!(running(&w, 1), Some(image("v1")));
    assert!(
        log.iter().any(|l| l.starts_with("warning: Layer cache: the layer cache of stage deps was not pushed")),
        "{log:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_plans_and_changes_nothing() {
    let w = world(2);
    let mut req = request("v1");
    req.dry_run = true;
    let (result, log) = deploy(&w, &req).await;
    assert!(matches!(result, Ok(Outcome::DryRun(_))), "{log:#?}");
    assert!(w.log().is_empty(), "{:#?}", w.log());
    assert!(log.iter().any(|l| l.contains("Dry run: nothing was built, pushed or sent.")));
}

#[tokio::test(start_paused = true)]
async fn batches_drain_swap_and_readmit_one_after_another() {
    let w = world(3);
    let (result, log) = deploy(&w, &in_batches(request("v1"))).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert_eq!(
        fleet_events(&w.log()),
        [
            "build shop:v1",
            "send pull 1,2,3",
            "out 1",
            "send deploy 1",
            "in 1",
            "out 2",
            "send deploy 2",
            "in 2",
            "out 3",
            "send deploy 3",
            "in 3"
        ]
    );
    assert!((1..=3).all(|n| w.in_load_balancer(n) && running(&w, n) == Some(image("v1"))));
    assert_eq!(records(&w).len(), 1);
}

/// Three instances on v1, then `faults`, then a deploy of v2 in batches of one.
async fn v1_then_v2_in_batches(faults: impl FnOnce(&World)) -> (World, DeployReport, Vec<String>) {
    let w = world(3);
    let (result, log) = deploy(&w, &in_batches(request("v1"))).await;
    assert!(report(result, &log).success());
    faults(&w);
    let (result, log) = deploy(&w, &in_batches(request("v2"))).await;
    let r = report(result, &log);
    (w, r, log)
}

/// What happened to images, instances and target groups (not to parameters).
pub fn fleet_events(log: &[String]) -> Vec<String> {
    log.iter().filter(|e| !e.starts_with("put ") && !e.starts_with("delete ")).cloned().collect()
}

fn after_v1(w: &World) -> Vec<String> {
    let log = w.log();
    let start = log.iter().position(|e| e == "build shop:v2").unwrap_or(0);
    fleet_events(&log[start..])
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_rolls_back_itself_and_the_batches_before_and_leaves_the_rest() {
    let (w, r, log) = v1_then_v2_in_batches(|w| {
        w.set_faults(2, |f| {
            f.unhealthy_images.insert(image("v2"));
        })
    })
    .await;
    assert!(!r.success());
    assert!(
        matches!(&r.batches[1].outcome, crate::report::BatchOutcome::Failed { phase: crate::report::Phase::Swap, reason } if reason.contains("GET /health answered 503")),
        "{:?}",
        r.batches[1]
    );
    assert_eq!(r.batches[2].outcome, crate::report::BatchOutcome::NotStarted);
    let rollback = r.rollback.as_ref().unwrap();
    assert_eq!(rollback.problems, Vec::<String>::new(), "{log:#?}");
    // The record still names v1, and every instance runs it again: none drifted.
    let summary = crate::report::summary::summary_markdown(&r);
    assert!(summary.contains("| 3 | 0 | 0 | 0 | 0 | 0 |"), "{summary}");
    // Batch 2 restored itself and goes back in; batch 1 leaves, rolls back, comes back; batch 3
    // is never touched.
    assert_eq!(
        after_v1(&w),
        [
            "build shop:v2",
            "send pull 1,2,3",
            "out 1",
            "send deploy 1",
            "in 1",
            "out 2",
            "send deploy 2",
            "in 2",
            "out 1",
            "send rollback 1",
            "in 1"
        ]
    );
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v1")) && w.in_load_balancer(n)));
    assert_eq!(records(&w).len(), 1, "a failed deploy records nothing");
}

#[tokio::test(start_paused = true)]
async fn a_batch_unhealthy_at_the_load_balancer_is_rolled_back_too() {
    let (w, r, log) = v1_then_v2_in_batches(|w| {
        w.set_faults(2, |f| {
            f.unhealthy_in_lb.insert(image("v2"));
        })
    })
    .await;
    assert!(
        matches!(
            &r.batches[1].outcome,
            crate::report::BatchOutcome::Failed { phase: crate::report::Phase::Healthy, .. }
        ),
        "{log:#?}"
    );
    assert_eq!(r.rollback.as_ref().unwrap().problems, Vec::<String>::new(), "{log:#?}");
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v1")) && w.in_load_balancer(n)), "{:#?}", w.log());
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_never_ends_changes_nothing_and_puts_the_batch_back() {
    let (w, r, log) = v1_then_v2_in_batches(|w| w.set_faults(1, |f| f.drain_stuck = true)).await;
    assert!(
        matches!(&r.batches[0].outcome, crate::report::BatchOutcome::Failed { phase: crate::report::Phase::Drain, reason } if reason.contains("still draining")),
        "{log:#?}"
    );
    assert_eq!(after_v1(&w), ["build shop:v2", "send pull 1,2,3", "out 1", "in 1"]);
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v1")) && w.in_load_balancer(n)));
}

#[tokio::test(start_paused = true)]
async fn a_failed_rollback_is_reported_and_never_leaves_an_instance_without_a_release() {
    let (w, r, log) = v1_then_v2_in_batches(|w| {
        w.set_faults(3, |f| {
            f.unhealthy_images.insert(image("v2"));
        });
        w.set_faults(1, |f| f.rollback_fails = true);
    })
    .await;
    let rollback = r.rollback.as_ref().unwrap();
    assert_eq!(rollback.problems.len(), 1, "{log:#?}");
    assert!(
        rollback.problems[0].starts_with(&format!("{}: rollback failed: rollback failed", id(1))),
        "{:?}",
        rollback.problems
    );
    assert_eq!(
        (running(&w, 1), running(&w, 2), running(&w, 3)),
        (Some(image("v2")), Some(image("v1")), Some(image("v1")))
    );
    assert!((1..=3).all(|n| w.in_load_balancer(n)));
}

/// The script writes `-` for the settings of a container it adopted (one without its label);
/// the rollback to it must ask for no settings, not for settings called `-` (it exited 18).
#[tokio::test(start_paused = true)]
async fn a_failed_first_deploy_goes_back_to_the_adopted_containers() {
    let w = world(2);
    let by_hand = format!("{REGISTRY}/shop@{}", crate::fake::digest_of("shop:by-hand"));
    for n in 1..=2 {
        w.set_adopted(n, &by_hand);
    }
    w.set_faults(2, |f| {
        f.unhealthy_images.insert(image("v1"));
    });
    let mut req = request("v1");
    req.max_concurrency = Limit::Count(1);
    let (result, log) = deploy(&w, &req).await;
    let r = report(result, &log);
    assert!(!r.success(), "{log:#?}");
    let rollback = r.rollback.as_ref().expect("a rollback");
    assert_eq!(rollback.problems, Vec::<String>::new(), "{log:#?}");
    assert_eq!((running(&w, 1), running(&w, 2)), (Some(by_hand.clone()), Some(by_hand)));
}

/// Going back from a release without the proxy to one with it needs that release's proxy: the
/// rollback was rendered with the failed run's settings (no proxy), so the instance could not
/// start one and the rollback failed (exit 14 on the bed).
#[tokio::test(start_paused = true)]
async fn the_rollback_to_a_proxied_release_carries_that_releases_proxy() {
    let w = world(2);
    let (result, log) = deploy(&w, &with_proxy(request("v1"))).await;
    assert!(report(result, &log).success(), "{log:#?}");
    w.set_faults(2, |f| {
        f.unhealthy_images.insert(image("v2"));
    });
    let mut req = request("v2"); // proxy: false
    req.max_concurrency = Limit::Count(1);
    let (result, log) = deploy(&w, &req).await;
    let r = report(result, &log);
    assert!(!r.success() && r.rollback.is_some(), "{log:#?}");
    let scripts = w.scripts_sent();
    let rollback = scripts
        .iter()
        .map(|s| crate::fake::header_values(s))
        .find(|h| h["MODE"] == "rollback")
        .expect("a rollback was sent");
    let v1 = crate::fake::header_values(&records(&w)[0].header);
    for key in ["PROXY", "PROXY_IMAGE", "PROXY_PORT", "APP_PORT", "RELEASE", "HEALTH_PATH"] {
        assert_eq!(rollback.get(key), v1.get(key), "{key} of the rollback");
    }
    assert_eq!(rollback["PROXY"], "1");
}

#[tokio::test(start_paused = true)]
async fn by_tags_past_max_errors_the_switched_instances_go_back() {
    let w = on_v1(3).await;
    w.set_faults(3, |f| {
        f.unhealthy_images.insert(image("v2"));
    });
    let mut req = request("v2");
    req.max_concurrency = Limit::Percent(100);
    let (result, log) = deploy(&w, &req).await;
    let r = report(result, &log);
    assert!(!r.success());
    let rollback = r.rollback.as_ref().expect("a rollback");
    assert!(rollback.problems.is_empty(), "{log:#?}");
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v1"))), "{:#?}", w.log());

    // Within max-errors: the run succeeds with a warning and the failed one keeps v1.
    req.max_errors = Limit::Count(1);
    let (result, log) = deploy(&w, &req).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("1 instance(s) failed, within max-errors (1)")), "{log:#?}");
    assert_eq!((running(&w, 1), running(&w, 3)), (Some(image("v2")), Some(image("v1"))));
}

#[tokio::test(start_paused = true)]
async fn a_cancel_mid_batch_starts_nothing_new_rolls_nothing_back_and_readmits_the_batch() {
    let w = world(3);
    let (result, log) = deploy(&w, &in_batches(request("v1"))).await;
    assert!(report(result, &log).success());
    let cancel = Cancel::default();
    w.set_faults(2, |f| f.script_seconds = Some(60));
    let req = in_batches(request("v2"));
    let before = w.log().len();
    let (result, log) = tokio::join!(deploy_with(&w, &req, &cancel), async {
        // Batch 2's script is running (batch 1 took about 20 s of drain, swap and health; the
        // pull before it, 60 s on instance 2).
        while !(w.instance(2).busy && w.log()[before..].iter().any(|e| e == "send deploy 2")) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cancel.cancel();
    })
    .0;
    let r = report(result, &log);
    assert!(r.cancelled && !r.success());
    assert!(r.rollback.is_none(), "a cancel must not start a rollback");
    use crate::report::BatchOutcome::*;
    assert_eq!(r.batches.iter().map(|b| b.outcome.clone()).collect::<Vec<_>>(), [Done, Cancelled, NotStarted]);
    assert_eq!(
        after_v1(&w),
        ["build shop:v2", "send pull 1,2,3", "out 1", "send deploy 1", "in 1", "out 2", "send deploy 2", "in 2"]
    );
    assert!((1..=3).all(|n| w.in_load_balancer(n)), "every instance is registered again");
    assert_eq!(records(&w).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stored_record_is_read_back_through_the_same_validation() {
    let w = on_v1(1).await;
    let history = Releases::new(ParameterName::parse(RECORD).unwrap()).history(&w).await.unwrap();
    let live = history.live().unwrap().unwrap();
    assert_eq!(live.version, 1);
    assert_eq!(live.release.container, request("v1").container);
}

#[tokio::test(start_paused = true)]
async fn with_the_proxy_batches_leave_the_load_balancer_alone_and_the_proxy_is_copied_once() {
    let w = world(3);
    let mut req = in_batches(request("v1"));
    req.container.proxy = true;
    let (result, log) = deploy(&w, &req).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert_eq!(
        fleet_events(&w.log()),
        [
            "build shop:v1",
            "copy caddy:2.11.7-alpine@sha256:d8542f48d34a9cf4e4c11a478865229840e87e4c96ea3f439101f31a5d35f75f to shop:ec2-deploy-proxy-d8542f48d34a",
            "send pull 1,2,3",
            "send deploy 1",
            "in 1",
            "send deploy 2",
            "in 2",
            "send deploy 3",
            "in 3"
        ],
        "never out: registering what is registered changes nothing"
    );
    assert!((1..=3).all(|n| w.in_load_balancer(n) && running(&w, n) == Some(image("v1"))));
    assert!(!r.drained && r.mode.contains("no request dropped"), "{}", r.mode);
    // The record keeps the copy, by digest in the deploy's repository, for rollbacks and boots.
    let proxy = records(&w)[0].proxy_image.clone().expect("the proxy's image is recorded");
    assert_eq!(proxy.repository.as_str(), "shop");

    // The next deploy finds the copy and makes none.
    let (result, log) = deploy(&w, &in_batches(with_proxy(request("v2")))).await;
    assert!(report(result, &log).success(), "{log:#?}");
    assert_eq!(w.log().iter().filter(|e| e.starts_with("copy")).count(), 1, "{:#?}", w.log());
    assert_eq!(records(&w)[1].proxy_image, Some(proxy));
}

/// Found on the bed: with the proxy a batch skipped registering as well as draining, so an
/// instance that was not in the target group yet (a new one) never became healthy there.
#[tokio::test(start_paused = true)]
async fn with_the_proxy_an_instance_not_yet_in_the_target_group_is_registered() {
    let w = World::with_instances(3);
    w.add_repository("shop");
    w.add_target_group(&TargetGroupArn::parse(GROUP).unwrap(), &[1, 2]);
    let (result, log) = deploy(&w, &in_batches(with_proxy(request("v1")))).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert!((1..=3).all(|n| w.in_load_balancer(n)), "{:#?}", w.log());
    assert!(!w.log().iter().any(|e| e.starts_with("out ")), "no batch was taken out: {:#?}", w.log());
}

/// `github-deployment`: auto reports to the job's own deployment when the job has one (GitHub
/// makes one for a job with `environment:`), and makes one only when it has none; create always
/// makes one; off talks to no deployment at all.
#[tokio::test(start_paused = true)]
async fn a_run_reports_to_the_jobs_deployment_when_there_is_one_and_makes_one_only_when_asked() {
    use crate::fake::FakeGitHub;
    use crate::ports::DeploymentMode;
    let info = RunInfo {
        commit: Some("c0ffee".into()),
        run_url: Some("https://github.com/octo/shop/actions/runs/7".into()),
        by: "test run".into(),
        ..RunInfo::default()
    };
    let info = &info;
    let calls = |job: Option<u64>, mode: DeploymentMode| async move {
        let mut w = world(1);
        w.github = Some(FakeGitHub { job_deployment: std::sync::Mutex::new(job), ..FakeGitHub::default() });
        let mut req = request("v1");
        req.github_deployment = mode;
        let (result, log) = deploy_as(&w, &req, &Cancel::default(), info).await;
        let r = report(result, &log);
        assert!(r.success(), "{log:#?}");
        let calls = w.github.as_ref().unwrap().calls.lock().unwrap().clone();
        (r.deployment_id, calls)
    };
    assert_eq!(
        calls(Some(41), DeploymentMode::Auto).await,
        (Some(41), vec!["find c0ffee production".into(), "status 41 in_progress".into(), "status 41 success".into()])
    );
    assert_eq!(
        calls(None, DeploymentMode::Auto).await,
        (
            // The fake numbers a new deployment by its count of calls.
            Some(2),
            vec![
                "find c0ffee production".into(),
                "deployment c0ffee production ec2-deploy: deploy v1".into(),
                "status 2 in_progress".into(),
                "status 2 success".into()
            ]
        )
    );
    assert_eq!(
        calls(Some(41), DeploymentMode::Create).await,
        (
            Some(1),
            vec![
                "deployment c0ffee production ec2-deploy: deploy v1".into(),
                "status 1 in_progress".into(),
                "status 1 success".into()
            ]
        )
    );
    assert_eq!(calls(Some(41), DeploymentMode::Off).await, (None, vec![]));
}

/// `pre-deploy` runs once, on the canary, before anything is switched; a redeploy of the live
/// release and a rollback do not run it again.
#[tokio::test(start_paused = true)]
async fn pre_deploy_runs_once_on_the_canary_before_any_switch_and_not_again() {
    let w = world(3);
    let mut req = in_batches(request("v1"));
    req.pre_deploy =
        Some(crate::inputs::PreDeploy { command: vec!["bin/migrate".into(), "up".into()], target: None, timeout: 300 });
    let (result, log) = deploy(&w, &req).await;
    let done = report(result, &log);
    assert!(done.success(), "{log:#?}");
    // Its output is in the log when it succeeds too, and the summary says how long it took.
    assert!(log.iter().any(|l| l.contains("  | migrated 3 tables")), "{log:#?}");
    let line = done.pre_deploy.as_deref().unwrap_or_default();
    assert!(line.starts_with("`bin/migrate up` on `i-00000000000000001` succeeded in "), "{line}");
    let events = fleet_events(&w.log());
    // Pulled everywhere first, then the one-off, then the first batch.
    assert_eq!(events[..4], ["build shop:v1", "send pull 1,2,3", "send predeploy 1", "out 1"], "{events:#?}");
    assert_eq!(w.log().iter().filter(|e| e.starts_with("send predeploy")).count(), 1);
    assert!(log.iter().any(|l| l.contains("  pre-deploy bin/migrate up on i-00000000000000001, at most 300s")));

    // The same release again: nothing restarts, and the one-off command does not run again.
    let (result, log) = deploy(&w, &req).await;
    assert!(report(result, &log).success(), "{log:#?}");
    assert_eq!(w.log().iter().filter(|e| e.starts_with("send predeploy")).count(), 1, "{:#?}", w.log());
    assert!(log.iter().any(|l| l.contains("not run (this release is live already")), "{log:#?}");

    // v2 runs it; the rollback to v1 does not.
    let mut v2 = req.clone();
    v2.image_tag = crate::model::ImageTag::parse("v2").unwrap();
    let (result, log) = deploy(&w, &v2).await;
    assert!(report(result, &log).success(), "{log:#?}");
    assert_eq!(w.log().iter().filter(|e| e.starts_with("send predeploy")).count(), 2);
    let mut back = req.clone();
    back.rollback = true;
    let (result, log) = deploy(&w, &back).await;
    assert!(report(result, &log).success(), "{log:#?}");
    assert_eq!(w.log().iter().filter(|e| e.starts_with("send predeploy")).count(), 2, "{:#?}", w.log());
    assert!(log.iter().any(|l| l.contains("not run (a rollback never runs it)")), "{log:#?}");
}

/// A pre-deploy that fails switches nothing and fails the run with its output.
#[tokio::test(start_paused = true)]
async fn a_failing_pre_deploy_switches_nothing_and_fails_with_its_output() {
    let w = on_v1(2).await;
    w.set_faults(2, |f| f.pre_deploy_exit = 3);
    let mut req = request("v2");
    req.pre_deploy = Some(crate::inputs::PreDeploy {
        command: vec!["bin/migrate".into()],
        target: Some(crate::fake::id(2)),
        timeout: 300,
    });
    let before = w.log().len();
    let (result, log) = deploy(&w, &req).await;
    let err = match result {
        Err(e) => e,
        Ok(_) => panic!("a failed pre-deploy succeeded: {log:#?}"),
    };
    assert_eq!(err.exit(), crate::Exit::DeployFailed);
    let text = err.to_string();
    assert!(text.starts_with("pre-deploy failed on i-00000000000000002: pre-deploy exited with 3"), "{text}");
    assert!(text.contains("migration 7 failed: relation exists"), "{text}");
    assert!(!w.log()[before..].iter().any(|e| e.starts_with("send deploy")), "{:#?}", w.log());
    for n in 1..=2 {
        assert_eq!(running(&w, n), Some(image("v1")));
    }
}

/// The record's default moved from per repository to per container: a record of before, of this
/// container, is used where it is (its history and its lock), one of another container is not.
#[tokio::test(start_paused = true)]
async fn a_record_under_the_earlier_default_is_used_in_place_only_for_its_own_container() {
    let w = world(2);
    let (result, log) = deploy(&w, &request("v1")).await;
    report(result, &log);
    let moved = |name: &str| {
        let mut req = request("v2");
        req.release_parameter = ParameterName::parse("/ec2-deploy/production/per-container").unwrap();
        req.legacy_release_parameter = Some(ParameterName::parse(RECORD).unwrap());
        req.container.name = ContainerName::parse(name).unwrap();
        req
    };
    let (result, log) = deploy(&w, &moved("shop")).await;
    let r = report(result, &log);
    assert_eq!(r.release_version, Some(2), "{}", log.join("\n"));
    assert_eq!(records(&w).len(), 2);
    assert!(w.parameter("/ec2-deploy/production/per-container").is_empty());
    assert!(log.iter().any(|l| l.contains("the earlier default, which holds shop's releases")), "{log:?}");

    // Another container's first deploy starts its own record and leaves that one alone.
    let (result, log) = deploy(&w, &moved("worker")).await;
    let r = report(result, &log);
    assert_eq!(r.release_version, Some(1));
    assert_eq!(records(&w).len(), 2);
    assert_eq!(w.parameter("/ec2-deploy/production/per-container").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn services_publishing_one_host_port_on_shared_instances_are_refused_before_anything_changes() {
    let w = world(2);
    let (mut web, mut worker) = (request("v1"), request("v1"));
    web.service = Some("web".into());
    worker.service = Some("worker".into());
    worker.container.name = ContainerName::parse("worker").unwrap();
    worker.container.ports = vec![PortMapping { host: 80, container: 4000 }];
    let err = check_shared_ports(&[web.clone(), worker.clone()], &w).await.unwrap_err();
    assert_eq!(err.exit(), crate::Exit::BadInput);
    let text = err.to_string();
    assert!(text.starts_with("services web and worker both publish host port 80, and both run on"), "{text}");
    assert!(text.contains(id(1).as_str()) && text.contains(id(2).as_str()), "{text}");
    assert_eq!(w.commands_sent(), 0);
    // Another host port, or instances of their own: nothing to refuse.
    worker.container.ports = vec![PortMapping { host: 81, container: 4000 }];
    check_shared_ports(&[web.clone(), worker.clone()], &w).await.unwrap();
    worker.container.ports = vec![PortMapping { host: 80, container: 4000 }];
    worker.targets = vec![TagFilter::parse("Role=worker").unwrap()];
    check_shared_ports(&[web, worker], &w).await.unwrap();
}

fn watching(mut req: DeployRequest, bake: u32) -> DeployRequest {
    req.alarms = vec![crate::model::AlarmSelector::parse("shop-*").unwrap()];
    req.bake_time = bake;
    req
}

/// The alarm goes off once the second batch's command is out (the fake orders it after that
/// command: "during the bake of batch 2").
#[tokio::test(start_paused = true)]
async fn an_alarm_during_the_bake_of_batch_2_rolls_back_batches_1_and_2_and_leaves_batch_3() {
    let w = world(3);
    w.set_alarm("shop-5xx", crate::model::AlarmState::Ok);
    w.set_alarm("shop-latency", crate::model::AlarmState::Ok);
    let (result, log) = deploy(&w, &watching(in_batches(request("v1")), 0)).await;
    assert!(report(result, &log).success(), "{log:#?}");
    w.alarm_after_commands("shop-5xx", 2);
    let started = w.now();
    let (result, log) = deploy(&w, &watching(in_batches(request("v2")), 60)).await;
    let r = report(result, &log);
    assert!(!r.success());
    let reason = match &r.batches[1].outcome {
        crate::report::BatchOutcome::Failed { phase: crate::report::Phase::Bake, reason } => reason.clone(),
        other => panic!("{other:?}\n{log:#?}"),
    };
    assert!(reason.starts_with("alarm shop-5xx went into ALARM after batch 2/3: Threshold Crossed"), "{reason}");
    assert_eq!(r.alarm.as_deref(), Some(format!("batch 2: {reason}").as_str()));
    assert_eq!(r.batches[2].outcome, crate::report::BatchOutcome::NotStarted);
    assert_eq!(r.rollback.as_ref().unwrap().problems, Vec::<String>::new(), "{log:#?}");
    // Batch 1 baked its full minute, clean; batch 2 went back as soon as the alarm was seen.
    assert_eq!(
        after_v1(&w),
        [
            "build shop:v2",
            "send pull 1,2,3",
            "out 1",
            "send deploy 1",
            "in 1",
            "out 2",
            "send deploy 2",
            "in 2",
            "alarm shop-5xx ALARM",
            "out 2",
            "send rollback 2",
            "in 2",
            "out 1",
            "send rollback 1",
            "in 1"
        ]
    );
    assert!(w.now().duration_since(started).unwrap() >= Duration::from_secs(60), "batch 1's bake was held");
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v1")) && w.in_load_balancer(n)));
    assert_eq!(records(&w).len(), 1, "a rolled-back deploy records nothing");
    let summary = crate::report::summary::summary_markdown(&r);
    assert!(summary.contains("rolled back: an alarm went off") && summary.contains("shop-5xx"), "{summary}");
}

#[tokio::test(start_paused = true)]
async fn an_alarm_in_alarm_at_the_start_stops_the_plan_unless_ignored_and_then_it_is_not_watched() {
    let w = world(2);
    w.set_alarm("shop-5xx", crate::model::AlarmState::Alarm);
    w.set_alarm("shop-latency", crate::model::AlarmState::Ok);
    let (result, _) = deploy(&w, &watching(request("v1"), 30)).await;
    let err = result.err().expect("refused");
    assert_eq!(err.exit(), crate::Exit::BadInput);
    assert!(err.to_string().contains("shop-5xx (set to ALARM by the test) is already in ALARM"), "{err}");
    assert_eq!(w.commands_sent(), 0, "nothing moved");

    let mut ignoring = watching(request("v1"), 30);
    ignoring.ignore_alarms_at_start = true;
    let (result, log) = deploy(&w, &ignoring).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("shop-5xx ALARM, not watched: ignore-alarms-at-start")), "{log:#?}");
    assert_eq!(records(&w).len(), 1);

    // A name that no alarm has is an error of the plan too.
    let mut missing = request("v2");
    missing.alarms = vec![crate::model::AlarmSelector::parse("shop-errors").unwrap()];
    let (result, _) = deploy(&w, &missing).await;
    assert!(result.err().unwrap().to_string().contains("there is no CloudWatch alarm named \"shop-errors\""));
}

#[tokio::test(start_paused = true)]
async fn by_tags_an_alarm_after_the_command_sends_every_switched_instance_back() {
    let w = world(3);
    w.set_alarm("shop-5xx", crate::model::AlarmState::Ok);
    let (result, log) = deploy(&w, &request("v1")).await;
    assert!(report(result, &log).success());
    w.alarm_after_commands("shop-5xx", 1);
    let (result, log) = deploy(&w, &watching(request("v2"), 20)).await;
    let r = report(result, &log);
    assert!(!r.success());
    assert!(r.alarm.as_deref().unwrap().starts_with("alarm shop-5xx went into ALARM after the deploy to 3 instances"));
    assert_eq!(r.rollback.as_ref().unwrap().instances.len(), 3);
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v1"))));
    assert_eq!(records(&w).len(), 1);
}

/// An Auto Scaling launch during the rollout: instance 4 boots from the record (v1) once the
/// second batch's command is out; the catch-up gives it v2 as one more batch before the record.
#[tokio::test(start_paused = true)]
async fn an_instance_that_joins_during_the_batches_gets_the_release_as_a_catch_up_batch() {
    let (w, r, log) = v1_then_v2_in_batches(|w| w.join_after_commands(4, 2, &image("v1"))).await;
    assert!(r.success(), "{log:#?}");
    assert_eq!(r.caught_up, [id(4)]);
    assert_eq!(r.planned, 3);
    let last = r.batches.last().unwrap();
    assert!(last.catch_up && last.ids == [id(4)] && last.outcome == crate::report::BatchOutcome::Done);
    assert_eq!(
        after_v1(&w),
        [
            "build shop:v2",
            "send pull 1,2,3",
            "out 1",
            "send deploy 1",
            "in 1",
            "out 2",
            "send deploy 2",
            "in 2",
            "out 3",
            "send deploy 3",
            "in 3",
            "join 4",
            "out 4",
            "send deploy 4",
            "in 4"
        ]
    );
    assert!((1..=4).all(|n| running(&w, n) == Some(image("v2"))));
    assert_eq!(records(&w).len(), 2, "recorded after the catch-up");
    let summary = crate::report::summary::summary_markdown(&r);
    assert!(summary.contains("| 3 | 4 | 1 | 0 | 0 | 0 |") && summary.contains("4 (catch-up)"), "{summary}");
    assert!(summary.contains(&format!("`{}` joined the tags after the plan", id(4))), "{summary}");
}

#[tokio::test(start_paused = true)]
async fn by_tags_an_instance_that_joins_during_the_command_is_deployed_to_by_id() {
    let w = on_v1(2).await;
    w.join_after_commands(3, 1, &image("v1"));
    let (result, log) = deploy(&w, &request("v2")).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert_eq!(r.caught_up, [id(3)]);
    assert_eq!(r.instances.len(), 3);
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v2"))));
    assert!(log.iter().any(|l| l.contains("Catch-up: 1 joined the tags during the deploy")), "{log:#?}");
}

/// A catch-up batch that fails is a failed batch like any other: it and every batch before it go
/// back, and nothing is recorded.
#[tokio::test(start_paused = true)]
async fn a_catch_up_batch_that_fails_rolls_back_with_the_rest() {
    let (w, r, log) = v1_then_v2_in_batches(|w| {
        // Not in the tag set yet (another role), with a fault that fails v2's health check.
        w.add_instance(4, &[("Role", "spare")]);
        w.set_faults(4, |f| {
            f.unhealthy_images.insert(image("v2"));
        });
        w.join_after_commands(4, 3, &image("v1"));
    })
    .await;
    assert!(!r.success(), "{log:#?}");
    let last = r.batches.last().unwrap();
    assert!(last.catch_up && matches!(last.outcome, crate::report::BatchOutcome::Failed { .. }), "{last:?}");
    assert_eq!(r.rollback.as_ref().unwrap().problems, Vec::<String>::new(), "{log:#?}");
    assert!((1..=4).all(|n| running(&w, n) == Some(image("v1"))), "{:#?}", w.log());
    assert_eq!(records(&w).len(), 1);
}

/// `converge: true`: the live release from the record, no build, no tag needed.
fn converging(mut req: DeployRequest) -> DeployRequest {
    req.converge = true;
    req.image_tag = ImageTag::parse("from-the-release-record").unwrap();
    req.build = false;
    req
}

/// v1 then v2 recorded on three instances; then instance 2 is put back on v1 by hand.
async fn v2_live_with_instance_2_on_v1(req: impl Fn(&str) -> DeployRequest) -> World {
    let w = world(3);
    for tag in ["v1", "v2"] {
        let (result, log) = deploy(&w, &req(tag)).await;
        assert!(report(result, &log).success(), "{log:#?}");
    }
    w.set_running(2, &image("v1"), &[]);
    w
}

fn since_the_drift(w: &World) -> Vec<String> {
    let log = fleet_events(&w.log());
    let start = log.iter().rposition(|e| e.starts_with("send deploy 1,2,3") || e == "in 3").unwrap() + 1;
    log[start..].to_vec()
}

#[tokio::test(start_paused = true)]
async fn converge_redeploys_the_live_release_to_the_drifted_instance_only() {
    let w = v2_live_with_instance_2_on_v1(request).await;
    let (result, log) = deploy(&w, &converging(request("v9"))).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    // A read-only check of all three, then the live release by id to instance 2 alone: nothing
    // built, the others not sent anything.
    assert_eq!(since_the_drift(&w), ["send check 1,2,3", "send deploy 2"]);
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v2"))));
    assert_eq!(r.image_tag, "v2", "the live release's own tag");
    assert_eq!(records(&w).len(), 2, "the record already names v2: no new version");
    assert_eq!(r.release_version, Some(2));
    let c = r.converge.as_ref().unwrap();
    assert_eq!(c.in_step, 2);
    assert_eq!(c.drifted.len(), 1);
    assert_eq!(c.drifted[0].0, id(2));
    assert!(c.drifted[0].1.starts_with(&format!("another release (runs {})", image("v1"))), "{c:?}");
    assert!(log.iter().any(|l| l.contains("Plan: converge")), "{log:#?}");
    let summary = crate::report::summary::summary_markdown(&r);
    assert!(summary.contains("production converged on `v2`"), "{summary}");
    assert!(summary.contains("| 1 | 3 | 0 | 0 | 0 | 0 |"), "{summary}");
    assert!(summary.contains("Converge: 1 of 3 instance(s) ran something else"), "{summary}");
}

#[tokio::test(start_paused = true)]
async fn converge_behind_a_load_balancer_takes_only_the_drifted_instance_out() {
    let w = v2_live_with_instance_2_on_v1(|tag| in_batches(request(tag))).await;
    let (result, log) = deploy(&w, &converging(in_batches(request("v9")))).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert_eq!(since_the_drift(&w), ["send check 1,2,3", "out 2", "send deploy 2", "in 2"]);
    assert!((1..=3).all(|n| w.in_load_balancer(n)));
}

#[tokio::test(start_paused = true)]
async fn converge_with_nothing_drifted_only_asks() {
    let w = on_v1(2).await;
    let (result, log) = deploy(&w, &converging(request("v9"))).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert_eq!(fleet_events(&w.log())[3..], ["send check 1,2"], "after v1's build, pull and deploy");
    assert!(r.instances.is_empty() && r.deployment_id.is_none());
    assert!(log.iter().any(|l| l.contains("nothing to do")), "{log:#?}");
    let summary = crate::report::summary::summary_markdown(&r);
    assert!(summary.contains("Converge: all 2 instance(s) ran the live release already"), "{summary}");
}

/// An instance whose agent is offline cannot be asked: it counts as drifted, so the plan stops
/// as for any deploy (on-offline: fail), having changed nothing.
#[tokio::test(start_paused = true)]
async fn converge_counts_an_offline_instance_as_drifted() {
    let w = v2_live_with_instance_2_on_v1(request).await;
    w.set_ping(3, crate::model::Ping::ConnectionLost);
    let (result, log) = deploy(&w, &converging(request("v9"))).await;
    match result {
        Err(Error::Plan(errors)) => {
            assert!(errors.iter().any(|e| matches!(e, crate::plan::PlanError::Offline { .. })), "{errors:?}")
        }
        _ => panic!("{log:#?}"),
    }
    assert_eq!(since_the_drift(&w), ["send check 1,2"], "the check only; nothing deployed");
    // With on-offline: skip, the drifted online instance converges and the offline one is named.
    let mut req = converging(request("v9"));
    req.skip_offline = true;
    let (result, log) = deploy(&w, &req).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert_eq!(running(&w, 2), Some(image("v2")));
    assert_eq!(r.skipped, [id(3)]);
    assert!(log.iter().any(|l| l.contains("not asked: its SSM agent is ConnectionLost")), "{log:#?}");
}

/// With on-offline: skip, when the only drifted instance is offline the others (online, on the
/// live release) are not "every instance offline": nothing is deployed, the offline one is named
/// as skipped, and the log does not claim every instance runs the live release.
#[tokio::test(start_paused = true)]
async fn converge_whose_only_drifted_instance_is_offline_skips_it_and_says_so() {
    let w = on_v1(3).await;
    w.set_ping(3, crate::model::Ping::ConnectionLost);
    let mut req = converging(request("v9"));
    req.skip_offline = true;
    let (result, log) = deploy(&w, &req).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert_eq!(r.skipped, [id(3)]);
    assert!(r.instances.is_empty(), "{:?}", r.instances);
    assert!(!log.iter().any(|l| l.contains("every instance with the tags runs the live release")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("Converge: the drifted instance(s) are offline and skipped")), "{log:#?}");
}

#[tokio::test(start_paused = true)]
async fn converge_without_a_recorded_release_is_refused_before_anything_is_sent() {
    let w = world(2);
    let (result, log) = deploy(&w, &converging(request("v9"))).await;
    match result {
        Err(Error::Plan(errors)) => {
            assert!(errors.iter().any(|e| matches!(e, crate::plan::PlanError::NothingToConverge { .. })), "{errors:?}")
        }
        _ => panic!("{log:#?}"),
    }
    assert_eq!(w.commands_sent(), 0);
}

/// A converge's dry run asks (the read-only check) and stops: the plan lists the drifted
/// instance, and nothing else is sent or written.
#[tokio::test(start_paused = true)]
async fn a_converge_dry_run_only_asks() {
    let w = v2_live_with_instance_2_on_v1(request).await;
    let mut req = converging(request("v9"));
    req.dry_run = true;
    let (result, log) = deploy(&w, &req).await;
    let Ok(Outcome::DryRun(plan)) = result else { panic!("{log:#?}") };
    assert_eq!(plan.instances.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), [id(2)]);
    assert_eq!(since_the_drift(&w), ["send check 1,2,3"]);
    assert_eq!(records(&w).len(), 2);
    assert!(log.iter().any(|l| l.contains("only the read-only check was sent")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("left alone (on the live release)")), "{log:#?}");
}

/// `rollback-to`: any recorded version but the live one, deployed as a rollback (the version it
/// leaves is marked); a version the record does not have, or the live one, is refused by the plan
/// before anything is sent, naming the versions there are.
#[tokio::test(start_paused = true)]
async fn a_rollback_to_a_named_version_deploys_that_release_and_a_wrong_one_is_refused() {
    let w = world(2);
    for tag in ["v1", "v2", "v3"] {
        let (result, log) = deploy(&w, &request(tag)).await;
        assert!(report(result, &log).success(), "{log:#?}");
    }
    let mut back = request("v3");
    back.rollback = true;
    back.rollback_to = Some(1);
    let (result, log) = deploy(&w, &back).await;
    assert!(report(result, &log).success(), "{log:#?}");
    assert_eq!(running(&w, 1), Some(image("v1")));
    assert_eq!(running(&w, 2), Some(image("v1")));
    let last = records(&w).pop().unwrap();
    assert_eq!((last.tag.as_str(), last.rolled_back_from), ("v1", Some(3)));

    let sent = w.commands_sent();
    for (version, expected) in [
        (9, "input `rollback-to`: /ec2-deploy/production/shop has no version 9 (its versions: 1, 2, 3, 4)"),
        (4, "input `rollback-to`: version 4 is the live release; nothing to roll back"),
    ] {
        back.rollback_to = Some(version);
        let (result, log) = deploy(&w, &back).await;
        match result {
            Err(Error::Plan(errors)) => {
                assert!(errors.iter().any(|e| e.to_string().starts_with(expected)), "{errors:?}")
            }
            _ => panic!("{log:#?}"),
        }
    }
    assert_eq!(w.commands_sent(), sent, "a refused rollback sent a command");
}

#[tokio::test(start_paused = true)]
async fn a_pull_that_fails_on_one_instance_stops_the_run_before_any_instance_switched() {
    let w = world(3);
    let (result, log) = deploy(&w, &in_batches(request("v1"))).await;
    assert!(report(result, &log).success());
    w.set_faults(3, |f| f.pull_fails = true);
    let before = w.log().len();
    let (result, log) = deploy(&w, &in_batches(request("v2"))).await;
    let err = match result {
        Err(e) => e,
        Ok(_) => panic!("a failed pull succeeded: {log:#?}"),
    };
    assert_eq!(err.exit(), crate::Exit::DeployFailed);
    let text = err.to_string();
    assert!(
        text.contains("no instance was switched") && text.contains("i-00000000000000003 (web-3): cannot pull"),
        "{text}"
    );
    // The pull went to every instance; no deploy was sent, no instance left the load balancer.
    assert_eq!(fleet_events(&w.log()[before..]), ["build shop:v2", "send pull 1,2,3"]);
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v1")) && w.in_load_balancer(n)));
    assert_eq!(records(&w).len(), 1, "nothing recorded");
}

#[tokio::test(start_paused = true)]
async fn one_batch_pulls_in_its_own_swap_and_more_batches_pull_first() {
    let w = world(2);
    let mut req = request("v1");
    req.max_concurrency = Limit::Percent(100);
    let (result, log) = deploy(&w, &req).await;
    assert!(report(result, &log).success(), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("  pull       first")), "{log:#?}");
    assert_eq!(fleet_events(&w.log()), ["build shop:v1", "send deploy 1,2"]);
    req = request("v2");
    req.max_concurrency = Limit::Count(1);
    let (result, log) = deploy(&w, &req).await;
    assert!(report(result, &log).success(), "{log:#?}");
    let line = log.iter().find(|l| l.contains("  pull       first")).unwrap_or_else(|| panic!("{log:#?}"));
    assert!(line.contains("(10 at once), before the first of 2 batches switches"), "{line}");
    assert_eq!(fleet_events(&w.log())[2..], ["build shop:v2", "send pull 1,2", "send deploy 1,2"]);
    assert!(log.iter().any(|l| l.starts_with("Pulled v2 on 2 instances in")), "{log:#?}");

    // The record keeps where the time went; the next plan estimates from it.
    let history = Releases::new(ParameterName::parse(RECORD).unwrap()).history(&w).await.unwrap();
    let t = history.live().unwrap().unwrap().release.timings.clone().expect("timings recorded");
    assert_eq!((t.batches, t.pull_ms.is_some()), (2, true), "{t:?}");
    assert!(t.phase("start") > 0 && t.phase("health") > 0, "{t:?}");
    req = request("v3");
    req.max_concurrency = Limit::Count(1);
    req.dry_run = true;
    let (_, log) = deploy(&w, &req).await;
    let (ms, model) = t.estimate(2);
    let line = log.iter().find(|l| l.contains("  estimate   about")).unwrap_or_else(|| panic!("{log:#?}"));
    assert!(line.contains(&format!("about {:.1}s at the pace of version 2's deploy", ms as f64 / 1000.0)), "{line}");
    assert!(line.contains(&model) && model.starts_with("pull ") && model.contains(", then 2 × (start "), "{line}");
}

/// An Auto Scaling launch that joins during a deploy while it still boots (no Docker daemon yet):
/// the catch-up sends the release again until it is ready, within `boot-wait`; past it, a failure.
#[tokio::test(start_paused = true)]
async fn a_joined_instance_still_booting_gets_the_release_once_it_is_ready_within_boot_wait() {
    let w = on_v1(2).await;
    w.add_instance(3, &[("Role", "spare")]);
    w.set_faults(3, |f| f.booting_scripts = 2);
    w.join_after_commands(3, 1, &image("v1"));
    let (result, log) = deploy(&w, &request("v2")).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert_eq!(r.caught_up, [id(3)]);
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v2"))), "{log:#?}");
    assert_eq!(
        log.iter().filter(|l| l.contains("still booting, sent again in 10s (boot-wait 300s)")).count(),
        2,
        "{log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("one still booting is sent it again for up to 300s (boot-wait)")),
        "{log:#?}"
    );

    // Still booting past boot-wait: a failure, and the fleet goes back.
    w.add_instance(4, &[("Role", "spare")]);
    w.set_faults(4, |f| f.booting_scripts = 100);
    w.join_after_commands(4, 1, &image("v2"));
    let mut req = request("v3");
    req.boot_wait = 25;
    let (result, log) = deploy(&w, &req).await;
    let r = report(result, &log);
    assert!(!r.success(), "{log:#?}");
    let row = r.instances.iter().find(|i| i.id == id(4)).unwrap();
    assert!(row.reason.as_deref().unwrap_or_default().contains("still not ready after boot-wait, 25s"), "{row:?}");
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v2"))), "{log:#?}");
}
