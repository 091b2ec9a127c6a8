//! The egress policy: where requests made on a tenant's behalf may go.
//!
//! Providers, embeddings and judges are URLs a tenant types in; without a
//! policy they reach whatever the server can reach — loopback, the cluster
//! network, the cloud's metadata service. Every such request goes through
//! one policy:
//!
//! - addresses inside the network (loopback, private, link-local and with it
//!   the metadata service, unique-local, carrier-grade NAT, unspecified,
//!   multicast, …) are refused unless the operator allows them with
//!   `PROMPTOPS_EGRESS_ALLOW` — CIDRs (`10.0.0.0/8`), addresses
//!   (`127.0.0.1`) or host names (`vllm.internal`, any address it resolves to);
//! - a host name is checked on the addresses it resolves to, when the
//!   connection is made ([`EgressResolver`], the HTTP client's resolver), so
//!   a name that resolves to a public address for a check and to an internal
//!   one for the call (DNS rebinding) gains nothing;
//! - an address written in the URL is checked before the request
//!   ([`EgressPolicy::check_url`]);
//! - redirects are not followed (the clients are built without them).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::config::{ConfigError, Env};

/// One allowed range: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address.trim_matches(['[', ']']).parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Self { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Why an address is inside the network, or `None` for a public address.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata lives here)")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("carrier-grade NAT")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("broadcast, multicast or reserved")
    } else {
        None
    }
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique-local (private)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

/// The operator's exceptions to "nothing inside the network".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    pub allowed_ranges: Vec<Cidr>,
    /// Host names (lower case) allowed whatever they resolve to.
    pub allowed_hosts: Vec<String>,
}

/// A request the policy refuses, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused by the egress policy: {target} is {kind}; an operator can allow it with PROMPTOPS_EGRESS_ALLOW"
)]
pub struct EgressRefused {
    pub target: String,
    pub kind: String,
}

impl EgressPolicy {
    /// `PROMPTOPS_EGRESS_ALLOW`: comma-separated CIDRs, addresses and host names.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Self::parse(env.get("PROMPTOPS_EGRESS_ALLOW").unwrap_or_default()).map_err(|entry| ConfigError {
            variable: "PROMPTOPS_EGRESS_ALLOW".into(),
            value: entry,
            reason: "expected comma-separated CIDRs (10.0.0.0/8), addresses (127.0.0.1) or host names".into(),
        })
    }

    /// Parses an allow list; the first entry that is none of the three is the error.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut policy = Self::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Some(range) = Cidr::parse(entry) {
                policy.allowed_ranges.push(range);
            } else if is_host_name(entry) {
                policy.allowed_hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(entry.to_owned());
            }
        }
        Ok(policy)
    }

    /// Whether a connection to `ip` is allowed.
    pub fn check_ip(&self, ip: IpAddr, target: &str) -> Result<(), EgressRefused> {
        match internal_kind(ip) {
            Some(kind) if !self.allowed_ranges.iter().any(|r| r.contains(ip)) => Err(EgressRefused {
                target: target.to_owned(),
                kind: format!("{ip}, {kind}"),
            }),
            _ => Ok(()),
        }
    }

    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed_hosts.contains(&host)
    }

    /// Checks a URL before a request: the scheme, and an address written in
    /// it (a host name is checked when it is resolved).
    pub fn check_url(&self, url: &str) -> Result<(), EgressRefused> {
        let refused = |kind: &str| EgressRefused {
            target: url.to_owned(),
            kind: kind.to_owned(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|_| refused("not a valid URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(refused("not http or https"));
        }
        let host = parsed.host_str().ok_or_else(|| refused("without a host"))?;
        match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => self.check_ip(ip, url),
            // A host name: checked on what it resolves to, when connecting.
            Err(_) => Ok(()),
        }
    }

    /// The addresses of `host` this policy allows connecting to: all of them
    /// for an allowed host name, else the public ones (and allowed ranges).
    pub fn filter(&self, host: &str, addresses: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, EgressRefused> {
        if self.allows_host(host) {
            return Ok(addresses);
        }
        let mut first_refusal = None;
        let permitted: Vec<SocketAddr> = addresses
            .into_iter()
            .filter(|a| match self.check_ip(a.ip(), host) {
                Ok(()) => true,
                Err(refused) => {
                    first_refusal.get_or_insert(refused);
                    false
                }
            })
            .collect();
        match (permitted.is_empty(), first_refusal) {
            (true, Some(refused)) => Err(refused),
            _ => Ok(permitted),
        }
    }
}

fn is_host_name(entry: &str) -> bool {
    !entry.is_empty()
        && entry.len() <= 253
        && entry.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The HTTP client's resolver: host names resolve to the addresses the
/// policy allows, checked at connection time.
#[derive(Debug, Clone)]
pub struct EgressResolver(pub Arc<EgressPolicy>);

impl reqwest::dns::Resolve for EgressResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted = policy.filter(&host, addresses)?;
            let addrs: reqwest::dns::Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

/// A client for requests on a tenant's behalf: the policy's resolver, no
/// redirects, and the given timeouts.
pub fn client_builder(policy: Arc<EgressPolicy>) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(EgressResolver(policy)))
        .redirect(reqwest::redirect::Policy::none())
}

