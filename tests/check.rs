//! `beredskab check -c FILE` on broken configs: every error at once, each
//! as `FILE:LINE:COL: message`, exit 2; warnings with exit 0.
//!
//! The configs live in `tests/configs/`, one per kind of mistake, small
//! enough to read next to the expected lines.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `check` from the crate root, so that diagnostics name the file as
/// `tests/configs/NAME.toml`.
fn check(file: &Path) -> Outcome {
    check_with(file, EXAMPLE_SECRETS)
}

/// The secrets the shipped example reads from the environment.
const EXAMPLE_SECRETS: &[(&str, &str)] = &[("BEREDSKAB_SECRET", "s3cret"), ("SMS_TOKEN", "t0ken")];

/// Runs `check` with exactly these secrets in the environment.
fn check_with(file: &Path, secrets: &[(&str, &str)]) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_beredskab"));
    for (var, _) in EXAMPLE_SECRETS {
        cmd.env_remove(var);
    }
    for (var, value) in secrets {
        cmd.env(var, value);
    }
    let out = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "off")
        .arg("check")
        .arg("-c")
        .arg(file)
        .output()
        .expect("run beredskab");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new("tests/configs").join(name)
}

/// Asserts that checking `name` fails with exactly these errors, given as
/// `LINE:COL: message`, in this order.
fn assert_errors(name: &str, expected: &[&str]) {
    let out = check(&fixture(name));
    assert_eq!(out.code, 2, "exit code for {name}; stderr:\n{}", out.stderr);
    assert_eq!(out.stdout, "", "nothing on stdout for {name}");
    let file = format!("tests/configs/{name}");
    let got: Vec<&str> = out.stderr.lines().collect();
    let want: Vec<String> = expected.iter().map(|e| format!("{file}:{e}")).collect();
    assert_eq!(got, want, "errors for {name}");
}

