//! Rolling through a fleet behind a load balancer, batch by batch, without dropping requests.
//!
//! For each batch: take it out of every target group and wait until it is drained → swap the
//! container (SSM) → put it back and wait until it is healthy → next batch. The first batch is a
//! canary of one instance. When a batch fails, that batch and every batch before it go back to
//! what they ran before (each out of the load balancer while it changes), the batches after it are
//! left alone, and the run fails with a report naming instance, phase and reason.
//!
//! The state machine only talks to two small traits, so fault sequences (a drain that never ends,
//! a swap that fails, a rollback that fails too) are driven in unit tests; the real adapters over
//! ELBv2 and SSM are exercised on the test bed.

use std::future::Future;
use std::time::Instant;

use serde::Serialize;

use crate::github::Runner;
use crate::inputs::Limit;
use crate::report::InstanceReport;

/// Load balancer membership.
pub trait Lb {
    /// Deregister from every target group and wait until drained.
    fn take_out(&self, ids: &[String]) -> impl Future<Output = Result<(), String>>;
    /// Register in every target group and wait until healthy.
    fn put_back(&self, ids: &[String]) -> impl Future<Output = Result<(), String>>;
    /// Register in every target group without waiting (when the run is cancelled: the load
    /// balancer's own checks gate the traffic).
    fn readmit(&self, ids: &[String]) -> impl Future<Output = Result<(), String>>;
}

/// Changing what runs on instances.
pub trait Swapper {
    /// The new release on `ids`: one report per instance.
    fn deploy(&self, ids: &[String]) -> impl Future<Output = Result<Vec<InstanceReport>, String>>;
    /// Each instance back to the given image (the one it ran before).
    fn rollback(&self, targets: &[(String, String)]) -> impl Future<Output = Result<Vec<InstanceReport>, String>>;
}

/// Splits the fleet into batches: a canary of one first (when asked and there is more than one
/// instance), then batches of `size`.
pub fn batches(ids: &[String], canary: bool, size: Limit) -> Vec<Vec<String>> {
    if ids.is_empty() {
        return vec![];
    }
    let per_batch = match size {
        Limit::Count(n) => n as usize,
        Limit::Percent(p) => (ids.len() * p as usize).div_ceil(100),
    }
    .max(1);
    let (first, rest) = if canary && ids.len() > 1 { ids.split_at(1) } else { ids.split_at(0) };
    let mut out: Vec<Vec<String>> = vec![];
    if !first.is_empty() {
        out.push(first.to_vec());
    }
    out.extend(rest.chunks(per_batch).map(<[String]>::to_vec));
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Drain,
    Swap,
    Healthy,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Drain => "drain",
            Phase::Swap => "swap",
            Phase::Healthy => "load balancer health",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum BatchOutcome {
    Done,
    Failed {
        phase: Phase,
        reason: String,
    },
    NotStarted,
    /// Stopped by a cancel; the batch was registered again.
    Cancelled,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    pub number: usize,
    pub ids: Vec<String>,
    pub outcome: BatchOutcome,
    pub seconds: f64,
}

/// What the rollback after a failed batch did.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub instances: Vec<InstanceReport>,
    /// Problems that leave the fleet other than it was before the deploy.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    pub batches: Vec<BatchReport>,
    /// The latest report of every instance that the deploy touched.
    pub instances: Vec<InstanceReport>,
    pub rollback: Option<RollbackReport>,
}

impl RolloutReport {
    pub fn success(&self) -> bool {
        self.batches.iter().all(|b| b.outcome == BatchOutcome::Done)
    }
}

