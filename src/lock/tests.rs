//! The lock under every interleaving of its contenders' store calls (see `crate::fake::explore`),
//! and a holder whose lease lapsed.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::fake::explore::{self, explore, Task};
use crate::fake::World;

const LOCK: &str = "/ec2-deploy/production/shop-lock";

fn name() -> ParameterName {
    ParameterName::parse(LOCK).unwrap()
}

fn run(n: usize) -> Claimant {
    Claimant { id: format!("run-{n}"), by: format!("run {n}") }
}

/// A world whose lock was held by a run that was killed: its lease ran out a minute ago. Its
/// store yields to the explorer before every call.
fn world_with_a_stale_lock() -> Rc<World> {
    let mut w = World::with_manual_clock();
    w.store_step = Some(explore::step);
    let expired = epoch_seconds(w.now()) - 60;
    w.put_raw(LOCK, &format!(r#"{{"id":"killed","by":"a killed run","expires":{expired}}}"#));
    w.take_trace();
    Rc::new(w)
}

/// Who holds the lock at the moment, by the contenders' own account.
type Holders = Rc<RefCell<BTreeSet<usize>>>;

/// A run that asks for the lock, waiting up to `timeout`; once it holds it, holds it for a step
/// (another contender may move meanwhile) and, if `releases`, releases it.
fn contender(world: Rc<World>, n: usize, holders: Holders, timeout: Duration, releases: bool) -> Task {
    Box::pin(async move {
        let cancel = Cancel::default();
        let acquired = DeployLock::acquire(&*world, name(), run(n), Lease::default(), timeout, &cancel, |_| {}).await;
        if let Ok(lock) = acquired {
            holders.borrow_mut().insert(n);
            explore::step().await;
            if releases {
                holders.borrow_mut().remove(&n);
                lock.release().await.unwrap();
            } else {
                std::mem::forget(lock);
            }
        }
    })
}

fn contenders(n: usize, timeout: Duration, releases: bool) -> explore::Explored {
    explore(
        || {
            let world = world_with_a_stale_lock();
            let holders: Holders = Rc::default();
            let tasks = (1..=n).map(|i| contender(world.clone(), i, holders.clone(), timeout, releases)).collect();
            (world, tasks, holders)
        },
        |_, holders| match holders.borrow().len() {
            0 | 1 => Ok(()),
            _ => Err(format!("two runs hold the lock at once: {:?}", holders.borrow())),
        },
    )
}

#[test]
fn two_runs_taking_over_a_stale_lock_never_both_hold_it_and_the_second_gets_it_after_the_first() {
    // Each waits up to 3 s: the one that loses the takeover waits, then takes the released lock.
    let explored = contenders(2, Duration::from_secs(3), true);
    assert!(explored.finished > 10, "{explored:?}");
}

#[test]
fn three_runs_taking_over_a_stale_lock_never_both_hold_it() {
    let explored = contenders(3, Duration::ZERO, false);
    assert!(explored.finished > 10, "{explored:?}");
}

/// Three that also release, so the ones that lost may find it free again: 1.2 million states,
/// about 7 minutes unoptimised. Run it with `cargo test --lib -- --ignored`.
#[test]
#[ignore]
fn three_runs_taking_over_and_releasing_never_both_hold_it() {
    let explored = contenders(3, Duration::ZERO, true);
    assert!(explored.finished > 10, "{explored:?}");
}

/// A world on the manual clock, without the explorer.
fn plain_world() -> World {
    World::with_manual_clock()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

#[test]
fn a_holder_whose_lease_lapsed_is_told_it_lost_the_lock_and_renews_nothing() {
    block_on(async {
        let w = plain_world();
        let cancel = Cancel::default();
        let lease = Lease::default();
        let a = DeployLock::acquire(&w, name(), run(1), lease, Duration::ZERO, &cancel, |_| {}).await.unwrap();
        assert_eq!(a.check(), Ok(()));
        // Run 1 stalls (no renewal) past its lease; run 2 takes the lock over.
        w.advance(lease.lease + Duration::from_secs(1)).await;
        let b = DeployLock::acquire(&w, name(), run(2), lease, Duration::ZERO, &cancel, |_| {}).await.unwrap();
        let lost = a.check().unwrap_err();
        assert!(lost.why.contains("could not be renewed"), "{lost}");
        match a.renew().await {
            Err(RenewError::Lost(lost)) => assert_eq!(lost.why, "run 2 took it over"),
            other => panic!("{other:?}"),
        }
        // Run 2 still holds it: run 1's renewal wrote nothing.
        assert_eq!(b.check(), Ok(()));
        b.renew().await.unwrap();
        // Run 1's late release leaves run 2's lock alone.
        a.release().await.unwrap();
        let c = DeployLock::acquire(&w, name(), run(3), lease, Duration::ZERO, &cancel, |_| {}).await;
        assert!(matches!(c, Err(LockError::Held { ref by, .. }) if by == "run 2"), "{:?}", c.err());
    })
}

#[test]
fn a_holder_that_renews_in_time_keeps_the_lock() {
    block_on(async {
        let w = plain_world();
        let cancel = Cancel::default();
        let lease = Lease::default();
        let a = DeployLock::acquire(&w, name(), run(1), lease, Duration::ZERO, &cancel, |_| {}).await.unwrap();
        for _ in 0..10 {
            w.advance(lease.renew).await;
            a.renew().await.unwrap();
        }
        assert_eq!(a.check(), Ok(()));
        let b = DeployLock::acquire(&w, name(), run(2), lease, Duration::from_secs(10), &cancel, |_| {}).await;
        assert!(matches!(b, Err(LockError::Held { ref by, .. }) if by == "run 1"));
    })
}

#[test]
fn a_lock_written_by_ec2_deploy_0_1_is_a_holder_until_its_lease_ends() {
    block_on(async {
        let w = plain_world();
        let cancel = Cancel::default();
        let expires = epoch_seconds(w.now()) + 30;
        w.put_raw(LOCK, &format!(r#"{{"id":"old","by":"an older ec2-deploy","expires":{expires}}}"#));
        let b =
            DeployLock::acquire(&w, name(), run(2), Lease::default(), Duration::from_secs(5), &cancel, |_| {}).await;
        assert!(matches!(b, Err(LockError::Held { ref by, .. }) if by == "an older ec2-deploy"));
        let b =
            DeployLock::acquire(&w, name(), run(2), Lease::default(), Duration::from_secs(60), &cancel, |_| {}).await;
        assert!(b.is_ok(), "taken over once the old lease ended");
    })
}