#[test]
fn a_minimal_valid_config_passes() {
    let out = check(&fixture("minimal.toml"));
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    assert_eq!(
        out.stdout,
        "ok: 1 services, 1 components, 1 roles, 0 probes, 0 subscriptions, 1 policies\n"
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn the_shipped_example_passes_without_warnings() {
    let out = check(Path::new("deploy/example/beredskab.toml"));
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    assert!(out.stdout.starts_with("ok: "), "{}", out.stdout);
    assert_eq!(out.stderr, "");
}

#[test]
fn a_missing_secret_is_a_warning_at_the_key_that_names_it() {
    let out = check_with(Path::new("deploy/example/beredskab.toml"), &[]);
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    assert!(out.stdout.starts_with("ok: "), "{}", out.stdout);
    let warnings: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warnings.len(), 3, "{}", out.stderr);
    assert!(warnings.iter().all(
        |w| w.starts_with("deploy/example/beredskab.toml:") && w.contains(": warning: secret ")
    ));
    assert!(
        out.stderr
            .contains("secret BEREDSKAB_SECRET (server.secret_env) is not set"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("secret SMS_TOKEN (channel \"sms\" header Authorization) is not set"),
        "{}",
        out.stderr
    );
}

#[test]
fn warnings_are_printed_and_do_not_fail() {
    let out = check(&fixture("warnings.toml"));
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    assert_eq!(
        out.stdout,
        "ok: 1 services, 3 components, 0 roles, 0 probes, 0 subscriptions, 1 policies\n"
    );
    // srv-spare feeds the service as srv-mail's backup; srv-forgotten
    // feeds nothing.
    assert_eq!(
        out.stderr.lines().collect::<Vec<_>>(),
        [
            "tests/configs/warnings.toml:15:6: warning: component \"srv-forgotten\" feeds no service",
            "tests/configs/warnings.toml:24:6: warning: policy \"unused\" is not used by any service",
        ]
    );
}

#[test]
fn a_toml_syntax_error_is_located_and_stops_the_check() {
    assert_errors(
        "syntax.toml",
        &["2:15: invalid basic string, expected `\"`"],
    );
}

#[test]
fn unknown_keys_are_errors_at_the_key() {
    assert_errors(
        "unknown-keys.toml",
        &[
            "8:1: unknown key \"depnds_on\" in [[component]]",
            "14:3: unknown key \"servise\"",
            "19:1: missing key \"on\" in [[policy.step]]",
            "20:1: unknown key \"onn\" in [[policy.step]]",
        ],
    );
}

/// An unknown key is an error, but not one that hides the rest: the
/// reference checks still run on the file around it.
#[test]
fn unknown_keys_do_not_hide_the_other_errors() {
    assert_errors(
        "unknown-and-dangling.toml",
        &[
            "5:1: unknown key \"colour\" in [site]",
            "10:1: unknown key \"colour\" in [[component]]",
            "15:27: service \"mail\" depends on unknown component or service \"exchange\"",
            "22:11: policy \"standard\" step 1 notify names unknown role \"it-chef\"",
            "23:8: policy \"standard\" step 1 uses unknown channel \"sms\"",
            "24:1: unknown key \"delay\" in [[policy.step]]",
            "27:30: unknown key \"quantil\" in [estimate.history]",
            "27:45: unknown key \"minsamples\" in [estimate.history]",
            "29:2: unknown key \"componnet\"",
        ],
    );
}

/// The daemon refuses a file whose only fault is an unknown key: a typo
/// must not silently disable what the key was meant to say.
#[test]
fn run_refuses_a_config_whose_only_fault_is_an_unknown_key() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("check-run-unknown-key");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let minimal = std::fs::read_to_string(fixture("minimal.toml")).expect("read minimal.toml");
    let text = minimal.replacen(
        "kind = \"server\"\n",
        "kind = \"server\"\ncolour = \"red\"\n",
        1,
    ) + "\n[server]\nlisten = \"127.0.0.1:0\"\n";
    let file = dir.join("beredskab.toml");
    std::fs::write(&file, text).expect("write config");

    let mut child = Command::new(env!("CARGO_BIN_EXE_beredskab"))
        .env("RUST_LOG", "off")
        .arg("run")
        .arg("-c")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start beredskab run");
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for beredskab run") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("beredskab run started on a config with an unknown key");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{}:9:1: unknown key \"colour\" in [[component]]\n",
            file.display()
        )
    );
}

#[test]
fn dangling_references_are_all_reported_at_once() {
    assert_errors(
        "dangling.toml",
        &[
            "8:15: component \"srv-x\" depends on unknown component \"net-cor\"",
            "9:10: component \"srv-x\" has unknown backup component \"srv-spare\"",
            "14:24: service \"mail\" depends on unknown component or service \"exchange\"",
            "15:9: service \"mail\" owner names unknown role \"it-chief\"",
            "16:13: service \"mail\" contacts names unknown person \"p-nobody\"",
            "17:10: service \"mail\" uses unknown policy \"standrd\"",
            "18:20: service \"mail\" recovery_notify names unknown group \"leaders\"",
            "26:11: role \"it-chef\" primary names unknown person \"p-b\"",
            "31:20: channel \"mail\" requires unknown service \"e-mail\"",
            "32:12: channel \"mail\" falls back to unknown channel \"sms\"",
            "39:8: policy \"standard\" step 1 uses unknown channel \"pigeon\"",
        ],
    );
}

#[test]
fn a_dependency_cycle_names_its_members() {
    assert_errors("cycle.toml", &["7:15: cycle: a -> b -> c -> a"]);
}

#[test]
fn a_fallback_cycle_names_its_channels() {
    assert_errors(
        "fallback-cycle.toml",
        &["7:12: fallback cycle: mail -> sms -> mail"],
    );
}

#[test]
fn roles_need_people_and_deputies_other_than_the_primary() {
    assert_errors(
        "roles.toml",
        &[
            "15:20: role \"it-chef\": deputy \"p-a\" is also the primary",
            "19:74: role \"network\": rotation has no people",
            "21:1: role \"nobody\" needs a primary or a rotation",
            "26:36: role \"late\": rotation start \"next monday\" is not an RFC 3339 time: \
             failed to parse four digit integer as year: invalid digit, expected 0-9 but got n",
            "30:12: group cycle: leaders -> staff -> leaders",
        ],
    );
}

