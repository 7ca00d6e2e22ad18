//! `beredskab report`: an incident's report for the archive (ESDH), read
//! from the store: summary, affected services, root cause, the timeline of
//! events and decisions, who was told when, durations, and empty sections
//! for the evaluation.
//!
//! [`load`] reads the rows from any [`Store`]; [`Report::build`] and the
//! renderers are pure over them, with the config (names, language, time
//! zone) and the time of writing passed in. Markdown is for people and the
//! archive: headings and tables, readable as plain text; JSON carries the
//! same sections for machines, with RFC 3339 times, durations in seconds
//! and the API's incident object under `incident`.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::config::{Config, Language};
use crate::engine::{TimelineEntry, Ts};
use crate::store::{DeliveryRow, IncidentRow, OutboxRow, Store, StoreError};
use crate::words::duration_words;

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Json,
}

/// What the store holds about one incident.
#[derive(Debug, Clone)]
pub struct Rows {
    pub incident: IncidentRow,
    pub timeline: Vec<TimelineEntry>,
    pub notifications: Vec<OutboxRow>,
    pub deliveries: Vec<DeliveryRow>,
}

/// Reads incident `id` with its timeline, notifications and delivery
/// attempts; `None` when there is no such incident.
pub async fn load<S: Store>(store: &S, id: u64) -> Result<Option<Rows>, StoreError> {
    let Some(detail) = store.incident(id).await? else {
        return Ok(None);
    };
    Ok(Some(Rows {
        incident: detail.incident,
        timeline: detail.timeline,
        notifications: store.notifications(id).await?,
        deliveries: store.deliveries(id).await?,
    }))
}

/// The report of `rows` in `format`, written at `now`.
pub fn render(config: &Config, rows: &Rows, format: Format, now: Ts) -> String {
    let report = Report::build(config, rows, now);
    match format {
        Format::Markdown => report.markdown(),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&report.json())
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
            s.push('\n');
            s
        }
    }
}

/// Timeline entry types that record a decision: a person's decision, a
/// level raised or lowered, an expected return time given, an escalation
/// step taken.
pub const DECISION_TYPES: [&str; 4] = ["decision", "level", "eta", "step"];

/// An affected service.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub id: String,
    /// From the catalogue; `None` when the service is no longer in it.
    pub name: Option<String>,
    pub criticality: Option<&'static str>,
}

/// One estimate of the outage's length.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub at: Ts,
    pub text: String,
    /// From `expected {N}s ({basis})`; a generator's limit has none.
    pub expected_s: Option<i64>,
    pub basis: Option<String>,
}

/// The report's content, before it is written in a format.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    config: &'a Config,
    rows: &'a Rows,
    lang: Language,
    tz: TimeZone,
    now: Ts,
    pub services: Vec<Service>,
    pub meeting_place: Option<String>,
    pub estimates: Vec<Estimate>,
    /// From opening to acknowledgement.
    pub time_to_ack_s: Option<i64>,
    /// From opening to resolution, or to `now` while still open.
    pub duration_s: i64,
    pub still_open: bool,
}

