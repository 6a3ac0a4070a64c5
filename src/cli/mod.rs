//! Subcommands of the `outbound` binary.

pub mod config;
pub mod dlq;
pub mod loadgen;
pub mod logging;
pub mod rebuild;
pub mod reconcile;
pub mod reset;
pub mod run;
pub mod sink;
pub mod source_db;
pub mod status;
