//! Incidents: one per real cause. Opening, joining, re-rooting, merging
//! and resolving (SPEC §3 "Incidents").

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::{Effect, Engine, EngineError, Health, IncidentId, Out, Severity, Ts};
use crate::catalogue::{Catalogue, ChannelId, NodeId, PersonId, PolicyId, RoleId};
use crate::config::{AlarmKind, Criticality};

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentState {
    Open,
    Acknowledged,
    Resolved,
    /// Absorbed by the incident with this id.
    Merged(IncidentId),
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
            IncidentState::Merged(_) => "merged",
        }
    }
    /// Open or acknowledged.
    pub fn is_live(self) -> bool {
        matches!(self, IncidentState::Open | IncidentState::Acknowledged)
    }
}

/// The incidents the engine holds, by id: the live ones, those merged
/// into them, and resolved ones until the daemon has stored them and
/// calls [`Engine::forget_resolved`]. Memory grows with what is open, not
/// with history; ids keep counting up, and an id no longer held belongs to
/// an incident that is over.
#[derive(Debug, Clone, Default)]
pub struct Incidents {
    by_id: BTreeMap<IncidentId, Incident>,
    /// The id the next incident gets.
    next: u64,
    /// Every incident inserted or borrowed mutably since the last
    /// [`Incidents::take_changed`]: what the daemon must look at after a
    /// batch, instead of every open incident.
    changed: BTreeSet<IncidentId>,
    /// The same since the last [`Incidents::take_over`]: only an incident
    /// among them can have become one to forget.
    since_over: BTreeSet<IncidentId>,
}

impl Incidents {
    pub fn get(&self, id: IncidentId) -> Option<&Incident> {
        self.by_id.get(&id)
    }
    pub fn iter(&self) -> impl Iterator<Item = &Incident> {
        self.by_id.values()
    }
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
    /// The id the next incident will get (1 for the first).
    pub fn next_id(&self) -> IncidentId {
        IncidentId(self.next.max(1))
    }
    /// Whether `id` was ever given out (it may no longer be held).
    pub fn was_issued(&self, id: IncidentId) -> bool {
        id.0 >= 1 && id < self.next_id()
    }
    pub(super) fn insert(&mut self, inc: Incident) {
        self.next = self.next.max(1).max(inc.id.0.saturating_add(1));
        self.changed.insert(inc.id);
        self.since_over.insert(inc.id);
        self.by_id.insert(inc.id, inc);
    }
    /// The incidents that may have changed since the last call, each once.
    pub(super) fn take_changed(&mut self) -> BTreeSet<IncidentId> {
        std::mem::take(&mut self.changed)
    }
    pub(super) fn set_next(&mut self, next: IncidentId) {
        self.next = self.next.max(1).max(next.0);
    }
    /// The open (or acknowledged) incident `id` stands for: a merged
    /// incident stands for the one that absorbed it.
    pub(super) fn live(&self, id: IncidentId) -> Result<IncidentId, EngineError> {
        let mut id = id;
        // A merge chain is never longer than the number of incidents held.
        for _ in 0..=self.len() {
            let Some(inc) = self.get(id) else {
                return Err(if self.was_issued(id) {
                    // Forgotten once it was over and stored.
                    EngineError::Resolved(id)
                } else {
                    EngineError::UnknownIncident(id)
                });
            };
            match inc.state {
                IncidentState::Merged(into) => id = into,
                IncidentState::Resolved => return Err(EngineError::Resolved(id)),
                _ => return Ok(id),
            }
        }
        // A merge cycle cannot be built; a corrupt snapshot could hold one.
        Err(EngineError::Resolved(id))
    }

    /// Takes out and returns every incident that is over: resolved, or
    /// merged into one that is no longer live (`live`, which follows the
    /// merges). Looks at them all only when one that changed since the
    /// last call is no longer live: otherwise nothing has come to an end
    /// (the last call took out all there was), and a batch costs what it
    /// changed, not what is open.
    pub(super) fn take_over(&mut self) -> Vec<IncidentId> {
        let since = std::mem::take(&mut self.since_over);
        let ended = since
            .iter()
            .any(|id| self.by_id.get(id).is_some_and(|i| !i.state.is_live()));
        if !ended {
            return Vec::new();
        }
        let over: Vec<IncidentId> = self
            .by_id
            .values()
            .filter(|i| match i.state {
                IncidentState::Resolved => true,
                IncidentState::Merged(_) => self.live(i.id).is_err(),
                _ => false,
            })
            .map(|i| i.id)
            .collect();
        for id in &over {
            self.by_id.remove(id);
        }
        over
    }
}

