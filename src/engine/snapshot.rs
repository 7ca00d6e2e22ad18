//! Snapshots: the engine's state as plain data, so that the daemon can
//! store it (as JSON) and rebuild the engine after a crash or a config
//! reload by restoring the latest snapshot and replaying only the inputs
//! logged after it.
//!
//! Nothing in a snapshot is a catalogue index. Components, services,
//! people, roles, channels, policies, probes and topics are named by their
//! config ids, and a policy step by its policy and `on` text (with the
//! occurrence, when a policy repeats a text). So a snapshot restores
//! against an *edited* config: whatever no longer exists is dropped with a
//! warning, never a panic. What can be derived is recomputed, not stored:
//! own, effective and passed-on health (from the firing alarms, which hold
//! the probes' verdicts), the member and root indexes, wake-ups, heartbeat
//! timers and caches.
//!
//! Against the catalogue it was taken from (the same
//! [`Catalogue::fingerprint`]) a restore is exact: the engine goes on with
//! the effects the original would have produced. Against an edited one,
//! the first tick (due at the snapshot's time) reconciles each live
//! incident with the new config: an incident none of whose components
//! remain is resolved quietly; the others are re-rooted or resolved as
//! their remaining members say, take on the services now affected, adopt
//! their services' policies and fire the steps that are already true, as
//! for a policy that joins later.
//!
//! An incident whose root is gone takes its first remaining member as
//! root (else its first remaining service). One with nothing left keeps
//! its id and record, rooted at the catalogue's first node as a
//! placeholder, and is resolved if it was live. Only a config with no
//! components or services at all loses the incidents, and their numbering.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::incident::Chain;
use super::intake::{self, GeneratorReading};
use super::{
    AlarmSeverity, Basis, Effect, Engine, Firing, Health, Heartbeat, Incident, IncidentId,
    IncidentState, Level, Out, ProbeState, Severity, Source, TimelineEntry, Ts, probe_count_cap,
};
use crate::catalogue::{Catalogue, ChannelId, NodeId, PersonId, PolicyId, RoleId};
use crate::config::AlarmKind;

/// A config id or other text in a snapshot: borrowed from the engine
/// when it is taken, owned when it is read back.
type Name<'a> = Cow<'a, str>;

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The engine's state, named by config ids. Serialize it with serde (the
/// daemon stores JSON); build it with [`Engine::snapshot`], use it with
/// [`Engine::restore`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot<'a> {
    /// [`SNAPSHOT_VERSION`] when written; a restore refuses other versions.
    pub version: u32,
    /// The fingerprint of the catalogue the snapshot was taken from.
    pub config: Name<'a>,
    /// The latest time an input or timer changed the engine. Timers that
    /// fell due before it run at this time, and so does the reconcile tick
    /// after a restore against an edited config: a daemon reloading its
    /// config may set it to the reload time, so that the new config takes
    /// effect then rather than at the last change.
    pub clock: Option<Ts>,
    alarms: Vec<NodeAlarms<'a>>,
    probes: Vec<ProbeSnap<'a>>,
    generators: Vec<GeneratorSnap<'a>>,
    heartbeats: Vec<HeartbeatSnap<'a>>,
    history: Vec<HistorySnap<'a>>,
    incidents: Vec<IncidentSnap<'a>>,
    /// The id the next incident gets: resolved incidents are no longer in
    /// `incidents`, but their numbers stay taken.
    #[serde(default)]
    next_incident: IncidentId,
}

/// The firing alarms of one node, in the order they began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NodeAlarms<'a> {
    node: Name<'a>,
    firing: Vec<AlarmSnap>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AlarmSnap {
    source: Source,
    kind: AlarmKind,
    key: String,
    severity: AlarmSeverity,
}

