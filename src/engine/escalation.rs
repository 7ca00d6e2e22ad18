//! Escalation: estimates, policy steps, recipients and channels, deputy
//! chains, status reminders, recovery and crisis summons (SPEC §3
//! "Expected duration" and "Escalation").

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::incident::{Chain, Derived};
use super::text::{self, Facts, TextKind};
use super::{
    Basis, Effect, Engine, EngineError, Health, IncidentId, IncidentState, Level, Notification,
    Out, Reason, Severity, Ts, ids, millis, secs,
};
use crate::catalogue::{ChannelId, NodeId, PersonId, PolicyId, RoleId};
use crate::config::{AlarmKind, RecipientRef, StepOn};

/// Whole seconds, rounding up, of a span in milliseconds.
fn ceil_secs(ms: i64) -> i64 {
    ms.saturating_add(999).div_euclid(1000)
}

impl Engine {
    /// Reports and escalates every incident touched by the current cause.
    pub(super) fn flush(&mut self, now: Ts, out: &mut Out) {
        while let Some(id) = self.dirty.pop_first() {
            self.flush_one(now, id, out);
        }
    }

    fn flush_one(&mut self, now: Ts, id: IncidentId, out: &mut Out) {
        let idx = id;
        if !self.incidents[idx].state.is_live() {
            return;
        }
        let cat = self.cat.clone();
        let new = self.incidents[idx].reported.is_none();
        if new {
            let root = self.incidents[idx].root;
            let (expected_s, basis) = self.estimate_for(root);
            let inc = &mut self.incidents[idx];
            inc.expected_s = expected_s;
            inc.basis = basis;
            inc.first_expected_s = expected_s;
            inc.first_basis = basis;
            inc.settle_until = Some(now.plus(cat.settle));
            out.estimates.push(Effect::Estimate {
                incident: id,
                expected_s,
                basis,
            });
        } else {
            let inc = &self.incidents[idx];
            let root_changed = inc
                .reported
                .as_ref()
                .is_some_and(|r| r.0 != cat.node(inc.root).id);
            if root_changed && inc.basis != Basis::Manual {
                let (expected_s, basis) = self.estimate_for(inc.root);
                self.set_estimate(now, id, expected_s, basis, out);
            }
        }
        self.check_generator(now, id, out);
        self.adopt_policies(id);

        let fresh = self.incidents[idx].derived.is_none();
        let derived = self.derived(idx);
        let inc = &self.incidents[idx];
        let prev = inc.reported.as_ref().map(|r| r.2);
        let severity = derived.severity.max(inc.severity);
        let root_name = cat.node(inc.root).id.clone();
        // Unless the services changed since the last report, only the root
        // and severity can have: the names are not compared again.
        if !new
            && !fresh
            && inc
                .reported
                .as_ref()
                .is_some_and(|r| r.0 == root_name && r.2 == severity)
        {
            self.escalate(now, id, prev, severity, &derived, out);
            return;
        }
        // Reported by id, not index, so that a snapshot restored against
        // an edited config still sees what changed since the last report.
        let reported = (root_name.clone(), derived.names.clone(), severity);
        if new {
            out.incidents.push(Effect::IncidentOpened {
                incident: id,
                root: root_name.clone(),
                services: reported.1.clone(),
                severity,
                expected_s: inc.expected_s,
            });
        } else if inc.reported.as_ref() != Some(&reported) {
            out.incidents.push(Effect::IncidentUpdated {
                incident: id,
                root: root_name.clone(),
                services: reported.1.clone(),
                severity,
            });
        }
        let inc = &mut self.incidents[idx];
        if new {
            let text = format!("opened: {root_name}");
            inc.log(now, "opened", text, None);
        }
        inc.reported = Some(reported);
        self.escalate(now, id, prev, severity, &derived, out);
    }

