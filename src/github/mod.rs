//! GitHub, two ways: [`runner`] speaks to the Actions runner that runs the step (log groups,
//! annotations, masks, step outputs, the job summary); [`api`] speaks to GitHub's REST API
//! (Deployments and the compare API), implementing the [`GitHub`](crate::ports::GitHub) port.

pub mod api;
pub mod runner;

pub use runner::Runner;
