//! The series of the running catalogue's nodes and probes:
//! `beredskab_service_up`, `beredskab_component_up`, `beredskab_probe_up`
//! and `beredskab_probe_duration_seconds`, held by the node's or probe's
//! index, their labels read from the catalogue when scraped.
//!
//! Why not the prometheus crate's vectors: each of their series holds its own
//! copy of the metric's description (name, help, label names) and of its
//! label values, so a probe's three series cost about 1.6 KB (16 MB with
//! 10,000 probes, a fifth of the daemon). Here a probe costs 160 bytes, and a
//! scrape builds the same families the vectors would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

use super::SECONDS_BUCKETS;
use crate::catalogue::{Catalogue, NodeId, NodeKind, ProbeId};

/// A gauge not set since the catalogue was taken: no series. No gauge here
/// is ever NaN, so the NaN with every bit set marks it.
const UNSET: u64 = u64::MAX;

/// The families, in the order of [`CatalogueSeries::collect`].
const FAMILIES: [(&str, &str, &[&str], MetricType); 4] = [
    (
        "beredskab_service_up",
        "Service health: 1 up, 0.5 degraded, 0 down",
        &["criticality", "service"],
        MetricType::GAUGE,
    ),
    (
        "beredskab_component_up",
        "Component health: 1 up, 0.5 degraded, 0 down",
        &["component", "kind"],
        MetricType::GAUGE,
    ),
    (
        "beredskab_probe_duration_seconds",
        "Time a probe request took",
        &["probe"],
        MetricType::HISTOGRAM,
    ),
    (
        "beredskab_probe_up",
        "Whether a probe's last request succeeded",
        &["probe"],
        MetricType::GAUGE,
    ),
];

/// The node and probe series. Cheap to clone: the clones share them.
#[derive(Clone)]
pub struct CatalogueSeries {
    descs: Arc<[Desc]>,
    now: Arc<RwLock<Option<Arc<Dense>>>>,
}

/// The values for one catalogue, by index.
struct Dense {
    cat: Arc<Catalogue>,
    /// By [`NodeId`]: the health gauge's bits, or [`UNSET`].
    health: Box<[AtomicU64]>,
    /// By [`ProbeId`]: the up gauge's bits, or [`UNSET`].
    probe_up: Box<[AtomicU64]>,
    /// By [`ProbeId`].
    durations: Box<[Buckets]>,
}

/// One probe's duration histogram: the observations per bucket (not
/// cumulative, the last one above every bound), and their sum's bits. The
/// count is the buckets' total, so a scrape never shows a count that
/// disagrees with them.
struct Buckets {
    counts: [AtomicU64; SECONDS_BUCKETS.len() + 1],
    sum: AtomicU64,
}

