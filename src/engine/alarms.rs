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
use std::sync::Arc;

use super::{AlarmSeverity, Firing, Health, Source};
use crate::config::AlarmKind;

/// An alarm's identity on its component (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
#[derive(Debug, Clone, Default)]
pub(super) struct FiringAlarms {
    by_id: HashMap<Arc<AlarmId>, Slot>,
    /// The alarms in the order they began.
    order: BTreeMap<u64, Arc<AlarmId>>,
    /// The places in `order` of the critical ones.
    critical: BTreeSet<u64>,
    /// How many alarms of each kind fire, by [`AlarmKind`] discriminant.
    per_kind: [u32; AlarmKind::ALL.len()],
    next_seq: u64,
}

impl FiringAlarms {
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether `alarm` (by identity) fires.
    pub fn contains(&self, alarm: &Firing) -> bool {
        self.by_id.contains_key(&AlarmId {
            source: alarm.source,
            kind: alarm.kind,
            key: alarm.key.clone(),
        })
    }

    /// Records that `alarm` fires with its severity; a new alarm is
    /// refused once `max` fire.
    pub fn fire(&mut self, alarm: &Firing, max: usize) -> Change {
        let id = AlarmId {
            source: alarm.source,
            kind: alarm.kind,
            key: alarm.key.clone(),
        };
        if let Some(slot) = self.by_id.get_mut(&id) {
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
        if self.by_id.len() >= max {
            return Change::Full;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        let id = Arc::new(id);
        self.order.insert(seq, id.clone());
        if alarm.severity == AlarmSeverity::Critical {
            self.critical.insert(seq);
        }
        self.per_kind[alarm.kind as usize] += 1;
        self.by_id.insert(
            id,
            Slot {
                seq,
                severity: alarm.severity,
            },
        );
        Change::Began
    }

    /// Clears `alarm` (its severity does not matter).
    pub fn clear(&mut self, alarm: &Firing) -> Change {
        let id = AlarmId {
            source: alarm.source,
            kind: alarm.kind,
            key: alarm.key.clone(),
        };
        let Some(slot) = self.by_id.remove(&id) else {
            return Change::Same;
        };
        self.order.remove(&slot.seq);
        self.critical.remove(&slot.seq);
        self.per_kind[alarm.kind as usize] -= 1;
        Change::Cleared
    }

    /// The component's own health from its alarms: down with a critical
    /// one, degraded with warnings only.
    pub fn health(&self) -> Health {
        if !self.critical.is_empty() {
            Health::Down
        } else if self.is_empty() {
            Health::Up
        } else {
            Health::Degraded
        }
    }

    /// The kind of the first critical alarm, else of the first alarm.
    pub fn root_kind(&self) -> Option<AlarmKind> {
        let seq = self.critical.first().or_else(|| self.order.keys().next())?;
        self.order.get(seq).map(|id| id.kind)
    }

    /// Whether an alarm of `kind` fires.
    pub fn has_kind(&self, kind: AlarmKind) -> bool {
        self.per_kind[kind as usize] > 0
    }

    /// The alarms in the order they began.
    pub fn iter(&self) -> impl Iterator<Item = Firing> + '_ {
        self.order.values().map(|id| Firing {
            source: id.source,
            kind: id.kind,
            key: id.key.clone(),
            severity: self.by_id[&**id].severity,
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
}
