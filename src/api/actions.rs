//! What people do to an incident (SPEC §5): acknowledge, give an ETA,
//! write the log, change the level, resolve. The JSON routes and the web
//! UI's forms both end in [`ApiState::act`], so both answer the same way:
//! 404 for an incident that never was (kept as rejected
//! `unknown_incident`), 409 for one that is over.
//!
//! Parsing is pure: a body becomes an [`Action`] or a message saying what
//! was wrong.

use std::time::Duration;

use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::core::{Receipt, wall_now};
use crate::engine::{EngineError, Event, IncidentId, Level, RejectReason, Source};
use crate::store::Store;

/// The longest note, acknowledgement comment or name kept.
pub const MAX_TEXT_CHARS: usize = 4000;

/// Something a person does to an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Acknowledge, with an optional comment; again is allowed and logged.
    Ack {
        note: Option<String>,
    },
    Eta(Eta),
    /// A log entry; a public one is shown on the status page.
    Note {
        text: String,
        decision: bool,
        public: bool,
    },
    Level(Level),
    Resolve {
        note: Option<String>,
    },
}

/// How long an incident is expected to last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eta {
    /// In all, counted from its opening.
    Expected(Duration),
    /// From now.
    Remaining(Duration),
    /// Until this time.
    Until(jiff::Timestamp),
}

impl Action {
    /// The action's name, as in its route.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Ack { .. } => "ack",
            Action::Eta(_) => "eta",
            Action::Note { .. } => "notes",
            Action::Level(_) => "level",
            Action::Resolve { .. } => "resolve",
        }
    }

    /// The engine event, `now` being the wall clock (for `until`).
    fn event(self, incident: IncidentId, by: String, now: jiff::Timestamp) -> Event {
        match self {
            Action::Ack { note } => Event::Ack { incident, by, note },
            Action::Eta(eta) => {
                let (expected, from_now) = match eta {
                    Eta::Expected(d) => (d, false),
                    Eta::Remaining(d) => (d, true),
                    Eta::Until(t) => (until(now, t), true),
                };
                Event::Eta {
                    incident,
                    expected,
                    by: Some(by),
                    from_now,
                }
            }
            Action::Note {
                text,
                decision,
                public,
            } => Event::Note {
                incident,
                by,
                text,
                decision,
                public,
            },
            Action::Level(level) => Event::SetLevel {
                incident,
                level,
                by,
            },
            Action::Resolve { note } => Event::Resolve { incident, by, note },
        }
    }
}

