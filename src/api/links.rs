//! The acknowledgement link pages (SPEC §5 `GET /a/{link}` · `POST
//! /a/{link}`): one click in an SMS or a mail acknowledges an incident as
//! the person it was sent to.
//!
//! Links are made and checked in [`crate::links`]. `GET` only shows what
//! the link will do and a button, because mail scanners and chat previews
//! fetch every link; `POST` acknowledges through the core. The pages are
//! small, self-contained HTML in the site's language, built with maud.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, PreEscaped, html};
use tracing::{error, info, warn};

use super::{ApiState, CORE_TIMEOUT};
use crate::catalogue::Catalogue;
use crate::clock::wall_now;
use crate::config::Language;
use crate::core::{LinkOutcome, NoAnswer};
use crate::engine::{EngineError, IncidentId, IncidentState, Severity, Ts};
use crate::html::{DOCTYPE, Text};
use crate::links::{Link, LinkError, check};
use crate::store::{IncidentRow, Store, StoreError};
use crate::words::{Year, fill, local_time};

/// Merges followed at most from a link's incident to the one that absorbed it.
const MAX_MERGES: usize = 32;

/// `GET /a/{link}`: what the link will acknowledge, and a button. Reads
/// only; a used, expired or otherwise useless link gets a page saying so.
pub(super) async fn show<S: Store + Clone + 'static>(
    State(st): State<ApiState<S>>,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let view = View::new(&st);
    let link = match view.verify(&st, token) {
        Ok(link) => link,
        Err(r) => return view.refused(&r),
    };
    let row = match live_row(&st.store, link.incident).await {
        Ok(Some(row)) => row,
        Ok(None) => return view.unknown(link.incident),
        Err(e) => return view.internal("reading the incident of an acknowledgement link", e),
    };
    if row.state == IncidentState::Resolved {
        return view.resolved(link.incident, Some(&row));
    }
    match st.store.link_used(&link.id).await {
        Ok(true) => return view.used(Some(&row)),
        Ok(false) => {}
        Err(e) => return view.internal("reading whether an acknowledgement link was used", e),
    }
    view.confirm(&link, &row)
}

/// `POST /a/{link}`: acknowledges once, through the core, and says so.
pub(super) async fn follow<S: Store + Clone + 'static>(
    State(st): State<ApiState<S>>,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let view = View::new(&st);
    let link = match view.verify(&st, token) {
        Ok(link) => link,
        Err(r) => return view.refused(&r),
    };
    let asked = st
        .core
        .ack_link(
            link.id.clone(),
            IncidentId(link.incident),
            link.person.clone(),
        )
        .await;
    let outcome = match asked {
        Ok(outcome) => outcome,
        Err(NoAnswer::Stopped) => return view.unavailable(),
        Err(NoAnswer::TimedOut) => return view.slow(),
    };
    match outcome {
        Ok(LinkOutcome::Acknowledged) => {
            info!(incident = link.incident, person = %link.person, "acknowledged by link");
            let row = row_for_page(&st.store, link.incident).await;
            view.done(&link, row.as_ref())
        }
        // The core answers a used link as AlreadyUsed; the engine's own
        // refusal means the same.
        Ok(LinkOutcome::AlreadyUsed) | Err(EngineError::LinkUsed(_)) => {
            info!(incident = link.incident, person = %link.person, "acknowledgement link used again");
            let row = row_for_page(&st.store, link.incident).await;
            view.used(row.as_ref())
        }
        Err(EngineError::UnknownIncident(_)) => view.unknown(link.incident),
        Err(EngineError::Resolved(id)) => {
            let row = row_for_page(&st.store, id.0).await;
            view.resolved(link.incident, row.as_ref())
        }
    }
}

/// The incident a link names, or the one it was merged into.
async fn live_row<S: Store>(store: &S, id: u64) -> Result<Option<IncidentRow>, StoreError> {
    let mut id = id;
    let mut row = None;
    for _ in 0..MAX_MERGES {
        let Some(detail) = store.incident(id).await? else {
            return Ok(row);
        };
        let next = match detail.incident.state {
            IncidentState::Merged(into) if into.0 != id => Some(into.0),
            _ => None,
        };
        row = Some(detail.incident);
        match next {
            Some(into) => id = into,
            None => break,
        }
    }
    Ok(row)
}