impl<'a> Report<'a> {
    pub fn build(config: &'a Config, rows: &'a Rows, now: Ts) -> Report<'a> {
        let inc = &rows.incident;
        let tz = TimeZone::get(&config.site.timezone).unwrap_or(TimeZone::UTC);
        let services = inc
            .services
            .iter()
            .map(|id| {
                let found = config.services.iter().find(|s| &s.id == id);
                Service {
                    id: id.clone(),
                    name: found.map(|s| s.name.clone().unwrap_or_else(|| s.id.clone())),
                    criticality: found.map(|s| s.criticality.as_str()),
                }
            })
            .collect();
        let meeting_place = if inc.level == crate::engine::Level::Crisis {
            // Stores written before the incident kept it read it from the
            // timeline.
            inc.meeting_place
                .clone()
                .or_else(|| meeting_place(&rows.timeline))
        } else {
            None
        };
        let estimates = rows
            .timeline
            .iter()
            .filter(|e| e.kind == "estimate")
            .map(estimate)
            .collect();
        let end = inc.resolved_at.unwrap_or(now);
        Report {
            config,
            rows,
            lang: config.site.language,
            tz,
            now,
            services,
            meeting_place,
            estimates,
            time_to_ack_s: inc
                .acknowledged_at
                .map(|a| a.millis_since(inc.opened_at) / 1000),
            duration_s: end.millis_since(inc.opened_at).max(0) / 1000,
            still_open: inc.resolved_at.is_none(),
        }
    }

    fn da(&self) -> bool {
        self.lang == Language::Da
    }

    /// A word in the site's language.
    fn w(&self, en: &'static str, da: &'static str) -> &'static str {
        if self.da() { da } else { en }
    }

    /// A code of the incident JSON (a state, severity, level, criticality,
    /// basis, timeline type or message state) in the site's language: the
    /// Markdown is read by people, the JSON keeps the codes.
    fn code(&self, code: &str) -> String {
        let da = match code {
            "open" => "åben",
            "acknowledged" => "kvitteret",
            "resolved" => "løst",
            "merged" => "lagt sammen",
            "minor" => "mindre",
            "major" => "alvorlig",
            "critical" => "kritisk",
            "department" => "afdelingsniveau",
            "crisis" => "kriseniveau",
            "life" => "livsvigtig",
            "important" => "vigtig",
            "manual" => "skøn fra en person",
            "history" => "tidligere hændelser",
            "kind" => "typisk for fejltypen",
            "default" => "standardskøn",
            "extended" => "forlænget",
            "generator" => "generatorens brændstof",
            "pending" => "venter",
            "sent" => "sendt",
            "failed" => "opgivet",
            "opened" => "åbnet",
            "notification" => "besked",
            "step" => "eskaleringstrin",
            "decision" => "beslutning",
            "event" => "hændelse",
            "ack" => "kvittering",
            "eta" => "forventet varighed",
            "estimate" => "skøn",
            "level" => "niveau",
            "alarm" => "alarm",
            "note" => "note",
            "root" => "grundårsag",
            "severity" => "alvor",
            _ => code,
        };
        if self.da() { da } else { code }.to_owned()
    }

    fn time(&self, t: Ts) -> String {
        long_time(self.lang, &self.tz, t)
    }

    fn duration(&self, secs: i64) -> String {
        duration_words(self.lang, Duration::from_secs(secs.max(0) as u64))
    }

    /// A person as "Name (id)", or the id when the plan no longer has them.
    fn person(&self, id: &str) -> String {
        match self.config.people.iter().find(|p| p.id == id) {
            Some(p) => format!("{} ({id})", p.name),
            None => id.to_owned(),
        }
    }

    fn person_name(&self, id: &str) -> Option<String> {
        self.config
            .people
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.name.clone())
    }

    fn component_name(&self, id: &str) -> Option<String> {
        self.config
            .components
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.name.clone())
    }

    fn root(&self) -> String {
        let id = &self.rows.incident.root;
        match self.component_name(id) {
            Some(name) => format!("{name} ({id})"),
            None => id.clone(),
        }
    }

    fn resolved_by(&self) -> Option<String> {
        let inc = &self.rows.incident;
        inc.resolved_at?;
        Some(match &inc.resolved_by {
            Some(p) => self.person(p),
            None => self
                .w(
                    "automatically, all components up",
                    "automatisk, alle komponenter oppe",
                )
                .to_owned(),
        })
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let inc = &self.rows.incident;
        let mut o = String::new();
        let dash = "–";
        let _ = writeln!(
            o,
            "# {} #{}: {}\n",
            self.w("Incident report", "Hændelsesrapport"),
            inc.id,
            self.root()
        );
        let _ = writeln!(
            o,
            "{}: {}. {} {}.\n",
            self.w("Site", "Organisation"),
            self.config.site.name,
            self.w("Written", "Skrevet"),
            self.time(self.now)
        );

        let _ = writeln!(o, "## {}\n", self.w("Summary", "Resumé"));
        let mut rows: Vec<(&str, String)> = vec![
            (self.w("Incident", "Hændelse"), format!("#{}", inc.id)),
            (self.w("State", "Tilstand"), self.code(inc.state.as_str())),
            (
                self.w("Severity", "Alvor"),
                self.code(inc.severity.as_str()),
            ),
            (self.w("Level", "Niveau"), self.code(inc.level.as_str())),
            (self.w("Root cause", "Grundårsag"), self.root()),
            (self.w("Opened", "Åbnet"), self.time(inc.opened_at)),
        ];
        rows.push((
            self.w("Acknowledged", "Kvitteret"),
            match (inc.acknowledged_at, &inc.acknowledged_by) {
                (Some(at), Some(by)) => format!(
                    "{} {} {}",
                    self.time(at),
                    self.w("by", "af"),
                    self.person(by)
                ),
                (Some(at), None) => self.time(at),
                _ => self.w("not acknowledged", "ikke kvitteret").to_owned(),
            },
        ));
        rows.push((
            self.w("Resolved", "Løst"),
            match (inc.resolved_at, self.resolved_by()) {
                (Some(at), Some(by)) => {
                    format!("{} {} {by}", self.time(at), self.w("by", "af"))
                }
                _ => self.w("still open", "stadig åben").to_owned(),
            },
        ));
        if let Some(place) = &self.meeting_place {
            rows.push((self.w("Meeting place", "Mødested"), place.clone()));
        }
        table(
            &mut o,
            &[self.w("Field", "Felt"), ""],
            rows.into_iter().map(|(k, v)| vec![k.to_owned(), v]),
        );

        let _ = writeln!(
            o,
            "## {}\n",
            self.w("Affected services", "Berørte services")
        );
        if self.services.is_empty() {
            let _ = writeln!(o, "{}\n", self.w("None.", "Ingen."));
        } else {
            let down = if self.still_open {
                format!(
                    "{} ({})",
                    self.w("still open", "stadig åben"),
                    self.duration(self.duration_s)
                )
            } else {
                self.duration(self.duration_s)
            };
            table(
                &mut o,
                &[
                    self.w("Service", "Service"),
                    self.w("Criticality", "Kritikalitet"),
                    self.w("Affected for", "Berørt i"),
                ],
                self.services.iter().map(|s| {
                    vec![
                        match &s.name {
                            Some(n) => format!("{n} ({})", s.id),
                            None => s.id.clone(),
                        },
                        s.criticality
                            .map_or_else(|| dash.to_owned(), |c| self.code(c)),
                        down.clone(),
                    ]
                }),
            );
        }

        let _ = writeln!(o, "## {}\n", self.w("Root cause", "Grundårsag"));
        let _ = writeln!(
            o,
            "{}: {}.\n",
            self.w("Component", "Komponent"),
            self.root()
        );

        let _ = writeln!(
            o,
            "## {}\n",
            self.w(
                "Timeline of events and decisions",
                "Tidslinje over hændelser og beslutninger"
            )
        );
        let decision = self.w("DECISION", "BESLUTNING");
        table(
            &mut o,
            &[
                self.w("Time", "Tid"),
                self.w("Type", "Type"),
                self.w("Who", "Hvem"),
                self.w("Text", "Tekst"),
            ],
            self.timeline().into_iter().map(|e| {
                let kind = if DECISION_TYPES.contains(&e.kind.as_str()) {
                    format!("**{decision}** ({})", self.code(&e.kind))
                } else {
                    self.code(&e.kind)
                };
                vec![
                    self.time(e.at),
                    kind,
                    e.by.as_deref()
                        .map_or_else(|| dash.to_owned(), |b| self.person(b)),
                    e.text.clone(),
                ]
            }),
        );

        let _ = writeln!(
            o,
            "## {}\n",
            self.w("Who was told when", "Hvem fik besked hvornår")
        );
        let _ = writeln!(o, "### {}\n", self.w("Notifications", "Underretninger"));
        if self.rows.notifications.is_empty() {
            let _ = writeln!(o, "{}\n", self.w("None.", "Ingen."));
        } else {
            table(
                &mut o,
                &[
                    self.w("Decided", "Besluttet"),
                    self.w("Person", "Person"),
                    self.w("Role", "Rolle"),
                    self.w("Channel", "Kanal"),
                    self.w("Reason", "Årsag"),
                    self.w("State", "Tilstand"),
                    self.w("Sent", "Sendt"),
                ],
                self.rows.notifications.iter().map(|n| {
                    vec![
                        self.time(n.created_at),
                        self.person(&n.person),
                        n.role.clone().unwrap_or_else(|| dash.to_owned()),
                        n.channel.clone(),
                        n.reason.as_str().to_owned(),
                        self.code(n.state.as_str()),
                        n.sent_at.map_or_else(|| dash.to_owned(), |t| self.time(t)),
                    ]
                }),
            );
        }
        let _ = writeln!(
            o,
            "### {}\n",
            self.w("Delivery attempts", "Leveringsforsøg")
        );
        if self.rows.deliveries.is_empty() {
            let _ = writeln!(o, "{}\n", self.w("None.", "Ingen."));
        } else {
            table(
                &mut o,
                &[
                    self.w("Time", "Tid"),
                    self.w("Person", "Person"),
                    self.w("Channel", "Kanal"),
                    self.w("Outcome", "Udfald"),
                    self.w("Detail", "Detaljer"),
                ],
                self.rows.deliveries.iter().map(|d| {
                    vec![
                        self.time(d.at),
                        self.person(&d.person),
                        d.channel.clone(),
                        d.outcome.clone(),
                        d.detail.clone(),
                    ]
                }),
            );
        }

        let _ = writeln!(o, "## {}\n", self.w("Durations", "Varigheder"));
        let ack = match self.time_to_ack_s {
            Some(s) => self.duration(s),
            None => self.w("not acknowledged", "ikke kvitteret").to_owned(),
        };
        let actual = if self.still_open {
            format!(
                "{} ({} {})",
                self.w("still open", "stadig åben"),
                self.duration(self.duration_s),
                self.w("so far", "indtil nu")
            )
        } else {
            self.duration(self.duration_s)
        };
        let _ = writeln!(
            o,
            "- {}: {ack}\n- {}: {} ({}: {})\n- {}: {actual}\n",
            self.w("Time to acknowledge", "Tid til kvittering"),
            self.w("Expected duration", "Forventet varighed"),
            self.duration(inc.expected_s),
            self.w("basis", "grundlag"),
            self.code(inc.expected_basis.as_str()),
            self.w("Actual duration", "Faktisk varighed"),
        );
        let _ = writeln!(o, "### {}\n", self.w("Estimates", "Skøn"));
        if self.estimates.is_empty() {
            let _ = writeln!(o, "{}\n", self.w("None.", "Ingen."));
        } else {
            table(
                &mut o,
                &[
                    self.w("Time", "Tid"),
                    self.w("Expected", "Forventet"),
                    self.w("Basis", "Grundlag"),
                    self.w("Text", "Tekst"),
                ],
                self.estimates.iter().map(|e| {
                    vec![
                        self.time(e.at),
                        e.expected_s
                            .map_or_else(|| dash.to_owned(), |s| self.duration(s)),
                        e.basis.clone().unwrap_or_else(|| dash.to_owned()),
                        e.text.clone(),
                    ]
                }),
            );
        }

        let _ = writeln!(o, "## {}\n", self.w("Evaluation", "Evaluering"));
        let _ = writeln!(o, "### {}\n", self.w("Experiences", "Erfaringer"));
        let _ = writeln!(
            o,
            "### {}\n",
            self.w("Improvement potential", "Forbedringspotentiale")
        );
        o
    }

    /// The timeline in time order (stable: entries of the same instant
    /// keep the engine's order).
    fn timeline(&self) -> Vec<&TimelineEntry> {
        let mut t: Vec<&TimelineEntry> = self.rows.timeline.iter().collect();
        t.sort_by_key(|e| e.at);
        t
    }

    /// The report as one JSON object.
    pub fn json(&self) -> Value {
        let inc = &self.rows.incident;
        let time = |t: Ts| json!(t.to_timestamp().to_string());
        let time_opt = |t: Option<Ts>| t.map_or(Value::Null, time);
        json!({
            "incident": crate::api::incidents::incident_json(inc),
            "site": self.config.site.name,
            "language": if self.da() { "da" } else { "en" },
            "timezone": self.config.site.timezone,
            "written_at": time(self.now),
            "summary": {
                "id": inc.id,
                "state": inc.state.as_str(),
                "severity": inc.severity.as_str(),
                "level": inc.level.as_str(),
                "root": inc.root,
                "opened_at": time(inc.opened_at),
                "acknowledged_at": time_opt(inc.acknowledged_at),
                "acknowledged_by": inc.acknowledged_by,
                "acknowledged_by_name": inc.acknowledged_by.as_deref().and_then(|p| self.person_name(p)),
                "resolved_at": time_opt(inc.resolved_at),
                "resolved_by": inc.resolved_by,
                "resolved_automatically": inc.resolved_at.is_some() && inc.resolved_by.is_none(),
                "meeting_place": self.meeting_place,
            },
            "services": self.services.iter().map(|s| json!({
                "id": s.id,
                "name": s.name,
                "criticality": s.criticality,
                "in_catalogue": s.name.is_some(),
                "affected_s": self.duration_s,
                "still_open": self.still_open,
            })).collect::<Vec<_>>(),
            "root_cause": {
                "component": inc.root,
                "name": self.component_name(&inc.root),
            },
            "timeline": self.timeline().into_iter().map(|e| json!({
                "at": time(e.at),
                "type": e.kind,
                "by": e.by,
                "text": e.text,
                "decision": DECISION_TYPES.contains(&e.kind.as_str()),
            })).collect::<Vec<_>>(),
            "notifications": self.rows.notifications.iter().map(|n| json!({
                "key": n.key,
                "person": n.person,
                "person_name": self.person_name(&n.person),
                "role": n.role,
                "channel": n.channel,
                "reason": n.reason.as_str(),
                "decided_at": time(n.created_at),
                "state": n.state.as_str(),
                "attempts": n.attempts,
                "sent_at": time_opt(n.sent_at),
                "last_error": n.last_error,
            })).collect::<Vec<_>>(),
            "deliveries": self.rows.deliveries.iter().map(|d| json!({
                "key": d.key,
                "at": time(d.at),
                "person": d.person,
                "channel": d.channel,
                "outcome": d.outcome,
                "detail": d.detail,
            })).collect::<Vec<_>>(),
            "durations": {
                "time_to_acknowledge_s": self.time_to_ack_s,
                "expected_s": inc.expected_s,
                "expected_basis": inc.expected_basis.as_str(),
                "expected_end": time(inc.expected_end),
                "actual_s": self.duration_s,
                "still_open": self.still_open,
                "estimates": self.estimates.iter().map(|e| json!({
                    "at": time(e.at),
                    "expected_s": e.expected_s,
                    "basis": e.basis,
                    "text": e.text,
                })).collect::<Vec<_>>(),
            },
            "evaluation": {
                "experiences": "",
                "improvement_potential": "",
            },
        })
    }
}

