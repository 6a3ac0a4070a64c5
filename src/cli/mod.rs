//! Subcommands of the `outbound` binary.

pub mod run;
pub mod sink;
