//! ec2-deploy: ship a container image to an EC2 fleet through SSM Run Command — no SSH, no
//! stored IP addresses, no downtime.
//!
//! `ec2-deploy action` is the GitHub Action's entrypoint; `ec2-deploy plan | deploy | rollback`
//! run the same deploy from a terminal.
//!
//! ## How a deploy flows, and where each part lives
//!
//! ```text
//! inputs/   the action's inputs, CLI flags and the YAML config → a typed DeployRequest
//! plan/     read-only facts (release history, registry, instances by tag, secret, target
//!           groups) → the Plan: everything that will happen, printed; a dry run stops here
//! deploy    the deploy lock (lock.rs) around applying the plan
//! apply/    build.rs (image) → by_tags.rs or batches.rs (roll out; command.rs sends and
//!           follows Run Commands, traffic.rs drains and re-admits) → record.rs (release record)
//! report/   what happened, per instance and batch; summary.rs renders the job summary
//! ```
//!
//! Around that core: [`model`] holds the validated domain values, [`release`] the versioned
//! release record, [`instance`] the script that runs on each instance (built, never sent, here).
//! The deploy talks to the world only through [`ports`]; the adapters at the edge implement
//! them: [`aws`] (SSM, ECR, ELBv2, Secrets Manager), [`docker`] (the build), [`github::api`]
//! (Deployments), gathered in [`live`]. [`github::runner`] prints to the Actions runner. The
//! unit tests run the same deploy against `fake`, an in-memory world with the services'
//! semantics.
// No function longer than 100 lines of code (clippy's count: without comments and blank lines);
// scripts/test builds with clippy -D warnings. scripts/lint keeps each file within 600 lines.
#![warn(clippy::too_many_lines)]

pub mod apply;
pub mod aws;
pub mod cancel;
pub mod cli;
pub mod deploy;
pub mod docker;
pub mod drift;
pub mod exec;
#[cfg(test)]
pub mod fake;
pub mod github;
pub mod inputs;
pub mod instance;
pub mod live;
pub mod lock;
pub mod logs;
pub mod maintenance;
pub mod model;
pub mod plan;
pub mod ports;
pub mod release;
pub mod report;

use std::fmt;

/// Exit codes, documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// The deploy ran and failed on some instance (or the build failed).
    DeployFailed = 1,
    /// Bad input or a plan that cannot go ahead: nothing was changed.
    BadInput = 2,
    /// AWS or GitHub refused or could not be reached (credentials, permissions, network).
    Access = 3,
    /// The release runs on every instance, but the release record could not be written.
    NotRecorded = 4,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", list("input", .0))]
    Inputs(Vec<inputs::InputError>),
    #[error("{}", list("reason not to deploy", .0))]
    Plan(Vec<plan::PlanError>),
    #[error(transparent)]
    NoRegion(#[from] aws::NoRegion),
    #[error(transparent)]
    Service(#[from] ports::ServiceError),
    #[error("image {0}")]
    Build(#[from] ports::BuildError),
    #[error("input {0}")]
    Script(#[from] instance::QuoteError),
    #[error("writing step outputs: {0}")]
    Output(std::io::Error),
    #[error("cancelled before the rollout started: no instance was changed")]
    Cancelled,
    #[error("{0}")]
    Locked(String),
    #[error(transparent)]
    LockLost(#[from] lock::LockLost),
    /// `pre-deploy` failed: nothing was switched.
    #[error("pre-deploy failed on {instance}: {reason}; no instance was switched. Its last output:\n{output}")]
    PreDeploy { instance: String, reason: String, output: String },
    /// Pulling the release first failed somewhere: nothing was switched.
    #[error("{image} could not be pulled everywhere before the first batch, so no instance was switched: {}", .why.join("; "))]
    Pull { image: String, why: Vec<String> },
    /// The rollout succeeded; writing the release record did not.
    #[error("{release} was deployed to every instance, but the release record {parameter} could not be written: {error}. Auto Scaling boots and rollbacks do not know this release until a deploy records it: fix the runner's ssm:PutParameter access and redeploy (nothing restarts)")]
    NotRecorded { release: String, parameter: String, error: ports::ServiceError },
}

fn list<T: fmt::Display>(what: &str, items: &[T]) -> String {
    match items {
        [one] => one.to_string(),
        many => {
            let mut s = format!("{} {what}s:", many.len());
            for item in many {
                s.push_str(&format!("\n  - {item}"));
            }
            s
        }
    }
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Inputs(_) | Error::Plan(_) | Error::Script(_) | Error::NoRegion(_) => Exit::BadInput,
            Error::Service(_) => Exit::Access,
            Error::Build(_)
            | Error::Output(_)
            | Error::Cancelled
            | Error::Locked(_)
            | Error::LockLost(_)
            | Error::PreDeploy { .. }
            | Error::Pull { .. } => Exit::DeployFailed,
            Error::NotRecorded { .. } => Exit::NotRecorded,
        }
    }

    /// A short title for the annotation.
    pub fn title(&self) -> &'static str {
        match self {
            Error::Inputs(_) | Error::Script(_) | Error::NoRegion(_) => "ec2-deploy: bad input",
            Error::Plan(_) => "ec2-deploy: cannot deploy",
            Error::Service(e) if e.kind == ports::ErrorKind::Access => "ec2-deploy: AWS access",
            Error::Service(_) => "ec2-deploy: AWS",
            Error::Build(_) => "ec2-deploy: build failed",
            Error::Output(_) => "ec2-deploy: runner",
            Error::Cancelled => "ec2-deploy: cancelled",
            Error::Locked(_) => "ec2-deploy: lock held",
            Error::LockLost(_) => "ec2-deploy: lock lost",
            Error::NotRecorded { .. } => "ec2-deploy: release not recorded",
            Error::PreDeploy { .. } => "ec2-deploy: pre-deploy failed",
            Error::Pull { .. } => "ec2-deploy: pull failed",
        }
    }
}