/// The incident for a page's details after the core has answered: the
/// answer stands without them, so a failed read only leaves them out.
async fn row_for_page<S: Store>(store: &S, id: u64) -> Option<IncidentRow> {
    match live_row(store, id).await {
        Ok(row) => row,
        Err(e) => {
            error!(error = %e, incident = id, "reading an incident for an acknowledgement page");
            None
        }
    }
}

/// The texts of the pages. `{id}`, `{into}`, `{who}`, `{when}`, `{person}`
/// and `{secs}` are filled in by [`fill`].
struct Words {
    lang: &'static str,
    severity: fn(Severity) -> &'static str,
    confirm: &'static str,
    merged: &'static str,
    fault_in: &'static str,
    affected: &'static str,
    none_affected: &'static str,
    opened: &'static str,
    already_acked_by: &'static str,
    acked_by: &'static str,
    you_ack_as: &'static str,
    button: &'static str,
    once_until: &'static str,
    done: &'static str,
    done_text: &'static str,
    what_to_do: &'static str,
    expired: &'static str,
    expired_text: &'static str,
    tampered: &'static str,
    tampered_text: &'static str,
    malformed: &'static str,
    malformed_text: &'static str,
    retry_hint: &'static str,
    used: &'static str,
    used_text: &'static str,
    used_by: &'static str,
    used_hint: &'static str,
    resolved: &'static str,
    resolved_text: &'static str,
    resolved_at_text: &'static str,
    unknown: &'static str,
    unknown_text: &'static str,
    gone: &'static str,
    gone_text: &'static str,
    unavailable: &'static str,
    unavailable_text: &'static str,
    slow: &'static str,
    slow_text: &'static str,
    internal: &'static str,
    internal_text: &'static str,
}

const DA: Words = Words {
    lang: "da",
    severity: |s| match s {
        Severity::Critical => "KRITISK",
        Severity::Major => "ALVORLIG",
        Severity::Minor => "MINDRE",
    },
    confirm: "Kvittér for hændelse #{id}",
    merged: "Hændelse #{id} er lagt sammen med #{into}: du kvitterer for #{into}.",
    fault_in: "Fejl i",
    affected: "Ramt",
    none_affected: "Ingen tjenester ramt endnu",
    opened: "Åbnet",
    already_acked_by: "Allerede kvitteret af",
    acked_by: "Kvitteret af",
    you_ack_as: "Du kvitterer som",
    button: "Kvittér",
    once_until: "Linket virker én gang og udløber {when}.",
    done: "Kvitteret – tak",
    done_text: "Hændelse #{id} er kvitteret som {who} {when}. \
                Eskaleringen til stedfortrædere stopper.",
    what_to_do: "Kvittér i webgrænsefladen, eller svar din vagtleder.",
    expired: "Linket er udløbet",
    expired_text: "Linket til hændelse #{id} udløb {when}.",
    tampered: "Linket kan ikke bruges",
    tampered_text: "Linket er blevet ændret eller er lavet med en anden nøgle – \
                    måske blev det afkortet, da det blev kopieret.",
    malformed: "Linket er ufuldstændigt",
    malformed_text: "Det er ikke et kvitteringslink fra beredskab, eller en del af det mangler.",
    retry_hint: "Åbn linket direkte fra beskeden, kvittér i webgrænsefladen, \
                 eller svar din vagtleder.",
    used: "Linket er allerede brugt",
    used_text: "Et kvitteringslink virker kun én gang.",
    used_by: "Hændelse #{id} er kvitteret af {who} {when}.",
    used_hint: "Vil du kvittere igen, så gør det i webgrænsefladen.",
    resolved: "Hændelsen er allerede løst",
    resolved_text: "Hændelse #{id} er løst; der er intet at kvittere for.",
    resolved_at_text: "Hændelse #{id} blev løst {when}; der er intet at kvittere for.",
    unknown: "Hændelsen findes ikke",
    unknown_text: "Der er ingen hændelse #{id}.",
    gone: "Linket gælder ikke længere",
    gone_text: "Linket blev sendt til {person}, som ikke længere står i beredskabsplanen.",
    unavailable: "Prøv igen om lidt",
    unavailable_text: "Beredskab genstarter eller lukker ned. Intet er kvitteret endnu.",
    slow: "Beredskab svarer ikke lige nu",
    slow_text: "Beredskab svarede ikke inden for {secs} sekunder. Kvitteringen kan stadig \
                gå igennem: se hændelsen i webgrænsefladen, eller prøv linket igen om lidt.",
    internal: "Noget gik galt",
    internal_text: "Intet er kvitteret. Prøv igen om lidt.",
};

