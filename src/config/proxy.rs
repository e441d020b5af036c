//! The proxy, if any: a plain-http base URL (loopback only) never goes through one, since the
//! credentials header would travel in clear text to the proxy. An https base URL honours
//! `HTTPS_PROXY`/`https_proxy`, then `ALL_PROXY`/`all_proxy`, unless `NO_PROXY`/`no_proxy` names
//! its host; the header stays inside TLS. Decided here, once, so the client does exactly this.

use std::fmt;
use std::net::IpAddr;

use url::Url;

use super::{ConfigError, Secret};

/// The variables naming an https proxy, in order of precedence (as curl and reqwest read them).
const PROXY_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];
/// The variables listing hosts that bypass the proxy.
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// The proxy requests go through.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The proxy's URL, credentials included (never printed).
    url: Secret,
    /// The same without credentials, for messages.
    shown: String,
    /// The variable it came from.
    pub from: &'static str,
}

impl Proxy {
    /// The URL to hand to the HTTP client.
    pub fn expose(&self) -> &str {
        self.url.expose()
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {})", self.shown, self.from)
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The proxy for `base`, read from the environment through `var`.
pub fn choose(
    base: &Url,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, ConfigError> {
    if base.scheme() != "https" {
        return Ok(None);
    }
    let Some((from, raw)) = PROXY_VARS.iter().find_map(|name| {
        var(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*name, v))
    }) else {
        return Ok(None);
    };
    let host = base.host_str().unwrap_or_default();
    // An empty NO_PROXY says nothing: no_proxy may still.
    if let Some(list) = NO_PROXY_VARS
        .iter()
        .find_map(|name| var(name).filter(|v| !v.trim().is_empty()))
        && bypasses(&list, host)
    {
        return Ok(None);
    }
    // Like curl: a proxy given without a scheme is an http proxy.
    let with_scheme = if raw.contains("://") {
        raw.trim().to_string()
    } else {
        format!("http://{}", raw.trim())
    };
    let bad = |reason: String| ConfigError::BadProxy { var: from, reason };
    let url = Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
    // The HTTP client speaks to HTTP proxies only (no SOCKS): refused here, not at the first request.
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad("use http://host:port or https://host:port".into()));
    }
    let mut shown = url.clone();
    // Userinfo, a query or a fragment may hold the proxy's password: none reaches a message.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    Ok(Some(Proxy {
        url: Secret::new(url.to_string()),
        shown: shown.to_string(),
        from,
    }))
}

/// Whether `host` is exempt by a `NO_PROXY` list: `*`, an exact address, an address range, or a
/// domain that matches itself and its subdomains (a leading dot is ignored).
fn bypasses(list: &str, host: &str) -> bool {
    let host = host
        .trim_matches(|c| c == '[' || c == ']')
        .to_ascii_lowercase();
    let ip: Option<IpAddr> = host.parse().ok();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some(ip) = ip {
                let entry = entry.trim_matches(|c| c == '[' || c == ']');
                return entry.parse::<IpAddr>().is_ok_and(|e| e == ip) || in_range(entry, ip);
            }
            let domain = entry.trim_start_matches('.').to_ascii_lowercase();
            host == domain || host.ends_with(&format!(".{domain}"))
        })
}

/// Whether `ip` is in `entry` written as `address/bits`.
fn in_range(entry: &str, ip: IpAddr) -> bool {
    let Some((net, bits)) = entry.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn plain_http_never_goes_through_a_proxy() {
        let all = env(&[
            ("HTTP_PROXY", "http://p:1"),
            ("ALL_PROXY", "http://p:1"),
            ("HTTPS_PROXY", "http://p:1"),
        ]);
        assert_eq!(
            choose(&url("http://127.0.0.1:8080/"), &all).expect("ok"),
            None
        );
    }

    #[test]
    fn https_takes_https_proxy_before_all_proxy_and_hides_credentials() {
        let vars = env(&[
            ("ALL_PROXY", "http://a:1"),
            ("https_proxy", "u:s3cret@corp:3128"),
        ]);
        let proxy = choose(&url("https://api.verigator.com/"), &vars)
            .expect("ok")
            .expect("a proxy");
        assert_eq!(proxy.from, "https_proxy");
        assert_eq!(proxy.expose(), "http://u:s3cret@corp:3128/");
        let shown = format!("{proxy} {proxy:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("http://corp:3128/"),
            "{shown}"
        );
        let only_all = env(&[("ALL_PROXY", "http://a:1")]);
        let proxy = choose(&url("https://x.example/"), &only_all).expect("ok");
        assert_eq!(proxy.map(|p| p.from), Some("ALL_PROXY"));
    }

    #[test]
    fn no_proxy_exempts_hosts_domains_and_ranges() {
        for (list, host, exempt) in [
            ("*", "api.verigator.com", true),
            ("verigator.com", "api.verigator.com", true),
            (".verigator.com", "verigator.com", true),
            ("other.com, 10.0.0.0/8", "api.verigator.com", false),
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.1", "10.0.0.2", false),
            ("notverigator.com", "verigator.com", false),
            ("[::1]", "[::1]", true),
        ] {
            let vars = env(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", list)]);
            let chosen = choose(&url(&format!("https://{host}/")), &vars).expect("ok");
            assert_eq!(chosen.is_none(), exempt, "{list} / {host}");
        }
    }

    #[test]
    fn an_empty_no_proxy_gives_way_and_a_query_is_never_shown() {
        let vars = env(&[
            ("HTTPS_PROXY", "http://corp:3128/?token=s3cret"),
            ("NO_PROXY", ""),
            ("no_proxy", "api.verigator.com"),
        ]);
        assert_eq!(
            choose(&url("https://api.verigator.com/"), &vars).expect("ok"),
            None
        );
        let proxy = choose(&url("https://x.example/"), &vars)
            .expect("ok")
            .expect("a proxy");
        assert!(!proxy.to_string().contains("s3cret"), "{proxy}");
        let socks = env(&[("HTTPS_PROXY", "socks5://p:1")]);
        assert!(choose(&url("https://x.example/"), &socks).is_err());
    }

    #[test]
    fn a_bad_proxy_is_named_without_its_value() {
        let vars = env(&[("HTTPS_PROXY", "ftp://u:pw@x")]);
        let e = choose(&url("https://x.example/"), &vars).expect_err("refused");
        assert!(
            e.to_string().contains("HTTPS_PROXY") && !e.to_string().contains("pw"),
            "{e}"
        );
    }
}
