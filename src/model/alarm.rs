//! CloudWatch alarms a deploy watches (`alarms`): chosen by name or by name prefix.

use std::fmt;

/// One line of input `alarms`: an alarm's name, or `prefix*` for every alarm whose name starts so.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum AlarmSelector {
    Name(String),
    Prefix(String),
}

impl AlarmSelector {
    /// CloudWatch alarm names are 1–255 characters, none of them a control character; a `*`
    /// only at the end, where it makes a prefix.
    pub fn parse(text: &str) -> Result<AlarmSelector, String> {
        let (name, prefix) = match text.strip_suffix('*') {
            Some(p) => (p, true),
            None => (text, false),
        };
        if name.is_empty() || name.chars().count() > 255 || name.chars().any(char::is_control) || name.contains('*') {
            return Err(format!(
                "expected a CloudWatch alarm name (1 to 255 characters), or a name prefix ending in *, got {text:?}"
            ));
        }
        Ok(if prefix { AlarmSelector::Prefix(name.into()) } else { AlarmSelector::Name(name.into()) })
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            AlarmSelector::Name(n) => n == name,
            AlarmSelector::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for AlarmSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlarmSelector::Name(n) => f.write_str(n),
            AlarmSelector::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// An alarm's state value, as CloudWatch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

impl fmt::Display for AlarmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        })
    }
}

/// An alarm as the deploy saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AlarmStatus {
    pub name: String,
    pub state: AlarmState,
    /// CloudWatch's state reason ("Threshold Crossed: 1 datapoint …").
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes() {
        assert_eq!(AlarmSelector::parse("shop-5xx").unwrap(), AlarmSelector::Name("shop-5xx".into()));
        assert_eq!(AlarmSelector::parse("shop-*").unwrap(), AlarmSelector::Prefix("shop-".into()));
        assert!(AlarmSelector::parse("shop-*").unwrap().matches("shop-latency"));
        assert!(!AlarmSelector::parse("shop-5xx").unwrap().matches("shop-5xx-2"));
        for bad in ["*", "a*b", "", "x\u{7}"] {
            assert!(AlarmSelector::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AlarmSelector::parse(&"a".repeat(256)).is_err());
    }
}
