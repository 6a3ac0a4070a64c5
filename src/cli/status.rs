//! `outbound status`: per task (owner instance, state, lag, last commit
//! age) and per sink partition (lag, oldest unacknowledged record age), from
//! the brokers and the instances' endpoints (src/ops/status.rs).

use anyhow::Context;
use clap::Args;
use outbound::config::ConfigArgs;
use outbound::ops::status::{self, Endpoints};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// An instance's metrics endpoint as INSTANCE=URL (repeatable), e.g.
    /// 1=http://10.0.0.7:9464: its /readyz and /metrics give task states
    /// and commit ages.
    #[arg(long = "instance-url", value_name = "INSTANCE=URL")]
    pub instance_urls: Vec<String>,
    /// Every instance's metrics endpoint, `{instance}` standing for its id,
    /// e.g. http://outbound-{instance}.outbound:9464 in Kubernetes.
    #[arg(long, value_name = "URL")]
    pub instance_url_template: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let config = args.config.load()?.config;
    let mut endpoints = Endpoints {
        template: args.instance_url_template.clone(),
        ..Endpoints::default()
    };
    for pair in &args.instance_urls {
        let (instance, url) = pair
            .split_once('=')
            .with_context(|| format!("--instance-url {pair:?}: expected INSTANCE=URL"))?;
        endpoints
            .explicit
            .insert(instance.to_owned(), url.to_owned());
    }
    let status = status::gather(&config, &endpoints)?;
    match args.json {
        true => println!(
            "{}",
            serde_json::to_string_pretty(&status).context("status as JSON")?
        ),
        false => print!("{}", status.table()),
    }
    Ok(())
}
