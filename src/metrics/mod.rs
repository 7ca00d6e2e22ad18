//! Every Prometheus metric of SPEC §7, in one registry, and one beside it:
//! `beredskab_service_first_expected_back_timestamp_seconds`, for the alert
//! on a critical service down past its estimate (deploy/prometheus/rules.yml).
//! A metric without series still shows its HELP and TYPE lines.
//!
//! The daemon's tasks update them (the engine's core after each commit, the
//! collectors and the notifier as they work); `GET /metrics` renders them.
//! Labels are bounded sets: service, component and probe ids from the
//! config, kinds, reasons and outcomes — never alarm or incident ids.

use std::collections::BTreeSet;
use std::sync::Mutex;

mod catalogue;

pub use catalogue::CatalogueSeries;

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use std::sync::Arc;

use crate::catalogue::{Catalogue, NodeId, ProbeId};
use crate::engine::{Basis, Health, Severity};

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
    /// `beredskab_service_up`, `beredskab_component_up`,
    /// `beredskab_probe_up` and `beredskab_probe_duration_seconds`.
    catalogue: CatalogueSeries,
    pub alarms: IntCounterVec,
    pub alarms_rejected: IntCounterVec,
    pub incidents_open: IntGaugeVec,
    pub incidents: IntCounterVec,
    pub notifications: IntCounterVec,
    pub ack_seconds: Histogram,
    /// No series without `[mqtt]`: nothing to be connected to, nothing to alert on.
    mqtt_connected: GaugeVec,
    pub ingest_seconds: HistogramVec,
    pub generator_runtime: GaugeVec,
    pub estimate_ratio: HistogramVec,
    pub outbox_pending: IntGaugeVec,
    pub outbox_oldest: GaugeVec,
    /// Time until a `tls` probe's certificate expires (negative once
    /// expired), set from each of its checks that saw a certificate.
    pub tls_expiry: GaugeVec,
    /// Always 1, labelled with the version, the config's fingerprint and
    /// whether this instance leads (`true` when it runs alone).
    build_info: GaugeVec,
    /// The labels of `build_info` besides the version: fingerprint, leader.
    build_labels: Mutex<(String, bool)>,
    /// Not in SPEC §7: how often this instance took or lost the lead of a
    /// cluster.
    pub leader_changes: prometheus::IntCounter,
    /// Not in SPEC §7: when each service not up was first expected back,
    /// for the alert on a critical service down past its estimate.
    service_expected_back: GaugeVec,
    /// The (service, criticality) series of `service_expected_back` now.
    expected_back_series: Mutex<BTreeSet<(String, String)>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            catalogue: CatalogueSeries::new(),
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
            mqtt_connected: gauge_vec(
                "beredskab_mqtt_connected",
                "Whether the MQTT collector is connected",
                &[],
            ),
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
            tls_expiry: gauge_vec(
                "beredskab_tls_expiry_seconds",
                "Time until a tls probe's certificate expires (negative once expired)",
                &["probe"],
            ),
            build_info: gauge_vec(
                "beredskab_build_info",
                "Always 1, labelled with the version, the config's fingerprint and whether \
                 this instance leads",
                &["version", "config", "leader"],
            ),
            build_labels: Mutex::new((String::new(), true)),
            leader_changes: prometheus::IntCounter::new(
                "beredskab_leader_changes_total",
                "How often this instance took or lost the lead of a cluster of instances",
            )
            .expect("a valid metric"),
            service_expected_back: gauge_vec(
                "beredskab_service_first_expected_back_timestamp_seconds",
                "When the open incidents affecting a service were first expected to end \
                 (Unix time, the latest of them); no series while none is open",
                &["service", "criticality"],
            ),
            expected_back_series: Mutex::new(BTreeSet::new()),
            registry,
        };
        for c in m.collectors() {
            m.registry
                .register(c)
                .expect("each metric is registered once");
        }
        // Series of bounded label sets exist from the start, at 0, so that
        // `increase()` sees their first event.
        for severity in Severity::ALL {
            m.incidents.with_label_values(&[severity.as_str()]);
            m.incidents_open.with_label_values(&[severity.as_str()]);
        }
        for basis in Basis::ALL {
            m.estimate_ratio.with_label_values(&[basis.as_str()]);
        }
        m.set_config("");
        m
    }

    /// Every metric of SPEC §7.
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.catalogue.clone()),
            Box::new(self.alarms.clone()),
            Box::new(self.alarms_rejected.clone()),
            Box::new(self.incidents_open.clone()),
            Box::new(self.incidents.clone()),
            Box::new(self.notifications.clone()),
            Box::new(self.ack_seconds.clone()),
            Box::new(self.mqtt_connected.clone()),
            Box::new(self.ingest_seconds.clone()),
            Box::new(self.generator_runtime.clone()),
            Box::new(self.estimate_ratio.clone()),
            Box::new(self.outbox_pending.clone()),
            Box::new(self.outbox_oldest.clone()),
            Box::new(self.tls_expiry.clone()),
            Box::new(self.build_info.clone()),
            Box::new(self.leader_changes.clone()),
            Box::new(self.service_expected_back.clone()),
        ]
    }

    /// Names the running config in `beredskab_build_info` (its
    /// [`Catalogue::fingerprint`]); at start and after every reload.
    pub fn set_config(&self, fingerprint: &str) {
        let mut labels = self.build_labels.lock().unwrap_or_else(|e| e.into_inner());
        labels.0 = fingerprint.to_owned();
        self.set_build_info(&labels);
    }

    /// Says in `beredskab_build_info` whether this instance leads; a
    /// change counts in `beredskab_leader_changes_total`.
    pub fn set_leader(&self, leads: bool) {
        let mut labels = self.build_labels.lock().unwrap_or_else(|e| e.into_inner());
        if labels.1 != leads {
            labels.1 = leads;
            self.leader_changes.inc();
        }
        self.set_build_info(&labels);
    }

    fn set_build_info(&self, (fingerprint, leads): &(String, bool)) {
        self.build_info.reset();
        self.build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                fingerprint,
                if *leads { "true" } else { "false" },
            ])
            .set(1.0);
    }

    /// `beredskab_mqtt_connected`: set once the daemon has an MQTT
    /// collector (disconnected until it connects).
    pub fn set_mqtt_connected(&self, connected: bool) {
        self.mqtt_connected
            .with_label_values::<&str>(&[])
            .set(if connected { 1.0 } else { 0.0 });
    }

    /// `beredskab_service_first_expected_back_timestamp_seconds`: exactly
    /// these (service, criticality, Unix time) series, the others removed.
    pub fn set_expected_back(&self, now: Vec<(&str, &str, f64)>) {
        let mut series = self
            .expected_back_series
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let next: BTreeSet<(String, String)> = now
            .iter()
            .map(|(s, c, _)| ((*s).to_owned(), (*c).to_owned()))
            .collect();
        for (s, c) in series.difference(&next) {
            let _ = self
                .service_expected_back
                .remove_label_values(&[s.as_str(), c.as_str()]);
        }
        for (s, c, at) in now {
            self.service_expected_back
                .with_label_values(&[s, c])
                .set(at);
        }
        *series = next;
    }

    /// `beredskab_service_first_expected_back_timestamp_seconds` of one
    /// service: set to `at`, or removed when `None`.
    pub fn set_expected_back_of(&self, service: &str, criticality: &str, at: Option<f64>) {
        let mut series = self
            .expected_back_series
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let key = (service.to_owned(), criticality.to_owned());
        match at {
            Some(at) => {
                self.service_expected_back
                    .with_label_values(&[service, criticality])
                    .set(at);
                series.insert(key);
            }
            None => {
                if series.remove(&key) {
                    let _ = self
                        .service_expected_back
                        .remove_label_values(&[service, criticality]);
                }
            }
        }
    }

    /// Sets the health gauge of a node of `cat`, the running catalogue.
    pub fn set_health(&self, cat: &Arc<Catalogue>, node: NodeId, health: Health) {
        self.catalogue.set_health(cat, node, health.gauge());
    }

    /// Records one check of a probe of `cat`, the running catalogue: its
    /// duration and whether it succeeded.
    pub fn observe_probe(&self, cat: &Arc<Catalogue>, probe: ProbeId, seconds: f64, up: bool) {
        self.catalogue.observe_probe(cat, probe, seconds, up);
    }

    /// Forgets the per-node and per-probe series, before a reloaded config
    /// sets them again (removed services must not linger as stale series).
    pub fn reset_catalogue_series(&self) {
        self.catalogue.reset_gauges();
        self.tls_expiry.reset();
        self.generator_runtime.reset();
        self.set_expected_back(Vec::new());
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut text = String::from_utf8(buf).unwrap_or_default();
        // The encoder leaves out a metric without series; its HELP and
        // TYPE lines still say that it exists.
        for family in self.collectors().iter().flat_map(|c| c.collect()) {
            if family.get_metric().is_empty() {
                let kind = match family.get_field_type() {
                    MetricType::COUNTER => "counter",
                    MetricType::GAUGE => "gauge",
                    MetricType::HISTOGRAM => "histogram",
                    MetricType::SUMMARY => "summary",
                    MetricType::UNTYPED => "untyped",
                };
                text.push_str(&format!(
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n",
                    name = family.name(),
                    help = family.help()
                ));
            }
        }
        text
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

    /// Every metric says what it is from the start, even one without
    /// series yet (tests/prometheus.rs checks the series a running daemon
    /// makes).
    #[test]
    fn every_metric_has_help_and_type_lines_before_any_event() {
        let text = Metrics::new().render();
        for (name, kind) in [
            ("beredskab_service_up", "gauge"),
            ("beredskab_component_up", "gauge"),
            ("beredskab_alarms_total", "counter"),
            ("beredskab_alarms_rejected_total", "counter"),
            ("beredskab_incidents_open", "gauge"),
            ("beredskab_incidents_total", "counter"),
            ("beredskab_notifications_total", "counter"),
            ("beredskab_ack_seconds", "histogram"),
            ("beredskab_probe_duration_seconds", "histogram"),
            ("beredskab_probe_up", "gauge"),
            ("beredskab_tls_expiry_seconds", "gauge"),
            ("beredskab_mqtt_connected", "gauge"),
            ("beredskab_ingest_seconds", "histogram"),
            ("beredskab_generator_runtime_seconds", "gauge"),
            ("beredskab_estimate_ratio", "histogram"),
            ("beredskab_build_info", "gauge"),
            ("beredskab_outbox_pending", "gauge"),
            ("beredskab_outbox_oldest_seconds", "gauge"),
            (
                "beredskab_service_first_expected_back_timestamp_seconds",
                "gauge",
            ),
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {name} {kind}\n")).count(),
                1,
                "{name} {kind}:\n{text}"
            );
            assert_eq!(
                text.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name}:\n{text}"
            );
        }
        // Bounded label sets start at 0, so that increase() sees the first event.
        assert!(text.contains("beredskab_incidents_total{severity=\"critical\"} 0\n"));
        assert!(text.contains("beredskab_estimate_ratio_count{basis=\"manual\"} 0\n"));
    }

    #[test]
    fn expected_back_keeps_exactly_the_series_it_is_given() {
        let m = Metrics::new();
        m.set_expected_back(vec![("omsorg", "life", 100.0), ("post", "critical", 200.0)]);
        m.set_expected_back(vec![("post", "critical", 300.0)]);
        let text = m.render();
        let name = "beredskab_service_first_expected_back_timestamp_seconds";
        assert!(!text.contains("omsorg"), "{text}");
        assert!(
            text.contains(&format!(
                "{name}{{criticality=\"critical\",service=\"post\"}} 300\n"
            )),
            "{text}"
        );
        m.reset_catalogue_series();
        assert!(!m.render().contains("service=\"post\""));
    }

    /// A catalogue of a service on two servers, each with a probe, and
    /// `extra` appended.
    fn catalogue(extra: &str) -> Arc<Catalogue> {
        let text = format!(
            r#"
[site]
name = "T"
language = "en"
timezone = "Europe/Copenhagen"
[[component]]
id = "srv-a"
kind = "server"
[[component]]
id = "srv-b"
kind = "server"
[[service]]
id = "omsorg"
criticality = "life"
depends_on = ["srv-a", "srv-b"]
policy = "p"
[[probe]]
id = "web-a"
component = "srv-a"
url = "http://127.0.0.1:1/a"
[[person]]
id = "p1"
name = "P"
phone = "+4511111111"
[[role]]
id = "r"
primary = "p1"
[[channel]]
id = "log"
kind = "log"
[[policy]]
id = "p"
[[policy.step]]
on = "open"
notify = ["role:r"]
via = ["log"]
{extra}"#
        );
        let loaded = crate::config::load_str("t.toml", &text).expect("config");
        Arc::new(Catalogue::build(&loaded.config).expect("catalogue"))
    }

    /// The node and probe series read as the prometheus crate's vectors
    /// wrote them; a reload keeps the durations of the probes it keeps and
    /// drops every series of what it removed.
    #[test]
    fn node_and_probe_series_follow_the_running_catalogue() {
        let m = Metrics::new();
        let before = catalogue(
            "[[probe]]\nid = \"web-b\"\ncomponent = \"srv-b\"\nurl = \"http://127.0.0.1:1/b\"\n",
        );
        let a = before.probe_id("web-a").expect("web-a");
        let b = before.probe_id("web-b").expect("web-b");
        for (i, node) in before.nodes.iter().enumerate() {
            let health = if node.id == "srv-b" {
                Health::Down
            } else {
                Health::Degraded
            };
            m.set_health(&before, NodeId(i as u32), health);
        }
        m.observe_probe(&before, a, 0.003, true);
        m.observe_probe(&before, a, 2.0, true);
        m.observe_probe(&before, b, 700_000.0, false);
        let text = m.render();
        for line in [
            "beredskab_service_up{criticality=\"life\",service=\"omsorg\"} 0.5\n",
            "beredskab_component_up{component=\"srv-a\",kind=\"server\"} 0.5\n",
            "beredskab_component_up{component=\"srv-b\",kind=\"server\"} 0\n",
            "beredskab_probe_up{probe=\"web-a\"} 1\n",
            "beredskab_probe_up{probe=\"web-b\"} 0\n",
            "beredskab_probe_duration_seconds_bucket{probe=\"web-a\",le=\"0.001\"} 0\n",
            "beredskab_probe_duration_seconds_bucket{probe=\"web-a\",le=\"0.005\"} 1\n",
            "beredskab_probe_duration_seconds_bucket{probe=\"web-a\",le=\"5\"} 2\n",
            "beredskab_probe_duration_seconds_bucket{probe=\"web-a\",le=\"+Inf\"} 2\n",
            "beredskab_probe_duration_seconds_sum{probe=\"web-a\"} 2.003\n",
            "beredskab_probe_duration_seconds_count{probe=\"web-a\"} 2\n",
            // Above every bound: counted in +Inf only.
            "beredskab_probe_duration_seconds_bucket{probe=\"web-b\",le=\"604800\"} 0\n",
            "beredskab_probe_duration_seconds_bucket{probe=\"web-b\",le=\"+Inf\"} 1\n",
        ] {
            assert!(text.contains(line), "{line}in:\n{text}");
        }

        // A reload without web-b: the core resets the gauges, then sets
        // them for the new catalogue.
        let after = catalogue("");
        m.reset_catalogue_series();
        assert!(!m.render().contains("_up{"), "{}", m.render());
        m.set_health(&after, after.node_id("srv-a").expect("srv-a"), Health::Up);
        let text = m.render();
        assert!(
            text.contains("beredskab_component_up{component=\"srv-a\",kind=\"server\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("web-b"), "{text}");
        assert!(!text.contains("srv-b"), "{text}");
        assert!(
            text.contains("beredskab_probe_duration_seconds_count{probe=\"web-a\"} 2\n"),
            "{text}"
        );
        m.observe_probe(&after, after.probe_id("web-a").expect("web-a"), 0.5, false);
        let text = m.render();
        assert!(
            text.contains("beredskab_probe_duration_seconds_count{probe=\"web-a\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("beredskab_probe_up{probe=\"web-a\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn build_info_names_the_current_config_only() {
        let m = Metrics::new();
        m.set_config("abc");
        m.set_config("def");
        let text = m.render();
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!(
                "beredskab_build_info{{config=\"def\",leader=\"true\",version=\"{version}\"}} 1\n"
            )),
            "{text}"
        );
        assert!(!text.contains("\"abc\""), "{text}");
        // A follower says so, and the change is counted once.
        m.set_leader(false);
        m.set_leader(false);
        let text = m.render();
        assert!(
            text.contains(&format!(
                "beredskab_build_info{{config=\"def\",leader=\"false\",version=\"{version}\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains("beredskab_leader_changes_total 1\n"),
            "{text}"
        );
    }
}
