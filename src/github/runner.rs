//! Talking to the GitHub runner: log groups, annotations, masks, step outputs and the job summary.
//!
//! In a terminal (`ec2-deploy deploy`) the same calls print plain text, so the deploy has one way
//! to report whoever runs it; in unit tests they are captured, so a test can read the log a user
//! would read. (GitHub's REST API is [`crate::github::api`].)

use std::io::Write as _;
use std::path::PathBuf;

/// The job summary is cut by GitHub at 1 MiB per step.
pub const SUMMARY_LIMIT: usize = 1024 * 1024;

pub struct Runner {
    /// Inside GitHub Actions: print workflow commands.
    pub actions: bool,
    output_file: Option<PathBuf>,
    summary_file: Option<PathBuf>,
    /// Lines kept instead of printed (unit tests).
    captured: Option<std::sync::Mutex<Vec<String>>>,
    /// Where terminal lines go instead of stdout and stderr (`true`: an error line), when set.
    sink: Option<fn(bool, String)>,
}

impl Runner {
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Runner {
        Runner {
            actions: env("GITHUB_ACTIONS").as_deref() == Some("true"),
            output_file: env("GITHUB_OUTPUT").filter(|p| !p.is_empty()).map(PathBuf::from),
            summary_file: env("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()).map(PathBuf::from),
            captured: None,
            sink: None,
        }
    }

    pub fn terminal() -> Runner {
        Runner { actions: false, output_file: None, summary_file: None, captured: None, sink: None }
    }

    /// A terminal runner whose lines go to `sink` (the operating commands', which a workflow
    /// step collects for its log and job summary).
    pub fn through(sink: fn(bool, String)) -> Runner {
        Runner { sink: Some(sink), ..Runner::terminal() }
    }

    /// A runner that keeps what it would print, in terminal form (for tests).
    pub fn capture() -> Runner {
        Runner { captured: Some(Default::default()), ..Runner::terminal() }
    }

    /// What a capturing runner kept, one entry per line printed.
    pub fn captured(&self) -> Vec<String> {
        self.captured.as_ref().map(|c| c.lock().unwrap_or_else(|p| p.into_inner()).clone()).unwrap_or_default()
    }

    fn out(&self, line: &str) {
        match (&self.captured, self.sink) {
            (Some(c), _) => c.lock().unwrap_or_else(|p| p.into_inner()).push(line.to_string()),
            (None, Some(sink)) => sink(false, line.to_string()),
            (None, None) => println!("{line}"),
        }
    }

    fn err(&self, line: &str) {
        match (&self.captured, self.sink) {
            (Some(c), _) => c.lock().unwrap_or_else(|p| p.into_inner()).push(line.to_string()),
            (None, Some(sink)) => sink(true, line.to_string()),
            (None, None) => eprintln!("{line}"),
        }
    }

    pub fn info(&self, line: &str) {
        self.out(line);
    }

    pub fn group(&self, title: &str) {
        if self.actions {
            self.out(&format!("::group::{}", escape_data(title)));
        } else {
            self.out(&format!("== {title}"));
        }
    }

    pub fn end_group(&self) {
        if self.actions {
            self.out("::endgroup::");
        }
    }

    fn annotate(&self, level: &str, title: &str, message: &str) {
        if self.actions {
            self.out(&format!("::{level} title={}::{}", escape_property(title), escape_data(message)));
        } else {
            self.err(&format!("{level}: {title}: {message}"));
        }
    }

    pub fn error(&self, title: &str, message: &str) {
        self.annotate("error", title, message);
    }

    pub fn warning(&self, title: &str, message: &str) {
        self.annotate("warning", title, message);
    }

    pub fn notice(&self, title: &str, message: &str) {
        self.annotate("notice", title, message);
    }

    /// Asks the runner to hide `value` in every later log line.
    pub fn mask(&self, value: &str) {
        if self.actions && !value.is_empty() {
            for line in value.lines() {
                self.out(&format!("::add-mask::{}", escape_data(line)));
            }
        }
    }

    /// Prints text we do not control (instance output) so that nothing in it is taken as a
    /// workflow command.
    pub fn untrusted(&self, text: &str) {
        if self.actions {
            let token = uuid::Uuid::new_v4().simple().to_string();
            self.out(&format!("::stop-commands::{token}"));
            self.out(text.trim_end());
            self.out(&format!("::{token}::"));
        } else {
            self.out(text.trim_end());
        }
    }

    /// Sets a step output (multi-line values use a random delimiter, as the runner requires).
    pub fn set_output(&self, name: &str, value: &str) -> std::io::Result<()> {
        let Some(path) = &self.output_file else {
            return Ok(());
        };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        f.write_all(format_output(name, value).as_bytes())
    }

    /// Appends Markdown to the job summary, cut (with a note) to fit GitHub's limit.
    pub fn summary(&self, markdown: &str) -> std::io::Result<()> {
        let Some(path) = &self.summary_file else {
            return Ok(());
        };
        let existing = std::fs::metadata(path).map(|m| m.len() as usize).unwrap_or(0);
        let room = SUMMARY_LIMIT.saturating_sub(existing);
        let text = if markdown.len() > room {
            let note = "\n\n_The summary was cut to fit GitHub's 1 MiB limit; the step log has every instance._\n";
            let mut cut = room.saturating_sub(note.len());
            while cut > 0 && !markdown.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}{note}", &markdown[..cut])
        } else {
            markdown.to_string()
        };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        f.write_all(text.as_bytes())
    }
}

/// `name<<DELIM\nvalue\nDELIM\n` with a delimiter that cannot occur in the value.
pub fn format_output(name: &str, value: &str) -> String {
    let mut delimiter = format!("ghadelimiter_{}", uuid::Uuid::new_v4());
    while value.contains(&delimiter) {
        delimiter = format!("ghadelimiter_{}", uuid::Uuid::new_v4());
    }
    format!("{name}<<{delimiter}\n{value}\n{delimiter}\n")
}

pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a GITHUB_OUTPUT file the way the runner does.
    fn parse_outputs(text: &str) -> Vec<(String, String)> {
        let mut out = vec![];
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let (name, delim) = line.split_once("<<").expect("heredoc form");
            let mut value = vec![];
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.push((name.to_string(), value.join("\n")));
        }
        out
    }

    #[test]
    fn outputs_round_trip_through_the_runners_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let runner =
            Runner { actions: true, output_file: Some(path.clone()), summary_file: None, captured: None, sink: None };
        runner.set_output("image", "r/app@sha256:1").unwrap();
        runner.set_output("instances", "[\n  {\"id\": \"i-1\"}\n]").unwrap();
        runner.set_output("tricky", "EOF\nghadelimiter_\n").unwrap();
        let parsed = parse_outputs(&std::fs::read_to_string(path).unwrap());
        assert_eq!(parsed[0], ("image".into(), "r/app@sha256:1".into()));
        assert_eq!(parsed[1], ("instances".into(), "[\n  {\"id\": \"i-1\"}\n]".into()));
        assert_eq!(parsed[2], ("tricky".into(), "EOF\nghadelimiter_\n".into()));
    }

    #[test]
    fn workflow_command_escaping() {
        assert_eq!(escape_data("50%\r\nnext"), "50%25%0D%0Anext");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
    }

    #[test]
    fn the_summary_is_cut_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary");
        let runner =
            Runner { actions: true, output_file: None, summary_file: Some(path.clone()), captured: None, sink: None };
        runner.summary(&"é".repeat(SUMMARY_LIMIT)).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.len() <= SUMMARY_LIMIT);
        assert!(text.ends_with("the step log has every instance._\n"));
    }
}
