//! The release record: what an environment runs, in a versioned SSM Parameter.
//!
//! Every successful deploy writes a new version (Parameter Store keeps the last 100: that is the
//! history). A version holds everything an instance needs to run the release — the image by
//! digest, the container's settings, and the script header rendered from them — so an Auto
//! Scaling boot (`examples/user-data.sh`) needs only the parameter's name, and a rollback needs
//! nothing but the history. The stored format is versioned ([`schema`]); a version that cannot be
//! read is kept in the history as [`Entry::Unreadable`], named wherever it matters, never dropped.

pub mod schema;

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::model::{ContainerSpec, ImageRef, ImageTag, ParameterName};
use crate::ports::{ParameterStore, ServiceError};

/// One release, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    pub image: ImageRef,
    pub tag: ImageTag,
    /// The commit it was built from (a rollback keeps the restored release's commit).
    pub commit: Option<String>,
    /// The commit's time (from the push event), for the run-order guard when GitHub cannot be asked.
    pub commit_time: Option<String>,
    /// When it was deployed (RFC 3339).
    pub deployed_at: String,
    pub run_url: Option<String>,
    pub container: ContainerSpec,
    /// The on-instance script's header for this release, rendered by the one quoting function.
    pub header: String,
    /// This release is a rollback: the version it rolled back from. That version is not a
    /// rollback target any more (no ping-pong between two releases).
    pub rolled_back_from: Option<i64>,
    /// The per-instance proxy, by digest in the deploy's registry (when the container is proxied).
    pub proxy_image: Option<ImageRef>,
    /// Where the deploy that recorded it spent its time (what `status` shows and the next plan
    /// estimates from); none for a record written before it, or by a rollback or converge.
    pub timings: Option<Timings>,
}

/// A deploy's time: the whole run (its build included), the pull before the rollout
/// (pull-first), and each phase of the on-instance script at its slowest instance, in
/// milliseconds and in the script's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timings {
    pub total_ms: u64,
    pub pull_ms: Option<u64>,
    pub batches: u32,
    pub phases: Vec<(String, u64)>,
}

/// `14.4s in all: pull 3.0s before 3 batch(es); per phase, at its slowest instance: start 0.8s, …`
impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = crate::report::timings::seconds;
        write!(f, "{} in all", s(self.total_ms))?;
        if let Some(pull) = self.pull_ms {
            write!(f, ": pull {} before {} batch(es)", s(pull), self.batches)?;
        }
        if !self.phases.is_empty() {
            let phases: Vec<String> = self.phases.iter().map(|(p, ms)| format!("{p} {}", s(*ms))).collect();
            write!(f, "; per phase, at its slowest instance: {}", phases.join(", "))?;
        }
        Ok(())
    }
}

impl Timings {
    /// The slowest instance's milliseconds in `phase` (0 when no instance reported it).
    pub fn phase(&self, phase: &str) -> u64 {
        self.phases.iter().find(|(p, _)| p == phase).map_or(0, |(_, ms)| *ms)
    }

    /// What a rollout of `batches` batches would take at these phases' pace: the pull once
    /// (before the first batch with pull-first, else in it), then each batch's start, health
    /// check, switch and drain. Milliseconds, and the model in words with its figures.
    pub fn estimate(&self, batches: u64) -> (u64, String) {
        let s = crate::report::timings::seconds;
        let pull = self.pull_ms.unwrap_or_else(|| self.phase("pull"));
        let per_batch = ["start", "health", "switch", "drain"].map(|p| self.phase(p));
        let total = pull + batches * per_batch.iter().sum::<u64>();
        let model = format!(
            "pull {} once, then {batches} × (start {} + health {} + switch {} + drain {})",
            s(pull),
            s(per_batch[0]),
            s(per_batch[1]),
            s(per_batch[2]),
            s(per_batch[3])
        );
        (total, model)
    }
}

impl Release {
    /// Both run the same thing on an instance: the same image with the same settings. A change
    /// of settings alone (env, ports, secret, the proxy) is a different release.
    pub fn runs_the_same_as(&self, other: &Release) -> bool {
        self.image == other.image && self.container == other.container && self.proxy_image == other.proxy_image
    }
}

/// A recorded release and the parameter version that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    pub version: i64,
    pub release: Release,
}

/// One version of the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Release(Box<Recorded>),
    /// A version this ec2-deploy cannot read, and why.
    Unreadable {
        version: i64,
        reason: String,
    },
}

