//! The release record as stored: a JSON document per parameter version, with a schema number.
//!
//! The stored shape is its own set of types, not the input or model types, so that renaming an
//! input or a field of the model cannot silently change what is written, nor make old versions
//! unreadable. Every schema this version has written or can read is listed here; reading
//! converts to the model ([`Release`]), validating every value as an input would be.
//!
//! - **1** (no `schema` field): written by ec2-deploy 0.1 until this change.
//! - **2**: adds `schema` and `rolled_back_from` (a rollback names the version it left).
//! - **3**: adds `container.proxy` (the first port goes through the instance's proxy) and
//!   `proxy_image` (the proxy, by digest, in the deploy's registry). An older ec2-deploy reading it
//!   would deploy without the proxy, into a port the proxy holds: so it refuses, as it should.
//! - **4**: adds `container.options` (command, volumes, memory, cpus, logging, labels, user).
//!   Written only when the release has options, so that a release without any stays readable by
//!   an ec2-deploy that knows schema 3; one that has them is refused by such a version, which
//!   would otherwise run the container without them.
//! - **5**: adds `container.proxy_trusted` (the hops whose forwarded headers the proxy passes on;
//!   absent: none, as every release before it ran). Written only when the list is not empty: an
//!   ec2-deploy that knows schema 4 refuses such a release rather than run its proxy trusting
//!   nobody.
//! - **6**: adds `container.drain_timeout` (seconds the previous container keeps its connections
//!   after the switch; absent: 30, as every release before it drained). Written only when it is
//!   not 30: an ec2-deploy that knows schema 5 refuses such a release rather than cut its
//!   connections at another time than it was deployed with.
//!
//! - **7**: adds `container.https` (the host names the proxy serves over HTTPS and the ACME CA it
//!   gets their certificates from). Written only when the release has them: an ec2-deploy that
//!   knows schema 6 refuses such a release rather than serve it over plain HTTP.
//!
//! - **8**: `container.env` is left out: the environment is in the record once, in the header's
//!   `ENV_VARS_<n>` assignments (quoted by the one quoting function), read back from there. Written
//!   when the release has an environment: it took twice its size, and a record has 8 KB. An
//!   ec2-deploy that knows schema 7 refuses such a record rather than see no environment.
//!
//! A record with a schema newer than [`CURRENT`] is refused with a message naming its version
//! and schema: it was written by a newer ec2-deploy, and reading part of it could deploy
//! something other than what was recorded.

use serde::{Deserialize, Serialize};

use super::Release;
use crate::model::{
    AcmeCa, AcmeEmail, CaRootPem, ContainerName, ContainerSpec, Cpus, EnvVar, HealthPath, HostName, ImageRef, ImageTag,
    IpRange, KeyValue, LogDriver, Memory, PortMapping, ProxyHttps, RegistryHost, RunOptions, SecretId, User, Volume,
    DEFAULT_DRAIN_TIMEOUT,
};

/// The schema this version writes.
pub const CURRENT: u32 = 8;