const EN: Words = Words {
    lang: "en",
    severity: |s| match s {
        Severity::Critical => "CRITICAL",
        Severity::Major => "MAJOR",
        Severity::Minor => "MINOR",
    },
    confirm: "Acknowledge incident #{id}",
    merged: "Incident #{id} was merged into #{into}: you acknowledge #{into}.",
    fault_in: "Fault in",
    affected: "Affected",
    none_affected: "No services affected yet",
    opened: "Opened",
    already_acked_by: "Already acknowledged by",
    acked_by: "Acknowledged by",
    you_ack_as: "You acknowledge as",
    button: "Acknowledge",
    once_until: "The link works once and expires {when}.",
    done: "Acknowledged – thank you",
    done_text: "Incident #{id} is acknowledged as {who} {when}. Escalation to deputies stops.",
    what_to_do: "Acknowledge in the web UI, or reply to your on-call lead.",
    expired: "This link has expired",
    expired_text: "The link for incident #{id} expired {when}.",
    tampered: "This link cannot be used",
    tampered_text: "The link has been changed or was made with another key – \
                    perhaps it was cut short when it was copied.",
    malformed: "This link is incomplete",
    malformed_text: "It is not an acknowledgement link from beredskab, or part of it is missing.",
    retry_hint: "Open the link straight from the message, acknowledge in the web UI, \
                 or reply to your on-call lead.",
    used: "This link has already been used",
    used_text: "An acknowledgement link works only once.",
    used_by: "Incident #{id} was acknowledged by {who} {when}.",
    used_hint: "To acknowledge again, use the web UI.",
    resolved: "This incident is already resolved",
    resolved_text: "Incident #{id} is resolved; there is nothing to acknowledge.",
    resolved_at_text: "Incident #{id} was resolved {when}; there is nothing to acknowledge.",
    unknown: "No such incident",
    unknown_text: "There is no incident #{id}.",
    gone: "This link is no longer valid",
    gone_text: "The link was sent to {person}, who is no longer in the preparedness plan.",
    unavailable: "Try again in a moment",
    unavailable_text: "beredskab is restarting or shutting down. Nothing has been acknowledged yet.",
    slow: "beredskab is not answering",
    slow_text: "beredskab did not answer within {secs} s. The acknowledgement may still go \
                through: check the incident in the web UI, or try the link again in a moment.",
    internal: "Something went wrong",
    internal_text: "Nothing has been acknowledged. Try again in a moment.",
};

/// Why a link is not followed.
enum Refused {
    Link(LinkError),
    /// Sent to this person, who is no longer in the plan.
    Gone(String),
}

/// What every page needs: the catalogue (names, language, time zone),
/// the texts and the time.
struct View {
    cat: Arc<Catalogue>,
    w: &'static Words,
    now: Ts,
}

impl View {
    fn new<S: Store>(st: &ApiState<S>) -> View {
        let cat = st.settings().catalogue.clone();
        let w = match cat.language {
            Language::Da => &DA,
            Language::En => &EN,
        };
        View {
            cat,
            w,
            now: wall_now(),
        }
    }

    /// The link in the path, verified, for a person still in the plan.
    fn verify<S: Store>(
        &self,
        st: &ApiState<S>,
        token: Result<Path<String>, PathRejection>,
    ) -> Result<Link, Refused> {
        let Ok(Path(token)) = token else {
            return Err(Refused::Link(LinkError::Malformed));
        };
        let link = check(&st.settings().links.key, &token, self.now).map_err(|e| {
            match &e {
                LinkError::Tampered => warn!(error = %e, "acknowledgement link refused"),
                _ => info!(error = %e, "acknowledgement link refused"),
            }
            Refused::Link(e)
        })?;
        if self.cat.person_id(&link.person).is_none() {
            warn!(incident = link.incident, person = %link.person,
                "acknowledgement link for a person no longer in the plan");
            return Err(Refused::Gone(link.person));
        }
        Ok(link)
    }

