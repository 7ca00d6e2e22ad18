//! What the engine will do next for an incident if nothing changes (no
//! acknowledgement, no new estimate): the on-call page says it ("next:
//! call to the IT chief at 14:47"), so an escalation never stalls
//! unseen.

use super::incident::IncidentState;
use super::{Engine, IncidentId, Ts};
use crate::config::{RecipientRef, StepOn};

/// The next thing due for an incident.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Upcoming {
    pub at: Ts,
    pub what: Next,
}

/// What is due.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Next {
    /// The first notifications, once related alarms have had time to join.
    FirstNotice,
    /// A policy step on time (`unacked 15m`, `open 4h`): who and how, by
    /// name.
    Step {
        on: String,
        to: Vec<String>,
        via: Vec<String>,
    },
    /// The next deputy of a role nobody acknowledged for.
    Deputy {
        person: String,
        role: String,
        via: Vec<String>,
    },
    /// A status reminder, while there is no estimate from a person.
    Status,
}

impl Engine {
    /// The earliest escalation due for live incident `id`, if any.
    pub fn upcoming(&self, id: IncidentId) -> Option<Upcoming> {
        let inc = self.incidents.get(id)?;
        if !inc.state.is_live() {
            return None;
        }
        let cat = &self.cat;
        let channels = |via: &[crate::catalogue::ChannelId]| -> Vec<String> {
            via.iter().map(|c| cat.channel(*c).id.clone()).collect()
        };
        let mut best: Option<Upcoming> = None;
        let mut consider = |at: Ts, what: Next| {
            if best.as_ref().is_none_or(|b| at < b.at) {
                best = Some(Upcoming { at, what });
            }
        };
        if inc.notify_from.is_none() {
            if let Some(s) = inc.settle_until {
                consider(s, Next::FirstNotice);
            }
            return best;
        }
        for &p in &inc.policies {
            for (i, step) in cat.policy(p).steps.iter().enumerate() {
                if inc.fired.contains(&(p, i)) {
                    continue;
                }
                let due = match step.on {
                    StepOn::Unacked(d) if inc.state == IncidentState::Open => d,
                    StepOn::OpenFor(d) => d,
                    _ => continue,
                };
                let to = step
                    .notify
                    .iter()
                    .map(|r| match r {
                        RecipientRef::Role(id) => cat
                            .role_id(id)
                            .map_or_else(|| id.clone(), |r| cat.role(r).name.clone()),
                        RecipientRef::Person(id) => cat
                            .person_id(id)
                            .map_or_else(|| id.clone(), |p| cat.person(p).name.clone()),
                        other => other.to_string(),
                    })
                    .collect();
                consider(
                    inc.opened.plus(due),
                    Next::Step {
                        on: step.on_text.clone(),
                        to,
                        via: channels(&step.via),
                    },
                );
            }
        }
        for c in &inc.chains {
            if let (Some(at), Some(person)) = (c.next_at(), c.deputies.get(c.done)) {
                consider(
                    at,
                    Next::Deputy {
                        person: cat.person(*person).name.clone(),
                        role: cat.role(c.role).name.clone(),
                        via: channels(&c.via),
                    },
                );
            }
        }
        for (_, at) in &inc.status_next {
            consider(*at, Next::Status);
        }
        best
    }
}
