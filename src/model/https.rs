//! HTTPS on the instance, without a load balancer: the proxy answers on 443 for the service's host
//! names with certificates it obtains and renews from an ACME CA (Let's Encrypt by default), and
//! redirects plain HTTP to HTTPS.

use serde::Serialize;

use super::{excerpt, text_newtype};

/// `proxy-acme-ca`'s default: Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// `proxy-acme-ca: letsencrypt-staging`: untrusted certificates, generous rate limits (for a try).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

text_newtype!(
    /// A host name the proxy serves over HTTPS (`app.example.com`): labels of letters, digits and
    /// hyphens, at least two, at most 253 bytes. No wildcard: a wildcard certificate needs the
    /// DNS challenge, and the proxy answers the HTTP and TLS-ALPN ones.
    HostName,
    |text| {
        let label = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let labels: Vec<&str> = text.split('.').collect();
        if text.len() <= 253 && labels.len() >= 2 && labels.iter().all(|l| label(l)) && text == text.to_ascii_lowercase()
        {
            Ok(())
        } else if text.starts_with("*.") {
            Err(format!("{:?}: a wildcard needs the DNS challenge, which the proxy does not answer; list each host name", excerpt(text, 64)))
        } else {
            Err(format!(
                "expected a lowercase host name such as app.example.com, got {:?}",
                excerpt(text, 64)
            ))
        }
    }
);

text_newtype!(
    /// The address the ACME CA writes to about the certificates (expiry, revocation).
    AcmeEmail,
    |text| match text.split_once('@') {
        Some((user, domain))
            if !user.is_empty()
                && domain.contains('.')
                && text.len() <= 254
                && !text.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\') =>
        {
            Ok(())
        }
        _ => Err(format!("expected an email address such as ops@example.com, got {:?}", excerpt(text, 64))),
    }
);

text_newtype!(
    /// An ACME directory URL (`https://…/directory`).
    AcmeCa,
    |text| {
        let rest = text.strip_prefix("https://").unwrap_or_default();
        if !rest.is_empty()
            && text.len() <= 512
            && !text.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
        {
            Ok(())
        } else {
            Err(format!(
                "expected `letsencrypt`, `letsencrypt-staging` or an ACME directory URL starting with https://, got {:?}",
                excerpt(text, 80)
            ))
        }
    }
);

text_newtype!(
    /// PEM certificates the proxy trusts when it talks to the ACME CA: the root of a private CA
    /// (step-ca, pebble). At most 8 KiB.
    CaRootPem,
    |text| {
        let text = text.trim();
        if text.starts_with("-----BEGIN CERTIFICATE-----")
            && text.ends_with("-----END CERTIFICATE-----")
            && text.len() <= 8192
            && text.chars().all(|c| c.is_ascii_graphic() || c == ' ' || c == '\n' || c == '\r')
        {
            Ok(())
        } else {
            Err("expected PEM certificates (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----), at most 8 KiB".into())
        }
    }
);

/// HTTPS on the instance: the proxy serves `hosts` on 443 (and redirects them from HTTP) with
/// certificates from `ca`, kept in a Docker volume that outlives the proxy's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyHttps {
    pub hosts: Vec<HostName>,
    pub email: Option<AcmeEmail>,
    pub ca: AcmeCa,
    pub ca_root: Option<CaRootPem>,
}

impl AcmeCa {
    /// `letsencrypt`, `letsencrypt-staging` or a directory URL.
    pub fn from_input(text: &str) -> Result<AcmeCa, String> {
        match text.trim() {
            "letsencrypt" => AcmeCa::parse(LETS_ENCRYPT),
            "letsencrypt-staging" => AcmeCa::parse(LETS_ENCRYPT_STAGING),
            other => AcmeCa::parse(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_plain_lowercase_names_with_a_dot() {
        for ok in ["app.example.com", "a-b.example.co.uk", "x1.io"] {
            assert!(HostName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["localhost", "App.example.com", "-a.example.com", "a..b", "a b.com", "a.example.com."] {
            assert!(HostName::parse(bad).unwrap_err().starts_with("expected a lowercase host name"), "{bad}");
        }
        assert!(HostName::parse("*.example.com").unwrap_err().contains("wildcard needs the DNS challenge"));
    }

    #[test]
    fn the_ca_is_lets_encrypt_by_name_or_an_https_url() {
        assert_eq!(AcmeCa::from_input("letsencrypt").unwrap().as_str(), LETS_ENCRYPT);
        assert_eq!(AcmeCa::from_input("letsencrypt-staging").unwrap().as_str(), LETS_ENCRYPT_STAGING);
        assert_eq!(
            AcmeCa::from_input("https://ca.internal:9000/acme/dir").unwrap().as_str(),
            "https://ca.internal:9000/acme/dir"
        );
        assert!(AcmeCa::from_input("http://ca.internal/dir").unwrap_err().starts_with("expected `letsencrypt`"));
        assert!(AcmeEmail::parse("ops@example.com").is_ok());
        assert!(AcmeEmail::parse("ops").unwrap_err().starts_with("expected an email address"));
        assert!(CaRootPem::parse("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").is_ok());
        assert!(CaRootPem::parse("MIIB").is_err());
    }
}
