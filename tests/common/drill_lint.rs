//! The form of `beredskab drill` output, as SPEC §4 fixes it, checked line
//! by line: each line a JSON object with a number `t` that never goes
//! back (an integer when whole) and a known `type`; each type's fields,
//! no others, with their JSON types (integers where the contract says
//! integers, sorted id lists) and their vocabularies; a notification's
//! reason is a step's `on` text or a fixed reason, and its text carries no
//! ack link; incidents are numbered from 1 in order of opening, each
//! `incident_opened` is followed by its `estimate`, and no line names an
//! incident that was never opened.
//!
//! It checks form, not behaviour: the scenario tests check behaviour.

use serde_json::{Map, Value};

/// The JSON type a field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// A JSON integer.
    Int,
    /// Any JSON number.
    Num,
    Str,
    /// A string or null.
    NullableStr,
    /// A sorted list of ids (strings).
    Ids,
}

/// The fields each type of line has, besides `t` and `type`.
fn fields(kind: &str) -> Option<&'static [(&'static str, Want)]> {
    use Want::*;
    Some(match kind {
        "alarm" => &[
            ("component", Str),
            ("kind", Str),
            ("state", Str),
            ("severity", Str),
            ("source", Str),
        ],
        "rejected" => &[("source", Str), ("reason", Str)],
        "incident_opened" => &[
            ("incident", Int),
            ("root", Str),
            ("services", Ids),
            ("severity", Str),
            ("expected_s", Int),
        ],
        "incident_updated" => &[
            ("incident", Int),
            ("root", Str),
            ("services", Ids),
            ("severity", Str),
        ],
        "incident_merged" => &[("incident", Int), ("into", Int)],
        "estimate" => &[("incident", Int), ("expected_s", Int), ("basis", Str)],
        "notification" => &[
            ("incident", Int),
            ("to", Str),
            ("role", NullableStr),
            ("channel", Str),
            ("reason", Str),
            ("text", Str),
        ],
        "acknowledged" => &[("incident", Int), ("by", Str)],
        "level" => &[
            ("incident", Int),
            ("level", Str),
            ("meeting_place", NullableStr),
        ],
        "incident_resolved" => &[("incident", Int), ("duration_s", Num)],
        _ => return None,
    })
}

/// The values a field may take, where the contract lists them.
fn vocabulary(kind: &str, field: &str) -> Option<&'static [&'static str]> {
    Some(match (kind, field) {
        ("alarm", "state") => &["cleared", "firing"],
        ("alarm", "severity") => &["critical", "warning"],
        ("alarm", "source") => &["http", "manual", "mqtt", "probe"],
        ("rejected", "reason") => &[
            "bad_payload",
            "bad_state",
            "oversized",
            "unknown_component",
            "unknown_incident",
            "unknown_topic",
        ],
        ("incident_opened" | "incident_updated", "severity") => &["critical", "major", "minor"],
        ("estimate", "basis") => &[
            "default",
            "extended",
            "generator",
            "history",
            "kind",
            "manual",
        ],
        ("level", "level") => &["crisis", "department"],
        _ => return None,
    })
}

/// Notification reasons that are not a step's `on` text.
const FIXED_REASONS: &[&str] = &[
    "open",
    "resolved",
    "level crisis",
    "deputy",
    "status",
    "recovery",
    "crisis",
    "severity",
];

/// Whether a reason is the `on` text of a step with a duration:
/// `expected > DUR`, `unacked DUR` or `open DUR` (on one line).
fn is_step_reason(reason: &str) -> bool {
    let reason = reason.strip_suffix('\n').unwrap_or(reason);
    !reason.contains('\n')
        && ["expected > ", "unacked ", "open "].iter().any(|prefix| {
            reason
                .strip_prefix(prefix)
                .and_then(|rest| rest.chars().next())
                .is_some_and(|c| !c.is_whitespace())
        })
}

/// A JSON integer's value. serde_json reads an integer beyond 64 bits as a
/// float, so such a one is refused where an integer is wanted; no drill
/// prints one.
fn integer(v: &Value) -> Option<i128> {
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
}

/// Equality as JSON readers see it: `1` and `1.0` are the same number.
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(x @ Value::Number(_)), Some(y @ Value::Number(_))) => {
            match (integer(x), integer(y)) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (a, b) => a == b,
    }
}

/// How a value is shown in a message; a missing one as `nothing`.
fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "nothing".to_owned(), Value::to_string)
}

