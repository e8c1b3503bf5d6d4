//! The mirror's base URL as a client sees it, for `config.json`'s `dl` and the
//! dashboard's snippet, and the host a request was addressed to, which the
//! dashboard holds to `public-url` (see `dashboard`). With `public-url` set the
//! base URL is the setting, and nothing a client sends matters. Without it the
//! URL comes from the request, and a client could otherwise make the `dl` that
//! a shared cache then hands everyone (and that cargo sends its token to)
//! point anywhere; so:
//! - `Forwarded` / `X-Forwarded-Host` / `X-Forwarded-Proto` count only when the
//!   connection comes from a `trusted-proxies` address;
//! - of those, only what the nearest trusted proxy added counts (see
//!   [`Forwarded`]): a proxy that appends keeps the client's own values on the
//!   left of the list;
//! - the host must be a plain host name or IP literal with an optional port, and
//!   the scheme `http` or `https`; anything else is a 400;
//! - the response says which headers it depended on (`Vary`).

use std::net::IpAddr;

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::HttpRequest;

use super::{ApiError, ClientFacing};
use crate::proxies::TrustedProxies;
use crate::AppState;

/// A base URL and the `Vary` value for a response whose body contains it.
pub struct Origin {
    /// `scheme://host[:port]`, no trailing slash.
    pub base: String,
    pub vary: HeaderValue,
}

const VARY_NOTHING: HeaderValue = HeaderValue::from_static("Accept-Encoding");
const VARY_HOST: HeaderValue = HeaderValue::from_static("Host");
const VARY_FORWARDED: HeaderValue = HeaderValue::from_static(
    "Host, Forwarded, X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto",
);

/// The names a mirror on a developer's machine is reached by besides its
/// `public-url`. No DNS name an outside page controls is among them, so a
/// page that points its own name at the loopback address (DNS rebinding)
/// still sends its own name as the Host and is refused.
const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

pub fn public_base(req: &HttpRequest, state: &AppState) -> Result<Origin, ApiError> {
    if let Some(url) = &state.facing.public_url {
        return Ok(Origin {
            base: url.clone(),
            vary: VARY_NOTHING,
        });
    }
    let view = client_view(req, &state.facing.trusted_proxies)?;
    let scheme = match view.proto {
        Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
        Some(proto) if proto.eq_ignore_ascii_case("http") => "http",
        Some(_) => return Err(ApiError::BadHost("forwarded scheme must be http or https")),
        // Our TLS listener marks its connections (`connection::Tls`).
        None if req.app_config().secure()
            || req.conn_data::<super::connection::Tls>().is_some() =>
        {
            "https"
        }
        None => "http",
    };
    Ok(Origin {
        base: format!("{scheme}://{}", view.host.to_ascii_lowercase()),
        vary: if view.trusted {
            VARY_FORWARDED
        } else {
            VARY_HOST
        },
    })
}

/// Whether a request was addressed to this mirror by a name it answers to:
/// with `public-url` set, that URL's host or a loopback name (the port does
/// not matter: a rebinding page's name is what gives it away); without it,
/// any valid host (the mirror then takes its URL from the request anyway).
/// Behind a trusted proxy, the host the proxy was asked for.
pub fn addressed_to_mirror(req: &HttpRequest, facing: &ClientFacing) -> bool {
    let Some(public) = &facing.public_host else {
        return true;
    };
    let Ok(view) = client_view(req, &facing.trusted_proxies) else {
        return false;
    };
    let host = host_name(&view.host);
    host.eq_ignore_ascii_case(public)
        || LOOPBACK_HOSTS
            .iter()
            .any(|name| host.eq_ignore_ascii_case(name))
}

/// The host name of `scheme://authority/...` (the setting's, already
/// validated), lowercase, without its port.
pub fn host_of_url(url: &str) -> Option<String> {
    let authority = url.split_once("://")?.1.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    Some(host_name(authority).to_ascii_lowercase())
}

/// `name` of `name[:port]`, `[v6]` of `[v6][:port]`.
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

/// The client's address as the trusted proxies report it (for the access
/// log): only when the connection comes from a trusted proxy, and, like the
/// host, the address the walk of [`Forwarded`] ends on (`Forwarded`'s
/// `for=`, else `X-Forwarded-For`); `None` when neither names an IP.
pub fn forwarded_client(req: &HttpRequest, proxies: &TrustedProxies) -> Option<IpAddr> {
    let peer = req.peer_addr()?;
    if proxies.is_empty() || !proxies.trusts(peer.ip()) {
        return None;
    }
    let headers = req.headers();
    if let Some(ip) = nearest(&forwarded_elements(headers), sender, proxies).and_then(sender) {
        return Some(ip);
    }
    let addresses = header_list(headers, "x-forwarded-for");
    nearest(&addresses, ip_of, proxies).and_then(ip_of)
}

