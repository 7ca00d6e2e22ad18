//! The push API's body parsers must never panic, whatever a client sends:
//! `POST /api/v1/alarms`, `/api/v1/alertmanager` and `/api/v1/reports`
//! all see the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

use beredskab::api::ingest;

fuzz_target!(|data: &[u8]| {
    let _ = ingest::parse_alarm(data);
    let _ = ingest::parse_alertmanager(data);
    let _ = ingest::parse_report(data);
});
