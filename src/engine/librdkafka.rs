//! What the engine needs from librdkafka that rust-rdkafka does not wrap: a
//! topic's id (DescribeTopics), which tells one incarnation of a changelog
//! from the next; the consumer group generation that the transactional
//! offset commit will carry, which tells a live assignment from a lost one
//! (a commit with generation -1 would not be fenced); a wake-up when the
//! producer's event queue gets an event, so a commit can wait for its
//! delivery reports without spinning or sleeping blind; and pausing a
//! producer's partitions, which keeps librdkafka from spinning on a broker
//! that does not answer.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::TopicPartitionList;

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

/// Pauses or resumes producing to `partitions`, without waiting: a paused
/// partition's queued records stay queued, its in-flight requests are still
/// answered and its records still time out.
///
/// Not `rd_kafka_pause_partitions`: that one waits, with no timeout, until
/// the broker thread each partition is delegated to has served the request,
/// and a commit must never wait without a bound (a partition between
/// brokers while the broker restarts). This is the function behind it,
/// called with `RD_ASYNC`: the broker thread applies the flag the next time
/// it serves its queue, which is at once when it is spinning. librdkafka
/// exports it but does not declare it in its public header; rdkafka-sys
/// builds this exact librdkafka (Cargo.lock pins 2.12.1), whose
/// `rdkafka_partition.h` declares it as below.
pub fn set_producing_paused<C: ClientContext>(
    client: &Client<C>,
    partitions: &TopicPartitionList,
    paused: bool,
) -> Result<(), String> {
    // `rd_bool_t` is a uint8_t and `rd_async_t` an enum; RD_ASYNC = 1 and
    // RD_KAFKA_TOPPAR_F_APP_PAUSE = 0x10 (rdtypes.h, rdkafka_partition.h).
    const RD_ASYNC: c_int = 1;
    const RD_KAFKA_TOPPAR_F_APP_PAUSE: c_int = 0x10;
    extern "C" {
        fn rd_kafka_toppars_pause_resume(
            rk: *mut rd::rd_kafka_t,
            pause: u8,
            async_: c_int,
            flag: c_int,
            partitions: *mut rd::rd_kafka_topic_partition_list_t,
        ) -> rd::rd_kafka_resp_err_t;
    }
    // SAFETY: the client and the list are alive for the call; librdkafka
    // reads the list and sets each element's error, and keeps no pointer to
    // it (each partition's request holds its own reference).
    let err = unsafe {
        rd_kafka_toppars_pause_resume(
            client.native_ptr(),
            u8::from(paused),
            RD_ASYNC,
            RD_KAFKA_TOPPAR_F_APP_PAUSE,
            partitions.ptr(),
        )
    };
    if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        // SAFETY: librdkafka's error strings are static.
        Err(text(unsafe { rd::rd_kafka_err2str(err) }))
    }
}

/// Wakes a waiting thread as soon as librdkafka puts an event (a delivery
/// report) on a client's main queue, which is the queue a `BaseProducer`
/// serves. rust-rdkafka's `poll(t)` cannot wait like this: it waits out all
/// of `t`, and with less than a millisecond of `t` left it polls with a zero
/// timeout in a loop (a short poll is a busy spin).
pub struct QueueWaker {
    queue: *mut rd::rd_kafka_queue_t,
    // Boxed: librdkafka holds its address until the callback is disabled.
    state: Box<WakeState>,
}

#[derive(Default)]
struct WakeState {
    woken: Mutex<bool>,
    bell: Condvar,
}

// SAFETY: the queue handle is reference-counted by librdkafka and safe to use
// from any thread; the state is shared only through its Mutex and Condvar.
unsafe impl Send for QueueWaker {}

/// Called by librdkafka, under the queue's lock, when an event lands on the
/// empty queue: only flags and notifies, never calls back into librdkafka.
unsafe extern "C" fn ring(_rk: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the boxed WakeState, alive until the callback is
    // disabled (which takes the same queue lock this runs under).
    let state = unsafe { &*(opaque as *const WakeState) };
    *state.woken.lock().unwrap_or_else(|e| e.into_inner()) = true;
    state.bell.notify_all();
}

impl QueueWaker {
    pub fn on_main_queue<C: ClientContext>(client: &Client<C>) -> Self {
        let state = Box::new(WakeState::default());
        // SAFETY: the client is alive; the handle is released in Drop.
        let queue = unsafe { rd::rd_kafka_queue_get_main(client.native_ptr()) };
        // SAFETY: the opaque pointer stays valid until Drop disables the
        // callback.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(
                queue,
                Some(ring),
                &*state as *const WakeState as *mut c_void,
            )
        };
        Self { queue, state }
    }

    /// Events waiting on the queue.
    pub fn pending(&self) -> usize {
        // SAFETY: the handle is valid until Drop.
        unsafe { rd::rd_kafka_queue_length(self.queue) }
    }

    /// Waits until an event was put on the empty queue since the last wait,
    /// or `timeout`. (librdkafka rings only when the queue goes from empty
    /// to not empty: check `pending` first.)
    pub fn wait(&self, timeout: Duration) {
        let woken = self.state.woken.lock().unwrap_or_else(|e| e.into_inner());
        let (mut woken, _) = self
            .state
            .bell
            .wait_timeout_while(woken, timeout, |w| !*w)
            .unwrap_or_else(|e| e.into_inner());
        *woken = false;
    }
}

impl Drop for QueueWaker {
    fn drop(&mut self) {
        // SAFETY: disabling takes the queue lock the callback runs under, so
        // no call is running or will run once this returns; then the handle
        // is released and the state may go.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rd::rd_kafka_queue_destroy(self.queue);
        }
    }
}