    /// The rest of a flush once the incident's line is reported: its
    /// severity, notifying (fire and life services do not wait for
    /// related alarms), steps, status reminders and next wake-up.
    fn escalate(
        &mut self,
        now: Ts,
        id: IncidentId,
        prev: Option<Severity>,
        severity: Severity,
        derived: &Derived,
        out: &mut Out,
    ) {
        let inc = &mut self.incidents[id];
        inc.severity = severity;
        if severity >= Severity::Major && prev.is_none_or(|p| p < Severity::Major) {
            inc.major_since = Some(now);
        }
        if self.incidents[id].notify_from.is_none() {
            let urgent = derived.life_down || self.has_firing(&self.incidents[id], AlarmKind::Fire);
            if urgent {
                self.start_notifying(now, id, out);
            }
        } else {
            if prev.is_some_and(|p| severity > p) {
                self.retell_severity(now, id, out);
            }
            self.evaluate_steps(now, id, out);
            self.arm_status(now, id);
        }
        self.update_wake(id);
    }

    /// What follows from the incident's services, worked out again only
    /// when they changed.
    fn derived(&mut self, id: IncidentId) -> Arc<Derived> {
        let inc = &mut self.incidents[id];
        match &inc.derived {
            Some(d) => d.clone(),
            None => {
                let d = Arc::new(Derived::of(&self.cat, &inc.services));
                inc.derived = Some(d.clone());
                d
            }
        }
    }

    /// The policies an incident follows: its services', or, while it
    /// affects none, those of the services its root feeds. Once followed,
    /// a policy stays.
    fn adopt_policies(&mut self, id: IncidentId) {
        let idx = id;
        let services = self.context_services(id);
        let inc = &mut self.incidents[idx];
        // The same services as last time: their policies are followed.
        if inc
            .adopted
            .as_ref()
            .is_some_and(|(root, s)| *root == inc.root && Arc::ptr_eq(s, &services))
        {
            return;
        }
        inc.adopted = Some((inc.root, services.clone()));
        let before = inc.policies.len();
        for s in services.iter() {
            if let Some(p) = self.cat.node(*s).policy
                && !inc.policies.contains(&p)
            {
                inc.policies.push(p);
            }
        }
        if inc.policies.len() != before {
            inc.policies.sort();
        }
    }

    /// The services whose owners, contacts and policies an incident uses.
    fn context_services(&mut self, id: IncidentId) -> Arc<Vec<NodeId>> {
        if !self.incidents[id].services.is_empty() {
            return self.derived(id).sorted.clone();
        }
        let inc = &self.incidents[id];
        let root = inc.root;
        if let Some(v) = self.fed_cache.get(&root) {
            return v.clone();
        }
        let v = Arc::new(self.cat.fed_services(root));
        self.fed_cache.insert(root, v.clone());
        v
    }

    /// The estimate for an incident with this root: history, kind or
    /// default.
    pub(super) fn estimate_for(&self, root: NodeId) -> (i64, Basis) {
        let h = &self.cat.estimate.history;
        if let Some(samples) = self.history.get(&root)
            && samples.len() >= h.min_samples.max(1)
        {
            let mut sorted: Vec<i64> = samples.iter().copied().collect();
            sorted.sort_unstable();
            let n = sorted.len();
            let rank = ((h.quantile * n as f64).ceil() as usize).clamp(1, n);
            return (sorted[rank - 1], Basis::History);
        }
        if let Some(d) = self.cat.by_kind.get(&self.root_kind(root)) {
            return (secs(*d), Basis::Kind);
        }
        (secs(self.cat.estimate.default), Basis::Default)
    }

    fn set_estimate(
        &mut self,
        now: Ts,
        id: IncidentId,
        expected_s: i64,
        basis: Basis,
        out: &mut Out,
    ) {
        let inc = &mut self.incidents[id];
        if inc.expected_s == expected_s && inc.basis == basis {
            return;
        }
        inc.expected_s = expected_s;
        inc.basis = basis;
        inc.log(
            now,
            "estimate",
            format!("expected {expected_s}s ({})", basis.as_str()),
            None,
        );
        out.estimates.push(Effect::Estimate {
            incident: id,
            expected_s,
            basis,
        });
    }

