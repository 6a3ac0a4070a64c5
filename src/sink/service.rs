//! Sends bulk requests with the official `elasticsearch` crate (8.x line),
//! which talks to the local OpenSearch 2.19 node as well: the crate sends
//! plain `application/json` and checks no product header, and every API the
//! sink uses (`_bulk` with `require_alias` and `filter_path`,
//! `_index_template`, index creation) is common to both.
//!
//! One call = one HTTP round trip; the retry policy lives in `retry.rs` and
//! the loop that applies it in `delivery.rs`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use elasticsearch::auth::Credentials;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Url;
use elasticsearch::{BulkParts, Elasticsearch};

use super::config::SinkConfig;
use super::retry::{classify_status, BulkResponse, ItemResponse, RequestClass};

/// Why a bulk request produced no per-item answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Connection refused or reset, timeout: retry.
    #[error("no answer from {url}: {message}")]
    Transport { url: String, message: String },
    /// An HTTP error status for the whole request.
    #[error("bulk request answered HTTP {status}: {body}")]
    Status {
        status: u16,
        class: RequestClass,
        body: String,
    },
    /// A 2xx whose body is not a bulk response with one item per action.
    #[error("{0}")]
    Protocol(String),
}

impl SendError {
    /// What to do about it (see `retry.rs`).
    pub fn class(&self) -> RequestClass {
        match self {
            SendError::Transport { .. } => RequestClass::Retry,
            SendError::Status { class, .. } => *class,
            // A 2xx we cannot read: a proxy in between, or a node of
            // another kind. No retry changes that.
            SendError::Protocol(_) => RequestClass::Refused,
        }
    }

    /// Bounded label for the retry metric.
    pub fn label(&self) -> &'static str {
        match self {
            SendError::Transport { .. } => "connection",
            SendError::Status { status: 429, .. } => "status_429",
            SendError::Status {
                class: RequestClass::TooLarge,
                ..
            } => "too_large",
            SendError::Status {
                class: RequestClass::Blocked,
                ..
            } => "blocked",
            SendError::Status { .. } => "status_5xx",
            SendError::Protocol(_) => "protocol",
        }
    }
}

/// The client of the search node.
#[derive(Clone)]
pub struct BulkService {
    client: Elasticsearch,
    url: String,
    timeout: Duration,
    /// Elasticsearch's own wait for unavailable shards, per request.
    shard_timeout: String,
}

impl BulkService {
    pub fn new(config: &SinkConfig) -> anyhow::Result<Self> {
        let url = Url::parse(&config.url)
            .map_err(|e| anyhow::anyhow!("config key `sink.url` = {:?}: {e}", config.url))?;
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let mut builder =
            TransportBuilder::new(SingleNodeConnectionPool::new(url)).timeout(timeout);
        if !config.username.is_empty() {
            builder = builder.auth(Credentials::Basic(
                config.username.clone(),
                config.password.clone(),
            ));
        }
        let transport = builder
            .build()
            .map_err(|e| anyhow::anyhow!("building the HTTP client for {}: {e}", config.url))?;
        Ok(Self {
            client: Elasticsearch::new(transport),
            url: config.url.clone(),
            timeout,
            shard_timeout: format!("{}ms", config.bulk_timeout_ms),
        })
    }

    pub fn client(&self) -> &Elasticsearch {
        &self.client
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one bulk body; returns the item responses in request order
    /// (checked to be exactly `expected_items` long) and the round-trip time.
    pub async fn bulk(
        &self,
        body: Bytes,
        expected_items: usize,
    ) -> Result<(Vec<ItemResponse>, Duration), SendError> {
        let started = Instant::now();
        let response = self
            .client
            .bulk(BulkParts::None)
            // Writes go to aliases only: a deleted index is an error to
            // repair, never silently re-created with dynamic mappings.
            .require_alias(true)
            .timeout(&self.shard_timeout)
            .filter_path(&[
                "errors",
                "items.*.status",
                "items.*.result",
                "items.*.error.type",
                "items.*.error.reason",
                "items.*.error.caused_by",
            ])
            .request_timeout(self.timeout)
            .body(vec![body])
            .send()
            .await
            .map_err(|e| SendError::Transport {
                url: self.url.clone(),
                message: e.to_string(),
            })?;
        let status = response.status_code().as_u16();
        let bytes = response.bytes().await.map_err(|e| SendError::Transport {
            url: self.url.clone(),
            message: e.to_string(),
        })?;
        let elapsed = started.elapsed();
        match classify_status(status) {
            RequestClass::Items => {}
            class => {
                let body = String::from_utf8_lossy(&bytes[..bytes.len().min(2000)]).into_owned();
                return Err(SendError::Status {
                    status,
                    class,
                    body,
                });
            }
        }
        let items = BulkResponse::parse(&bytes).map_err(SendError::Protocol)?;
        if items.len() != expected_items {
            return Err(SendError::Protocol(format!(
                "bulk response has {} items for {expected_items} actions",
                items.len()
            )));
        }
        Ok((items, elapsed))
    }
}