/// The meeting place named by the last raise to crisis (`level crisis,
/// meet at X`); none when that raise named none.
fn meeting_place(timeline: &[TimelineEntry]) -> Option<String> {
    timeline
        .iter()
        .rev()
        .find(|e| e.kind == "level" && e.text.starts_with("level crisis"))
        .and_then(|e| e.text.split_once(", meet at "))
        .map(|(_, p)| p.to_owned())
}

/// An `estimate` entry: `expected 3600s (kind)`, or the generator's limit.
fn estimate(e: &TimelineEntry) -> Estimate {
    let parsed = e
        .text
        .strip_prefix("expected ")
        .and_then(|rest| rest.split_once("s ("))
        .and_then(|(n, basis)| Some((n.parse().ok()?, basis.strip_suffix(')')?.to_owned())));
    let (expected_s, basis) = match parsed {
        Some((n, b)) => (Some(n), Some(b)),
        None if e.text.starts_with("generator ") => (None, Some("generator".to_owned())),
        None => (None, None),
    };
    Estimate {
        at: e.at,
        text: e.text.clone(),
        expected_s,
        basis,
    }
}

/// A time for the archive, in the site's zone: `kl. 14.32, den 25.
/// november 2026` in Danish, `14:32, 25 November 2026` in English.
pub fn long_time(lang: Language, tz: &TimeZone, t: Ts) -> String {
    let z = t.to_timestamp().to_zoned(tz.clone());
    match lang {
        Language::Da => {
            let month = crate::words::month_name(lang, z.month());
            format!(
                "kl. {}, den {}. {month} {}",
                z.strftime("%H.%M"),
                z.day(),
                z.year()
            )
        }
        Language::En => z.strftime("%H:%M, %-d %B %Y").to_string(),
    }
}

