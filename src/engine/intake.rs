//! Turning raw observations into alarms: MQTT topics and payloads (SPEC §6)
//! and probe results. Pure functions, shared by the daemon's collectors and
//! by `drill`, so both reject the same input for the same reason. The state
//! words are the same for the HTTP push API (`api::ingest`).

use serde_json::Value;

use super::{AlarmSeverity, AlarmState, RejectReason};
use crate::catalogue::{Catalogue, Subscription};
use crate::config::{CheckOutcome, ProbeConfig, ProbeKind};

/// What a payload says, before it is tied to a component.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedPayload {
    pub state: AlarmState,
    pub severity: Option<AlarmSeverity>,
    pub message: Option<String>,
    pub key: Option<String>,
}

/// The longest alarm message kept, in characters, whatever brought it.
pub const MAX_MESSAGE_CHARS: usize = 1000;
/// The longest alarm key kept as it is, in characters; a longer one keeps
/// its start and a hash of the whole, so two long keys stay two alarms.
pub const MAX_KEY_CHARS: usize = 200;

/// An alarm message, clipped to [`MAX_MESSAGE_CHARS`].
pub fn clip_message(s: String) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => s[..i].to_owned(),
        None => s,
    }
}

/// An alarm key of at most [`MAX_KEY_CHARS`] characters that still tells
/// long keys apart.
pub fn clip_key(s: String) -> String {
    use sha2::{Digest, Sha256};
    if s.chars().nth(MAX_KEY_CHARS).is_none() {
        return s;
    }
    let hash = hex::encode(&Sha256::digest(s.as_bytes())[..8]);
    let head = truncate(&s, MAX_KEY_CHARS - hash.len() - 1);
    format!("{head}~{hash}")
}

/// The words for a firing alarm (SPEC §6), in lower case; compared
/// case-insensitively.
pub const FIRING_WORDS: [&str; 5] = ["alarm", "firing", "on", "true", "1"];
/// The words for a cleared alarm, in lower case.
pub const CLEARED_WORDS: [&str; 6] = ["ok", "clear", "cleared", "off", "false", "0"];

/// A state word, case-insensitively.
pub fn state_word(word: &str) -> Option<AlarmState> {
    let w = word.to_ascii_lowercase();
    if FIRING_WORDS.contains(&w.as_str()) {
        Some(AlarmState::Firing)
    } else if CLEARED_WORDS.contains(&w.as_str()) {
        Some(AlarmState::Cleared)
    } else {
        None
    }
}

/// The `state` of a JSON body, MQTT or HTTP: a state word (surrounding
/// blanks ignored), a JSON boolean, or the number 1 or 0.
pub fn json_state(state: &Value) -> Option<AlarmState> {
    match state {
        Value::String(s) => state_word(s.trim()),
        Value::Bool(true) => Some(AlarmState::Firing),
        Value::Bool(false) => Some(AlarmState::Cleared),
        Value::Number(n) => match n.as_f64() {
            Some(1.0) => Some(AlarmState::Firing),
            Some(0.0) => Some(AlarmState::Cleared),
            _ => None,
        },
        _ => None,
    }
}

