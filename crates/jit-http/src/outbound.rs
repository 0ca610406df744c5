//! Outbound HTTP never reaches link-local or cloud metadata addresses (169.254.0.0/16 with
//! 169.254.169.254, fe80::/10, fd00:ec2::254, 100.100.100.200): those hand out cloud
//! credentials to whoever asks from the machine.
//!
//! Two checks, because a URL can name an address or a host: [`check_url`] refuses a URL whose
//! literal address, or any address its host resolves to now, is forbidden (configuration
//! time); [`SafeResolver`], installed in every outbound client, drops forbidden addresses from
//! every lookup the client makes (connection time), so a name that later resolves somewhere
//! else (DNS rebinding) still cannot reach them.

use std::net::{IpAddr, SocketAddr};

/// True for link-local and cloud metadata addresses.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.octets() == [100, 100, 100, 200],
        IpAddr::V6(v6) => {
            let first = v6.segments().first().copied().unwrap_or(0);
            (first & 0xffc0) == 0xfe80 // fe80::/10
                || v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || v6.to_ipv4_mapped().is_some_and(|m| m.is_link_local())
        }
    }
}

/// Why a URL may not be called.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    /// Not an http(s) URL with a host.
    #[error("{0} is not an http:// or https:// URL")]
    Invalid(String),
    /// Names or resolves to a link-local or cloud metadata address.
    #[error("{0} reaches a link-local or cloud metadata address ({1})")]
    Forbidden(String, IpAddr),
}

/// Checks a URL: scheme, and its literal address or every address its host resolves to now.
/// A name that does not resolve passes (the resolver checks again at connection time).
pub async fn check_url(url: &str) -> Result<(), UrlError> {
    let bad = || UrlError::Invalid(url.to_owned());
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "http" | "https") {
        return Err(bad());
    }
    let authority = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .rsplit('@')
        .next()
        .unwrap_or("");
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            (h, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| bad())?,
        None if scheme == "https" => 443,
        None => 80,
    };
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map(|a| a.map(|s| s.ip()).collect())
            .unwrap_or_default(),
    };
    match addrs.into_iter().find(|ip| is_forbidden(*ip)) {
        Some(ip) => Err(UrlError::Forbidden(url.to_owned(), ip)),
        None => Ok(()),
    }
}

/// The addresses of `host` that are not forbidden; an error when none is left.
pub fn keep_allowed(host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, String> {
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| !is_forbidden(a.ip()))
        .collect();
    if allowed.is_empty() {
        Err(format!(
            "{host} resolves only to link-local or cloud metadata addresses (or to nothing)"
        ))
    } else {
        Ok(allowed)
    }
}

/// A DNS resolver for reqwest that leaves out forbidden addresses; a name with nothing else
/// fails to resolve. Install with `ClientBuilder::dns_resolver(SafeResolver)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SafeResolver;

impl reqwest::dns::Resolve for SafeResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs: reqwest::dns::Addrs = Box::new(keep_allowed(&host, all)?.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn link_local_and_metadata_addresses_are_refused() {
        for bad in [
            "http://169.254.169.254/latest/meta-data",
            "http://169.254.169.254:80",
            "http://[fe80::1]/x",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
            "http://user@169.254.169.254/",
        ] {
            assert!(
                matches!(check_url(bad).await, Err(UrlError::Forbidden(..))),
                "{bad}"
            );
        }
        for ok in [
            "http://127.0.0.1:8065/jit/webhook",
            "https://10.0.0.5/hook",
            "http://[::1]:8080",
            "http://localhost:8065",
        ] {
            assert_eq!(check_url(ok).await, Ok(()), "{ok}");
        }
        for invalid in ["ftp://x/", "http://", "127.0.0.1:80", "http://h:port/"] {
            assert!(
                matches!(check_url(invalid).await, Err(UrlError::Invalid(_))),
                "{invalid}"
            );
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_forbidden_addresses() {
        use reqwest::dns::Resolve;
        let name = |s: &str| s.parse::<reqwest::dns::Name>().unwrap();
        let addrs: Vec<SocketAddr> = SafeResolver
            .resolve(name("localhost"))
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
        // A literal link-local "name" resolves to itself: nothing is left, so it fails.
        assert!(SafeResolver.resolve(name("169.254.169.254")).await.is_err());
        // A name that resolves to a metadata address and a normal one keeps only the normal
        // one; one that resolves only to metadata addresses fails.
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            keep_allowed(
                "h",
                vec![a("169.254.169.254:0"), a("10.0.0.7:0"), a("[fe80::1]:0")]
            ),
            Ok(vec![a("10.0.0.7:0")])
        );
        assert!(keep_allowed("h", vec![a("169.254.169.254:0"), a("[fd00:ec2::254]:0")]).is_err());
    }
}
