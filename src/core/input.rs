//! Taking inputs through the engine: MQTT messages, probe results and the
//! commands of the API and the daemon, each into the batch being built.

use super::*;

impl<S: Store> Core<S> {
    pub(super) fn on_mqtt(
        &mut self,
        now: Ts,
        input: MqttInput,
        batch: &mut Batch,
        done: &mut Vec<Done>,
        touched: &mut BTreeSet<IncidentId>,
    ) {
        match input {
            MqttInput::Message(m) => {
                let received = m.received;
                let raw = m.payload;
                let event = Event::Mqtt {
                    topic: m.topic,
                    payload: raw,
                };
                match self.engine.apply(now, event.clone()) {
                    Ok(applied) => {
                        let raw = match &event {
                            Event::Mqtt { payload, .. } => Some(payload.as_slice()),
                            _ => None,
                        };
                        self.record(now, &applied.effects, raw, batch, touched);
                        if applied.changed {
                            batch.input(now, Source::Mqtt, None, event);
                            self.logged_since_snapshot += 1;
                        }
                    }
                    Err(e) => warn!(error = %e, "mqtt input refused by the engine"),
                }
                done.push(Done::Ack(m.acker));
                done.push(Done::Ingested(Source::Mqtt, received));
            }
            MqttInput::Connected { session_present } => {
                note_mqtt_state(
                    &self.status,
                    &self.metrics,
                    &MqttInput::Connected { session_present },
                );
                if !session_present && self.mqtt_seen {
                    warn!(
                        "the MQTT broker had no session for us: alarms published while we were \
                         away may be lost"
                    );
                    batch.events.push(SystemEvent {
                        id: 0,
                        at: now,
                        kind: "mqtt_possible_loss".into(),
                        detail: "the broker reported no session on connect: messages queued for \
                                 beredskab before that may be lost"
                            .into(),
                    });
                }
                if !self.mqtt_seen {
                    self.mqtt_seen = true;
                    batch.meta.push((META_MQTT_SEEN.to_owned(), "1".to_owned()));
                }
            }
            MqttInput::Subscribed { refused } => {
                self.status.mqtt.store(Status::MQTT_UP, Ordering::Relaxed);
                if !refused.is_empty() {
                    error!(refused = ?refused, "the MQTT broker refused subscriptions");
                    batch.events.push(SystemEvent {
                        id: 0,
                        at: now,
                        kind: "mqtt_subscription_refused".into(),
                        detail: refused.join(", "),
                    });
                }
            }
            MqttInput::Disconnected { error } => {
                self.status.mqtt.store(Status::MQTT_DOWN, Ordering::Relaxed);
                self.metrics.set_mqtt_connected(false);
                debug!(error = %error, "mqtt disconnected");
            }
        }
    }

    pub(super) fn on_probe(
        &mut self,
        now: Ts,
        report: ProbeReport,
        batch: &mut Batch,
        done: &mut Vec<Done>,
        touched: &mut BTreeSet<IncidentId>,
    ) {
        let received = Instant::now();
        let cat = self.cat.clone();
        let Some(pid) = cat.probe_id(&report.id) else {
            // A probe of a config that was just reloaded away.
            return;
        };
        let probe = cat.probe(pid);
        let up = !matches!(
            intake::classify(&probe.config, &report.result).0,
            intake::ProbeClass::Failed(_)
        );
        self.metrics
            .observe_probe(&cat, pid, report.elapsed.as_secs_f64(), up);
        if let Some(left) = report.result.expires_in_s {
            self.metrics
                .tls_expiry
                .with_label_values(&[report.id.as_str()])
                .set(left as f64);
        }
        // Logged where it is counted: a probe that starts or stops failing.
        let was = match self.probe_up.get_mut(&report.id) {
            Some(was) => Some(std::mem::replace(was, up)),
            None => self.probe_up.insert(report.id.clone(), up),
        };
        if was != Some(up) {
            if up {
                info!(probe = %report.id, elapsed_ms = report.elapsed.as_millis() as u64, "probe ok");
            } else {
                warn!(probe = %report.id, elapsed_ms = report.elapsed.as_millis() as u64, "probe failing");
            }
        }
        let applied = self.engine.apply_probe(now, &report.id, &report.result);
        self.record(now, &applied.effects, None, batch, touched);
        if applied.changed {
            let event = Event::Probe {
                id: report.id,
                result: report.result,
            };
            batch.input(now, Source::Probe, None, event);
            self.logged_since_snapshot += 1;
            done.push(Done::Ingested(Source::Probe, received));
        }
        if probe.config.generator.is_some()
            && let Some(runtime) = self.engine.generator_runtime(probe.node)
        {
            self.metrics
                .generator_runtime
                .with_label_values(&[cat.node(probe.node).id.as_str()])
                .set(runtime.as_secs_f64());
        }
    }