/// The address a `Forwarded` element says its sender received the request
/// from (its `for=`).
fn sender(element: &str) -> Option<IpAddr> {
    parameter(element, "for").and_then(|v| ip_of(&v))
}

/// The elements of `Forwarded` over all its header lines in order. A line
/// that is not text says nothing, and stops a walk like an element without a
/// trusted `for`.
fn forwarded_elements(headers: &HeaderMap) -> Vec<&str> {
    header_list(headers, "forwarded")
}

/// The comma-separated entries of header `name` over all its lines, trimmed;
/// a line that is not text is one empty entry.
fn header_list<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .map(|line| line.to_str().unwrap_or(""))
        .flat_map(|text| text.split(','))
        .map(str::trim)
        .collect()
}

/// How the client addressed the request: the host (checked) and the scheme
/// a trusted proxy reported, if any.
struct View {
    host: String,
    proto: Option<String>,
    /// Whether the peer is a trusted proxy (so its headers counted).
    trusted: bool,
}

fn client_view(req: &HttpRequest, proxies: &TrustedProxies) -> Result<View, ApiError> {
    let trusted = !proxies.is_empty()
        && req
            .peer_addr()
            .is_some_and(|peer| proxies.trusts(peer.ip()));
    let headers = req.headers();
    let forwarded = if trusted {
        Forwarded::from_headers(headers, proxies)?
    } else {
        Forwarded::default()
    };
    let host = match forwarded.host {
        Some(host) => host,
        // HTTP/1.1 sends Host; HTTP/2 sends :authority, which lands in the URI.
        None => match headers.get(header::HOST) {
            Some(value) => value
                .to_str()
                .map_err(|_| ApiError::BadHost("invalid Host header"))?
                .to_string(),
            None => req
                .uri()
                .authority()
                .map(|a| a.as_str().to_string())
                .ok_or(ApiError::BadHost("a Host header is required"))?,
        },
    };
    if !valid_authority(&host) {
        return Err(ApiError::BadHost("invalid host: expected NAME[:PORT]"));
    }
    Ok(View {
        host,
        proto: forwarded.proto,
        trusted,
    })
}

/// What the trusted proxies say about the client's view of the mirror.
///
/// Each proxy on the way appends what it saw, so the right end of each list
/// is the nearest proxy's and the left end may be anything the client sent.
/// As RFC 7239 §7.4 advises, the lists are read from the right: the element
/// the connection's peer (a trusted proxy) added, then, while the address
/// that element says it received the request from is a trusted proxy too,
/// the one before it. The element reached is the one the outermost trusted
/// proxy added: the host the client asked it for. In `Forwarded` each element
/// carries that address (`for=`); the `X-Forwarded-*` lists carry none, so
/// `X-Forwarded-For` is walked in their place and its position picks the
/// `X-Forwarded-Host` / `-Proto` entry when that list is as long (each proxy
/// appended to both); else only the last entry counts (a proxy that sets
/// rather than appends leaves one, its own).
///
/// When both kinds name a host (or a scheme), they must agree: a proxy often
/// writes one kind and passes the other through untouched, so one of them may
/// be entirely the client's, and the mirror cannot tell which. Disagreement
/// is a 400, never a pick.
#[derive(Debug, Default, PartialEq, Eq)]
struct Forwarded {
    host: Option<String>,
    proto: Option<String>,
}

impl Forwarded {
    fn from_headers(headers: &HeaderMap, proxies: &TrustedProxies) -> Result<Self, ApiError> {
        let standard = Self::standard(headers, proxies);
        let legacy = Self::legacy(headers, proxies);
        let agree = |a: Option<String>, b: Option<String>, what| match (a, b) {
            (Some(a), Some(b)) if !a.eq_ignore_ascii_case(&b) => Err(ApiError::BadHost(what)),
            (a, b) => Ok(a.or(b)),
        };
        Ok(Forwarded {
            host: agree(
                standard.host,
                legacy.host,
                "Forwarded and X-Forwarded-Host name different hosts",
            )?,
            proto: agree(
                standard.proto,
                legacy.proto,
                "Forwarded and X-Forwarded-Proto name different schemes",
            )?,
        })
    }

    /// `Forwarded` (RFC 7239), over all its header lines in order.
    fn standard(headers: &HeaderMap, proxies: &TrustedProxies) -> Self {
        let elements = forwarded_elements(headers);
        let Some(chosen) = nearest(&elements, sender, proxies) else {
            return Self::default();
        };
        Self {
            host: parameter(chosen, "host"),
            proto: parameter(chosen, "proto"),
        }
    }

