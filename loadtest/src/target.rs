//! Targets: the load generator sends traffic to this machine only. A URL whose host is not a
//! loopback address (`127.0.0.0/8`, `::1`, or `localhost`) is refused before anything is sent.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("{0:?} is not a URL: {1}")]
    Invalid(String, String),
    #[error("{0:?}: only {1} URLs are supported")]
    Scheme(String, &'static str),
    #[error("{0:?} has no port")]
    NoPort(String),
    #[error(
        "{0:?} is not a loopback address: the load generator only targets this machine (127.0.0.0/8, ::1, localhost)"
    )]
    NotLoopback(String),
    #[error("{0:?}: give the base URL only (scheme, host and port), without a path or query")]
    HasPath(String),
}

/// An HTTP server on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header.
    pub authority: String,
    /// `http://host:port`, for the setup calls.
    pub base_url: String,
}

impl Target {
    /// Parses an `http://host:port` base URL whose host is a loopback address.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let (addr, authority) = loopback(url, "http")?;
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| TargetError::Invalid(url.into(), e.to_string()))?;
        if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
            return Err(TargetError::HasPath(url.into()));
        }
        Ok(Self {
            addr,
            base_url: format!("http://{authority}"),
            authority,
        })
    }
}

/// Checks that `url` has the scheme `scheme` and a loopback host; returns the socket
/// address and the `host:port` authority.
pub fn loopback(url: &str, scheme: &'static str) -> Result<(SocketAddr, String), TargetError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| TargetError::Invalid(url.into(), e.to_string()))?;
    if uri.scheme_str() != Some(scheme) {
        return Err(TargetError::Scheme(url.into(), scheme));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| TargetError::Invalid(url.into(), "no host".into()))?;
    if authority.as_str().contains('@') {
        return Err(TargetError::Invalid(
            url.into(),
            "credentials in the URL".into(),
        ));
    }
    let port = authority
        .port_u16()
        .ok_or_else(|| TargetError::NoPort(url.into()))?;
    let host = authority.host();
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| TargetError::NotLoopback(url.into()))?
    };
    if !ip.is_loopback() {
        return Err(TargetError::NotLoopback(url.into()));
    }
    Ok((SocketAddr::new(ip, port), authority.as_str().to_owned()))
}

/// Checks a listen address: the no-op server binds to loopback only.
pub fn loopback_listen(addr: SocketAddr) -> Result<SocketAddr, TargetError> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(TargetError::NotLoopback(addr.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_accepted() {
        for url in [
            "http://127.0.0.1:18480",
            "http://127.0.0.1:18480/",
            "http://127.3.4.5:80",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            let t = Target::parse(url).unwrap();
            assert!(t.addr.ip().is_loopback(), "{url}");
        }
        let t = Target::parse("http://localhost:8080").unwrap();
        assert_eq!(t.authority, "localhost:8080");
        assert_eq!(t.base_url, "http://localhost:8080");
    }

    #[test]
    fn other_hosts_are_refused() {
        for url in [
            "http://10.0.0.1:80",
            "http://192.168.1.2:80",
            "http://8.8.8.8:80",
            "http://example.com:80",
            "http://localhost.example.com:80",
            "http://0.0.0.0:80",
            "http://[::]:80",
        ] {
            assert_eq!(
                Target::parse(url),
                Err(TargetError::NotLoopback(url.into())),
                "{url}"
            );
        }
    }

    #[test]
    fn other_schemes_paths_and_portless_urls_are_refused() {
        assert!(matches!(
            Target::parse("https://127.0.0.1:443"),
            Err(TargetError::Scheme(..))
        ));
        assert!(matches!(
            Target::parse("http://127.0.0.1"),
            Err(TargetError::NoPort(..))
        ));
        assert!(matches!(
            Target::parse("http://127.0.0.1:80/v1"),
            Err(TargetError::HasPath(..))
        ));
        assert!(matches!(
            Target::parse("http://user@127.0.0.1:80"),
            Err(TargetError::Invalid(..))
        ));
    }

    #[test]
    fn nats_urls_are_checked_the_same_way() {
        assert!(loopback("nats://127.0.0.1:4222", "nats").is_ok());
        assert!(matches!(
            loopback("nats://10.1.1.1:4222", "nats"),
            Err(TargetError::NotLoopback(..))
        ));
    }

    #[test]
    fn listen_addresses_must_be_loopback() {
        assert!(loopback_listen("127.0.0.1:0".parse().unwrap()).is_ok());
        assert!(loopback_listen("0.0.0.0:80".parse().unwrap()).is_err());
    }
}
