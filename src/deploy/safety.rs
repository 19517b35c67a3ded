//! The deploy's promises under races and faults, as scenarios in the fake world: one deploy at a
//! time, runs in order, rollback restores what was recorded, deadlines and cancels never leave an
//! instance without a release or out of its load balancer, limits hold fleet-wide. Each test
//! reads as what happens; each was seen failing before the change it covers.

use std::time::Duration;

use super::tests::{deploy_with, in_batches, records, report, request, world};

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
    assert_eq!(events, ["build shop:v1", "out 1", "send deploy 1", "in 1"], "{log:#?}");
    assert!((1..=3).all(|n| w.in_load_balancer(n)));
    assert!(records(&w).is_empty(), "a run that lost its lock records nothing");
    let last = w.parameter(LOCK).last().unwrap().value.clone();
    assert!(last.contains("\"id\":\"other\""), "the other run still holds the lock: {last}");
}
