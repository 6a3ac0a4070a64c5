//! Support of tests/chaos.rs.
pub mod audit;
