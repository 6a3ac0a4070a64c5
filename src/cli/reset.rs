//! `outbound reset`: deletes an app id's internal topics, changelogs, group
//! offsets and local state (and with --indices its indices), after showing
//! the plan and asking for confirmation (src/ops/reset.rs says what each
//! part means for the sink's versions).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use outbound::config::ConfigArgs;
use outbound::ops::reset::{self, Scope};

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Also delete the detail and rollup indices and the sink group's
    /// offsets: the sink refills new indices from the output topics.
    #[arg(long)]
    pub indices: bool,
    /// Also delete the output and dead-letter topics (needs --indices).
    #[arg(long)]
    pub outputs: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(args: ResetArgs) -> anyhow::Result<()> {
    let config = args.config.load()?.config;
    let scope = Scope {
        indices: args.indices,
        outputs: args.outputs,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let plan = runtime.block_on(reset::plan(&config, scope))?;
    eprintln!(
        "outbound reset of app id {:?} on {} will delete:\n{}",
        config.app_id,
        config.kafka.bootstrap_servers,
        plan.describe()
    );
    if !args.yes {
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "not confirmed: pass --yes to reset without a terminal"
        );
        eprint!("type the app id ({}) to go ahead: ", config.app_id);
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the confirmation")?;
        anyhow::ensure!(
            answer.trim() == config.app_id,
            "not confirmed; nothing deleted"
        );
    }
    let bar = match std::io::stderr().is_terminal() {
        true => ProgressBar::new(plan.steps()),
        false => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let result = runtime.block_on(reset::execute(&config, &plan, |step| {
        bar.inc(1);
        bar.set_message(step.to_owned());
        if bar.is_hidden() {
            eprintln!("{step}");
        }
    }));
    bar.finish_and_clear();
    result?;
    eprintln!("reset done: the next `outbound run` reprocesses the source topics from the start");
    Ok(())
}