/// Every probe of the catalogue, so a restore knows which alarm keys were
/// probe ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ProbeSnap<'a> {
    id: Name<'a>,
    node: Name<'a>,
    /// Left out at zero, as the flags are when false: a snapshot lists
    /// every probe of the catalogue, and most are healthy (10,000 probes
    /// wrote 888 KB with them, 458 KB without).
    #[serde(default, skip_serializing_if = "is_default")]
    failures: u32,
    successes: u32,
    #[serde(default, skip_serializing_if = "is_default")]
    down: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    degraded: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GeneratorSnap<'a> {
    node: Name<'a>,
    running: Option<bool>,
    /// As text: Rust prints the shortest string that parses back to the
    /// same `f64`, which a JSON number does not promise.
    fuel_percent: Option<Name<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HeartbeatSnap<'a> {
    topic: Name<'a>,
    node: Name<'a>,
    deadline: Ts,
    lost: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HistorySnap<'a> {
    root: Name<'a>,
    durations_s: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct IncidentSnap<'a> {
    id: IncidentId,
    opened: Ts,
    root: Name<'a>,
    members: Vec<Name<'a>>,
    services: Vec<ServiceSnap<'a>>,
    severity: Severity,
    state: StateSnap,
    level: Level,
    expected_s: i64,
    basis: Basis,
    first_expected_s: i64,
    first_basis: Basis,
    acknowledged_at: Option<Ts>,
    acknowledged_by: Option<Name<'a>>,
    resolved_at: Option<Ts>,
    resolved_by: Option<Name<'a>>,
    fuel_out: Option<Ts>,
    timeline: Cow<'a, [TimelineEntry]>,
    settle_until: Option<Ts>,
    notify_from: Option<Ts>,
    policies: Vec<Name<'a>>,
    fired: Vec<StepRef<'a>>,
    told: Vec<ToldSnap<'a>>,
    chains: Vec<ChainSnap<'a>>,
    status_next: Vec<StatusSnap<'a>>,
    major_since: Option<Ts>,
    generator_alerted: bool,
    reported: Option<ReportedSnap<'a>>,
    batches: u32,
    step_sent: Vec<SentSnap<'a>>,
    /// Acknowledgement links used on it (sorted).
    #[serde(default)]
    used_links: Vec<Name<'a>>,
    /// The crisis meeting place, once raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meeting_place: Option<Name<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ServiceSnap<'a> {
    id: Name<'a>,
    health: Health,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StateSnap {
    Open,
    Acknowledged,
    Resolved,
    Merged { into: IncidentId },
}

/// A policy step: its policy, its `on` text, and which of the policy's
/// steps with that text (0 for the first).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct StepRef<'a> {
    policy: Name<'a>,
    on: Name<'a>,
    #[serde(default, skip_serializing_if = "is_default")]
    nth: usize,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ToldSnap<'a> {
    person: Name<'a>,
    role: Option<Name<'a>>,
    channel: Name<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ChainSnap<'a> {
    role: Name<'a>,
    started: Ts,
    every_ms: u64,
    deputies: Vec<Name<'a>>,
    done: usize,
    via: Vec<Name<'a>>,
    crisis: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StatusSnap<'a> {
    policy: Name<'a>,
    at: Ts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ReportedSnap<'a> {
    root: Name<'a>,
    services: Vec<Name<'a>>,
    severity: Severity,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct SentSnap<'a> {
    person: Name<'a>,
    channel: Name<'a>,
    reason: Name<'a>,
}

impl Engine {
    /// The engine's state as a [`Snapshot`].
    pub fn snapshot(&self) -> Snapshot<'_> {
        let cat = &*self.cat;
        let name = |n: NodeId| Name::from(cat.node(n).id.as_str());

        let mut alarms: Vec<NodeAlarms> = self
            .firing
            .iter()
            .filter(|(_, list)| !list.is_empty())
            .map(|(&n, list)| NodeAlarms {
                node: name(n),
                firing: list
                    .iter()
                    .map(|f| AlarmSnap {
                        source: f.source,
                        kind: f.kind,
                        key: f.key,
                        severity: f.severity,
                    })
                    .collect(),
            })
            .collect();
        alarms.sort_by(|a, b| a.node.cmp(&b.node));

