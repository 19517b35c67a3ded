//! The proxy's inputs: the hops it trusts, and HTTPS on the instance.

use super::super::{Origin, Resolver};
use crate::model::{AcmeCa, AcmeEmail, CaRootPem, HostName, IpRange, ProxyHttps, LETS_ENCRYPT, PRIVATE_RANGES};

/// `proxy-hosts` and the ACME inputs that go with them (each of which needs the hosts).
pub(super) fn proxy_https(r: &mut Resolver) -> Option<ProxyHttps> {
    let hosts = r.parse_lines("proxy-hosts", |line| HostName::parse(line.trim()));
    r.no_duplicates("proxy-hosts", hosts.iter().map(HostName::as_str), |h| format!("{h} is listed twice"));
    let email = r.parse("proxy-acme-email", |t| AcmeEmail::parse(t.trim()));
    let ca = r.parse("proxy-acme-ca", AcmeCa::from_input);
    // PEM: several lines, read whole.
    let ca_root = match r.lines("proxy-acme-ca-root") {
        (lines, Some(origin)) => CaRootPem::parse(&lines.join("\n")).map_err(|e| r.error(&origin, e)).ok(),
        (_, None) => None,
    };
    if hosts.is_empty() {
        for name in ["proxy-acme-email", "proxy-acme-ca", "proxy-acme-ca-root"] {
            if let Some(v) = r.get(name).filter(|v| !matches!(v.origin, Origin::Default(_))) {
                r.error(&v.origin, "needs `proxy-hosts`: the host names the proxy gets certificates for");
            }
        }
        return None;
    }
    let ca = ca.unwrap_or_else(|| AcmeCa::parse(LETS_ENCRYPT).expect("a valid URL"));
    Some(ProxyHttps { hosts, email, ca, ca_root })
}

/// `proxy-trusted`: `private` (the default), `none`, or addresses and CIDR ranges, one per line.
pub(super) fn proxy_trusted(r: &mut Resolver) -> Vec<IpRange> {
    let private = || PRIVATE_RANGES.iter().map(|t| IpRange::parse(t).expect("a valid range")).collect::<Vec<_>>();
    if r.get("proxy-trusted").is_none() {
        return private();
    }
    // None for `none`: trusting nobody cannot go with trusting someone.
    let lines = r.parse_lines("proxy-trusted", |line| match line.trim() {
        "private" => Ok(Some(private())),
        "none" => Ok(None),
        other => IpRange::parse(other).map(|range| Some(vec![range])).map_err(|e| {
            format!("{e}; or `private` (the private address ranges, the default) or `none` (trust no hop)")
        }),
    });
    if lines.len() > 1 && lines.iter().any(Option::is_none) {
        if let Some(v) = r.get("proxy-trusted") {
            r.error(&v.origin, "`none` trusts no hop: give it alone, or list the ranges to trust without it");
        }
    }
    let mut ranges: Vec<IpRange> = lines.into_iter().flatten().flatten().collect();
    ranges.dedup();
    ranges
}
