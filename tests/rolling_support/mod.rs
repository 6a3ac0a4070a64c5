//! Support of tests/rolling_restart.rs.
pub mod fleet;
pub mod outputs;
