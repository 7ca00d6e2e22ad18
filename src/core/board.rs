//! The board: what the status page, the web UI and `GET /api/v1/services`
//! show of the engine's state without asking the core. The core publishes
//! a new one on [`Status::board`] after each commit that changed
//! something, so a reader never sees a state that is not on disk.

use super::*;
use crate::catalogue::{NodeId, NodeKind};
use crate::config::Criticality;
use std::collections::BTreeMap;

use crate::engine::{Health, Upcoming};

/// The state of every service, as of the last commit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Board {
    /// Counts up with every commit that changed an incident or a
    /// service's health: a reader that saw another number has news.
    pub version: u64,
    /// The engine time of the commit.
    pub at: Ts,
    /// Every service of the catalogue, in catalogue order.
    pub services: Vec<ServiceState>,
    /// The meeting place a crisis raised now would choose (the first by
    /// priority whose building has no fire or power alarm).
    pub meeting_place: Option<String>,
    /// For each live incident, the next escalation due if nothing
    /// changes.
    pub next: BTreeMap<IncidentId, Upcoming>,
}

impl Default for Board {
    fn default() -> Board {
        Board {
            version: 0,
            at: Ts(0),
            services: Vec::new(),
            meeting_place: None,
            next: BTreeMap::new(),
        }
    }
}

/// One service on the board.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceState {
    pub id: String,
    pub name: String,
    pub criticality: Criticality,
    pub health: Health,
    /// When its health last changed, if the daemon saw it change (or the
    /// opening of the incident that took it down, after a restart).
    pub since: Option<Ts>,
    /// The open incident that affects it, the newest if several do.
    pub incident: Option<IncidentId>,
}

impl Board {
    /// The service `id`, if the catalogue has it.
    pub fn service(&self, id: &str) -> Option<&ServiceState> {
        self.services.iter().find(|s| s.id == id)
    }

    /// The worst health of any service (up when there is none).
    pub fn worst(&self) -> Health {
        self.services
            .iter()
            .map(|s| s.health)
            .max()
            .unwrap_or(Health::Up)
    }
}

impl<S: Store> Core<S> {
    /// Notes when services changed health, for [`Board`]'s `since`.
    pub(super) fn saw_health_change(&mut self, node: NodeId, at: Ts) {
        if self.cat.node(node).is_service() {
            self.since.insert(node, at);
            self.board_changed = true;
        }
    }

    /// Forgets what `since` knew (the catalogue changed): after a reload
    /// the board's times come from open incidents, as after a restart.
    pub(super) fn reset_board(&mut self) {
        self.since.clear();
        self.board_changed = true;
    }

    /// Publishes a new board when the last commit changed something.
    pub(super) fn publish_board(&mut self, changed: bool) {
        if !changed && !self.board_changed {
            return;
        }
        self.board_changed = false;
        // The next escalation changes only with its incident.
        for id in std::mem::take(&mut self.upcoming_stale) {
            match self.engine.upcoming(id) {
                Some(up) => self.upcoming.insert(id, up),
                None => self.upcoming.remove(&id),
            };
        }
        let services = self
            .cat
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, node)| {
                let NodeKind::Service(criticality) = node.kind else {
                    return None;
                };
                let id = NodeId(i as u32);
                let health = self.engine.health(id);
                let since = self.since.get(&id).copied().or_else(|| {
                    // Not seen to change since start: down since its
                    // incident opened, up since we know not when.
                    (health != Health::Up)
                        .then(|| self.gauges.first_opened(id))
                        .flatten()
                });
                Some(ServiceState {
                    id: node.id.clone(),
                    name: node.name.clone(),
                    criticality,
                    health,
                    since,
                    // The newest, if several affect it.
                    incident: self.gauges.newest(id),
                })
            })
            .collect();
        let version = self.status.board.borrow().version.saturating_add(1);
        let board = Board {
            version,
            at: self.last_at,
            services,
            meeting_place: self.engine.meeting_place(),
            next: self.upcoming.clone(),
        };
        self.status.board.send_replace(Arc::new(board));
    }
}
