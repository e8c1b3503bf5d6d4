//! The settings as command-line flags: one clap argument per definition, for
//! every subcommand that takes settings (`serve`, `verify`, `gc`).

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches};

use super::defs::{About, Fallback, Kind, CONFIG_FILE, SETTINGS};
use super::layers::{unknown_env_vars, RawSettings};
use super::{Config, ConfigError};

/// The settings flags that were given; every other setting falls through to
/// the environment (`CRATE_MIRROR_<KEY>`), the config file and the defaults.
#[derive(Debug, Clone, Default)]
pub struct SettingsArgs {
    config_file: Option<PathBuf>,
    flags: Vec<(&'static str, String)>,
}

/// The clap argument for one setting; `None` for those that have no flag.
fn arg(about: &'static About) -> Option<Arg> {
    let arg = Arg::new(about.key).long(about.key);
    match about.kind {
        Kind::Aws => None,
        Kind::Switch => Some(arg.action(ArgAction::SetTrue).help(about.help)),
        Kind::Value => {
            let help = match about.fallback {
                Fallback::Required => format!("{} (required)", about.help),
                Fallback::Value(_) | Fallback::Absent(_) => {
                    format!("{} [default: {}]", about.help, about.fallback_text())
                }
            };
            Some(
                arg.value_name(about.value_name)
                    .help(help)
                    // So `--index-ttl -1` reaches our parser, which says what
                    // is expected, instead of clap's "unexpected argument".
                    .allow_negative_numbers(true),
            )
        }
    }
}

impl clap::Args for SettingsArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        let config = arg(&CONFIG_FILE.about).map(|arg| {
            let about = &CONFIG_FILE.about;
            arg.value_parser(clap::value_parser!(PathBuf)).help(format!(
                "{} (also {})",
                about.help,
                about.env_var()
            ))
        });
        command
            .args(config)
            .args(SETTINGS.iter().filter_map(|s| arg(s.about())))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

impl clap::FromArgMatches for SettingsArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = SETTINGS
            .iter()
            .map(|s| s.about())
            .filter_map(|about| match about.kind {
                Kind::Value => matches
                    .get_one::<String>(about.key)
                    .map(|value| (about.key, value.clone())),
                Kind::Switch => matches
                    .get_flag(about.key)
                    .then(|| (about.key, "true".to_string())),
                Kind::Aws => None,
            })
            .collect();
        Ok(SettingsArgs {
            config_file: matches.get_one::<PathBuf>(CONFIG_FILE.about.key).cloned(),
            flags,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl SettingsArgs {
    /// The layered raw settings (flags, this process's environment, config file).
    pub fn raw(&self) -> Result<RawSettings, ConfigError> {
        RawSettings::from_layers(&self.flags, self.config_file.as_deref(), |var| {
            std::env::var(var).ok()
        })
    }

    pub fn config(&self) -> Result<Config, ConfigError> {
        self.raw()?.build()
    }

    /// Warnings about this process's environment: `CRATE_MIRROR_*` variables
    /// that are no setting.
    pub fn env_warnings() -> Vec<String> {
        unknown_env_vars(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()))
    }
}