    fn refused(&self, r: &Refused) -> Response {
        let w = self.w;
        match r {
            Refused::Link(LinkError::Malformed) => self.problem(
                StatusCode::BAD_REQUEST,
                w.malformed,
                w.malformed_text,
                w.retry_hint,
            ),
            Refused::Link(LinkError::Tampered) => self.problem(
                StatusCode::FORBIDDEN,
                w.tampered,
                w.tampered_text,
                w.retry_hint,
            ),
            Refused::Link(LinkError::Expired { incident, expired }) => self.problem(
                StatusCode::GONE,
                w.expired,
                &fill(
                    w.expired_text,
                    &[
                        ("id", &incident.to_string()),
                        ("when", &self.when(*expired)),
                    ],
                ),
                w.what_to_do,
            ),
            Refused::Gone(person) => self.problem(
                StatusCode::FORBIDDEN,
                w.gone,
                &fill(w.gone_text, &[("person", person)]),
                w.what_to_do,
            ),
        }
    }

    fn unknown(&self, incident: u64) -> Response {
        self.problem(
            StatusCode::NOT_FOUND,
            self.w.unknown,
            &fill(self.w.unknown_text, &[("id", &incident.to_string())]),
            self.w.what_to_do,
        )
    }

    fn resolved(&self, incident: u64, row: Option<&IncidentRow>) -> Response {
        let w = self.w;
        let id = incident.to_string();
        let text = match row.and_then(|r| r.resolved_at) {
            Some(at) => fill(w.resolved_at_text, &[("id", &id), ("when", &self.when(at))]),
            None => fill(w.resolved_text, &[("id", &id)]),
        };
        self.problem(StatusCode::CONFLICT, w.resolved, &text, "")
    }

    fn used(&self, row: Option<&IncidentRow>) -> Response {
        let w = self.w;
        let mut text = w.used_text.to_owned();
        if let Some(r) = row
            && let (Some(by), Some(at)) = (&r.acknowledged_by, r.acknowledged_at)
        {
            text.push(' ');
            text.push_str(&fill(
                w.used_by,
                &[
                    ("id", &r.id.to_string()),
                    ("who", &self.person_name(by)),
                    ("when", &self.when(at)),
                ],
            ));
        }
        self.problem(StatusCode::CONFLICT, w.used, &text, w.used_hint)
    }

    fn unavailable(&self) -> Response {
        self.problem(
            StatusCode::SERVICE_UNAVAILABLE,
            self.w.unavailable,
            self.w.unavailable_text,
            self.w.what_to_do,
        )
    }

    /// The core did not answer in time: the acknowledgement may or may not
    /// have happened.
    fn slow(&self) -> Response {
        self.problem(
            StatusCode::SERVICE_UNAVAILABLE,
            self.w.slow,
            &fill(
                self.w.slow_text,
                &[("secs", &CORE_TIMEOUT.as_secs().to_string())],
            ),
            "",
        )
    }

