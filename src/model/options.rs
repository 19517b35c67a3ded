//! How the container runs beyond its ports and environment: the `docker create` options a real
//! service needs (`command`, `volumes`, `memory`, `cpus`, `log-driver`, `log-options`, `labels`,
//! `user`). Each is validated here, before any call, and reaches the instance only as a quoted
//! value of the script's header, never as shell text.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::text_newtype;

/// The options, all optional: the default runs the image as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Replaces the image's CMD: the words of the `command` input, split as a POSIX shell would
    /// split them (quotes respected), then passed as arguments; no shell runs them.
    pub command: Vec<String>,
    pub volumes: Vec<Volume>,
    pub memory: Option<Memory>,
    pub cpus: Option<Cpus>,
    pub log_driver: Option<LogDriver>,
    pub log_options: Vec<KeyValue>,
    pub labels: Vec<KeyValue>,
    pub user: Option<User>,
}

impl RunOptions {
    pub fn is_empty(&self) -> bool {
        *self == RunOptions::default()
    }
}

/// `command`: split into words as a shell would, but never run by one.
pub fn parse_command(text: &str) -> Result<Vec<String>, String> {
    let words = shlex::split(text).ok_or_else(|| {
        format!("cannot split {text:?} into words: a quote is not closed (write it as a shell would)")
    })?;
    if words.is_empty() {
        return Err("is empty: leave it out to run the image's own CMD".into());
    }
    Ok(words)
}

/// `source:destination[:ro]`: an absolute host path or a named volume, into an absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub source: String,
    pub destination: String,
    pub read_only: bool,
}

impl Volume {
    pub fn parse(text: &str) -> Result<Volume, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, destination, read_only) = match parts[..] {
            [s, d] => (s, d, false),
            [s, d, "ro"] => (s, d, true),
            [s, d, "rw"] => (s, d, false),
            [_, _, other] => return Err(format!("{text:?}: the mode is ro or rw, not {other:?}")),
            _ => {
                return Err(format!(
                    "expected source:/path[:ro], e.g. /srv/uploads:/app/uploads or cache:/cache:ro, got {text:?}"
                ))
            }
        };
        let clean_path = |p: &str| {
            p.starts_with('/')
                && !p.split('/').any(|c| c == ".." || c == ".")
                && !p.chars().any(|c| c.is_control() || c == ',')
        };
        if source.starts_with('/') {
            if !clean_path(source) {
                return Err(format!("{text:?}: the host path must be absolute without . or .. parts"));
            }
        } else if !(source.len() >= 2
            && source.starts_with(|c: char| c.is_ascii_alphanumeric())
            && source.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(format!(
                "{text:?}: the source is an absolute host path (/srv/data) or a volume name (letters, digits, _ . -); a relative path is not allowed"
            ));
        }
        if !clean_path(destination) || destination == "/" {
            return Err(format!("{text:?}: the path in the container must be absolute (not /) without . or .. parts"));
        }
        Ok(Volume { source: source.into(), destination: destination.into(), read_only })
    }
}

impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}{}", self.source, self.destination, if self.read_only { ":ro" } else { "" })
    }
}

