//! The public status page (`/status`): every service of the catalogue,
//! up, degraded or down, since when, when it is expected back, and the
//! notes marked public. Nothing internal: no people, no phone numbers, no
//! components, no incident numbers. Small, complete without JavaScript,
//! cached for a moment only.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use prometheus::core::Collector;
use serde::Deserialize;
use tracing::error;

use super::oncall::icon;
use super::{PageOpts, WebState};
use crate::engine::{Health, Ts};
use crate::html::Text;
use crate::metrics::Metrics;
use crate::store::{IncidentFilter, Store};
use crate::words::fill;

#[derive(Deserialize)]
pub(super) struct StatusQuery {
    /// Seconds between timed reloads, for a wall display.
    refresh: Option<String>,
}

/// One service as the page shows it.
struct Row {
    name: String,
    health: Health,
    since: Option<Ts>,
    back: Option<Ts>,
}

/// The health of each service by id, as the core last set it.
fn service_health(metrics: &Metrics) -> HashMap<String, Health> {
    let mut out = HashMap::new();
    for family in metrics.service_up.collect() {
        for m in family.get_metric() {
            let Some(id) = m
                .get_label()
                .iter()
                .find(|l| l.name() == "service")
                .map(|l| l.value().to_owned())
            else {
                continue;
            };
            let v = m.get_gauge().get_value();
            let health = if v >= 1.0 {
                Health::Up
            } else if v > 0.0 {
                Health::Degraded
            } else {
                Health::Down
            };
            out.insert(id, health);
        }
    }
    out
}

/// `GET /status`.
pub(super) async fn page<S: Store + Clone + 'static>(
    State(st): State<WebState<S>>,
    headers: HeaderMap,
    Query(q): Query<StatusQuery>,
) -> Response {
    // The public page never shows who is logged in.
    let mut ctx = st.ctx(&headers);
    ctx.user = None;
    let w = ctx.w;
    let c = &ctx.clock;
    let refresh = q
        .refresh
        .as_deref()
        .and_then(|r| r.parse::<u32>().ok())
        .map(|r| r.clamp(10, 3600));
    let open = match st
        .api
        .store
        .incidents(IncidentFilter::Open, 500, None)
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            error!(error = %e, "reading incidents for the status page");
            Vec::new()
        }
    };
    let health = service_health(&st.api.metrics);
    let mut rows: Vec<(usize, Row)> = ctx
        .cat
        .nodes
        .iter()
        .filter(|n| n.is_service())
        .enumerate()
        .map(|(i, n)| {
            let h = health.get(&n.id).copied().unwrap_or(Health::Up);
            let touching = open
                .iter()
                .filter(|r| r.state.is_live() && r.services.iter().any(|s| s == &n.id));
            let (since, back) = if h == Health::Up {
                (None, None)
            } else {
                touching.fold(
                    (None, None),
                    |(since, back): (Option<Ts>, Option<Ts>), r| {
                        (
                            Some(since.map_or(r.opened_at, |s| s.min(r.opened_at))),
                            Some(back.map_or(r.expected_end, |b| b.max(r.expected_end))),
                        )
                    },
                )
            };
            (
                i,
                Row {
                    name: n.name.clone(),
                    health: h,
                    since,
                    back,
                },
            )
        })
        .collect();
    // The worst first, then as the plan lists them.
    rows.sort_by_key(|(i, r)| (std::cmp::Reverse(r.health), *i));
    let worst = rows
        .iter()
        .map(|(_, r)| r.health)
        .max()
        .unwrap_or(Health::Up);
    let headline = match worst {
        Health::Up => w.all_up,
        Health::Degraded => w.some_degraded,
        Health::Down => w.some_down,
    };
    let updated = fill(w.last_updated, &[("when", &c.at(c.now))]);
    let again = match refresh {
        Some(r) => format!("/status?refresh={r}"),
        None => "/status".to_owned(),
    };
    let title = format!("{} – {}", w.status_title, ctx.cat.site_name);
    let body = html! {
        h1 { (Text(w.status_title)) }
        div #status data-live {
            p class={ "headline " (worst.as_str()) } role="status" {
                (icon(worst.as_str())) " " (Text(headline))
            }
            section.services {
                h2 { (Text(w.services)) }
                ul.services {
                    @for (_, r) in &rows {
                        li class={ "service " (r.health.as_str()) } {
                            span.name { (Text(&r.name)) }
                            " "
                            span class={ "state " (r.health.as_str()) } {
                                (icon(r.health.as_str())) " " (Text(w.health(r.health)))
                            }
                            @if r.health != Health::Up {
                                @if let Some(since) = r.since {
                                    span.detail {
                                        (Text(&fill(w.status_since, &[("when", &c.at(since.to_timestamp()))])))
                                    }
                                }
                                span.detail {
                                    @match r.back {
                                        Some(b) => (Text(&fill(w.status_expected, &[("when", &c.at(b.to_timestamp()))]))),
                                        None => (Text(w.status_unknown_return)),
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p.updated {
                (Text(&updated)) " · " (Text(&c.zone_words(w))) " · "
                a href=(again) { (Text(w.refresh)) }
            }
        }
    };
    ctx.page(
        StatusCode::OK,
        &title,
        body,
        PageOpts {
            live: Some("poll"),
            public: true,
            refresh,
            ..PageOpts::default()
        },
    )
}