#[derive(Debug, Serialize, Deserialize)]
struct StoredPort {
    host: u16,
    container: u16,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredEnv {
    name: String,
    value: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredContainer {
    name: String,
    ports: Vec<StoredPort>,
    /// Up to schema 7; from 8, the header's `ENV_VARS_<n>` hold it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    env: Vec<StoredEnv>,
    secret_id: Option<String>,
    health_check_path: Option<String>,
    health_check_timeout: u32,
    #[serde(default)]
    proxy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    options: Option<StoredOptions>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    proxy_trusted: Vec<String>,
    #[serde(default = "default_drain_timeout", skip_serializing_if = "is_default_drain_timeout")]
    drain_timeout: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    https: Option<StoredHttps>,
}

/// Schema 7: HTTPS on the instance, each value as text, read back through the inputs' parsers.
#[derive(Debug, Serialize, Deserialize)]
struct StoredHttps {
    hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    ca: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_root: Option<String>,
}

impl StoredHttps {
    fn of(h: &ProxyHttps) -> StoredHttps {
        StoredHttps {
            hosts: h.hosts.iter().map(ToString::to_string).collect(),
            email: h.email.as_ref().map(ToString::to_string),
            ca: h.ca.to_string(),
            ca_root: h.ca_root.as_ref().map(ToString::to_string),
        }
    }

    fn read(self) -> Result<ProxyHttps, String> {
        let field = |name: &'static str| move |e: String| format!("field `container.https.{name}`: {e}");
        Ok(ProxyHttps {
            hosts: self.hosts.iter().map(|h| HostName::parse(h)).collect::<Result<_, _>>().map_err(field("hosts"))?,
            email: self.email.as_deref().map(AcmeEmail::parse).transpose().map_err(field("email"))?,
            ca: AcmeCa::parse(&self.ca).map_err(field("ca"))?,
            ca_root: self.ca_root.as_deref().map(CaRootPem::parse).transpose().map_err(field("ca_root"))?,
        })
    }
}

fn default_drain_timeout() -> u32 {
    DEFAULT_DRAIN_TIMEOUT
}

fn is_default_drain_timeout(seconds: &u32) -> bool {
    *seconds == DEFAULT_DRAIN_TIMEOUT
}

/// Schema 4: each option as text, read back through the same parsers as the inputs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredOptions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_driver: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    log_options: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
}

impl StoredOptions {
    fn of(o: &RunOptions) -> Option<StoredOptions> {
        (!o.is_empty()).then(|| StoredOptions {
            command: o.command.clone(),
            volumes: o.volumes.iter().map(ToString::to_string).collect(),
            memory: o.memory.as_ref().map(ToString::to_string),
            cpus: o.cpus.as_ref().map(ToString::to_string),
            log_driver: o.log_driver.as_ref().map(ToString::to_string),
            log_options: o.log_options.iter().map(ToString::to_string).collect(),
            labels: o.labels.iter().map(ToString::to_string).collect(),
            user: o.user.as_ref().map(ToString::to_string),
        })
    }

    fn read(self) -> Result<RunOptions, String> {
        let field = |name: &'static str| move |e: String| format!("field `container.options.{name}`: {e}");
        fn all<T>(items: &[String], parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
            items.iter().map(|i| parse(i)).collect()
        }
        Ok(RunOptions {
            command: self.command,
            volumes: all(&self.volumes, Volume::parse).map_err(field("volumes"))?,
            memory: self.memory.as_deref().map(Memory::parse).transpose().map_err(field("memory"))?,
            cpus: self.cpus.as_deref().map(Cpus::parse).transpose().map_err(field("cpus"))?,
            log_driver: self.log_driver.as_deref().map(LogDriver::parse).transpose().map_err(field("log_driver"))?,
            log_options: all(&self.log_options, KeyValue::parse).map_err(field("log_options"))?,
            labels: all(&self.labels, KeyValue::parse_label).map_err(field("labels"))?,
            user: self.user.as_deref().map(User::parse).transpose().map_err(field("user"))?,
        })
    }
}

/// Schemas 1 to 3 (each adds fields with defaults).
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schema: Option<u32>,
    image: String,
    tag: String,
    registry: String,
    commit: Option<String>,
    #[serde(default)]
    commit_time: Option<String>,
    deployed_at: String,
    run_url: Option<String>,
    container: StoredContainer,
    header: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rolled_back_from: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proxy_image: Option<String>,
    /// Any schema (it changes nothing a release runs, so an older ec2-deploy may ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timings: Option<StoredTimings>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredTimings {
    total_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pull_ms: Option<u64>,
    #[serde(default)]
    batches: u32,
    /// `[name, ms]` pairs, in the script's order.
    phases: Vec<(String, u64)>,
}

/// The environment a header sets (`ENV_VARS_0='NAME=value'` …, in order), read back through the
/// same parser as the input.
fn env_of_header(header: &str) -> Result<Vec<EnvVar>, String> {
    crate::instance::array_items(header, "ENV_VARS")?.iter().map(|item| EnvVar::parse(item)).collect()
}

