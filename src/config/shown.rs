//! The settings in use as an operator may see them (the dashboard's settings
//! list): every setting's value and where it came from, secrets hidden and
//! any user name or password in a URL masked.

use super::defs::SETTINGS;
use super::layers::{RawSettings, Source};

/// Shown in place of a secret's value.
pub const HIDDEN: &str = "(set, hidden)";

/// One setting as shown.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShownSetting {
    pub key: &'static str,
    /// The value in use; for a setting without one, what the mirror does
    /// then (`one per CPU`).
    pub value: String,
    /// `command line`, `environment variable NAME`, `config file PATH` or `default`.
    pub source: String,
}

impl RawSettings {
    /// Every setting, in `--help` order.
    pub fn shown(&self) -> Vec<ShownSetting> {
        SETTINGS
            .iter()
            .map(|setting| {
                let about = setting.about();
                let (value, source) = match self.text(about) {
                    Some((value, source)) => {
                        let shown = if about.secret {
                            HIDDEN.to_string()
                        } else {
                            mask_userinfo(value)
                        };
                        (shown, source)
                    }
                    None => (about.fallback_text().to_string(), Source::Default),
                };
                let source = match source {
                    Source::Default => "default".to_string(),
                    given => given.to_string(),
                };
                ShownSetting {
                    key: about.key,
                    value,
                    source,
                }
            })
            .collect()
    }
}

/// `scheme://user:password@host/...` as `scheme://***@host/...`: a URL's
/// user information is a credential, whole or in part. Text that is not
/// such a URL comes back as it is.
pub fn mask_userinfo(text: &str) -> String {
    let Some(scheme_end) = text.find("://").map(|at| at + 3) else {
        return text.to_string();
    };
    let rest = &text[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..scheme_end], &rest[at..]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_masked_and_nothing_else_changes() {
        assert_eq!(
            mask_userinfo("http://ops:s3cret@upstream.example.com:8080/index/"),
            "http://***@upstream.example.com:8080/index/"
        );
        assert_eq!(
            mask_userinfo("https://token@example.com/"),
            "https://***@example.com/"
        );
        // An @ in the path is not user information.
        assert_eq!(
            mask_userinfo("http://127.0.0.1:8080/a@b"),
            "http://127.0.0.1:8080/a@b"
        );
        assert_eq!(mask_userinfo("s3://bucket/prefix"), "s3://bucket/prefix");
        assert_eq!(mask_userinfo("60"), "60");
    }

    #[test]
    fn every_setting_is_shown_with_its_source_and_secrets_are_hidden() {
        let secret = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let env = |name: &str| match name {
            "AWS_SECRET_ACCESS_KEY" => Some("very-secret-key".to_string()),
            "CRATE_MIRROR_INDEX_TTL" => Some("5".to_string()),
            _ => None,
        };
        let flags = [
            (
                "upstream",
                "http://ops:s3cret@upstream.example.com/index/".to_string(),
            ),
            ("metrics-tokens", secret.to_string()),
        ];
        let raw = RawSettings::from_layers(&flags, None, env).unwrap();
        let shown = raw.shown();
        assert_eq!(shown.len(), SETTINGS.len());
        let find = |key: &str| shown.iter().find(|s| s.key == key).unwrap().clone();
        assert_eq!(
            find("upstream"),
            ShownSetting {
                key: "upstream",
                value: "http://***@upstream.example.com/index/".into(),
                source: "command line".into(),
            }
        );
        assert_eq!(find("metrics-tokens").value, HIDDEN);
        assert_eq!(find("aws-secret-access-key").value, HIDDEN);
        assert_eq!(
            find("aws-secret-access-key").source,
            "environment variable AWS_SECRET_ACCESS_KEY"
        );
        assert_eq!(find("index-ttl").value, "5");
        assert_eq!(find("negative-ttl").value, "30");
        assert_eq!(find("negative-ttl").source, "default");
        assert_eq!(find("workers").value, "one per CPU");
        let all = format!("{shown:?}");
        for leak in ["s3cret", "very-secret-key", "0123456789abcdef"] {
            assert!(!all.contains(leak), "{leak} shown in {all}");
        }
    }
}
