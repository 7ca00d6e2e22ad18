//! Recording what the engine decided: effects to rows, counts and log
//! lines; the incident projection, the watermark and snapshots; the
//! gauges that follow the engine's state.

use super::*;

impl<S: Store> Core<S> {
    /// Adds the incident projection, the watermark and maybe a snapshot.
    pub(super) fn finish(
        &mut self,
        batch: &mut Batch,
        touched: &BTreeSet<IncidentId>,
        snapshot: bool,
    ) {
        // Only what the batch changed: an incident the engine did not
        // touch has the row and timeline it had.
        let mut ids = self.engine.take_changed_incidents();
        ids.extend(touched.iter().copied());
        self.upcoming_stale.extend(ids.iter().copied());
        self.gauges
            .update(ids.iter().copied(), &self.engine, &self.cat, &self.metrics);
        for id in ids {
            let Some(inc) = self.engine.incident(id) else {
                continue;
            };
            let row = IncidentRow::from_incident(inc, &self.cat);
            let len = inc.timeline.len();
            let (old_row, old_len) = match self.stored.get(&id) {
                Some((r, l)) => (Some(r), *l),
                None => (None, 0),
            };
            if old_row == Some(&row) && old_len == len {
                continue;
            }
            if old_len < len {
                batch.timeline(id.0, old_len, inc.timeline[old_len..].to_vec());
            }
            batch.incident(row.clone());
            self.stored.insert(id, (row, len));
        }
        // What is over is now in the batch: it leaves memory, and is read
        // from the store from here on.
        for id in self.engine.forget_resolved() {
            self.stored.remove(&id);
        }
        self.status
            .incidents_held
            .store(self.engine.incidents().len(), Ordering::Relaxed);
        // The watermark alone is not worth a durable commit (a probe
        // answering as before changes nothing): timers that ran with no
        // effect run again, with no effect, after a crash. It goes with
        // anything else the batch holds, and at least every
        // WATERMARK_EVERY.
        if !batch.is_empty()
            || snapshot
            || self.last_at.millis_since(self.watermark_stored) >= WATERMARK_EVERY_MS
        {
            batch
                .meta
                .push((META_WATERMARK.to_owned(), self.last_at.0.to_string()));
            self.watermark_stored = self.last_at;
        }
        if snapshot {
            self.take_snapshot();
        }
    }

    pub(super) fn reject(
        &mut self,
        now: Ts,
        source: Source,
        reason: RejectReason,
        detail: String,
        raw: &[u8],
        batch: &mut Batch,
    ) {
        warn!(source = source.as_str(), reason = reason.as_str(), detail = %detail, "input rejected");
        self.metrics
            .alarms_rejected
            .with_label_values(&[source.as_str(), reason.as_str()])
            .inc();
        batch.rejected(Rejection {
            at: now,
            source,
            reason,
            detail,
            raw: raw.to_vec(),
            dedup_key: None,
        });
    }

    /// Writes what the engine decided into the batch, counts and logs it.
    pub(super) fn record(
        &mut self,
        at: Ts,
        effects: &[Effect],
        raw: Option<&[u8]>,
        batch: &mut Batch,
        touched: &mut BTreeSet<IncidentId>,
    ) {
        for e in effects {
            match e {
                Effect::Alarm {
                    component,
                    kind,
                    state,
                    severity,
                    source,
                    message,
                    key,
                } => {
                    debug!(component = %component, kind = kind.as_str(), state = state.as_str(),
                        source = source.as_str(), "alarm");
                    self.metrics
                        .alarms
                        .with_label_values(&[source.as_str(), kind.as_str()])
                        .inc();
                    batch.alarms.push(AlarmRow {
                        id: 0,
                        at,
                        source: *source,
                        component: component.clone(),
                        kind: kind.as_str().to_owned(),
                        state: *state,
                        severity: *severity,
                        key: key.clone(),
                        message: message.clone(),
                    });
                }
                Effect::Rejected {
                    source,
                    reason,
                    detail,
                } => self.reject(
                    at,
                    *source,
                    *reason,
                    detail.clone(),
                    raw.unwrap_or(&[]),
                    batch,
                ),
                Effect::IncidentOpened {
                    incident,
                    root,
                    severity,
                    expected_s,
                    ..
                } => {
                    info!(incident = incident.0, root = %root, severity = severity.as_str(), expected_s, "incident opened");
                    self.metrics
                        .incidents
                        .with_label_values(&[severity.as_str()])
                        .inc();
                    touched.insert(*incident);
                }
                Effect::IncidentUpdated { incident, .. }
                | Effect::Estimate { incident, .. }
                | Effect::Level { incident, .. } => {
                    touched.insert(*incident);
                }
                Effect::IncidentMerged { incident, into } => {
                    info!(incident = incident.0, into = into.0, "incident merged");
                    touched.insert(*incident);
                    touched.insert(*into);
                }
                Effect::Acknowledged { incident, by } => {
                    info!(incident = incident.0, by = %by, "incident acknowledged");
                    if let Some(inc) = self.engine.incident(*incident)
                        && inc.acknowledged_at == Some(at)
                    {
                        self.metrics
                            .ack_seconds
                            .observe(at.millis_since(inc.opened) as f64 / 1000.0);
                    }
                    touched.insert(*incident);
                }
                Effect::IncidentResolved {
                    incident,
                    duration_ms,
                } => {
                    info!(
                        incident = incident.0,
                        duration_s = duration_ms / 1000,
                        "incident resolved"
                    );
                    if let Some(inc) = self.engine.incident(*incident)
                        && inc.first_expected_s > 0
                    {
                        self.metrics
                            .estimate_ratio
                            .with_label_values(&[inc.first_basis.as_str()])
                            .observe(*duration_ms as f64 / 1000.0 / inc.first_expected_s as f64);
                    }
                    touched.insert(*incident);
                }
                Effect::Notification(n) => {
                    debug!(incident = n.incident.0, to = %n.person, channel = %n.channel,
                        reason = %n.reason, "notification queued");
                    batch.notification(at, n.clone());
                    touched.insert(n.incident);
                }
            }
        }
        for (node, health) in self.engine.take_health_changes() {
            self.metrics.set_health(&self.cat, node, health);
            self.saw_health_change(node, at);
        }
    }

    pub(super) fn set_all_gauges(&mut self) {
        self.metrics.set_config(self.cat.fingerprint());
        for i in 0..self.cat.nodes.len() {
            let node = crate::catalogue::NodeId(i as u32);
            self.metrics
                .set_health(&self.cat, node, self.engine.health(node));
        }
        self.gauges.rebuild(&self.engine, &self.cat, &self.metrics);
    }
}