impl Entry {
    pub fn version(&self) -> i64 {
        match self {
            Entry::Release(r) => r.version,
            Entry::Unreadable { version, .. } => *version,
        }
    }
}

/// A version of the record that had to be read and could not be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version {version} of the release record {parameter} cannot be read: {reason}")]
pub struct UnreadableVersion {
    pub parameter: ParameterName,
    pub version: i64,
    pub reason: String,
}

/// The record's versions, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub parameter: Option<ParameterName>,
    pub entries: Vec<Entry>,
}

impl History {
    fn unreadable(&self, version: i64, reason: &str) -> UnreadableVersion {
        UnreadableVersion {
            parameter: self.parameter.clone().unwrap_or_else(|| ParameterName::parse("/unknown").expect("valid")),
            version,
            reason: reason.to_string(),
        }
    }

    /// The live release: the latest version. `Ok(None)` when nothing is recorded.
    pub fn live(&self) -> Result<Option<&Recorded>, UnreadableVersion> {
        match self.entries.last() {
            None => Ok(None),
            Some(Entry::Release(r)) => Ok(Some(r)),
            Some(Entry::Unreadable { version, reason }) => Err(self.unreadable(*version, reason)),
        }
    }

    /// Versions some later rollback left.
    pub fn rolled_back(&self) -> BTreeSet<i64> {
        self.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Release(r) => r.release.rolled_back_from,
                Entry::Unreadable { .. } => None,
            })
            .collect()
    }

    /// What `rollback: true` goes back to: the latest version before the live one that runs
    /// something else (image or settings) and that no rollback has left. An unreadable version
    /// met on the way is an error naming it: skipping it could restore an older release than
    /// the one the user means.
    /// The release recorded as `version` (`None`: the record has no such version).
    pub fn release_at(&self, version: i64) -> Result<Option<&Recorded>, UnreadableVersion> {
        for entry in &self.entries {
            match entry {
                Entry::Unreadable { version: v, reason } if *v == version => return Err(self.unreadable(*v, reason)),
                Entry::Release(r) if r.version == version => return Ok(Some(r)),
                _ => {}
            }
        }
        Ok(None)
    }

    /// The record's readable versions, oldest first.
    pub fn versions(&self) -> Vec<i64> {
        self.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Release(r) => Some(r.version),
                Entry::Unreadable { .. } => None,
            })
            .collect()
    }

    pub fn rollback_target(&self) -> Result<Option<&Recorded>, UnreadableVersion> {
        let Some(live) = self.live()? else {
            return Ok(None);
        };
        let left = self.rolled_back();
        for entry in self.entries.iter().rev().skip(1) {
            match entry {
                Entry::Unreadable { version, reason } => return Err(self.unreadable(*version, reason)),
                Entry::Release(r) if left.contains(&r.version) => continue,
                Entry::Release(r) if r.release.runs_the_same_as(&live.release) => continue,
                Entry::Release(r) => return Ok(Some(r)),
            }
        }
        Ok(None)
    }
}

/// The record of one environment (or service).
pub struct Releases {
    pub parameter: ParameterName,
}

impl Releases {
    pub fn new(parameter: ParameterName) -> Releases {
        Releases { parameter }
    }

    /// Every version, oldest first, readable or not.
    pub async fn history(&self, store: &impl ParameterStore) -> Result<History, ServiceError> {
        let versions = store
            .parameter_history(&self.parameter)
            .await
            .map_err(|e| e.context(format!("reading the release history in SSM parameter {}", self.parameter)))?;
        let entries = versions
            .into_iter()
            .map(|p| match schema::decode(&p.value) {
                Ok(release) => Entry::Release(Box::new(Recorded { version: p.version, release })),
                Err(reason) => Entry::Unreadable { version: p.version, reason },
            })
            .collect();
        Ok(History { parameter: Some(self.parameter.clone()), entries })
    }

    /// Writes `release` as the parameter's new version; returns the version.
    /// A refused write (throttled, or TooManyUpdates) is asked again: it comes after a rollout
    /// that succeeded, which a busy parameter must not turn into a failure.
    pub async fn record(
        &self,
        store: &(impl ParameterStore + crate::ports::Clock),
        release: &Release,
    ) -> Result<i64, ServiceError> {
        crate::ports::put_parameter_patiently(store, &self.parameter, &schema::encode(release), true)
            .await
            .map_err(|e| e.context(format!("recording the release in SSM parameter {}", self.parameter)))
    }
}

