//! The state store of `outbound`'s stateful stages.
