//! Every Prometheus metric of SPEC §7, in one registry.
//!
//! The daemon's tasks update them (the engine's core after each commit, the
//! collectors and the notifier as they work); `GET /metrics` renders them.
//! Labels are bounded sets: service, component and probe ids from the
//! config, kinds, reasons and outcomes — never alarm or incident ids.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::catalogue::{Catalogue, NodeKind};
use crate::engine::Health;

/// Buckets for durations measured in seconds, from a millisecond to a week.
const SECONDS_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86_400.0,
    604_800.0,
];
/// Buckets for actual ÷ expected duration.
const RATIO_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 4.0, 10.0];

/// The metrics. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    pub service_up: GaugeVec,
    pub component_up: GaugeVec,
    pub alarms: IntCounterVec,
    pub alarms_rejected: IntCounterVec,
    pub incidents_open: IntGaugeVec,
    pub incidents: IntCounterVec,
    pub notifications: IntCounterVec,
    pub ack_seconds: Histogram,
    pub probe_duration: HistogramVec,
    pub probe_up: GaugeVec,
    pub tls_expiry: GaugeVec,
    pub mqtt_connected: Gauge,
    pub ingest_seconds: HistogramVec,
    pub generator_runtime: GaugeVec,
    pub estimate_ratio: HistogramVec,
    pub outbox_pending: IntGaugeVec,
    pub outbox_oldest: GaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            service_up: gauge_vec(
                "beredskab_service_up",
                "Service health: 1 up, 0.5 degraded, 0 down",
                &["service", "criticality"],
            ),
            component_up: gauge_vec(
                "beredskab_component_up",
                "Component health: 1 up, 0.5 degraded, 0 down",
                &["component", "kind"],
            ),
            alarms: counter_vec(
                "beredskab_alarms_total",
                "Accepted alarm state changes",
                &["source", "kind"],
            ),
            alarms_rejected: counter_vec(
                "beredskab_alarms_rejected_total",
                "Rejected input, by reason",
                &["source", "reason"],
            ),
            incidents_open: IntGaugeVec::new(
                Opts::new("beredskab_incidents_open", "Incidents not yet resolved"),
                &["severity"],
            )
            .expect("constant metric definition"),
            incidents: counter_vec(
                "beredskab_incidents_total",
                "Incidents opened",
                &["severity"],
            ),
            notifications: counter_vec(
                "beredskab_notifications_total",
                "Notification attempts, by outcome",
                &["channel", "outcome"],
            ),
            ack_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "beredskab_ack_seconds",
                    "Time from an incident's opening to its first acknowledgement",
                )
                .buckets(SECONDS_BUCKETS.to_vec()),
            )
            .expect("constant metric definition"),
            probe_duration: histogram_vec(
                "beredskab_probe_duration_seconds",
                "Time a probe request took",
                &["probe"],
                &SECONDS_BUCKETS,
            ),
            probe_up: gauge_vec(
                "beredskab_probe_up",
                "Whether a probe's last request succeeded",
                &["probe"],
            ),
            tls_expiry: gauge_vec(
                "beredskab_tls_expiry_seconds",
                "Time until a tls probe's certificate expires (negative once expired)",
                &["probe"],
            ),
            mqtt_connected: Gauge::new(
                "beredskab_mqtt_connected",
                "Whether the MQTT collector is connected",
            )
            .expect("constant metric definition"),
            ingest_seconds: histogram_vec(
                "beredskab_ingest_seconds",
                "Time from an alarm's arrival to the committed incident decision",
                &["source"],
                &SECONDS_BUCKETS,
            ),
            generator_runtime: gauge_vec(
                "beredskab_generator_runtime_seconds",
                "Generator runtime left on the latest fuel reading",
                &["component"],
            ),
            estimate_ratio: histogram_vec(
                "beredskab_estimate_ratio",
                "Actual / first expected duration of each resolved incident",
                &["basis"],
                &RATIO_BUCKETS,
            ),
            outbox_pending: IntGaugeVec::new(
                Opts::new(
                    "beredskab_outbox_pending",
                    "Notifications decided and not yet sent or given up",
                ),
                &["channel"],
            )
            .expect("constant metric definition"),
            outbox_oldest: gauge_vec(
                "beredskab_outbox_oldest_seconds",
                "Age of the oldest notification not yet sent or given up (0 when none)",
                &["channel"],
            ),
            registry,
        };
        let build_info = gauge_vec(
            "beredskab_build_info",
            "Always 1, labelled with the version",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        let all: [Box<dyn prometheus::core::Collector>; 18] = [
            Box::new(m.service_up.clone()),
            Box::new(m.component_up.clone()),
            Box::new(m.alarms.clone()),
            Box::new(m.alarms_rejected.clone()),
            Box::new(m.incidents_open.clone()),
            Box::new(m.incidents.clone()),
            Box::new(m.notifications.clone()),
            Box::new(m.ack_seconds.clone()),
            Box::new(m.probe_duration.clone()),
            Box::new(m.probe_up.clone()),
            Box::new(m.tls_expiry.clone()),
            Box::new(m.mqtt_connected.clone()),
            Box::new(m.ingest_seconds.clone()),
            Box::new(m.generator_runtime.clone()),
            Box::new(m.estimate_ratio.clone()),
            Box::new(m.outbox_pending.clone()),
            Box::new(m.outbox_oldest.clone()),
            Box::new(build_info),
        ];
        for c in all {
            m.registry
                .register(c)
                .expect("each metric is registered once");
        }
        m
    }

    /// Sets the health gauge of a node.
    pub fn set_health(&self, cat: &Catalogue, node: crate::catalogue::NodeId, health: Health) {
        let n = cat.node(node);
        match n.kind {
            NodeKind::Service(c) => self
                .service_up
                .with_label_values(&[n.id.as_str(), c.as_str()])
                .set(health.gauge()),
            NodeKind::Component(k) => self
                .component_up
                .with_label_values(&[n.id.as_str(), k.as_str()])
                .set(health.gauge()),
        }
    }

    /// Forgets the per-node and per-probe series, before a reloaded config
    /// sets them again (removed services must not linger as stale series).
    pub fn reset_catalogue_series(&self) {
        self.service_up.reset();
        self.component_up.reset();
        self.probe_up.reset();
        self.tls_expiry.reset();
        self.generator_runtime.reset();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("constant metric definition")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("constant metric definition")
}

fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("constant metric definition")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_metric_is_exposed() {
        let m = Metrics::new();
        m.alarms.with_label_values(&["mqtt", "fire"]).inc();
        m.alarms_rejected
            .with_label_values(&["mqtt", "bad_payload"])
            .inc();
        m.incidents_open.with_label_values(&["critical"]).set(1);
        m.incidents.with_label_values(&["critical"]).inc();
        m.notifications.with_label_values(&["sms", "sent"]).inc();
        m.ack_seconds.observe(30.0);
        m.probe_duration.with_label_values(&["p"]).observe(0.01);
        m.probe_up.with_label_values(&["p"]).set(1.0);
        m.tls_expiry.with_label_values(&["web"]).set(-3600.0);
        m.ingest_seconds.with_label_values(&["mqtt"]).observe(0.002);
        m.generator_runtime.with_label_values(&["gen"]).set(3600.0);
        m.estimate_ratio.with_label_values(&["kind"]).observe(1.2);
        m.outbox_pending.with_label_values(&["sms"]).set(2);
        m.outbox_oldest.with_label_values(&["sms"]).set(12.5);
        m.service_up
            .with_label_values(&["mail", "important"])
            .set(1.0);
        m.component_up
            .with_label_values(&["srv", "server"])
            .set(0.0);
        let text = m.render();
        for name in [
            "beredskab_service_up",
            "beredskab_component_up",
            "beredskab_alarms_total",
            "beredskab_alarms_rejected_total",
            "beredskab_incidents_open",
            "beredskab_incidents_total",
            "beredskab_notifications_total",
            "beredskab_ack_seconds",
            "beredskab_probe_duration_seconds",
            "beredskab_probe_up",
            "beredskab_tls_expiry_seconds",
            "beredskab_mqtt_connected",
            "beredskab_ingest_seconds",
            "beredskab_generator_runtime_seconds",
            "beredskab_estimate_ratio",
            "beredskab_build_info",
            "beredskab_outbox_pending",
            "beredskab_outbox_oldest_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing from:\n{text}"
            );
        }
    }
}