text_newtype!(
    /// A memory limit as docker takes it: a whole number with a unit, b k m or g (`512m`, `2g`),
    /// at least 6 MiB (docker's own floor).
    Memory,
    |text| {
        let bad = || format!("expected a size such as 512m or 2g (a whole number and b, k, m or g), got {text:?}");
        // The unit is the last character, whatever its width (the input may be any text).
        let unit = text.chars().last().ok_or_else(bad)?;
        let number = &text[..text.len() - unit.len_utf8()];
        let factor: u64 = match unit {
            'b' => 1,
            'k' => 1 << 10,
            'm' => 1 << 20,
            'g' => 1 << 30,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        match n.checked_mul(factor) {
            Some(bytes) if bytes >= 6 << 20 => Ok(()),
            Some(_) => Err(format!("{text:?} is below docker's minimum of 6m")),
            None => Err(bad()),
        }
    }
);

text_newtype!(
    /// CPUs for the container (`0.5`, `2`): more than 0, at most 1024, up to two decimals.
    Cpus,
    |text| {
        let bad = || format!("expected a number of CPUs such as 0.5 or 2, got {text:?}");
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 2 || text.ends_with('.') {
            return Err(bad());
        }
        let value: f64 = text.parse().map_err(|_| bad())?;
        if value > 0.0 && value <= 1024.0 {
            Ok(())
        } else {
            Err(bad())
        }
    }
);

/// The logging drivers Docker Engine ships with (plugins are not assumed to be installed).
pub const LOG_DRIVERS: &[&str] =
    &["json-file", "local", "journald", "syslog", "awslogs", "gelf", "fluentd", "splunk", "gcplogs", "etwlogs", "none"];

text_newtype!(
    /// A logging driver Docker ships with (see [`LOG_DRIVERS`]).
    LogDriver,
    |text| {
        if LOG_DRIVERS.contains(&text) {
            Ok(())
        } else {
            Err(format!("{text:?} is not a logging driver Docker ships with; expected one of {}", LOG_DRIVERS.join(", ")))
        }
    }
);

/// `key=value`, for log options and labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl KeyValue {
    pub fn parse(text: &str) -> Result<KeyValue, String> {
        let (key, value) = text.split_once('=').ok_or_else(|| format!("expected key=value, got {text:?}"))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/')) {
            return Err(format!("{key:?} is not a key: letters, digits and . - _ /"));
        }
        Ok(KeyValue { key: key.into(), value: value.trim().into() })
    }

    /// A label the script sets itself (`ec2-deploy.*`) cannot be given.
    pub fn parse_label(text: &str) -> Result<KeyValue, String> {
        let kv = KeyValue::parse(text)?;
        if kv.key.starts_with("ec2-deploy.") {
            return Err(format!("{:?}: labels starting with ec2-deploy. are ec2-deploy's own", kv.key));
        }
        Ok(kv)
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

text_newtype!(
    /// The user the container runs as: a name or uid, optionally `:group` or `:gid`.
    User,
    |text| {
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                && !p.starts_with('-')
        };
        let ok = match text.split_once(':') {
            Some((u, g)) => ok_part(u) && ok_part(g),
            None => ok_part(text),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected a user such as 1000, app, 1000:1000 or app:app, got {text:?}"))
        }
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_take_absolute_paths_and_names_only() {
        let v = Volume::parse("/srv/uploads:/app/uploads:ro").unwrap();
        assert_eq!((v.source.as_str(), v.destination.as_str(), v.read_only), ("/srv/uploads", "/app/uploads", true));
        assert_eq!(v.to_string(), "/srv/uploads:/app/uploads:ro");
        assert!(Volume::parse("cache:/cache").is_ok());
        for bad in [
            "uploads/x:/app",
            "./data:/data",
            "/srv/../etc:/etc",
            "/srv:/app/../x",
            "/srv:relative",
            "/srv:/",
            "/a:/b:rx",
            "/a",
            "/a:/b:ro:x",
            "x:/b",
        ] {
            assert!(Volume::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn sizes_cpus_drivers_and_users_are_what_docker_takes() {
        for good in ["512m", "2g", "6m", "1048576k"] {
            assert!(Memory::parse(good).is_ok(), "{good}");
        }
        for bad in ["512", "512mb", "1.5g", "-1m", "5m", "m", "", "99999999999999g", "5日", "日"] {
            assert!(Memory::parse(bad).is_err(), "{bad} was accepted");
        }
        for good in ["0.5", "2", "1.25", "1024"] {
            assert!(Cpus::parse(good).is_ok(), "{good}");
        }
        for bad in ["0", "0.0", "-1", "1.", ".5", "1.234", "2000", "two", "1e3"] {
            assert!(Cpus::parse(bad).is_err(), "{bad} was accepted");
        }
        assert!(LogDriver::parse("awslogs").is_ok());
        assert!(LogDriver::parse("loki").unwrap_err().contains("json-file"));
        for good in ["1000", "app", "1000:1000", "app:staff"] {
            assert!(User::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "1000:", ":1000", "-x", "root;id"] {
            assert!(User::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn commands_split_like_a_shell_and_labels_keep_ec2_deploys_own() {
        assert_eq!(
            parse_command("bin/worker --queue 'high priority'").unwrap(),
            ["bin/worker", "--queue", "high priority"]
        );
        assert!(parse_command("echo 'unclosed").is_err());
        assert!(parse_command("   ").is_err());
        assert!(KeyValue::parse_label("ec2-deploy.config=x").is_err());
        assert_eq!(KeyValue::parse_label("team=web").unwrap().to_string(), "team=web");
        assert!(KeyValue::parse("awslogs-group").is_err());
    }
}
