//! Every configuration key as a command-line flag, generated from the key
//! catalogue: `#[command(flatten)] config: ConfigArgs` gives a subcommand
//! `--config FILE` and one flag per key (`kafka.bootstrap_servers` is
//! `--kafka-bootstrap-servers`), grouped under one help heading per
//! section, each with its doc, default and environment variable.

use std::fmt;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

use super::keys::{catalogue, Kind};
use super::{Config, Loaded};

/// `--config FILE` and the flags given, as raw text per key.
#[derive(Clone, Default)]
pub struct ConfigArgs {
    pub file: Option<PathBuf>,
    /// (key path, values) in catalogue order.
    pub flags: Vec<(String, Vec<String>)>,
}

// Flags may carry secrets (`--sink-password`): Debug shows which keys were
// given, never their values.
impl fmt::Debug for ConfigArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigArgs")
            .field("file", &self.file)
            .field(
                "flags",
                &self.flags.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

const CONFIG_ID: &str = "config";

fn heading(section: &str) -> String {
    let cat = catalogue();
    match cat.sections.iter().find(|s| s.path == section) {
        Some(s) => format!("[{section}] {}", s.doc.trim_end_matches('.')),
        None => "Instance".to_owned(),
    }
}

impl Args for ConfigArgs {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = cmd.arg(
            Arg::new(CONFIG_ID)
                .long("config")
                .short('c')
                .value_name("FILE")
                .env("OUTBOUND_CONFIG")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML configuration file (every key below; see outbound.example.toml)"),
        );
        for key in &catalogue().keys {
            let mut default = key.default_text();
            if key.kind == Kind::Secret || default.is_empty() {
                default = "none".into();
            }
            let tail = format!("[default: {default}] [env: {}]", key.env());
            let mut doc = key.doc.clone();
            if key.kind == Kind::Secret {
                doc.push_str(
                    " A flag is visible to every user of the machine (ps): prefer the \
                     environment or the _file key.",
                );
            }
            let mut arg = Arg::new(key.path.clone())
                .long(key.flag())
                .help_heading(heading(key.section()))
                .help(format!("`{}`: {} {tail}", key.path, key.summary()))
                .long_help(format!("`{}`: {doc}\n{tail}", key.path))
                .value_name(match key.kind {
                    Kind::Int => "N",
                    Kind::Bool => "BOOL",
                    Kind::List => "VALUE",
                    Kind::Map => "KEY=VALUE",
                    Kind::Secret => "SECRET",
                    Kind::Str => "STRING",
                })
                .hide_default_value(true)
                .hide_env_values(true);
            // A repeated list or map flag adds; any other repeated flag:
            // the last one wins, as in most command lines.
            arg = match key.kind {
                Kind::List | Kind::Map => arg.action(ArgAction::Append),
                Kind::Bool => arg
                    .num_args(0..=1)
                    .default_missing_value("true")
                    .overrides_with(key.path.clone()),
                _ => arg.overrides_with(key.path.clone()),
            };
            if !key.choices.is_empty() {
                arg = arg.value_parser(clap::builder::PossibleValuesParser::new(
                    key.choices.clone(),
                ));
            }
            for alias in &key.aliases {
                arg = arg.visible_alias(alias.clone());
            }
            cmd = cmd.arg(arg);
        }
        cmd.after_help(
            "Every key is also a line of the TOML file (--config; sections as [kafka], \
             [sink.tls], ...) and an environment variable (OUTBOUND_ + the key in capitals, \
             `.` written `__`). Precedence: flags > environment > file > defaults. \
             Secrets (*password*, *api_key*) also come from the file their *_file key names. \
             `outbound config check` prints the effective configuration and where each value \
             came from.",
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ConfigArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut out = Self::default();
        out.update_from_arg_matches(matches)?;
        Ok(out)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        if let Some(file) = matches.get_one::<PathBuf>(CONFIG_ID) {
            self.file = Some(file.clone());
        }
        for key in &catalogue().keys {
            let from_command_line =
                matches.value_source(&key.path) == Some(clap::parser::ValueSource::CommandLine);
            if !from_command_line {
                continue;
            }
            if let Some(values) = matches.get_many::<String>(&key.path) {
                let values: Vec<String> = values.cloned().collect();
                self.flags.retain(|(k, _)| k != &key.path);
                self.flags.push((key.path.clone(), values));
            }
        }
        Ok(())
    }
}

impl ConfigArgs {
    /// Loads the configuration: defaults < `--config` file < the process's
    /// `OUTBOUND_*` environment < these flags.
    pub fn load(&self) -> anyhow::Result<Loaded> {
        Config::load_from(self.file.as_deref(), std::env::vars(), &self.flags)
    }
}
