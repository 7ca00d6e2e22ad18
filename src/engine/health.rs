//! Component health, impact through `depends_on` with backups, and the
//! root of a failure.
//!
//! Effective health is kept incrementally: a change at a node is pushed
//! downstream only as far as it changes something, so an alarm costs what
//! it affects, not the size of the catalogue.

use std::collections::{HashMap, VecDeque};

use super::{Engine, Health, IncidentId, intake};
use crate::catalogue::{Catalogue, NodeId};

/// The health of every node (component or service), by node index: its
/// own (from its alarms and probe), its effective (the worst of its own and
/// what its dependencies pass on), and what it passes on (up while a
/// backup carries it). Generator readings decide whether a generator
/// carries.
#[derive(Debug, Clone)]
pub(super) struct HealthGraph {
    pub(super) own: Vec<Health>,
    pub(super) eff: Vec<Health>,
    pub(super) pass: Vec<Health>,
    pub(super) generator: HashMap<NodeId, intake::GeneratorReading>,
    /// Nodes whose effective health changed since the last
    /// [`Engine::take_health_changes`], in order, each once.
    pub(super) health_changes: Vec<NodeId>,
    pub(super) health_marked: Vec<bool>,
}

impl HealthGraph {
    /// Every one of `n` nodes up.
    pub(super) fn new(n: usize) -> HealthGraph {
        HealthGraph {
            own: vec![Health::Up; n],
            eff: vec![Health::Up; n],
            pass: vec![Health::Up; n],
            generator: HashMap::new(),
            health_changes: Vec::new(),
            health_marked: vec![false; n],
        }
    }

    /// Whether `node` is down but its backup carries its dependents: the
    /// backup is not down and, for a generator, does not report stopped.
    pub(super) fn carried(&self, cat: &Catalogue, node: NodeId) -> bool {
        let Some(b) = cat.node(node).backup else {
            return false;
        };
        self.eff[b.0 as usize] != Health::Down
            && self.generator.get(&b).and_then(|r| r.running) != Some(false)
    }

    /// Recomputes effective health downstream of `sources`; returns the
    /// services whose health changed, with their new health.
    pub(super) fn propagate(
        &mut self,
        cat: &Catalogue,
        sources: &[NodeId],
    ) -> Vec<(NodeId, Health)> {
        let mut queue: VecDeque<NodeId> = VecDeque::new();
        for &s in sources {
            queue.push_back(s);
            queue.extend(cat.node(s).backs.iter().copied());
        }
        let mut services = Vec::new();
        while let Some(x) = queue.pop_front() {
            let i = x.0 as usize;
            let node = cat.node(x);
            let eff = node
                .depends_on
                .iter()
                .map(|d| self.pass[d.0 as usize])
                .fold(self.own[i], Health::max);
            let pass = if eff == Health::Down && self.carried(cat, x) {
                Health::Up
            } else {
                eff
            };
            let eff_changed = eff != self.eff[i];
            let pass_changed = pass != self.pass[i];
            self.eff[i] = eff;
            self.pass[i] = pass;
            if eff_changed && !self.health_marked[i] {
                self.health_marked[i] = true;
                self.health_changes.push(x);
            }
            if eff_changed && node.is_service() {
                services.push((x, eff));
            }
            if pass_changed {
                queue.extend(node.dependents.iter().copied());
            }
            if eff_changed {
                // A backup's health decides whether what it backs is carried.
                queue.extend(node.backs.iter().copied());
            }
        }
        // A service may have changed twice; keep its last word.
        let mut seen = std::collections::HashSet::new();
        services.reverse();
        services.retain(|(s, _)| seen.insert(*s));
        services.reverse();
        services
            .into_iter()
            .map(|(s, _)| (s, self.eff[s.0 as usize]))
            .collect()
    }

    /// The root of `x`'s trouble: the most upstream node with trouble of
    /// its own on the path through troubled dependencies, stopping at a
    /// carried backup. A failing backup of a down node has that node's root.
    pub(super) fn root_of(&self, cat: &Catalogue, x: NodeId) -> Option<NodeId> {
        self.root_of_depth(cat, x, 0)
    }

    fn root_of_depth(&self, cat: &Catalogue, x: NodeId, depth: u32) -> Option<NodeId> {
        let mut cur = x;
        let mut best = (self.own[x.0 as usize] != Health::Up).then_some(x);
        while let Some(&d) = cat
            .node(cur)
            .depends_on
            .iter()
            .find(|d| self.pass[d.0 as usize] != Health::Up)
        {
            cur = d;
            if self.own[d.0 as usize] != Health::Up {
                best = Some(d);
            }
        }
        let best = best?;
        if depth < 8 {
            for &m in &cat.node(best).backs {
                if self.own[m.0 as usize] == Health::Down {
                    return self.root_of_depth(cat, m, depth + 1).or(Some(best));
                }
            }
        }
        Some(best)
    }
}

impl Engine {
    pub(super) fn carried(&self, node: NodeId) -> bool {
        self.graph.carried(&self.cat, node)
    }

    pub(super) fn propagate(&mut self, sources: &[NodeId]) -> Vec<(NodeId, Health)> {
        self.graph.propagate(&self.cat, sources)
    }

    pub(super) fn root_of(&self, x: NodeId) -> Option<NodeId> {
        self.graph.root_of(&self.cat, x)
    }

    /// Open incidents that a change at `sources` may concern: those with a
    /// member among the sources or downstream of them through troubled
    /// nodes. Sorted by id.
    pub(super) fn incidents_near(&self, sources: &[NodeId]) -> Vec<IncidentId> {
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<NodeId> = Vec::new();
        for &s in sources {
            stack.push(s);
            stack.extend(self.cat.node(s).backs.iter().copied());
        }
        let mut found = std::collections::BTreeSet::new();
        let mut first = true;
        while let Some(x) = stack.pop() {
            if !seen.insert(x) {
                continue;
            }
            if let Some(&id) = self.member_of.get(&x) {
                found.insert(id);
            }
            // Sources are looked at even when healthy (a cleared alarm);
            // beyond them only troubled nodes can belong to an incident.
            if first || self.graph.eff[x.0 as usize] != Health::Up || sources.contains(&x) {
                for &d in &self.cat.node(x).dependents {
                    if self.graph.eff[d.0 as usize] != Health::Up {
                        stack.push(d);
                    }
                }
            }
            first = false;
        }
        found.into_iter().collect()
    }
}
