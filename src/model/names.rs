//! Names and references: what ECR, SSM, ELBv2 and Secrets Manager accept, checked before any
//! call is made, so a typo is an input error and never an AWS error halfway through a deploy.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::text_newtype;

text_newtype!(
    /// An ECR repository name: lowercase path components of letters and digits separated by
    /// `.`, `_` or `-`, joined by `/`; 2 to 256 characters.
    Repository,
    |text| {
        let ok_component = |c: &str| {
            !c.is_empty()
                && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-'))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if (2..=256).contains(&text.len()) && text.split('/').all(ok_component) {
            Ok(())
        } else {
            Err(format!(
                "expected an ECR repository name such as my-service or team/my-service (lowercase letters, digits, . _ - and /), got {text:?}"
            ))
        }
    }
);

impl Repository {
    /// The last path component (`team/shop` → `shop`).
    pub fn last_component(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

text_newtype!(
    /// A Docker tag: up to 128 of letters, digits, `_`, `.`, `-`, not starting with `.` or `-`.
    ImageTag,
    |text| {
        let ok = !text.is_empty()
            && text.len() <= 128
            && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && !text.starts_with(['.', '-']);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "expected a Docker tag (up to 128 letters, digits, _ . -, not starting with . or -), got {text:?}"
            ))
        }
    }
);

text_newtype!(
    /// An image digest: `sha256:` and 64 lowercase hex digits.
    Digest,
    |text| {
        let hex = text.strip_prefix("sha256:").unwrap_or("");
        if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
            Ok(())
        } else {
            Err(format!("expected an image digest such as sha256:<64 hex digits>, got {text:?}"))
        }
    }
);

impl Digest {
    /// `sha256:` and the first 12 hex digits, for tables.
    pub fn short(&self) -> &str {
        &self.0[..19]
    }
}

text_newtype!(
    /// A registry host (`123456789012.dkr.ecr.eu-west-1.amazonaws.com`, or `localhost:5000`):
    /// no scheme, no path.
    RegistryHost,
    |text| {
        let ok = !text.is_empty()
            && text.len() <= 255
            && text.trim() == text
            && !text.contains("://")
            && !text.contains('/')
            && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if ok {
            Ok(())
        } else {
            Err(format!("expected a registry host such as 123456789012.dkr.ecr.eu-west-1.amazonaws.com (no scheme, no path), got {text:?}"))
        }
    }
);

impl RegistryHost {
    /// The region of an ECR registry host: `123456789012.dkr.ecr.eu-west-1.amazonaws.com` (also
    /// `dkr.ecr-fips.` and the `.amazonaws.com.cn` partition) → `eu-west-1`; `None` for any other
    /// host. The runner and the instances get ECR tokens from this region.
    pub fn ecr_region(&self) -> Option<Region> {
        let (account, rest) = self.0.split_once('.')?;
        let rest = rest.strip_prefix("dkr.ecr.").or_else(|| rest.strip_prefix("dkr.ecr-fips."))?;
        let (region, domain) = rest.split_once('.')?;
        let ok_account = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        (ok_account && matches!(domain, "amazonaws.com" | "amazonaws.com.cn")).then(|| Region::parse(region).ok())?
    }
}

/// An image pinned by digest, `registry/repository@sha256:…`: what instances pull and what the
/// release record keeps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    pub registry: RegistryHost,
    pub repository: Repository,
    pub digest: Digest,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        let bad = || format!("expected an image reference registry/repository@sha256:<64 hex digits>, got {text:?}");
        let (name, digest) = text.split_once('@').ok_or_else(bad)?;
        let (registry, repository) = name.split_once('/').ok_or_else(bad)?;
        Ok(ImageRef {
            registry: RegistryHost::parse(registry).map_err(|_| bad())?,
            repository: Repository::parse(repository).map_err(|_| bad())?,
            digest: Digest::parse(digest).map_err(|_| bad())?,
        })
    }

    /// `repository@sha256:0123456789ab`, for tables.
    pub fn short(&self) -> String {
        format!("{}@{}", self.repository.last_component(), self.digest.short())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.registry, self.repository, self.digest)
    }
}

impl TryFrom<String> for ImageRef {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<ImageRef> for String {
    fn from(v: ImageRef) -> String {
        v.to_string()
    }
}

text_newtype!(
    /// An image to pull, as `docker pull` takes it: `[registry/]repository[:tag][@sha256:…]`.
    ImageName,
    |text| {
        let (name, digest) = match text.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (text, None),
        };
        let ok_name = !name.is_empty()
            && name.len() <= 512
            && !name.starts_with(['-', '/', '.', ':'])
            && !name.ends_with(['/', ':'])
            && !name.contains("//")
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'));
        if ok_name && digest.is_none_or(|d| Digest::parse(d).is_ok()) {
            Ok(())
        } else {
            Err(format!(
                "expected an image such as caddy:2.11.7-alpine or registry/name:tag@sha256:<64 hex digits>, got {text:?}"
            ))
        }
    }
);

