//! Push ingest (SPEC §5): alarms, Alertmanager webhooks and reports.
//!
//! Parsing is pure (and fuzzed): a body becomes engine inputs or a
//! [`BadInput`] with a reason code and a message that says what was wrong.
//! The handlers hand inputs to the core and answer 202 only once the core
//! has committed them; bad input is answered 400 and kept as rejected.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::config::AlarmKind;
use crate::engine::intake::json_state;
use crate::engine::{AlarmInput, AlarmSeverity, AlarmState, RejectReason, Source};

/// The longest `message` kept from a pushed alarm or report.
const MAX_MESSAGE_CHARS: usize = 1000;

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadInput {
    pub reason: RejectReason,
    pub detail: String,
}

impl BadInput {
    fn payload(detail: impl Into<String>) -> BadInput {
        BadInput {
            reason: RejectReason::BadPayload,
            detail: detail.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmBody {
    component: String,
    kind: String,
    state: Value,
    severity: Option<String>,
    message: Option<String>,
    key: Option<Value>,
}

/// `POST /api/v1/alarms`: `{"component","kind","state","severity"?,"message"?,"key"?}`.
/// `state` is `firing` or `cleared`, or any state of an MQTT payload's
/// JSON (SPEC §6, `engine::intake::json_state`).
pub fn parse_alarm(body: &[u8]) -> Result<AlarmInput, BadInput> {
    let b: AlarmBody = serde_json::from_slice(body)
        .map_err(|e| BadInput::payload(format!("invalid alarm JSON: {e}")))?;
    let kind = parse_kind(&b.kind)?;
    let state = parse_state(&b.state)?;
    let severity = match b.severity.as_deref() {
        None => AlarmSeverity::Critical,
        Some(s) => AlarmSeverity::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
            BadInput::payload(format!("severity {s:?} is not one of warning, critical"))
        })?,
    };
    if b.component.trim().is_empty() {
        return Err(BadInput::payload("component is empty"));
    }
    Ok(AlarmInput {
        component: b.component,
        kind,
        state,
        severity,
        source: Source::Http,
        message: b.message.map(clip),
        key: b.key.map(|k| match k {
            Value::String(s) => s,
            other => other.to_string(),
        }),
    })
}

fn parse_kind(kind: &str) -> Result<AlarmKind, BadInput> {
    AlarmKind::parse(&kind.to_ascii_lowercase()).ok_or_else(|| {
        let all: Vec<&str> = AlarmKind::ALL.iter().map(|k| k.as_str()).collect();
        BadInput::payload(format!("kind {kind:?} is not one of {}", all.join(", ")))
    })
}

fn parse_state(state: &Value) -> Result<AlarmState, BadInput> {
    json_state(state).ok_or_else(|| BadInput {
        reason: RejectReason::BadState,
        detail: format!("state {state} is not firing or cleared"),
    })
}

fn clip(s: String) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => s[..i].to_owned(),
        None => s,
    }
}

#[derive(Deserialize)]
struct AlertmanagerBody {
    alerts: Vec<Value>,
}

/// `POST /api/v1/alertmanager`: one input per alert, or why that alert
/// cannot be used. Labels `component` and `kind` map an alert (`kind`
/// defaults to `generic`), `status` firing/resolved is its state, the
/// fingerprint its key, `labels.severity` warning or else critical, and
/// `annotations.summary` (or `description`) its message.
pub fn parse_alertmanager(body: &[u8]) -> Result<Vec<Result<AlarmInput, BadInput>>, BadInput> {
    let b: AlertmanagerBody = serde_json::from_slice(body)
        .map_err(|e| BadInput::payload(format!("invalid Alertmanager JSON: {e}")))?;
    Ok(b.alerts.iter().map(alert).collect())
}

