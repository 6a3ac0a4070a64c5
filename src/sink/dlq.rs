//! The sink's dead-letter topic (`<app_id>-sink-dlq`): records the sink could
//! not encode and documents Elasticsearch rejected for good (e.g. a mapping
//! error). Each dead letter is the original key and value, with why and where
//! from in headers (the same `outbound.*` header names as the engine's
//! dead-letter topic), so it can be inspected and replayed. A batch counts as
//! acknowledged only once its dead letters are acknowledged by Kafka.

use std::time::Duration;

use anyhow::Context;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::encoder::Origin;

/// One record for the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub origin: Origin,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp_ms: Option<i64>,
    /// Bounded kind: an encode error kind or the Elasticsearch error type.
    pub error_type: String,
    /// Human-readable reason.
    pub reason: String,
    /// The alias and `_id`, when the record got that far.
    pub index: Option<String>,
    pub id: Option<String>,
    /// The item's HTTP status from Elasticsearch, when it got there.
    pub status: Option<u16>,
    /// The topic id of the source topic's incarnation (its offsets mean
    /// nothing in another): a replay skips letters of another incarnation.
    pub topic_id: Option<String>,
}

impl DeadLetter {
    /// Bytes held in memory.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self.reason.len()
            + 64
    }

    fn headers(&self) -> OwnedHeaders {
        let partition = self.origin.partition.to_string();
        let offset = self.origin.offset.to_string();
        let status = self.status.map(|s| s.to_string());
        let mut h = OwnedHeaders::new()
            .insert(Header {
                key: "outbound.error",
                value: Some(self.reason.as_str()),
            })
            .insert(Header {
                key: "outbound.error.type",
                value: Some(self.error_type.as_str()),
            })
            .insert(Header {
                key: "outbound.source.topic",
                value: Some(&*self.origin.topic),
            })
            .insert(Header {
                key: "outbound.source.partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "outbound.source.offset",
                value: Some(offset.as_str()),
            });
        // The topic keeps append times; the source change's time is here.
        let timestamp = self.timestamp_ms.map(|t| t.to_string());
        if let Some(ts) = &timestamp {
            h = h.insert(Header {
                key: "outbound.source.timestamp",
                value: Some(ts.as_str()),
            });
        }
        if let Some(index) = &self.index {
            h = h.insert(Header {
                key: "outbound.index",
                value: Some(index.as_str()),
            });
        }
        if let Some(id) = &self.id {
            h = h.insert(Header {
                key: "outbound.doc_id",
                value: Some(id.as_str()),
            });
        }
        if let Some(s) = &status {
            h = h.insert(Header {
                key: "outbound.status",
                value: Some(s.as_str()),
            });
        }
        if let Some(id) = &self.topic_id {
            h = h.insert(Header {
                key: "outbound.source.topic_id",
                value: Some(id.as_str()),
            });
        }
        h
    }
}

/// What a dead letter's headers say, read back (for `outbound dlq replay`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LetterHeaders {
    pub error: Option<String>,
    pub error_type: Option<String>,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub source_topic_id: Option<String>,
    pub index: Option<String>,
    pub doc_id: Option<String>,
}

impl LetterHeaders {
    /// From (name, value) pairs; unknown names are ignored.
    pub fn parse<'a>(headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Self {
        let mut h = LetterHeaders::default();
        for (name, value) in headers {
            let Some(v) = value.map(|v| String::from_utf8_lossy(v).into_owned()) else {
                continue;
            };
            match name {
                "outbound.error" => h.error = Some(v),
                "outbound.error.type" => h.error_type = Some(v),
                "outbound.source.topic" => h.source_topic = Some(v),
                "outbound.source.partition" => h.source_partition = v.parse().ok(),
                "outbound.source.offset" => h.source_offset = v.parse().ok(),
                "outbound.source.topic_id" => h.source_topic_id = Some(v),
                "outbound.index" => h.index = Some(v),
                "outbound.doc_id" => h.doc_id = Some(v),
                _ => {}
            }
        }
        h
    }

    /// Whether `--filter` selects it: the error type, or a part of the message.
    pub fn matches(&self, filter: &str) -> bool {
        let f = filter.to_ascii_lowercase();
        self.error_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(filter))
            || self
                .error
                .as_deref()
                .is_some_and(|e| e.to_ascii_lowercase().contains(&f))
    }
}

/// Produces dead letters and waits for Kafka's acknowledgement.
pub struct DeadLetterProducer {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetterProducer {
    pub fn new(client: &ClientConfig, topic: &str) -> anyhow::Result<Self> {
        let producer: FutureProducer = client
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .context("creating the dead-letter producer")?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends every dead letter and waits until Kafka has them all. Keyed by
    /// the original key, so one document's dead letters stay in order.
    pub async fn send_all(&self, letters: &[DeadLetter]) -> anyhow::Result<()> {
        let mut pending = Vec::with_capacity(letters.len());
        for l in letters {
            tracing::warn!(
                origin = %l.origin, index = l.index.as_deref().unwrap_or("-"), id = l.id.as_deref().unwrap_or("-"),
                status = l.status, error_type = %l.error_type, reason = %l.reason,
                "document sent to the sink's dead-letter topic"
            );
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(l.headers());
            if let Some(k) = &l.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &l.value {
                record = record.payload(v.as_slice());
            }
            let delivery = loop {
                match self.producer.send_result(record) {
                    Ok(d) => break d,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => anyhow::bail!(
                        "dead letter of {} could not be queued for {}: {e}",
                        l.origin,
                        self.topic
                    ),
                }
            };
            pending.push((l, delivery));
        }
        for (l, delivery) in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => anyhow::bail!(
                    "dead letter of {} could not be written to {}: {e}",
                    l.origin,
                    self.topic
                ),
                Err(_) => anyhow::bail!(
                    "dead letter of {}: the producer of {} shut down before acknowledging it",
                    l.origin,
                    self.topic
                ),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn headers_read_back_what_was_written() {
        let letter = DeadLetter {
            origin: Origin {
                topic: "app-details".into(),
                partition: 2,
                offset: 41,
            },
            key: Some(b"17".to_vec()),
            value: Some(b"{}".to_vec()),
            timestamp_ms: Some(1_700_000_000_000),
            error_type: "mapper_parsing_exception".into(),
            reason: "failed to parse field [units]".into(),
            index: Some("app-outbound_details-write".into()),
            id: Some("17".into()),
            status: Some(400),
            topic_id: Some("AbCd".into()),
        };
        let written = letter.headers();
        let read = LetterHeaders::parse(written.iter().map(|h| (h.key, h.value)));
        assert_eq!(
            read,
            LetterHeaders {
                error: Some("failed to parse field [units]".into()),
                error_type: Some("mapper_parsing_exception".into()),
                source_topic: Some("app-details".into()),
                source_partition: Some(2),
                source_offset: Some(41),
                source_topic_id: Some("AbCd".into()),
                index: Some("app-outbound_details-write".into()),
                doc_id: Some("17".into()),
            }
        );
        assert!(read.matches("mapper_parsing_exception"));
        assert!(read.matches("MAPPER_PARSING_EXCEPTION"));
        assert!(read.matches("field [units]"));
        assert!(!read.matches("security_exception"));
    }
}
