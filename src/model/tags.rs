//! `Key=Value[,Value…]`: which instances a deploy goes to, by tag.

use std::fmt;

use serde::Serialize;

use super::excerpt;

/// The instances whose tag `key` has one of `values` (SSM: AND across filters, OR across values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagFilter {
    pub key: String,
    pub values: Vec<String>,
}

impl fmt::Display for TagFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.values.join(","))
    }
}

impl TagFilter {
    pub fn parse(line: &str) -> Result<TagFilter, String> {
        let Some((key, values)) = line.split_once('=') else {
            return Err(format!("expected Key=Value[,Value...], got {:?}", excerpt(line, 64)));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("the tag key is empty in {:?}: expected Key=Value[,Value...]", excerpt(line, 64)));
        }
        if key.chars().count() > 128 {
            return Err(format!("tag key {:?} is longer than 128 characters", excerpt(key, 32)));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(format!("tag key {key:?}: keys starting with aws: are reserved by AWS and cannot be targeted"));
        }
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        if values.iter().any(|v| v.is_empty()) {
            return Err(format!(
                "a value of tag {key:?} is empty in {:?}: expected Key=Value[,Value...]",
                excerpt(line, 64)
            ));
        }
        if values.len() > 5 {
            return Err(format!("tag {key:?} has {} values; SSM accepts at most 5 per key", values.len()));
        }
        if let Some(v) = values.iter().find(|v| v.chars().count() > 256) {
            return Err(format!("tag value {:?} is longer than 256 characters", excerpt(v, 32)));
        }
        Ok(TagFilter { key: key.to_string(), values })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_filter_wording() {
        assert_eq!(
            TagFilter::parse("=x").unwrap_err(),
            "the tag key is empty in \"=x\": expected Key=Value[,Value...]"
        );
        assert_eq!(
            TagFilter::parse("Key=").unwrap_err(),
            "a value of tag \"Key\" is empty in \"Key=\": expected Key=Value[,Value...]"
        );
        assert_eq!(TagFilter::parse("Role").unwrap_err(), "expected Key=Value[,Value...], got \"Role\"");
        assert!(TagFilter::parse("K=a,b,c,d,e,f").unwrap_err().contains("at most 5"));
    }

    #[test]
    fn long_multibyte_values_are_cut_on_character_boundaries() {
        // 200 two-byte characters: a byte slice at 32 would fall inside one.
        let line = format!("Role=x{}", "é".repeat(300));
        assert_eq!(
            TagFilter::parse(&line).unwrap_err(),
            format!("tag value \"x{}…\" is longer than 256 characters", "é".repeat(31))
        );
        let key = format!("{}=x", "é".repeat(129));
        assert!(TagFilter::parse(&key).unwrap_err().contains("longer than 128 characters"));
        // 200 é plus `x` is 201 characters, within the limit of 256 (SSM counts characters).
        assert!(TagFilter::parse(&format!("Role=x{}", "é".repeat(200))).is_ok());
    }
}
