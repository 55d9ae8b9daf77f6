//! Which proxy, if any, carries the W&B traffic, and why.
//!
//! The choice is made once per base URL (the agent talks to one W&B host)
//! and kept with its reason so that `check-config` and the start-up log can
//! say which setting won. Order, first match wins:
//!
//! 1. the sink's `proxy` option;
//! 2. `WANDB_VPN_HTTPS_PROXY` / `WANDB_VPN_HTTP_PROXY` (MOSAIC's variables),
//!    then the SDK's own `WANDB_HTTPS_PROXY` / `WANDB_HTTP_PROXY` — these
//!    are W&B-specific, so, like the SDK's `https_proxy` setting, `NO_PROXY`
//!    does not apply to them;
//! 3. `NO_PROXY` / `no_proxy` (Go's `ProxyFromEnvironment` syntax), then
//!    `HTTPS_PROXY` / `https_proxy` for an https URL, `HTTP_PROXY` /
//!    `http_proxy` for an http one (upper case first, as Go does).
//!
//! Unlike Go, loopback targets are not exempted implicitly: a proxy set for
//! 127.0.0.1 is used (the tests rely on it); list them in `NO_PROXY` to
//! bypass.

use std::net::IpAddr;

/// The proxy the W&B client uses, with the setting it came from. The URL
/// may hold credentials: print it only through [`mask_url`].
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyChoice {
    pub url: Option<String>,
    pub reason: String,
}

impl std::fmt::Debug for ProxyChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for ProxyChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.url {
            Some(u) => write!(f, "{} ({})", mask_url(u), self.reason),
            None => write!(f, "direct ({})", self.reason),
        }
    }
}

/// Scheme, host and port of the target URL: all NO_PROXY needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

impl Target {
    /// Parses `http(s)://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not an http(s) URL"))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            other => return Err(format!("unsupported scheme {other:?} in {}", mask_url(url))),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = split_host_port(hostport);
        if host.is_empty() {
            return Err(format!("no host in {}", mask_url(url)));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| format!("bad port in {}", mask_url(url)))?,
            None if https => 443,
            None => 80,
        };
        Ok(Target {
            https,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        // [v6]:port
        if let Some((h, after)) = rest.split_once(']') {
            return (h, after.strip_prefix(':'));
        }
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    }
}

pub use crate::util::mask_url;