    /// While mains is down and a generator carries: when the outage is
    /// expected to outlast the fuel, say so and take on everything the
    /// mains feeds.
    fn check_generator(&mut self, now: Ts, id: IncidentId, out: &mut Out) {
        let idx = id;
        if self.incidents[idx].generator_alerted {
            return;
        }
        let cat = self.cat.clone();
        let remaining_ms = self.incidents[idx].expected_end().millis_since(now);
        // A down member carried by a generator that runs dry first.
        let runs_dry = |m: NodeId| {
            if self.graph.own[m.0 as usize] != Health::Down || !self.carried(m) {
                return None;
            }
            let runtime = self.generator_runtime(cat.node(m).backup?)?;
            (remaining_ms > millis(runtime)).then_some((m, runtime))
        };
        let members = &self.incidents[idx].members;
        // Only components with a backup can be carried: when they are
        // fewer than the members (a storm of alarms on one incident), ask
        // them first, and walk the members in order only on a hit.
        if self.backed.len() < members.len()
            && !self
                .backed
                .iter()
                .any(|&m| self.member_of.get(&m) == Some(&id) && runs_dry(m).is_some())
        {
            return;
        }
        let hit = members.iter().find_map(|&m| runs_dry(m));
        let Some((mains, runtime)) = hit else { return };
        let fed = cat.fed_services(mains);
        let inc = &mut self.incidents[idx];
        inc.generator_alerted = true;
        inc.fuel_out = Some(now.plus(runtime));
        for s in fed {
            inc.services.insert(s, Health::Down);
        }
        inc.derived = None;
        let expected_s = inc.expected_s;
        inc.basis = Basis::Generator;
        inc.log(
            now,
            "estimate",
            format!(
                "generator fuel lasts {}s, less than the outage",
                runtime.as_secs()
            ),
            None,
        );
        out.estimates.push(Effect::Estimate {
            incident: id,
            expected_s,
            basis: Basis::Generator,
        });
        self.dirty.insert(id);
    }

    fn start_notifying(&mut self, now: Ts, id: IncidentId, out: &mut Out) {
        let inc = &mut self.incidents[id];
        if inc.notify_from.is_some() {
            return;
        }
        inc.notify_from = Some(now);
        inc.settle_until = None;
        self.evaluate_steps(now, id, out);
        self.arm_status(now, id);
    }

    /// Fires every step whose condition has become true, once each.
    fn evaluate_steps(&mut self, now: Ts, id: IncidentId, out: &mut Out) {
        let idx = id;
        if self.incidents[idx].notify_from.is_none() || !self.incidents[idx].state.is_live() {
            return;
        }
        let cat = self.cat.clone();
        let policies = self.incidents[idx].policies.clone();
        for p in policies {
            for (i, step) in cat.policy(p).steps.iter().enumerate() {
                let inc = &self.incidents[idx];
                if inc.fired.contains(&(p, i)) {
                    continue;
                }
                let elapsed = now.millis_since(inc.opened);
                let due = match step.on {
                    StepOn::Open => true,
                    StepOn::ExpectedOver(d) => inc.expected_s.saturating_mul(1000) > millis(d),
                    StepOn::Unacked(d) => inc.state == IncidentState::Open && elapsed >= millis(d),
                    StepOn::OpenFor(d) => elapsed >= millis(d),
                    StepOn::LevelCrisis => inc.level == Level::Crisis,
                    StepOn::Resolved => false,
                };
                if due {
                    self.incidents[idx].fired.insert((p, i));
                    self.fire_step(now, id, p, i, out);
                }
            }
        }
    }