/// `t` as RFC 3339 in UTC, to the second.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|ts| ts.round(jiff::Unit::Second).unwrap_or(ts).to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Seconds since the epoch of an RFC 3339 time (`2026-11-24T09:00:00+09:00`), if it is one.
pub fn epoch_of(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {} ({}, deployed {})", self.version, self.release.tag, self.release.deployed_at)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{ContainerName, EnvVar};

    pub fn release(image_hex: char, env: &[&str]) -> Release {
        let digest = format!("sha256:{}", image_hex.to_string().repeat(64));
        Release {
            image: ImageRef::parse(&format!("r.example/shop@{digest}")).unwrap(),
            tag: ImageTag::parse(&format!("t{image_hex}")).unwrap(),
            commit: None,
            commit_time: None,
            deployed_at: "2026-11-25T00:00:00Z".into(),
            run_url: None,
            container: ContainerSpec {
                name: ContainerName::parse("shop").unwrap(),
                ports: vec![],
                env: env.iter().map(|e| EnvVar::parse(e).unwrap()).collect(),
                secret_id: None,
                health_check_path: None,
                health_check_timeout: 60,
                drain_timeout: 30,
                https: None,
                proxy: false,
                proxy_trusted: vec![],
                options: Default::default(),
            },
            header: String::new(),
            rolled_back_from: None,
            proxy_image: None,
            timings: None,
        }
    }

    fn history(entries: Vec<(i64, Release)>) -> History {
        History {
            parameter: ParameterName::parse("/ec2-deploy/test/shop").ok(),
            entries: entries
                .into_iter()
                .map(|(version, release)| Entry::Release(Box::new(Recorded { version, release })))
                .collect(),
        }
    }

    fn target(h: &History) -> Option<i64> {
        h.rollback_target().unwrap().map(|r| r.version)
    }

    #[test]
    fn rollback_goes_to_the_latest_release_that_runs_something_else() {
        let h = history(vec![
            (1, release('a', &[])),
            (2, release('b', &[])),
            (3, release('c', &[])),
            (4, release('c', &[])),
        ]);
        assert_eq!(target(&h), Some(2));
        assert_eq!(target(&history(vec![(1, release('a', &[]))])), None);
        assert_eq!(target(&History::default()), None);
    }

    #[test]
    fn a_change_of_settings_alone_is_a_release_to_go_back_to() {
        // The same image with ALPHA, then with BETA: rolling back restores ALPHA, not the
        // older release with another image.
        let h = history(vec![(1, release('a', &[])), (2, release('b', &["ALPHA=1"])), (3, release('b', &["BETA=1"]))]);
        assert_eq!(target(&h), Some(2));
    }

    #[test]
    fn a_release_rolled_back_from_is_not_a_target_again() {
        let mut back = release('b', &["ALPHA=1"]);
        back.rolled_back_from = Some(3);
        let h = history(vec![
            (1, release('a', &[])),
            (2, release('b', &["ALPHA=1"])),
            (3, release('b', &["BETA=1"])),
            (4, back),
        ]);
        // Not 3 (left by the rollback), not 2 (what runs now): 1.
        assert_eq!(target(&h), Some(1));
        assert_eq!(h.rolled_back(), BTreeSet::from([3]));
    }

    #[test]
    fn an_unreadable_version_on_the_way_is_named_not_skipped() {
        let mut h = history(vec![(1, release('a', &[])), (3, release('c', &[]))]);
        h.entries.insert(1, Entry::Unreadable { version: 2, reason: "it has schema 9".into() });
        let e = h.rollback_target().unwrap_err();
        assert_eq!(
            e.to_string(),
            "version 2 of the release record /ec2-deploy/test/shop cannot be read: it has schema 9"
        );
        h.entries.push(Entry::Unreadable { version: 4, reason: "not JSON".into() });
        assert_eq!(h.live().unwrap_err().version, 4);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_633_600 + 3_723);
        assert_eq!(rfc3339(t), "2025-12-02T01:02:03Z");
        assert_eq!(epoch_of("2025-12-02T10:02:03+09:00"), Some(1_764_633_600 + 3_723));
        assert_eq!(epoch_of("yesterday"), None);
    }
}