impl ImageName {
    /// The digest it is pinned to, if any.
    pub fn digest(&self) -> Option<Digest> {
        self.0.split_once('@').and_then(|(_, d)| Digest::parse(d).ok())
    }
}

text_newtype!(
    /// The container's name on each instance: 2–128 letters, digits, `_ . -`, starting with a
    /// letter or digit. `-previous` is the script's name for the kept release.
    ContainerName,
    |text| {
        let ok = text.len() >= 2
            && text.len() <= 128
            && text.starts_with(|c: char| c.is_ascii_alphanumeric())
            && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && !text.ends_with("-previous");
        if ok {
            Ok(())
        } else {
            Err(format!(
                "expected a container name (2-128 letters, digits, _ . -, starting with a letter or digit, not ending in -previous), got {text:?}"
            ))
        }
    }
);

text_newtype!(
    /// An SSM parameter name: letters, digits, `_ . - /`, at most 1011 characters, not in the
    /// `aws` or `ssm` namespaces.
    ParameterName,
    |text| {
        let lower = text.to_ascii_lowercase();
        let ok = !text.is_empty()
            && text.len() <= 1011
            && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
            && !lower.trim_start_matches('/').starts_with("aws")
            && !lower.trim_start_matches('/').starts_with("ssm");
        if ok {
            Ok(())
        } else {
            Err(format!("expected an SSM parameter name such as /ec2-deploy/production/shop (letters, digits, _ . - /; not starting with aws or ssm), got {text:?}"))
        }
    }
);

impl ParameterName {
    /// A name derived from this one (`<name><suffix>`), for the lock beside the record. Checked:
    /// the suffix is plain and the length stays within SSM's limit.
    pub fn with_suffix(&self, suffix: &str) -> Result<ParameterName, String> {
        ParameterName::parse(&format!("{}{suffix}", self.0))
    }
}

text_newtype!(
    /// A Linux image platform as BuildKit names it: `linux/amd64`, `linux/arm64`, `linux/arm/v7` …
    Platform,
    |text| {
        let parts: Vec<&str> = text.split('/').collect();
        let arch_ok = |a: &str| matches!(a, "amd64" | "arm64" | "arm" | "386" | "ppc64le" | "s390x" | "riscv64");
        let variant_ok = |v: &str| matches!(v, "v5" | "v6" | "v7" | "v8" | "v2" | "v3" | "v4");
        let ok = match parts[..] {
            ["linux", arch] => arch_ok(arch),
            ["linux", arch, variant] => arch_ok(arch) && variant_ok(variant),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected a Linux platform such as linux/amd64 or linux/arm64 (Graviton), got {text:?}"))
        }
    }
);

text_newtype!(
    /// An AWS region such as `eu-west-1`.
    Region,
    |text| {
        let ok = text.len() <= 32
            && text.split('-').count() >= 3
            && text
                .split('-')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        if ok {
            Ok(())
        } else {
            Err(format!("expected an AWS region such as eu-west-1, got {text:?}"))
        }
    }
);

text_newtype!(
    /// A deployment environment (`production`): letters, digits, `- _ .`, at most 64.
    EnvironmentName,
    |text| {
        if !text.is_empty()
            && text.len() <= 64
            && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            Ok(())
        } else {
            Err(format!("expected an environment name of letters, digits, - _ . (at most 64), got {text:?}"))
        }
    }
);

text_newtype!(
    /// An ELBv2 target group ARN.
    TargetGroupArn,
    |text| {
        let ok = text.starts_with("arn:")
            && text.contains(":targetgroup/")
            && text.len() <= 2048
            && !text.chars().any(char::is_whitespace);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "expected a target group ARN such as arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef, got {text:?}"
            ))
        }
    }
);

impl TargetGroupArn {
    /// `NAME/ID` from `arn:…:targetgroup/NAME/ID`, for messages.
    pub fn short(&self) -> &str {
        self.0.split_once("targetgroup/").map(|(_, n)| n).unwrap_or(&self.0)
    }
}

text_newtype!(
    /// Where the container's environment is kept: a Secrets Manager secret name or ARN (at most
    /// 2048 characters), or `ssm:NAME`, a Parameter Store parameter (SecureString or String),
    /// both holding a flat JSON object. The value is never read by the runner; only instances
    /// read it.
    SecretId,
    |text| {
        if let Some(name) = text.strip_prefix("ssm:") {
            return ParameterName::parse(name)
                .map(|_| ())
                .map_err(|e| format!("`ssm:` names a Parameter Store parameter: {e}"));
        }
        if !text.is_empty() && text.len() <= 2048 && !text.chars().any(char::is_control) {
            Ok(())
        } else {
            Err("expected a secret name or ARN of at most 2048 characters, or ssm:/PARAMETER".to_string())
        }
    }
);