#[test]
fn unparsable_durations_are_errors_at_their_value() {
    let units = "supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years \
                 (and few variations)";
    assert_errors(
        "durations.toml",
        &[
            "5:16: ack_link_ttl in [server]: invalid duration \"one day\": expected number at 0",
            &format!(
                "11:9: every in [[probe]]: invalid duration \"10 sekunder\": \
                 unknown time unit \"sekunder\", {units}"
            ),
            &format!(
                "20:20: by_kind.fire in [estimate]: invalid duration \"1 dy\": \
                 unknown time unit \"dy\", {units}"
            ),
        ],
    );
}

/// Humantime reads durations of billions of years, which no plan means and
/// the engine's clock and calendar need not hold (a rotation of 30,000,000
/// days made `drill` panic). Everything beyond 100 years is refused where it
/// is written; exactly 100 years (`status_every`) is allowed.
#[test]
fn durations_longer_than_a_hundred_years_are_errors_at_their_value() {
    let expected = [
        "22:22: role \"drift\": rotation every 82135years 6months 8days 14h 38m 24s \
         is longer than 100 years",
        "30:16: policy \"standard\": deputy_after 500years is longer than 100 years",
        "33:6: policy \"standard\" step 1: step condition \"expected > 18446744073709551615s\": \
         duration \"18446744073709551615s\" is longer than 100 years",
        "38:22: estimate by_kind server 100years 1s is longer than 100 years",
    ];
    assert_errors("long-durations.toml", &expected);

    // `drill` loads the same config: it refuses it the same way instead of
    // running into the overflow.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("check-long-durations");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let scenario = dir.join("alarm.toml");
    std::fs::write(
        &scenario,
        "end = \"1h\"\n[[event]]\nat = \"0s\"\n\
         alarm = { component = \"srv-mail\", kind = \"server\", state = \"firing\" }\n",
    )
    .expect("write scenario");
    let out = Command::new(env!("CARGO_BIN_EXE_beredskab"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "off")
        .args([
            "drill",
            "-c",
            "tests/configs/long-durations.toml",
            "--scenario",
        ])
        .arg(&scenario)
        .output()
        .expect("run beredskab drill");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(out.stdout.is_empty(), "no drill output on a refused config");
    let want: Vec<String> = expected
        .iter()
        .map(|e| format!("tests/configs/long-durations.toml:{e}"))
        .collect();
    assert_eq!(stderr.lines().collect::<Vec<_>>(), want);
}

#[test]
fn step_conditions_that_do_not_parse_are_errors() {
    assert_errors(
        "steps.toml",
        &[
            "11:6: policy \"standard\" step 1: step condition \"expected 30m\" does not parse: \
             expected `open`, `resolved`, `level crisis`, `expected > DUR`, `unacked DUR` or `open DUR`",
            "15:6: policy \"standard\" step 2: step condition \"unacked soon\": \
             invalid duration \"soon\": expected number at 0",
        ],
    );
}

#[test]
fn subscriptions_and_probes_must_fit_the_catalogue() {
    assert_errors(
        "sources.toml",
        &[
            "5:7: mqtt url \"tcp://127.0.0.1:1883\" is not mqtt://HOST:PORT or mqtts://HOST:PORT",
            "10:13: subscription component \"{2}\" refers to wildcard {2} but topic \
             \"raadhus/+/brand\" has 1",
            "13:9: topic filter \"raadhus/#/brand\" has # before its last level",
            "20:13: subscription names unknown component \"mains\"",
            "24:13: probe \"gen\" names unknown component \"generator\"",
            "26:14: probe \"gen\": fail_after must be at least 1",
            "28:11: probe \"gen\": \"running\" is not a JSON pointer (starts with /)",
            "31:1: probe \"gen\": a check needs exactly one of below, above or equals",
            "38:6: duplicate probe id \"gen\"",
        ],
    );
}

#[test]
fn settings_are_checked_for_content_not_only_type() {
    assert_errors(
        "settings.toml",
        &[
            "3:12: unknown time zone \"Europe/Kobenhavn\": \
             failed to find time zone `Europe/Kobenhavn` in time zone database",
            "6:10: listen address \"localhost\" is not IP:PORT",
            "9:7: store url \"mysql://beredskab\" is not sqlite://FILE or postgres://…",
            "13:10: token \"phone\": sha256 must be 64 hexadecimal digits",
            "15:10: token \"phone\" names unknown person \"p-ghost\"",
            "17:1: channel \"sms\" (sms-http) needs a url",
            "20:10: channel \"sms\": format applies only to webhook channels",
            "21:29: channel \"sms\": header \"Authorization\" has an invalid value \
             (a literal without control characters, or env:VARIABLE)",
            "23:1: channel \"mail\" (smtp) needs from",
            "29:13: estimate by_kind: \"fyre\" is not an alarm kind (fire, power, generator, ups, \
             environment, network, server, application, security, generic)",
            "30:27: estimate history min_samples must be at least 1",
            "30:41: estimate history quantile 1.5 is not in (0, 1]",
        ],
    );
}

#[test]
fn a_missing_file_is_bad_usage() {
    let out = check(Path::new("tests/configs/does-not-exist.toml"));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("does-not-exist.toml"), "{}", out.stderr);
}

