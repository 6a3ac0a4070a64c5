//! Subcommands of the `outbound` binary.

pub mod config;
pub mod logging;
pub mod reset;
pub mod run;
pub mod sink;
pub mod status;
