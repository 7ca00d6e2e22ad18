//! Release builds of the daemon on x86-64 Linux lay the code an idle
//! daemon runs together at the start of its text: `link/idle-order.txt`,
//! written by `bench/idle-order.sh`, goes to the linker as lld's
//! `--symbol-ordering-file`. The kernel maps the cached pages around every
//! page of code that runs, so code spread over the whole text kept most of
//! it resident: about 17.5 MiB idle instead of 11 (see "Memory" in
//! BENCHMARKS.md). Names the binary does not have are skipped without a
//! word, so a stale file costs memory, never a build.
//!
//! Only where lld is the linker for sure: Rust's default on this target
//! since 1.90, with no linker chosen by the user (GNU ld knows no such
//! option).

use std::env;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=link/idle-order.txt");
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let own_linker = env::var_os("RUSTC_LINKER").is_some()
        || env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("link"));
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let order = format!("{dir}/link/idle-order.txt");
    // A copy of the source without the file builds in the linker's order.
    let present = std::path::Path::new(&order).is_file();
    if release && target && !own_linker && present && rustc_minor().is_some_and(|m| m >= 90) {
        println!("cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={order}");
        println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// The minor version of the rustc that builds this (`rustc 1.95.0 (…)`).
fn rustc_minor() -> Option<u32> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).arg("-V").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}
