//! The firing alarms of one component, found by their identity.
//!
//! An alarm is one (source, kind, key); a sensor may send many keys to one
//! component. Finding an alarm by scanning the component's list made every
//! new key slow down the next lookup, so the set keeps an index by
//! identity (a hash map, so a lookup costs the same with one alarm or ten
//! thousand) beside the order the alarms began in, which decides a root's
//! kind and the snapshot's order. It also counts what the engine asks of a
//! component's alarms (any critical one? any of this kind?), so no question
//! walks the list.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{AlarmSeverity, Firing, Health, Source};
use crate::config::AlarmKind;

/// An alarm's identity on its component (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AlarmId {
    pub source: Source,
    pub kind: AlarmKind,
    pub key: String,
}

/// Where a firing alarm stands in its component's order, and how bad it is.
#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    severity: AlarmSeverity,
}

/// What setting an alarm's state did to the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// It was not firing and now is.
    Began,
    /// It was firing with another severity.
    Severity,
    /// It was firing and is cleared.
    Cleared,
    /// Nothing: the same state again, or a clear of an alarm not firing.
    Same,
    /// A new alarm on a component already holding `max` of them.
    Full,
}

/// The firing alarms of one component. See the module documentation.
///
/// Most components hold one alarm or a few: up to [`FEW`] are kept in a
/// list in the order they began, scanned (a few comparisons, one small
/// allocation); past that, in [`Indexed`].
#[derive(Debug, Clone)]
pub(super) enum FiringAlarms {
    Few(Vec<Firing>),
    Many(Box<Indexed>),
}

/// The most alarms a component keeps in a plain list.
pub(super) const FEW: usize = 8;

impl Default for FiringAlarms {
    fn default() -> FiringAlarms {
        FiringAlarms::Few(Vec::new())
    }
}

fn same(a: &Firing, b: &Firing) -> bool {
    a.source == b.source && a.kind == b.kind && a.key == b.key
}

impl FiringAlarms {
    pub fn is_empty(&self) -> bool {
        match self {
            FiringAlarms::Few(list) => list.is_empty(),
            FiringAlarms::Many(set) => set.is_empty(),
        }
    }

    /// Whether `alarm` (by identity) fires.
    pub fn contains(&self, alarm: &Firing) -> bool {
        match self {
            FiringAlarms::Few(list) => list.iter().any(|f| same(f, alarm)),
            FiringAlarms::Many(set) => set.contains(alarm),
        }
    }

    /// Records that `alarm` fires with its severity; a new alarm is
    /// refused once `max` fire.
    pub fn fire(&mut self, alarm: &Firing, max: usize) -> Change {
        let list = match self {
            FiringAlarms::Many(set) => return set.fire(alarm, max),
            FiringAlarms::Few(list) => list,
        };
        if let Some(f) = list.iter_mut().find(|f| same(f, alarm)) {
            if f.severity == alarm.severity {
                return Change::Same;
            }
            f.severity = alarm.severity;
            return Change::Severity;
        }
        if list.len() >= max {
            return Change::Full;
        }
        if list.len() < FEW {
            if list.is_empty() {
                list.reserve_exact(1);
            }
            list.push(alarm.clone());
            return Change::Began;
        }
        let mut set = Box::<Indexed>::default();
        for f in list.drain(..) {
            set.fire(&f, usize::MAX);
        }
        let change = set.fire(alarm, max);
        *self = FiringAlarms::Many(set);
        change
    }

    /// Clears `alarm` (its severity does not matter).
    pub fn clear(&mut self, alarm: &Firing) -> Change {
        match self {
            FiringAlarms::Many(set) => set.clear(alarm),
            FiringAlarms::Few(list) => match list.iter().position(|f| same(f, alarm)) {
                Some(i) => {
                    list.remove(i);
                    Change::Cleared
                }
                None => Change::Same,
            },
        }
    }

    /// The component's own health from its alarms: down with a critical
    /// one, degraded with warnings only.
    pub fn health(&self) -> Health {
        let critical = match self {
            FiringAlarms::Few(list) => list.iter().any(|f| f.severity == AlarmSeverity::Critical),
            FiringAlarms::Many(set) => !set.critical.is_empty(),
        };
        if critical {
            Health::Down
        } else if self.is_empty() {
            Health::Up
        } else {
            Health::Degraded
        }
    }

    /// The kind of the first critical alarm, else of the first alarm.
    pub fn root_kind(&self) -> Option<AlarmKind> {
        match self {
            FiringAlarms::Few(list) => list
                .iter()
                .find(|f| f.severity == AlarmSeverity::Critical)
                .or(list.first())
                .map(|f| f.kind),
            FiringAlarms::Many(set) => set.root_kind(),
        }
    }