impl<'a> IntoIterator for &'a Incidents {
    type Item = &'a Incident;
    type IntoIter = std::collections::btree_map::Values<'a, IncidentId, Incident>;
    fn into_iter(self) -> Self::IntoIter {
        self.by_id.values()
    }
}

impl std::ops::Index<IncidentId> for Incidents {
    type Output = Incident;
    /// Only for ids the engine knows it holds (live incidents and those
    /// it is working on); outside ids go through [`Incidents::get`].
    fn index(&self, id: IncidentId) -> &Incident {
        &self.by_id[&id]
    }
}

impl std::ops::IndexMut<IncidentId> for Incidents {
    fn index_mut(&mut self, id: IncidentId) -> &mut Incident {
        self.changed.insert(id);
        self.since_over.insert(id);
        self.by_id
            .get_mut(&id)
            .expect("the engine holds every incident it works on")
    }
}

/// Department level, or the municipality's crisis staff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Department,
    Crisis,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Department => "department",
            Level::Crisis => "crisis",
        }
    }
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "department" => Some(Level::Department),
            "crisis" => Some(Level::Crisis),
            _ => None,
        }
    }
}

/// Where an expected duration came from (SPEC §3 "Expected duration").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    Manual,
    History,
    Kind,
    Default,
    Extended,
    Generator,
}

impl Basis {
    /// Every basis an estimate can have.
    pub const ALL: [Basis; 6] = [
        Basis::Manual,
        Basis::History,
        Basis::Kind,
        Basis::Default,
        Basis::Extended,
        Basis::Generator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Manual => "manual",
            Basis::History => "history",
            Basis::Kind => "kind",
            Basis::Default => "default",
            Basis::Extended => "extended",
            Basis::Generator => "generator",
        }
    }
}

/// One entry of an incident's log of events and decisions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimelineEntry {
    pub at: Ts,
    /// alarm, opened, estimate, notification, ack, note, decision, level,
    /// resolved, merged, severity.
    pub kind: String,
    pub text: String,
    pub by: Option<String>,
    /// A note meant for everyone: the status page shows the latest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
}

/// A deputy chain: a role was notified and nobody has acknowledged since.
#[derive(Debug, Clone)]
pub(super) struct Chain {
    pub role: RoleId,
    pub started: Ts,
    pub every: Duration,
    pub deputies: Vec<PersonId>,
    /// How many deputies have been notified.
    pub done: usize,
    pub via: Vec<ChannelId>,
    /// Whether the chain began with a crisis summons (its deputies are
    /// summoned too).
    pub crisis: bool,
}

impl Chain {
    pub fn next_at(&self) -> Option<Ts> {
        (self.done < self.deputies.len()).then(|| {
            // Saturating: a restored chain's interval is outside input.
            let n = u32::try_from(self.done + 1).unwrap_or(u32::MAX);
            self.every
                .checked_mul(n)
                .map_or(Ts(i64::MAX), |d| self.started.plus(d))
        })
    }
}