impl SecretId {
    /// The Parameter Store parameter it names (`ssm:NAME`), if it names one.
    pub fn parameter(&self) -> Option<&str> {
        self.0.strip_prefix("ssm:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_secret_is_a_secrets_manager_id_or_an_ssm_parameter() {
        assert_eq!(SecretId::parse("prod/shop").unwrap().parameter(), None);
        assert_eq!(SecretId::parse("ssm:/prod/shop").unwrap().parameter(), Some("/prod/shop"));
        let e = SecretId::parse("ssm:").unwrap_err();
        assert!(e.starts_with("`ssm:` names a Parameter Store parameter: "), "{e}");
    }

    #[test]
    fn image_refs_pin_a_digest_and_read_back_what_they_print() {
        let text = format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/shop@{DIGEST}");
        let image = ImageRef::parse(&text).unwrap();
        assert_eq!(image.repository.as_str(), "team/shop");
        assert_eq!(image.to_string(), text);
        assert_eq!(image.short(), "shop@sha256:0123456789ab");
        assert_eq!(serde_json::from_str::<ImageRef>(&serde_json::to_string(&image).unwrap()).unwrap(), image);
        assert!(ImageRef::parse("localhost:5000/shop:v1").is_err());
        assert!(ImageRef::parse(&format!("shop@{DIGEST}")).is_err());
        assert!(ImageRef::parse(&format!("localhost:5000/shop@{DIGEST}")).is_ok());
    }

    #[test]
    fn a_stored_value_that_does_not_validate_is_refused_when_read() {
        assert!(serde_json::from_str::<Repository>("\"Not A Repo\"").is_err());
        assert!(serde_json::from_str::<Digest>("\"sha256:abc\"").is_err());
    }

    #[test]
    fn image_names() {
        assert!(ImageName::parse("caddy:2.11.7-alpine").is_ok());
        assert!(ImageName::parse(&format!("public.ecr.aws/docker/library/caddy:2.11@{DIGEST}")).is_ok());
        assert_eq!(ImageName::parse(&format!("caddy@{DIGEST}")).unwrap().digest().unwrap().as_str(), DIGEST);
        assert!(ImageName::parse("caddy@sha256:abc").is_err());
        assert!(ImageName::parse("-rm").is_err());
        assert!(ImageName::parse("caddy latest").is_err());
    }

    #[test]
    fn names() {
        assert!(Repository::parse("team/my-service").is_ok());
        assert!(Repository::parse("Team").is_err());
        assert!(ImageTag::parse("-x").is_err());
        assert!(ContainerName::parse("shop-previous").is_err());
        assert!(ParameterName::parse("/aws/x").is_err());
        assert_eq!(ParameterName::parse("/a/b").unwrap().with_suffix("-lock").unwrap().as_str(), "/a/b-lock");
        assert!(Region::parse("eu-west-1").is_ok());
        assert!(Region::parse("eu").is_err());
    }

    #[test]
    fn platforms_are_linux_ones_as_buildkit_names_them() {
        for good in ["linux/amd64", "linux/arm64", "linux/arm64/v8", "linux/arm/v7"] {
            assert!(Platform::parse(good).is_ok(), "{good}");
        }
        for bad in ["arm64", "windows/amd64", "linux/aarch64", "linux/arm64/v9", "linux/amd64/v2/x", ""] {
            assert!(Platform::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn an_ecr_host_names_its_region_and_nothing_else_does() {
        let region = |h: &str| RegistryHost::parse(h).unwrap().ecr_region().map(|r| r.to_string());
        assert_eq!(region("123456789012.dkr.ecr.eu-west-1.amazonaws.com").as_deref(), Some("eu-west-1"));
        assert_eq!(region("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com").as_deref(), Some("us-east-1"));
        assert_eq!(region("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn").as_deref(), Some("cn-north-1"));
        for other in [
            "localhost:5000",
            "ghcr.io",
            "1234.dkr.ecr.eu-west-1.amazonaws.com",
            "123456789012.dkr.ecr.eu-west-1.example.com",
            "public.ecr.aws",
            "123456789012.dkr.ecr.eu.amazonaws.com",
        ] {
            assert_eq!(region(other), None, "{other}");
        }
        assert_eq!(
            TargetGroupArn::parse("arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/web/0a").unwrap().short(),
            "web/0a"
        );
    }
}
