//! A count or a percentage, as SSM's MaxConcurrency and MaxErrors (and `batch-size`) take them.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum Limit {
    Count(u32),
    Percent(u8),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Count(n) => write!(f, "{n}"),
            Limit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl From<Limit> for String {
    fn from(l: Limit) -> String {
        l.to_string()
    }
}

impl Limit {
    /// `min` is the smallest count allowed (1 for concurrency, 0 for errors).
    pub fn parse(text: &str, min: u32) -> Result<Limit, String> {
        let t = text.trim();
        let expected = if min == 0 {
            "a number (0 or more) or a percentage such as \"10%\""
        } else {
            "a number (1 or more) or a percentage such as \"25%\""
        };
        if let Some(p) = t.strip_suffix('%') {
            match p.trim().parse::<u8>() {
                Ok(p) if p <= 100 && (p as u32) >= min => Ok(Limit::Percent(p)),
                _ => Err(format!("expected {expected} between {min}% and 100%, got {text:?}")),
            }
        } else {
            match t.parse::<u32>() {
                Ok(n) if n >= min && n <= 100_000 => Ok(Limit::Count(n)),
                _ => Err(format!("expected {expected}, got {text:?}")),
            }
        }
    }

    /// The limit as a count of `total`, the way SSM rounds it: concurrency rounds a percentage
    /// up (at least one instance moves), errors round it down (10% of 5 tolerates none).
    pub fn of(self, total: usize, round_up: bool) -> usize {
        match self {
            Limit::Count(n) => n as usize,
            Limit::Percent(p) if round_up => (total * p as usize).div_ceil(100),
            Limit::Percent(p) => total * p as usize / 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(Limit::parse("10", 1), Ok(Limit::Count(10)));
        assert_eq!(Limit::parse("10%", 1), Ok(Limit::Percent(10)));
        assert_eq!(Limit::parse("0", 0), Ok(Limit::Count(0)));
        assert!(Limit::parse("0", 1).is_err());
        assert!(Limit::parse("101%", 0).is_err());
        assert!(Limit::parse("-1", 0).is_err());
        assert!(Limit::parse("1.5", 0).is_err());
        assert_eq!(Limit::Percent(10).of(5, false), 0);
        assert_eq!(Limit::Percent(10).of(5, true), 1);
        assert_eq!(Limit::Count(3).of(100, true), 3);
    }
}
