//! The catalogue: a validated config resolved into indexed graphs.
//!
//! Components and services are nodes of one dependency graph (a service
//! can be the target of a report, so it can be a root too). Ids are
//! resolved to indices once, here, so the engine never looks up strings
//! on its hot path and never scans the whole catalogue per alarm.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::config::{
    AlarmKind, ChannelConfig, ComponentKind, Config, Criticality, Language, ProbeConfig,
    RecipientRef, StepOn, SubscriptionConfig,
};

/// Index of a node (component or service) in the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

/// Index of a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersonId(pub u32);

/// Index of a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleId(pub u32);

/// Index of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId(pub u32);

/// Index of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyId(pub u32);

/// Index of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeId(pub u32);

/// Whether a node is a component or a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Component(ComponentKind),
    Service(Criticality),
}

/// A component or service with its edges resolved.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub kind: NodeKind,
    pub building: Option<String>,
    /// What this node depends on (upstream).
    pub depends_on: Vec<NodeId>,
    /// What depends on this node (downstream).
    pub dependents: Vec<NodeId>,
    /// The component that carries this one's dependents while it is down.
    pub backup: Option<NodeId>,
    /// The components this one is the backup of.
    pub backs: Vec<NodeId>,
    /// The probe with a `generator` section watching this node, if any.
    pub generator_probe: Option<ProbeId>,
    /// Services only: policy, owner, contacts and who hears of recovery.
    pub policy: Option<PolicyId>,
    pub owner: Vec<RecipientRef>,
    pub contacts: Vec<RecipientRef>,
    pub recovery_notify: Vec<RecipientRef>,
}

impl Node {
    pub fn is_service(&self) -> bool {
        matches!(self.kind, NodeKind::Service(_))
    }

    pub fn criticality(&self) -> Option<Criticality> {
        match self.kind {
            NodeKind::Service(c) => Some(c),
            NodeKind::Component(_) => None,
        }
    }

    /// The alarm kind a probe of this node raises (SPEC §3).
    pub fn probe_alarm_kind(&self) -> AlarmKind {
        match self.kind {
            NodeKind::Component(k) => k.alarm_kind(),
            NodeKind::Service(_) => AlarmKind::Application,
        }
    }
}

/// A person who can be notified.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
}

/// A role: a primary with deputies, or a rotation.
#[derive(Debug, Clone)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub staffing: Staffing,
}

/// How a role is staffed.
#[derive(Debug, Clone)]
pub enum Staffing {
    Fixed {
        primary: PersonId,
        deputies: Vec<PersonId>,
    },
    Rotation {
        every: Duration,
        start: Timestamp,
        people: Vec<PersonId>,
        deputies: Vec<PersonId>,
    },
}

/// A parsed policy step.
#[derive(Debug, Clone)]
pub struct Step {
    pub on: StepOn,
    /// The `on` text verbatim: it is the notification's reason.
    pub on_text: String,
    pub notify: Vec<RecipientRef>,
    pub via: Vec<ChannelId>,
}

/// A parsed policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub id: String,
    pub deputy_after: Option<Duration>,
    pub status_every: Option<Duration>,
    pub status_to: Vec<RecipientRef>,
    pub steps: Vec<Step>,
}

impl Policy {
    /// The channels recovery and status notifications use: the `resolved`
    /// step's, else the `open` step's.
    pub fn followup_via(&self) -> &[ChannelId] {
        let by = |on: StepOn| self.steps.iter().find(|s| s.on == on).map(|s| &s.via[..]);
        by(StepOn::Resolved)
            .or_else(|| by(StepOn::Open))
            .unwrap_or(&[])
    }
}

/// A channel as the engine sees it: an id, a fallback and a service it needs.
#[derive(Debug, Clone)]
pub struct Channel {
    pub id: String,
    pub config: ChannelConfig,
    pub fallback: Option<ChannelId>,
    pub requires_service: Option<NodeId>,
}

/// A compiled MQTT subscription.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub config: SubscriptionConfig,
    pub filter: Vec<String>,
}

/// A probe with its component resolved.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Shared with the config it was built from.
    pub config: Arc<ProbeConfig>,
    pub node: NodeId,
}

/// A meeting place, in priority order.
#[derive(Debug, Clone)]
pub struct MeetingPlace {
    pub name: String,
    pub building: Option<String>,
    pub priority: u32,
}