    pub(super) fn on_command(
        &mut self,
        now: Ts,
        command: Command,
        batch: &mut Batch,
        done: &mut Vec<Done>,
        touched: &mut BTreeSet<IncidentId>,
    ) {
        match command {
            Command::Input {
                event,
                source,
                received,
                reply,
            } => {
                let (result, input) = self.apply_logged(now, source, event, batch, touched);
                done.push(Done::Reply {
                    reply,
                    result,
                    input,
                    received,
                    source,
                });
            }
            Command::Inputs {
                events,
                refused,
                source,
                received,
                reply,
            } => {
                for r in refused {
                    self.reject(now, r.source, r.reason, r.detail, &r.raw, batch);
                }
                let results = events
                    .into_iter()
                    .map(|event| self.apply_logged(now, source, event, batch, touched))
                    .collect();
                done.push(Done::Replies {
                    reply,
                    results,
                    received,
                    source,
                });
            }
            Command::Report {
                alarm,
                expected,
                received,
                reply,
            } => {
                let source = alarm.source;
                let node = alarm.component.clone();
                let report = Event::Report { alarm, expected };
                let (mut result, input) = self.apply_logged(now, source, report, batch, touched);
                if let Ok(receipt) = &mut result
                    && receipt.rejected.is_none()
                {
                    receipt.incident = self
                        .cat
                        .node_id(&node)
                        .and_then(|n| self.engine.incident_of(n));
                }
                done.push(Done::Reply {
                    reply,
                    result,
                    input,
                    received,
                    source,
                });
            }
            Command::Reject { refused, reply } => {
                let Refused {
                    source,
                    reason,
                    detail,
                    raw,
                } = refused;
                self.reject(now, source, reason, detail, &raw, batch);
                done.push(Done::Rejected(reply));
            }
            Command::AckLink {
                link,
                incident,
                by,
                reply,
            } => {
                // The engine keeps the used links with the incident, so a
                // replay restores them; the store's table serves the page.
                let ack = Event::AckLink {
                    incident,
                    by: by.clone(),
                    link: link.clone(),
                };
                let result = match self
                    .apply_logged(now, Source::Manual, ack, batch, touched)
                    .0
                {
                    Ok(_) => {
                        batch.used_links.push(UsedLink {
                            link,
                            at: now,
                            incident: incident.0,
                            person: by,
                        });
                        Ok(LinkOutcome::Acknowledged)
                    }
                    Err(EngineError::LinkUsed(_)) => Ok(LinkOutcome::AlreadyUsed),
                    Err(e) => Err(e),
                };
                done.push(Done::Linked(reply, result));
            }
            Command::Reload { catalogue, reply } => {
                // Steps the new config makes true fire now, not at the
                // time of the last change.
                let mut snap = self.engine.snapshot();
                snap.clock = Some(now);
                let (engine, warnings) = Engine::restore(catalogue.clone(), &snap);
                for w in &warnings {
                    warn!(warning = %w, "reloaded config: not carried over");
                }
                self.engine = engine;
                self.cat = catalogue;
                self.stored.clear();
                self.reset_board();
                self.metrics.reset_catalogue_series();
                self.probe_up
                    .retain(|id, _| self.cat.probe_id(id).is_some());
                self.set_all_gauges();
                // The next commit stores the state under the new config.
                self.snapshot_every = 0;
                info!(
                    warnings = warnings.len(),
                    "engine took the reloaded catalogue"
                );
                batch.events.push(SystemEvent {
                    id: 0,
                    at: now,
                    kind: "reloaded".into(),
                    detail: if warnings.is_empty() {
                        "config reloaded".into()
                    } else {
                        format!("config reloaded; not carried over: {}", warnings.join("; "))
                    },
                });
                done.push(Done::Reloaded(reply, warnings));
            }
        }
    }

    /// Applies an API input; it is logged whatever it did, so that the
    /// caller gets its seq.
    pub(super) fn apply_logged(
        &mut self,
        now: Ts,
        source: Source,
        event: Event,
        batch: &mut Batch,
        touched: &mut BTreeSet<IncidentId>,
    ) -> (Result<Receipt, EngineError>, Option<usize>) {
        match self.engine.apply(now, event.clone()) {
            Ok(applied) => {
                let rejected = applied.effects.iter().find_map(|e| match e {
                    Effect::Rejected { reason, detail, .. } => Some((*reason, detail.clone())),
                    _ => None,
                });
                self.record(now, &applied.effects, None, batch, touched);
                let input = rejected.is_none().then(|| {
                    self.logged_since_snapshot += 1;
                    batch.input(now, source, None, event)
                });
                let receipt = Receipt {
                    rejected,
                    ..Receipt::default()
                };
                (Ok(receipt), input)
            }
            Err(e) => (Err(e), None),
        }
    }
}

/// What the MQTT collector's news about its connection means for
/// `/readyz` and `beredskab_mqtt_connected`: ready once the subscriptions
/// are acknowledged (the collector reports `Subscribed` even when it has
/// none). Messages change nothing here.
pub fn note_mqtt_state(status: &Status, metrics: &Metrics, input: &MqttInput) {
    match input {
        MqttInput::Message(_) => {}
        MqttInput::Connected { .. } => {
            status
                .mqtt
                .store(Status::MQTT_SUBSCRIBING, Ordering::Relaxed);
            metrics.set_mqtt_connected(true);
        }
        MqttInput::Subscribed { .. } => status.mqtt.store(Status::MQTT_UP, Ordering::Relaxed),
        MqttInput::Disconnected { .. } => {
            status.mqtt.store(Status::MQTT_DOWN, Ordering::Relaxed);
            metrics.set_mqtt_connected(false);
        }
    }
}
