//! The layers a setting's text comes from: flag > environment
//! (`CRATE_MIRROR_<KEY>`) > config file (TOML) > default.
//!
//! Every layer is kept as text and parsed once, by the setting's own parser,
//! so that a wrong value always produces the same one-line error naming the
//! key and where it came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::defs::{self, About, Fallback, Setting, CONFIG_FILE, ENV_PREFIX, SETTINGS};
use super::ConfigError;

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(String),
    File(PathBuf),
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => write!(f, "command line"),
            Source::Env(var) => write!(f, "environment variable {var}"),
            Source::File(path) => write!(f, "config file {}", path.display()),
            Source::Default => write!(f, "the default"),
        }
    }
}

/// Raw values as text, keyed by setting name, each with its source.
#[derive(Debug, Default, Clone)]
pub struct RawSettings {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl RawSettings {
    /// Sets `key` unless a higher layer already did.
    fn offer(&mut self, key: &'static str, value: String, source: Source) {
        self.values.entry(key).or_insert((value, source));
    }

    /// `flags` holds only the flags that were given, by key. The config file is
    /// `config_file` (the `--config` flag) or else named by the environment.
    pub fn from_layers(
        flags: &[(&'static str, String)],
        config_file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut raw = RawSettings::default();
        for (key, value) in flags {
            raw.offer(key, value.clone(), Source::Flag);
        }
        for setting in SETTINGS {
            let about = setting.about();
            let var = about.env_var();
            if let Some(value) = env(&var) {
                raw.offer(about.key, value, Source::Env(var));
            }
        }
        let config_file = config_file
            .map(Path::to_path_buf)
            .or_else(|| env(&CONFIG_FILE.about.env_var()).map(PathBuf::from));
        if let Some(path) = config_file {
            raw.merge_file(&path)?;
        }
        Ok(raw)
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let file_err = |reason: String| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_err(e.message().to_string()))?;
        for (key, value) in table {
            let Some(known) = defs::find(&key.replace('_', "-")) else {
                let closest = SETTINGS
                    .iter()
                    .map(|s| s.about().key)
                    .min_by_key(|known| edit_distance(&key, known))
                    .unwrap_or_default();
                return Err(ConfigError::UnknownKey {
                    key,
                    closest,
                    path: path.to_path_buf(),
                });
            };
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(n) => n.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                // A list of strings, as the `;`-separated text the list
                // settings (`deny`, `release-age-exempt`) read everywhere.
                toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
                    .iter()
                    .filter_map(toml::Value::as_str)
                    .collect::<Vec<_>>()
                    .join(";"),
                other => {
                    return Err(file_err(format!(
                        "`{key}` must be a string or a number, not {}",
                        other.type_str()
                    )))
                }
            };
            self.offer(known.key, text, Source::File(path.to_path_buf()));
        }
        Ok(())
    }

    /// The text `about` takes and its source, falling back to its default value.
    pub(super) fn text(&self, about: &'static About) -> Option<(&str, Source)> {
        debug_assert!(
            SETTINGS.iter().any(|s| std::ptr::eq(s.about(), about)),
            "`{}` is not in SETTINGS, so no layer can give it",
            about.key
        );
        match (self.values.get(about.key), about.fallback) {
            (Some((value, source)), _) => Some((value, source.clone())),
            (None, Fallback::Value(default)) => Some((default, Source::Default)),
            (None, Fallback::Absent(_) | Fallback::Required) => None,
        }
    }

    /// The parsed value of `setting`, or its default; `None` when it has neither.
    pub(super) fn get<T>(&self, setting: &'static Setting<T>) -> Result<Option<T>, ConfigError> {
        let Some((value, origin)) = self.text(&setting.about) else {
            return Ok(None);
        };
        (setting.parse)(value)
            .map(Some)
            .map_err(|reason| ConfigError::Invalid {
                key: setting.about.key,
                value: value.to_string(),
                origin,
                reason,
            })
    }

    /// Like [`get`](Self::get), for a setting with a default or one that is required.
    pub(super) fn value<T>(&self, setting: &'static Setting<T>) -> Result<T, ConfigError> {
        self.get(setting)?
            .ok_or(ConfigError::Missing(&setting.about))
    }

    /// An error for a value that parsed but does not fit the other settings.
    pub(super) fn invalid(&self, about: &'static About, reason: &str) -> ConfigError {
        let (value, origin) = self
            .text(about)
            .map_or((String::new(), Source::Default), |(value, source)| {
                (value.to_string(), source)
            });
        ConfigError::Invalid {
            key: about.key,
            value,
            origin,
            reason: reason.to_string(),
        }
    }
}

/// The token `crate-mirror warm` sends to a private mirror when `--token` is
/// not given: a client's token, not a setting of the server.
pub const WARM_TOKEN_ENV: &str = "CRATE_MIRROR_TOKEN";

/// One warning for each `CRATE_MIRROR_*` variable in `names` that is not a
/// setting (a typo would otherwise be ignored without a word), naming the
/// closest one.
pub fn unknown_env_vars(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let known: Vec<String> = SETTINGS
        .iter()
        .map(|s| s.about())
        .chain([&CONFIG_FILE.about])
        .map(About::env_var)
        .chain([WARM_TOKEN_ENV.to_string()])
        .collect();
    // Compared without the prefix, so `CRATE_MIRROR_AWS_REGION` finds `AWS_REGION`.
    let bare = |name: &str| name.strip_prefix(ENV_PREFIX).unwrap_or(name).to_string();
    names
        .into_iter()
        .filter(|name| name.starts_with(ENV_PREFIX) && !known.contains(name))
        .map(|name| {
            let closest = known
                .iter()
                .min_by_key(|candidate| edit_distance(&bare(&name), &bare(candidate)))
                .map_or("", String::as_str);
            format!(
                "unknown environment variable {name} is ignored; the closest setting is {closest}"
            )
        })
        .collect()
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("index-ttl", "index-ttl"), 0);
        assert_eq!(edit_distance("INDEX_TLL", "INDEX_TTL"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn unknown_mirror_variables_are_named_with_the_closest_setting() {
        let warnings = unknown_env_vars(
            [
                "CRATE_MIRROR_INDEX_TLL",
                "CRATE_MIRROR_CONFIG",
                "CRATE_MIRROR_UPSTREAM",
                "CRATE_MIRROR_AWS_REGION",
                "AWS_PROFILE",
                "PATH",
            ]
            .map(String::from),
        );
        assert_eq!(
            warnings,
            [
                "unknown environment variable CRATE_MIRROR_INDEX_TLL is ignored; the closest setting is CRATE_MIRROR_INDEX_TTL",
                "unknown environment variable CRATE_MIRROR_AWS_REGION is ignored; the closest setting is AWS_REGION",
            ]
        );
    }
}
