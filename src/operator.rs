//! What the dashboard tells an operator about the running mirror besides its
//! figures, fixed at start: the upstream (user information masked), the
//! version, public or private, the storage, and every setting in use
//! (secrets hidden; see `config::ShownSetting`), and whether a private
//! mirror's tokens travel in clear (also warned about at start).

use crate::config::{mask_userinfo, Config, ShownSetting};

pub struct OperatorInfo {
    upstream: String,
    public_url: Option<String>,
    private: bool,
    tokens_in_clear: bool,
    storage: String,
    settings: Vec<ShownSetting>,
}

impl OperatorInfo {
    pub fn from_config(config: &Config) -> Self {
        Self {
            upstream: if config.offline {
                "none (offline)".to_string()
            } else {
                mask_userinfo(&config.upstream)
            },
            public_url: config.public_url.as_deref().map(mask_userinfo),
            private: !config.auth_tokens.is_empty(),
            tokens_in_clear: tokens_in_clear(config),
            storage: config.storage.to_string(),
            settings: config.shown.clone(),
        }
    }

    /// The mirror as `/api/stats` describes it (uptime is among the figures).
    pub fn mirror(&self) -> serde_json::Value {
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "commit": env!("BUILD_COMMIT"),
            "upstream": self.upstream,
            "public_url": self.public_url,
            "mode": if self.private { "private" } else { "public" },
            "tokens_in_clear": self.tokens_in_clear,
            "storage": self.storage,
        })
    }

    /// `/api/settings`: every setting, its value in use and where it came from.
    pub fn settings(&self) -> serde_json::Value {
        serde_json::json!({ "settings": self.settings })
    }
}

/// Whether clients' tokens cross a network unencrypted: a private mirror
/// whose public URL (where cargo sends them) is plain http to a host
/// other than this machine's loopback. Loopback is not warned about: a token
/// sent there never leaves the machine (a mirror tried out locally, or one
/// only this machine's clients use).
pub fn tokens_in_clear(config: &Config) -> bool {
    let Some(public_url) = config.public_url.as_deref() else {
        return false;
    };
    if config.auth_tokens.is_empty() {
        return false;
    }
    let Ok(url) = reqwest::Url::parse(public_url) else {
        return false;
    };
    url.scheme() == "http" && !url.host_str().is_some_and(is_loopback)
}

/// `localhost` and its subdomains (RFC 6761), `127.0.0.0/8` and `::1`.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let name = bare.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_hosts_are_this_machine_only() {
        for host in [
            "localhost",
            "LOCALHOST.",
            "dev.localhost",
            "127.0.0.1",
            "127.9.9.9",
            "[::1]",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "mirror.example.com",
            "localhost.example.com",
            "10.0.0.1",
            "[::2]",
            "0.0.0.0",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
