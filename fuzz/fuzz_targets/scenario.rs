//! A drill scenario must never panic the parser or the simulated run.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use beredskab::config::Config;
use libfuzzer_sys::fuzz_target;

/// Longer scenarios make each run slow (every probe is evaluated on its
/// own schedule); the engine_events target covers long time spans.
const MAX_END: Duration = Duration::from_secs(6 * 3600);

fn example() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let text = include_str!("../../deploy/example/beredskab.toml");
        beredskab::config::load_str("beredskab.toml", text)
            .expect("the example config loads")
            .config
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(scenario) = beredskab::drill::Scenario::parse("s.toml", text) else {
        return;
    };
    if scenario.end > MAX_END {
        return;
    }
    let _ = beredskab::drill::run(example(), &scenario, &mut std::io::sink());
});
