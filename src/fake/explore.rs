//! Every interleaving of a few tasks' parameter-store calls, explored exhaustively.
//!
//! Each task is real code (the deploy lock's acquire, renew, release) running against one fake
//! world whose parameter store yields to this scheduler before every call (and whose clock moves
//! only when a task sleeps, which yields too). So one scheduling step is one store call: the
//! scheduler picks which task makes its next call, and a depth-first search tries every choice
//! at every step.
//!
//! Why not a schedule enumerator such as shuttle's DFS: three contenders making five or six calls
//! each have about 17 million orders. But a task is deterministic: what it does next depends only
//! on the answers it got so far. So the state after a prefix of steps is fully described by the
//! store's contents, the clock, and each task's steps and answers; two prefixes that reach the
//! same state have the same futures. The search visits each reachable state once (replaying a
//! prefix from a fresh world to reach it: futures cannot be cloned) and checks the invariant in
//! every one, which covers every interleaving while running in seconds.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::World;

pub type Task = Pin<Box<dyn Future<Output = ()>>>;

/// A future that is pending once: where a task hands control back to the scheduler.
pub struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

/// The world's hook: a scheduling point before each store call.
pub fn step() -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(YieldOnce(false))
}

/// What the search saw.
#[derive(Debug, Default)]
pub struct Explored {
    /// Distinct states checked.
    pub states: usize,
    /// Runs replayed from a fresh world.
    pub runs: usize,
    /// Complete runs (every task finished).
    pub finished: usize,
}

/// Explores every interleaving of the tasks `setup` makes, checking `invariant` in every state
/// reached. `setup` must build a fresh world (with [`World::with_manual_clock`] and `store_step`
/// set to [`step`]) and the same tasks each time. Panics with the schedule that broke the
/// invariant.
pub fn explore<S>(
    setup: impl Fn() -> (std::rc::Rc<World>, Vec<Task>, S),
    invariant: impl Fn(&World, &S) -> Result<(), String>,
) -> Explored {
    let mut visited = HashSet::new();
    let mut stack: Vec<Vec<usize>> = vec![vec![]];
    let mut explored = Explored::default();
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    while let Some(schedule) = stack.pop() {
        explored.runs += 1;
        let (world, mut tasks, state) = setup();
        let n = tasks.len();
        let mut answers: Vec<Vec<String>> = vec![vec![]; n];
        let mut done = vec![false; n];
        let mut poll = |t: usize, tasks: &mut Vec<Task>, done: &mut Vec<bool>, answers: &mut Vec<Vec<String>>| {
            if tasks[t].as_mut().poll(&mut cx).is_ready() {
                done[t] = true;
            }
            answers[t].extend(world.take_trace());
        };
        // Every task runs to its first store call.
        for t in 0..n {
            poll(t, &mut tasks, &mut done, &mut answers);
        }
        for &t in &schedule {
            poll(t, &mut tasks, &mut done, &mut answers);
        }
        // A task's position is its number of steps; what it knows is its answers.
        let mut steps = vec![0usize; n];
        for &t in &schedule {
            steps[t] += 1;
        }
        let mut h = DefaultHasher::new();
        world.store_snapshot().hash(&mut h);
        answers.hash(&mut h);
        steps.hash(&mut h);
        done.hash(&mut h);
        if !visited.insert(h.finish()) {
            continue;
        }
        explored.states += 1;
        if let Err(why) = invariant(&world, &state) {
            panic!("{why}\n  after the schedule {schedule:?} (task per step)\n  each task's answers: {answers:#?}");
        }
        if done.iter().all(|d| *d) {
            explored.finished += 1;
        }
        for t in (0..n).filter(|t| !done[*t]) {
            let mut next = schedule.clone();
            next.push(t);
            stack.push(next);
        }
    }
    explored
}