        let probes = cat
            .probes
            .iter()
            .zip(&self.probes)
            .map(|(p, st)| ProbeSnap {
                id: Name::from(p.config.id.as_str()),
                node: name(p.node),
                failures: st.failures,
                successes: st.successes,
                down: st.down,
                degraded: st.degraded,
            })
            .collect();

        let mut generators: Vec<GeneratorSnap> = self
            .graph
            .generator
            .iter()
            .map(|(&n, r)| GeneratorSnap {
                node: name(n),
                running: r.running,
                fuel_percent: r.fuel_percent.map(|f| Name::from(f.to_string())),
            })
            .collect();
        generators.sort_by(|a, b| a.node.cmp(&b.node));

        let mut heartbeats: Vec<HeartbeatSnap> = self
            .heartbeats
            .iter()
            .map(|(topic, h)| HeartbeatSnap {
                topic: Name::from(topic.as_str()),
                node: name(h.node),
                deadline: h.deadline,
                lost: h.lost,
            })
            .collect();
        heartbeats.sort_by(|a, b| a.topic.cmp(&b.topic));

        let mut history: Vec<HistorySnap> = self
            .history
            .iter()
            .map(|(&n, d)| HistorySnap {
                root: name(n),
                durations_s: d.iter().copied().collect(),
            })
            .collect();
        history.sort_by(|a, b| a.root.cmp(&b.root));

        Snapshot {
            version: SNAPSHOT_VERSION,
            config: Name::from(cat.fingerprint()),
            clock: self.clock,
            alarms,
            probes,
            generators,
            heartbeats,
            history,
            incidents: self
                .incidents
                .iter()
                .map(|i| incident_snap(cat, i))
                .collect(),
            next_incident: self.incidents.next_id(),
        }
    }

    /// Rebuilds an engine from a snapshot against `cat`, which may be an
    /// edited version of the config the snapshot was taken from. Returns
    /// the engine and warnings: what could not be carried over, and why.
    pub fn restore(cat: Arc<Catalogue>, snap: &Snapshot) -> (Engine, Vec<String>) {
        let mut r = Restore {
            cat: cat.clone(),
            warnings: Vec::new(),
            seen: HashSet::new(),
        };
        let mut e = Engine::new(cat);
        if snap.version != SNAPSHOT_VERSION {
            r.warn(format!(
                "snapshot version {} is not {SNAPSHOT_VERSION}: nothing restored",
                snap.version
            ));
            return (e, r.warnings);
        }
        r.state(&mut e, snap);
        r.incidents(&mut e, snap);
        let live = e.live_incidents();
        for &id in &live {
            e.update_wake(id);
        }
        e.clock = snap.clock;
        if snap.config != e.cat.fingerprint() && !live.is_empty() {
            // Bring live incidents in line with the new config at the
            // snapshot's time, as the first thing the engine does.
            let latest = e.incidents.iter().map(|i| i.opened).max();
            e.reconcile_at = snap.clock.or(latest);
            e.reconcile = live;
        }
        (e, r.warnings)
    }

    /// Brings the live incidents a restore marked in line with the edited
    /// config (see the module documentation).
    pub(super) fn reconcile(&mut self, now: Ts, out: &mut Out) {
        self.reconcile_at = None;
        for id in std::mem::take(&mut self.reconcile) {
            let Some(inc) = self.incident(id) else {
                continue;
            };
            if !inc.state.is_live() {
                continue;
            }
            if inc.members.is_empty() {
                self.retire(now, id, out);
                continue;
            }
            self.normalise(now, id, out);
            if self.incidents[id].state.is_live() {
                self.dirty.insert(id);
            }
        }
        // Services the new graph puts in trouble join their root's incident.
        let cat = self.cat.clone();
        for (i, node) in cat.nodes.iter().enumerate() {
            let h = self.graph.eff[i];
            if !node.is_service() || h == Health::Up {
                continue;
            }
            let Some(root) = self.root_of(NodeId(i as u32)) else {
                continue;
            };
            if let Some(&id) = self.member_of.get(&root) {
                let inc = &mut self.incidents[id];
                let e = inc.services.entry(NodeId(i as u32)).or_insert(h);
                *e = (*e).max(h);
                self.dirty.insert(id);
            }
        }
        self.flush(now, out);
    }

    /// Resolves, without notifying anyone, a live incident none of whose
    /// components are in the config any more.
    fn retire(&mut self, now: Ts, id: IncidentId, out: &mut Out) {
        let inc = &mut self.incidents[id];
        inc.state = IncidentState::Resolved;
        inc.resolved_at = Some(now);
        inc.chains.clear();
        inc.status_next.clear();
        inc.log(
            now,
            "resolved",
            "resolved: its components are no longer in the configuration".to_owned(),
            None,
        );
        let (root, opened) = (inc.root, inc.opened);
        if let Some(w) = inc.wake.take() {
            self.wakes.remove(&(w, id));
        }
        if self.root_of_incident.get(&root) == Some(&id) {
            self.root_of_incident.remove(&root);
        }
        self.dirty.remove(&id);
        out.incidents.push(Effect::IncidentResolved {
            incident: id,
            duration_ms: now.millis_since(opened),
        });
    }
}

