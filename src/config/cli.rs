//! The settings as command-line flags: one clap argument per definition, for
//! each subcommand only the settings it uses (`defs::About::commands`), so
//! that its `--help` lists those and a flag it would ignore is refused.

use std::marker::PhantomData;
use std::path::PathBuf;

use clap::{Arg, ArgMatches};

use super::defs::{About, CommandName, Fallback, Kind, CONFIG_FILE, SETTINGS};
use super::layers::{unknown_env_vars, RawSettings};
use super::{Config, ConfigError};

/// A subcommand that takes settings, as a type: `SettingsArgs<for_command::Gc>`.
pub trait SettingsCommand {
    const NAME: CommandName;
    /// Whether it takes operands (`import FILE`): there a bool flag's value
    /// must be joined with `=`, so `--aws-allow-http bundle.tar.gz` leaves
    /// the bundle an operand.
    const TAKES_OPERANDS: bool = false;
}

/// The marker types of [`SettingsCommand`].
pub mod for_command {
    use super::{CommandName, SettingsCommand};

    macro_rules! commands {
        ($($name:ident $(, operands: $operands:expr)?;)*) => {$(
            #[derive(Debug, Clone, Copy, Default)]
            pub struct $name;
            impl SettingsCommand for $name {
                const NAME: CommandName = CommandName::$name;
                $(const TAKES_OPERANDS: bool = $operands;)?
            }
        )*};
    }

    commands! {
        Serve;
        Verify;
        Gc;
        Export;
        Import, operands: true;
    }
}

/// The settings flags that were given to command `C`; every other setting
/// falls through to the environment (`CRATE_MIRROR_<KEY>`), the config file
/// and the defaults.
#[derive(Debug, Clone, Default)]
pub struct SettingsArgs<C> {
    config_file: Option<PathBuf>,
    flags: Vec<(&'static str, String)>,
    command: PhantomData<C>,
}

/// The settings `command` takes as flags.
fn flags_of(command: CommandName) -> impl Iterator<Item = &'static About> {
    SETTINGS
        .iter()
        .map(|s| s.about())
        .filter(move |about| about.commands.contains(command))
}

/// The clap argument for one setting.
fn arg<C: SettingsCommand>(about: &'static About) -> Arg {
    let help = match about.fallback {
        Fallback::Required => format!("{} (required)", about.help),
        Fallback::Value(_) | Fallback::Absent(_) => {
            format!("{} [default: {}]", about.help, about.fallback_text())
        }
    };
    let arg = Arg::new(about.key)
        .long(about.key)
        .value_name(about.value_name)
        .help(help);
    match about.kind {
        Kind::Value => arg
            // So `--index-ttl -1` reaches our parser, which says what is
            // expected, instead of clap's "unexpected argument".
            .allow_negative_numbers(true),
        Kind::Bool => arg
            .num_args(0..=1)
            .default_missing_value("true")
            .require_equals(C::TAKES_OPERANDS),
    }
}

impl<C: SettingsCommand> clap::Args for SettingsArgs<C> {
    fn augment_args(command: clap::Command) -> clap::Command {
        let about = &CONFIG_FILE.about;
        let config = Arg::new(about.key)
            .long(about.key)
            .value_name(about.value_name)
            .value_parser(clap::value_parser!(PathBuf))
            .help(format!("{} (also {})", about.help, about.env_var()));
        command.arg(config).args(flags_of(C::NAME).map(arg::<C>))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

impl<C: SettingsCommand> clap::FromArgMatches for SettingsArgs<C> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = flags_of(C::NAME)
            .filter_map(|about| {
                matches
                    .get_one::<String>(about.key)
                    .map(|value| (about.key, value.clone()))
            })
            .collect();
        Ok(SettingsArgs {
            config_file: matches.get_one::<PathBuf>(CONFIG_FILE.about.key).cloned(),
            flags,
            command: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<C> SettingsArgs<C> {
    /// The layered raw settings (flags, this process's environment, config file).
    pub fn raw(&self) -> Result<RawSettings, ConfigError> {
        RawSettings::from_layers(&self.flags, self.config_file.as_deref(), |var| {
            std::env::var(var).ok()
        })
    }

    pub fn config(&self) -> Result<Config, ConfigError> {
        self.raw()?.build()
    }
}

/// Warnings about this process's environment: `CRATE_MIRROR_*` variables
/// that are no setting.
pub fn env_warnings() -> Vec<String> {
    unknown_env_vars(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()))
}