/// A catalogue of 100,000 components in one long chain closed into a
/// cycle: found and named without exhausting the stack, quickly.
#[test]
fn a_huge_catalogue_with_a_long_cycle_is_checked_quickly() {
    const N: usize = 100_000;
    let mut text = String::from("[site]\nname = \"big\"\n");
    for i in 0..N {
        let dep = (i + N - 1) % N;
        text.push_str(&format!(
            "\n[[component]]\nid = \"c{i}\"\nkind = \"server\"\ndepends_on = [\"c{dep}\"]\n"
        ));
    }
    text.push_str("\n[[service]]\nid = \"s\"\ncriticality = \"life\"\ndepends_on = [\"c0\"]\n");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("check-huge");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("big.toml");
    std::fs::write(&file, text).expect("write config");

    let started = Instant::now();
    let out = check(&file);
    let took = started.elapsed();
    assert_eq!(out.code, 2, "stderr starts:\n{:.500}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one cycle, reported once");
    let want = format!(
        "{}:7:15: cycle: c0 -> c{} -> c{} -> ",
        file.display(),
        N - 1,
        N - 2
    );
    assert!(lines[0].starts_with(&want), "{:.200}", lines[0]);
    assert!(
        lines[0].ends_with(" -> c1 -> c0"),
        "{}",
        &lines[0][lines[0].len() - 60..]
    );
    // How long it takes is measured by bench/engine-scale.sh, not asserted
    // here: a busy machine would fail a correct build.
    eprintln!("check of {N} components with a cycle took {took:?}");
}

/// A scenario whose clock would run past 100 years, or whose ETA is absurd,
/// is refused (exit 2) rather than run for ever or wrapped.
#[test]
fn drill_refuses_absurd_scenario_durations() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("drill-absurd");
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (file, scenario, says) in [
        ("end.toml", "end = \"18446744073709551615s\"\n", "end"),
        (
            "eta.toml",
            "end = \"1h\"\n[[event]]\nat = \"0s\"\n\
             alarm = { component = \"srv-esdh\", kind = \"server\", state = \"firing\" }\n\
             [[event]]\nat = \"1m\"\neta = { incident = 1, expected = \"18446744073709551615s\" }\n",
            "event 2: eta expected",
        ),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, scenario).expect("write scenario");
        let out = Command::new(env!("CARGO_BIN_EXE_beredskab"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "off")
            .args(["drill", "-c", "deploy/example/beredskab.toml", "--scenario"])
            .arg(&path)
            .output()
            .expect("run beredskab drill");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("longer than 100 years"),
            "{file}: {stderr}"
        );
    }
}
