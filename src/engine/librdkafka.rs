//! The two things the engine needs from librdkafka that rust-rdkafka does not
//! wrap: a topic's id (DescribeTopics), which tells one incarnation of a
//! changelog from the next, and the consumer group generation that the
//! transactional offset commit will carry, which tells a live assignment
//! from a lost one (a commit with generation -1 would not be fenced).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

/// Calls `f` with a raw pointer and frees what it allocated however it returns.
struct Guard<T>(*mut T, unsafe extern "C" fn(*mut T));

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from the matching librdkafka constructor
            // and is freed once, here.
            unsafe { (self.1)(self.0) }
        }
    }
}

fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as
    // the object they belong to, which outlives this copy.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The topic id (base64, as Kafka's tools print it) of each of `topics` that
/// exists; a topic that does not exist is left out.
pub fn topic_ids<C: ClientContext>(
    client: &Client<C>,
    topics: &[String],
    timeout: Duration,
) -> Result<HashMap<String, String>, String> {
    let names: Vec<CString> = topics
        .iter()
        .map(|t| CString::new(t.as_str()).map_err(|_| format!("topic name {t:?} has a NUL byte")))
        .collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let rk = client.native_ptr();
    // SAFETY: every pointer passed below is valid for the duration of the
    // call (the names outlive the collection; the guards free what
    // librdkafka allocated); results are read before their event is destroyed.
    unsafe {
        let collection = Guard(
            rd::rd_kafka_TopicCollection_of_topic_names(ptrs.as_mut_ptr(), ptrs.len()),
            rd::rd_kafka_TopicCollection_destroy,
        );
        let queue = Guard(rd::rd_kafka_queue_new(rk), rd::rd_kafka_queue_destroy);
        let options = Guard(
            rd::rd_kafka_AdminOptions_new(
                rk,
                rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
            ),
            rd::rd_kafka_AdminOptions_destroy,
        );
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options.0,
            timeout.as_millis() as i32,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        rd::rd_kafka_DescribeTopics(rk, collection.0, options.0, queue.0);
        let event = Guard(
            rd::rd_kafka_queue_poll(queue.0, timeout.as_millis() as i32 + 1000),
            rd::rd_kafka_event_destroy,
        );
        if event.0.is_null() {
            return Err(format!("describing topics: no answer within {timeout:?}"));
        }
        if rd::rd_kafka_event_error(event.0) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            return Err(format!(
                "describing topics: {}",
                text(rd::rd_kafka_event_error_string(event.0))
            ));
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(event.0);
        if result.is_null() {
            return Err("describing topics: unexpected answer".into());
        }
        let mut count = 0usize;
        let descs = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        let mut out = HashMap::new();
        for i in 0..count {
            let d = *descs.add(i);
            if !rd::rd_kafka_TopicDescription_error(d).is_null() {
                continue; // unknown topic (or not authorised): no id
            }
            let name = text(rd::rd_kafka_TopicDescription_name(d));
            let id = rd::rd_kafka_TopicDescription_topic_id(d);
            if !id.is_null() {
                out.insert(name, text(rd::rd_kafka_Uuid_base64str(id)));
            }
        }
        Ok(out)
    }
}

/// The generation id the consumer's group metadata carries right now, or
/// `None` before the consumer has joined. After a lost assignment librdkafka
/// resets it to -1 — and a transactional offset commit at -1 is accepted
/// without any fencing.
pub fn group_generation<C: ClientContext>(client: &Client<C>) -> Option<i32> {
    // SAFETY: the metadata is a fresh copy owned here and freed by the guard.
    unsafe {
        let md = Guard(
            rd::rd_kafka_consumer_group_metadata(client.native_ptr()),
            rd::rd_kafka_consumer_group_metadata_destroy,
        );
        if md.0.is_null() {
            return None;
        }
        Some(rd::rd_kafka_consumer_group_metadata_generation_id(md.0))
    }
}