fn step_ref(cat: &Catalogue, p: PolicyId, i: usize) -> StepRef<'_> {
    let policy = cat.policy(p);
    let on = &policy.steps[i].on_text;
    let nth = policy.steps[..i]
        .iter()
        .filter(|s| s.on_text == *on)
        .count();
    StepRef {
        policy: Name::from(policy.id.as_str()),
        on: Name::from(on.as_str()),
        nth,
    }
}

fn incident_snap<'a>(cat: &'a Catalogue, inc: &'a Incident) -> IncidentSnap<'a> {
    let name = |n: &NodeId| Name::from(cat.node(*n).id.as_str());
    let person = |p: &PersonId| Name::from(cat.person(*p).id.as_str());
    let channel = |c: &ChannelId| Name::from(cat.channel(*c).id.as_str());
    let role = |r: &RoleId| Name::from(cat.role(*r).id.as_str());
    let policy = |p: &PolicyId| Name::from(cat.policy(*p).id.as_str());
    let mut fired: Vec<(PolicyId, usize)> = inc.fired.iter().copied().collect();
    fired.sort();
    let mut step_sent: Vec<SentSnap> = inc
        .step_sent
        .iter()
        .map(|(p, c, reason)| SentSnap {
            person: person(p),
            channel: channel(c),
            reason: Name::from(reason.as_str()),
        })
        .collect();
    step_sent.sort();
    IncidentSnap {
        id: inc.id,
        opened: inc.opened,
        root: name(&inc.root),
        members: inc.members.iter().map(name).collect(),
        services: inc
            .services
            .iter()
            .map(|(s, h)| ServiceSnap {
                id: name(s),
                health: *h,
            })
            .collect(),
        severity: inc.severity,
        state: match inc.state {
            IncidentState::Open => StateSnap::Open,
            IncidentState::Acknowledged => StateSnap::Acknowledged,
            IncidentState::Resolved => StateSnap::Resolved,
            IncidentState::Merged(into) => StateSnap::Merged { into },
        },
        level: inc.level,
        expected_s: inc.expected_s,
        basis: inc.basis,
        first_expected_s: inc.first_expected_s,
        first_basis: inc.first_basis,
        acknowledged_at: inc.acknowledged_at,
        acknowledged_by: inc.acknowledged_by.as_deref().map(Name::from),
        resolved_at: inc.resolved_at,
        resolved_by: inc.resolved_by.as_deref().map(Name::from),
        fuel_out: inc.fuel_out,
        timeline: Cow::Borrowed(&inc.timeline),
        settle_until: inc.settle_until,
        notify_from: inc.notify_from,
        policies: inc.policies.iter().map(policy).collect(),
        fired: fired
            .into_iter()
            .map(|(p, i)| step_ref(cat, p, i))
            .collect(),
        told: inc
            .told
            .iter()
            .map(|(p, r, c)| ToldSnap {
                person: person(p),
                role: r.as_ref().map(role),
                channel: channel(c),
            })
            .collect(),
        chains: inc
            .chains
            .iter()
            .map(|c| ChainSnap {
                role: role(&c.role),
                started: c.started,
                every_ms: u64::try_from(c.every.as_millis()).unwrap_or(u64::MAX),
                deputies: c.deputies.iter().map(person).collect(),
                done: c.done,
                via: c.via.iter().map(channel).collect(),
                crisis: c.crisis,
            })
            .collect(),
        status_next: inc
            .status_next
            .iter()
            .map(|(p, at)| StatusSnap {
                policy: policy(p),
                at: *at,
            })
            .collect(),
        major_since: inc.major_since,
        generator_alerted: inc.generator_alerted,
        reported: inc
            .reported
            .as_ref()
            .map(|(root, services, severity)| ReportedSnap {
                root: Name::from(root.as_str()),
                services: services.iter().map(|s| Name::from(s.as_str())).collect(),
                severity: *severity,
            }),
        batches: inc.batches,
        step_sent,
        used_links: inc
            .used_links
            .iter()
            .map(|l| Name::from(l.as_str()))
            .collect(),
        meeting_place: inc.meeting_place.as_deref().map(Name::from),
    }
}