/// Parses an MQTT payload: a JSON object when its first non-blank byte is
/// `{`, else one trimmed word.
pub fn parse_payload(payload: &[u8]) -> Result<ParsedPayload, (RejectReason, String)> {
    let Ok(text) = std::str::from_utf8(payload) else {
        return Err((RejectReason::BadPayload, "payload is not UTF-8".into()));
    };
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let value: Value = serde_json::from_str(trimmed)
            .map_err(|e| (RejectReason::BadPayload, format!("invalid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err((RejectReason::BadPayload, "not a JSON object".into()));
        };
        let state = match obj.get("state") {
            None => {
                return Err((
                    RejectReason::BadPayload,
                    "JSON object without `state`".into(),
                ));
            }
            Some(state) => json_state(state),
        };
        let Some(state) = state else {
            return Err((
                RejectReason::BadState,
                format!(
                    "`state` {} is not a known state",
                    truncate(&obj["state"].to_string(), 40)
                ),
            ));
        };
        // An unknown severity is taken as critical rather than dropped: a
        // fire alarm must not be lost over a word.
        let severity = obj.get("severity").and_then(Value::as_str).map(|s| {
            if s.eq_ignore_ascii_case("warning") {
                AlarmSeverity::Warning
            } else {
                AlarmSeverity::Critical
            }
        });
        let text_of = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        Ok(ParsedPayload {
            state,
            severity,
            message: obj.get("message").and_then(text_of).map(clip_message),
            key: obj.get("key").and_then(text_of).map(clip_key),
        })
    } else {
        if trimmed.is_empty() || trimmed.contains(char::is_whitespace) {
            return Err((
                RejectReason::BadPayload,
                "text payload is not one word".into(),
            ));
        }
        let state = state_word(trimmed).ok_or_else(|| {
            (
                RejectReason::BadState,
                format!("{:?} is not a known state", truncate(trimmed, 40)),
            )
        })?;
        Ok(ParsedPayload {
            state,
            severity: None,
            message: None,
            key: None,
        })
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Matches a topic against a subscription filter; on a match returns the
/// segments the wildcards stood for (`#` takes the rest, joined by `/`).
pub fn match_topic(filter: &[String], topic: &str) -> Option<Vec<String>> {
    let parts: Vec<&str> = topic.split('/').collect();
    let mut caught = Vec::new();
    for (i, f) in filter.iter().enumerate() {
        match f.as_str() {
            "#" => {
                caught.push(parts.get(i..).map(|p| p.join("/")).unwrap_or_default());
                return Some(caught);
            }
            "+" => caught.push((*parts.get(i)?).to_owned()),
            lit => {
                if *parts.get(i)? != lit {
                    return None;
                }
            }
        }
    }
    (parts.len() == filter.len()).then_some(caught)
}

/// Fills `{N}` (1-based) in a component template with wildcard segments.
pub fn expand_template(template: &str, caught: &[String]) -> Option<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let n: usize = rest[open + 1..close].parse().ok()?;
        out.push_str(caught.get(n.checked_sub(1)?)?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The first subscription matching `topic`, with its component id.
pub fn route<'c>(cat: &'c Catalogue, topic: &str) -> Option<(usize, &'c Subscription, String)> {
    cat.subscriptions.iter().enumerate().find_map(|(i, s)| {
        let caught = match_topic(&s.filter, topic)?;
        let component = expand_template(&s.config.component, &caught)?;
        Some((i, s, component))
    })
}

/// One probe request's result, as the collector saw it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeResult {
    /// The HTTP status, if a response came.
    pub status: Option<u16>,
    /// The response body, if any was read.
    pub body: Option<Vec<u8>>,
    /// Why no usable response came (timeout, refused, …).
    pub error: Option<String>,
    /// icmp and tcp: the round trip (the mean of the echoes answered, or
    /// the connect), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// tls: seconds until the certificate expires, negative once expired;
    /// set also when the handshake failed over the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<i64>,
}

impl ProbeResult {
    /// A check of a non-HTTP kind that answered.
    pub fn answered() -> ProbeResult {
        ProbeResult::default()
    }

    /// A check that got no usable answer, and why.
    pub fn failed(error: impl Into<String>) -> ProbeResult {
        ProbeResult {
            error: Some(error.into()),
            ..ProbeResult::default()
        }
    }
}

/// How one probe result counts.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeClass {
    Ok,
    Degraded(String),
    Failed(String),
}

/// A generator's status read from a probe body.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GeneratorReading {
    pub running: Option<bool>,
    pub fuel_percent: Option<f64>,
}

/// Classifies a probe result against the probe's expectations and checks,
/// and reads the generator section if there is one.
pub fn classify(probe: &ProbeConfig, r: &ProbeResult) -> (ProbeClass, Option<GeneratorReading>) {
    if let Some(e) = &r.error {
        return (ProbeClass::Failed(e.clone()), None);
    }
    if probe.kind != ProbeKind::Http {
        return (classify_network(probe, r), None);
    }
    let Some(status) = r.status else {
        return (ProbeClass::Failed("no response".into()), None);
    };
    let status_ok = if probe.expect_status.is_empty() {
        (200..300).contains(&status)
    } else {
        probe.expect_status.contains(&status)
    };
    if !status_ok {
        return (ProbeClass::Failed(format!("status {status}")), None);
    }
    let needs_body = probe.generator.is_some() || !probe.checks.is_empty();
    let Some(body) = r.body.as_deref().filter(|b| needs_body && !b.is_empty()) else {
        return (ProbeClass::Ok, None);
    };
    let json: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return (ProbeClass::Failed(format!("invalid JSON: {e}")), None),
    };
    let reading = probe.generator.as_ref().map(|g| GeneratorReading {
        running: json.pointer(&g.running).and_then(json_bool),
        fuel_percent: json.pointer(&g.fuel_percent).and_then(Value::as_f64),
    });
    let mut class = ProbeClass::Ok;
    for check in &probe.checks {
        let value = json.pointer(&check.pointer);
        let holds = match value {
            None => true,
            Some(v) => {
                let n = v.as_f64();
                check.below.is_some_and(|b| n.is_some_and(|n| n < b))
                    || check.above.is_some_and(|a| n.is_some_and(|n| n > a))
                    || check.equals.as_ref().is_some_and(|e| json_equals(v, e))
            }
        };
        if !holds {
            continue;
        }
        let why = match value {
            None => format!("{} missing", check.pointer),
            Some(v) => format!("{} = {v}", check.pointer),
        };
        match check.then {
            CheckOutcome::Down => return (ProbeClass::Failed(why), reading),
            CheckOutcome::Degraded => {
                if class == ProbeClass::Ok {
                    class = ProbeClass::Degraded(why);
                }
            }
        }
    }
    (class, reading)
}