/// The document for `release`, in the current schema.
pub fn encode(release: &Release) -> String {
    let c = &release.container;
    let stored = Stored {
        // The oldest schema that holds it all, so that older versions read what they can run.
        schema: Some(match (c.proxy_trusted.is_empty(), c.options.is_empty()) {
            _ if !c.env.is_empty() => 8,
            _ if c.https.is_some() => 7,
            _ if !is_default_drain_timeout(&c.drain_timeout) => 6,
            (false, _) => 5,
            (true, false) => 4,
            (true, true) => 3,
        }),
        image: release.image.to_string(),
        tag: release.tag.to_string(),
        registry: release.image.registry.to_string(),
        commit: release.commit.clone(),
        commit_time: release.commit_time.clone(),
        deployed_at: release.deployed_at.clone(),
        run_url: release.run_url.clone(),
        container: StoredContainer {
            name: c.name.to_string(),
            ports: c.ports.iter().map(|p| StoredPort { host: p.host, container: p.container }).collect(),
            // In the header only (schema 8).
            env: vec![],
            secret_id: c.secret_id.as_ref().map(ToString::to_string),
            health_check_path: c.health_check_path.as_ref().map(ToString::to_string),
            health_check_timeout: c.health_check_timeout,
            proxy: c.proxy,
            options: StoredOptions::of(&c.options),
            proxy_trusted: c.proxy_trusted.iter().map(ToString::to_string).collect(),
            drain_timeout: c.drain_timeout,
            https: c.https.as_ref().map(StoredHttps::of),
        },
        header: release.header.clone(),
        rolled_back_from: release.rolled_back_from,
        proxy_image: release.proxy_image.as_ref().map(ToString::to_string),
        timings: release.timings.as_ref().map(|t| StoredTimings {
            total_ms: t.total_ms,
            pull_ms: t.pull_ms,
            batches: t.batches,
            phases: t.phases.clone(),
        }),
    };
    serde_json::to_string(&stored).expect("plain data serialises")
}

