//! What the dashboard tells an operator about the running mirror besides its
//! figures, fixed at start: the upstream (user information masked), the
//! version, public or private, the storage, and every setting in use
//! (secrets hidden; see `config::ShownSetting`).

use crate::config::{mask_userinfo, Config, ShownSetting};

pub struct OperatorInfo {
    upstream: String,
    public_url: Option<String>,
    private: bool,
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
            storage: config.storage.to_string(),
            settings: config.shown.clone(),
        }
    }

    /// The mirror as `/api/stats` describes it (uptime is among the figures).
    pub fn mirror(&self) -> serde_json::Value {
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "upstream": self.upstream,
            "public_url": self.public_url,
            "mode": if self.private { "private" } else { "public" },
            "storage": self.storage,
        })
    }

    /// `/api/settings`: every setting, its value in use and where it came from.
    pub fn settings(&self) -> serde_json::Value {
        serde_json::json!({ "settings": self.settings })
    }
}
