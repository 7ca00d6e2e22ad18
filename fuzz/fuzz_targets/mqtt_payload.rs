//! `parse_payload` must never panic, whatever bytes arrive on a topic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = beredskab::engine::parse_payload(data);
});