    fn fire_step(&mut self, now: Ts, id: IncidentId, p: PolicyId, i: usize, out: &mut Out) {
        let cat = self.cat.clone();
        let policy = cat.policy(p);
        let step = &policy.steps[i];
        let recipients = self.expand(id, &step.notify, now);
        let kind = match step.on {
            StepOn::Unacked(_) => TextKind::Unacked,
            StepOn::LevelCrisis => TextKind::Crisis,
            StepOn::Resolved => TextKind::Resolved,
            _ => TextKind::Alert,
        };
        let text = self.text(now, id, kind);
        // One notification per (person, channel, reason) for the whole
        // incident: several policies can have an `open` step, and a policy
        // that joins later must not repeat what another already said.
        let mut sent = Vec::new();
        for &(p, role) in &recipients {
            for &c in &step.via {
                let key = (p, self.effective_channel(c), step.on_text.clone());
                if self.incidents[id].step_sent.insert(key) {
                    sent.extend(self.send(
                        now,
                        id,
                        &[(p, role)],
                        &[c],
                        Reason::Step(step.on_text.clone()),
                        &text,
                        out,
                    ));
                }
            }
        }
        let inc = &mut self.incidents[id];
        inc.log(
            now,
            "step",
            format!("{}: {}", policy.id, step.on_text),
            None,
        );
        if step.on == StepOn::Resolved {
            return;
        }
        for s in &sent {
            if !inc.told.iter().any(|t| t.0 == s.0 && t.2 == s.2) {
                inc.told.push(*s);
            }
        }
        if let Some(every) = policy.deputy_after {
            self.start_chains(now, id, &recipients, &step.via, every, false);
        }
    }

    fn start_chains(
        &mut self,
        now: Ts,
        id: IncidentId,
        recipients: &[(PersonId, Option<RoleId>)],
        via: &[ChannelId],
        every: Duration,
        crisis: bool,
    ) {
        let at = now.to_timestamp();
        for &(_, role) in recipients {
            let Some(role) = role else { continue };
            let (_, deputies) = self.cat.on_duty(role, at);
            if deputies.is_empty() {
                continue;
            }
            self.incidents[id].chains.push(Chain {
                role,
                started: now,
                every,
                deputies,
                done: 0,
                via: via.to_vec(),
                crisis,
            });
        }
    }

    /// Resolves recipient references to people, in order, each once.
    /// `owner` and `contacts` are those of the services the incident
    /// affects (none while it affects none).
    fn expand(
        &self,
        id: IncidentId,
        refs: &[RecipientRef],
        now: Ts,
    ) -> Vec<(PersonId, Option<RoleId>)> {
        let inc = &self.incidents[id];
        let mut services: Vec<NodeId> = inc.services.keys().copied().collect();
        services.sort_by(|a, b| self.cat.node(*a).id.cmp(&self.cat.node(*b).id));
        self.expand_with(refs, &services, now)
    }

    fn expand_with(
        &self,
        refs: &[RecipientRef],
        services: &[NodeId],
        now: Ts,
    ) -> Vec<(PersonId, Option<RoleId>)> {
        let mut out: Vec<(PersonId, Option<RoleId>)> = Vec::new();
        let mut groups = HashSet::new();
        self.expand_into(refs, services, now, &mut out, &mut groups);
        out
    }

    fn expand_into(
        &self,
        refs: &[RecipientRef],
        services: &[NodeId],
        now: Ts,
        out: &mut Vec<(PersonId, Option<RoleId>)>,
        groups: &mut HashSet<String>,
    ) {
        let push = |p: PersonId, r: Option<RoleId>, out: &mut Vec<(PersonId, Option<RoleId>)>| {
            if !out.iter().any(|(q, _)| *q == p) {
                out.push((p, r));
            }
        };
        for r in refs {
            match r {
                RecipientRef::Role(id) => {
                    if let Some(role) = self.cat.role_id(id) {
                        let (p, _) = self.cat.on_duty(role, now.to_timestamp());
                        push(p, Some(role), out);
                    }
                }
                RecipientRef::Person(id) => {
                    if let Some(p) = self.cat.person_id(id) {
                        push(p, None, out);
                    }
                }
                RecipientRef::Group(g) => {
                    if groups.insert(g.clone())
                        && let Some(members) = self.cat.group(g)
                    {
                        self.expand_into(members, services, now, out, groups);
                    }
                }
                RecipientRef::Owner => {
                    for s in services {
                        self.expand_into(&self.cat.node(*s).owner, &[], now, out, groups);
                    }
                }
                RecipientRef::Contacts => {
                    for s in services {
                        self.expand_into(&self.cat.node(*s).contacts, &[], now, out, groups);
                    }
                }
            }
        }
    }

