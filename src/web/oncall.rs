//! The on-call pages: the open incidents as cards (`/`), one incident
//! with its escalation and timeline (`/i/{id}`), the crisis confirmation,
//! and the actions' POST handlers.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use jiff::civil::Time;
use maud::{Markup, html};
use serde::Deserialize;
use tracing::error;

use super::{
    Ctx, Form, PageOpts, WebState, checked_post, local_path, no_incident, see_other, text_field,
};
use crate::api::actions::{Action, Eta};
use crate::engine::{Basis, IncidentState, Level, Next, TimelineEntry};
use crate::html::Text;
use crate::store::{IncidentFilter, IncidentRow, OutboxRow, OutboxState, Store, StoreError};
use crate::words::{duration_words, fill};

/// Open incidents shown at most.
const MAX_OPEN: u32 = 200;
/// The choices of "expected return in …", in seconds.
const ETA_CHOICES: [u64; 6] = [1800, 3600, 7200, 14_400, 28_800, 86_400];

/// An incident with what its card needs.
pub(super) struct Shown {
    row: IncidentRow,
    timeline: Vec<TimelineEntry>,
    told: Vec<OutboxRow>,
}

impl Shown {
    /// When the expected return was last set, and by whom (a person's ETA).
    fn estimate_set(&self) -> Option<&TimelineEntry> {
        self.timeline
            .iter()
            .rev()
            .find(|e| e.kind == "eta" || e.kind == "estimate")
    }

    fn eta_by(&self) -> Option<&str> {
        self.timeline
            .iter()
            .rev()
            .find(|e| e.kind == "eta")
            .and_then(|e| e.by.as_deref())
    }

    fn crisis(&self) -> bool {
        self.row.level == Level::Crisis
    }

    /// Where the crisis staff meets, as the raise chose it.
    fn meeting_place(&self) -> Option<String> {
        self.row.meeting_place.clone()
    }

    fn failed(&self) -> impl Iterator<Item = &OutboxRow> {
        self.told.iter().filter(|n| n.state == OutboxState::Failed)
    }
}

async fn shown<S: Store>(store: &S, row: IncidentRow) -> Result<Shown, StoreError> {
    let timeline = store
        .incident(row.id)
        .await?
        .map(|d| d.timeline)
        .unwrap_or_default();
    let told = store.notifications(row.id).await?;
    Ok(Shown {
        row,
        timeline,
        told,
    })
}

/// The open incidents, most severe first, then the oldest.
async fn open_incidents<S: Store>(store: &S) -> Result<Vec<Shown>, StoreError> {
    let rows = store
        .incidents(IncidentFilter::Open, MAX_OPEN, None)
        .await?;
    let mut out = Vec::new();
    for row in rows.into_iter().filter(|r| r.state.is_live()) {
        out.push(shown(store, row).await?);
    }
    out.sort_by_key(|s| (std::cmp::Reverse(s.row.severity), s.row.opened_at, s.row.id));
    Ok(out)
}

/// What the on-call pages show, as one number: it changes when an
/// incident, its timeline or its messages change.
pub(super) async fn fingerprint<S: Store>(store: &S) -> Result<u64, StoreError> {
    let open = open_incidents(store).await?;
    Ok(fingerprint_of(&open))
}

fn fingerprint_of(open: &[Shown]) -> u64 {
    let mut h = DefaultHasher::new();
    for s in open {
        format!("{:?}", s.row).hash(&mut h);
        s.timeline.len().hash(&mut h);
        for n in &s.told {
            (&n.key, n.state.as_str(), n.attempts, n.sent_at.map(|t| t.0)).hash(&mut h);
        }
    }
    // Some browsers read a data attribute as a float: keep it exact.
    h.finish() & ((1 << 53) - 1)
}

// ---------------------------------------------------------------------------
// Icons: inline SVG, so that severity and health are a shape as well as a
// word and a colour.