/// A Markdown table; cells have `|` escaped and line breaks as spaces, so
/// that every row stays one line of plain text.
fn table(o: &mut String, head: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let cell = |s: &str| s.replace('|', "\\|").replace(['\n', '\r'], " ");
    let _ = writeln!(
        o,
        "| {} |",
        head.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(o, "|{}", "---|".repeat(head.len()));
    for r in rows {
        let _ = writeln!(
            o,
            "| {} |",
            r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    o.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::engine::{Basis, IncidentState, Level, Reason, Severity};
    use crate::store::OutboxState;

    const CONFIG: &str = r#"
[site]
name = "Testkommune IT"
language = "LANG"
timezone = "Europe/Copenhagen"

[[component]]
id = "srv-mail"
name = "Mailserver"
kind = "server"

[[service]]
id = "mail"
name = "Mail"
criticality = "important"
depends_on = ["srv-mail"]
owner = "role:drift"
policy = "standard"

[[person]]
id = "p-drift"
name = "Drift Vagt"
phone = "+4511111111"

[[role]]
id = "drift"
primary = "p-drift"

[[channel]]
id = "sms"
kind = "log"

[[policy]]
id = "standard"
[[policy.step]]
on = "open"
notify = ["role:drift"]
via = ["sms"]
"#;

    fn config(lang: &str) -> Config {
        load_str("t.toml", &CONFIG.replace("LANG", lang))
            .expect("the test config is valid")
            .config
    }

    /// 2026-11-25T13:32:00Z: 14:32 in Copenhagen.
    fn at(secs: i64) -> Ts {
        Ts(1_795_613_520_000 + secs * 1000)
    }

    fn entry(secs: i64, kind: &str, text: &str, by: Option<&str>) -> TimelineEntry {
        TimelineEntry {
            at: at(secs),
            kind: kind.to_owned(),
            text: text.to_owned(),
            by: by.map(str::to_owned),
            public: false,
        }
    }

    fn rows(resolved: bool) -> Rows {
        Rows {
            incident: IncidentRow {
                id: 7,
                state: if resolved {
                    IncidentState::Resolved
                } else {
                    IncidentState::Acknowledged
                },
                severity: Severity::Major,
                level: Level::Crisis,
                root: "srv-mail".to_owned(),
                services: vec!["gone".to_owned(), "mail".to_owned()],
                opened_at: at(0),
                acknowledged_at: Some(at(300)),
                acknowledged_by: Some("p-drift".to_owned()),
                expected_s: 3600,
                expected_end: at(3600),
                expected_basis: Basis::Kind,
                resolved_at: resolved.then(|| at(5400)),
                resolved_by: None,
                fuel_out: None,
                meeting_place: None,
            },
            timeline: vec![
                entry(0, "opened", "opened: srv-mail", None),
                entry(0, "estimate", "expected 600s (kind)", None),
                entry(0, "step", "standard: open", None),
                entry(0, "notification", "open: p-drift by sms", None),
                entry(300, "ack", "acknowledged by p-drift", Some("p-drift")),
                entry(
                    400,
                    "level",
                    "level crisis, meet at Rådhuset | lokale 2",
                    Some("p-drift"),
                ),
                entry(500, "decision", "move mail to the backup", Some("p-drift")),
                entry(
                    600,
                    "estimate",
                    "generator fuel lasts 1800s, less than the outage",
                    None,
                ),
                entry(700, "estimate", "expected 3600s (manual)", None),
            ],
            notifications: vec![OutboxRow {
                key: "k1".to_owned(),
                incident: 7,
                person: "p-drift".to_owned(),
                role: Some("drift".to_owned()),
                channel: "sms".to_owned(),
                reason: Reason::Step("open".to_owned()),
                text: "Incident 7".to_owned(),
                created_at: at(0),
                state: OutboxState::Sent,
                attempts: 2,
                next_attempt: at(0),
                last_error: None,
                sent_at: Some(at(20)),
            }],
            deliveries: vec![
                DeliveryRow {
                    key: "k1".to_owned(),
                    incident: 7,
                    at: at(10),
                    channel: "sms".to_owned(),
                    person: "p-drift".to_owned(),
                    outcome: "retried".to_owned(),
                    detail: "gateway answered 503".to_owned(),
                },
                DeliveryRow {
                    key: "k1".to_owned(),
                    incident: 7,
                    at: at(20),
                    channel: "sms".to_owned(),
                    person: "p-drift".to_owned(),
                    outcome: "sent".to_owned(),
                    detail: "sent".to_owned(),
                },
            ],
        }
    }

    #[test]
    fn report_times_read_in_the_site_language_and_zone() {
        let tz = TimeZone::get("Europe/Copenhagen").unwrap();
        assert_eq!(
            long_time(Language::Da, &tz, at(0)),
            "kl. 14.32, den 25. november 2026"
        );
        assert_eq!(
            long_time(Language::En, &tz, at(0)),
            "14:32, 25 November 2026"
        );
        // Summer time, and a single-digit day.
        let july = Ts(1_783_000_000_000);
        assert_eq!(
            long_time(Language::Da, &tz, july),
            "kl. 15.46, den 2. juli 2026"
        );
        assert_eq!(long_time(Language::En, &tz, july), "15:46, 2 July 2026");
    }

    #[test]
    fn report_markdown_in_english_has_every_section() {
        let c = config("en");
        let r = rows(true);
        let md = render(&c, &r, Format::Markdown, at(9000));
        for heading in [
            "# Incident report #7: Mailserver (srv-mail)",
            "## Summary",
            "## Affected services",
            "## Root cause",
            "## Timeline of events and decisions",
            "## Who was told when",
            "### Notifications",
            "### Delivery attempts",
            "## Durations",
            "### Estimates",
            "## Evaluation",
            "### Experiences",
            "### Improvement potential",
        ] {
            assert!(md.lines().any(|l| l == heading), "no {heading:?} in:\n{md}");
        }
        for line in [
            "| Opened | 14:32, 25 November 2026 |",
            "| Acknowledged | 14:37, 25 November 2026 by Drift Vagt (p-drift) |",
            "| Resolved | 16:02, 25 November 2026 by automatically, all components up |",
            "| Meeting place | Rådhuset \\| lokale 2 |",
            "| Mail (mail) | important | 1 hour 30 minutes |",
            "| gone | – | 1 hour 30 minutes |",
            "| 14:40, 25 November 2026 | **DECISION** (decision) | Drift Vagt (p-drift) | move mail to the backup |",
            "| 14:32, 25 November 2026 | opened | – | opened: srv-mail |",
            "| 14:32, 25 November 2026 | Drift Vagt (p-drift) | drift | sms | open | sent | 14:32, 25 November 2026 |",
            "| 14:32, 25 November 2026 | Drift Vagt (p-drift) | sms | retried | gateway answered 503 |",
            "- Time to acknowledge: 5 minutes",
            "- Expected duration: 1 hour (basis: kind)",
            "- Actual duration: 1 hour 30 minutes",
            "| 14:32, 25 November 2026 | 10 minutes | kind | expected 600s (kind) |",
            "| 14:42, 25 November 2026 | – | generator | generator fuel lasts 1800s, less than the outage |",
        ] {
            assert!(md.lines().any(|l| l == line), "no line {line:?} in:\n{md}");
        }
        // The evaluation is left for people to write.
        let evaluation = md.split("## Evaluation").nth(1).expect("evaluation");
        assert_eq!(
            evaluation.trim(),
            "### Experiences\n\n### Improvement potential"
        );
        // Every table row is one line with the header's number of cells.
        for l in md.lines().filter(|l| l.starts_with('|')) {
            assert!(l.ends_with('|'), "{l}");
        }
    }

    #[test]
    fn report_markdown_in_danish_and_still_open() {
        let c = config("da");
        let r = rows(false);
        let md = render(&c, &r, Format::Markdown, at(3000));
        for line in [
            "# Hændelsesrapport #7: Mailserver (srv-mail)",
            "## Resumé",
            "## Berørte services",
            "## Tidslinje over hændelser og beslutninger",
            "## Hvem fik besked hvornår",
            "## Evaluering",
            "### Erfaringer",
            "### Forbedringspotentiale",
            "| Åbnet | kl. 14.32, den 25. november 2026 |",
            "| Løst | stadig åben |",
            "| Mail (mail) | vigtig | stadig åben (50 minutter) |",
            "- Tid til kvittering: 5 minutter",
            "- Faktisk varighed: stadig åben (50 minutter indtil nu)",
        ] {
            assert!(md.lines().any(|l| l == line), "no line {line:?} in:\n{md}");
        }
        assert!(md.contains("**BESLUTNING** (niveau)"), "{md}");
        assert!(md.contains("| Alvor | alvorlig |"), "{md}");
        assert!(md.contains("| Niveau | kriseniveau |"), "{md}");
        assert!(!md.contains("Experiences"), "{md}");
    }

    #[test]
    fn report_json_holds_the_same_sections() {
        let c = config("en");
        let r = rows(true);
        let text = render(&c, &r, Format::Json, at(9000));
        let v: Value = serde_json::from_str(&text).expect("the report is JSON");
        assert_eq!(v["incident"]["id"], 7);
        assert_eq!(v["incident"]["state"], "resolved");
        assert_eq!(v["incident"]["opened_at"], "2026-11-25T13:32:00Z");
        assert_eq!(v["summary"]["acknowledged_by"], "p-drift");
        assert_eq!(v["summary"]["acknowledged_by_name"], "Drift Vagt");
        assert_eq!(v["summary"]["resolved_automatically"], true);
        assert_eq!(v["summary"]["meeting_place"], "Rådhuset | lokale 2");
        assert_eq!(v["services"][0]["id"], "gone");
        assert_eq!(v["services"][0]["in_catalogue"], false);
        assert_eq!(v["services"][1]["name"], "Mail");
        assert_eq!(v["services"][1]["criticality"], "important");
        assert_eq!(v["services"][1]["affected_s"], 5400);
        assert_eq!(v["root_cause"]["name"], "Mailserver");
        let timeline = v["timeline"].as_array().expect("timeline");
        assert_eq!(timeline.len(), 9);
        let decisions: Vec<&str> = timeline
            .iter()
            .filter(|e| e["decision"] == true)
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(decisions, ["step", "level", "decision"]);
        assert_eq!(v["notifications"][0]["decided_at"], "2026-11-25T13:32:00Z");
        assert_eq!(v["notifications"][0]["state"], "sent");
        assert_eq!(v["deliveries"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["deliveries"][0]["outcome"], "retried");
        assert_eq!(v["durations"]["time_to_acknowledge_s"], 300);
        assert_eq!(v["durations"]["expected_s"], 3600);
        assert_eq!(v["durations"]["actual_s"], 5400);
        assert_eq!(v["durations"]["still_open"], false);
        let estimates = v["durations"]["estimates"].as_array().expect("estimates");
        assert_eq!(estimates.len(), 3);
        assert_eq!(estimates[0]["expected_s"], 600);
        assert_eq!(estimates[0]["basis"], "kind");
        assert_eq!(estimates[1]["expected_s"], Value::Null);
        assert_eq!(estimates[1]["basis"], "generator");
        assert_eq!(estimates[2]["basis"], "manual");
        assert_eq!(v["evaluation"]["experiences"], "");
        assert_eq!(v["evaluation"]["improvement_potential"], "");
    }

    #[test]
    fn report_names_no_meeting_place_below_crisis() {
        let c = config("en");
        let mut r = rows(true);
        r.incident.level = Level::Department;
        let report = Report::build(&c, &r, at(9000));
        assert_eq!(report.meeting_place, None);
        r.incident.level = Level::Crisis;
        r.timeline
            .push(entry(800, "level", "level crisis", Some("p-drift")));
        // The last raise named no place (none was free): none is given.
        let report = Report::build(&c, &r, at(9000));
        assert_eq!(report.meeting_place, None);
    }
}
