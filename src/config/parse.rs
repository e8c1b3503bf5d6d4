//! Parsers for single setting values: each checks one text and says in one
//! line what it expected; the caller adds the key and where the value came from.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::LogFormat;
use crate::auth::{parse_token_hash, TokenSet};

/// `storage`: `None` for local, else the S3 bucket and key prefix.
pub type StorageLocation = Option<(String, String)>;

pub fn parse_text(value: &str) -> Result<String, String> {
    Ok(value.to_string())
}

pub fn parse_path(value: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(value))
}

pub fn parse_data_dir(value: &str) -> Result<PathBuf, String> {
    if value.is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(PathBuf::from(value))
    }
}

/// `127.0.0.1:8080`, `[::1]:8080`, `localhost:8080` (resolved now, first
/// address) or a bare `8080`, which means loopback like the default: a mirror
/// reachable from other machines should be asked for by its address.
pub fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    let value = value.trim();
    if let Ok(port) = value.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let expected = || "expected ADDRESS:PORT, HOST:PORT or a port".to_string();
    let (host, port) = value.rsplit_once(':').ok_or_else(expected)?;
    let port: u16 = port.parse().map_err(|_| expected())?;
    if host.is_empty() {
        return Err(expected());
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?} has no address"))
}

/// An http(s) base URL, returned with a trailing `/`.
pub fn parse_base_url(value: &str) -> Result<String, String> {
    // Without `://`, `registry.example.com/index/` is a relative URL and
    // `localhost:8080/index/` one with the scheme `localhost`: both mean a
    // forgotten scheme.
    if !value.contains("://") {
        return Err(format!(
            "no scheme: expected an http:// or https:// URL, e.g. \"https://{value}\""
        ));
    }
    let url = reqwest::Url::parse(value).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http:// or https:// URL".to_string());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".to_string());
    }
    let mut text = url.to_string();
    if !text.ends_with('/') {
        text.push('/');
    }
    Ok(text)
}

pub fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected `text` or `json`".to_string()),
    }
}

/// `local` or `s3://BUCKET[/PREFIX]`.
pub fn parse_storage(value: &str) -> Result<StorageLocation, String> {
    if value == "local" {
        return Ok(None);
    }
    let rest = value
        .strip_prefix("s3://")
        .ok_or_else(|| "expected `local` or `s3://BUCKET[/PREFIX]`".to_string())?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return Err(format!("invalid bucket name {bucket:?}"));
    }
    Ok(Some((
        bucket.to_string(),
        prefix.trim_matches('/').to_string(),
    )))
}

pub fn parse_token_hashes(value: &str) -> Result<TokenSet, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(parse_token_hash)
        .collect::<Result<Vec<_>, _>>()
        .map(TokenSet::new)
}

/// `min-release-age`: `72h`, `3d`, `0` (off); see `policy::parse_min_release_age`.
pub fn parse_release_age(value: &str) -> Result<Duration, String> {
    crate::policy::parse_min_release_age(value)
}

/// `min-release-age-mode`: `yank` or `hide`.
pub fn parse_cooldown_mode(value: &str) -> Result<crate::policy::CooldownMode, String> {
    crate::policy::CooldownMode::parse(value)
}

/// `release-age-exempt` and `deny`: entries `name` or `name@requirement`
/// separated by `;`, since a requirement itself may hold commas
/// (`foo@>=1, <2; evil-crate`). One syntax for flag, environment and file.
pub fn parse_crate_rules(value: &str) -> Result<Vec<crate::policy::CrateRule>, String> {
    value
        .split(';')
        .filter(|entry| !entry.trim().is_empty())
        .map(crate::policy::CrateRule::parse)
        .collect()
}

/// `a.example.com, b.example.com:8443` → lowercase host names (with a port when given).
pub fn parse_hosts(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|host| {
            let url = reqwest::Url::parse(&format!("http://{host}/"))
                .map_err(|_| format!("{host:?} is not a host name"))?;
            match url.host_str() {
                Some(h) if url.path() == "/" && url.username().is_empty() => Ok(match url.port() {
                    Some(port) => format!("{h}:{port}"),
                    None => h.to_string(),
                }),
                _ => Err(format!("{host:?} is not a host name")),
            }
        })
        .collect()
}

pub fn parse_count(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a positive whole number".to_string()),
    }
}

pub fn parse_count_u32(value: &str) -> Result<u32, String> {
    u32::try_from(parse_count(value)?).map_err(|e| e.to_string())
}