pub(super) fn icon(kind: &str) -> Markup {
    let path = match kind {
        // An octagon with a bar: stop.
        "critical" | "down" => "M7 2h10l5 5v10l-5 5H7l-5-5V7z M11 6h2v8h-2z M11 16h2v2h-2z",
        // A triangle with an exclamation mark.
        "major" | "degraded" => "M12 2 23 21H1z M11 9h2v6h-2z M11 16.5h2v2h-2z",
        // A circle with a check.
        "up" => "M12 2a10 10 0 1 0 0 20a10 10 0 1 0 0-20z M10 14.5 6.5 11 5 12.5l5 5 9-9L17.5 7z",
        // A circle with an i.
        _ => "M12 2a10 10 0 1 0 0 20a10 10 0 1 0 0-20z M11 10h2v8h-2z M11 6h2v2h-2z",
    };
    html! {
        svg.icon viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false" {
            path fill-rule="evenodd" d=(path) {}
        }
    }
}

// ---------------------------------------------------------------------------
// Pages

/// `GET /`: the open incidents.
pub(super) async fn home<S: Store + Clone + 'static>(
    State(st): State<WebState<S>>,
    headers: HeaderMap,
) -> Response {
    let ctx = st.ctx(&headers);
    if ctx.user.is_none() {
        return see_other("/login?next=/");
    }
    let w = ctx.w;
    let open = match open_incidents(&st.api.store).await {
        Ok(o) => o,
        Err(e) => return internal(&ctx, "reading open incidents", e),
    };
    let version = fingerprint_of(&open);
    let body = html! {
        (pinned(&ctx, &open))
        h1 { (Text(w.open_incidents)) }
        @if !ctx.can_act() {
            p.box.note { (Text(w.read_only)) }
        }
        div #incidents data-live {
            @if open.is_empty() {
                p.box.ok { (Text(w.no_incidents)) }
            }
            @for s in &open {
                (card(&st, &ctx, s, "/", true))
            }
        }
        p.footer { a href="/status" { (Text(w.status_link)) } }
    };
    ctx.page(
        StatusCode::OK,
        w.open_incidents,
        body,
        PageOpts {
            live: Some("events"),
            version: Some(version),
            logout_token: Some(st.form_token(&ctx)),
            ..PageOpts::default()
        },
    )
}

/// The crisis banners, pinned at the top of every on-call page.
fn pinned(ctx: &Ctx, open: &[Shown]) -> Markup {
    let w = ctx.w;
    html! {
        div #pinned data-live {
            @for s in open.iter().filter(|s| s.crisis()) {
                @let id = s.row.id.to_string();
                @let text = match s.meeting_place() {
                    Some(place) => fill(w.crisis_banner, &[("id", &id), ("place", &place)]),
                    None => fill(w.crisis_banner_no_place, &[("id", &id)]),
                };
                p.crisis role="status" {
                    (icon("critical")) " "
                    a href={ "/i/" (id) } { (Text(&text)) }
                }
            }
        }
    }
}