impl Buckets {
    fn new() -> Buckets {
        Buckets {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn observe(&self, seconds: f64) {
        let i = SECONDS_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(SECONDS_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + seconds).to_bits())
            });
    }

    fn copy_from(&self, other: &Buckets) {
        for (to, from) in self.counts.iter().zip(&other.counts) {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.sum
            .store(other.sum.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The histogram, or `None` before the first observation.
    fn proto(&self) -> Option<proto::Histogram> {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let mut cumulative = 0;
        let buckets = SECONDS_BUCKETS
            .iter()
            .zip(&counts)
            .map(|(&bound, &n)| {
                cumulative += n;
                let mut b = proto::Bucket::default();
                b.set_upper_bound(bound);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        let mut h = proto::Histogram::default();
        h.set_bucket(buckets);
        h.set_sample_count(total);
        h.set_sample_sum(f64::from_bits(self.sum.load(Ordering::Relaxed)));
        Some(h)
    }
}

fn unset(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(UNSET)).collect()
}

impl CatalogueSeries {
    pub fn new() -> CatalogueSeries {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, labels, _)| {
                Desc::new(
                    (*name).to_owned(),
                    (*help).to_owned(),
                    labels.iter().map(|l| (*l).to_owned()).collect(),
                    HashMap::new(),
                )
                .expect("constant metric definition")
            })
            .collect();
        CatalogueSeries {
            descs,
            now: Arc::new(RwLock::new(None)),
        }
    }

    /// The values for `cat`, taken first if it is not the one held: its
    /// gauges start unset, and each probe it shares by id with the
    /// catalogue before keeps its durations (a reload does not reset them).
    fn values(&self, cat: &Arc<Catalogue>) -> Arc<Dense> {
        if let Some(d) = &*self.now.read().unwrap_or_else(|e| e.into_inner())
            && Arc::ptr_eq(&d.cat, cat)
        {
            return d.clone();
        }
        let mut now = self.now.write().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = &*now
            && Arc::ptr_eq(&d.cat, cat)
        {
            return d.clone();
        }
        let durations: Box<[Buckets]> = cat.probes.iter().map(|_| Buckets::new()).collect();
        if let Some(old) = &*now {
            for (i, p) in cat.probes.iter().enumerate() {
                if let Some(was) = old.cat.probe_id(&p.config.id) {
                    durations[i].copy_from(&old.durations[was.0 as usize]);
                }
            }
        }
        let d = Arc::new(Dense {
            cat: cat.clone(),
            health: unset(cat.nodes.len()),
            probe_up: unset(cat.probes.len()),
            durations,
        });
        *now = Some(d.clone());
        d
    }

    /// Sets a node's health gauge.
    pub fn set_health(&self, cat: &Arc<Catalogue>, node: NodeId, value: f64) {
        if let Some(g) = self.values(cat).health.get(node.0 as usize) {
            g.store(value.to_bits(), Ordering::Relaxed);
        }
    }

    /// Records one check of a probe: its duration and whether it succeeded.
    pub fn observe_probe(&self, cat: &Arc<Catalogue>, probe: ProbeId, seconds: f64, up: bool) {
        let d = self.values(cat);
        let i = probe.0 as usize;
        if let (Some(b), Some(g)) = (d.durations.get(i), d.probe_up.get(i)) {
            b.observe(seconds);
            g.store(if up { 1f64 } else { 0f64 }.to_bits(), Ordering::Relaxed);
        }
    }

    /// Unsets every gauge (the durations stay): a reloaded config sets
    /// them again, and what it removed must not linger as stale series.
    pub fn reset_gauges(&self) {
        if let Some(d) = &*self.now.read().unwrap_or_else(|e| e.into_inner()) {
            for g in d.health.iter().chain(d.probe_up.iter()) {
                g.store(UNSET, Ordering::Relaxed);
            }
        }
    }
}

impl Default for CatalogueSeries {
    fn default() -> Self {
        CatalogueSeries::new()
    }
}

/// A label pair.
fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

fn gauge(labels: Vec<LabelPair>, bits: u64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(f64::from_bits(bits));
    let mut m = proto::Metric::from_gauge(g);
    m.set_label(labels);
    m
}

impl Collector for CatalogueSeries {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = FAMILIES.map(|(name, help, _, kind)| {
            let mut f = MetricFamily::default();
            f.set_name(name.to_owned());
            f.set_help(help.to_owned());
            f.set_field_type(kind);
            f
        });
        let Some(d) = self.now.read().unwrap_or_else(|e| e.into_inner()).clone() else {
            return families.into();
        };
        let [services, components, durations, ups] = &mut families;
        for (node, g) in d.cat.nodes.iter().zip(&d.health) {
            let bits = g.load(Ordering::Relaxed);
            if bits == UNSET {
                continue;
            }
            match node.kind {
                NodeKind::Service(c) => services.mut_metric().push(gauge(
                    vec![label("criticality", c.as_str()), label("service", &node.id)],
                    bits,
                )),
                NodeKind::Component(k) => components.mut_metric().push(gauge(
                    vec![label("component", &node.id), label("kind", k.as_str())],
                    bits,
                )),
            }
        }
        for ((probe, up), buckets) in d.cat.probes.iter().zip(&d.probe_up).zip(&d.durations) {
            if let Some(h) = buckets.proto() {
                let mut m = proto::Metric::from_label(vec![label("probe", &probe.config.id)]);
                m.set_histogram(h);
                durations.mut_metric().push(m);
            }
            let bits = up.load(Ordering::Relaxed);
            if bits != UNSET {
                ups.mut_metric()
                    .push(gauge(vec![label("probe", &probe.config.id)], bits));
            }
        }
        families.into()
    }
}