/// Reads one stored version. The error says why, for a message that names the version.
pub fn decode(text: &str) -> Result<Release, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let schema = match value.get("schema") {
        None => 1,
        Some(s) => {
            s.as_u64().and_then(|s| u32::try_from(s).ok()).ok_or_else(|| format!("schema {s} is not a number"))?
        }
    };
    if schema > CURRENT {
        return Err(format!(
            "it has schema {schema}, written by a newer ec2-deploy (this one reads up to schema {CURRENT}); upgrade the action"
        ));
    }
    if schema == 0 {
        return Err("schema 0 is not a release record schema".into());
    }
    let stored: Stored =
        serde_json::from_value(value).map_err(|e| format!("not a schema {schema} release record: {e}"))?;
    let field = |name: &str, e: String| format!("field `{name}`: {e}");
    let c = stored.container;
    let options = c.options.map(StoredOptions::read).transpose()?.unwrap_or_default();
    let container = ContainerSpec {
        name: ContainerName::parse(&c.name).map_err(|e| field("container.name", e))?,
        ports: c.ports.iter().map(|p| PortMapping { host: p.host, container: p.container }).collect(),
        env: if schema >= 8 {
            env_of_header(&stored.header).map_err(|m| field("header", m))?
        } else {
            c.env
                .into_iter()
                .map(|e| EnvVar::parse(&format!("{}={}", e.name, e.value)).map_err(|m| field("container.env", m)))
                .collect::<Result<_, _>>()?
        },
        secret_id: c
            .secret_id
            .as_deref()
            .map(SecretId::parse)
            .transpose()
            .map_err(|e| field("container.secret_id", e))?,
        health_check_path: c
            .health_check_path
            .as_deref()
            .map(HealthPath::parse)
            .transpose()
            .map_err(|e| field("container.health_check_path", e))?,
        health_check_timeout: c.health_check_timeout,
        proxy: c.proxy,
        proxy_trusted: c
            .proxy_trusted
            .iter()
            .map(|r| IpRange::parse(r))
            .collect::<Result<_, _>>()
            .map_err(|e| field("container.proxy_trusted", e))?,
        drain_timeout: c.drain_timeout,
        https: c.https.map(StoredHttps::read).transpose()?,
        options,
    };
    let image = ImageRef::parse(&stored.image).map_err(|e| field("image", e))?;
    let proxy_image =
        stored.proxy_image.as_deref().map(ImageRef::parse).transpose().map_err(|e| field("proxy_image", e))?;
    if container.proxy && proxy_image.is_none() {
        return Err("field `proxy_image` is missing for a release that runs behind the proxy".into());
    }
    let registry = RegistryHost::parse(&stored.registry).map_err(|e| field("registry", e))?;
    if registry != image.registry {
        return Err(format!("field `registry` ({registry}) is not the image's registry ({})", image.registry));
    }
    Ok(Release {
        image,
        tag: ImageTag::parse(&stored.tag).map_err(|e| field("tag", e))?,
        commit: stored.commit,
        commit_time: stored.commit_time,
        deployed_at: stored.deployed_at,
        run_url: stored.run_url,
        container,
        header: stored.header,
        rolled_back_from: stored.rolled_back_from,
        proxy_image,
        timings: stored.timings.map(|t| crate::release::Timings {
            total_ms: t.total_ms,
            pull_ms: t.pull_ms,
            batches: t.batches,
            phases: t.phases,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as ec2-deploy 0.1 wrote it on the test bed (schema 1: no `schema` field).
    const V1: &str = include_str!("fixtures/record-v1.json");

    #[test]
    fn a_record_written_by_the_previous_release_still_reads() {
        let r = decode(V1).unwrap();
        assert_eq!(
            r.image.to_string(),
            "localhost:41319/boot-16249-29-a91ea@sha256:40df3cb4dc80b4b893a144599adcc84e9a0feafbbed6839050153643544f9c49"
        );
        assert_eq!(r.tag.as_str(), "v7");
        assert_eq!(r.container.name.as_str(), "boot-16249-29-a91ea");
        assert_eq!(r.container.ports, vec![PortMapping { host: 3000, container: 3000 }]);
        assert_eq!(r.container.secret_id.as_ref().map(SecretId::as_str), Some("boot/secret-16249-30-fef7a"));
        assert_eq!(r.container.health_check_timeout, 10);
        assert!(r.header.starts_with("#!/bin/bash\n") && r.header.contains("RELEASE=v7\n"));
        assert_eq!(r.rolled_back_from, None);
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let mut r = decode(V1).unwrap();
        r.rolled_back_from = Some(4);
        let text = encode(&r);
        assert!(text.contains("\"schema\":3"), "{text}");
        assert_eq!(decode(&text).unwrap(), r);
    }

    /// The environment is written once, in the header the instances run (schema 8), and read
    /// back from there value for value; a record from before keeps its own list.
    #[test]
    fn the_environment_is_in_the_record_once_and_reads_back_from_the_header() {
        let mut r = decode(V1).unwrap();
        let env = [("A", "x = y"), ("QUOTED", "it's \"odd\" $HOME `x`"), ("EMPTY", "")];
        r.container.env = env.iter().map(|(n, v)| EnvVar { name: n.to_string(), value: v.to_string() }).collect();
        r.header = crate::instance::header(&crate::instance::ScriptParams {
            mode: crate::instance::Mode::Deploy { image: &r.image },
            registry: &r.image.registry,
            release: &r.tag,
            container: &r.container,
            proxy: None,
        })
        .unwrap();
        let text = encode(&r);
        assert!(text.contains("\"schema\":8") && !text.contains("\"env\""), "{text}");
        assert_eq!(text.matches("x = y").count(), 1, "{text}");
        assert_eq!(decode(&text).unwrap(), r);
        let broken = text.replace("ENV_VARS_1=", "ENV_VARS_7=");
        assert!(decode(&broken).unwrap_err().starts_with("field `header`: ENV_VARS_7 is out of order"));
    }

    #[test]
    fn a_drain_timeout_other_than_30_is_schema_6_and_an_older_record_drains_30() {
        let mut r = decode(V1).unwrap();
        assert_eq!(r.container.drain_timeout, 30, "a record from before drain-timeout drained 30 s");
        assert!(!encode(&r).contains("drain_timeout"));
        r.container.drain_timeout = 120;
        let text = encode(&r);
        assert!(text.contains("\"schema\":6") && text.contains("\"drain_timeout\":120"), "{text}");
        assert_eq!(decode(&text).unwrap(), r);
    }

    #[test]
    fn trusted_hops_are_schema_5_and_read_back_and_a_bad_one_is_named() {
        let mut r = decode(V1).unwrap();
        r.container.proxy = true;
        r.proxy_image = Some(r.image.clone());
        r.container.proxy_trusted = vec![IpRange::parse("10.0.0.0/8").unwrap()];
        let text = encode(&r);
        assert!(text.contains("\"schema\":5") && text.contains("\"proxy_trusted\":[\"10.0.0.0/8\"]"), "{text}");
        assert_eq!(decode(&text).unwrap(), r);
        let bad = text.replace("10.0.0.0/8", "10.0.0.0/99");
        assert!(decode(&bad).unwrap_err().starts_with("field `container.proxy_trusted`: expected an IP address"));
    }

    #[test]
    fn https_hosts_are_schema_7_and_read_back_and_a_bad_one_is_named() {
        let mut r = decode(V1).unwrap();
        r.container.proxy = true;
        r.proxy_image = Some(r.image.clone());
        r.container.https = Some(ProxyHttps {
            hosts: vec![HostName::parse("app.example.com").unwrap()],
            email: Some(AcmeEmail::parse("ops@example.com").unwrap()),
            ca: AcmeCa::parse(crate::model::LETS_ENCRYPT).unwrap(),
            ca_root: None,
        });
        let text = encode(&r);
        assert!(text.contains("\"schema\":7") && text.contains("\"hosts\":[\"app.example.com\"]"), "{text}");
        assert_eq!(decode(&text).unwrap(), r);
        let bad = text.replace("app.example.com", "App.example.com");
        assert!(decode(&bad).unwrap_err().starts_with("field `container.https.hosts`: expected a lowercase host name"));
    }

    #[test]
    fn timings_read_back_in_any_schema_and_a_record_without_them_has_none() {
        let mut r = decode(V1).unwrap();
        assert_eq!(r.timings, None);
        r.timings = Some(crate::release::Timings {
            total_ms: 14_400,
            pull_ms: Some(3_000),
            batches: 3,
            phases: vec![("start".into(), 800), ("health".into(), 1_200)],
        });
        let text = encode(&r);
        assert!(
            text.contains("\"schema\":3") && text.contains("\"phases\":[[\"start\",800],[\"health\",1200]]"),
            "{text}"
        );
        assert_eq!(decode(&text).unwrap(), r);
    }

    #[test]
    fn a_newer_schema_or_a_broken_value_fails_loudly() {
        let newer = V1.replacen('{', "{\"schema\": 9,", 1);
        assert!(decode(&newer).unwrap_err().contains("schema 9, written by a newer ec2-deploy"));
        let bad = V1.replace("\"tag\": \"v7\"", "\"tag\": \"-bad\"");
        assert!(decode(&bad).unwrap_err().starts_with("field `tag`: expected a Docker tag"));
        assert!(decode("{}").unwrap_err().starts_with("not a schema 1 release record"));
        assert!(decode("nope").unwrap_err().starts_with("not JSON"));
    }

    /// Options make a schema 4 record and read back as they were; a bad stored option is named.
    #[test]
    fn options_are_recorded_in_schema_4_and_read_back() {
        let mut r = decode(V1).unwrap();
        r.container.options = RunOptions {
            command: vec!["bin/worker".into(), "--queue".into(), "high priority".into()],
            volumes: vec![Volume::parse("/srv/uploads:/app/uploads:ro").unwrap()],
            memory: Some(Memory::parse("512m").unwrap()),
            cpus: Some(Cpus::parse("0.5").unwrap()),
            log_driver: Some(LogDriver::parse("awslogs").unwrap()),
            log_options: vec![KeyValue::parse("awslogs-group=/shop").unwrap()],
            labels: vec![KeyValue::parse_label("team=web").unwrap()],
            user: Some(User::parse("1000:1000").unwrap()),
        };
        let text = encode(&r);
        assert!(text.contains("\"schema\":4"), "{text}");
        assert_eq!(decode(&text).unwrap(), r);
        let bad = text.replace("\"512m\"", "\"lots\"");
        assert!(
            decode(&bad).unwrap_err().starts_with("field `container.options.memory`"),
            "{}",
            decode(&bad).unwrap_err()
        );
    }
}
