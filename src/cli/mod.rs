//! Subcommands of the `outbound` binary.

pub mod dlq;
pub mod rebuild;
pub mod run;
pub mod sink;
