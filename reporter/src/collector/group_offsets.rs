//! Committed offsets of consumer groups through the Admin API (ListConsumerGroupOffsets,
//! KIP-88's OffsetFetch for any group), on the agent's one admin client.
//!
//! rust-rdkafka does not wrap this call, so it is made through `rdkafka::bindings`. The
//! alternative, a consumer per group just to call `committed_offsets`, cost a librdkafka
//! instance (threads, buffers, connections) per group: about 0.3 MiB each, 58 MiB of
//! resident memory for 100 groups. Here every group's request is in flight at once on
//! one queue, and nothing outlives the call.

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_void};
use std::time::{Duration, Instant};

use foresight_proto::v1::GroupOffset;
use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

/// Per group: its committed offsets, or why they could not be read.
pub type GroupOffsets = HashMap<String, Result<Vec<GroupOffset>, String>>;

/// Owns a native pointer and frees it on drop, so that no early return leaks.
struct Owned<T>(*mut T, unsafe extern "C" fn(*mut T));

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from the matching librdkafka constructor and is
            // freed once, here.
            unsafe { (self.1)(self.0) }
        }
    }
}

fn c_str(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka hands out NUL-terminated strings that live as long as the
    // object they belong to, which outlives this copy.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Committed offsets of `groups` (every partition each group committed), waiting at
/// most `timeout` in all. A group missing from the answer timed out.
pub fn list<C: ClientContext>(
    client: &Client<C>,
    groups: &[String],
    timeout: Duration,
) -> GroupOffsets {
    let mut out = GroupOffsets::new();
    if groups.is_empty() {
        return out;
    }
    let rk = client.native_ptr();
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `rk` is the live handle of `client`, borrowed for this call; every object
    // created here is owned by an `Owned` guard or destroyed right after use, and
    // results are read only before their event is destroyed.
    unsafe {
        let queue = Owned(rd::rd_kafka_queue_new(rk), rd::rd_kafka_queue_destroy);
        let mut sent = 0usize;
        for (i, group) in groups.iter().enumerate() {
            let Ok(name) = CString::new(group.as_str()) else {
                out.insert(group.clone(), Err("group name contains NUL".into()));
                continue;
            };
            let options = Owned(
                rd::rd_kafka_AdminOptions_new(
                    rk,
                    rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
                ),
                rd::rd_kafka_AdminOptions_destroy,
            );
            let mut errstr = [0 as std::ffi::c_char; 256];
            rd::rd_kafka_AdminOptions_set_request_timeout(
                options.0,
                timeout_ms,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            // The index, so that a request-level error names its group.
            rd::rd_kafka_AdminOptions_set_opaque(options.0, (i + 1) as *mut c_void);
            let mut request = [rd::rd_kafka_ListConsumerGroupOffsets_new(
                name.as_ptr(),
                std::ptr::null(),
            )];
            // librdkafka copies the request and the options.
            rd::rd_kafka_ListConsumerGroupOffsets(rk, request.as_mut_ptr(), 1, options.0, queue.0);
            rd::rd_kafka_ListConsumerGroupOffsets_destroy_array(request.as_mut_ptr(), 1);
            sent += 1;
        }
        let deadline = Instant::now() + timeout + Duration::from_secs(1);
        while sent > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let ev =
                rd::rd_kafka_queue_poll(queue.0, left.as_millis().min(i32::MAX as u128) as i32);
            if ev.is_null() {
                break;
            }
            let ev = Owned(ev, rd::rd_kafka_event_destroy);
            if rd::rd_kafka_event_type(ev.0) != rd::RD_KAFKA_EVENT_LISTCONSUMERGROUPOFFSETS_RESULT {
                continue;
            }
            sent -= 1;
            let index = rd::rd_kafka_event_opaque(ev.0) as usize;
            if rd::rd_kafka_event_error(ev.0) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                if let Some(group) = index.checked_sub(1).and_then(|i| groups.get(i)) {
                    out.insert(
                        group.clone(),
                        Err(c_str(rd::rd_kafka_event_error_string(ev.0))),
                    );
                }
                continue;
            }
            let result = rd::rd_kafka_event_ListConsumerGroupOffsets_result(ev.0);
            let mut count = 0usize;
            let results = rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count);
            for k in 0..count {
                let g = *results.add(k);
                let name = c_str(rd::rd_kafka_group_result_name(g));
                let err = rd::rd_kafka_group_result_error(g);
                if !err.is_null() {
                    out.insert(name, Err(c_str(rd::rd_kafka_error_string(err))));
                    continue;
                }
                let mut offsets = Vec::new();
                let parts = rd::rd_kafka_group_result_partitions(g);
                if !parts.is_null() && (*parts).cnt > 0 && !(*parts).elems.is_null() {
                    let elems = std::slice::from_raw_parts((*parts).elems, (*parts).cnt as usize);
                    for p in elems {
                        // A negative offset is "nothing committed".
                        if p.offset >= 0
                            && p.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                        {
                            offsets.push(GroupOffset {
                                topic: c_str(p.topic),
                                partition: p.partition,
                                offset: p.offset,
                                lag: None,
                            });
                        }
                    }
                }
                offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                out.insert(name, Ok(offsets));
            }
        }
    }
    out
}
