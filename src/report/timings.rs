//! Where a deploy's time went: the phases each instance's script reported (`phases=` on its
//! result line), as a table per instance and the slowest phase named.

use super::{DeployReport, InstanceReport};
use crate::model::InstanceId;

/// The slowest phase of the run: its name, its milliseconds, and the instance it was on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slowest<'a> {
    pub phase: &'a str,
    pub ms: u64,
    pub instance: &'a InstanceReport,
}

impl std::fmt::Display for Slowest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} took {} on {}", self.phase, seconds(self.ms), self.instance.id)?;
        if let Some(name) = &self.instance.name {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

/// The longest single phase of any instance in `rows` (the first one met when two tie).
pub fn slowest(rows: &[InstanceReport]) -> Option<Slowest<'_>> {
    rows.iter()
        .flat_map(|i| i.phases.iter().map(move |(phase, ms)| Slowest { phase, ms: *ms, instance: i }))
        .reduce(|a, b| if b.ms > a.ms { b } else { a })
}

/// The slowest phase among the instances of one batch, as its table cell says it.
pub fn slowest_of(report: &DeployReport, ids: &[InstanceId]) -> Option<String> {
    let rows: Vec<InstanceReport> = report.instances.iter().filter(|i| ids.contains(&i.id)).cloned().collect();
    slowest(&rows).map(|s| format!("{} {}", s.phase, seconds(s.ms)))
}

/// `### Time per phase`: one row per instance that reported its phases, one column per phase
/// (in the order the script went through them), then the script's total and its docker commands.
pub fn table(report: &DeployReport) -> String {
    let timed: Vec<&InstanceReport> = report.instances.iter().filter(|i| !i.phases.is_empty()).collect();
    if timed.is_empty() {
        return String::new();
    }
    let mut columns: Vec<&str> = vec![];
    for (phase, _) in timed.iter().flat_map(|i| &i.phases) {
        if !columns.contains(&phase.as_str()) {
            columns.push(phase);
        }
    }
    let mut md = String::from("\n### Time per phase\n\n| Instance |");
    for c in &columns {
        md.push_str(&format!(" {c} |"));
    }
    md.push_str(" script | docker calls |\n|---|");
    md.push_str(&"---:|".repeat(columns.len() + 2));
    md.push('\n');
    for i in timed {
        md.push_str(&format!("| `{}` |", i.id));
        for c in &columns {
            let ms: u64 = i.phases.iter().filter(|(p, _)| p == c).map(|(_, ms)| ms).sum();
            md.push_str(&format!(" {} |", seconds(ms)));
        }
        let calls = i.docker_calls.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        md.push_str(&format!(" {} | {calls} |\n", seconds(i.phases.iter().map(|(_, ms)| ms).sum())));
    }
    if let Some(s) = slowest(&report.instances) {
        md.push_str(&format!("\nSlowest phase: {s}.\n"));
    }
    md
}

pub(crate) fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::report;

    #[test]
    fn the_phases_the_script_reported_are_read_in_order_and_the_slowest_is_named() {
        let r = report();
        assert_eq!(
            r.instances[0].phases.iter().map(|(p, ms)| format!("{p}:{ms}")).collect::<Vec<_>>().join(","),
            "prepare:120,login:80,pull:1432,start:61,health:2210,switch:35,finish:90"
        );
        let s = slowest(&r.instances).unwrap();
        assert_eq!((s.phase, s.ms), ("health", 2210));
        assert_eq!(s.to_string(), "health took 2.2s on i-00000000000000001 (web-1)");
        let md = table(&r);
        assert!(
            md.contains(
                "| Instance | prepare | login | pull | start | health | switch | finish | script | docker calls |"
            ),
            "{md}"
        );
        // 120 + 80 + 1432 + 61 + 2210 + 35 + 90 = 4028 ms; the failed and the undelivered ones have no row.
        assert!(
            md.contains("| `i-00000000000000001` | 0.1s | 0.1s | 1.4s | 0.1s | 2.2s | 0.0s | 0.1s | 4.0s | 31 |"),
            "{md}"
        );
        assert_eq!(md.matches("| `i-").count(), 1, "{md}");
        assert!(md.contains("Slowest phase: health took 2.2s on i-00000000000000001 (web-1)."), "{md}");
    }

    #[test]
    fn a_result_line_without_phases_or_with_a_bad_part_gives_what_it_can() {
        assert_eq!(
            super::super::parse_phases("pull:12,oops,start:x,health:7"),
            vec![("pull".into(), 12), ("health".into(), 7)]
        );
        assert_eq!(super::super::parse_phases(""), Vec::<(String, u64)>::new());
    }
}