/// One restore's lookups and warnings.
struct Restore {
    cat: Arc<Catalogue>,
    warnings: Vec<String>,
    seen: HashSet<String>,
}

impl Restore {
    fn warn(&mut self, w: String) {
        if self.seen.insert(w.clone()) {
            self.warnings.push(w);
        }
    }

    /// A node by id; `what` says what is lost when it is gone.
    fn node(&mut self, id: &str, what: impl FnOnce() -> String) -> Option<NodeId> {
        let n = self.cat.node_id(id);
        if n.is_none() {
            self.warn(format!(
                "component or service {id:?} no longer exists: {}",
                what()
            ));
        }
        n
    }

    fn person(&mut self, id: &str, what: impl FnOnce() -> String) -> Option<PersonId> {
        let p = self.cat.person_id(id);
        if p.is_none() {
            self.warn(format!("person {id:?} no longer exists: {}", what()));
        }
        p
    }

    fn role(&mut self, id: &str, what: impl FnOnce() -> String) -> Option<RoleId> {
        let r = self.cat.role_id(id);
        if r.is_none() {
            self.warn(format!("role {id:?} no longer exists: {}", what()));
        }
        r
    }

    fn channel(&mut self, id: &str, what: impl FnOnce() -> String) -> Option<ChannelId> {
        let c = self.cat.channels.iter().position(|c| c.id == id);
        if c.is_none() {
            self.warn(format!("channel {id:?} no longer exists: {}", what()));
        }
        c.map(|c| ChannelId(c as u32))
    }

    fn policy(&mut self, id: &str, what: impl FnOnce() -> String) -> Option<PolicyId> {
        let p = self.cat.policies.iter().position(|p| p.id == id);
        if p.is_none() {
            self.warn(format!("policy {id:?} no longer exists: {}", what()));
        }
        p.map(|p| PolicyId(p as u32))
    }