/// An incident: one real cause, the services it affects, and how it is
/// being escalated.
#[derive(Debug, Clone)]
pub struct Incident {
    pub id: IncidentId,
    pub opened: Ts,
    pub root: NodeId,
    /// Nodes whose trouble belongs to this incident, in joining order.
    pub members: Vec<NodeId>,
    /// Every service it has affected, with the worst health seen.
    pub services: BTreeMap<NodeId, Health>,
    pub severity: Severity,
    pub state: IncidentState,
    pub level: Level,
    pub expected_s: i64,
    pub basis: Basis,
    /// The first estimate, for the estimate-ratio metric.
    pub first_expected_s: i64,
    pub first_basis: Basis,
    pub acknowledged_at: Option<Ts>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<Ts>,
    /// Who resolved it by hand; `None` when its components recovered.
    pub resolved_by: Option<String>,
    /// When the generator's fuel runs out, once that is the binding limit.
    pub fuel_out: Option<Ts>,
    pub timeline: Vec<TimelineEntry>,
    pub(super) settle_until: Option<Ts>,
    /// When notifying began (settle over); `None` while settling.
    pub(super) notify_from: Option<Ts>,
    pub(super) policies: Vec<PolicyId>,
    pub(super) fired: HashSet<(PolicyId, usize)>,
    /// Everyone the steps told, for re-telling on a severity rise.
    pub(super) told: Vec<(PersonId, Option<RoleId>, ChannelId)>,
    pub(super) chains: Vec<Chain>,
    pub(super) status_next: Vec<(PolicyId, Ts)>,
    pub(super) major_since: Option<Ts>,
    pub(super) generator_alerted: bool,
    /// (root id, sorted service ids, severity) as last reported; `None`
    /// before opening is reported.
    pub(super) reported: Option<(String, Vec<String>, Severity)>,
    /// What follows from `services`, worked out once per change of them
    /// (a storm of alarms on an incident with many services does not sort
    /// them again for each alarm); `None` when `services` changed since.
    pub(super) derived: Option<Arc<Derived>>,
    /// The root and context services `policies` were last adopted from.
    pub(super) adopted: Option<(NodeId, Arc<Vec<NodeId>>)>,
    pub(super) wake: Option<Ts>,
    /// Counts notification batches, for idempotency keys.
    pub(super) batches: u32,
    /// (person, channel, reason) already sent by a step: a later policy's
    /// step with the same `on` text does not tell them again.
    pub(super) step_sent: HashSet<(PersonId, ChannelId, String)>,
    /// Acknowledgement links used on this incident (and on those it
    /// absorbed): each acknowledges once. Kept with the incident, so a
    /// replay of the log and a snapshot restore them.
    pub used_links: std::collections::BTreeSet<String>,
    /// Where the crisis staff meets, chosen when the level was raised to
    /// crisis; `None` at department level.
    pub meeting_place: Option<String>,
}

impl Incident {
    pub(super) fn log(&mut self, at: Ts, kind: &str, text: String, by: Option<String>) {
        self.timeline.push(TimelineEntry {
            at,
            kind: kind.to_owned(),
            text,
            by,
            public: false,
        });
    }

    /// When the current estimate runs out.
    pub fn expected_end(&self) -> Ts {
        Ts(self
            .opened
            .0
            .saturating_add(self.expected_s.saturating_mul(1000)))
    }
}

/// What follows from an incident's services.
#[derive(Debug)]
pub(super) struct Derived {
    /// The services, sorted by id.
    pub(super) sorted: Arc<Vec<NodeId>>,
    /// Their ids, sorted: what an incident line reports.
    pub(super) names: Vec<String>,
    /// The severity they make.
    pub(super) severity: Severity,
    /// Whether a life service is down: it does not wait for `settle`.
    pub(super) life_down: bool,
}

impl Derived {
    pub(super) fn of(cat: &Catalogue, services: &BTreeMap<NodeId, Health>) -> Derived {
        let crit = |s: NodeId| cat.node(s).criticality().unwrap_or(Criticality::Important);
        let mut sorted: Vec<NodeId> = services.keys().copied().collect();
        sorted.sort_by(|a, b| cat.node(*a).id.cmp(&cat.node(*b).id));
        Derived {
            names: sorted.iter().map(|s| cat.node(*s).id.clone()).collect(),
            sorted: Arc::new(sorted),
            severity: severity_of(services, crit),
            life_down: services
                .iter()
                .any(|(s, h)| *h == Health::Down && crit(*s) == Criticality::Life),
        }
    }
}

/// Severity from the services affected (SPEC §3).
pub(super) fn severity_of(
    services: &BTreeMap<NodeId, Health>,
    crit: impl Fn(NodeId) -> Criticality,
) -> Severity {
    let mut sev = Severity::Minor;
    for (&s, &h) in services {
        let c = crit(s);
        let this = match (h, c) {
            (Health::Down, Criticality::Life | Criticality::Critical) => Severity::Critical,
            (Health::Down, Criticality::Important) => Severity::Major,
            (Health::Degraded, Criticality::Life | Criticality::Critical) => Severity::Major,
            _ => Severity::Minor,
        };
        sev = sev.max(this);
    }
    sev
}