    /// Whether an alarm of `kind` fires.
    pub fn has_kind(&self, kind: AlarmKind) -> bool {
        match self {
            FiringAlarms::Few(list) => list.iter().any(|f| f.kind == kind),
            FiringAlarms::Many(set) => set.per_kind[kind as usize] > 0,
        }
    }

    /// The alarms in the order they began.
    pub fn iter(&self) -> Box<dyn Iterator<Item = Firing> + '_> {
        match self {
            FiringAlarms::Few(list) => Box::new(list.iter().cloned()),
            FiringAlarms::Many(set) => Box::new(set.iter()),
        }
    }
}

/// Many firing alarms of one component, indexed.
#[derive(Debug, Clone, Default)]
pub(super) struct Indexed {
    /// By source and kind, then by key: a lookup borrows the key.
    by_id: HashMap<(Source, AlarmKind), HashMap<String, Slot>>,
    /// The alarms in the order they began.
    order: BTreeMap<u64, AlarmId>,
    /// The places in `order` of the critical ones.
    critical: BTreeSet<u64>,
    /// How many alarms of each kind fire, by [`AlarmKind`] discriminant.
    per_kind: [u32; AlarmKind::ALL.len()],
    next_seq: u64,
}

impl Indexed {
    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn slot(&self, alarm: &Firing) -> Option<&Slot> {
        self.by_id
            .get(&(alarm.source, alarm.kind))?
            .get(alarm.key.as_str())
    }

    /// Whether `alarm` (by identity) fires.
    pub fn contains(&self, alarm: &Firing) -> bool {
        self.slot(alarm).is_some()
    }