/// One incident's card. `home`: on the list (a link to the details).
fn card<S: Store + Clone + 'static>(
    st: &WebState<S>,
    ctx: &Ctx,
    s: &Shown,
    back: &str,
    home: bool,
) -> Markup {
    let w = ctx.w;
    let c = &ctx.clock;
    let r = &s.row;
    let id = r.id.to_string();
    let sev = r.severity.as_str();
    let opened = r.opened_at.to_timestamp();
    let since = fill(w.since, &[("when", &c.at(opened)), ("age", &c.age(opened))]);
    let services = ctx.cat.services_by_criticality(&r.services);
    let services = if services.is_empty() {
        w.none_affected.to_owned()
    } else {
        services.join(", ")
    };
    let live = r.state.is_live();
    let eta = live.then(|| {
        let mut parts = vec![fill(
            w.expected,
            &[("when", &c.at(r.expected_end.to_timestamp()))],
        )];
        let basis = match r.expected_basis {
            Basis::Manual => match s.eta_by() {
                Some(by) => fill(w.basis_manual, &[("who", &ctx.person_name(by))]),
                None => w.basis_manual_nobody.to_owned(),
            },
            Basis::Generator => fill(
                w.basis_generator,
                &[(
                    "when",
                    &r.fuel_out
                        .map(|t| c.at(t.to_timestamp()))
                        .unwrap_or_default(),
                )],
            ),
            b => w.basis(b).to_owned(),
        };
        parts.push(basis);
        let set = s.estimate_set().map_or(r.opened_at, |e| e.at);
        parts.push(fill(w.updated, &[("when", &c.at(set.to_timestamp()))]));
        parts.join(" · ")
    });
    let token = || st.form_token(ctx);
    let actions = ctx.can_act() && live;
    html! {
        article class={ "card sev-" (sev) } id={ "i" (id) } {
            p.sevline {
                span class={ "sev " (sev) } { (icon(sev)) " " (Text(w.severity(r.severity))) }
                @if s.crisis() {
                    " " span.sev.crisis-tag { (Text(w.crisis_tag)) }
                }
                " " span.num { "#" (id) }
            }
            h2 {
                @if home {
                    a href={ "/i/" (id) } { (Text(&ctx.node_name(&r.root))) }
                } @else {
                    (Text(&ctx.node_name(&r.root)))
                }
            }
            p.since { (Text(&since)) }
            dl {
                dt { (Text(w.cause)) }
                dd { (Text(&ctx.node_name(&r.root))) }
                dt { (Text(w.affected)) }
                dd { (Text(&services)) }
            }
            @if let Some(eta) = &eta {
                p.eta { (Text(eta)) }
            }
            @if let Some(at) = r.resolved_at {
                p.ack.done { (Text(&fill(w.resolved_at, &[("when", &c.at(at.to_timestamp()))]))) }
            } @else if let (Some(by), Some(at)) = (&r.acknowledged_by, r.acknowledged_at) {
                p.ack.done {
                    (Text(&fill(w.acked_by, &[("who", &ctx.person_name(by)), ("when", &c.at(at.to_timestamp()))])))
                }
            } @else {
                p.ack { strong { (Text(w.not_acked)) } }
            }
            @for n in s.failed() {
                p.box.bad role="alert" { (Text(&failed_text(ctx, n))) }
            }
            @if live && let Some(next) = next_text(ctx, r.id) {
                p.next { (Text(&next)) }
            }
            @if actions {
                nav.secondary {
                    a.button.secondary href={ "/i/" (id) "#eta" } { (Text(w.set_eta)) }
                    a.button.secondary href={ "/i/" (id) "#note" } { (Text(w.add_note)) }
                    @if !s.crisis() {
                        a.button.secondary.danger href={ "/i/" (id) "/crisis" } { (Text(w.raise)) }
                    }
                }
                @if r.state == IncidentState::Open {
                    form.primary method="post" action={ "/i/" (id) "/ack" } {
                        input type="hidden" name="csrf" value=(token());
                        input type="hidden" name="back" value=(back);
                        label for={ "ack-note-" (id) } { (Text(w.comment)) }
                        input id={ "ack-note-" (id) } type="text" name="note" maxlength="4000";
                        button.primary type="submit" { (Text(w.ack)) }
                    }
                } @else {
                    form.primary method="post" action={ "/i/" (id) "/resolve" } {
                        input type="hidden" name="csrf" value=(token());
                        input type="hidden" name="back" value=(back);
                        label for={ "resolve-note-" (id) } { (Text(w.resolve_note)) }
                        input id={ "resolve-note-" (id) } type="text" name="note" maxlength="4000";
                        button.primary type="submit" { (Text(w.resolve)) }
                    }
                }
            }
            @if home {
                p.more { a href={ "/i/" (id) } { (Text(w.details)) } }
            }
        }
    }
}

fn failed_text(ctx: &Ctx, n: &OutboxRow) -> String {
    fill(
        ctx.w.failed_banner,
        &[
            ("who", &ctx.person_name(&n.person)),
            ("channel", &n.channel),
            ("why", n.last_error.as_deref().unwrap_or("?")),
        ],
    )
}

#[derive(Deserialize)]
pub(super) struct TimelineQuery {
    vis: Option<String>,
}

/// Which timeline entries to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    All,
    Decisions,
    Events,
    System,
}

impl Filter {
    fn parse(s: Option<&str>) -> Filter {
        match s {
            Some("beslutninger" | "decisions") => Filter::Decisions,
            Some("haendelser" | "hændelser" | "events") => Filter::Events,
            Some("system") => Filter::System,
            _ => Filter::All,
        }
    }
}