/// From `now` until `t`; zero when `t` has passed.
fn until(now: jiff::Timestamp, t: jiff::Timestamp) -> Duration {
    let ms = t
        .as_millisecond()
        .saturating_sub(now.as_millisecond())
        .max(0);
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A body's text field: trimmed, not empty, at most [`MAX_TEXT_CHARS`].
fn text(field: &str, value: Option<String>) -> Result<Option<String>, String> {
    let Some(v) = value else { return Ok(None) };
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.chars().count() > MAX_TEXT_CHARS {
        return Err(format!(
            "{field} is longer than {MAX_TEXT_CHARS} characters"
        ));
    }
    Ok(Some(v.to_owned()))
}

/// A JSON body; an empty one reads as `{}`.
fn json<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, String> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("invalid {what} JSON: {e}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: Option<String>,
    note: Option<String>,
}

/// `POST …/ack`: `{"by"?, "note"?}`; returns the action and who acts
/// (`by`, when given).
pub fn parse_ack(body: &[u8]) -> Result<(Action, Option<String>), String> {
    let b: AckBody = json(body, "acknowledgement")?;
    Ok((
        Action::Ack {
            note: text("note", b.note)?,
        },
        text("by", b.by)?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EtaBody {
    expected: Option<String>,
    remaining: Option<String>,
    until: Option<String>,
}

/// A duration from outside: humantime, at most 100 years.
pub fn parse_duration(field: &str, v: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(v.trim())
        .map_err(|e| format!("{field} {v:?} is not a duration like \"2h\" or \"1h 30m\": {e}"))?;
    if !crate::config::duration_in_bounds(d) {
        return Err(format!("{field} {v:?} is longer than 100 years"));
    }
    Ok(d)
}

/// `POST …/eta`: exactly one of `{"expected": "3h"}` (from opening),
/// `{"remaining": "2h"}` (from now) or `{"until": RFC 3339}`.
pub fn parse_eta(body: &[u8], now: jiff::Timestamp) -> Result<Action, String> {
    let b: EtaBody = json(body, "ETA")?;
    let eta = match (b.expected, b.remaining, b.until) {
        (Some(e), None, None) => Eta::Expected(parse_duration("expected", &e)?),
        (None, Some(r), None) => Eta::Remaining(parse_duration("remaining", &r)?),
        (None, None, Some(u)) => Eta::Until(parse_until(&u, now)?),
        (None, None, None) => {
            return Err("an ETA needs one of `expected`, `remaining` or `until`".into());
        }
        _ => {
            return Err(
                "an ETA takes one of `expected`, `remaining` or `until`, not several".into(),
            );
        }
    };
    Ok(Action::Eta(eta))
}

/// An RFC 3339 time, not in the past and within 100 years.
pub fn parse_until(v: &str, now: jiff::Timestamp) -> Result<jiff::Timestamp, String> {
    let t: jiff::Timestamp = v.trim().parse().map_err(|e| {
        format!("until {v:?} is not an RFC 3339 time like \"2026-12-05T16:00:00+01:00\": {e}")
    })?;
    if t < now {
        return Err(format!("until {v:?} has passed"));
    }
    if !crate::config::duration_in_bounds(until(now, t)) {
        return Err(format!("until {v:?} is more than 100 years away"));
    }
    Ok(t)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    text: Option<String>,
    kind: Option<String>,
    public: Option<bool>,
}

/// `POST …/notes`: `{"text", "kind": "event"|"decision", "public"?}`.
pub fn parse_note(body: &[u8]) -> Result<Action, String> {
    let b: NoteBody = json(body, "note")?;
    let text = text("text", b.text)?.ok_or("a note needs a `text`")?;
    let decision = match b.kind.as_deref() {
        Some("event") => false,
        Some("decision") => true,
        Some(other) => return Err(format!("kind {other:?} is not one of event, decision")),
        None => return Err("a note needs a `kind`: event or decision".into()),
    };
    Ok(Action::Note {
        text,
        decision,
        public: b.public.unwrap_or(false),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelBody {
    level: Option<String>,
}

/// `POST …/level`: `{"level": "crisis"|"department"}`.
pub fn parse_level(body: &[u8]) -> Result<Action, String> {
    let b: LevelBody = json(body, "level")?;
    let level = b.level.ok_or("a level change needs `level`")?;
    Level::parse(&level)
        .map(Action::Level)
        .ok_or_else(|| format!("level {level:?} is not one of crisis, department"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    note: Option<String>,
}

/// `POST …/resolve`: `{"note"?}`.
pub fn parse_resolve(body: &[u8]) -> Result<Action, String> {
    let b: ResolveBody = json(body, "resolve")?;
    Ok(Action::Resolve {
        note: text("note", b.note)?,
    })
}

/// An incident id from a path.
pub fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad(format!("{id:?} is not an incident id")))
}

impl<S: Store + Clone + 'static> ApiState<S> {
    /// Does `action` to incident `incident` as `by`, once committed: 404
    /// for an incident that never was (kept as rejected
    /// `unknown_incident`), 409 for one that is resolved or merged.
    pub async fn act(
        &self,
        incident: u64,
        by: String,
        action: Action,
    ) -> Result<Receipt, ApiError> {
        let name = action.name();
        let event = action.event(IncidentId(incident), by, wall_now().to_timestamp());
        match self.core.input(event, Source::Http).await? {
            Ok(receipt) => Ok(receipt),
            Err(e @ EngineError::UnknownIncident(_)) => {
                self.reject(
                    Source::Http,
                    RejectReason::UnknownIncident,
                    format!("{name} on incident {incident}: {e}"),
                    Vec::new(),
                )
                .await;
                Err(super::engine_error(e))
            }
            Err(e) => Err(super::engine_error(e)),
        }
    }
}

/// The routes of SPEC §5 that act on an incident, scope `ack`: each
/// answers 200 with the incident as it is after the action.
pub mod routes {
    use axum::Json;
    use axum::body::Body;
    use axum::extract::{Path, State};
    use axum::http::HeaderMap;
    use serde_json::Value;

    use super::*;
    use crate::api::{ALARM_BODY_LIMIT, ClientAddr, incidents};
    use crate::config::Scope;

    /// Checks the token (before the body is read), reads and parses the
    /// body, acts as `by` (else the token's person, else its name) and
    /// answers with the incident.
    async fn act_on<S: Store + Clone + 'static>(
        st: ApiState<S>,
        from: ClientAddr,
        headers: HeaderMap,
        id: String,
        body: Body,
        parse: impl FnOnce(&[u8]) -> Result<(Action, Option<String>), String>,
    ) -> Result<Json<Value>, ApiError> {
        let caller = st.authorize(&headers, Scope::Ack, &from)?;
        let id = parse_id(&id)?;
        let body = st.body(body, ALARM_BODY_LIMIT, Source::Http).await?;
        let (action, by) = parse(&body).map_err(ApiError::bad)?;
        let by = by.unwrap_or_else(|| caller.actor());
        st.act(id, by, action).await?;
        match st.store.incident(id).await {
            Ok(Some(d)) => Ok(Json(incidents::incident_json(&d.incident))),
            Ok(None) => Err(ApiError::internal(
                "reading an incident just acted on",
                format!("incident {id} is not in the store"),
            )),
            Err(e) => Err(ApiError::internal("reading an incident", e)),
        }
    }

    fn plain(
        parse: impl FnOnce(&[u8]) -> Result<Action, String>,
    ) -> impl FnOnce(&[u8]) -> Result<(Action, Option<String>), String> {
        move |b| parse(b).map(|a| (a, None))
    }

    pub async fn ack<S: Store + Clone + 'static>(
        State(st): State<ApiState<S>>,
        from: ClientAddr,
        headers: HeaderMap,
        Path(id): Path<String>,
        body: Body,
    ) -> Result<Json<Value>, ApiError> {
        act_on(st, from, headers, id, body, parse_ack).await
    }

    pub async fn eta<S: Store + Clone + 'static>(
        State(st): State<ApiState<S>>,
        from: ClientAddr,
        headers: HeaderMap,
        Path(id): Path<String>,
        body: Body,
    ) -> Result<Json<Value>, ApiError> {
        let now = wall_now().to_timestamp();
        act_on(st, from, headers, id, body, plain(|b| parse_eta(b, now))).await
    }

    pub async fn notes<S: Store + Clone + 'static>(
        State(st): State<ApiState<S>>,
        from: ClientAddr,
        headers: HeaderMap,
        Path(id): Path<String>,
        body: Body,
    ) -> Result<Json<Value>, ApiError> {
        act_on(st, from, headers, id, body, plain(parse_note)).await
    }

    pub async fn level<S: Store + Clone + 'static>(
        State(st): State<ApiState<S>>,
        from: ClientAddr,
        headers: HeaderMap,
        Path(id): Path<String>,
        body: Body,
    ) -> Result<Json<Value>, ApiError> {
        act_on(st, from, headers, id, body, plain(parse_level)).await
    }

    pub async fn resolve<S: Store + Clone + 'static>(
        State(st): State<ApiState<S>>,
        from: ClientAddr,
        headers: HeaderMap,
        Path(id): Path<String>,
        body: Body,
    ) -> Result<Json<Value>, ApiError> {
        act_on(st, from, headers, id, body, plain(parse_resolve)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-12-05T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn an_ack_takes_an_empty_body_a_comment_and_a_name() {
        assert_eq!(parse_ack(b"").unwrap(), (Action::Ack { note: None }, None));
        assert_eq!(
            parse_ack(br#"{"by": " anna ", "note": "on my way"}"#).unwrap(),
            (
                Action::Ack {
                    note: Some("on my way".into())
                },
                Some("anna".into())
            )
        );
        assert!(
            parse_ack(br#"{"who": "anna"}"#)
                .unwrap_err()
                .contains("who")
        );
    }

    #[test]
    fn an_eta_is_one_of_three_forms() {
        assert_eq!(
            parse_eta(br#"{"expected": "3h"}"#, now()).unwrap(),
            Action::Eta(Eta::Expected(Duration::from_secs(3 * 3600)))
        );
        assert_eq!(
            parse_eta(br#"{"remaining": "1h 30m"}"#, now()).unwrap(),
            Action::Eta(Eta::Remaining(Duration::from_secs(5400)))
        );
        let Action::Eta(Eta::Until(t)) =
            parse_eta(br#"{"until": "2026-12-05T16:00:00+01:00"}"#, now()).unwrap()
        else {
            panic!("until parses as until");
        };
        assert_eq!(until(now(), t), Duration::from_secs(3 * 3600));
        for (body, says) in [
            (r#"{}"#, "needs one of"),
            (r#"{"expected": "3h", "remaining": "1h"}"#, "not several"),
            (r#"{"expected": "soon"}"#, "not a duration"),
            (r#"{"expected": "500 years"}"#, "longer than 100 years"),
            (
                r#"{"remaining": "18446744073709551615s"}"#,
                "longer than 100 years",
            ),
            (r#"{"until": "tomorrow"}"#, "RFC 3339"),
            (r#"{"until": "2026-12-05T10:00:00Z"}"#, "has passed"),
            (r#"{"until": "2200-01-01T00:00:00Z"}"#, "100 years"),
            (r#"{"expected": 3}"#, "invalid ETA JSON"),
        ] {
            let e = parse_eta(body.as_bytes(), now()).unwrap_err();
            assert!(e.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn until_converts_to_time_from_now() {
        let event = Action::Eta(Eta::Until("2026-12-05T12:30:00Z".parse().unwrap())).event(
            IncidentId(4),
            "anna".into(),
            now(),
        );
        assert_eq!(
            event,
            Event::Eta {
                incident: IncidentId(4),
                expected: Duration::from_secs(1800),
                by: Some("anna".into()),
                from_now: true,
            }
        );
    }

    #[test]
    fn a_note_needs_text_and_a_kind() {
        assert_eq!(
            parse_note(br#"{"text": "Vendor on site", "kind": "decision", "public": true}"#)
                .unwrap(),
            Action::Note {
                text: "Vendor on site".into(),
                decision: true,
                public: true
            }
        );
        assert_eq!(
            parse_note(br#"{"text": "x", "kind": "event"}"#).unwrap(),
            Action::Note {
                text: "x".into(),
                decision: false,
                public: false
            }
        );
        for (body, says) in [
            (r#"{"kind": "event"}"#, "needs a `text`"),
            (r#"{"text": "   ", "kind": "event"}"#, "needs a `text`"),
            (r#"{"text": "x"}"#, "needs a `kind`"),
            (
                r#"{"text": "x", "kind": "rumour"}"#,
                "not one of event, decision",
            ),
        ] {
            let e = parse_note(body.as_bytes()).unwrap_err();
            assert!(e.contains(says), "{body}: {e}");
        }
        let long = format!(
            r#"{{"text": "{}", "kind": "event"}}"#,
            "x".repeat(MAX_TEXT_CHARS + 1)
        );
        assert!(
            parse_note(long.as_bytes())
                .unwrap_err()
                .contains("longer than")
        );
    }

    #[test]
    fn a_level_is_crisis_or_department() {
        assert_eq!(
            parse_level(br#"{"level": "crisis"}"#).unwrap(),
            Action::Level(Level::Crisis)
        );
        assert!(
            parse_level(br#"{"level": "panic"}"#)
                .unwrap_err()
                .contains("not one of crisis, department")
        );
        assert!(parse_level(b"{}").unwrap_err().contains("needs `level`"));
    }

    #[test]
    fn a_resolve_may_carry_a_note() {
        assert_eq!(parse_resolve(b" ").unwrap(), Action::Resolve { note: None });
        assert_eq!(
            parse_resolve(br#"{"note": "power back"}"#).unwrap(),
            Action::Resolve {
                note: Some("power back".into())
            }
        );
    }
}