/// The resolved catalogue.
#[derive(Debug)]
pub struct Catalogue {
    pub site_name: String,
    pub language: Language,
    pub tz: TimeZone,
    pub nodes: Vec<Node>,
    node_index: HashMap<String, NodeId>,
    pub people: Vec<Person>,
    person_index: HashMap<String, PersonId>,
    pub roles: Vec<Role>,
    role_index: HashMap<String, RoleId>,
    /// Group members, already parsed.
    groups: HashMap<String, Vec<RecipientRef>>,
    pub channels: Vec<Channel>,
    pub policies: Vec<Policy>,
    pub probes: Vec<Probe>,
    probe_index: HashMap<String, ProbeId>,
    pub subscriptions: Vec<Subscription>,
    pub max_payload: u64,
    pub meeting_places: Vec<MeetingPlace>,
    pub crisis_staff: Vec<RecipientRef>,
    pub crisis_via: Vec<ChannelId>,
    pub estimate: crate::config::EstimateConfig,
    pub by_kind: HashMap<AlarmKind, Duration>,
    pub settle: Duration,
    /// Components per building, for the meeting-place rule.
    pub buildings: HashMap<String, Vec<NodeId>>,
    /// [`Catalogue::fingerprint`], computed on first use.
    fingerprint: OnceLock<String>,
}

/// A config that cannot be resolved (validation should have said so).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CatalogueError(pub String);