/// Walks the batches; on a failure rolls back and reports.
pub async fn run<L: Lb, S: Swapper>(
    lb: &L,
    swapper: &S,
    batches: Vec<Vec<String>>,
    runner: &Runner,
    cancel: &crate::cancel::Cancel,
) -> RolloutReport {
    let total = batches.len();
    let mut reports: Vec<BatchReport> = vec![];
    let mut instances: Vec<InstanceReport> = vec![];
    let mut failed_at = None;
    for (index, ids) in batches.iter().enumerate() {
        if cancel.is_cancelled() {
            break;
        }
        let number = index + 1;
        let started = Instant::now();
        runner.group(&format!("Batch {number}/{total}: {}", ids.join(", ")));
        let mut outcome = run_batch(lb, swapper, ids, runner, &mut instances).await;
        if outcome != BatchOutcome::Done && cancel.is_cancelled() {
            // Cancelled mid-batch: no rollback (scripts still running finish on their own); the
            // batch goes back into the load balancer, whose checks admit it once it is healthy.
            if let Err(e) = lb.readmit(ids).await {
                runner.error(
                    "ec2-deploy: cancelled",
                    &format!("putting {} back into the load balancer: {e}", ids.join(", ")),
                );
            }
            outcome = BatchOutcome::Cancelled;
        }
        runner.end_group();
        let failed = outcome != BatchOutcome::Done;
        if let BatchOutcome::Failed { phase, reason } = &outcome {
            runner.error("ec2-deploy: batch failed", &format!("batch {number}/{total} failed at {phase}: {reason}"));
        }
        reports.push(BatchReport { number, ids: ids.clone(), outcome, seconds: started.elapsed().as_secs_f64() });
        if failed {
            failed_at = Some(index);
            break;
        }
    }
    for (index, ids) in batches.iter().enumerate().skip(reports.len()) {
        reports.push(BatchReport {
            number: index + 1,
            ids: ids.clone(),
            outcome: BatchOutcome::NotStarted,
            seconds: 0.0,
        });
    }
    let rollback = match failed_at {
        Some(_) if cancel.is_cancelled() => None,
        Some(index) => Some(roll_back(lb, swapper, &batches[..=index], &reports[index], runner, &instances).await),
        None => None,
    };
    RolloutReport { batches: reports, instances, rollback }
}

async fn run_batch<L: Lb, S: Swapper>(
    lb: &L,
    swapper: &S,
    ids: &[String],
    runner: &Runner,
    instances: &mut Vec<InstanceReport>,
) -> BatchOutcome {
    let t = Instant::now();
    if let Err(reason) = lb.take_out(ids).await {
        return BatchOutcome::Failed { phase: Phase::Drain, reason };
    }
    runner.info(&format!("  out of the load balancer and drained ({:.1}s)", t.elapsed().as_secs_f64()));
    let t = Instant::now();
    let swapped = match swapper.deploy(ids).await {
        Ok(reports) => reports,
        Err(reason) => return BatchOutcome::Failed { phase: Phase::Swap, reason },
    };
    runner.info(&format!("  swapped ({:.1}s)", t.elapsed().as_secs_f64()));
    let failures: Vec<String> = swapped
        .iter()
        .filter(|r| !r.ok())
        .map(|r| format!("{}: {}", r.id, r.reason.as_deref().unwrap_or(&r.details)))
        .collect();
    instances.extend(swapped);
    if !failures.is_empty() {
        return BatchOutcome::Failed { phase: Phase::Swap, reason: failures.join("; ") };
    }
    let t = Instant::now();
    if let Err(reason) = lb.put_back(ids).await {
        return BatchOutcome::Failed { phase: Phase::Healthy, reason };
    }
    runner.info(&format!("  back in the load balancer and healthy ({:.1}s)", t.elapsed().as_secs_f64()));
    BatchOutcome::Done
}

/// The failed batch first (it is out of the load balancer: restore capacity), then the earlier
/// batches, latest first, each out of the load balancer while it changes.
async fn roll_back<L: Lb, S: Swapper>(
    lb: &L,
    swapper: &S,
    done: &[Vec<String>],
    failed: &BatchReport,
    runner: &Runner,
    instances: &[InstanceReport],
) -> RollbackReport {
    runner.group("Rollback");
    let mut report = RollbackReport { instances: vec![], problems: vec![] };
    let (failed_ids, earlier) = done.split_last().expect("at least the failed batch");
    // Which instances switched to the new release, and what each ran before.
    let target = |id: &String| -> Option<(String, String)> {
        let r = instances.iter().find(|r| &r.id == id)?;
        match (r.outcome.as_deref(), r.previous.as_deref()) {
            (Some("deployed"), Some(prev)) if prev != "none" => Some((id.clone(), prev.to_string())),
            _ => None,
        }
    };
    let no_previous = |id: &String| {
        instances
            .iter()
            .find(|r| &r.id == id)
            .is_some_and(|r| r.outcome.as_deref() == Some("deployed") && r.previous.as_deref() == Some("none"))
    };

    let step = |ids: &[String], already_out: bool| {
        let targets: Vec<(String, String)> = ids.iter().filter_map(target).collect();
        let first_deploys: Vec<String> = ids
            .iter()
            .filter(|id| no_previous(id))
            .map(|id| format!("{id}: it ran nothing before this deploy, so it keeps the new release"))
            .collect();
        rollback_batch(lb, swapper, ids.to_vec(), already_out, targets, first_deploys)
    };

    runner.info(&format!("  batch {} (failed): back to the previous release", failed.number));
    // A batch that failed at the load balancer's health check is registered again: take it out.
    let still_out = !matches!(failed.outcome, BatchOutcome::Failed { phase: Phase::Healthy, .. });
    let (r, p) = step(failed_ids, still_out).await;
    report.instances.extend(r);
    report.problems.extend(p);
    for (n, ids) in earlier.iter().enumerate().rev() {
        runner.info(&format!("  batch {}: back to the previous release", n + 1));
        let (r, p) = step(ids, false).await;
        report.instances.extend(r);
        report.problems.extend(p);
    }
    for p in &report.problems {
        runner.error("ec2-deploy: rollback", p);
    }
    runner.end_group();
    report
}

