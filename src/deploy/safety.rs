//! The deploy's promises under races and faults, as scenarios in the fake world: one deploy at a
//! time, runs in order, rollback restores what was recorded, deadlines and cancels never leave an
//! instance without a release or out of its load balancer, limits hold fleet-wide. Each test
//! reads as what happens; each was seen failing before the change it covers.

use std::time::Duration;

use super::tests::{
    deploy, deploy_as, deploy_with, image, in_batches, on_v1, records, report, request, running, world,
};
use super::RunInfo;
use crate::plan::PlanError;
use crate::Error;

use crate::cancel::Cancel;
use crate::fake::World;
use crate::ports::{epoch_seconds, Clock};

const LOCK: &str = "/ec2-deploy/production/shop-lock";

async fn until(w: &World, what: impl Fn(&[String]) -> bool) {
    while !what(&w.log()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_lock_is_taken_over_starts_no_new_batch_and_fails_saying_so() {
    let w = world(3);
    for n in 1..=3 {
        w.set_faults(n, |f| f.script_seconds = Some(40));
    }
    let req = in_batches(request("v1"));
    let cancel = Cancel::default();
    let ((result, log), ()) = tokio::join!(deploy_with(&w, &req, &cancel), async {
        // While batch 1 swaps, another run takes the lock over (as one would once this run's
        // lease had lapsed: a paused runner, a network partition).
        until(&w, |log| log.iter().any(|e| e == "send deploy 1")).await;
        let current = w.parameter(LOCK).last().unwrap().version;
        let expires = epoch_seconds(w.now()) + 600;
        w.put_raw(
            LOCK,
            &format!(r#"{{"id":"other","by":"another run","expires":{expires},"after":{current},"state":"held"}}"#),
        );
    });
    let r = report(result, &log);
    assert!(!r.success());
    let stopped = r.stopped.as_deref().unwrap_or_default();
    assert!(stopped.contains("lost the deploy lock") && stopped.contains("another run took it over"), "{r:#?}");
    // Batch 1 finished and is back in the load balancer; nothing after it was started.
    let events = super::tests::fleet_events(&w.log());
    assert_eq!(events, ["build shop:v1", "send pull 1,2,3", "out 1", "send deploy 1", "in 1"], "{log:#?}");
    assert!((1..=3).all(|n| w.in_load_balancer(n)));
    assert!(records(&w).is_empty(), "a run that lost its lock records nothing");
    let last = w.parameter(LOCK).last().unwrap().value.clone();
    assert!(last.contains("\"id\":\"other\""), "the other run still holds the lock: {last}");
}

/// A push of `commit`, made at `time`.
fn push(commit: &str, time: &str) -> RunInfo {
    RunInfo {
        commit: Some(commit.into()),
        commit_time: Some(time.into()),
        event_name: Some("push".into()),
        by: format!("the push of {commit}"),
        ..RunInfo::default()
    }
}

#[tokio::test(start_paused = true)]
async fn an_older_push_queued_behind_a_newer_deploy_refuses_and_leaves_the_newer_live() {
    let w = world(3);
    for n in 1..=3 {
        w.set_faults(n, |f| f.script_seconds = Some(30));
    }
    let mut newer = in_batches(request("v2"));
    newer.commit = Some("2222".into());
    let mut older = in_batches(request("v1"));
    older.commit = Some("1111".into());
    let cancel = Cancel::default();
    // The newer commit starts rolling out; the push of an older commit arrives a moment later
    // and waits for the lock.
    let (newer_push, older_push) = (push("2222", "2026-11-25T12:00:00Z"), push("1111", "2026-11-24T09:00:00Z"));
    let ((new_result, new_log), (old_result, old_log)) =
        tokio::join!(deploy_as(&w, &newer, &cancel, &newer_push), async {
            until(&w, |log| log.iter().any(|e| e == "send deploy 1")).await;
            deploy_as(&w, &older, &cancel, &older_push).await
        });
    assert!(report(new_result, &new_log).success());
    match old_result {
        Err(Error::Plan(errors)) => assert!(
            matches!(&errors[..], [PlanError::OlderThanLive(why)] if why.contains("1111 was committed at 2026-11-24T09:00:00Z, before the live commit 2222")),
            "{errors:?}"
        ),
        other => panic!("the older push was not refused: {:?}\n{}", other.as_ref().err(), old_log.join("\n")),
    }
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v2"))));
    let recorded = records(&w);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].commit.as_deref(), Some("2222"));
}

fn with_env(mut req: crate::inputs::DeployRequest, env: &str) -> crate::inputs::DeployRequest {
    req.container.env = vec![crate::model::EnvVar::parse(env).unwrap()];
    req
}

fn env_of(w: &World, n: u32) -> Vec<String> {
    w.instance(n).running.map(|c| c.env).unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn rollback_after_a_settings_only_change_restores_the_settings_and_does_not_ping_pong() {
    let w = world(2);
    for (tag, env, commit) in [("v1", "MODE=plain", "aaaa"), ("v2", "ALPHA=1", "bbbb"), ("v2", "BETA=1", "cccc")] {
        let mut req = with_env(request(tag), env);
        req.commit = Some(commit.into());
        let (result, log) = deploy(&w, &req).await;
        assert!(report(result, &log).success(), "{log:#?}");
    }
    assert_eq!(env_of(&w, 1), ["BETA=1"]);
    let mut rollback = request("ignored");
    rollback.rollback = true;
    rollback.commit = Some("dddd".into());
    let (result, log) = deploy(&w, &rollback).await;
    assert!(report(result, &log).success(), "{log:#?}");
    for n in 1..=2 {
        assert_eq!((running(&w, n), env_of(&w, n)), (Some(image("v2")), vec!["ALPHA=1".to_string()]), "instance {n}");
    }
    let recorded = records(&w);
    assert_eq!(recorded.len(), 4);
    assert_eq!(recorded[3].commit.as_deref(), Some("bbbb"), "the restored release keeps its own commit");
    assert_eq!(recorded[3].rolled_back_from, Some(3), "the release left is marked");
    // Rolling back again goes further back, never to the release just left.
    let (result, log) = deploy(&w, &rollback).await;
    assert!(report(result, &log).success(), "{log:#?}");
    assert_eq!((running(&w, 1), env_of(&w, 1)), (Some(image("v1")), vec!["MODE=plain".to_string()]));
}

#[tokio::test(start_paused = true)]
async fn a_settings_only_change_that_fails_past_max_errors_puts_the_old_settings_back() {
    let w = world(3);
    let (result, log) = deploy(&w, &with_env(request("v1"), "ALPHA=1")).await;
    assert!(report(result, &log).success());
    // The same image with BETA: instance 3 fails its health check with it.
    w.set_faults(3, |f| f.unhealthy_env = Some("BETA=1".into()));
    let mut req = with_env(request("v1"), "BETA=1");
    req.max_concurrency = crate::model::Limit::Percent(100);
    let (result, log) = deploy(&w, &req).await;
    let r = report(result, &log);
    assert!(!r.success());
    let rollback = r.rollback.expect("a rollback");
    assert!(rollback.problems.is_empty(), "{rollback:?}");
    for n in 1..=3 {
        assert_eq!(env_of(&w, n), ["ALPHA=1"], "instance {n} runs the old settings again: {log:#?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_fleet_is_followed_to_the_end_and_no_running_script_is_interrupted() {
    // One at a time, each script taking most of its timeout: three waves of 500 s.
    let w = world(3);
    for n in 1..=3 {
        w.set_faults(n, |f| f.script_seconds = Some(500));
    }
    let mut req = request("v1");
    req.max_concurrency = crate::model::Limit::Count(1);
    let (result, log) = deploy(&w, &req).await;
    assert!(!w.log().iter().any(|e| e.starts_with("killed")), "a running script was cancelled: {:#?}", w.log());
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v1"))));
}

#[tokio::test(start_paused = true)]
async fn a_script_that_never_ends_is_waited_for_then_reported_and_the_others_go_back() {
    let w = on_v1(3).await;
    // Instance 2's agent dies mid-script: SSM goes on saying InProgress.
    w.set_faults(2, |f| f.hangs = true);
    let mut req = request("v2");
    req.max_concurrency = crate::model::Limit::Percent(100);
    let started = w.now();
    let (result, log) = deploy(&w, &req).await;
    // Only the script that never ended was cancelled, and only once its own execution timeout
    // had passed after the deadline.
    let kills: Vec<String> = w.log().into_iter().filter(|e| e.starts_with("killed")).collect();
    assert_eq!(kills, ["killed 2"], "{:#?}", w.log());
    assert!(w.now().duration_since(started).unwrap() >= Duration::from_secs(600 + 600), "gave up too early");
    let r = report(result, &log);
    assert!(!r.success());
    let stopped = r.stopped.as_deref().unwrap_or_default();
    assert!(stopped.contains("did not finish within"), "{r:#?}");
    let row = r.instances.iter().find(|i| i.id == crate::fake::id(2)).unwrap();
    assert!(row.reason.as_deref().unwrap_or_default().contains("running past its execution timeout"), "{row:?}");
    // The two that switched went back to v1.
    assert!(r.rollback.is_some(), "{log:#?}");
    assert_eq!((running(&w, 1), running(&w, 3)), (Some(image("v1")), Some(image("v1"))));
}

#[tokio::test(start_paused = true)]
async fn max_concurrency_and_max_errors_hold_across_the_whole_fleet_not_per_50_ids() {
    let w = World::with_instances(121);
    w.add_repository("shop");
    // One offline instance: the command goes by instance id, in chunks of 50.
    w.set_ping(121, crate::model::Ping::ConnectionLost);
    let mut req = request("v1");
    req.skip_offline = true;
    req.max_concurrency = crate::model::Limit::Count(10);
    let (result, log) = deploy(&w, &req).await;
    assert!(report(result, &log).success(), "{log:#?}");
    assert!(w.peak_in_progress() <= 10, "{} invocations ran at once", w.peak_in_progress());
    assert!((1..=120).all(|n| running(&w, n) == Some(image("v1"))));

    // Max errors 0: the first failure stops the instances that had not started, in every chunk.
    w.set_faults(5, |f| {
        f.unhealthy_images.insert(image("v2"));
    });
    let (result, log) = deploy(
        &w,
        &request("v2").tap(|r| {
            r.skip_offline = true;
            r.max_concurrency = crate::model::Limit::Count(10);
        }),
    )
    .await;
    let r = report(result, &log);
    let switched = r.instances.iter().filter(|i| i.switched()).count();
    assert!(switched < 20, "{switched} instances switched after the first failure");
    assert!(r.instances.iter().any(|i| i.reason.as_deref().is_some_and(|why| why.contains("max-errors"))), "{log:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_send_that_fails_after_the_first_chunk_rolls_back_what_the_first_chunk_switched() {
    let w = World::with_instances(60);
    w.add_repository("shop");
    // One offline instance: the command goes by instance id, in chunks of 50.
    w.set_ping(60, crate::model::Ping::ConnectionLost);
    let with_skip = |tag| request(tag).tap(|r| r.skip_offline = true);
    let (result, log) = deploy(&w, &with_skip("v1")).await;
    assert!(report(result, &log).success(), "{log:#?}");
    // The pull's two chunks and the first chunk's deploy go out; the second chunk's deploy
    // SendCommand fails.
    w.faults.lock().unwrap().send_fails_after = Some(3);
    let (result, log) = deploy(&w, &with_skip("v2")).await;
    let r = report(result, &log);
    assert!(!r.success(), "{log:#?}");
    assert!(r.rollback.is_some(), "no rollback: {log:#?}");
    let not_v1: Vec<u32> = (1..=59).filter(|n| running(&w, *n) != Some(image("v1"))).collect();
    assert!(not_v1.is_empty(), "instances left on v2 or nothing: {not_v1:?}\n{log:#?}");
    let row = r.instances.iter().find(|i| i.id == crate::fake::id(55)).unwrap();
    assert!(row.reason.as_deref().unwrap_or_default().contains("SendCommand"), "{row:?}");
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

impl Tap for crate::inputs::DeployRequest {}

#[tokio::test(start_paused = true)]
async fn errors_while_following_are_retried_and_the_deploy_completes() {
    let w = world(3);
    *w.faults.lock().unwrap() =
        crate::fake::CallFaults { unavailable_progress: 4, throttle_progress: 6, ..Default::default() };
    let (result, log) = deploy(&w, &request("v1")).await;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("retrying")), "{log:#?}");
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_never_reports_is_named_and_the_switched_ones_go_back() {
    let w = on_v1(3).await;
    w.set_faults(2, |f| f.never_reports = true);
    let mut req = request("v2");
    req.max_concurrency = crate::model::Limit::Percent(100);
    let (result, log) = deploy(&w, &req).await;
    let r = report(result, &log);
    assert!(!r.success());
    let row = r.instances.iter().find(|i| i.id == crate::fake::id(2)).unwrap();
    assert_eq!(row.detail, crate::model::StatusDetail::DeliveryTimedOut);
    assert!(row.reason.as_deref().unwrap_or_default().contains("never picked the command up"), "{row:?}");
    assert!((1..=3).all(|n| running(&w, n) == Some(image("v1"))), "{:#?}", w.log());
}

/// Three instances on v1 in the load balancer, v2 about to fail its health check on instance 2.
async fn v1_with_v2_failing_on_2() -> World {
    let w = world(3);
    let (result, log) = deploy(&w, &in_batches(request("v1"))).await;
    assert!(report(result, &log).success());
    w.set_faults(2, |f| {
        f.unhealthy_images.insert(image("v2"));
    });
    w
}

fn times(log: &[String], event: &str) -> usize {
    log.iter().filter(|e| *e == event).count()
}

#[tokio::test(start_paused = true)]
async fn a_cancel_during_the_rollback_lets_it_finish_and_every_instance_ends_in_the_load_balancer_on_v1() {
    let w = v1_with_v2_failing_on_2().await;
    let before = w.log().len();
    let cancel = Cancel::default();
    let req = in_batches(request("v2"));
    let ((result, log), ()) = tokio::join!(deploy_with(&w, &req, &cancel), async {
        // Batch 2 failed; the rollback takes batch 1 out again: the job is cancelled now.
        until(&w, |log| times(&log[before..], "out 1") == 2).await;
        cancel.cancel();
    });
    let r = report(result, &log);
    assert!(r.cancelled, "{log:#?}");
    let rollback = r.rollback.expect("the rollback ran");
    assert!(rollback.problems.is_empty(), "{:?}", rollback.problems);
    for n in 1..=3 {
        assert!(w.in_load_balancer(n), "instance {n} was left out of the load balancer: {:#?}", w.log());
        assert_eq!(running(&w, n), Some(image("v1")), "instance {n}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_cannot_be_drained_for_the_rollback_goes_back_in_and_is_named() {
    let w = v1_with_v2_failing_on_2().await;
    let before = w.log().len();
    let req = in_batches(request("v2"));
    let ((result, log), ()) = tokio::join!(deploy(&w, &req), async {
        // Once batch 1 is back in on v2, its instance can no longer be drained.
        until(&w, |log| times(&log[before..], "in 1") == 1).await;
        w.set_faults(1, |f| f.drain_stuck = true);
    });
    let r = report(result, &log);
    assert!(!r.success());
    let rollback = r.rollback.expect("a rollback");
    assert!(
        rollback.problems.iter().any(|p| p.contains(crate::fake::id(1).as_str()) && p.contains("still draining")),
        "{:?}",
        rollback.problems
    );
    for n in 1..=3 {
        assert!(w.in_load_balancer(n), "instance {n} was left out of the load balancer: {:#?}", w.log());
    }
    assert_eq!(running(&w, 1), Some(image("v2")), "not drained, so not rolled back: it keeps v2");
}

#[tokio::test(start_paused = true)]
async fn a_record_that_cannot_be_written_after_a_successful_rollout_is_its_own_exit_code() {
    let w = world(2);
    w.faults.lock().unwrap().failing_parameters.insert(super::tests::RECORD.to_string());
    let (result, log) = deploy(&w, &request("v1")).await;
    let e = result.err().unwrap_or_else(|| panic!("the run succeeded: {log:#?}"));
    assert_eq!(e.exit(), crate::Exit::NotRecorded, "{e}");
    let text = e.to_string();
    assert!(text.contains("deployed to every instance") && text.contains("could not be written"), "{text}");
    assert!((1..=2).all(|n| running(&w, n) == Some(image("v1"))));
    // The lock was released all the same.
    let lock = w.parameter(LOCK).last().unwrap().value.clone();
    assert!(lock.contains("\"state\":\"released\""), "{lock}");
}

/// A release whose record would not fit in its SSM parameter (8 KB) is refused by the plan, before
/// anything is built or sent: written after the rollout, the record's failure would leave a
/// deploy that worked reported as failed, and every later deploy failing the same way.
#[tokio::test(start_paused = true)]
async fn a_record_too_big_for_its_parameter_is_refused_before_anything_changes() {
    let w = world(2);
    let mut req = request("v1");
    req.container.env.push(crate::model::EnvVar { name: "BIG".into(), value: "x".repeat(7000) });
    let (result, log) = deploy(&w, &req).await;
    match result {
        Err(Error::Plan(errors)) => assert!(
            errors.iter().any(|e| matches!(e, PlanError::RecordTooBig { bytes, limit: 8192 } if *bytes > 8000)),
            "{errors:?}"
        ),
        other => panic!("{:?}\n{log:#?}", other.map(|_| ())),
    }
    assert_eq!(w.commands_sent(), 0);
    assert!(!w.log().iter().any(|e| e.starts_with("build")), "{:#?}", w.log());
    // 4,000 bytes of env fit: the record holds the environment once (in the header it records).
    req.container.env.last_mut().unwrap().value = "x".repeat(4000);
    let (result, log) = deploy(&w, &req).await;
    assert!(report(result, &log).success(), "{log:#?}");
    assert_eq!(records(&w).len(), 1);
}

/// Parameter Store refuses writes to one parameter that come too close together
/// (TooManyUpdates): the lock's claim and the release record are asked again, so a busy
/// parameter neither stops a deploy before it starts nor fails one that succeeded.
#[tokio::test(start_paused = true)]
async fn writes_refused_as_too_many_updates_are_asked_again_for_the_lock_and_the_record() {
    let w = world(2);
    {
        let mut faults = w.faults.lock().unwrap();
        faults.busy_parameters.insert(LOCK.to_string(), 2);
        faults.busy_parameters.insert(super::tests::RECORD.to_string(), 3);
    }
    let (result, log) = deploy(&w, &request("v1")).await;
    assert!(report(result, &log).success(), "{log:#?}");
    assert!((1..=2).all(|n| running(&w, n) == Some(image("v1"))));
    assert_eq!(records(&w).len(), 1, "the release is recorded");
    let refused = w.log().iter().filter(|e| e.ends_with("refused: TooManyUpdates")).count();
    assert_eq!(refused, 5, "each refusal was met");
}

#[tokio::test(start_paused = true)]
async fn a_second_cancel_during_the_rollback_puts_every_instance_back_in_at_once() {
    let w = v1_with_v2_failing_on_2().await;
    let before = w.log().len();
    let cancel = Cancel::default();
    let req = in_batches(request("v2"));
    let hurried_at = std::cell::Cell::new(None);
    let ((result, log), ()) = tokio::join!(deploy_with(&w, &req, &cancel), async {
        until(&w, |log| times(&log[before..], "out 1") == 2).await;
        cancel.cancel();
        // The runner's SIGTERM, 7.5 s later: the step will be killed 2.5 s after it.
        tokio::time::sleep(Duration::from_millis(7500)).await;
        cancel.hurry();
        hurried_at.set(Some(w.now()));
    });
    let r = report(result, &log);
    assert!(r.cancelled);
    for n in 1..=3 {
        assert!(w.in_load_balancer(n), "instance {n} was left out of the load balancer: {:#?}", w.log());
    }
    // It stopped within the runner's 2.5 s of grace after the second signal.
    let after = w.now().duration_since(hurried_at.get().expect("hurried")).unwrap();
    assert!(after < Duration::from_millis(2500), "took {after:?} after the second signal");
    let problems = r.rollback.map(|r| r.problems).unwrap_or_default();
    assert!(!problems.is_empty(), "an incomplete rollback is reported: {log:#?}");
}

/// The role session ends while batch 2 of 3 swaps (a rollout longer than configure-aws-credentials'
/// one hour). Every AWS call fails from then on: the run must not wait out its deadlines retrying
/// a session that cannot come back, must start no new batch, tries to put what it took out back
/// into the load balancer, and fails saying what happened and exactly what to do.
#[tokio::test(start_paused = true)]
async fn an_expired_session_starts_no_new_batch_ends_at_once_and_says_what_to_do() {
    let w = world(3);
    for n in 1..=3 {
        w.set_faults(n, |f| f.script_seconds = Some(40));
    }
    let req = in_batches(request("v1"));
    let cancel = Cancel::default();
    let started = w.now();
    let ((result, log), expired_at) = tokio::join!(deploy_with(&w, &req, &cancel), async {
        until(&w, |log| log.iter().any(|e| e == "send deploy 2")).await;
        w.faults.lock().unwrap().session_expired = true;
        w.now()
    });
    let r = report(result, &log);
    assert!(!r.success() && !r.cancelled, "{log:#?}");
    assert!(!w.log().iter().any(|e| e == "send deploy 3"), "a batch started after the session expired: {:#?}", w.log());
    assert_eq!(r.batches[2].outcome, crate::report::BatchOutcome::NotStarted);
    let stopped = r.stopped.as_deref().unwrap_or_default();
    assert!(stopped.contains("the AWS session expired"), "{stopped}");
    assert!(stopped.contains("role-duration-seconds"), "{stopped}");
    // Retrying cannot help: the run ends within a poll or two, not at its deadline.
    let waited = w.now().duration_since(expired_at).unwrap();
    assert!(waited < Duration::from_secs(60), "the run went on for {waited:?} after the session expired");
    assert!(w.now().duration_since(started).unwrap() < Duration::from_secs(600));
    // It tried to put batch 2 back (the call fails too: that is said, with the instance).
    assert!(log.iter().any(|l| l.contains(&crate::fake::id(2).to_string()) && l.contains("load balancer")), "{log:#?}");
}

/// The session's end is known (AWS_CREDENTIAL_EXPIRATION): a rollout that may outlast it is
/// warned about before anything moves, with the role-duration-seconds that covers it; one that
/// fits is not.
#[tokio::test(start_paused = true)]
async fn a_session_shorter_than_the_worst_case_is_warned_about_before_anything_moves() {
    let w = world(3);
    let req = in_batches(request("v1"));
    let info = |seconds: u64| RunInfo {
        commit: req.commit.clone(),
        by: "test run".into(),
        credentials_expire: Some(w.now() + Duration::from_secs(seconds)),
        ..RunInfo::default()
    };
    let (result, log) = deploy_as(&w, &req, &Cancel::default(), &info(3600)).await;
    assert!(report(result, &log).success());
    // The pull before the first batch: one wave of command-timeout (600 s + 120 delivery + 60)
    // = 780 s. 3 batches, each: drain (the fake groups' 5 s delay + 30), one wave of
    // command-timeout (780 s), health (10 s + 30) = 855 s. 780 + 2,565 = 3,345 s; with a full
    // rollback (which pulls nothing) 780 + 5,130 = 5,910 s → 7,200 s: in whole quarter hours,
    // with a quarter to spare.
    let plan_line = log.iter().find(|l| l.contains("  duration   ")).unwrap_or_else(|| panic!("{log:#?}"));
    assert!(plan_line.contains("at most 3345s once it starts, 5910s with a full rollback"), "{plan_line}");
    let warning = log.iter().find(|l| l.contains("AWS session ends in")).unwrap_or_else(|| panic!("{log:#?}"));
    assert!(warning.contains("role-duration-seconds: 7200"), "{warning}");
    let at = |e: &str| log.iter().position(|l| l.contains(e)).unwrap();
    assert!(at("AWS session ends in") < at("Batch 1/3"), "{log:#?}");
    let w = world(3);
    let (result, log) = deploy_as(&w, &req, &Cancel::default(), &info(43_200)).await;
    assert!(report(result, &log).success());
    assert!(!log.iter().any(|l| l.contains("AWS session ends in")), "{log:#?}");
}

/// Scale-in during a deploy: an instance terminated before its turn is named as having left,
/// counts against nothing, and the run succeeds on the instances that remain (no rollback).
#[tokio::test(start_paused = true)]
async fn an_instance_terminated_during_the_deploy_left_the_fleet_and_the_others_finish_without_a_rollback() {
    let w = on_v1(3).await;
    let mut req = request("v2");
    req.max_concurrency = crate::model::Limit::Count(1);
    let before = w.log().len();
    let (result, log) = tokio::join!(deploy(&w, &req), async {
        // The deploy's first instance is running its script; the third has not started.
        while !(w.instance(1).busy && w.log()[before..].iter().any(|e| e.starts_with("send deploy"))) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        w.terminate(3);
    })
    .0;
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert!(r.rollback.is_none(), "{log:#?}");
    let left: Vec<&crate::model::InstanceId> = r.left().map(|i| &i.id).collect();
    assert_eq!(left, [&crate::fake::id(3)]);
    assert!(r.left().all(|i| i.left.as_deref().unwrap_or_default().contains("SSM lists it under the tags no more")));
    assert_eq!((running(&w, 1), running(&w, 2)), (Some(image("v2")), Some(image("v2"))));
    assert_eq!(records(&w).len(), 2, "v2 is recorded");
    let summary = crate::report::summary::summary_markdown(&r);
    assert!(summary.contains("| 3 | 2 | 0 | 1 | 0 | 0 |"), "{summary}");
    assert!(summary.contains("🚪 Left the fleet"), "{summary}");
}

/// An instance terminated between the plan and the pull: SSM cannot deliver the pull to it. It
/// left, a pull it never got is no failure of the pull, and the others get the release.
#[tokio::test(start_paused = true)]
async fn an_instance_terminated_before_the_pull_reaches_it_left_and_the_deploy_goes_on() {
    let w = on_v1(3).await;
    let mut req = request("v2");
    req.max_concurrency = crate::model::Limit::Count(1);
    w.faults.lock().unwrap().terminated_at_pull = Some(3);
    let (result, log) = deploy(&w, &req).await;
    assert!(log.iter().any(|l| l.contains("i-00000000000000003 left the fleet during the run")), "{log:#?}");
    let r = report(result, &log);
    assert!(r.success(), "{log:#?}");
    assert_eq!(r.left().map(|i| i.id.clone()).collect::<Vec<_>>(), [crate::fake::id(3)]);
    assert_eq!((running(&w, 1), running(&w, 2)), (Some(image("v2")), Some(image("v2"))));
}