fn alert(a: &Value) -> Result<AlarmInput, BadInput> {
    let label = |name: &str| {
        a.pointer(&format!("/labels/{name}"))
            .and_then(Value::as_str)
    };
    let component = label("component")
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| BadInput::payload("alert without a `component` label"))?;
    let kind = match label("kind") {
        Some(k) => parse_kind(k)?,
        None => AlarmKind::Generic,
    };
    let state = match a.get("status").and_then(Value::as_str) {
        Some("firing") => AlarmState::Firing,
        Some("resolved") => AlarmState::Cleared,
        other => {
            return Err(BadInput {
                reason: RejectReason::BadState,
                detail: format!("alert status {other:?} is not firing or resolved"),
            });
        }
    };
    let severity = match label("severity") {
        Some(s) if s.eq_ignore_ascii_case("warning") => AlarmSeverity::Warning,
        _ => AlarmSeverity::Critical,
    };
    let message = ["summary", "description"]
        .iter()
        .find_map(|k| {
            a.pointer(&format!("/annotations/{k}"))
                .and_then(Value::as_str)
        })
        .map(|m| clip(m.to_owned()));
    let key = a
        .get("fingerprint")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| label("alertname").map(|n| format!("alertname:{n}")));
    Ok(AlarmInput {
        component: component.to_owned(),
        kind,
        state,
        severity,
        source: Source::Http,
        message,
        key,
    })
}

/// Who a report comes from (SPEC §5 `source_type`).
pub const SOURCE_TYPES: [&str; 7] = [
    "user",
    "superuser",
    "vendor",
    "cert",
    "dpo",
    "police",
    "utility",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    service: Option<String>,
    component: Option<String>,
    source_type: String,
    message: String,
    expected: Option<String>,
}

/// A parsed report: the alarm is completed by the caller, which knows the
/// target's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// A service or component id.
    pub target: String,
    pub source_type: &'static str,
    pub message: String,
    /// How long it is expected to last, from now.
    pub expected: Option<Duration>,
}

