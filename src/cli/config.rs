//! `outbound config check`: loads the configuration exactly as `outbound
//! run` would (file, environment, flags), validates it and prints every
//! key's effective value and where it came from, secrets masked.
//! `outbound config example`: every key at its default with its doc, the
//! source of `outbound.example.toml`.

use clap::{Args, Subcommand};
use outbound::config::ConfigArgs;

#[derive(Debug, Args)]
pub struct ConfigCommand {
    #[command(subcommand)]
    pub command: ConfigSubcommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigSubcommand {
    /// Validate the configuration and print the effective value of every
    /// key with its source (default, file, env VAR, flag --NAME); secrets
    /// masked. Exits non-zero, naming the key, when something is wrong.
    Check(CheckArgs),
    /// Print an annotated configuration file with every key at its default.
    Example,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// JSON instead of TOML: {"<key>": {"value": ..., "source": "..."}}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd.command {
        ConfigSubcommand::Check(args) => {
            let loaded = args.config.load()?;
            match args.json {
                true => println!("{:#}", loaded.describe_json()),
                false => print!("{}", loaded.describe()),
            }
        }
        ConfigSubcommand::Example => print!("{}", outbound::config::example()),
    }
    Ok(())
}