    /// The channel actually used: while a channel's required service is
    /// down, its fallback.
    fn effective_channel(&self, c: ChannelId) -> ChannelId {
        let mut c = c;
        for _ in 0..self.cat.channels.len() {
            let ch = self.cat.channel(c);
            match (ch.requires_service, ch.fallback) {
                (Some(s), Some(f)) if self.graph.eff[s.0 as usize] == Health::Down => c = f,
                _ => break,
            }
        }
        c
    }

    /// Sends `text` to each recipient on each channel of `via`, one per
    /// (person, channel, reason); returns what was sent.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        now: Ts,
        id: IncidentId,
        recipients: &[(PersonId, Option<RoleId>)],
        via: &[ChannelId],
        reason: Reason,
        text: &str,
        out: &mut Out,
    ) -> Vec<(PersonId, Option<RoleId>, ChannelId)> {
        let cat = self.cat.clone();
        let channels: Vec<ChannelId> = via.iter().map(|&c| self.effective_channel(c)).collect();
        let inc = &mut self.incidents[id];
        inc.batches += 1;
        let batch = inc.batches;
        let mut sent = Vec::new();
        for &(p, role) in recipients {
            for &c in &channels {
                let channel = cat.channel(c).id.clone();
                if !out.sent.insert((id, p, channel.clone(), reason.clone())) {
                    continue;
                }
                let (person, role_id) = ids(&cat, p, role);
                inc.log(
                    now,
                    "notification",
                    format!("{reason}: {person} by {channel}"),
                    None,
                );
                out.notifications.push(Effect::Notification(Notification {
                    incident: id,
                    to: p,
                    key: format!("{id}/{batch}/{reason}/{person}/{channel}"),
                    person,
                    role: role_id,
                    channel,
                    reason: reason.clone(),
                    text: text.to_owned(),
                }));
                sent.push((p, role, c));
            }
        }
        sent
    }

    fn retell_severity(&mut self, now: Ts, id: IncidentId, out: &mut Out) {
        let told = self.incidents[id].told.clone();
        if told.is_empty() {
            return;
        }
        let text = self.text(now, id, TextKind::Severity);
        // Each was told on a channel already chosen; tell them there again
        // (through its fallback if its required service is down now).
        for (p, r, c) in told {
            self.send(now, id, &[(p, r)], &[c], Reason::Severity, &text, out);
        }
    }

    /// Whether status reminders are due for this incident at all.
    fn status_active(&self, id: IncidentId) -> bool {
        let inc = &self.incidents[id];
        inc.state.is_live()
            && inc.notify_from.is_some()
            && inc.severity >= Severity::Major
            && inc.basis != Basis::Manual
    }

    /// Schedules the first status reminder of each policy that has them,
    /// or cancels them while they are not due.
    fn arm_status(&mut self, _now: Ts, id: IncidentId) {
        let active = self.status_active(id);
        let cat = self.cat.clone();
        let inc = &mut self.incidents[id];
        if !active {
            inc.status_next.clear();
            return;
        }
        let (Some(from), major) = (inc.notify_from, inc.major_since) else {
            return;
        };
        let base = major.map_or(from, |m| m.max(from));
        for &p in &inc.policies {
            let policy = cat.policy(p);
            let Some(every) = policy.status_every else {
                continue;
            };
            if policy.status_to.is_empty() || inc.status_next.iter().any(|(q, _)| *q == p) {
                continue;
            }
            inc.status_next.push((p, base.plus(every)));
        }
    }

    fn send_status(&mut self, now: Ts, id: IncidentId, p: PolicyId, out: &mut Out) {
        let cat = self.cat.clone();
        let policy = cat.policy(p);
        let recipients = self.expand(id, &policy.status_to, now);
        let text = self.text(now, id, TextKind::Status);
        self.send(
            now,
            id,
            &recipients,
            policy.followup_via(),
            Reason::Status,
            &text,
            out,
        );
        if let Some(every) = policy.status_every {
            let inc = &mut self.incidents[id];
            inc.status_next.retain(|(q, _)| *q != p);
            inc.status_next.push((p, now.plus(every)));
        }
    }

    /// Runs whatever of an incident's timers is due at `now`.
    pub(super) fn on_incident_due(&mut self, now: Ts, id: IncidentId, out: &mut Out) {
        let idx = id;
        if !self.incidents[idx].state.is_live() {
            return;
        }
        if self.incidents[idx].notify_from.is_none()
            && self.incidents[idx].settle_until.is_some_and(|s| s <= now)
        {
            self.start_notifying(now, id, out);
        }
        if self.incidents[idx].expected_end() <= now {
            let was_manual = self.incidents[idx].basis == Basis::Manual;
            let elapsed = ceil_secs(now.millis_since(self.incidents[idx].opened));
            let expected = elapsed.saturating_add(secs(self.cat.estimate.extend).max(1));
            self.set_estimate(now, id, expected, Basis::Extended, out);
            self.check_generator(now, id, out);
            if was_manual && self.status_active(id) {
                // The promised return time has passed: say so at once.
                let policies = self.incidents[idx].policies.clone();
                for p in policies {
                    let policy = self.cat.policy(p);
                    if policy.status_every.is_some() && !policy.status_to.is_empty() {
                        self.send_status(now, id, p, out);
                    }
                }
            }
        }
        // Time-based steps, and `expected >` after an extension.
        self.evaluate_steps(now, id, out);
        self.run_chains(now, id, out);
        let due: Vec<PolicyId> = self.incidents[idx]
            .status_next
            .iter()
            .filter(|(_, t)| *t <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            if self.status_active(id) {
                self.send_status(now, id, p, out);
            } else {
                self.incidents[idx].status_next.retain(|(q, _)| *q != p);
            }
        }
        if !self.dirty.is_empty() {
            self.flush(now, out);
        }
        self.update_wake(id);
    }

    fn run_chains(&mut self, now: Ts, id: IncidentId, out: &mut Out) {
        let idx = id;
        let mut k = 0;
        while k < self.incidents[idx].chains.len() {
            let chain = self.incidents[idx].chains[k].clone();
            if chain.next_at().is_some_and(|t| t <= now) {
                let deputy = chain.deputies[chain.done];
                let kind = if chain.crisis {
                    TextKind::DeputyCrisis
                } else {
                    TextKind::Deputy
                };
                let text = self.text(now, id, kind);
                self.send(
                    now,
                    id,
                    &[(deputy, Some(chain.role))],
                    &chain.via,
                    Reason::Deputy,
                    &text,
                    out,
                );
                self.incidents[idx].chains[k].done += 1;
            }
            if self.incidents[idx].chains[k].next_at().is_none() {
                self.incidents[idx].chains.remove(k);
            } else {
                k += 1;
            }
        }
    }

    /// Keeps the incident's entry in the wake-up queue at its next due time.
    pub(super) fn update_wake(&mut self, id: IncidentId) {
        let inc = &self.incidents[id];
        let mut next: Option<Ts> = None;
        let mut consider = |t: Ts| next = Some(next.map_or(t, |n| n.min(t)));
        if inc.state.is_live() {
            if inc.notify_from.is_none() {
                if let Some(s) = inc.settle_until {
                    consider(s);
                }
            } else {
                for &p in &inc.policies {
                    for (i, step) in self.cat.policy(p).steps.iter().enumerate() {
                        if inc.fired.contains(&(p, i)) {
                            continue;
                        }
                        match step.on {
                            StepOn::Unacked(d) if inc.state == IncidentState::Open => {
                                consider(inc.opened.plus(d))
                            }
                            StepOn::OpenFor(d) => consider(inc.opened.plus(d)),
                            _ => {}
                        }
                    }
                }
                for c in &inc.chains {
                    if let Some(t) = c.next_at() {
                        consider(t);
                    }
                }
                for (_, t) in &inc.status_next {
                    consider(*t);
                }
            }
            consider(inc.expected_end());
        }
        let old = inc.wake;
        if old == next {
            return;
        }
        if let Some(o) = old {
            self.wakes.remove(&(o, id));
        }
        if let Some(n) = next {
            self.wakes.insert((n, id));
        }
        self.incidents[id].wake = next;
    }

    /// On resolve: the `resolved` steps, then recovery notifications to
    /// every affected service's `recovery_notify`, except those just told.
    pub(super) fn notify_resolved(&mut self, now: Ts, id: IncidentId, out: &mut Out) {
        let idx = id;
        if self.incidents[idx].notify_from.is_none() {
            return;
        }
        let cat = self.cat.clone();
        let before = out.notifications.len();
        let policies = self.incidents[idx].policies.clone();
        for p in policies {
            for (i, step) in cat.policy(p).steps.iter().enumerate() {
                if step.on == StepOn::Resolved && self.incidents[idx].fired.insert((p, i)) {
                    self.fire_step(now, id, p, i, out);
                }
            }
        }
        let told: HashSet<String> = out.notifications[before..]
            .iter()
            .filter_map(|e| match e {
                Effect::Notification(n) if n.incident == id => Some(n.person.clone()),
                _ => None,
            })
            .collect();
        let text = self.text(now, id, TextKind::Recovery);
        let mut services: Vec<NodeId> = self.incidents[idx].services.keys().copied().collect();
        services.sort_by(|a, b| cat.node(*a).id.cmp(&cat.node(*b).id));
        let fallback_policy = self.incidents[idx].policies.first().copied();
        for s in services {
            let node = cat.node(s);
            let recipients: Vec<_> = self
                .expand_with(&node.recovery_notify, &[s], now)
                .into_iter()
                .filter(|(p, _)| !told.contains(&cat.person(*p).id))
                .collect();
            let Some(p) = node.policy.or(fallback_policy) else {
                continue;
            };
            let via = cat.policy(p).followup_via().to_vec();
            self.send(now, id, &recipients, &via, Reason::Recovery, &text, out);
        }
    }

    pub(super) fn on_ack(
        &mut self,
        now: Ts,
        id: IncidentId,
        by: String,
        note: Option<String>,
        out: &mut Out,
    ) -> Result<(), EngineError> {
        let id = self.live_incident(id)?;
        let inc = &mut self.incidents[id];
        if inc.state == IncidentState::Open {
            inc.state = IncidentState::Acknowledged;
            inc.acknowledged_at = Some(now);
            inc.acknowledged_by = Some(by.clone());
        }
        // Every deputy chain started before this acknowledgement stops.
        inc.chains.clear();
        let text = match note {
            Some(n) => format!("acknowledged: {n}"),
            None => "acknowledged".to_owned(),
        };
        inc.log(now, "ack", text, Some(by.clone()));
        out.cause.push(Effect::Acknowledged { incident: id, by });
        self.update_wake(id);
        Ok(())
    }

    pub(super) fn on_eta(
        &mut self,
        now: Ts,
        id: IncidentId,
        expected: Duration,
        by: Option<String>,
        out: &mut Out,
    ) -> Result<(), EngineError> {
        let id = self.live_incident(id)?;
        let expected_s = ceil_secs(millis(expected.min(crate::config::MAX_DURATION)));
        self.incidents[id].log(
            now,
            "eta",
            format!("expected {expected_s}s from opening"),
            by,
        );
        self.set_estimate(now, id, expected_s, Basis::Manual, out);
        self.check_generator(now, id, out);
        self.dirty.insert(id);
        self.flush(now, out);
        self.arm_status(now, id);
        self.update_wake(id);
        Ok(())
    }

    pub(super) fn on_note(
        &mut self,
        now: Ts,
        id: IncidentId,
        by: String,
        text: String,
        decision: bool,
        public: bool,
    ) -> Result<(), EngineError> {
        let id = self.live_incident(id)?;
        let kind = if decision { "decision" } else { "event" };
        self.incidents[id].log(now, kind, text, Some(by));
        if public && let Some(entry) = self.incidents[id].timeline.last_mut() {
            entry.public = true;
        }
        Ok(())
    }

    pub(super) fn on_level(
        &mut self,
        now: Ts,
        id: IncidentId,
        level: Level,
        by: String,
        out: &mut Out,
    ) -> Result<(), EngineError> {
        let id = self.live_incident(id)?;
        let idx = id;
        if self.incidents[idx].level == level {
            self.incidents[idx].log(now, "level", format!("{} again", level.as_str()), Some(by));
            return Ok(());
        }
        self.incidents[idx].level = level;
        let place = match level {
            Level::Crisis => self.meeting_place(),
            Level::Department => None,
        };
        self.incidents[idx].meeting_place = place.clone();
        let text = format!(
            "level {}{}",
            level.as_str(),
            place
                .as_ref()
                .map(|p| format!(", meet at {p}"))
                .unwrap_or_default()
        );
        self.incidents[idx].log(now, "level", text, Some(by));
        out.cause.push(Effect::Level {
            incident: id,
            level,
            meeting_place: place.clone(),
        });
        if level == Level::Crisis {
            // A person raised the level: no more waiting for related alarms.
            if self.incidents[idx].notify_from.is_none() {
                self.start_notifying(now, id, out);
            } else {
                self.evaluate_steps(now, id, out);
            }
            self.summon_crisis_staff(now, id, out);
        }
        self.update_wake(id);
        Ok(())
    }

    fn summon_crisis_staff(&mut self, now: Ts, id: IncidentId, out: &mut Out) {
        let cat = self.cat.clone();
        let recipients = self.expand(id, &cat.crisis_staff, now);
        let text = self.text(now, id, TextKind::Crisis);
        self.send(
            now,
            id,
            &recipients,
            &cat.crisis_via,
            Reason::Crisis,
            &text,
            out,
        );
        let every = self.incidents[id]
            .policies
            .iter()
            .find_map(|p| cat.policy(*p).deputy_after);
        if let Some(every) = every {
            self.start_chains(now, id, &recipients, &cat.crisis_via, every, true);
        }
    }

    /// The first meeting place, by priority, whose building has no open
    /// incident with a firing fire or power alarm there.
    pub fn meeting_place(&self) -> Option<String> {
        self.cat
            .meeting_places
            .iter()
            .find(|m| {
                let Some(b) = &m.building else { return true };
                !self.cat.buildings.get(b).is_some_and(|nodes| {
                    nodes.iter().any(|n| {
                        self.member_of.contains_key(n)
                            && self.firing.get(n).is_some_and(|l| {
                                l.has_kind(AlarmKind::Fire) || l.has_kind(AlarmKind::Power)
                            })
                    })
                })
            })
            .map(|m| m.name.clone())
    }

    fn text(&self, now: Ts, id: IncidentId, kind: TextKind) -> String {
        let inc = &self.incidents[id];
        let cat = &self.cat;
        let mut services: Vec<NodeId> = inc.services.keys().copied().collect();
        services.sort_by_key(|s| (cat.node(*s).criticality(), cat.node(*s).id.clone()));
        let facts = Facts {
            incident: id,
            severity: inc.severity,
            cause: self.root_kind(inc.root),
            root: cat.node(inc.root).name.clone(),
            services: services.iter().map(|s| cat.node(*s).name.clone()).collect(),
            expected_end: (inc.state.is_live()).then(|| inc.expected_end().to_timestamp()),
            fuel_out: inc.fuel_out.map(Ts::to_timestamp),
            duration_s: inc.resolved_at.map(|r| r.millis_since(inc.opened) / 1000),
            resolved_by: inc.resolved_by.clone(),
            meeting_place: if matches!(kind, TextKind::Crisis | TextKind::DeputyCrisis) {
                self.meeting_place()
            } else {
                None
            },
            now: now.to_timestamp(),
        };
        text::render(cat.language, &cat.tz, kind, &facts)
    }
}
