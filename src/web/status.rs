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
use serde::Deserialize;
use tracing::error;

use super::oncall::icon;
use super::{PageOpts, WebState};
use crate::engine::{Health, Ts};
use crate::html::Text;
use crate::store::{IncidentFilter, IncidentRow, Store};
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
    /// The latest public note of its incident, with its time.
    note: Option<(Ts, String)>,
}

/// The latest public note of each open incident.
async fn public_notes<S: Store>(store: &S, open: &[IncidentRow]) -> HashMap<u64, (Ts, String)> {
    let mut out = HashMap::new();
    for r in open {
        match store.incident(r.id).await {
            Ok(Some(d)) => {
                if let Some(e) = d.timeline.iter().rev().find(|e| e.public) {
                    out.insert(r.id, (e.at, e.text.clone()));
                }
            }
            Ok(None) => {}
            Err(e) => error!(error = %e, "reading a timeline for the status page"),
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
    let open: Vec<IncidentRow> = open.into_iter().filter(|r| r.state.is_live()).collect();
    let notes = public_notes(&st.api.store, &open).await;
    let board = st.api.status.board.borrow().clone();
    let mut rows: Vec<(usize, Row)> = ctx
        .cat
        .nodes
        .iter()
        .filter(|n| n.is_service())
        .enumerate()
        .map(|(i, n)| {
            let on_board = board.service(&n.id);
            let health = on_board.map_or(Health::Up, |s| s.health);
            let incident = on_board
                .and_then(|s| s.incident)
                .and_then(|id| open.iter().find(|r| r.id == id.0));
            let (since, back, note) = if health == Health::Up {
                (None, None, None)
            } else {
                (
                    on_board
                        .and_then(|s| s.since)
                        .or(incident.map(|r| r.opened_at)),
                    incident.map(|r| r.expected_end),
                    incident.and_then(|r| notes.get(&r.id).cloned()),
                )
            };
            (
                i,
                Row {
                    name: n.name.clone(),
                    health,
                    since,
                    back,
                    note,
                },
            )
        })
        .collect();
    // Every open public note, the newest first: above the services.
    let mut notices: Vec<&(Ts, String)> = notes.values().collect();
    notices.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
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
    let body = html! {
        h1 { (Text(w.status_title)) }
        div #status data-live {
            p class={ "headline " (worst.as_str()) } role="status" {
                (icon(worst.as_str())) " " (Text(headline))
            }
            @if !notices.is_empty() {
                section.notices {
                    h2 { (Text(w.notices)) }
                    ul.notices {
                        @for (at, text) in &notices {
                            li {
                                span.when { (Text(&c.at(at.to_timestamp()))) }
                                " " (Text(text))
                            }
                        }
                    }
                }
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
                                @if let Some((at, text)) = &r.note {
                                    span.detail.public-note {
                                        span.when { (Text(&c.at(at.to_timestamp()))) } " " (Text(text))
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
        w.status_title,
        body,
        PageOpts {
            live: Some("poll"),
            public: true,
            refresh,
            ..PageOpts::default()
        },
    )
}
