//! Operator commands' logic, built only from what a cluster operator can
//! see: consumer group descriptions, committed and end offsets (Kafka's
//! admin and consumer APIs), each instance's `/metrics` and `/readyz`, and
//! the search cluster's indices. Nothing here reaches into a running
//! engine. The command-line wrappers are in `src/cli/`.
//!
//! - [`group`]: a consumer group's members and who owns which partition;
//! - [`status`]: `outbound status`, per task and per sink partition;
//! - [`reset`]: `outbound reset`, everything an app id left behind.

pub mod group;
pub mod reset;
pub mod status;
