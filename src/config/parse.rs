//! Parsers for single setting values: each checks one text and says in one
//! line what it expected; the caller adds the key and where the value came from.

use std::net::SocketAddr;
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

pub fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| "expected ADDRESS:PORT".to_string())
}

/// An http(s) base URL, returned with a trailing `/`.
pub fn parse_base_url(value: &str) -> Result<String, String> {
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

pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false".to_string()),
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

pub fn parse_seconds(value: &str) -> Result<Duration, String> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| "expected a whole number of seconds".to_string())
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
    fn sizes_parse() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("2KiB").unwrap(), 2048);
        assert_eq!(parse_size("50GiB").unwrap(), 50 << 30);
        assert_eq!(parse_size("3MB").unwrap(), 3_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1XB").is_err());
    }
}
