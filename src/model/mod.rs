//! The domain's values, validated once where they enter (inputs, the release record, what AWS
//! answers) and carried as types from then on.
//!
//! A value of these types is known to be well formed: an [`InstanceId`] looks like one, an
//! [`ImageRef`] pins a digest, a [`Limit`] is a count or a percentage. Code past the border never
//! re-checks, and a value read back from a stored record goes through the same parser as an
//! input, so nothing unvalidated slips into a deploy by way of the record. Statuses that AWS
//! reports are enums ([`InvocationStatus`], [`StatusDetail`], [`Ping`]), so the code matches on
//! variants, never on strings.

mod alarm;
mod build;
mod command;
mod container;
mod dockerfile;
mod drift;
mod https;
mod instance;
mod limit;
mod names;
mod options;
mod tags;

pub use alarm::{AlarmSelector, AlarmState, AlarmStatus};
pub use build::{BuildSecret, SecretSource};
pub use command::{
    command_deadline, waves, CommandId, CommandState, Invocation, InvocationOutput, InvocationStatus, StatusDetail,
    DELIVERY_TIMEOUT,
};
pub use container::{
    ContainerSpec, EnvVar, HealthPath, IpRange, PortMapping, DEFAULT_DRAIN_TIMEOUT, DEFAULT_PROXY_IMAGE, PRIVATE_RANGES,
};
pub use dockerfile::{stage_cache, StageCache};
pub use drift::{DriftState, InstanceDrift};
pub use https::{AcmeCa, AcmeEmail, CaRootPem, HostName, ProxyHttps, LETS_ENCRYPT, LETS_ENCRYPT_STAGING};
pub use instance::{InstanceId, ManagedInstance, Ping, Running};
pub use limit::Limit;
pub use names::{
    ContainerName, Digest, EnvironmentName, ImageName, ImageRef, ImageTag, ParameterName, Platform, Region,
    RegistryHost, Repository, SecretId, TargetGroupArn,
};
pub use options::{parse_command, Cpus, KeyValue, LogDriver, Memory, RunOptions, User, Volume, LOG_DRIVERS};
pub use tags::TagFilter;

/// A value that must not be printed (tokens, registry passwords). `Debug` shows only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Declares a string newtype that can only hold what `$parse` accepts: `parse`, `as_str`,
/// `Display`, and serde as a plain string that is parsed (validated) when read back.
macro_rules! text_newtype {
    ($(#[$meta:meta])* $name:ident, $parse:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `text`; the error says what was expected, for a message naming the input.
            pub fn parse(text: &str) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $parse;
                check(text).map(|()| $name(text.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                Self::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                Self::parse(text)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
pub(crate) use text_newtype;

/// The first `max` characters of `text` (never a byte slice inside a character), with `…` when
/// cut: for echoing a bad value back in an error message.
pub fn excerpt(text: &str, max: usize) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_cut_on_characters_not_bytes() {
        assert_eq!(excerpt(&"é".repeat(50), 3), "ééé…");
        assert_eq!(excerpt("abc", 3), "abc");
    }
}