    /// Alarms, probes, generator readings, heartbeats, health and history.
    fn state(&mut self, e: &mut Engine, snap: &Snapshot) {
        let cat = self.cat.clone();
        let was_probe: HashSet<&str> = snap.probes.iter().map(|p| &*p.id).collect();
        for p in &snap.probes {
            let Some(pid) = cat.probe_id(&p.id) else {
                self.warn(format!(
                    "probe {:?} no longer exists: its state is dropped",
                    p.id
                ));
                continue;
            };
            let probe = cat.probe(pid);
            if cat.node(probe.node).id != p.node {
                self.warn(format!(
                    "probe {:?} now watches {:?}, not {:?}: its state starts over",
                    p.id,
                    cat.node(probe.node).id,
                    p.node
                ));
                continue;
            }
            let cap = probe_count_cap(&probe.config);
            e.probes[pid.0 as usize] = ProbeState {
                failures: p.failures.min(cap),
                successes: p.successes.min(cap),
                down: p.down,
                degraded: p.degraded,
            };
        }

        for g in &snap.generators {
            let Some(n) = self.node(&g.node, || "its generator reading is dropped".into()) else {
                continue;
            };
            if cat.node(n).generator_probe.is_none() {
                self.warn(format!(
                    "{:?} has no generator probe any more: its generator reading is dropped",
                    g.node
                ));
                continue;
            }
            let fuel_percent = match g.fuel_percent.as_deref().map(str::parse::<f64>) {
                None => None,
                Some(Ok(f)) if f.is_finite() => Some(f),
                Some(_) => {
                    self.warn(format!(
                        "generator {:?}: fuel reading {:?} is not a number: dropped",
                        g.node, g.fuel_percent
                    ));
                    None
                }
            };
            e.graph.generator.insert(
                n,
                GeneratorReading {
                    running: g.running,
                    fuel_percent,
                },
            );
        }

        // A heartbeat is carried over while its topic still routes, with a
        // heartbeat, to the same component; otherwise its lost-sensor alarm
        // could never clear, and goes with it.
        let mut dropped_heartbeats: HashSet<(String, String)> = HashSet::new();
        for h in &snap.heartbeats {
            let node = intake::route(&cat, &h.topic)
                .filter(|(_, sub, _)| sub.config.heartbeat.is_some())
                .and_then(|(_, _, component)| cat.node_id(&component))
                .filter(|&n| cat.node(n).id == h.node);
            match node {
                Some(node) => {
                    e.heartbeats.insert(
                        h.topic.to_string(),
                        Heartbeat {
                            deadline: h.deadline,
                            node,
                            lost: h.lost,
                        },
                    );
                    if !h.lost {
                        e.heartbeat_timers.insert((h.deadline, h.topic.to_string()));
                    }
                }
                None => {
                    self.warn(format!(
                        "topic {:?} no longer has a heartbeat for {:?}: its heartbeat is dropped",
                        h.topic, h.node
                    ));
                    dropped_heartbeats
                        .insert((h.node.to_string(), format!("heartbeat:{}", h.topic)));
                }
            }
        }

        for na in &snap.alarms {
            let count = na.firing.len();
            let Some(n) = self.node(&na.node, || {
                format!("its {count} firing alarm(s) are dropped")
            }) else {
                continue;
            };
            let mut list = super::alarms::FiringAlarms::default();
            for a in &na.firing {
                let probe_gone = a.source == Source::Probe
                    && was_probe.contains(a.key.as_str())
                    && cat.probe_id(&a.key).map(|p| cat.probe(p).node) != Some(n);
                if probe_gone {
                    self.warn(format!(
                        "probe {:?} no longer watches {:?}: its alarm there is dropped",
                        a.key, na.node
                    ));
                    continue;
                }
                if a.source == Source::Mqtt
                    && dropped_heartbeats.contains(&(na.node.to_string(), a.key.clone()))
                {
                    self.warn(format!(
                        "{:?}: the lost-sensor alarm {:?} is dropped with its heartbeat",
                        na.node, a.key
                    ));
                    continue;
                }
                // A repeated alarm keeps its first place and severity.
                let alarm = Firing {
                    source: a.source,
                    kind: a.kind,
                    key: a.key.clone(),
                    severity: a.severity,
                };
                if !list.contains(&alarm) {
                    list.fire(&alarm, usize::MAX);
                }
            }
            if !list.is_empty() {
                e.firing.insert(n, list);
                for kind in AlarmKind::ALL {
                    e.index_kind(n, kind);
                }
            }
        }

        let mut troubled: Vec<NodeId> = e.firing.keys().copied().collect();
        troubled.sort();
        for &n in &troubled {
            e.graph.own[n.0 as usize] = e.own_health(n);
        }
        troubled.retain(|n| e.graph.own[n.0 as usize] != Health::Up);
        e.propagate(&troubled);

        for h in &snap.history {
            let count = h.durations_s.len();
            if let Some(n) = self.node(&h.root, || {
                format!("its {count} past incident duration(s) are dropped")
            }) {
                for &d in &h.durations_s {
                    e.push_history(n, d);
                }
            }
        }
    }

