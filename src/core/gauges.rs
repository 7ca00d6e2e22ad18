//! What the live incidents add up to per service and per severity: the
//! incident gauges (`beredskab_incidents_open` and
//! `beredskab_service_first_expected_back_timestamp_seconds`) and the
//! board's newest incident and first opening per service. Kept up to date
//! from the incidents each batch changed instead of worked out again from
//! every live incident at every commit: with thousands of incidents open,
//! those walks cost more than the commit itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::catalogue::{Catalogue, NodeId, NodeKind};
use crate::engine::{Engine, IncidentId, Severity, Ts};
use crate::metrics::Metrics;

/// What one live incident adds to the gauges.
#[derive(Debug, Clone, PartialEq)]
struct Share {
    severity: Severity,
    opened: Ts,
    /// When its services were first expected back (Unix ms), if estimated.
    back_ms: Option<i64>,
    services: Vec<NodeId>,
}

/// The gauges' sums, by incident.
#[derive(Debug, Default)]
pub(super) struct IncidentGauges {
    live: HashMap<IncidentId, Share>,
    open: [i64; Severity::ALL.len()],
    /// Per service, the first expected-back times of the live incidents
    /// affecting it, each with how many incidents have it: the gauge is
    /// the latest.
    back: HashMap<NodeId, BTreeMap<i64, u32>>,
    /// Per service, the live incidents affecting it, by id and by opening.
    affecting: HashMap<NodeId, Affecting>,
}

/// The live incidents affecting one service, by id and by opening.
type Affecting = (BTreeSet<IncidentId>, BTreeSet<(Ts, IncidentId)>);

impl IncidentGauges {
    /// Starts again from every live incident, and sets every gauge.
    pub(super) fn rebuild(&mut self, engine: &Engine, cat: &Catalogue, metrics: &Metrics) {
        *self = IncidentGauges::default();
        let mut changed = BTreeSet::new();
        for id in engine.live_incidents() {
            self.take(id, share(engine, id), &mut changed);
        }
        let series = self
            .back
            .iter()
            .filter_map(|(&node, times)| {
                let (&latest, _) = times.last_key_value()?;
                service(cat, node).map(|(s, c)| (s, c, latest as f64 / 1000.0))
            })
            .collect();
        metrics.set_expected_back(series);
        self.set_open(metrics);
    }

    /// Takes the incidents in `ids` as they are now (live, changed, or gone)
    /// and sets the gauges they move.
    pub(super) fn update(
        &mut self,
        ids: impl IntoIterator<Item = IncidentId>,
        engine: &Engine,
        cat: &Catalogue,
        metrics: &Metrics,
    ) {
        let mut changed = BTreeSet::new();
        let before = self.open;
        for id in ids {
            self.take(id, share(engine, id), &mut changed);
        }
        for node in changed {
            let latest = self
                .back
                .get(&node)
                .and_then(|times| times.last_key_value())
                .map(|(&ms, _)| ms as f64 / 1000.0);
            if let Some((s, c)) = service(cat, node) {
                metrics.set_expected_back_of(s, c, latest);
            }
        }
        if self.open != before {
            self.set_open(metrics);
        }
    }

    /// Replaces what incident `id` adds with `now`, noting the services
    /// whose latest time may have moved.
    fn take(&mut self, id: IncidentId, now: Option<Share>, changed: &mut BTreeSet<NodeId>) {
        if self.live.get(&id) == now.as_ref() {
            return;
        }
        if let Some(old) = self.live.remove(&id) {
            self.open[old.severity as usize] -= 1;
            for node in &old.services {
                if let Some((ids, opened)) = self.affecting.get_mut(node) {
                    ids.remove(&id);
                    opened.remove(&(old.opened, id));
                    if ids.is_empty() {
                        self.affecting.remove(node);
                    }
                }
            }
            if let Some(ms) = old.back_ms {
                for node in old.services {
                    if let Some(times) = self.back.get_mut(&node) {
                        if let Some(n) = times.get_mut(&ms) {
                            *n -= 1;
                            if *n == 0 {
                                times.remove(&ms);
                            }
                        }
                        if times.is_empty() {
                            self.back.remove(&node);
                        }
                    }
                    changed.insert(node);
                }
            }
        }
        if let Some(new) = now {
            self.open[new.severity as usize] += 1;
            for &node in &new.services {
                let (ids, opened) = self.affecting.entry(node).or_default();
                ids.insert(id);
                opened.insert((new.opened, id));
            }
            if let Some(ms) = new.back_ms {
                for &node in &new.services {
                    *self.back.entry(node).or_default().entry(ms).or_default() += 1;
                    changed.insert(node);
                }
            }
            self.live.insert(id, new);
        }
    }