/// A timeline entry's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Event,
    Decision,
    System,
}

fn tag(e: &TimelineEntry) -> Tag {
    match (e.kind.as_str(), &e.by) {
        ("decision", _) => Tag::Decision,
        ("level", Some(_)) => Tag::Decision,
        (_, Some(_)) => Tag::Event,
        (_, None) => Tag::System,
    }
}

/// `GET /i/{id}`: one incident, its escalation and its timeline.
pub(super) async fn incident<S: Store + Clone + 'static>(
    State(st): State<WebState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> Response {
    let ctx = st.ctx(&headers);
    if ctx.user.is_none() {
        return see_other(&format!("/login?next=/i/{}", super::urlencode(&id)));
    }
    let Ok(id) = id.parse::<u64>() else {
        return no_incident(&ctx);
    };
    let w = ctx.w;
    let row = match st.api.store.incident(id).await {
        Ok(Some(d)) => d.incident,
        Ok(None) => {
            return ctx.problem(StatusCode::NOT_FOUND, w.not_found, w.not_found_text, "/");
        }
        Err(e) => return internal(&ctx, "reading an incident", e),
    };
    if let IncidentState::Merged(into) = row.state {
        return see_other(&format!("/i/{into}"));
    }
    let (s, open) = match (
        shown(&st.api.store, row).await,
        open_incidents(&st.api.store).await,
    ) {
        (Ok(s), Ok(open)) => (s, open),
        (Err(e), _) | (_, Err(e)) => return internal(&ctx, "reading an incident", e),
    };
    let filter = Filter::parse(q.vis.as_deref());
    let back = format!("/i/{id}");
    let title = fill(w.incident, &[("id", &id.to_string())]);
    let actions = ctx.can_act() && s.row.state.is_live();
    let body = html! {
        (pinned(&ctx, &open))
        p.back { a href="/" { "← " (Text(w.all_incidents)) } }
        h1 { (Text(&title)) }
        @if !ctx.can_act() {
            p.box.note { (Text(w.read_only)) }
        }
        div #card data-live { (card(&st, &ctx, &s, &back, false)) }
        @if actions {
            (eta_form(&st, &ctx, id, &back))
            (note_form(&st, &ctx, id, &back))
        }
        (escalation(&ctx, &s))
        (timeline(&ctx, &s, filter, id))
    };
    ctx.page(
        StatusCode::OK,
        &title,
        body,
        PageOpts {
            live: Some("events"),
            version: Some(fingerprint_of(&open)),
            logout_token: Some(st.form_token(&ctx)),
            ..PageOpts::default()
        },
    )
}

fn eta_form<S: Store + Clone + 'static>(
    st: &WebState<S>,
    ctx: &Ctx,
    id: u64,
    back: &str,
) -> Markup {
    let w = ctx.w;
    html! {
        section #eta {
            h2 { (Text(w.set_eta)) }
            form.stack method="post" action={ "/i/" (id) "/eta" } {
                input type="hidden" name="csrf" value=(st.form_token(ctx));
                input type="hidden" name="back" value=(back);
                fieldset {
                    legend { (Text(w.eta_legend)) }
                    div.choices {
                        @for (secs, label) in ETA_CHOICES.iter().zip(w.eta_in) {
                            label.choice {
                                input type="radio" name="in" value=(secs);
                                " " (Text(label))
                            }
                        }
                    }
                    label for="eta-at" { (Text(w.eta_at)) }
                    input #eta-at type="time" name="at";
                }
                button.secondary type="submit" { (Text(w.eta_save)) }
            }
        }
    }
}

fn note_form<S: Store + Clone + 'static>(
    st: &WebState<S>,
    ctx: &Ctx,
    id: u64,
    back: &str,
) -> Markup {
    let w = ctx.w;
    html! {
        section #note {
            h2 { (Text(w.add_note)) }
            form.stack method="post" action={ "/i/" (id) "/note" } {
                input type="hidden" name="csrf" value=(st.form_token(ctx));
                input type="hidden" name="back" value=(back);
                label for="note-text" { (Text(w.note_text)) }
                textarea #note-text name="text" rows="3" maxlength="4000" required {}
                fieldset {
                    legend { (Text(w.note_kind)) }
                    div.choices {
                        label.choice {
                            input type="radio" name="kind" value="event" checked;
                            " " (Text(w.tag_event))
                        }
                        label.choice {
                            input type="radio" name="kind" value="decision";
                            " " (Text(w.tag_decision))
                        }
                    }
                }
                label.choice.check {
                    input type="checkbox" name="public";
                    " " (Text(w.note_public))
                }
                button.secondary type="submit" { (Text(w.note_save)) }
            }
        }
    }
}