impl Engine {
    /// After health changed at `sources`: bring incidents up to date, open
    /// new ones, attribute affected services, and report.
    pub(super) fn health_changed(&mut self, now: Ts, sources: &[NodeId], out: &mut Out) {
        let services = self.propagate(sources);
        for id in self.incidents_near(sources) {
            self.dirty.insert(id);
            self.normalise(now, id, out);
        }
        for &x in sources {
            if self.graph.own[x.0 as usize] == Health::Up || self.member_of.contains_key(&x) {
                continue;
            }
            let root = self.root_of(x).unwrap_or(x);
            match self.member_of.get(&root).copied() {
                Some(id) => self.add_member(now, id, x, out),
                None => {
                    let id = self.open_incident(now, root, out);
                    self.add_member(now, id, x, out);
                }
            }
        }
        for (s, h) in services {
            if h == Health::Up {
                continue;
            }
            let Some(root) = self.root_of(s) else {
                continue;
            };
            if let Some(&id) = self.member_of.get(&root) {
                let inc = &mut self.incidents[id];
                let e = inc.services.entry(s).or_insert(Health::Up);
                if *e < h {
                    *e = h;
                    inc.derived = None;
                }
                self.dirty.insert(id);
            }
        }
        self.flush(now, out);
    }

    /// Resolves an incident whose members are all well, or moves its root
    /// to the most upstream trouble.
    pub(super) fn normalise(&mut self, now: Ts, id: IncidentId, out: &mut Out) {
        let inc = &self.incidents[id];
        if !inc.state.is_live() {
            return;
        }
        if inc
            .members
            .iter()
            .all(|m| self.graph.own[m.0 as usize] == Health::Up)
        {
            self.resolve(now, id, None, out);
            return;
        }
        let new_root = if self.graph.own[inc.root.0 as usize] == Health::Up {
            inc.members
                .iter()
                .filter(|m| self.graph.own[m.0 as usize] != Health::Up)
                .find_map(|&m| self.root_of(m))
        } else {
            self.root_of(inc.root)
        };
        if let Some(r) = new_root.filter(|&r| r != inc.root) {
            self.set_root(now, id, r, out);
        }
    }

    fn open_incident(&mut self, now: Ts, root: NodeId, out: &mut Out) -> IncidentId {
        let id = self.incidents.next_id();
        self.incidents.insert(Incident {
            id,
            opened: now,
            root,
            members: Vec::new(),
            services: BTreeMap::new(),
            severity: Severity::Minor,
            state: IncidentState::Open,
            level: Level::Department,
            expected_s: 0,
            basis: Basis::Default,
            first_expected_s: 0,
            first_basis: Basis::Default,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            fuel_out: None,
            timeline: Vec::new(),
            settle_until: None,
            notify_from: None,
            policies: Vec::new(),
            fired: HashSet::new(),
            told: Vec::new(),
            chains: Vec::new(),
            used_links: Default::default(),
            meeting_place: None,
            status_next: Vec::new(),
            major_since: None,
            generator_alerted: false,
            reported: None,
            derived: None,
            adopted: None,
            wake: None,
            batches: 0,
            step_sent: HashSet::new(),
        });
        self.root_of_incident.insert(root, id);
        self.dirty.insert(id);
        self.add_member(now, id, root, out);
        id
    }

    /// Adds `node` to incident `id`; a node of another open incident
    /// brings that incident along (the older absorbs the younger).
    fn add_member(&mut self, now: Ts, id: IncidentId, node: NodeId, out: &mut Out) {
        match self.member_of.get(&node).copied() {
            Some(other) if other == id => {}
            Some(other) => {
                self.merge(now, id, other, out);
            }
            None => {
                self.member_of.insert(node, id);
                self.incidents[id].members.push(node);
                self.dirty.insert(id);
            }
        }
    }

    fn set_root(&mut self, now: Ts, id: IncidentId, root: NodeId, out: &mut Out) {
        let old = self.incidents[id].root;
        if self.root_of_incident.get(&old) == Some(&id) {
            self.root_of_incident.remove(&old);
        }
        self.incidents[id].root = root;
        let name = self.cat.node(root).id.clone();
        self.incidents[id].log(now, "root", format!("new root {name}"), None);
        let mut survivor = id;
        if let Some(other) = self
            .root_of_incident
            .get(&root)
            .copied()
            .filter(|&o| o != id)
        {
            survivor = self.merge(now, id, other, out);
        }
        self.incidents[survivor].root = root;
        self.root_of_incident.insert(root, survivor);
        self.add_member(now, survivor, root, out);
        self.dirty.insert(survivor);
    }

