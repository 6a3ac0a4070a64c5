//! What the sink asks Kafka about its topics: each output topic's identity
//! (its topic id, new with every incarnation of the name), how long it keeps
//! tombstones (`delete.retention.ms`), and its own dead-letter topic.
//!
//! Topic ids come from the DescribeTopics admin API (KIP-516). rust-rdkafka
//! does not wrap it, so [`topic_ids`] calls librdkafka through the bindings
//! it re-exports — the one `unsafe` block of the sink, kept to this file.

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::config::Config;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A Kafka client configuration for `config`'s cluster.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut kafka = ClientConfig::new();
    kafka.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    for (k, v) in &config.kafka.properties {
        kafka.set(k, v);
    }
    kafka
}

/// The topic ids (base64, as Kafka prints them) of the topics that exist;
/// a missing topic is absent from the map.
pub async fn topic_ids(
    config: &Config,
    topics: &[&str],
) -> anyhow::Result<BTreeMap<String, String>> {
    let kafka = client_config(config);
    let names: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    tokio::task::spawn_blocking(move || describe_topic_ids(&kafka, &names))
        .await
        .context("describing topics: the task panicked")?
}

fn describe_topic_ids(
    kafka: &ClientConfig,
    names: &[String],
) -> anyhow::Result<BTreeMap<String, String>> {
    let admin: AdminClient<DefaultClientContext> =
        kafka.create().context("creating a Kafka admin client")?;
    let cnames = names
        .iter()
        .map(|n| CString::new(n.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .context("a topic name holds a NUL byte")?;
    let mut ptrs: Vec<*const c_char> = cnames.iter().map(|c| c.as_ptr()).collect();
    let timeout_ms = TIMEOUT.as_millis() as i32;
    let rk = admin.inner().native_ptr();
    let mut out = BTreeMap::new();
    // SAFETY: every object created here is destroyed before returning; the
    // names outlive the collection (librdkafka copies them), and the result
    // is read before its event is destroyed. `rk` lives as long as `admin`.
    unsafe {
        let collection = rd::rd_kafka_TopicCollection_of_topic_names(ptrs.as_mut_ptr(), ptrs.len());
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let queue = rd::rd_kafka_queue_new(rk);
        rd::rd_kafka_DescribeTopics(rk, collection, options, queue);
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms + 5_000);
        let result = if event.is_null() {
            Err(anyhow::anyhow!(
                "describing topics {names:?}: no answer within {TIMEOUT:?}"
            ))
        } else if rd::rd_kafka_event_error(event)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            let message = CStr::from_ptr(rd::rd_kafka_event_error_string(event))
                .to_string_lossy()
                .into_owned();
            Err(anyhow::anyhow!("describing topics {names:?}: {message}"))
        } else {
            let described = rd::rd_kafka_event_DescribeTopics_result(event);
            let mut count = 0usize;
            let descriptions = rd::rd_kafka_DescribeTopics_result_topics(described, &mut count);
            for i in 0..count {
                let d = *descriptions.add(i);
                let error = rd::rd_kafka_TopicDescription_error(d);
                if !error.is_null()
                    && rd::rd_kafka_error_code(error)
                        != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                {
                    continue; // the topic does not exist (yet)
                }
                let name = CStr::from_ptr(rd::rd_kafka_TopicDescription_name(d))
                    .to_string_lossy()
                    .into_owned();
                let id = rd::rd_kafka_Uuid_base64str(rd::rd_kafka_TopicDescription_topic_id(d));
                if !id.is_null() {
                    out.insert(name, CStr::from_ptr(id).to_string_lossy().into_owned());
                }
            }
            Ok(())
        };
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_TopicCollection_destroy(collection);
        result?;
    }
    Ok(out)
}

/// A topic's `delete.retention.ms` (how long its tombstones stay); None
/// when the topic does not exist.
pub async fn delete_retention_ms(config: &Config, topic: &str) -> anyhow::Result<Option<u64>> {
    let admin: AdminClient<DefaultClientContext> = client_config(config)
        .create()
        .context("creating a Kafka admin client")?;
    let results = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(TIMEOUT)),
        )
        .await
        .with_context(|| format!("describing the configuration of topic {topic}"))?;
    match results.into_iter().next() {
        Some(Ok(resource)) => Ok(resource
            .get("delete.retention.ms")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse::<u64>().ok())),
        Some(Err(RDKafkaErrorCode::UnknownTopicOrPartition)) | None => Ok(None),
        Some(Err(e)) => anyhow::bail!("describing the configuration of topic {topic}: {e}"),
    }
}

/// Creates the sink's dead-letter topic if missing. Retention counts from
/// when a record was dead-lettered (append time), not from its source
/// change, which may be long past.
pub async fn ensure_dead_letter_topic(config: &Config, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(config)
        .create()
        .context("creating a Kafka admin client")?;
    let results = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                config.kafka.partitions,
                TopicReplication::Fixed(config.kafka.replication_factor),
            )
            .set("message.timestamp.type", "LogAppendTime")],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .with_context(|| format!("creating topic {topic}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}
