//! The one error kind the sink treats apart: a [`Refusal`], which no retry
//! fixes by itself (another app's index, a re-created topic, a mapping that
//! rejects most documents, a request the node cannot read). `outbound sink`
//! exits on it; inside `outbound run` the sink stays down, reports it on
//! `/healthz/sink`, and tries again slowly, so that fixing the cause (say,
//! `outbound rebuild-indices`) brings it back without touching the stream
//! stages. Every other error is transient: retried with backoff.

/// An error that needs an operator; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl Refusal {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Whether an error (anywhere in its chain) is a refusal.
pub fn is_refusal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Refusal>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn refusals_are_found_under_context() {
        let e = Err::<(), _>(Refusal::new("owned by app b"))
            .context("installing")
            .unwrap_err();
        assert!(is_refusal(&e));
        assert_eq!(format!("{e:#}"), "installing: owned by app b");
        assert!(!is_refusal(&anyhow::anyhow!("connection refused")));
    }
}
