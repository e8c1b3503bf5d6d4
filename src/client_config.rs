//! The cargo configuration the dashboard shows for this mirror, as a user
//! pastes it into `~/.cargo/config.toml`. A public mirror replaces crates-io
//! with a plain source. A private one must be a named registry instead, with
//! a credential provider: cargo refuses to send a token to a registry that
//! has none ("authenticated registries require a credential-provider to be
//! configured"); the user then gives it the token with `cargo login
//! --registry` or the registry's token variable.

/// The name the snippet gives the mirror (a source or a registry).
pub const NAME: &str = "mirror";

/// What the dashboard shows a user of this mirror.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientConfig {
    /// The sparse index URL, ending in `/`.
    pub index_url: String,
    pub private: bool,
    /// The text for `config.toml`, as pasted.
    pub config_toml: String,
    /// How to store the token (private only).
    pub login_command: Option<String>,
    /// The variable that gives cargo the token instead (private only).
    pub token_env: Option<String>,
}

/// The configuration for a mirror whose index is at `index_url`.
pub fn for_mirror(index_url: &str, private: bool) -> ClientConfig {
    let registry = toml_string(&format!("sparse+{index_url}"));
    let config_toml = if private {
        format!(
            "[source.crates-io]\nreplace-with = \"{NAME}\"\n\n\
             [registries.{NAME}]\nindex = {registry}\n\
             credential-provider = [\"cargo:token\"]\n"
        )
    } else {
        format!(
            "[source.crates-io]\nreplace-with = \"{NAME}\"\n\n\
             [source.{NAME}]\nregistry = {registry}\n"
        )
    };
    ClientConfig {
        index_url: index_url.to_string(),
        private,
        config_toml,
        login_command: private.then(|| format!("cargo login --registry {NAME}")),
        token_env: private.then(|| format!("CARGO_REGISTRIES_{}_TOKEN", NAME.to_uppercase())),
    }
}

/// `text` as a TOML basic string. The URL comes from a validated setting
/// or host, but a quote in it must still not end the string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_mirror_is_a_source() {
        let config = for_mirror("http://127.0.0.1:8080/index/", false);
        assert_eq!(
            config.config_toml,
            "[source.crates-io]\nreplace-with = \"mirror\"\n\n[source.mirror]\nregistry = \"sparse+http://127.0.0.1:8080/index/\"\n"
        );
        assert_eq!((config.login_command, config.token_env), (None, None));
    }

    #[test]
    fn a_private_mirror_is_a_registry_with_a_credential_provider() {
        let config = for_mirror("https://mirror.example.com/index/", true);
        let parsed: toml::Table = config.config_toml.parse().unwrap();
        assert_eq!(
            parsed["source"]["crates-io"]["replace-with"].as_str(),
            Some("mirror")
        );
        let registry = &parsed["registries"]["mirror"];
        assert_eq!(
            registry["index"].as_str(),
            Some("sparse+https://mirror.example.com/index/")
        );
        assert_eq!(
            registry["credential-provider"].as_array().unwrap()[0].as_str(),
            Some("cargo:token")
        );
        assert_eq!(
            config.login_command.as_deref(),
            Some("cargo login --registry mirror")
        );
        assert_eq!(
            config.token_env.as_deref(),
            Some("CARGO_REGISTRIES_MIRROR_TOKEN")
        );
    }

    #[test]
    fn a_quote_cannot_end_the_string() {
        let config = for_mirror("http://mirror.example.com/\"\n[evil]", false);
        let parsed: toml::Table = config.config_toml.parse().unwrap();
        assert!(!parsed.contains_key("evil"));
        assert_eq!(
            parsed["source"]["mirror"]["registry"].as_str(),
            Some("sparse+http://mirror.example.com/\"\n[evil]")
        );
    }
}
