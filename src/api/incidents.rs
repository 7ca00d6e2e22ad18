//! Incidents as JSON (SPEC §5), read from the store's projection.

use serde_json::{Value, json};

use crate::engine::{IncidentState, TimelineEntry, Ts};
use crate::store::{DeliveryRow, IncidentFilter, IncidentRow};

/// The default and largest page of `GET /api/v1/incidents`.
pub const DEFAULT_LIMIT: u32 = 500;
pub const MAX_LIMIT: u32 = 100_000;

/// `state=` of a listing.
pub fn parse_filter(state: Option<&str>) -> Result<IncidentFilter, String> {
    match state.unwrap_or("open") {
        "open" => Ok(IncidentFilter::Open),
        "resolved" => Ok(IncidentFilter::Resolved),
        "all" => Ok(IncidentFilter::All),
        other => Err(format!("state {other:?} is not one of open, resolved, all")),
    }
}

fn time(t: Ts) -> Value {
    json!(t.to_timestamp().to_string())
}

fn time_opt(t: Option<Ts>) -> Value {
    t.map_or(Value::Null, time)
}

/// An incident without its timeline.
pub fn incident_json(r: &IncidentRow) -> Value {
    let mut v = json!({
        "id": r.id,
        "state": r.state.as_str(),
        "severity": r.severity.as_str(),
        "level": r.level.as_str(),
        "root": r.root,
        "services": r.services,
        "opened_at": time(r.opened_at),
        "acknowledged_at": time_opt(r.acknowledged_at),
        "acknowledged_by": r.acknowledged_by,
        "expected_end": time(r.expected_end),
        "expected_s": r.expected_s,
        "expected_basis": r.expected_basis.as_str(),
        "resolved_at": time_opt(r.resolved_at),
        "resolved_by": r.resolved_by,
        "fuel_out_at": time_opt(r.fuel_out),
        "meeting_place": r.meeting_place,
    });
    if let IncidentState::Merged(into) = r.state {
        v["merged_into"] = json!(into);
    }
    v
}

/// An incident with its timeline: the engine's events and decisions, and
/// every delivery attempt of its notifications, in time order.
pub fn detail_json(
    r: &IncidentRow,
    timeline: &[TimelineEntry],
    deliveries: &[DeliveryRow],
) -> Value {
    let mut entries: Vec<(Ts, Value)> = timeline
        .iter()
        .map(|e| {
            let mut v = json!({
                "at": time(e.at),
                "type": e.kind,
                "text": e.text,
                "by": e.by,
            });
            if e.public {
                v["public"] = json!(true);
            }
            (e.at, v)
        })
        .collect();
    entries.extend(deliveries.iter().map(|d| {
        (
            d.at,
            json!({
                "at": time(d.at),
                "type": "delivery",
                "text": format!("{}: {} by {}: {}", d.outcome, d.person, d.channel, d.detail),
                "by": null,
                "outcome": d.outcome,
                "channel": d.channel,
                "to": d.person,
                "key": d.key,
            }),
        )
    }));
    // Stable: at the same instant the decision comes before its delivery.
    entries.sort_by_key(|(at, _)| *at);
    let mut v = incident_json(r);
    v["timeline"] = entries.into_iter().map(|(_, e)| e).collect();
    v
}