/// An on/off setting, the same words from every layer: a flag's value (a
/// bare flag gives `true`), the environment and the config file (where a
/// TOML `true` arrives as the text `true`). Empty is off, as an environment
/// variable set to nothing usually means.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" | "" => Ok(false),
        _ => Err("expected true/false, on/off, yes/no or 1/0".to_string()),
    }
}

/// Still a known key so that existing configurations keep working, but cargo
/// never resolves a dependency's dev-dependencies: following them could only
/// waste upstream requests.
pub fn parse_no_dev_dependencies(value: &str) -> Result<(), String> {
    match parse_bool(value)? {
        false => Ok(()),
        true => Err("cargo never asks for dependencies' dev-dependencies".to_string()),
    }
}

/// A whole number of `unit`s (named in the error), made a duration by `make`.
fn parse_whole(value: &str, make: fn(u64) -> Duration, unit: &str) -> Result<Duration, String> {
    value
        .trim()
        .parse::<u64>()
        .map(make)
        .map_err(|_| format!("expected a whole number of {unit}"))
}

pub fn parse_seconds(value: &str) -> Result<Duration, String> {
    parse_whole(value, Duration::from_secs, "seconds")
}

pub fn parse_millis(value: &str) -> Result<Duration, String> {
    parse_whole(value, Duration::from_millis, "milliseconds")
}

pub fn parse_positive_seconds(value: &str) -> Result<Duration, String> {
    match parse_seconds(value)? {
        d if d.is_zero() => Err("must be at least 1 second".to_string()),
        d => Ok(d),
    }
}

/// Parses `1048576`, `512KiB`, `256MiB`, `2GiB` (also `KB`/`MB`/`GB`, decimal).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| "expected a size like 256MiB".to_string())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        other => return Err(format!("unknown unit {other:?}")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| "too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_rules_are_separated_by_semicolons_and_keep_their_commas() {
        let rules = parse_crate_rules(" foo@>=1, <2 ;evil-crate; ").unwrap();
        let texts: Vec<&str> = rules.iter().map(|r| r.as_str()).collect();
        assert_eq!(texts, ["foo@>=1, <2", "evil-crate"]);
        assert!(parse_crate_rules("").unwrap().is_empty());
        assert_eq!(
            parse_crate_rules("foo;1bad").unwrap_err(),
            "\"1bad\" is not a crate name"
        );
        assert_eq!(parse_release_age("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert!(parse_release_age("72").is_err());
        assert_eq!(
            parse_cooldown_mode("hide"),
            Ok(crate::policy::CooldownMode::Hide)
        );
        assert!(parse_cooldown_mode("drop").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("2KiB").unwrap(), 2048);
        assert_eq!(parse_size("50GiB").unwrap(), 50 << 30);
        assert_eq!(parse_size("3MB").unwrap(), 3_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1XB").is_err());
    }

    #[test]
    fn booleans_take_the_same_words_everywhere() {
        for on in ["true", "on", "yes", "1", "TRUE", "On", " yes "] {
            assert_eq!(parse_bool(on), Ok(true), "{on}");
        }
        for off in ["false", "off", "no", "0", "", "OFF"] {
            assert_eq!(parse_bool(off), Ok(false), "{off}");
        }
        assert_eq!(
            parse_bool("maybe").unwrap_err(),
            "expected true/false, on/off, yes/no or 1/0"
        );
    }

    #[test]
    fn negative_numbers_say_what_is_expected() {
        assert_eq!(
            parse_seconds("-1").unwrap_err(),
            "expected a whole number of seconds"
        );
        assert_eq!(
            parse_count("-1").unwrap_err(),
            "expected a positive whole number"
        );
    }

    #[test]
    fn listen_takes_addresses_host_names_and_bare_ports() {
        assert_eq!(
            parse_listen("0.0.0.0:8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert_eq!(
            parse_listen("8091").unwrap(),
            "127.0.0.1:8091".parse().unwrap()
        );
        let resolved = parse_listen("localhost:8091").unwrap();
        assert!(resolved.ip().is_loopback(), "{resolved}");
        assert_eq!(resolved.port(), 8091);
        for wrong in [
            "nowhere",
            ":80",
            "localhost:http",
            "70000",
            "localhost:70000",
        ] {
            assert!(parse_listen(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn a_url_without_a_scheme_suggests_https() {
        for value in ["registry.example.com/index/", "localhost:8080/index/"] {
            let err = parse_base_url(value).unwrap_err();
            assert!(err.contains(&format!("\"https://{value}\"")), "{err}");
        }
        assert!(parse_base_url("ftp://x.example.com/").is_err());
        assert_eq!(
            parse_base_url("http://x.example.com/index").unwrap(),
            "http://x.example.com/index/"
        );
    }
}