/// The egress refusal behind a failed request, if that is why it failed.
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressRefused> {
    let mut current: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<EgressRefused>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_inside_the_network_are_refused_by_default() {
        let policy = EgressPolicy::default();
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(policy.check_ip(ip(inside), inside).is_err(), "{inside}");
        }
        for outside in ["1.1.1.1", "172.32.0.1", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(policy.check_ip(ip(outside), outside).is_ok(), "{outside}");
        }
    }

    #[test]
    fn the_operator_allows_ranges_addresses_and_host_names() {
        let policy = EgressPolicy::parse("10.0.0.0/8, 127.0.0.1 ,vllm.Internal,::1/128").unwrap();
        assert!(policy.check_ip(ip("10.9.8.7"), "x").is_ok());
        assert!(policy.check_ip(ip("127.0.0.1"), "x").is_ok());
        assert!(policy.check_ip(ip("127.0.0.2"), "x").is_err());
        assert!(policy.check_ip(ip("::1"), "x").is_ok());
        assert!(policy.check_ip(ip("192.168.0.1"), "x").is_err());
        assert!(policy.allows_host("VLLM.internal."));
        assert_eq!(EgressPolicy::parse("10.0.0.0/33"), Err("10.0.0.0/33".to_owned()));
        assert_eq!(EgressPolicy::parse("http://x"), Err("http://x".to_owned()));
    }

    #[test]
    fn urls_are_checked_for_scheme_and_written_addresses() {
        let policy = EgressPolicy::default();
        assert!(policy.check_url("https://api.openai.com/v1").is_ok());
        assert!(
            policy.check_url("http://localhost:8080/v1").is_ok(),
            "a name is checked when resolved"
        );
        for refused in [
            "http://127.0.0.1:8080/v1",
            "http://[::1]/v1",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/v1",
            "file:///etc/passwd",
            "ftp://example.com",
        ] {
            let error = policy.check_url(refused).unwrap_err();
            assert!(
                error.to_string().contains("refused by the egress policy"),
                "{refused}"
            );
        }
    }

    #[test]
    fn resolved_addresses_are_filtered_to_the_allowed_ones() {
        let policy = EgressPolicy::default();
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let public: SocketAddr = "93.184.216.34:0".parse().unwrap();
        assert_eq!(
            policy.filter("mixed.example", vec![loopback, public]).unwrap(),
            vec![public]
        );
        let refused = policy.filter("localhost", vec![loopback]).unwrap_err();
        assert_eq!(refused.kind, "127.0.0.1, loopback");
        let allowed = EgressPolicy::parse("localhost").unwrap();
        assert_eq!(
            allowed.filter("localhost", vec![loopback]).unwrap(),
            vec![loopback]
        );
    }
}
