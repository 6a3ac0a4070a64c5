//! Subcommands of the `outbound` binary.

pub mod loadgen;
pub mod reconcile;
pub mod run;
pub mod sink;
pub mod source_db;