    /// `X-Forwarded-For` / `-Host` / `-Proto`.
    fn legacy(headers: &HeaderMap, proxies: &TrustedProxies) -> Self {
        let list = |name| header_list(headers, name);
        let addresses = list("x-forwarded-for");
        // How far from the right the walk over the addresses ends.
        let from_right =
            nearest_index(&addresses, ip_of, proxies).map_or(0, |at| addresses.len() - 1 - at);
        let pick = |values: Vec<&str>| -> Option<String> {
            let at = if values.len() == addresses.len() {
                values.len().checked_sub(1 + from_right)?
            } else {
                values.len().checked_sub(1)?
            };
            Some(values[at].to_string()).filter(|v| !v.is_empty())
        };
        Self {
            host: pick(list("x-forwarded-host")),
            proto: pick(list("x-forwarded-proto")),
        }
    }
}

/// The element the walk of RFC 7239 §7.4 ends on: from the right, past
/// each element whose sender (`sender`) is a trusted proxy.
fn nearest<'a>(
    elements: &[&'a str],
    sender: impl Fn(&str) -> Option<IpAddr>,
    proxies: &TrustedProxies,
) -> Option<&'a str> {
    nearest_index(elements, sender, proxies).map(|at| elements[at])
}

fn nearest_index(
    elements: &[&str],
    sender: impl Fn(&str) -> Option<IpAddr>,
    proxies: &TrustedProxies,
) -> Option<usize> {
    let mut at = elements.len().checked_sub(1)?;
    while at > 0 && sender(elements[at]).is_some_and(|ip| proxies.trusts(ip)) {
        at -= 1;
    }
    Some(at)
}

/// The value of `key=value` in one `Forwarded` element, unquoted.
fn parameter(element: &str, key: &str) -> Option<String> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The address of a `for=` value or `X-Forwarded-For` entry: `192.0.2.1`,
/// `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`; `None` for
/// `unknown`, obfuscated names and anything else.
fn ip_of(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    text.split_once(':')?.0.parse().ok()
}

