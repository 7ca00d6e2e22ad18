//! Snapshots restore exactly. Every scenario of `tests/scenarios/` is run
//! the way `drill` runs it, once straight through and once with the engine
//! snapshotted, written as JSON, read back and restored after every step
//! (every event, probe evaluation and tick); both runs must give the very
//! same effects at the very same times. Along the way, an input the engine
//! called unchanged must have left the snapshot exactly as it was.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use beredskab::catalogue::Catalogue;
use beredskab::config;
use beredskab::drill::{self, Done, Scenario};
use beredskab::engine::{Engine, Snapshot};

fn catalogue(path: &Path) -> Arc<Catalogue> {
    let loaded = config::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Arc::new(Catalogue::build(&loaded.config).expect("the plan resolves"))
}

fn scenario(path: &Path) -> Scenario {
    let text = std::fs::read_to_string(path).expect("read scenario");
    Scenario::parse(&path.display().to_string(), &text).expect("scenario parses")
}

/// Scenarios longer than this (4 h) are restored at every step that did
/// anything (changed state, ran a timer, had effects) and at every
/// [`SAMPLE`]th step that did nothing; the week-long outage has 140 000
/// steps, each snapshot with a week of timeline, too slow for a debug build.
const LONG_S: u64 = 4 * 3600;
const SAMPLE: usize = 500;

/// The effects of a run, one Debug line each with its time. `hook` runs
/// after each step with the number of effects so far.
fn run(
    cat: &Arc<Catalogue>,
    s: &Scenario,
    mut hook: impl FnMut(&mut Engine, Done, usize),
) -> Vec<String> {
    let lines = RefCell::new(Vec::new());
    drill::drive(
        cat.clone(),
        s,
        |now, effects| {
            let mut lines = lines.borrow_mut();
            lines.extend(effects.iter().map(|e| format!("{} {e:?}", now.0)));
            Ok(())
        },
        |engine, done| hook(engine, done, lines.borrow().len()),
    )
    .expect("drill runs");
    lines.into_inner()
}

/// Runs a scenario both ways and compares; returns how many restores.
fn check(cat: &Arc<Catalogue>, path: &Path) -> usize {
    let s = scenario(path);
    let straight = run(cat, &s, |_, _, _| {});
    let long = s.end.as_secs() > LONG_S;
    let mut restores = 0;
    let mut step = 0;
    let mut last: Option<(usize, String)> = None;
    let mut seen_effects = 0;
    let mut wakeup = None;
    let restored = run(cat, &s, |engine, done, effects| {
        step += 1;
        let had_effects = effects > seen_effects;
        seen_effects = effects;
        let ran_timer = done == Done::Tick && wakeup != engine.next_wakeup();
        wakeup = engine.next_wakeup();
        let busy = had_effects || ran_timer || done == (Done::Input { changed: true });
        if long && !busy && step % SAMPLE != 0 {
            return;
        }
        let json = serde_json::to_string(&engine.snapshot()).expect("snapshot serializes");
        if let Some((at, before)) = &last
            && *at + 1 == step
            && done == (Done::Input { changed: false })
        {
            assert_eq!(
                before,
                &json,
                "{}: an input reported unchanged changed the snapshot",
                path.display()
            );
        }
        let snap: Snapshot = serde_json::from_str(&json).expect("snapshot reads back");
        let (e, warnings) = Engine::restore(cat.clone(), &snap);
        assert!(warnings.is_empty(), "{}: {warnings:?}", path.display());
        *engine = e;
        last = Some((step, json));
        restores += 1;
    });
    assert!(
        !straight.is_empty(),
        "{}: no effects at all",
        path.display()
    );
    for (i, (a, b)) in straight.iter().zip(&restored).enumerate() {
        assert_eq!(
            a,
            b,
            "{}: effect {i} differs after restores",
            path.display()
        );
    }
    assert_eq!(
        straight.len(),
        restored.len(),
        "{}: a different number of effects after restores",
        path.display()
    );
    restores
}

#[test]
fn every_scenario_runs_the_same_when_restored_after_every_step() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let cat = catalogue(&dir.join("plan.toml"));
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("read tests/scenarios")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && !p.ends_with("plan.toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 20, "scenarios found: {paths:?}");
    for path in &paths {
        let t = std::time::Instant::now();
        let restores = check(&cat, path);
        eprintln!(
            "{}: {restores} restores in {:?}",
            path.display(),
            t.elapsed()
        );
        assert!(restores > 0, "{}", path.display());
    }
}

#[test]
fn the_example_drill_runs_the_same_when_restored_after_every_step() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cat = catalogue(&root.join("deploy/example/beredskab.toml"));
    check(&cat, &root.join("deploy/example/drill.toml"));
}