/// An icmp, tcp, dns or tls check that answered: degraded by a slow round
/// trip (`max_rtt`) or a certificate expiring within `warn_before`, failed
/// by an expired one.
fn classify_network(probe: &ProbeConfig, r: &ProbeResult) -> ProbeClass {
    if let Some(left) = r.expires_in_s {
        if left <= 0 {
            return ProbeClass::Failed(format!(
                "certificate expired {} ago",
                human_seconds(left.unsigned_abs())
            ));
        }
        if u64::try_from(left).is_ok_and(|left| left < probe.warn_before().as_secs()) {
            return ProbeClass::Degraded(format!(
                "certificate expires in {}",
                human_seconds(left.unsigned_abs())
            ));
        }
    }
    if let (Some(rtt), Some(max)) = (r.rtt_ms, probe.max_rtt)
        && rtt > max.as_secs_f64() * 1000.0
    {
        return ProbeClass::Degraded(format!(
            "round trip {} over max_rtt {}",
            human_ms(rtt),
            humantime::format_duration(max)
        ));
    }
    ProbeClass::Ok
}

/// `3d 4h`, `12m`, `40s`: the two largest units.
fn human_seconds(s: u64) -> String {
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let mut parts = Vec::new();
    let mut rest = s;
    for (size, unit) in units {
        if rest >= size && parts.len() < 2 {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        } else if !parts.is_empty() {
            break;
        }
    }
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

/// `12.3ms`, `250ms`.
fn human_ms(ms: f64) -> String {
    if ms < 100.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

fn json_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|n| n != 0.0),
        Value::String(s) => state_word(s).map(|s| s == AlarmState::Firing),
        _ => None,
    }
}