impl Catalogue {
    /// Resolves a validated config.
    pub fn build(config: &Config) -> Result<Catalogue, CatalogueError> {
        let err = |m: String| CatalogueError(m);
        let tz = TimeZone::get(&config.site.timezone)
            .map_err(|e| err(format!("timezone {:?}: {e}", config.site.timezone)))?;

        let mut nodes = Vec::with_capacity(config.components.len() + config.services.len());
        let mut node_index = HashMap::new();
        for c in &config.components {
            node_index.insert(c.id.clone(), NodeId(nodes.len() as u32));
            nodes.push(Node {
                id: c.id.clone(),
                name: c.name.clone().unwrap_or_else(|| c.id.clone()),
                kind: NodeKind::Component(c.kind),
                building: c.building.clone(),
                depends_on: Vec::new(),
                dependents: Vec::new(),
                backup: None,
                backs: Vec::new(),
                generator_probe: None,
                policy: None,
                owner: Vec::new(),
                contacts: Vec::new(),
                recovery_notify: Vec::new(),
            });
        }
        for s in &config.services {
            node_index.insert(s.id.clone(), NodeId(nodes.len() as u32));
            nodes.push(Node {
                id: s.id.clone(),
                name: s.name.clone().unwrap_or_else(|| s.id.clone()),
                kind: NodeKind::Service(s.criticality),
                building: None,
                depends_on: Vec::new(),
                dependents: Vec::new(),
                backup: None,
                backs: Vec::new(),
                generator_probe: None,
                policy: None,
                owner: Vec::new(),
                contacts: Vec::new(),
                recovery_notify: Vec::new(),
            });
        }
        let node = |id: &str| {
            node_index
                .get(id)
                .copied()
                .ok_or_else(|| err(format!("unknown component or service {id:?}")))
        };
        let refs = |list: &[String]| -> Result<Vec<RecipientRef>, CatalogueError> {
            list.iter()
                .map(|r| RecipientRef::parse(r).map_err(err))
                .collect()
        };

        let mut policy_index = HashMap::new();
        for (i, p) in config.policies.iter().enumerate() {
            policy_index.insert(p.id.clone(), PolicyId(i as u32));
        }
        let mut channel_index = HashMap::new();
        for (i, c) in config.channels.iter().enumerate() {
            channel_index.insert(c.id.clone(), ChannelId(i as u32));
        }
        let channel = |id: &str| {
            channel_index
                .get(id)
                .copied()
                .ok_or_else(|| err(format!("unknown channel {id:?}")))
        };

        let mut edges = Vec::new();
        for (i, c) in config.components.iter().enumerate() {
            let me = NodeId(i as u32);
            for d in &c.depends_on {
                edges.push((me, node(d)?));
            }
            if let Some(b) = &c.backup {
                let b = node(b)?;
                nodes[i].backup = Some(b);
                nodes[b.0 as usize].backs.push(me);
            }
        }
        let offset = config.components.len();
        for (i, s) in config.services.iter().enumerate() {
            let me = NodeId((offset + i) as u32);
            for d in &s.depends_on {
                edges.push((me, node(d)?));
            }
            let n = &mut nodes[offset + i];
            n.policy = match &s.policy {
                Some(p) => Some(
                    *policy_index
                        .get(p)
                        .ok_or_else(|| err(format!("unknown policy {p:?}")))?,
                ),
                None => None,
            };
            n.owner = refs(s.owner.as_slice())?;
            n.contacts = refs(&s.contacts)?;
            n.recovery_notify = refs(&s.recovery_notify)?;
        }
        for (from, to) in edges {
            nodes[from.0 as usize].depends_on.push(to);
            nodes[to.0 as usize].dependents.push(from);
        }

        let mut people = Vec::new();
        let mut person_index = HashMap::new();
        for p in &config.people {
            person_index.insert(p.id.clone(), PersonId(people.len() as u32));
            people.push(Person {
                id: p.id.clone(),
                name: p.name.clone(),
                phone: p.phone.clone(),
                email: p.email.clone(),
            });
        }
        let person = |id: &str| {
            person_index
                .get(id)
                .copied()
                .ok_or_else(|| err(format!("unknown person {id:?}")))
        };

        let mut roles = Vec::new();
        let mut role_index = HashMap::new();
        for r in &config.roles {
            let deputies = r
                .deputies
                .iter()
                .map(|d| person(d))
                .collect::<Result<Vec<_>, _>>()?;
            let staffing = match (&r.primary, &r.rotation) {
                (Some(p), None) => Staffing::Fixed {
                    primary: person(p)?,
                    deputies,
                },
                (None, Some(rot)) => {
                    let start: Timestamp = rot
                        .start
                        .parse()
                        .map_err(|e| err(format!("rotation start {:?}: {e}", rot.start)))?;
                    let people = rot
                        .people
                        .iter()
                        .map(|p| person(p))
                        .collect::<Result<Vec<_>, _>>()?;
                    if people.is_empty() || rot.every.is_zero() {
                        return Err(err(format!("role {:?}: empty rotation", r.id)));
                    }
                    Staffing::Rotation {
                        every: rot.every,
                        start,
                        people,
                        deputies,
                    }
                }
                _ => {
                    return Err(err(format!(
                        "role {:?} needs exactly one of primary or rotation",
                        r.id
                    )));
                }
            };
            role_index.insert(r.id.clone(), RoleId(roles.len() as u32));
            roles.push(Role {
                id: r.id.clone(),
                name: r.name.clone().unwrap_or_else(|| r.id.clone()),
                staffing,
            });
        }

        let mut groups = HashMap::new();
        for g in &config.groups {
            groups.insert(g.id.clone(), refs(&g.members)?);
        }

        let mut channels = Vec::new();
        for c in &config.channels {
            channels.push(Channel {
                id: c.id.clone(),
                config: c.clone(),
                fallback: c.fallback.as_deref().map(channel).transpose()?,
                requires_service: c.requires_service.as_deref().map(node).transpose()?,
            });
        }

        let mut policies = Vec::new();
        for p in &config.policies {
            let mut steps = Vec::new();
            for s in &p.steps {
                steps.push(Step {
                    on: StepOn::parse(&s.on).map_err(err)?,
                    on_text: s.on.clone(),
                    notify: refs(&s.notify)?,
                    via: s.via.iter().map(|c| channel(c)).collect::<Result<_, _>>()?,
                });
            }
            policies.push(Policy {
                id: p.id.clone(),
                deputy_after: p.deputy_after.filter(|d| !d.is_zero()),
                status_every: p.status_every.filter(|d| !d.is_zero()),
                status_to: refs(&p.status_to)?,
                steps,
            });
        }

        let mut probes = Vec::with_capacity(config.probes.len());
        let mut probe_index = HashMap::with_capacity(config.probes.len());
        for p in &config.probes {
            let id = ProbeId(probes.len() as u32);
            let n = node(&p.component)?;
            if p.generator.is_some() {
                nodes[n.0 as usize].generator_probe = Some(id);
            }
            probe_index.insert(p.id.clone(), id);
            probes.push(Probe {
                config: p.clone(),
                node: n,
            });
        }

        let (subscriptions, max_payload) = match &config.mqtt {
            Some(m) => (
                m.subscriptions
                    .iter()
                    .map(|s| Subscription {
                        filter: s.topic.split('/').map(str::to_owned).collect(),
                        config: s.clone(),
                    })
                    .collect(),
                m.max_payload.0,
            ),
            None => (Vec::new(), crate::config::DEFAULT_MAX_PAYLOAD.0),
        };

        let mut meeting_places: Vec<MeetingPlace> = config
            .meeting_places
            .iter()
            .map(|m| MeetingPlace {
                name: m.name.clone(),
                building: m.building.clone(),
                priority: m.priority,
            })
            .collect();
        meeting_places.sort_by_key(|m| m.priority);

        let mut by_kind = HashMap::new();
        for (k, d) in &config.estimate.by_kind {
            let kind =
                AlarmKind::parse(k).ok_or_else(|| err(format!("unknown alarm kind {k:?}")))?;
            by_kind.insert(kind, d.0);
        }

        let mut buildings: HashMap<String, Vec<NodeId>> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if let Some(b) = &n.building {
                buildings
                    .entry(b.clone())
                    .or_default()
                    .push(NodeId(i as u32));
            }
        }

