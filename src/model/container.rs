//! What runs on each instance: the container's name, ports, environment, secret and health check.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{excerpt, text_newtype, ContainerName, ProxyHttps, RunOptions, SecretId};

/// `host:container`: a port the container publishes on the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host: u16,
    pub container: u16,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.container)
    }
}

impl PortMapping {
    pub fn parse(text: &str) -> Result<PortMapping, String> {
        let port = |p: &str| match p.trim().parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            _ => Err(format!("expected host:container with ports from 1 to 65535, got {text:?}")),
        };
        let (h, c) =
            text.split_once(':').ok_or_else(|| format!("expected host:container such as 80:3000, got {text:?}"))?;
        Ok(PortMapping { host: port(h)?, container: port(c)? })
    }
}

/// `NAME=value` for the container's environment or a build argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

impl EnvVar {
    pub fn parse(line: &str) -> Result<EnvVar, String> {
        // The value may be sensitive in spite of the advice: never echo it back.
        let (name, value) =
            line.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {:?}", excerpt(line, 40)))?;
        let name = name.trim();
        if !is_env_name(name) {
            return Err(format!(
                "{:?} is not a valid variable name: use letters, digits and underscores, not starting with a digit",
                excerpt(name, 64)
            ));
        }
        Ok(EnvVar { name: name.to_string(), value: value.to_string() })
    }
}

pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

text_newtype!(
    /// An HTTP path to check (`/health`): starts with `/`, no whitespace, at most 1024 bytes.
    HealthPath,
    |text| {
        if text.starts_with('/') && text.len() <= 1024 && !text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Ok(())
        } else {
            Err(format!("expected an HTTP path starting with / and without spaces, such as /health, got {text:?}"))
        }
    }
);

text_newtype!(
    /// An address or a CIDR range (`10.0.0.0/8`, `2001:db8::/32`, `203.0.113.7`) whose
    /// forwarded headers the proxy believes.
    IpRange,
    |text| {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let bad = || format!("expected an IP address or a CIDR range such as 10.0.0.0/8, got {:?}", excerpt(text, 64));
        let max = match address.parse::<std::net::IpAddr>().map_err(|_| bad())? {
            std::net::IpAddr::V4(_) => 32,
            std::net::IpAddr::V6(_) => 128,
        };
        match prefix {
            None => Ok(()),
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u8>().is_ok_and(|n| n <= max) => Ok(()),
            Some(_) => Err(bad()),
        }
    }
);

/// What `proxy-trusted: private` stands for: the private and loopback ranges (Caddy's
/// `private_ranges`), where a load balancer in the instance's VPC connects from.
pub const PRIVATE_RANGES: [&str; 6] =
    ["192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "127.0.0.1/8", "fd00::/8", "::1"];

/// `drain-timeout`'s default, in seconds.
pub const DEFAULT_DRAIN_TIMEOUT: u32 = 30;

/// What runs on each instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    pub name: ContainerName,
    pub ports: Vec<PortMapping>,
    pub env: Vec<EnvVar>,
    pub secret_id: Option<SecretId>,
    pub health_check_path: Option<HealthPath>,
    /// Seconds a new container has to become healthy.
    pub health_check_timeout: u32,
    /// The first port goes through the instance's proxy (which holds its host port) instead of
    /// being published by the container.
    pub proxy: bool,
    /// The hops in front of the proxy whose `X-Forwarded-*` headers it passes on (the client's
    /// address, scheme and host); from any other peer it sets them to its own view. Empty without
    /// the proxy.
    pub proxy_trusted: Vec<IpRange>,
    /// Seconds the previous container keeps the connections the proxy had open to it at the
    /// switch (WebSockets, streams, long requests) before it stops.
    pub drain_timeout: u32,
    /// HTTPS on the instance (the proxy's host names and ACME CA); `None` without the proxy.
    pub https: Option<ProxyHttps>,
    /// `docker create` options beyond ports and environment.
    pub options: RunOptions,
}

impl ContainerSpec {
    /// The host port the health check is made on: the first published one, when a path is set.
    pub fn health_port(&self) -> Option<u16> {
        self.health_check_path.as_ref().and(self.ports.first()).map(|p| p.host)
    }

    /// The port the proxy holds, if any.
    pub fn proxied_port(&self) -> Option<PortMapping> {
        self.ports.first().copied().filter(|_| self.proxy)
    }

    /// The ports the container publishes itself.
    pub fn direct_ports(&self) -> &[PortMapping] {
        if self.proxy && !self.ports.is_empty() {
            &self.ports[1..]
        } else {
            &self.ports
        }
    }
}

/// The proxy image ec2-deploy uses unless `proxy-image` says otherwise: the official Caddy image,
/// pinned by digest (a tag can move; a digest cannot).
pub const DEFAULT_PROXY_IMAGE: &str =
    "caddy:2.11.7-alpine@sha256:d8542f48d34a9cf4e4c11a478865229840e87e4c96ea3f439101f31a5d35f75f";