fn json_equals(v: &Value, expected: &toml::Value) -> bool {
    match expected {
        toml::Value::String(s) => v.as_str() == Some(s),
        toml::Value::Integer(i) => v.as_f64() == Some(*i as f64),
        toml::Value::Float(f) => v.as_f64() == Some(*f),
        toml::Value::Boolean(b) => v.as_bool() == Some(*b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(kind: ProbeKind) -> ProbeConfig {
        ProbeConfig {
            kind,
            max_rtt: Some(std::time::Duration::from_millis(200)),
            warn_before: Some(std::time::Duration::from_secs(14 * 86_400)),
            ..ProbeConfig::default()
        }
    }

    #[test]
    fn network_checks_are_degraded_by_a_slow_answer_or_a_certificate_near_expiry() {
        let class = |kind, r: ProbeResult| classify(&network(kind), &r).0;
        let rtt = |ms| ProbeResult {
            rtt_ms: Some(ms),
            ..ProbeResult::default()
        };
        let expiry = |s| ProbeResult {
            expires_in_s: Some(s),
            ..ProbeResult::default()
        };
        // No HTTP status is needed.
        assert_eq!(
            class(ProbeKind::Dns, ProbeResult::answered()),
            ProbeClass::Ok
        );
        assert_eq!(class(ProbeKind::Icmp, rtt(12.0)), ProbeClass::Ok);
        assert_eq!(
            class(ProbeKind::Tcp, rtt(250.0)),
            ProbeClass::Degraded("round trip 250ms over max_rtt 200ms".into())
        );
        assert_eq!(
            class(ProbeKind::Icmp, ProbeResult::failed("all 3 echoes lost")),
            ProbeClass::Failed("all 3 echoes lost".into())
        );
        assert_eq!(class(ProbeKind::Tls, expiry(365 * 86_400)), ProbeClass::Ok);
        assert_eq!(
            class(ProbeKind::Tls, expiry(3 * 86_400 + 3600)),
            ProbeClass::Degraded("certificate expires in 3d 1h".into())
        );
        assert_eq!(
            class(ProbeKind::Tls, expiry(-86_400)),
            ProbeClass::Failed("certificate expired 1d ago".into())
        );
        assert_eq!(
            class(ProbeKind::Tls, expiry(0)),
            ProbeClass::Failed("certificate expired 0s ago".into())
        );
    }

    #[test]
    fn long_messages_and_keys_are_clipped_and_long_keys_stay_apart() {
        let long = "x".repeat(100_000);
        let p = parse_payload(
            format!(r#"{{"state":"alarm","message":"{long}","key":"{long}a"}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(p.message.unwrap().chars().count(), MAX_MESSAGE_CHARS);
        let a = p.key.unwrap();
        assert_eq!(a.chars().count(), MAX_KEY_CHARS);
        let b = clip_key(format!("{long}b"));
        assert_ne!(a, b, "two long keys are two alarms");
        assert_eq!(clip_key("short".into()), "short");
        assert_eq!(
            clip_key("å".repeat(MAX_KEY_CHARS)),
            "å".repeat(MAX_KEY_CHARS)
        );
        let err = parse_payload(format!(r#"{{"state":"{long}"}}"#).as_bytes()).unwrap_err();
        assert!(err.1.len() < 200, "the detail stays short: {}", err.1.len());
    }

    fn state(p: &str) -> Result<AlarmState, RejectReason> {
        parse_payload(p.as_bytes())
            .map(|p| p.state)
            .map_err(|e| e.0)
    }

    #[test]
    fn json_states_follow_spec_section_6() {
        for firing in [
            r#"{"state":"alarm"}"#,
            r#"{"state":"FIRING"}"#,
            r#"{"state":"On"}"#,
            r#"{"state":true}"#,
            r#"{"state":1}"#,
            r#"  {"state":"1","extra":[1,2]}"#,
        ] {
            assert_eq!(state(firing), Ok(AlarmState::Firing), "{firing}");
        }
        for cleared in [
            r#"{"state":"ok"}"#,
            r#"{"state":"Cleared"}"#,
            r#"{"state":false}"#,
            r#"{"state":0}"#,
            r#"{"state":"off"}"#,
        ] {
            assert_eq!(state(cleared), Ok(AlarmState::Cleared), "{cleared}");
        }
    }

    #[test]
    fn words_are_states_case_insensitively() {
        assert_eq!(state(" ALARM\n"), Ok(AlarmState::Firing));
        assert_eq!(state("true"), Ok(AlarmState::Firing));
        assert_eq!(state("Clear"), Ok(AlarmState::Cleared));
        assert_eq!(state("0"), Ok(AlarmState::Cleared));
    }

    #[test]
    fn bad_payloads_get_their_reason() {
        assert_eq!(state("smoke"), Err(RejectReason::BadState));
        assert_eq!(state(r#"{"state":"smoke"}"#), Err(RejectReason::BadState));
        assert_eq!(state(r#"{"state":2}"#), Err(RejectReason::BadState));
        assert_eq!(state(r#"{"state":"#), Err(RejectReason::BadPayload));
        assert_eq!(state(r#"{"level":"high"}"#), Err(RejectReason::BadPayload));
        assert_eq!(state("fire in room"), Err(RejectReason::BadPayload));
        assert_eq!(state(""), Err(RejectReason::BadPayload));
        assert_eq!(
            parse_payload(&[0xff, 0xfe]).map_err(|e| e.0),
            Err(RejectReason::BadPayload)
        );
    }

    #[test]
    fn json_carries_severity_message_and_key() {
        let p =
            parse_payload(br#"{"state":"alarm","severity":"warning","message":"smoke","key":7}"#)
                .unwrap();
        assert_eq!(p.severity, Some(AlarmSeverity::Warning));
        assert_eq!(p.message.as_deref(), Some("smoke"));
        assert_eq!(p.key.as_deref(), Some("7"));
    }

    fn filter(f: &str) -> Vec<String> {
        f.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn topics_match_filters_and_fill_templates() {
        let f = filter("raadhus/+/brand");
        let caught = match_topic(&f, "raadhus/serverrum/brand").unwrap();
        assert_eq!(caught, vec!["serverrum"]);
        assert_eq!(
            expand_template("{1}", &caught).as_deref(),
            Some("serverrum")
        );
        assert_eq!(
            expand_template("rum-{1}-x", &caught).as_deref(),
            Some("rum-serverrum-x")
        );
        assert!(match_topic(&f, "raadhus/serverrum/brand/x").is_none());
        assert!(match_topic(&f, "raadhus/brand").is_none());
        let hash = filter("sensors/#");
        assert_eq!(
            match_topic(&hash, "sensors/a/b").unwrap(),
            vec!["a/b".to_owned()]
        );
        assert_eq!(expand_template("{2}", &caught), None);
        assert_eq!(expand_template("{0}", &caught), None);
    }
}