        Ok(Catalogue {
            site_name: config.site.name.clone(),
            language: config.site.language,
            tz,
            nodes,
            node_index,
            people,
            person_index,
            roles,
            role_index,
            groups,
            channels,
            policies,
            probes,
            probe_index,
            subscriptions,
            max_payload,
            meeting_places,
            crisis_staff: refs(&config.crisis.staff)?,
            crisis_via: config
                .crisis
                .via
                .iter()
                .map(|c| channel(c))
                .collect::<Result<_, _>>()?,
            estimate: config.estimate.clone(),
            by_kind,
            settle: config.correlation.settle,
            buildings,
            fingerprint: OnceLock::new(),
        })
    }

    /// A digest (SHA-256, hex) of everything the engine reads from the
    /// catalogue: two catalogues with the same fingerprint make the engine
    /// behave the same. Channel transports, probe URLs and schedules and
    /// people's contact details are left out, so editing them is no change
    /// to the engine. An engine snapshot records it, so a restore can tell
    /// whether the config was edited since.
    pub fn fingerprint(&self) -> &str {
        self.fingerprint.get_or_init(|| self.compute_fingerprint())
    }

    fn compute_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        // Each part with its length, so that parts cannot run together.
        let mut put = |part: String| {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        };
        put(format!("{:?} {:?}", self.language, self.tz.iana_name()));
        for n in &self.nodes {
            put(format!("{n:?}"));
        }
        for p in &self.people {
            put(format!("{:?} {:?}", p.id, p.name));
        }
        for r in &self.roles {
            put(format!("{:?} {:?} {:?}", r.id, r.name, r.staffing));
        }
        let mut groups: Vec<_> = self.groups.iter().collect();
        groups.sort_by(|a, b| a.0.cmp(b.0));
        put(format!("{groups:?}"));
        for c in &self.channels {
            put(format!(
                "{:?} {:?} {:?}",
                c.id, c.fallback, c.requires_service
            ));
        }
        for p in &self.policies {
            put(format!("{p:?}"));
        }
        for p in &self.probes {
            let c = &p.config;
            put(format!(
                "{:?} {:?} {} {} {:?} {:?} {:?}",
                c.id, p.node, c.fail_after, c.recover_after, c.expect_status, c.generator, c.checks
            ));
        }
        for s in &self.subscriptions {
            put(format!("{s:?}"));
        }
        let mut by_kind: Vec<_> = self.by_kind.iter().collect();
        by_kind.sort();
        put(format!(
            "{} {:?} {:?} {:?} {:?} {by_kind:?} {:?}",
            self.max_payload,
            self.meeting_places,
            self.crisis_staff,
            self.crisis_via,
            self.estimate,
            self.settle
        ));
        hex::encode(hash.finalize())
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    pub fn node_id(&self, id: &str) -> Option<NodeId> {
        self.node_index.get(id).copied()
    }

    /// The name of node `id`, or `id` itself when the catalogue no longer
    /// has it (an incident stored under an older config).
    pub fn name_of(&self, id: &str) -> String {
        self.node_id(id)
            .map_or_else(|| id.to_owned(), |n| self.node(n).name.clone())
    }

    /// The names of the services `ids`, the most critical first (stable
    /// within a criticality); ids no longer in the catalogue come last.
    pub fn services_by_criticality(&self, ids: &[String]) -> Vec<String> {
        let mut services: Vec<(Option<Criticality>, String)> = ids
            .iter()
            .map(|id| {
                let crit = self.node_id(id).and_then(|n| self.node(n).criticality());
                (crit, self.name_of(id))
            })
            .collect();
        services.sort_by_key(|(crit, _)| (crit.is_none(), *crit));
        services.into_iter().map(|(_, name)| name).collect()
    }

    pub fn person(&self, id: PersonId) -> &Person {
        &self.people[id.0 as usize]
    }

    pub fn person_id(&self, id: &str) -> Option<PersonId> {
        self.person_index.get(id).copied()
    }

    pub fn role(&self, id: RoleId) -> &Role {
        &self.roles[id.0 as usize]
    }

    pub fn role_id(&self, id: &str) -> Option<RoleId> {
        self.role_index.get(id).copied()
    }

    pub fn group(&self, id: &str) -> Option<&[RecipientRef]> {
        self.groups.get(id).map(|v| &v[..])
    }

    pub fn channel(&self, id: ChannelId) -> &Channel {
        &self.channels[id.0 as usize]
    }

    pub fn policy(&self, id: PolicyId) -> &Policy {
        &self.policies[id.0 as usize]
    }

    pub fn probe(&self, id: ProbeId) -> &Probe {
        &self.probes[id.0 as usize]
    }

    pub fn probe_id(&self, id: &str) -> Option<ProbeId> {
        self.probe_index.get(id).copied()
    }

    /// Every service downstream of `start` (including itself if it is
    /// one), following dependents and, for a component with backups, what
    /// the components it backs feed. Sorted by id.
    pub fn fed_services(&self, start: NodeId) -> Vec<NodeId> {
        // One bit per node: on a large catalogue the walk from a mains
        // reaches most nodes, and a bit is cheaper than a hashed entry.
        let mut seen = vec![0u64; self.nodes.len().div_ceil(64)];
        let mut stack = vec![start];
        let mut out = Vec::new();
        while let Some(n) = stack.pop() {
            let (word, bit) = (n.0 as usize / 64, 1u64 << (n.0 % 64));
            if seen[word] & bit != 0 {
                continue;
            }
            seen[word] |= bit;
            let node = self.node(n);
            if node.is_service() {
                out.push(n);
            }
            stack.extend(node.dependents.iter().copied());
            stack.extend(node.backs.iter().copied());
        }
        out.sort_by(|a, b| self.node(*a).id.cmp(&self.node(*b).id));
        out
    }

    /// The person on duty for a role at `now`, and the deputies after them
    /// in order.
    pub fn on_duty(&self, role: RoleId, now: Timestamp) -> (PersonId, Vec<PersonId>) {
        match &self.role(role).staffing {
            Staffing::Fixed { primary, deputies } => (*primary, deputies.clone()),
            Staffing::Rotation {
                every,
                start,
                people,
                deputies,
            } => {
                let k = self.rotation_turn(*start, *every, now);
                let n = people.len() as i64;
                let idx = k.rem_euclid(n) as usize;
                let next = if deputies.is_empty() {
                    (1..people.len())
                        .map(|i| people[(idx + i) % people.len()])
                        .collect()
                } else {
                    deputies.clone()
                };
                (people[idx], next)
            }
        }
    }

    /// How many handovers have happened since `start` at `now`. Handovers
    /// of whole days happen at the same local time in the site's zone.
    fn rotation_turn(&self, start: Timestamp, every: Duration, now: Timestamp) -> i64 {
        let secs = i64::try_from(every.as_secs()).unwrap_or(i64::MAX).max(1);
        let rough = now
            .as_second()
            .saturating_sub(start.as_second())
            .div_euclid(secs);
        if secs % 86_400 != 0 {
            return rough;
        }
        let days = secs / 86_400;
        let zoned = start.to_zoned(self.tz.clone());
        // None past what a calendar can hold (a turn of millions of days):
        // then the rough count is the answer.
        let handover = |k: i64| -> Option<Timestamp> {
            let span = jiff::Span::new().try_days(k.checked_mul(days)?).ok()?;
            zoned.checked_add(span).ok().map(|z| z.timestamp())
        };
        // The civil-time handover may be an hour off the rough count
        // around daylight saving changes: step to the right turn, which is
        // never more than one away.
        let mut k = rough;
        for _ in 0..2 {
            match handover(k) {
                Some(h) if h > now => k = k.saturating_sub(1),
                Some(_) => break,
                None => return rough,
            }
        }
        for _ in 0..2 {
            match handover(k.saturating_add(1)) {
                Some(h) if h <= now => k = k.saturating_add(1),
                _ => break,
            }
        }
        k
    }
}