    /// Logs the details; the page says only that nothing happened.
    fn internal(&self, what: &str, e: impl std::fmt::Display) -> Response {
        error!(error = %e, "{what}");
        self.problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            self.w.internal,
            self.w.internal_text,
            self.w.what_to_do,
        )
    }

    /// The page with the button.
    fn confirm(&self, link: &Link, row: &IncidentRow) -> Response {
        let w = self.w;
        let id = row.id.to_string();
        let title = fill(w.confirm, &[("id", &id)]);
        let merged = (row.id != link.incident).then(|| {
            fill(
                w.merged,
                &[("id", &link.incident.to_string()), ("into", &id)],
            )
        });
        let once = fill(w.once_until, &[("when", &self.when(link.expires))]);
        let body = html! {
            h1 { (Text(&title)) }
            @if let Some(merged) = &merged {
                p.box { (Text(merged)) }
            }
            (self.details(row, w.already_acked_by))
            dl {
                dt { (Text(w.you_ack_as)) }
                dd { (Text(&self.person_label(&link.person))) }
            }
            form method="post" { button type="submit" { (Text(w.button)) } }
            p.note { (Text(&once)) }
        };
        self.page(StatusCode::OK, &title, body)
    }

    /// The confirmation after a POST.
    fn done(&self, link: &Link, row: Option<&IncidentRow>) -> Response {
        let w = self.w;
        let id = row.map_or(link.incident, |r| r.id).to_string();
        let text = fill(
            w.done_text,
            &[
                ("id", &id),
                ("who", &self.person_label(&link.person)),
                ("when", &self.when(self.now)),
            ],
        );
        let body = html! {
            h1.ok { (Text(w.done)) }
            p.box.ok { (Text(&text)) }
            @if let Some(row) = row {
                (self.details(row, w.acked_by))
            }
        };
        self.page(StatusCode::OK, w.done, body)
    }

    /// Severity, root, services, opening and acknowledgement of an
    /// incident, the last under `acked_label`.
    fn details(&self, row: &IncidentRow, acked_label: &str) -> Markup {
        let w = self.w;
        let services = self.cat.services_by_criticality(&row.services);
        let services = if services.is_empty() {
            w.none_affected.to_owned()
        } else {
            services.join(", ")
        };
        html! {
            p { span class={ "sev " (row.severity.as_str()) } { (Text((w.severity)(row.severity))) } }
            dl {
                dt { (Text(w.fault_in)) }
                dd { (Text(&self.cat.name_of(&row.root))) }
                dt { (Text(w.affected)) }
                dd { (Text(&services)) }
                dt { (Text(w.opened)) }
                dd { (Text(&self.when(row.opened_at))) }
                @if let (Some(by), Some(at)) = (&row.acknowledged_by, row.acknowledged_at) {
                    dt { (Text(acked_label)) }
                    dd { (Text(&self.person_name(by))) " " (Text(&self.when(at))) }
                }
            }
        }
    }

    /// A person's name, or the id as given when it is no one in the plan.
    fn person_name(&self, id: &str) -> String {
        self.cat
            .person_id(id)
            .map_or_else(|| id.to_owned(), |p| self.cat.person(p).name.clone())
    }

    /// `Name (id)`.
    fn person_label(&self, id: &str) -> String {
        let name = self.person_name(id);
        if name == id {
            name
        } else {
            format!("{name} ({id})")
        }
    }

    /// A time in the site's zone: the clock today, with the date on other
    /// days, and the year when it is not this year.
    fn when(&self, t: Ts) -> String {
        local_time(
            self.cat.language,
            &self.cat.tz,
            t.to_timestamp(),
            self.now.to_timestamp(),
            Year::WhenNotThisYear,
        )
    }

    /// A page that says what went wrong and what to do instead.
    fn problem(&self, status: StatusCode, title: &str, text: &str, hint: &str) -> Response {
        let body = html! {
            h1.bad { (Text(title)) }
            p.box.bad { (Text(text)) }
            @if !hint.is_empty() {
                p { (Text(hint)) }
            }
        };
        self.page(status, title, body)
    }

    /// A whole page: no scripts, no outside assets, not cached, and the
    /// link never sent on as a referrer.
    fn page(&self, status: StatusCode, title: &str, content: Markup) -> Response {
        let site = Text(&self.cat.site_name);
        let page = html! {
            (DOCTYPE)
            html lang=(self.w.lang) {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="robots" content="noindex";
                    title { (Text(title)) " – " (site) }
                    style { (PreEscaped(CSS)) }
                }
                body {
                    main {
                        p.site { (site) }
                        (content)
                    }
                }
            }
        };
        (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::REFERRER_POLICY, "no-referrer"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::HeaderName::from_static("x-robots-tag"), "noindex"),
            ],
            page.into_string(),
        )
            .into_response()
    }
}

/// Inline styles only; forms post back to this page; no framing.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = "\
body{margin:0;background:#f4f4f2;color:#1a1a1a;\
font:18px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}\
main{max-width:32rem;margin:0 auto;padding:1.25rem}\
.site{margin:0 0 .5rem;color:#555;font-size:.9rem}\
h1{margin:.25rem 0 1rem;font-size:1.5rem;line-height:1.2}\
h1.ok{color:#0b6b2f}h1.bad{color:#b00020}\
.sev{display:inline-block;padding:.15rem .55rem;border-radius:.3rem;background:#666;\
color:#fff;font-weight:700;font-size:.85rem;letter-spacing:.03em}\
.sev.critical{background:#b00020}.sev.major{background:#b35300}.sev.minor{background:#5c6600}\
dl{margin:1rem 0}dt{margin-top:.6rem;color:#555;font-size:.85rem}dd{margin:0;font-weight:600}\
.box{padding:.75rem 1rem;border-left:.35rem solid #888;border-radius:.3rem;background:#fff}\
.box.ok{border-color:#0b6b2f}.box.bad{border-color:#b00020}\
button{display:block;width:100%;min-height:3.5rem;margin:1.5rem 0 .75rem;border:0;\
border-radius:.5rem;background:#0b6b2f;color:#fff;font:inherit;font-size:1.3rem;\
font-weight:700;cursor:pointer}\
button:focus-visible{outline:3px solid #111;outline-offset:2px}\
.note{color:#555;font-size:.9rem}\
";
