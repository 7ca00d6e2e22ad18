//! Collapsing the copies of one MQTT message that several instances of a
//! cluster ([`crate::cluster`]) received, each through its own session:
//! the leader's core takes in the first.
//!
//! The broker gives every instance its own copy and no message id that
//! the copies share, so a copy is known by what it says (topic and
//! payload), who received it and when. The leader takes in the first copy
//! of a message; a copy from another instance that matches one not yet
//! matched, received within [`WINDOW`] of it, is the same message and is
//! dropped. The same instance receiving the same payload twice is a new
//! message (a sensor that says "ALARM" again), as are copies further apart
//! than the window. Matching one for one keeps an alarm that fires, clears
//! and fires again within the window at three messages, however the
//! instances' copies interleave.

use std::collections::{HashMap, VecDeque};

use crate::engine::Ts;

/// How far apart two instances' copies of one message may arrive.
pub const WINDOW_MS: i64 = 30_000;

/// Most unmatched copies remembered; the oldest go first beyond it.
const MOST_REMEMBERED: usize = 100_000;

/// The unmatched copies of the recent past.
#[derive(Debug, Default)]
pub struct Dedup {
    /// By fingerprint of (topic, payload): the copies not yet matched, as
    /// (instance, time), oldest first.
    open: HashMap<u64, VecDeque<(String, Ts)>>,
    /// Every remembered copy in arrival order, to forget the old ones.
    order: VecDeque<(u64, Ts)>,
    remembered: usize,
}

impl Dedup {
    pub fn new() -> Dedup {
        Dedup::default()
    }

    /// Whether this copy is the first of its message: `false` when it
    /// matches another instance's copy within the window (and takes that
    /// copy's place).
    pub fn first(&mut self, instance: &str, topic: &str, payload: &[u8], at: Ts) -> bool {
        self.forget_before(Ts(at.0.saturating_sub(WINDOW_MS)));
        let key = fingerprint(topic, payload);
        let copies = self.open.entry(key).or_default();
        if let Some(i) = copies
            .iter()
            .position(|(from, seen)| from != instance && seen.0.abs_diff(at.0) <= WINDOW_MS as u64)
        {
            copies.remove(i);
            self.remembered = self.remembered.saturating_sub(1);
            if copies.is_empty() {
                self.open.remove(&key);
            }
            return false;
        }
        copies.push_back((instance.to_owned(), at));
        self.order.push_back((key, at));
        self.remembered += 1;
        while self.remembered > MOST_REMEMBERED {
            let Some((key, _)) = self.order.pop_front() else {
                break;
            };
            self.drop_oldest(key);
        }
        true
    }

    /// Copies remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.remembered
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.remembered == 0
    }

    fn forget_before(&mut self, cutoff: Ts) {
        while let Some(&(key, at)) = self.order.front() {
            if at >= cutoff {
                break;
            }
            self.order.pop_front();
            self.drop_oldest(key);
        }
    }

    /// Drops the oldest copy under `key`, if it is still unmatched (a
    /// matched one already left).
    fn drop_oldest(&mut self, key: u64) {
        if let Some(copies) = self.open.get_mut(&key) {
            if copies.pop_front().is_some() {
                self.remembered = self.remembered.saturating_sub(1);
            }
            if copies.is_empty() {
                self.open.remove(&key);
            }
        }
    }
}

/// FNV-1a over the topic, a separator and the payload.
fn fingerprint(topic: &str, payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.bytes().chain([0xff]).chain(payload.iter().copied()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_instances_copy_is_dropped_and_a_third_message_is_new() {
        let mut d = Dedup::new();
        assert!(d.first("a", "fire/1", b"ALARM", Ts(1_000)));
        assert!(!d.first("b", "fire/1", b"ALARM", Ts(1_050)), "b's copy");
        assert!(d.first("b", "fire/1", b"ALARM", Ts(2_000)), "a new message");
        assert!(!d.first("a", "fire/1", b"ALARM", Ts(2_010)));
        assert!(d.is_empty());
    }

    #[test]
    fn fire_clear_fire_stays_three_messages_however_the_copies_interleave() {
        let mut d = Dedup::new();
        let seq = [
            ("a", "ALARM"),
            ("a", "OK"),
            ("b", "ALARM"),
            ("a", "ALARM"),
            ("b", "OK"),
            ("b", "ALARM"),
        ];
        let taken: Vec<&str> = seq
            .iter()
            .enumerate()
            .filter(|(i, (who, p))| d.first(who, "t", p.as_bytes(), Ts(*i as i64)))
            .map(|(_, (_, p))| *p)
            .collect();
        assert_eq!(taken, ["ALARM", "OK", "ALARM"]);
    }

    #[test]
    fn the_same_instance_saying_it_twice_is_two_messages() {
        let mut d = Dedup::new();
        assert!(d.first("a", "t", b"1", Ts(0)));
        assert!(d.first("a", "t", b"1", Ts(10)));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn copies_further_apart_than_the_window_are_different_messages() {
        let mut d = Dedup::new();
        assert!(d.first("a", "t", b"1", Ts(0)));
        assert!(d.first("b", "t", b"1", Ts(WINDOW_MS + 1)));
        assert_eq!(d.len(), 1, "a's copy is forgotten");
    }

    #[test]
    fn topic_and_payload_both_count() {
        let mut d = Dedup::new();
        assert!(d.first("a", "t", b"1", Ts(0)));
        assert!(d.first("b", "u", b"1", Ts(0)));
        assert!(d.first("b", "t", b"0", Ts(0)));
        assert!(!d.first("b", "t", b"1", Ts(0)));
    }

    #[test]
    fn memory_is_bounded() {
        let mut d = Dedup::new();
        for i in 0..(MOST_REMEMBERED + 10) {
            assert!(d.first("a", "t", i.to_string().as_bytes(), Ts(0)));
        }
        assert_eq!(d.len(), MOST_REMEMBERED);
        assert!(d.first("b", "t", b"0", Ts(0)), "the oldest was forgotten");
    }
}