/// `POST /api/v1/reports`.
pub fn parse_report(body: &[u8]) -> Result<Report, BadInput> {
    let b: ReportBody = serde_json::from_slice(body)
        .map_err(|e| BadInput::payload(format!("invalid report JSON: {e}")))?;
    let target = match (b.service, b.component) {
        (Some(s), None) | (None, Some(s)) if !s.trim().is_empty() => s,
        (Some(_), Some(_)) => {
            return Err(BadInput::payload(
                "a report names a service or a component, not both",
            ));
        }
        _ => return Err(BadInput::payload("a report needs `service` or `component`")),
    };
    let source_type = SOURCE_TYPES
        .iter()
        .find(|t| **t == b.source_type)
        .ok_or_else(|| {
            BadInput::payload(format!(
                "source_type {:?} is not one of {}",
                b.source_type,
                SOURCE_TYPES.join(", ")
            ))
        })?;
    let expected = match b.expected {
        None => None,
        Some(e) => {
            let d = humantime::parse_duration(&e).map_err(|err| {
                BadInput::payload(format!(
                    "expected {e:?} is not a duration like \"2h\": {err}"
                ))
            })?;
            // Humantime takes `18446744073709551615s`; the engine adds it
            // to times.
            if !crate::config::duration_in_bounds(d) {
                return Err(BadInput::payload(format!(
                    "expected {e:?} is longer than 100 years"
                )));
            }
            Some(d)
        }
    };
    if b.message.trim().is_empty() {
        return Err(BadInput::payload("message is empty"));
    }
    Ok(Report {
        target,
        source_type,
        message: clip(b.message),
        expected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarms_parse_with_defaults_and_reasons() {
        let a =
            parse_alarm(br#"{"component":"srv-web","kind":"server","state":"firing"}"#).unwrap();
        assert_eq!(a.state, AlarmState::Firing);
        assert_eq!(a.severity, AlarmSeverity::Critical);
        assert_eq!(a.source, Source::Http);
        let a = parse_alarm(
            br#"{"component":"x","kind":"fire","state":"cleared","severity":"warning","key":7}"#,
        )
        .unwrap();
        assert_eq!(
            (a.state, a.severity, a.key.as_deref()),
            (AlarmState::Cleared, AlarmSeverity::Warning, Some("7"))
        );
        let err = |b: &[u8]| parse_alarm(b).unwrap_err();
        assert_eq!(
            err(br#"{"component":"x","kind":"fire","state":"smoke"}"#).reason,
            RejectReason::BadState
        );
        let e = err(br#"{"component":"x","kind":"flood","state":"firing"}"#);
        assert!(
            e.detail.contains("flood") && e.detail.contains("fire"),
            "{e:?}"
        );
        let e = err(br#"{"component":"x","kind":"fire","state":"firing","sevrity":"x"}"#);
        assert!(e.detail.contains("sevrity"), "{e:?}");
        assert_eq!(err(b"not json").reason, RejectReason::BadPayload);
        assert!(
            err(br#"{"kind":"fire","state":"firing"}"#)
                .detail
                .contains("component")
        );
    }

    #[test]
    fn alertmanager_alerts_map_by_label() {
        let body = br#"{"version":"4","status":"firing","alerts":[
          {"status":"firing","labels":{"component":"srv-web","kind":"server","alertname":"Down","severity":"warning"},
           "annotations":{"summary":"web down"},"fingerprint":"abc"},
          {"status":"resolved","labels":{"component":"srv-mail"},"fingerprint":"def"},
          {"status":"firing","labels":{"alertname":"NoComponent"}}
        ]}"#;
        let alerts = parse_alertmanager(body).unwrap();
        assert_eq!(alerts.len(), 3);
        let a = alerts[0].as_ref().unwrap();
        assert_eq!(
            (a.component.as_str(), a.kind, a.state, a.severity),
            (
                "srv-web",
                AlarmKind::Server,
                AlarmState::Firing,
                AlarmSeverity::Warning
            )
        );
        assert_eq!(a.key.as_deref(), Some("abc"));
        assert_eq!(a.message.as_deref(), Some("web down"));
        let b = alerts[1].as_ref().unwrap();
        assert_eq!((b.kind, b.state), (AlarmKind::Generic, AlarmState::Cleared));
        assert!(alerts[2].is_err());
        assert!(parse_alertmanager(b"{}").is_err());
    }

    #[test]
    fn reports_need_a_target_a_known_source_and_a_duration() {
        let r = parse_report(
            br#"{"service":"nexus","source_type":"vendor","message":"db down","expected":"3h"}"#,
        )
        .unwrap();
        assert_eq!(r.target, "nexus");
        assert_eq!(r.expected, Some(Duration::from_secs(3 * 3600)));
        for bad in [
            &br#"{"source_type":"vendor","message":"m"}"#[..],
            br#"{"service":"a","component":"b","source_type":"vendor","message":"m"}"#,
            br#"{"service":"a","source_type":"neighbour","message":"m"}"#,
            br#"{"service":"a","source_type":"user","message":"m","expected":"soon"}"#,
            br#"{"service":"a","source_type":"user","message":" "}"#,
        ] {
            assert!(
                parse_report(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_report_expected_longer_than_100_years_is_bad_payload() {
        let bad = parse_report(
            br#"{"service":"nexus","source_type":"vendor","message":"m","expected":"18446744073709551615s"}"#,
        )
        .unwrap_err();
        assert_eq!(bad.reason, RejectReason::BadPayload);
        assert_eq!(
            bad.detail,
            r#"expected "18446744073709551615s" is longer than 100 years"#
        );
        assert!(
            parse_report(
                br#"{"service":"nexus","source_type":"vendor","message":"m","expected":"101years"}"#
            )
            .is_err()
        );
        let r = parse_report(
            br#"{"service":"nexus","source_type":"vendor","message":"m","expected":"99years"}"#,
        )
        .unwrap();
        assert!(r.expected.is_some_and(crate::config::duration_in_bounds));
    }
}
