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

/// True for link-local and cloud metadata addresses, also when written as IPv6 that embeds an
/// IPv4 address: mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, translated
/// `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and `64:ff9b:1::/48`, and 6to4
/// `2002:aabb:ccdd::`.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.octets() == [100, 100, 100, 200],
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let o = v6.octets();
            let last32 = std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]);
            let embedded = if v6.to_ipv4_mapped().is_some()
                || s[..6] == [0, 0, 0, 0, 0, 0] // ::a.b.c.d (deprecated, still routed by some stacks)
                || s[..6] == [0, 0, 0, 0, 0xffff, 0] // ::ffff:0:a.b.c.d (RFC 2765)
                || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] // 64:ff9b::/96 (RFC 6052)
                || s[..3] == [0x64, 0xff9b, 1]
            // 64:ff9b:1::/48 (RFC 8215)
            {
                Some(last32)
            } else if s[0] == 0x2002 {
                // 6to4 (RFC 3056): bits 16..48 are the IPv4 address.
                Some(std::net::Ipv4Addr::new(o[2], o[3], o[4], o[5]))
            } else {
                None
            };
            (s[0] & 0xffc0) == 0xfe80 // fe80::/10
                || v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || embedded.is_some_and(|m| is_forbidden(IpAddr::V4(m)))
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
/// The URL is parsed as the client will parse it (WHATWG rules: `\\` is `/`, percent-encoded
/// and shortened IPv4 forms are decoded), so the host checked is the host called. A name that
/// does not resolve passes (the resolver checks again at connection time).
pub async fn check_url(url: &str) -> Result<(), UrlError> {
    let bad = || UrlError::Invalid(url.to_owned());
    let parsed = reqwest::Url::parse(url).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad());
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = parsed.port_or_known_default().unwrap_or(443);
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

/// The one way outbound clients are built: 10 s per request, 3 s to connect, no redirects (a
/// redirect could lead anywhere, including an address the resolver never sees), and
/// [`SafeResolver`] unless `allow_link_local` (the callbacks' `dangerous_*` setting).
pub fn client(allow_link_local: bool) -> Result<reqwest::Client, reqwest::Error> {
    let b = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .connect_timeout(std::time::Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none());
    if allow_link_local {
        b.build()
    } else {
        b.dns_resolver(SafeResolver).build()
    }
}

/// Why an outbound call failed, with every cause in the chain (reqwest's own text stops at
/// "error sending request", which hides a refusal by [`SafeResolver`], a refused connection or
/// a TLS fault) and without the URL (a URL can carry a token in its query).
pub fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_request() {
        "sending the request failed"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "HTTP failure"
    };
    let mut out = what.to_owned();
    let mut last = String::new();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let text = c.to_string();
        if text != last && !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        cur = c.source();
    }
    out
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
            "http://169.254.169.254\\@example.com/",
            "http://169.254.169.%32%35%34/",
            "http://0xa9fea9fe/",
            "HTTP://169.254.169.254/",
            "http://[::ffff:100.100.100.200]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[64:ff9b::169.254.169.254]/",
            "http://[::169.254.169.254]/",
            "http://[::ffff:0:169.254.169.254]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b:1::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
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
        for invalid in [
            "ftp://x/",
            "http://",
            "127.0.0.1:80",
            "http://h:port/",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(check_url(invalid).await, Err(UrlError::Invalid(_))),
                "{invalid}"
            );
        }
    }

    /// Resolves every name to the metadata address, through the guard's filter.
    struct Metadata;
    impl reqwest::dns::Resolve for Metadata {
        fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
            let host = name.as_str().to_owned();
            Box::pin(async move {
                let all = vec![SocketAddr::from(([169, 254, 169, 254], 80))];
                let addrs: reqwest::dns::Addrs = Box::new(keep_allowed(&host, all)?.into_iter());
                Ok(addrs)
            })
        }
    }

    #[tokio::test]
    async fn a_refusal_by_the_address_guard_says_why_and_not_the_url() {
        let c = reqwest::Client::builder()
            .dns_resolver(Metadata)
            .build()
            .unwrap();
        let e = c
            .post("http://hooks.example/x?token=s3cret")
            .send()
            .await
            .unwrap_err();
        let text = describe(&e);
        assert!(
            text.contains("resolves only to link-local or cloud metadata addresses"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        // A closed port says so too.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = reqwest::get(format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap_err();
        assert!(describe(&e).contains("refused"), "{}", describe(&e));
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
