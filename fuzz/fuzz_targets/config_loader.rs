//! `load_str` must never panic, and a config it accepts must resolve:
//! `Catalogue::build` failing on a validated config is a validation gap.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(loaded) = beredskab::config::load_str("fuzz.toml", text) {
        if let Err(e) = beredskab::catalogue::Catalogue::build(&loaded.config) {
            panic!("config validated but Catalogue::build failed: {e}");
        }
    }
});