/// Who was told: person × channel, the latest message's state.
/// What is due next for incident `id` if nobody acts, in words.
fn next_text(ctx: &Ctx, id: u64) -> Option<String> {
    let up = ctx.board.next.get(&crate::engine::IncidentId(id))?;
    let w = ctx.w;
    let time = ctx.clock.at(up.at.to_timestamp());
    Some(match &up.what {
        Next::FirstNotice => fill(w.next_first, &[("time", &time)]),
        Next::Step { to, via, .. } => fill(
            w.next_step,
            &[
                ("via", &via.join(", ")),
                ("to", &to.join(", ")),
                ("time", &time),
            ],
        ),
        Next::Deputy { person, role, via } => fill(
            w.next_deputy,
            &[
                ("via", &via.join(", ")),
                ("person", person),
                ("role", role),
                ("time", &time),
            ],
        ),
        Next::Status => fill(w.next_status, &[("time", &time)]),
    })
}

fn escalation(ctx: &Ctx, s: &Shown) -> Markup {
    let w = ctx.w;
    let c = &ctx.clock;
    let mut rows: BTreeMap<(String, String), &OutboxRow> = BTreeMap::new();
    for n in &s.told {
        rows.insert((n.person.clone(), n.channel.clone()), n);
    }
    let mut rows: Vec<&OutboxRow> = rows.into_values().collect();
    rows.sort_by_key(|n| (n.created_at, n.person.clone()));
    html! {
        section #escalation data-live {
            h2 { (Text(w.escalation)) }
            @if let Some(next) = next_text(ctx, s.row.id) {
                p.next { (Text(&next)) }
            }
            @for n in s.failed() {
                p.box.bad role="alert" { (Text(&failed_text(ctx, n))) }
            }
            @if rows.is_empty() {
                p { (Text(w.nobody_told)) }
            } @else {
                table {
                    thead { tr {
                        th scope="col" { (Text(w.col_person)) }
                        th scope="col" { (Text(w.col_channel)) }
                        th scope="col" { (Text(w.col_status)) }
                        th scope="col" { (Text(w.col_time)) }
                    } }
                    tbody {
                        @for n in rows {
                            @let acked = s.row.acknowledged_by.as_deref() == Some(n.person.as_str());
                            @let (state, class, at) = if acked {
                                (w.st_acked, "ok", s.row.acknowledged_at)
                            } else {
                                match n.state {
                                    OutboxState::Pending => (w.st_pending, "wait", Some(n.created_at)),
                                    OutboxState::Sent => (w.st_sent, "ok", n.sent_at),
                                    OutboxState::Failed => (w.st_failed, "bad", Some(n.next_attempt)),
                                }
                            };
                            tr {
                                th scope="row" { (Text(&ctx.person_name(&n.person))) }
                                td { (Text(&n.channel)) }
                                td { span class={ "state " (class) } { (Text(state)) } }
                                td { (Text(&at.map(|t| c.at(t.to_timestamp())).unwrap_or_default())) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn timeline(ctx: &Ctx, s: &Shown, filter: Filter, id: u64) -> Markup {
    let w = ctx.w;
    let c = &ctx.clock;
    let shown: Vec<&TimelineEntry> = s
        .timeline
        .iter()
        .rev()
        .filter(|e| match filter {
            Filter::All => true,
            Filter::Decisions => tag(e) == Tag::Decision,
            Filter::Events => tag(e) == Tag::Event,
            Filter::System => tag(e) == Tag::System,
        })
        .collect();
    let links = [
        (Filter::All, "alle", w.f_all),
        (Filter::Decisions, "beslutninger", w.f_decisions),
        (Filter::Events, "haendelser", w.f_events),
        (Filter::System, "system", w.tag_system),
    ];
    html! {
        section #timeline data-live {
            h2 { (Text(w.timeline)) }
            nav.filters aria-label=(w.timeline) {
                (Text(w.show)) " "
                @for (f, key, label) in links {
                    @if f == filter {
                        a.current href={ "/i/" (id) "?vis=" (key) "#timeline" } aria-current="page" { (Text(label)) }
                    } @else {
                        a href={ "/i/" (id) "?vis=" (key) "#timeline" } { (Text(label)) }
                    }
                    " "
                }
            }
            @if shown.is_empty() {
                p { (Text(w.nothing)) }
            } @else {
                ol.timeline {
                    @for e in shown {
                        @let t = e.at.to_timestamp();
                        @let (tag_class, tag_word) = match tag(e) {
                            Tag::Decision => ("decision", w.tag_decision),
                            Tag::Event => ("event", w.tag_event),
                            Tag::System => ("system", w.tag_system),
                        };
                        li {
                            span.when {
                                @if let Some(day) = c.day_if_not_today(t) { (Text(&day)) " " }
                                (Text(&c.hm(t)))
                            }
                            " "
                            span class={ "tag " (tag_class) } { (Text(tag_word)) }
                            @if let Some(by) = &e.by {
                                " " span.by { (Text(&ctx.person_name(by))) }
                            }
                            " "
                            span.text { (Text(&entry_text(ctx, e))) }
                        }
                    }
                }
            }
        }
    }
}

/// A timeline entry in the page's language: the engine's own entries are
/// worded again, a person's notes stand as written.
fn entry_text(ctx: &Ctx, e: &TimelineEntry) -> String {
    let w = ctx.w;
    let lang = ctx.clock.lang;
    let secs = |s: &str| {
        s.strip_suffix('s')
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| duration_words(lang, Duration::from_secs(n)))
    };
    let t = e.text.as_str();
    let worded = match e.kind.as_str() {
        "ack" => Some(match t.strip_prefix("acknowledged: ") {
            Some(note) => format!("{}: {note}", w.tl_ack),
            None => w.tl_ack.to_owned(),
        }),
        "eta" => t
            .strip_prefix("expected ")
            .and_then(|r| r.strip_suffix(" from opening"))
            .and_then(secs)
            .map(|d| fill(w.tl_eta, &[("d", &d)])),
        "estimate" => t.strip_prefix("expected ").and_then(|r| {
            let (n, basis) = r.split_once(" (")?;
            let basis = basis.strip_suffix(')')?;
            let word = match basis {
                "history" => w.basis_history,
                "kind" => w.basis_kind,
                "default" => w.basis_default,
                "extended" => w.basis_extended,
                "manual" => w.basis_manual_nobody,
                _ => return None,
            };
            Some(fill(w.tl_estimate, &[("d", &secs(n)?), ("basis", word)]))
        }),
        "level" => match t {
            "level department" => Some(w.tl_department.to_owned()),
            _ => t
                .strip_prefix("level crisis, meet at ")
                .map(|p| fill(w.tl_crisis, &[("place", p)])),
        },
        "notification" => t.split_once(": ").and_then(|(_, rest)| {
            let (who, channel) = rest.rsplit_once(" by ")?;
            Some(fill(
                w.tl_told,
                &[("who", &ctx.person_name(who)), ("channel", channel)],
            ))
        }),
        "opened" => t
            .strip_prefix("opened: ")
            .map(|what| fill(w.tl_opened, &[("what", what)])),
        "step" => t
            .split_once(": ")
            .map(|(policy, on)| fill(w.tl_step, &[("on", on), ("policy", policy)])),
        "root" => t
            .strip_prefix("new root ")
            .map(|what| fill(w.tl_root, &[("what", &ctx.node_name(what))])),
        "merged" => t
            .strip_prefix("merged into incident ")
            .map(|id| fill(w.tl_merged_into, &[("id", id)]))
            .or_else(|| {
                t.strip_prefix("absorbed incident ")
                    .map(|id| fill(w.tl_absorbed, &[("id", id)]))
            }),
        "resolved" => match t.strip_prefix("resolved by ") {
            Some(who) => Some(fill(w.tl_resolved_by, &[("who", &ctx.person_name(who))])),
            None => (t == "resolved: all components up").then(|| w.tl_resolved_auto.to_owned()),
        },
        _ => None,
    };
    worded.unwrap_or_else(|| e.text.clone())
}

/// `GET /i/{id}/crisis`: what raising to crisis will do, and a button.
pub(super) async fn crisis_confirm<S: Store + Clone + 'static>(
    State(st): State<WebState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let ctx = st.ctx(&headers);
    if ctx.user.is_none() {
        return see_other(&format!("/login?next=/i/{}/crisis", super::urlencode(&id)));
    }
    let Ok(id) = id.parse::<u64>() else {
        return no_incident(&ctx);
    };
    let w = ctx.w;
    let back = format!("/i/{id}");
    if !ctx.can_act() {
        return ctx.problem(StatusCode::FORBIDDEN, w.forbidden, w.forbidden_text, &back);
    }
    let row = match st.api.store.incident(id).await {
        Ok(Some(d)) => d.incident,
        Ok(None) => {
            return ctx.problem(StatusCode::NOT_FOUND, w.not_found, w.not_found_text, "/");
        }
        Err(e) => return internal(&ctx, "reading an incident", e),
    };
    if !row.state.is_live() {
        return conflict(&ctx, id);
    }
    if row.level == Level::Crisis {
        return see_other(&back);
    }
    // What a crisis raised now would choose, as the core last saw it.
    let place = st.api.status.board.borrow().meeting_place.clone();
    let title = fill(w.crisis_title, &[("id", &id.to_string())]);
    let body = html! {
        h1 { (Text(&title)) }
        @match &place {
            Some(p) => {
                p.box.crisis-place {
                    (Text(&fill(w.crisis_text, &[("place", "")])))
                    strong { (Text(p)) }
                }
            }
            None => p.box.bad { (Text(w.crisis_no_place)) },
        }
        form.primary method="post" action={ "/i/" (id) "/crisis" } {
            input type="hidden" name="csrf" value=(st.form_token(&ctx));
            input type="hidden" name="back" value=(back);
            button.primary.danger type="submit" { (Text(w.crisis_confirm)) }
        }
        p { a.button.secondary href=(back) { (Text(w.cancel)) } }
    };
    ctx.page(
        StatusCode::OK,
        &title,
        body,
        PageOpts {
            logout_token: Some(st.form_token(&ctx)),
            ..PageOpts::default()
        },
    )
}

// ---------------------------------------------------------------------------
// Actions

/// The parts of an action's POST every handler shares: the checks, the
/// double-submit guard, the action through the same path as the JSON
/// routes ([`crate::api::ApiState::act`]), and the redirect.
async fn act<S: Store + Clone + 'static>(
    st: &WebState<S>,
    headers: &HeaderMap,
    id: &str,
    body: Body,
    make: impl FnOnce(&Ctx, &Form) -> Result<Action, String>,
) -> Response {
    let ctx = st.ctx(headers);
    let Ok(id) = id.parse::<u64>() else {
        return no_incident(&ctx);
    };
    let w = ctx.w;
    let default_back = format!("/i/{id}");
    let (form, nonce) = match checked_post(st, &ctx, headers, body, &default_back).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let back = local_path(form.get("back").map(String::as_str).or(Some(&default_back)));
    let by = ctx
        .user
        .as_ref()
        .map(|u| u.caller.actor())
        .unwrap_or_default();
    let action = match make(&ctx, &form) {
        Ok(a) => a,
        Err(why) => return ctx.problem(StatusCode::BAD_REQUEST, w.failed, &why, &back),
    };
    if let Some(done) = st.once(&ctx, nonce, &back) {
        return done;
    }
    match st.api.act(id, by, action).await {
        Ok(_) => see_other(&back),
        Err(e) => match e.status() {
            StatusCode::NOT_FOUND => no_incident(&ctx),
            StatusCode::CONFLICT => conflict(&ctx, id),
            StatusCode::SERVICE_UNAVAILABLE => ctx.problem(
                StatusCode::SERVICE_UNAVAILABLE,
                w.unavailable,
                w.unavailable_text,
                &back,
            ),
            code => ctx.problem(code, w.failed, w.failed_text, &back),
        },
    }
}

fn conflict(ctx: &Ctx, id: u64) -> Response {
    ctx.problem(
        StatusCode::CONFLICT,
        ctx.w.conflict,
        &fill(ctx.w.conflict_text, &[("id", &id.to_string())]),
        &format!("/i/{id}"),
    )
}

fn internal(ctx: &Ctx, what: &str, e: impl std::fmt::Display) -> Response {
    error!(error = %e, "{what}");
    ctx.problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        ctx.w.failed,
        ctx.w.failed_text,
        "/",
    )
}

pub(super) async fn post_ack<S: Store + Clone + 'static>(
    State(st): State<WebState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    act(&st, &headers, &id, body, |_, form| {
        Ok(Action::Ack {
            note: text_field(form, "note"),
        })
    })
    .await
}

pub(super) async fn post_resolve<S: Store + Clone + 'static>(
    State(st): State<WebState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    act(&st, &headers, &id, body, |_, form| {
        Ok(Action::Resolve {
            note: text_field(form, "note"),
        })
    })
    .await
}

pub(super) async fn post_note<S: Store + Clone + 'static>(
    State(st): State<WebState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    act(&st, &headers, &id, body, |ctx, form| {
        let text = text_field(form, "text").ok_or_else(|| ctx.w.note_missing.to_owned())?;
        Ok(Action::Note {
            text,
            decision: form.get("kind").is_some_and(|k| k == "decision"),
            public: form.get("public").is_some_and(|p| p == "on"),
        })
    })
    .await
}