    /// The older of two open incidents absorbs the younger; returns the
    /// survivor.
    fn merge(&mut self, now: Ts, a: IncidentId, b: IncidentId, out: &mut Out) -> IncidentId {
        let (keep, gone) = (a.min(b), a.max(b));
        let absorbed = std::mem::take(&mut self.incidents[gone].members);
        let services = std::mem::take(&mut self.incidents[gone].services);
        let policies = std::mem::take(&mut self.incidents[gone].policies);
        let used_links = std::mem::take(&mut self.incidents[gone].used_links);
        let gone_root = self.incidents[gone].root;
        if self.root_of_incident.get(&gone_root) == Some(&gone) {
            self.root_of_incident.remove(&gone_root);
        }
        {
            let g = &mut self.incidents[gone];
            g.state = IncidentState::Merged(keep);
            g.chains.clear();
            g.status_next.clear();
            g.members = absorbed.clone();
            g.log(now, "merged", format!("merged into incident {keep}"), None);
        }
        if let Some(w) = self.incidents[gone].wake.take() {
            self.wakes.remove(&(w, gone));
        }
        self.dirty.remove(&gone);
        let k = &mut self.incidents[keep];
        for m in absorbed {
            // Whether `keep` holds it already, without a walk of its list.
            if self.member_of.insert(m, keep) != Some(keep) {
                k.members.push(m);
            }
        }
        for (s, h) in services {
            let e = k.services.entry(s).or_insert(h);
            *e = (*e).max(h);
        }
        k.derived = None;
        for p in policies {
            if !k.policies.contains(&p) {
                k.policies.push(p);
            }
        }
        k.used_links.extend(used_links);
        k.policies.sort();
        k.log(now, "merged", format!("absorbed incident {gone}"), None);
        self.dirty.insert(keep);
        out.incidents.push(Effect::IncidentMerged {
            incident: gone,
            into: keep,
        });
        keep
    }

    /// The kind of the alarm that makes `node` a root: its first critical
    /// firing alarm, else its first firing alarm.
    pub(super) fn root_kind(&self, node: NodeId) -> AlarmKind {
        self.firing
            .get(&node)
            .and_then(super::alarms::FiringAlarms::root_kind)
            .unwrap_or_else(|| self.cat.node(node).probe_alarm_kind())
    }

    /// Whether any member has a firing alarm of this kind.
    pub(super) fn has_firing(&self, inc: &Incident, kind: AlarmKind) -> bool {
        let nodes = &self.firing_kinds[kind as usize];
        if inc.state.is_live() && nodes.len() < inc.members.len() {
            // A live incident's members are those `member_of` names it for.
            nodes.iter().any(|n| self.member_of.get(n) == Some(&inc.id))
        } else {
            inc.members.iter().any(|m| nodes.contains(m))
        }
    }

    /// Resolves an incident: by a person (`by`), or because all its
    /// members are well again.
    pub(super) fn resolve(&mut self, now: Ts, id: IncidentId, by: Option<String>, out: &mut Out) {
        let members = {
            let inc = &mut self.incidents[id];
            inc.state = IncidentState::Resolved;
            inc.resolved_at = Some(now);
            inc.resolved_by = by.clone();
            inc.chains.clear();
            inc.status_next.clear();
            let text = match &by {
                Some(b) => format!("resolved by {b}"),
                None => "resolved: all components up".to_owned(),
            };
            inc.log(now, "resolved", text, by.clone());
            inc.members.clone()
        };
        for m in members {
            if self.member_of.get(&m) == Some(&id) {
                self.member_of.remove(&m);
            }
        }
        let (root, opened) = {
            let inc = &self.incidents[id];
            (inc.root, inc.opened)
        };
        if self.root_of_incident.get(&root) == Some(&id) {
            self.root_of_incident.remove(&root);
        }
        if let Some(w) = self.incidents[id].wake.take() {
            self.wakes.remove(&(w, id));
        }
        self.dirty.remove(&id);
        let duration_ms = now.millis_since(opened);
        self.push_history(root, duration_ms.saturating_add(500) / 1000);
        out.incidents.push(Effect::IncidentResolved {
            incident: id,
            duration_ms,
        });
        self.notify_resolved(now, id, out);
    }
}
