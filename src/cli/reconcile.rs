//! `outbound reconcile`: the indices against a batch over the source tables.
//! Exit status: 0 when they are equal, 1 when they differ, 2 on an error.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use outbound::config::ConfigArgs;
use outbound::reconcile::{self, Difference, Observer, Options, QuietOptions};
use serde_json::{json, Value};

use super::source_db::SourceDbArgs;

#[derive(Debug, Args)]
#[command(
    after_help = "Reads the same configuration as `outbound run` (--config, OUTBOUND_* \
variables) for the app id, Kafka, the search node and the source tables. The batch definition \
is in sql/reconcile/. Exit status: 0 equal, 1 differences, 2 error."
)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub db: SourceDbArgs,
    /// Only items created at or after this UTC date or date-time, and rollup days from its date
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only these detail documents (comma-separated ids; `db:id` for another warehouse database),
    /// and the rollup days they ship on
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub ids: Vec<String>,
    /// First wait until the app's consumer groups have no lag and the topics stay unchanged
    #[arg(long)]
    pub wait_for_quiet: bool,
    /// How long --wait-for-quiet waits at most, in seconds
    #[arg(long, default_value_t = 600)]
    pub quiet_timeout_secs: u64,
    /// How long the topics must stay unchanged to count as quiet, in seconds
    #[arg(long, default_value_t = 5)]
    pub quiet_settle_secs: u64,
    /// Documents compared per batch (one search request each)
    #[arg(long, default_value_t = 2000)]
    pub page_size: usize,
    /// Differences printed in full (all are counted)
    #[arg(long, default_value_t = 20)]
    pub show: usize,
    /// One JSON document on stdout instead of the readable report
    #[arg(long)]
    pub json: bool,
}

/// Prints differences as they are found (the first `show` in full) and
/// drives the progress bar.
struct Printer {
    show: usize,
    shown: usize,
    json: bool,
    collected: Vec<Difference>,
    bar: Option<ProgressBar>,
}

impl Printer {
    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => println!("{text}"),
        }
    }
}

/// A value for a diff line: strings quoted, JSON otherwise.
fn show_value(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

impl Observer for Printer {
    fn difference(&mut self, d: &Difference) {
        if self.shown >= self.show {
            return;
        }
        self.shown += 1;
        if self.json {
            self.collected.push(d.clone());
            return;
        }
        match d {
            Difference::Missing { index, id, .. } => self.line(&format!(
                "missing    {index}/{id}: expected by the source tables, not indexed"
            )),
            Difference::Extra { index, id, .. } => self.line(&format!(
                "extra      {index}/{id}: indexed, not in the source tables"
            )),
            Difference::Different { index, id, fields } => {
                self.line(&format!("different  {index}/{id}:"));
                for f in fields {
                    self.line(&format!(
                        "    {}: expected {}, indexed {}",
                        f.field,
                        show_value(&f.expected),
                        show_value(&f.indexed)
                    ));
                }
            }
        }
    }

    fn progress(&mut self, phase: &str, done: u64, total: Option<u64>) {
        if let Some(bar) = &self.bar {
            bar.set_message(phase.to_owned());
            if let Some(t) = total {
                bar.set_length(t);
            }
            bar.set_position(done);
        }
    }
}

pub fn main(args: ReconcileArgs) -> ExitCode {
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("outbound reconcile: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Ok(true) when the indices equal the batch.
fn run(args: ReconcileArgs) -> anyhow::Result<bool> {
    let config = args.config.load()?.config;
    let db = args.db.source_db();
    let options = Options {
        since: args
            .since
            .as_deref()
            .map(reconcile::parse_since)
            .transpose()?,
        ids: args
            .ids
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        page_size: args.page_size,
    };
    let quiet = args.wait_for_quiet.then(|| QuietOptions {
        timeout: Duration::from_secs(args.quiet_timeout_secs),
        settle: Duration::from_secs(args.quiet_settle_secs),
    });
    let bar = (std::io::stderr().is_terminal() && !args.json).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg:40} [{bar:30}] {pos}/{len} ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let mut printer = Printer {
        show: args.show,
        shown: 0,
        json: args.json,
        collected: Vec::new(),
        bar,
    };
    let (waited, report) =
        reconcile::wait_and_reconcile(&config, &db, &options, quiet, &mut printer)?;
    if let Some(bar) = &printer.bar {
        bar.finish_and_clear();
    }
    let differences = report.differences();
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({
            "equal": differences == 0,
            "differences": differences,
            "quiet_after_ms": waited.map(|w| w.as_millis() as u64),
            "report": report,
            "shown": printer.collected,
        });
        writeln!(out, "{doc}")?;
    } else {
        for s in &report.indices {
            writeln!(
                out,
                "{:<28} {:>9} expected {:>9} indexed: {} missing, {} extra, {} different",
                s.index, s.expected, s.indexed, s.missing, s.extra, s.different
            )?;
        }
        let waited = waited
            .map(|w| format!(" after {:.1}s of waiting for quiet", w.as_secs_f64()))
            .unwrap_or_default();
        writeln!(
            out,
            "reconcile: {differences} differences ({} rows read in {:.1}s{waited})",
            report.rows_read,
            report.elapsed_ms as f64 / 1000.0
        )?;
        if differences as usize > printer.shown {
            writeln!(out, "  ({} shown; --show N for more)", printer.shown)?;
        }
    }
    Ok(differences == 0)
}