    fn incidents(&mut self, e: &mut Engine, snap: &Snapshot) {
        if self.cat.nodes.is_empty() && !snap.incidents.is_empty() {
            self.warn(format!(
                "the config has no components or services: {} incident(s) are dropped and numbering starts over",
                snap.incidents.len()
            ));
            return;
        }
        for s in &snap.incidents {
            if s.id.0 == 0 || e.incidents.get(s.id).is_some() {
                self.warn(format!(
                    "snapshot incident {} is not a new number: dropped",
                    s.id
                ));
                continue;
            }
            let inc = self.incident(s.id, s);
            e.incidents.insert(inc);
        }
        e.incidents.set_next(snap.next_incident);
        // The indexes of live incidents: each node in at most one.
        for inc in e.incidents.iter() {
            if !inc.state.is_live() {
                continue;
            }
            for &m in &inc.members {
                if let Some(other) = e.member_of.insert(m, inc.id) {
                    self.warn(format!(
                        "{:?} was a member of incidents {other} and {}: kept in {}",
                        self.cat.node(m).id,
                        inc.id,
                        inc.id
                    ));
                }
            }
            // One with no members left is resolved by the reconcile tick;
            // its stand-in root must not take another incident's place.
            if !inc.members.is_empty() {
                e.root_of_incident.insert(inc.root, inc.id);
            }
        }
    }