pub(super) async fn post_crisis<S: Store + Clone + 'static>(
    State(st): State<WebState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    act(&st, &headers, &id, body, |_, _| {
        Ok(Action::Level(Level::Crisis))
    })
    .await
}

pub(super) async fn post_eta<S: Store + Clone + 'static>(
    State(st): State<WebState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    act(&st, &headers, &id, body, |ctx, form| {
        eta_from_form(ctx, form)
            .map(Action::Eta)
            .ok_or_else(|| ctx.w.eta_missing.to_owned())
    })
    .await
}

/// What an ETA form asks for: a clock time (the next one to come, in the
/// site's zone) or a duration from now.
fn eta_from_form(ctx: &Ctx, form: &Form) -> Option<Eta> {
    if let Some(at) = form.get("at").map(|a| a.trim()).filter(|a| !a.is_empty()) {
        let time: Time = at.parse().ok()?;
        let today = ctx.clock.now.to_zoned(ctx.clock.tz.clone()).date();
        let mut until = today
            .to_datetime(time)
            .to_zoned(ctx.clock.tz.clone())
            .ok()?;
        if until.timestamp() <= ctx.clock.now {
            until = until.tomorrow().ok()?;
        }
        return Some(Eta::Until(until.timestamp()));
    }
    let secs: u64 = form.get("in")?.trim().parse().ok()?;
    if secs == 0 || secs > 366 * 86_400 {
        return None;
    }
    Some(Eta::Remaining(Duration::from_secs(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Ts;

    fn entry(kind: &str, text: &str, by: Option<&str>) -> TimelineEntry {
        TimelineEntry {
            at: Ts(0),
            kind: kind.into(),
            text: text.into(),
            by: by.map(str::to_owned),
            public: false,
        }
    }

    #[test]
    fn timeline_entries_are_tagged_by_who_made_them() {
        assert_eq!(tag(&entry("decision", "x", Some("p"))), Tag::Decision);
        assert_eq!(
            tag(&entry("level", "level crisis", Some("p"))),
            Tag::Decision
        );
        assert_eq!(tag(&entry("event", "x", Some("p"))), Tag::Event);
        assert_eq!(tag(&entry("ack", "acknowledged", Some("p"))), Tag::Event);
        assert_eq!(tag(&entry("alarm", "x", None)), Tag::System);
        assert_eq!(Filter::parse(Some("beslutninger")), Filter::Decisions);
        assert_eq!(Filter::parse(Some("nonsense")), Filter::All);
    }
}