    /// The newest live incident affecting `service`.
    pub(super) fn newest(&self, service: NodeId) -> Option<IncidentId> {
        let (ids, _) = self.affecting.get(&service)?;
        ids.last().copied()
    }

    /// When the first of the live incidents affecting `service` opened.
    pub(super) fn first_opened(&self, service: NodeId) -> Option<Ts> {
        let (_, opened) = self.affecting.get(&service)?;
        opened.first().map(|&(at, _)| at)
    }

    fn set_open(&self, metrics: &Metrics) {
        for (sev, n) in Severity::ALL.into_iter().zip(self.open) {
            metrics
                .incidents_open
                .with_label_values(&[sev.as_str()])
                .set(n);
        }
    }
}

/// What incident `id` adds, if it is live.
fn share(engine: &Engine, id: IncidentId) -> Option<Share> {
    let inc = engine.incident(id).filter(|i| i.state.is_live())?;
    let back_ms = (inc.first_expected_s > 0).then(|| {
        inc.opened
            .0
            .saturating_add(inc.first_expected_s.saturating_mul(1000))
    });
    Some(Share {
        severity: inc.severity,
        opened: inc.opened,
        back_ms,
        services: inc.services.keys().copied().collect(),
    })
}

/// A service's id and criticality; `None` for a component.
fn service(cat: &Catalogue, node: NodeId) -> Option<(&str, &str)> {
    let n = cat.node(node);
    match n.kind {
        NodeKind::Service(c) => Some((n.id.as_str(), c.as_str())),
        NodeKind::Component(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{AlarmKind, load_str};
    use crate::engine::{AlarmInput, AlarmSeverity, AlarmState, Event, Source, Ts};

    const PLAN: &str = r#"
[site]
name = "Test"
language = "en"
[[person]]
id = "p1"
name = "On call"
[[role]]
id = "r"
primary = "p1"
[[channel]]
id = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
[[policy]]
id = "p"
[[policy.step]]
on = "open"
notify = ["role:r"]
via = ["hook"]
[[component]]
id = "room-a"
kind = "room"
[[component]]
id = "room-b"
kind = "room"
[[component]]
id = "srv-1"
kind = "server"
depends_on = ["room-a"]
[[service]]
id = "care"
criticality = "life"
depends_on = ["srv-1", "room-b"]
policy = "p"
[[service]]
id = "mail"
criticality = "important"
depends_on = ["room-a"]
policy = "p"
"#;

    fn alarm(component: &str, kind: AlarmKind, state: AlarmState) -> Event {
        Event::Alarm(AlarmInput {
            component: component.into(),
            kind,
            state,
            severity: AlarmSeverity::Critical,
            source: Source::Http,
            message: None,
            key: None,
        })
    }

    /// After every step, the sums kept from the changed incidents are the
    /// sums worked out from every live incident.
    #[test]
    fn kept_sums_match_sums_from_scratch() {
        let loaded = load_str("plan.toml", PLAN).expect("test plan is valid");
        let cat = Arc::new(Catalogue::build(&loaded.config).expect("catalogue"));
        let mut engine = Engine::new(cat.clone());
        let metrics = Metrics::new();
        let mut kept = IncidentGauges::default();
        let steps = [
            ("srv-1", AlarmKind::Server, AlarmState::Firing),
            ("room-b", AlarmKind::Fire, AlarmState::Firing),
            ("room-a", AlarmKind::Fire, AlarmState::Firing),
            ("srv-1", AlarmKind::Server, AlarmState::Cleared),
            ("room-b", AlarmKind::Fire, AlarmState::Cleared),
            ("room-a", AlarmKind::Fire, AlarmState::Cleared),
        ];
        let mut opened = 0;
        for (i, (component, kind, state)) in steps.into_iter().enumerate() {
            let at = Ts(1_800_000_000_000 + i as i64 * 60_000);
            engine
                .handle(at, alarm(component, kind, state))
                .expect("handled");
            kept.update(engine.take_changed_incidents(), &engine, &cat, &metrics);
            let mut fresh = IncidentGauges::default();
            fresh.rebuild(&engine, &cat, &metrics);
            assert_eq!(kept.open, fresh.open, "after step {i}");
            assert_eq!(kept.back, fresh.back, "after step {i}");
            assert_eq!(kept.affecting, fresh.affecting, "after step {i}");
            opened = opened.max(kept.open.iter().sum::<i64>());
        }
        assert!(opened > 0, "no incident was ever open");
        assert_eq!(kept.open, [0; 3], "every incident is over");
        assert!(kept.back.is_empty());
        assert!(kept.affecting.is_empty());
    }
}
