//! Instances as SSM sees them: an id, a name, the agent's connection.

use std::fmt;

use serde::Serialize;

use super::{text_newtype, ImageRef};

text_newtype!(
    /// An EC2 instance id (`i-0123456789abcdef0`) or a hybrid managed instance (`mi-…`).
    InstanceId,
    |text| {
        let hex = text.strip_prefix("i-").or_else(|| text.strip_prefix("mi-")).unwrap_or("");
        if (8..=17).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err(format!("expected an instance id such as i-0123456789abcdef0, got {text:?}"))
        }
    }
);

/// The SSM agent's connection, as DescribeInstanceInformation reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Ping {
    Online,
    ConnectionLost,
    Inactive,
    /// A value this version does not know, kept as AWS said it.
    Other(String),
}

impl fmt::Display for Ping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ping::Online => f.write_str("Online"),
            Ping::ConnectionLost => f.write_str("ConnectionLost"),
            Ping::Inactive => f.write_str("Inactive"),
            Ping::Other(s) => f.write_str(s),
        }
    }
}

impl Ping {
    pub fn from_aws(text: &str) -> Ping {
        match text {
            "Online" => Ping::Online,
            "ConnectionLost" => Ping::ConnectionLost,
            "Inactive" => Ping::Inactive,
            other => Ping::Other(other.to_string()),
        }
    }
}

/// An instance managed by SSM that matched the deploy's tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagedInstance {
    pub id: InstanceId,
    pub name: Option<String>,
    pub ping: Ping,
    pub ip: Option<String>,
}

/// What ran on an instance, as the script reports it: the image and the identity of its
/// settings (`ec2-deploy.config`), so that a rollback goes back to exactly what ran.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Running {
    /// The image as the instance names it (`none` when nothing ran).
    pub image: String,
    /// The container's settings identity (empty when the container was not made by ec2-deploy).
    pub config: String,
}

impl Running {
    pub fn is_none(&self) -> bool {
        self.image == "none"
    }

    /// `repository@sha256:0123456789ab`, or the text as given.
    pub fn short(&self) -> String {
        ImageRef::parse(&self.image)
            .map(|i| i.short())
            .unwrap_or_else(|_| self.image.rsplit('/').next().unwrap_or(&self.image).to_string())
    }
}
