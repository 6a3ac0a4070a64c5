//! Subcommands of the `outbound` binary.

pub mod dlq;
pub mod loadgen;
pub mod rebuild;
pub mod reconcile;
pub mod run;
pub mod sink;
pub mod source_db;