/// One batch back to its previous release, out of the load balancer while it changes.
async fn rollback_batch<L: Lb, S: Swapper>(
    lb: &L,
    swapper: &S,
    ids: Vec<String>,
    already_out: bool,
    targets: Vec<(String, String)>,
    mut problems: Vec<String>,
) -> (Vec<InstanceReport>, Vec<String>) {
    let mut reports = vec![];
    if !already_out && !targets.is_empty() {
        if let Err(e) = lb.take_out(&ids).await {
            problems.push(format!("taking {} out of the load balancer for the rollback: {e}", ids.join(", ")));
            return (reports, problems);
        }
    }
    if !targets.is_empty() {
        match swapper.rollback(&targets).await {
            Ok(r) => {
                for i in r.iter().filter(|i| !i.ok()) {
                    problems.push(format!("{}: rollback failed: {}", i.id, i.reason.as_deref().unwrap_or(&i.details)));
                }
                reports = r;
            }
            Err(e) => problems.push(format!("rolling back {}: {e}", ids.join(", "))),
        }
    }
    if already_out || !targets.is_empty() {
        if let Err(e) = lb.put_back(&ids).await {
            problems.push(format!("putting {} back into the load balancer: {e}", ids.join(", ")));
        }
    }
    (reports, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("i-{i}")).collect()
    }

    #[test]
    fn batches_start_with_a_canary() {
        assert_eq!(batches(&ids(3), true, Limit::Count(1)), vec![vec!["i-1"], vec!["i-2"], vec!["i-3"]]);
        assert_eq!(batches(&ids(5), true, Limit::Count(2)), vec![vec!["i-1"], vec!["i-2", "i-3"], vec!["i-4", "i-5"]]);
        assert_eq!(
            batches(&ids(10), true, Limit::Percent(50)),
            vec![ids(1), ids(10)[1..6].to_vec(), ids(10)[6..].to_vec()]
        );
        assert_eq!(batches(&ids(4), false, Limit::Percent(50)), vec![ids(2), ids(4)[2..].to_vec()]);
        assert_eq!(batches(&ids(1), true, Limit::Count(1)), vec![ids(1)]);
        assert_eq!(batches(&ids(3), true, Limit::Percent(1)), vec![vec!["i-1"], vec!["i-2"], vec!["i-3"]]);
    }

    /// A fake fleet: which instance runs what, which instances are in the load balancer, and
    /// the faults to inject. Every call is logged so tests can check the order of events.
    #[derive(Default)]
    struct World {
        running: RefCell<BTreeMap<String, String>>,
        in_lb: RefCell<BTreeMap<String, bool>>,
        log: RefCell<Vec<String>>,
        bad_release_on: Vec<String>,
        drain_fails_on: Vec<String>,
        rollback_fails_on: Vec<String>,
        unhealthy_in_lb: Vec<String>,
        /// Cancels the run while this instance's script is running.
        cancel_during: Option<String>,
        cancel: crate::cancel::Cancel,
    }

    impl World {
        fn new(n: usize, faults: impl FnOnce(&mut World)) -> World {
            let mut w = World::default();
            for id in ids(n) {
                w.running.borrow_mut().insert(id.clone(), "old".into());
                w.in_lb.borrow_mut().insert(id, true);
            }
            faults(&mut w);
            w
        }

        fn report(
            &self,
            id: &str,
            ok: bool,
            outcome: &str,
            previous: &str,
            current: &str,
            reason: Option<&str>,
        ) -> InstanceReport {
            InstanceReport {
                id: id.into(),
                name: None,
                status: if ok { "Success" } else { "Failed" }.into(),
                details: if ok { "Success" } else { "Failed" }.into(),
                response_code: Some(if ok { 0 } else { 15 }),
                outcome: ok.then(|| outcome.to_string()),
                previous: Some(previous.into()),
                current: Some(current.into()),
                step: None,
                reason: reason.map(str::to_string),
            }
        }
    }

    impl Lb for World {
        async fn readmit(&self, ids: &[String]) -> Result<(), String> {
            self.log.borrow_mut().push(format!("readmit {}", ids.join(",")));
            for id in ids {
                self.in_lb.borrow_mut().insert(id.clone(), true);
            }
            Ok(())
        }

        async fn take_out(&self, ids: &[String]) -> Result<(), String> {
            self.log.borrow_mut().push(format!("out {}", ids.join(",")));
            for id in ids {
                self.in_lb.borrow_mut().insert(id.clone(), false);
            }
            match ids.iter().find(|id| self.drain_fails_on.contains(id)) {
                Some(id) => Err(format!("{id} still draining")),
                None => Ok(()),
            }
        }

        async fn put_back(&self, ids: &[String]) -> Result<(), String> {
            self.log.borrow_mut().push(format!("in {}", ids.join(",")));
            for id in ids {
                self.in_lb.borrow_mut().insert(id.clone(), true);
            }
            match ids.iter().find(|id| self.unhealthy_in_lb.contains(id) && self.running.borrow()[*id] == "new") {
                Some(id) => Err(format!("{id} unhealthy")),
                None => Ok(()),
            }
        }
    }

    impl Swapper for World {
        async fn deploy(&self, ids: &[String]) -> Result<Vec<InstanceReport>, String> {
            self.log.borrow_mut().push(format!("deploy {}", ids.join(",")));
            Ok(ids
                .iter()
                .map(|id| {
                    assert!(!self.in_lb.borrow()[id], "{id} swapped while in the load balancer");
                    if self.cancel_during.as_ref() == Some(id) {
                        // The signal arrives while the script runs; it goes on to finish.
                        self.cancel.cancel();
                        let mut r = self.report(id, false, "", "old", "new", None);
                        r.status = "InProgress".into();
                        return r;
                    }
                    if self.bad_release_on.contains(id) {
                        // The script restores the previous container itself.
                        self.report(id, false, "", "old", "new", Some("unhealthy; the previous container is back"))
                    } else {
                        self.running.borrow_mut().insert(id.clone(), "new".into());
                        self.report(id, true, "deployed", "old", "new", None)
                    }
                })
                .collect())
        }

        async fn rollback(&self, targets: &[(String, String)]) -> Result<Vec<InstanceReport>, String> {
            self.log
                .borrow_mut()
                .push(format!("rollback {}", targets.iter().map(|t| t.0.as_str()).collect::<Vec<_>>().join(",")));
            Ok(targets
                .iter()
                .map(|(id, image)| {
                    assert!(!self.in_lb.borrow()[id], "{id} rolled back while in the load balancer");
                    if self.rollback_fails_on.contains(id) {
                        self.report(
                            id,
                            false,
                            "",
                            "new",
                            image,
                            Some("rollback failed: old is unhealthy; new runs again"),
                        )
                    } else {
                        self.running.borrow_mut().insert(id.clone(), image.clone());
                        self.report(id, true, "rolled-back", "new", image, None)
                    }
                })
                .collect())
        }
    }

    fn run_world(w: &World, size: Limit) -> RolloutReport {
        let b = batches(&ids(w.running.borrow().len()), true, size);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run(w, w, b, &Runner::terminal(), &w.cancel))
    }

    #[test]
    fn a_clean_rollout_walks_every_batch_in_order() {
        let w = World::new(3, |_| {});
        let r = run_world(&w, Limit::Count(1));
        assert!(r.success() && r.rollback.is_none());
        assert_eq!(
            *w.log.borrow(),
            ["out i-1", "deploy i-1", "in i-1", "out i-2", "deploy i-2", "in i-2", "out i-3", "deploy i-3", "in i-3"]
        );
        assert!(w.running.borrow().values().all(|v| v == "new"));
        assert!(w.in_lb.borrow().values().all(|v| *v));
    }

    #[test]
    fn a_failed_batch_rolls_back_itself_and_the_batches_before_and_leaves_the_rest() {
        let w = World::new(3, |w| w.bad_release_on = vec!["i-2".into()]);
        let r = run_world(&w, Limit::Count(1));
        assert!(!r.success());
        assert_eq!(
            r.batches[1].outcome,
            BatchOutcome::Failed {
                phase: Phase::Swap,
                reason: "i-2: unhealthy; the previous container is back".into()
            }
        );
        assert_eq!(r.batches[2].outcome, BatchOutcome::NotStarted);
        let rollback = r.rollback.unwrap();
        assert_eq!(rollback.problems, Vec::<String>::new());
        // Batch 2 restored itself and goes back in; batch 1 leaves, rolls back, comes back; batch 3 untouched.
        assert_eq!(
            *w.log.borrow(),
            ["out i-1", "deploy i-1", "in i-1", "out i-2", "deploy i-2", "in i-2", "out i-1", "rollback i-1", "in i-1"]
        );
        assert!(w.running.borrow().values().all(|v| v == "old"));
        assert!(w.in_lb.borrow().values().all(|v| *v), "every instance is back in the load balancer");
    }

    #[test]
    fn a_batch_unhealthy_at_the_load_balancer_is_rolled_back_too() {
        let w = World::new(3, |w| w.unhealthy_in_lb = vec!["i-2".into()]);
        let r = run_world(&w, Limit::Count(1));
        assert_eq!(
            r.batches[1].outcome,
            BatchOutcome::Failed { phase: Phase::Healthy, reason: "i-2 unhealthy".into() }
        );
        assert_eq!(r.rollback.as_ref().unwrap().problems, Vec::<String>::new());
        assert!(w.running.borrow().values().all(|v| v == "old"), "{:?}", w.running.borrow());
        assert!(w.in_lb.borrow().values().all(|v| *v));
    }

    #[test]
    fn a_drain_that_never_ends_changes_nothing_and_puts_the_batch_back() {
        let w = World::new(3, |w| w.drain_fails_on = vec!["i-1".into()]);
        let r = run_world(&w, Limit::Count(1));
        assert_eq!(
            r.batches[0].outcome,
            BatchOutcome::Failed { phase: Phase::Drain, reason: "i-1 still draining".into() }
        );
        assert!(w.running.borrow().values().all(|v| v == "old"));
        assert!(w.in_lb.borrow().values().all(|v| *v));
        assert_eq!(*w.log.borrow(), ["out i-1", "in i-1"]);
    }

    #[test]
    fn a_cancel_mid_batch_starts_nothing_new_rolls_nothing_back_and_readmits_the_batch() {
        let w = World::new(3, |w| w.cancel_during = Some("i-2".into()));
        let r = run_world(&w, Limit::Count(1));
        assert!(!r.success());
        assert!(r.rollback.is_none(), "a cancel must not start a rollback");
        assert_eq!(
            r.batches.iter().map(|b| b.outcome.clone()).collect::<Vec<_>>(),
            [BatchOutcome::Done, BatchOutcome::Cancelled, BatchOutcome::NotStarted]
        );
        assert_eq!(*w.log.borrow(), ["out i-1", "deploy i-1", "in i-1", "out i-2", "deploy i-2", "readmit i-2"]);
        assert!(w.in_lb.borrow().values().all(|v| *v), "every instance is registered again");
    }

    #[test]
    fn a_failed_rollback_is_reported_and_never_leaves_an_instance_without_a_release() {
        let w = World::new(3, |w| {
            w.bad_release_on = vec!["i-3".into()];
            w.rollback_fails_on = vec!["i-1".into()];
        });
        let r = run_world(&w, Limit::Count(1));
        let rollback = r.rollback.unwrap();
        assert_eq!(rollback.problems, vec!["i-1: rollback failed: rollback failed: old is unhealthy; new runs again"]);
        let running = w.running.borrow();
        assert_eq!((running["i-1"].as_str(), running["i-2"].as_str(), running["i-3"].as_str()), ("new", "old", "old"));
        assert!(w.in_lb.borrow().values().all(|v| *v));
    }
}
