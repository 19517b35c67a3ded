//! What a drift survey found on one instance (see [`crate::drift`], which asks).

use serde::Serialize;

use super::ManagedInstance;

/// What one instance runs, next to the live release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum DriftState {
    /// It runs the live release, as a deploy of it would leave it.
    Current,
    /// It runs something else: why, in words (with the release and image it runs, if any).
    Drifted { why: String },
    /// Its SSM agent is not connected: it could not be asked.
    Offline { ping: String },
    /// The check did not say (delivery failed, the script failed): why.
    Unknown { why: String },
}

/// One instance of the survey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceDrift {
    pub instance: ManagedInstance,
    #[serde(flatten)]
    pub state: DriftState,
    /// The proxy answers with a maintenance page there (`ec2-deploy maintenance on`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub maintenance: bool,
}

impl InstanceDrift {
    /// Anything but a check that found the live release.
    pub fn drifted(&self) -> bool {
        !matches!(self.state, DriftState::Current)
    }

    /// Why it is drifted, in words (empty when it is not).
    pub fn why(&self) -> String {
        match &self.state {
            DriftState::Current => String::new(),
            DriftState::Drifted { why, .. } => why.clone(),
            DriftState::Offline { ping } => format!("not asked: its SSM agent is {ping}"),
            DriftState::Unknown { why } => format!("could not be asked: {why}"),
        }
    }
}