/// `name[:port]` or `[v6]:port`: DNS characters or an IP literal, a numeric
/// port; no user info, path, spaces or anything else a URL would treat specially.
fn valid_authority(text: &str) -> bool {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        if literal.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return false,
            },
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(text), None),
        }
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.len() <= 253
            && !h.starts_with(['.', '-'])
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    });
    port_ok && host_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for good in [
            "mirror.example.com",
            "mirror.example.com:8080",
            "127.0.0.1:3000",
            "localhost",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(valid_authority(good), "{good}");
        }
        for bad in [
            "",
            "attacker.example@mirror",
            "a.example.com/path",
            "a.example.com:",
            "a.example.com:99999",
            "a.example.com:80:80",
            "javascript:alert(1)",
            "a b",
            "[::1",
            "[not-v6]:80",
            "-bad.example.com",
            "host\"quote",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("mirror.example.com:8080"), "mirror.example.com");
        assert_eq!(host_name("mirror.example.com"), "mirror.example.com");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(
            host_of_url("https://MIRROR.example.com:8443/base").as_deref(),
            Some("mirror.example.com")
        );
        assert_eq!(host_of_url("http://[::1]:3000").as_deref(), Some("[::1]"));
    }

    #[test]
    fn forwarding_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        for (text, expected) in [
            ("192.0.2.1", ip("192.0.2.1")),
            ("192.0.2.1:4711", ip("192.0.2.1")),
            ("2001:db8::1", ip("2001:db8::1")),
            ("[2001:db8::1]:4711", ip("2001:db8::1")),
            ("[2001:db8::1]", ip("2001:db8::1")),
            ("unknown", None),
            ("_hidden", None),
        ] {
            assert_eq!(ip_of(text), expected, "{text}");
        }
    }

    /// What `Forwarded::from_headers` makes of these headers, with the
    /// loopback block as the trusted proxies.
    fn forwarded(headers: &[(&'static str, &'static str)]) -> Result<Forwarded, ApiError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                header::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let proxies = TrustedProxies::parse("127.0.0.0/8, ::1").unwrap();
        Forwarded::from_headers(&map, &proxies)
    }

    fn host(headers: &[(&'static str, &'static str)]) -> Option<String> {
        forwarded(headers).ok().and_then(|f| f.host)
    }

    #[test]
    fn the_nearest_untrusted_hop_of_forwarded_counts() {
        let f = forwarded(&[(
            "forwarded",
            "host=evil.example;proto=http, for=\"192.0.2.1:555\";host=\"m.example.com\";proto=https",
        )])
        .unwrap();
        assert_eq!(f.host.as_deref(), Some("m.example.com"));
        assert_eq!(f.proto.as_deref(), Some("https"));
        // Past trusted hops (IPv4 and bracketed IPv6), not past the first other one.
        let chain = "for=10.0.0.1;host=evil.example, for=192.0.2.1;host=m.example.com, \
                     for=127.0.0.2;host=inner, for=\"[::1]\";host=inner2";
        assert_eq!(
            host(&[("forwarded", chain)]).as_deref(),
            Some("m.example.com")
        );
        // Every hop trusted: the leftmost, which a trusted proxy wrote.
        assert_eq!(
            host(&[(
                "forwarded",
                "for=127.0.0.3;host=m.example.com, for=127.0.0.2;host=x"
            )])
            .as_deref(),
            Some("m.example.com")
        );
        // An unknown or obfuscated sender ends the walk.
        assert_eq!(
            host(&[(
                "forwarded",
                "host=evil.example, for=unknown;host=m.example.com"
            )])
            .as_deref(),
            Some("m.example.com")
        );
        // The nearest proxy names no host: none, whatever the client's elements say.
        assert_eq!(
            host(&[("forwarded", "host=evil.example, for=192.0.2.1")]),
            None
        );
        // Separate header lines are one list.
        assert_eq!(
            host(&[
                ("forwarded", "host=evil.example"),
                ("forwarded", "for=192.0.2.1;host=m.example.com"),
            ])
            .as_deref(),
            Some("m.example.com")
        );
    }

    #[test]
    fn x_forwarded_lists_follow_x_forwarded_for() {
        let appended = [
            ("x-forwarded-for", "127.0.0.9, 192.0.2.1, 127.0.0.2"),
            (
                "x-forwarded-host",
                "evil.example, m.example.com, inner.example",
            ),
            ("x-forwarded-proto", "http, https, http"),
        ];
        let f = forwarded(&appended).unwrap();
        assert_eq!(f.host.as_deref(), Some("m.example.com"));
        assert_eq!(f.proto.as_deref(), Some("https"));
        // Lists of other lengths: only the last entry, the peer's.
        let set = [
            ("x-forwarded-for", "127.0.0.9, 192.0.2.1"),
            ("x-forwarded-host", "m.example.com"),
        ];
        assert_eq!(host(&set).as_deref(), Some("m.example.com"));
        let without_for = [("x-forwarded-host", "evil.example, m.example.com")];
        assert_eq!(host(&without_for).as_deref(), Some("m.example.com"));
        assert_eq!(forwarded(&[]).unwrap(), Forwarded::default());
    }

    #[test]
    fn the_forwarded_client_comes_only_from_a_trusted_peer() {
        let proxies = TrustedProxies::parse("127.0.0.0/8").unwrap();
        let request = |peer: &str, headers: &[(&str, &str)]| {
            let mut req = actix_web::test::TestRequest::default().peer_addr(peer.parse().unwrap());
            for (name, value) in headers {
                req = req.insert_header((*name, *value));
            }
            req.to_http_request()
        };
        let client = |peer, headers| forwarded_client(&request(peer, headers), &proxies);
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        let chain = [("x-forwarded-for", "192.0.2.9, 203.0.113.5, 127.0.0.2")];
        assert_eq!(client("127.0.0.1:9", &chain), ip("203.0.113.5"));
        assert_eq!(client("192.0.2.1:9", &chain), None);
        let standard = [
            ("forwarded", "for=198.51.100.4;host=m.example.com"),
            ("x-forwarded-for", "203.0.113.5"),
        ];
        assert_eq!(client("127.0.0.1:9", &standard), ip("198.51.100.4"));
        assert_eq!(
            client("127.0.0.1:9", &[("x-forwarded-for", "unknown")]),
            None
        );
        assert_eq!(client("127.0.0.1:9", &[]), None);
    }

    #[test]
    fn both_kinds_must_agree() {
        let agreeing = [
            ("forwarded", "for=192.0.2.1;host=M.example.com;proto=https"),
            ("x-forwarded-host", "m.example.com"),
        ];
        let f = forwarded(&agreeing).unwrap();
        assert_eq!(f.host.as_deref(), Some("M.example.com"));
        assert_eq!(f.proto.as_deref(), Some("https"));
        for disagreeing in [
            [
                ("forwarded", "host=evil.example"),
                ("x-forwarded-host", "m.example.com"),
            ],
            [
                ("forwarded", "for=192.0.2.1;proto=https"),
                ("x-forwarded-proto", "http"),
            ],
        ] {
            assert!(forwarded(&disagreeing).is_err(), "{disagreeing:?}");
        }
    }
}