    fn incident(&mut self, id: IncidentId, s: &IncidentSnap) -> Incident {
        let cat = self.cat.clone();
        let of = |what: &str| format!("dropped from incident {id}'s {what}");
        let mut members = Vec::new();
        for m in &s.members {
            if let Some(n) = self.node(m, || of("members"))
                && !members.contains(&n)
            {
                members.push(n);
            }
        }
        let mut services = std::collections::BTreeMap::new();
        for sv in &s.services {
            let Some(n) = self.node(&sv.id, || of("services")) else {
                continue;
            };
            if cat.node(n).is_service() {
                services.insert(n, sv.health);
            } else {
                self.warn(format!(
                    "{:?} is no longer a service: {}",
                    sv.id,
                    of("services")
                ));
            }
        }
        let state = match s.state {
            StateSnap::Open => IncidentState::Open,
            StateSnap::Acknowledged => IncidentState::Acknowledged,
            StateSnap::Resolved => IncidentState::Resolved,
            // The older incident absorbs the younger: anything else is not
            // from this engine, and would loop.
            StateSnap::Merged { into } if into.0 >= 1 && into < id => IncidentState::Merged(into),
            StateSnap::Merged { into } => {
                self.warn(format!(
                    "incident {id} merged into incident {into}, which cannot be: taken as resolved"
                ));
                IncidentState::Resolved
            }
        };
        let root = match cat.node_id(&s.root) {
            Some(r) => r,
            None => {
                let fallback = members.first().or(services.keys().next()).copied();
                match fallback {
                    Some(f) => {
                        self.warn(format!(
                            "component or service {:?} no longer exists: incident {id} takes {:?} as its root",
                            s.root,
                            cat.node(f).id
                        ));
                        f
                    }
                    None => {
                        self.warn(format!(
                            "nothing of incident {id} (root {:?}) is in the config any more: it is kept{}, rooted at {:?} for want of another",
                            s.root,
                            if state.is_live() { " and resolved" } else { "" },
                            cat.nodes[0].id
                        ));
                        NodeId(0)
                    }
                }
            }
        };

        let mut policies = Vec::new();
        for p in &s.policies {
            if let Some(p) = self.policy(p, || of("policies")) {
                policies.push(p);
            }
        }
        policies.sort();
        policies.dedup();

        let mut fired = HashSet::new();
        for f in &s.fired {
            let Some(p) = self.policy(&f.policy, || of("policies")) else {
                continue;
            };
            let i = cat
                .policy(p)
                .steps
                .iter()
                .enumerate()
                .filter(|(_, st)| st.on_text == f.on)
                .nth(f.nth)
                .map(|(i, _)| i);
            match i {
                Some(i) => {
                    fired.insert((p, i));
                }
                None => self.warn(format!(
                    "policy {:?} has no step {:?} any more: {}",
                    f.policy,
                    f.on,
                    of("steps that fired")
                )),
            }
        }

        let mut told = Vec::new();
        for t in &s.told {
            let person = self.person(&t.person, || of("people told"));
            let channel = self.channel(&t.channel, || of("people told"));
            let role = match &t.role {
                Some(r) => self.role(r, || format!("incident {id} no longer tells it again")),
                None => None,
            };
            if let (Some(p), Some(c)) = (person, channel) {
                told.push((p, role, c));
            }
        }

        let mut chains = Vec::new();
        for c in &s.chains {
            let Some(role) = self.role(&c.role, || {
                format!("its deputy chain in incident {id} is dropped")
            }) else {
                continue;
            };
            let mut deputies = Vec::new();
            let mut done = 0;
            for (k, d) in c.deputies.iter().enumerate() {
                if let Some(p) = self.person(d, || of("deputy chains")) {
                    deputies.push(p);
                    if k < c.done {
                        done += 1;
                    }
                }
            }
            let mut via = Vec::new();
            for v in &c.via {
                if let Some(ch) = self.channel(v, || of("deputy chains")) {
                    via.push(ch);
                }
            }
            // A chain with nobody left to call is over.
            if done < deputies.len() {
                chains.push(Chain {
                    role,
                    started: c.started,
                    every: Duration::from_millis(c.every_ms),
                    deputies,
                    done,
                    via,
                    crisis: c.crisis,
                });
            }
        }

        let mut status_next = Vec::new();
        for st in &s.status_next {
            if let Some(p) = self.policy(&st.policy, || of("status reminders")) {
                status_next.push((p, st.at));
            }
        }

        let mut step_sent = HashSet::new();
        for sent in &s.step_sent {
            let person = self.person(&sent.person, || of("notification records"));
            let channel = self.channel(&sent.channel, || of("notification records"));
            if let (Some(p), Some(c)) = (person, channel) {
                step_sent.insert((p, c, sent.reason.to_string()));
            }
        }

        Incident {
            id,
            opened: s.opened,
            root,
            members,
            services,
            severity: s.severity,
            state,
            level: s.level,
            expected_s: s.expected_s,
            basis: s.basis,
            first_expected_s: s.first_expected_s,
            first_basis: s.first_basis,
            acknowledged_at: s.acknowledged_at,
            acknowledged_by: s.acknowledged_by.as_deref().map(str::to_owned),
            resolved_at: s.resolved_at,
            resolved_by: s.resolved_by.as_deref().map(str::to_owned),
            fuel_out: s.fuel_out,
            timeline: s.timeline.to_vec(),
            settle_until: s.settle_until,
            notify_from: s.notify_from,
            policies,
            fired,
            told,
            chains,
            status_next,
            major_since: s.major_since,
            generator_alerted: s.generator_alerted,
            reported: s.reported.as_ref().map(|r| {
                let services = r.services.iter().map(|s| s.to_string()).collect();
                (r.root.to_string(), services, r.severity)
            }),
            derived: None,
            adopted: None,
            wake: None,
            batches: s.batches,
            step_sent,
            used_links: s.used_links.iter().map(|l| l.to_string()).collect(),
            meeting_place: s.meeting_place.as_deref().map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests;
