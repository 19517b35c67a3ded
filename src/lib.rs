//! ec2-deploy: ship a container image to an EC2 fleet through SSM Run Command — no SSH, no
//! stored IP addresses, no downtime.
//!
//! `ec2-deploy action` is the GitHub Action's entrypoint; `ec2-deploy plan | deploy` run the same
//! engine from a terminal. See DESIGN.md for the shape: inputs → plan (read-only) → build & push
//! → Run Command → report.

pub mod aws;
pub mod build;
pub mod cancel;
pub mod cli;
pub mod config;
pub mod engine;
pub mod fleet;
pub mod github;
pub mod github_api;
pub mod inputs;
pub mod instance;
pub mod lock;
pub mod plan;
pub mod registry;
pub mod release;
pub mod report;
pub mod rollout;
pub mod secrets;
pub mod traffic;

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
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", list("input", .0))]
    Inputs(Vec<inputs::InputError>),
    #[error("{}", list("reason not to deploy", .0))]
    Plan(Vec<plan::PlanError>),
    #[error(transparent)]
    Aws(#[from] aws::AwsError),
    #[error("image {0}")]
    Build(#[from] build::BuildError),
    #[error("input {0}")]
    Script(#[from] instance::QuoteError),
    #[error("writing step outputs: {0}")]
    Output(std::io::Error),
    #[error("cancelled before the rollout started: no instance was changed")]
    Cancelled,
    #[error("{0}")]
    Locked(String),
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
    pub fn output(e: std::io::Error) -> Error {
        Error::Output(e)
    }

    pub fn exit(&self) -> Exit {
        match self {
            Error::Inputs(_) | Error::Plan(_) | Error::Script(_) => Exit::BadInput,
            Error::Aws(e) if e.is(aws::NO_REGION) => Exit::BadInput,
            Error::Aws(e) if e.access => Exit::Access,
            Error::Aws(_) => Exit::Access,
            Error::Build(_) | Error::Output(_) | Error::Cancelled | Error::Locked(_) => Exit::DeployFailed,
        }
    }

    /// A short title for the annotation.
    pub fn title(&self) -> &'static str {
        match self {
            Error::Inputs(_) | Error::Script(_) => "ec2-deploy: bad input",
            Error::Plan(_) => "ec2-deploy: cannot deploy",
            Error::Aws(e) if e.access => "ec2-deploy: AWS access",
            Error::Aws(_) => "ec2-deploy: AWS",
            Error::Build(_) => "ec2-deploy: build failed",
            Error::Output(_) => "ec2-deploy: runner",
            Error::Cancelled => "ec2-deploy: cancelled",
            Error::Locked(_) => "ec2-deploy: lock held",
        }
    }
}