    /// Records that `alarm` fires with its severity; a new alarm is
    /// refused once `max` fire.
    pub fn fire(&mut self, alarm: &Firing, max: usize) -> Change {
        let slot = self
            .by_id
            .get_mut(&(alarm.source, alarm.kind))
            .and_then(|keys| keys.get_mut(alarm.key.as_str()));
        if let Some(slot) = slot {
            if slot.severity == alarm.severity {
                return Change::Same;
            }
            slot.severity = alarm.severity;
            match alarm.severity {
                AlarmSeverity::Critical => self.critical.insert(slot.seq),
                AlarmSeverity::Warning => self.critical.remove(&slot.seq),
            };
            return Change::Severity;
        }
        if self.order.len() >= max {
            return Change::Full;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        self.order.insert(
            seq,
            AlarmId {
                source: alarm.source,
                kind: alarm.kind,
                key: alarm.key.clone(),
            },
        );
        if alarm.severity == AlarmSeverity::Critical {
            self.critical.insert(seq);
        }
        self.per_kind[alarm.kind as usize] += 1;
        self.by_id
            .entry((alarm.source, alarm.kind))
            .or_default()
            .insert(
                alarm.key.clone(),
                Slot {
                    seq,
                    severity: alarm.severity,
                },
            );
        Change::Began
    }

    /// Clears `alarm` (its severity does not matter).
    pub fn clear(&mut self, alarm: &Firing) -> Change {
        let pair = (alarm.source, alarm.kind);
        let Some(keys) = self.by_id.get_mut(&pair) else {
            return Change::Same;
        };
        let Some(slot) = keys.remove(alarm.key.as_str()) else {
            return Change::Same;
        };
        if keys.is_empty() {
            self.by_id.remove(&pair);
        }
        self.order.remove(&slot.seq);
        self.critical.remove(&slot.seq);
        self.per_kind[alarm.kind as usize] -= 1;
        Change::Cleared
    }

    /// The kind of the first critical alarm, else of the first alarm.
    pub fn root_kind(&self) -> Option<AlarmKind> {
        let seq = self.critical.first().or_else(|| self.order.keys().next())?;
        self.order.get(seq).map(|id| id.kind)
    }

    /// The alarms in the order they began.
    pub fn iter(&self) -> impl Iterator<Item = Firing> + '_ {
        self.order.iter().map(|(seq, id)| Firing {
            source: id.source,
            kind: id.kind,
            key: id.key.clone(),
            severity: if self.critical.contains(seq) {
                AlarmSeverity::Critical
            } else {
                AlarmSeverity::Warning
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(key: &str, kind: AlarmKind, severity: AlarmSeverity) -> Firing {
        Firing {
            source: Source::Mqtt,
            kind,
            key: key.to_owned(),
            severity,
        }
    }

    #[test]
    fn an_alarm_is_found_by_its_identity_and_the_order_they_began_is_kept() {
        let mut set = FiringAlarms::default();
        let a = alarm("a", AlarmKind::Power, AlarmSeverity::Warning);
        let b = alarm("b", AlarmKind::Fire, AlarmSeverity::Critical);
        assert_eq!(set.fire(&a, 10), Change::Began);
        assert_eq!(set.fire(&b, 10), Change::Began);
        assert_eq!(set.fire(&a, 10), Change::Same);
        // Same key, another kind: another alarm.
        let a_fire = alarm("a", AlarmKind::Fire, AlarmSeverity::Warning);
        assert_eq!(set.fire(&a_fire, 10), Change::Began);
        assert_eq!(set.iter().count(), 3);
        let keys: Vec<_> = set.iter().map(|f| (f.key, f.kind)).collect();
        assert_eq!(
            keys,
            [
                ("a".to_owned(), AlarmKind::Power),
                ("b".to_owned(), AlarmKind::Fire),
                ("a".to_owned(), AlarmKind::Fire),
            ]
        );
        assert_eq!(set.health(), Health::Down);
        assert_eq!(set.root_kind(), Some(AlarmKind::Fire), "the first critical");
        assert_eq!(set.clear(&b), Change::Cleared);
        assert_eq!(set.clear(&b), Change::Same);
        assert_eq!(set.health(), Health::Degraded);
        assert_eq!(set.root_kind(), Some(AlarmKind::Power), "the first");
        assert!(set.has_kind(AlarmKind::Fire), "a's fire alarm still fires");
        assert_eq!(set.clear(&a_fire), Change::Cleared);
        assert!(!set.has_kind(AlarmKind::Fire));
    }

    #[test]
    fn a_new_severity_moves_the_health_and_a_full_set_refuses_new_keys() {
        let mut set = FiringAlarms::default();
        let a = alarm("a", AlarmKind::Power, AlarmSeverity::Warning);
        set.fire(&a, 1);
        let a_critical = alarm("a", AlarmKind::Power, AlarmSeverity::Critical);
        assert_eq!(set.fire(&a_critical, 1), Change::Severity);
        assert_eq!(set.health(), Health::Down);
        assert_eq!(set.fire(&a, 1), Change::Severity);
        assert_eq!(set.health(), Health::Degraded);
        let b = alarm("b", AlarmKind::Power, AlarmSeverity::Critical);
        assert_eq!(set.fire(&b, 1), Change::Full);
        assert_eq!(set.iter().count(), 1);
        assert_eq!(set.clear(&a), Change::Cleared);
        assert_eq!(set.health(), Health::Up);
        assert_eq!(set.root_kind(), None);
        assert!(set.is_empty());
    }

    /// The list the engine kept before: the model the set must agree with.
    #[derive(Default)]
    struct Model(Vec<Firing>);

    impl Model {
        fn fire(&mut self, a: &Firing, max: usize) -> Change {
            let full = self.0.len() >= max;
            match self.0.iter_mut().find(|f| same(f, a)) {
                Some(f) if f.severity == a.severity => Change::Same,
                Some(f) => {
                    f.severity = a.severity;
                    Change::Severity
                }
                None if full => Change::Full,
                None => {
                    self.0.push(a.clone());
                    Change::Began
                }
            }
        }
        fn clear(&mut self, a: &Firing) -> Change {
            match self.0.iter().position(|f| same(f, a)) {
                Some(i) => {
                    self.0.remove(i);
                    Change::Cleared
                }
                None => Change::Same,
            }
        }
    }

    #[test]
    fn few_or_many_the_set_answers_as_the_plain_list_did() {
        let mut rng = fastrand::Rng::with_seed(13);
        let kinds = [AlarmKind::Fire, AlarmKind::Power, AlarmKind::Server];
        let max = 3 * FEW;
        for _ in 0..20 {
            let (mut set, mut model) = (FiringAlarms::default(), Model::default());
            for _ in 0..400 {
                let a = Firing {
                    source: if rng.bool() {
                        Source::Mqtt
                    } else {
                        Source::Http
                    },
                    kind: kinds[rng.usize(..kinds.len())],
                    key: format!("k{}", rng.usize(..4 * FEW)),
                    severity: if rng.u8(..4) == 0 {
                        AlarmSeverity::Warning
                    } else {
                        AlarmSeverity::Critical
                    },
                };
                let (got, want) = if rng.u8(..3) == 0 {
                    (set.clear(&a), model.clear(&a))
                } else {
                    (set.fire(&a, max), model.fire(&a, max))
                };
                assert_eq!(got, want, "{a:?}");
                let order = |fs: &mut dyn Iterator<Item = Firing>| -> Vec<_> {
                    fs.map(|f| (f.source, f.kind, f.key, f.severity)).collect()
                };
                assert_eq!(order(&mut set.iter()), order(&mut model.0.iter().cloned()));
                let expected_kind = model
                    .0
                    .iter()
                    .find(|f| f.severity == AlarmSeverity::Critical)
                    .or(model.0.first())
                    .map(|f| f.kind);
                assert_eq!(set.root_kind(), expected_kind);
                for k in kinds {
                    assert_eq!(set.has_kind(k), model.0.iter().any(|f| f.kind == k));
                }
                assert_eq!(set.contains(&a), model.0.iter().any(|f| same(f, &a)));
                assert_eq!(set.is_empty(), model.0.is_empty());
            }
        }
    }
}
