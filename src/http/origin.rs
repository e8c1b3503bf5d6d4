//! The mirror's base URL as a client sees it, for `config.json`'s `dl` and the
//! dashboard's snippet. With `public-url` set that is the setting, and nothing a
//! client sends matters. Without it the URL comes from the request, and a
//! client could otherwise make the `dl` that a shared cache then hands everyone
//! (and that cargo sends its token to) point anywhere; so:
//! - `Forwarded` / `X-Forwarded-Host` / `X-Forwarded-Proto` count only when the
//!   connection comes from a `trusted-proxies` address;
//! - the host must be a plain host name or IP literal with an optional port, and
//!   the scheme `http` or `https`; anything else is a 400;
//! - the response says which headers it depended on (`Vary`).

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::HttpRequest;

use super::ApiError;
use crate::AppState;

/// A base URL and the `Vary` value for a response whose body contains it.
pub struct Origin {
    /// `scheme://host[:port]`, no trailing slash.
    pub base: String,
    pub vary: HeaderValue,
}

const VARY_NOTHING: HeaderValue = HeaderValue::from_static("Accept-Encoding");
const VARY_HOST: HeaderValue = HeaderValue::from_static("Host");
const VARY_FORWARDED: HeaderValue =
    HeaderValue::from_static("Host, Forwarded, X-Forwarded-Host, X-Forwarded-Proto");

pub fn public_base(req: &HttpRequest, state: &AppState) -> Result<Origin, ApiError> {
    if let Some(url) = &state.facing.public_url {
        return Ok(Origin {
            base: url.clone(),
            vary: VARY_NOTHING,
        });
    }
    let trusted = !state.facing.trusted_proxies.is_empty()
        && req
            .peer_addr()
            .is_some_and(|peer| state.facing.trusted_proxies.trusts(peer.ip()));
    let headers = req.headers();
    let forwarded = if trusted {
        Forwarded::from_headers(headers)
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
    let scheme = match forwarded.proto {
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
        base: format!("{scheme}://{}", host.to_ascii_lowercase()),
        vary: if trusted { VARY_FORWARDED } else { VARY_HOST },
    })
}

/// What a trusted proxy says about the client's view: the first (client-side)
/// element of `Forwarded`, else the first `X-Forwarded-Host` / `-Proto` value.
#[derive(Debug, Default, PartialEq, Eq)]
struct Forwarded {
    host: Option<String>,
    proto: Option<String>,
}

impl Forwarded {
    fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(value) = text("forwarded") {
            let first = value.split(',').next().unwrap_or("");
            let mut found = Forwarded::default();
            for pair in first.split(';') {
                let Some((key, value)) = pair.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"').to_string();
                match key.trim().to_ascii_lowercase().as_str() {
                    "host" => found.host = Some(value),
                    "proto" => found.proto = Some(value),
                    _ => {}
                }
            }
            if found != Forwarded::default() {
                return found;
            }
        }
        let first = |name| {
            text(name)
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_string())
        };
        Forwarded {
            host: first("x-forwarded-host"),
            proto: first("x-forwarded-proto"),
        }
    }
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

    /// What `Forwarded::from_headers` makes of these headers.
    fn forwarded(headers: &[(&'static str, &'static str)]) -> Forwarded {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                header::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        Forwarded::from_headers(&map)
    }

    #[test]
    fn forwarded_headers() {
        // `Forwarded` wins over `X-Forwarded-Host`; of a list, the first counts.
        let standard = [
            (
                "forwarded",
                "for=10.0.0.1;host=\"m.example.com\";proto=https, for=10.0.0.2;host=x",
            ),
            ("x-forwarded-host", "ignored.example.com"),
        ];
        let legacy = [
            ("x-forwarded-host", "a.example.com, b.example.com"),
            ("x-forwarded-proto", "https"),
        ];
        for (headers, host) in [(&standard, "m.example.com"), (&legacy, "a.example.com")] {
            let f = forwarded(headers);
            assert_eq!(f.host.as_deref(), Some(host), "{headers:?}");
            assert_eq!(f.proto.as_deref(), Some("https"), "{headers:?}");
        }
        assert_eq!(forwarded(&[]), Forwarded::default());
    }
}
