//! Run Command as the domain sees it: a command, and one invocation per instance with a typed
//! status.

use std::fmt;

use serde::Serialize;

use super::{InstanceId, Limit};

/// Seconds SSM keeps trying to reach an instance's agent. The plan has just seen every agent
/// online, so a long wait only delays the report of an instance that went away.
pub const DELIVERY_TIMEOUT: u32 = 120;

/// The longest one Run Command to `targets` instances, `concurrency` at a time, may take: one
/// script timeout (`timeout` seconds) per wave, plus delivery and a margin. The run's deadline
/// and the plan's worst case are both this.
pub fn command_deadline(targets: usize, concurrency: Limit, timeout: u32) -> std::time::Duration {
    std::time::Duration::from_secs(waves(targets, concurrency) * u64::from(timeout) + u64::from(DELIVERY_TIMEOUT) + 60)
}

/// How many waves SSM runs `targets` instances in, `concurrency` at a time.
pub fn waves(targets: usize, concurrency: Limit) -> u64 {
    targets.max(1).div_ceil(concurrency.of(targets.max(1), true).max(1)) as u64
}

/// An SSM command id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct CommandId(pub String);

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An invocation's (or the whole command's) Status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum InvocationStatus {
    Pending,
    InProgress,
    Delayed,
    Success,
    Cancelled,
    TimedOut,
    Failed,
    Cancelling,
    /// A value this version does not know, kept as AWS said it.
    Other(String),
}

impl InvocationStatus {
    pub fn from_aws(text: &str) -> Self {
        use InvocationStatus::*;
        match text {
            "Pending" => Pending,
            "InProgress" => InProgress,
            "Delayed" => Delayed,
            "Success" => Success,
            "Cancelled" => Cancelled,
            "TimedOut" => TimedOut,
            "Failed" => Failed,
            "Cancelling" => Cancelling,
            other => Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        use InvocationStatus::*;
        match self {
            Pending => "Pending",
            InProgress => "InProgress",
            Delayed => "Delayed",
            Success => "Success",
            Cancelled => "Cancelled",
            TimedOut => "TimedOut",
            Failed => "Failed",
            Cancelling => "Cancelling",
            Other(s) => s,
        }
    }

    /// Nothing will change any more.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Success | Self::Cancelled | Self::TimedOut | Self::Failed)
    }

    /// SSM has not started the script on the instance: it can still be cancelled without
    /// interrupting anything.
    pub fn not_started(&self) -> bool {
        matches!(self, Self::Pending | Self::Delayed)
    }
}

impl fmt::Display for InvocationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// StatusDetails: more precise than the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum StatusDetail {
    Pending,
    InProgress,
    Delayed,
    Success,
    Failed,
    Cancelled,
    DeliveryTimedOut,
    ExecutionTimedOut,
    Undeliverable,
    /// Never started: past MaxErrors.
    Terminated,
    InvalidPlatform,
    AccessDenied,
    Cancelling,
    Other(String),
}

impl StatusDetail {
    pub fn from_aws(text: &str) -> Self {
        use StatusDetail::*;
        match text {
            "Pending" => Pending,
            "InProgress" => InProgress,
            "Delayed" => Delayed,
            "Success" => Success,
            "Failed" => Failed,
            "Cancelled" => Cancelled,
            "Delivery Timed Out" => DeliveryTimedOut,
            "Execution Timed Out" => ExecutionTimedOut,
            "Undeliverable" => Undeliverable,
            "Terminated" => Terminated,
            "Invalid Platform" => InvalidPlatform,
            "Access Denied" => AccessDenied,
            "Cancelling" => Cancelling,
            other => Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        use StatusDetail::*;
        match self {
            Pending => "Pending",
            InProgress => "InProgress",
            Delayed => "Delayed",
            Success => "Success",
            Failed => "Failed",
            Cancelled => "Cancelled",
            DeliveryTimedOut => "Delivery Timed Out",
            ExecutionTimedOut => "Execution Timed Out",
            Undeliverable => "Undeliverable",
            Terminated => "Terminated",
            InvalidPlatform => "Invalid Platform",
            AccessDenied => "Access Denied",
            Cancelling => "Cancelling",
            Other(s) => s,
        }
    }

    /// The script ran on the instance (and may have changed it).
    pub fn script_ran(&self) -> bool {
        matches!(self, Self::Success | Self::Failed | Self::ExecutionTimedOut | Self::Cancelled)
    }
}

impl fmt::Display for StatusDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The command as a whole and its counts (ListCommands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandState {
    pub status: InvocationStatus,
    pub target_count: i32,
    pub completed_count: i32,
    pub error_count: i32,
}

impl Default for CommandState {
    fn default() -> Self {
        CommandState { status: InvocationStatus::Pending, target_count: 0, completed_count: 0, error_count: 0 }
    }
}

/// One instance's invocation as ListCommandInvocations reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub instance_id: InstanceId,
    pub status: InvocationStatus,
    pub detail: StatusDetail,
    /// The script's exit code, once it ran.
    pub response_code: Option<i32>,
    /// The first 2,500 characters of output.
    pub output: String,
}

impl Invocation {
    pub fn is_done(&self) -> bool {
        self.status.is_terminal()
    }
}

/// One instance's full output (up to SSM's 24,000 / 8,000 characters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvocationOutput {
    pub stdout: String,
    pub stderr: String,
}