/// Chooses the proxy for `target`; `env` reads an environment variable
/// (a parameter so that tests need not touch the process environment).
pub fn select(
    target: &Target,
    configured: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> ProxyChoice {
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if let Some(p) = configured.filter(|p| !p.trim().is_empty()) {
        return ProxyChoice {
            url: Some(p.trim().to_string()),
            reason: "sinks.wandb.proxy in the configuration".into(),
        };
    }
    let specific: &[&str] = if target.https {
        &["WANDB_VPN_HTTPS_PROXY", "WANDB_HTTPS_PROXY"]
    } else {
        &["WANDB_VPN_HTTP_PROXY", "WANDB_HTTP_PROXY"]
    };
    for name in specific {
        if let Some(p) = get(name) {
            return ProxyChoice {
                url: Some(p.trim().to_string()),
                reason: format!("${name}"),
            };
        }
    }
    let standard: &[&str] = if target.https {
        &["HTTPS_PROXY", "https_proxy"]
    } else {
        &["HTTP_PROXY", "http_proxy"]
    };
    let Some((name, p)) = standard
        .iter()
        .find_map(|n| get(n).map(|p| (*n, p.trim().to_string())))
    else {
        return ProxyChoice {
            url: None,
            reason: "no proxy setting applies".into(),
        };
    };
    for no in ["NO_PROXY", "no_proxy"] {
        if let Some(list) = get(no) {
            if let Some(entry) = no_proxy_match(&list, target) {
                return ProxyChoice {
                    url: None,
                    reason: format!(
                        "${name} is set but ${no} entry {entry:?} matches {}",
                        target.host
                    ),
                };
            }
            break;
        }
    }
    ProxyChoice {
        url: Some(p),
        reason: format!("${name}"),
    }
}

/// The `NO_PROXY` entry that exempts `target`, if any. Entries: `*`, a host
/// name (also matching its subdomains; a leading `.` is allowed), an IP
/// address, a CIDR block, each optionally with `:port`.
pub fn no_proxy_match(list: &str, target: &Target) -> Option<String> {
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    let ip: Option<IpAddr> = host.parse().ok();
    for raw in list
        .split([',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        if raw == "*" {
            return Some(raw.into());
        }
        let entry = raw.to_ascii_lowercase();
        if let Some((net, bits)) = entry.split_once('/') {
            if let (Ok(net), Ok(bits), Some(ip)) = (net.parse::<IpAddr>(), bits.parse::<u32>(), ip)
            {
                if cidr_contains(net, bits, ip) {
                    return Some(raw.into());
                }
            }
            continue;
        }
        let (h, port) = split_host_port(&entry);
        if let Some(port) = port {
            if port.parse::<u16>().ok() != Some(target.port) {
                continue;
            }
        }
        let h = h.trim_start_matches('[').trim_end_matches(']');
        if let (Ok(a), Some(b)) = (h.parse::<IpAddr>(), ip) {
            if a == b {
                return Some(raw.into());
            }
            continue;
        }
        let h = h.trim_start_matches("*.").trim_start_matches('.');
        if !h.is_empty() && (host == h || host.ends_with(&format!(".{h}"))) {
            return Some(raw.into());
        }
    }
    None
}

fn cidr_contains(net: IpAddr, bits: u32, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn order_of_precedence() {
        let t = Target::parse("https://api.wandb.ai").unwrap();
        let all = env(&[
            ("WANDB_VPN_HTTPS_PROXY", "http://vpn:1"),
            ("HTTPS_PROXY", "http://std:2"),
        ]);
        assert_eq!(
            select(&t, Some("http://cfg:3"), &all).url.as_deref(),
            Some("http://cfg:3")
        );
        let c = select(&t, None, &all);
        assert_eq!(c.url.as_deref(), Some("http://vpn:1"));
        assert!(c.reason.contains("WANDB_VPN_HTTPS_PROXY"));
        let std_only = env(&[
            ("https_proxy", "http://lower:2"),
            ("HTTP_PROXY", "http://h:1"),
        ]);
        assert_eq!(
            select(&t, None, &std_only).url.as_deref(),
            Some("http://lower:2")
        );
        let t_http = Target::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            select(&t_http, None, &std_only).url.as_deref(),
            Some("http://h:1")
        );
        assert_eq!(select(&t, None, &env(&[])).url, None);
    }

    #[test]
    fn no_proxy_bypasses_standard_variables_only() {
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        let e = env(&[
            ("HTTP_PROXY", "http://p:1"),
            ("NO_PROXY", "example.com, 127.0.0.1"),
        ]);
        let c = select(&t, None, &e);
        assert_eq!(c.url, None);
        assert!(c.reason.contains("127.0.0.1"), "{}", c.reason);
        let e = env(&[("WANDB_VPN_HTTP_PROXY", "http://p:1"), ("NO_PROXY", "*")]);
        assert_eq!(select(&t, None, &e).url.as_deref(), Some("http://p:1"));
    }

    #[test]
    fn no_proxy_entries() {
        let t = Target::parse("https://api.wandb.ai/").unwrap();
        assert!(no_proxy_match("wandb.ai", &t).is_some());
        assert!(no_proxy_match(".wandb.ai", &t).is_some());
        assert!(no_proxy_match("api.wandb.ai:443", &t).is_some());
        assert!(no_proxy_match("api.wandb.ai:80", &t).is_none());
        assert!(no_proxy_match("andb.ai", &t).is_none());
        let t = Target::parse("http://10.1.2.3:80").unwrap();
        assert!(no_proxy_match("10.0.0.0/8", &t).is_some());
        assert!(no_proxy_match("11.0.0.0/8", &t).is_none());
        let t = Target::parse("http://[::1]:8080").unwrap();
        assert!(no_proxy_match("::1", &t).is_some());
    }

    #[test]
    fn credentials_are_masked() {
        assert_eq!(mask_url("http://u:secret@p:3128/x"), "http://***@p:3128/x");
        assert_eq!(mask_url("http://p:3128"), "http://p:3128");
        let c = ProxyChoice {
            url: Some("http://u:pw@h:1".into()),
            reason: "r".into(),
        };
        assert!(!format!("{c} {c:?}").contains("pw"));
    }
}