/// Every violation of the drill format in `output`, each with its line
/// number (1-based, blank lines counted), in order.
pub fn lint(output: &str) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let mut last_t: Option<f64> = None;
    let mut opened: Vec<Option<Value>> = Vec::new();
    // The incident that must see its estimate before the next opening.
    let mut pending_estimate: Option<Value> = None;
    let mut expected_next: i128 = 1;

    for (n, raw) in output.lines().enumerate() {
        let n = n + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let line: Map<String, Value> = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(line)) => line,
            Ok(_) => {
                errors.push(format!("line {n}: not a JSON object"));
                continue;
            }
            Err(e) => {
                errors.push(format!("line {n}: not JSON ({e})"));
                continue;
            }
        };

        let t = line.get("t");
        match t.and_then(Value::as_f64) {
            Some(t) if t >= 0.0 => {
                if last_t.is_some_and(|last| t < last) {
                    errors.push(format!(
                        "line {n}: time goes backwards ({t} after {})",
                        last_t.unwrap_or_default()
                    ));
                } else {
                    last_t = Some(t);
                }
            }
            _ => errors.push(format!(
                "line {n}: `t` must be a non-negative number, got {}",
                shown(t)
            )),
        }
        if let Some(t) = t.filter(|t| t.is_f64()).and_then(Value::as_f64)
            && t.fract() == 0.0
        {
            errors.push(format!(
                "line {n}: `t` is whole and should be printed as an integer ({t:?})"
            ));
        }

        let kind = line.get("type");
        let Some((kind, spec)) = kind
            .and_then(Value::as_str)
            .and_then(|k| Some((k, fields(k)?)))
        else {
            errors.push(format!("line {n}: unknown type {}", shown(kind)));
            continue;
        };
        for &(field, want) in spec {
            let Some(v) = line.get(field) else {
                errors.push(format!("line {n}: {kind} lacks `{field}`"));
                continue;
            };
            match want {
                Want::Int if integer(v).is_none() => errors.push(format!(
                    "line {n}: {kind}.{field} must be an integer, got {v}"
                )),
                Want::Ids => match v
                    .as_array()
                    .and_then(|items| items.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
                {
                    None => errors.push(format!("line {n}: {kind}.{field} must be a list of ids")),
                    Some(ids) if !ids.is_sorted() => {
                        errors.push(format!("line {n}: {kind}.{field} must be sorted"))
                    }
                    Some(_) => {}
                },
                Want::Num if !v.is_number() => {
                    errors.push(format!("line {n}: {kind}.{field} has the wrong type: {v}"))
                }
                Want::Str if !v.is_string() => {
                    errors.push(format!("line {n}: {kind}.{field} has the wrong type: {v}"))
                }
                Want::NullableStr if !(v.is_string() || v.is_null()) => {
                    errors.push(format!("line {n}: {kind}.{field} has the wrong type: {v}"))
                }
                _ => {}
            }
            if let Some(words) = vocabulary(kind, field)
                && !v.as_str().is_some_and(|s| words.contains(&s))
            {
                errors.push(format!(
                    "line {n}: {kind}.{field} = {v} is not one of {words:?}"
                ));
            }
        }
        let mut extra: Vec<&str> = line
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "t" && *k != "type" && !spec.iter().any(|(f, _)| f == k))
            .collect();
        if !extra.is_empty() {
            extra.sort_unstable();
            errors.push(format!(
                "line {n}: {kind} has fields the contract does not name: {extra:?}"
            ));
        }

        if kind == "notification" {
            let reason = line.get("reason");
            let known = reason
                .and_then(Value::as_str)
                .is_some_and(|r| FIXED_REASONS.contains(&r) || is_step_reason(r));
            if !known {
                errors.push(format!(
                    "line {n}: notification reason {} is neither a step's `on` text nor a fixed reason",
                    shown(reason)
                ));
            }
            if line
                .get("text")
                .and_then(Value::as_str)
                .is_some_and(|text| text.contains("/a/"))
            {
                errors.push(format!("line {n}: drill texts carry no ack link"));
            }
        }

        let incident = line.get("incident");
        if kind == "incident_opened" {
            if let Some(earlier) = pending_estimate.take() {
                errors.push(format!(
                    "line {n}: incident {earlier} was opened without an estimate line"
                ));
            }
            let numbered = incident.is_some_and(|v| match integer(v) {
                Some(i) => i == expected_next,
                None => v.as_f64() == Some(expected_next as f64),
            });
            if !numbered {
                errors.push(format!(
                    "line {n}: incidents are numbered from 1 in order of opening; \
                     expected {expected_next}, got {}",
                    shown(incident)
                ));
            }
            expected_next = incident.and_then(integer).unwrap_or(expected_next) + 1;
            opened.push(incident.cloned());
            pending_estimate = incident.cloned();
        } else if kind == "estimate" && same(incident, pending_estimate.as_ref()) {
            pending_estimate = None;
        } else if spec.iter().any(|(f, _)| *f == "incident")
            && !opened.iter().any(|o| same(o.as_ref(), incident))
        {
            errors.push(format!(
                "line {n}: {kind} names incident {} that was never opened",
                shown(incident)
            ));
        }
    }

    if let Some(incident) = pending_estimate {
        errors.push(format!(
            "end: incident {incident} was opened without an estimate line"
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::lint;

    /// A drill's output that uses every type of line, in the contract's form.
    const GOOD: &str = r#"{"t":0,"type":"alarm","component":"serverrum","kind":"fire","state":"firing","severity":"critical","source":"mqtt"}
{"t":0,"type":"incident_opened","incident":1,"root":"serverrum","services":["mail","omsorg","web"],"severity":"critical","expected_s":86400}
{"t":0,"type":"estimate","incident":1,"expected_s":86400,"basis":"kind"}
{"t":0,"type":"notification","incident":1,"to":"p-drift","role":"drift-leder","channel":"sms","reason":"open","text":"Brand i serverrum"}
{"t":0,"type":"notification","incident":1,"to":"p-itchef","role":null,"channel":"mail","reason":"expected > 30m","text":"Brand"}
{"t":0.5,"type":"rejected","source":"mqtt","reason":"bad_payload"}

{"t":60,"type":"alarm","component":"net-core","kind":"network","state":"firing","severity":"critical","source":"probe"}
{"t":60,"type":"incident_opened","incident":2,"root":"net-core","services":[],"severity":"minor","expected_s":1200}
{"t":60,"type":"estimate","incident":2,"expected_s":1200,"basis":"default"}
{"t":70,"type":"incident_updated","incident":2,"root":"net-core","services":["web"],"severity":"major"}
{"t":80,"type":"incident_merged","incident":2,"into":1}
{"t":90,"type":"acknowledged","incident":1,"by":"p-drift"}
{"t":100,"type":"level","incident":1,"level":"crisis","meeting_place":"C335"}
{"t":600,"type":"notification","incident":1,"to":"p-afdleder","role":"it-chef","channel":"sms","reason":"deputy","text":"x"}
{"t":700,"type":"notification","incident":1,"to":"p-x","role":null,"channel":"sms","reason":"unacked 15m","text":"x"}
{"t":7200,"type":"incident_resolved","incident":1,"duration_s":7200.25}
"#;

    fn errors(output: &str) -> Vec<String> {
        lint(output).err().unwrap_or_default()
    }

    /// GOOD with its line `n` (1-based) replaced.
    fn with_line(n: usize, line: &str) -> String {
        let mut lines: Vec<&str> = GOOD.lines().collect();
        lines[n - 1] = line;
        lines.join("\n")
    }

    #[test]
    fn a_well_formed_drill_passes() {
        assert_eq!(lint(GOOD), Ok(()));
        assert_eq!(lint(""), Ok(()));
    }

    #[test]
    fn a_missing_field_is_named() {
        let output = with_line(
            3,
            r#"{"t":0,"type":"estimate","incident":1,"expected_s":86400}"#,
        );
        assert_eq!(errors(&output), ["line 3: estimate lacks `basis`"]);
    }

    #[test]
    fn time_may_not_go_backwards() {
        let output = with_line(
            13,
            r#"{"t":50,"type":"acknowledged","incident":1,"by":"p-drift"}"#,
        );
        assert_eq!(
            errors(&output),
            ["line 13: time goes backwards (50 after 80)"]
        );
    }

    #[test]
    fn an_unknown_type_or_a_line_that_is_no_object_is_refused() {
        let output = with_line(13, r#"{"t":90,"type":"acknowledgement","incident":1}"#);
        assert_eq!(
            errors(&output),
            ["line 13: unknown type \"acknowledgement\""]
        );
        let output = with_line(13, r#"{"t":90}"#);
        assert_eq!(errors(&output), ["line 13: unknown type nothing"]);
        assert_eq!(errors("[1]\n"), ["line 1: not a JSON object"]);
        assert!(errors("{\"t\":0,\n")[0].starts_with("line 1: not JSON"));
    }

    #[test]
    fn t_is_a_non_negative_number_printed_as_an_integer_when_whole() {
        let line = |t: &str| {
            format!(r#"{{"t":{t},"type":"rejected","source":"mqtt","reason":"oversized"}}"#)
        };
        assert_eq!(
            errors(&line("-1")),
            ["line 1: `t` must be a non-negative number, got -1"]
        );
        assert_eq!(
            errors(&line("\"0\"")),
            ["line 1: `t` must be a non-negative number, got \"0\""]
        );
        assert_eq!(
            errors(&line("60.0")),
            ["line 1: `t` is whole and should be printed as an integer (60.0)"]
        );
        assert_eq!(lint(&line("60.5")), Ok(()));
    }

    #[test]
    fn fields_have_their_json_types_and_no_others() {
        let output = with_line(
            2,
            r#"{"t":0,"type":"incident_opened","incident":1.5,"root":"serverrum","services":["web","mail"],"severity":"critical","expected_s":"1d","why":1}"#,
        );
        assert_eq!(
            errors(&output),
            [
                "line 2: incident_opened.incident must be an integer, got 1.5",
                "line 2: incident_opened.services must be sorted",
                "line 2: incident_opened.expected_s must be an integer, got \"1d\"",
                "line 2: incident_opened has fields the contract does not name: [\"why\"]",
                "line 2: incidents are numbered from 1 in order of opening; expected 1, got 1.5",
                "line 3: estimate names incident 1 that was never opened",
                "line 4: notification names incident 1 that was never opened",
                "line 5: notification names incident 1 that was never opened",
                "line 9: incident 1.5 was opened without an estimate line",
                "line 13: acknowledged names incident 1 that was never opened",
                "line 14: level names incident 1 that was never opened",
                "line 15: notification names incident 1 that was never opened",
                "line 16: notification names incident 1 that was never opened",
                "line 17: incident_resolved names incident 1 that was never opened",
            ]
        );
        let output = with_line(13, r#"{"t":90,"type":"acknowledged","incident":1,"by":7}"#);
        assert_eq!(
            errors(&output),
            ["line 13: acknowledged.by has the wrong type: 7"]
        );
    }

    #[test]
    fn vocabularies_are_closed() {
        let output = with_line(
            1,
            r#"{"t":0,"type":"alarm","component":"serverrum","kind":"fire","state":"burning","severity":"critical","source":"mqtt"}"#,
        );
        assert_eq!(
            errors(&output),
            ["line 1: alarm.state = \"burning\" is not one of [\"cleared\", \"firing\"]"]
        );
    }

    #[test]
    fn a_reason_is_a_step_condition_or_a_fixed_reason_and_a_text_has_no_link() {
        let told = |reason: &str, text: &str| {
            with_line(
                4,
                &format!(
                    r#"{{"t":0,"type":"notification","incident":1,"to":"p","role":null,"channel":"sms","reason":"{reason}","text":"{text}"}}"#
                ),
            )
        };
        for good in [
            "open 2h",
            "unacked 15m",
            "expected > 1h 30m",
            "level crisis",
        ] {
            assert_eq!(lint(&told(good, "x")), Ok(()), "{good}");
        }
        for bad in ["escalated", "open ", "unacked", "expected >  1h"] {
            assert_eq!(
                errors(&told(bad, "x")),
                [format!(
                    "line 4: notification reason \"{bad}\" is neither a step's `on` text \
                     nor a fixed reason"
                )]
            );
        }
        assert_eq!(
            errors(&told("open", "Kvitter: https://b.example/a/abc")),
            ["line 4: drill texts carry no ack link"]
        );
    }

    #[test]
    fn incidents_are_numbered_in_order_and_each_opening_has_its_estimate() {
        let output = with_line(
            9,
            r#"{"t":60,"type":"incident_opened","incident":3,"root":"net-core","services":[],"severity":"minor","expected_s":1200}"#,
        );
        assert_eq!(
            errors(&output),
            [
                "line 9: incidents are numbered from 1 in order of opening; expected 2, got 3",
                "line 10: estimate names incident 2 that was never opened",
                "line 11: incident_updated names incident 2 that was never opened",
                "line 12: incident_merged names incident 2 that was never opened",
                "end: incident 3 was opened without an estimate line",
            ]
        );
        let output = with_line(3, r#"{"t":0,"type":"acknowledged","incident":1,"by":"p"}"#);
        assert_eq!(
            errors(&output),
            ["line 9: incident 1 was opened without an estimate line"]
        );
    }
}
