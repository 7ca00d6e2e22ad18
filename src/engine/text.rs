//! Message texts in Danish and English: one SMS (160 characters) where
//! the content allows, never more than 480. The acknowledgement link is
//! not part of the text; the daemon appends it when it sends.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::{IncidentId, Severity};
use crate::config::{AlarmKind, Language};
use crate::words::{self, Year};

/// One SMS.
pub const SMS_CHARS: usize = 160;
/// The longest text ever produced.
pub const MAX_CHARS: usize = 480;

/// What a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TextKind {
    /// An escalation step: the incident and what is known.
    Alert,
    /// A step for an incident nobody acknowledged.
    Unacked,
    /// A deputy: the primary did not answer.
    Deputy,
    /// A deputy for a crisis summons.
    DeputyCrisis,
    Status,
    Severity,
    Resolved,
    Recovery,
    Crisis,
}

/// What a message can say about an incident.
pub(super) struct Facts {
    pub incident: IncidentId,
    pub severity: Severity,
    pub cause: AlarmKind,
    pub root: String,
    /// Affected services' names, most critical first.
    pub services: Vec<String>,
    pub expected_end: Option<Timestamp>,
    pub fuel_out: Option<Timestamp>,
    pub duration_s: Option<i64>,
    /// Set when a person closed the incident: then nothing is claimed to
    /// be back to normal.
    pub resolved_by: Option<String>,
    pub meeting_place: Option<String>,
    pub now: Timestamp,
}

struct Words {
    severity: fn(Severity) -> &'static str,
    cause: fn(AlarmKind) -> &'static str,
    affected: &'static str,
    none_affected: &'static str,
    expected: &'static str,
    unacked: &'static str,
    deputy: &'static str,
    status: &'static str,
    raised: &'static str,
    resolved: &'static str,
    recovered: &'static str,
    closed_by: &'static str,
    after: &'static str,
    crisis: &'static str,
    meet: &'static str,
    fuel: &'static str,
    and_more: &'static str,
}

const DA: Words = Words {
    severity: |s| match s {
        Severity::Critical => "KRITISK",
        Severity::Major => "ALVORLIG",
        Severity::Minor => "MINDRE",
    },
    cause: |k| match k {
        AlarmKind::Fire => "Brand",
        AlarmKind::Power => "Strømsvigt",
        AlarmKind::Generator => "Generatorfejl",
        AlarmKind::Ups => "UPS-fejl",
        AlarmKind::Environment => "Miljøalarm",
        AlarmKind::Network => "Netværksfejl",
        AlarmKind::Server => "Serverfejl",
        AlarmKind::Application => "Systemfejl",
        AlarmKind::Security => "Sikkerhedshændelse",
        AlarmKind::Generic => "Fejl",
    },
    affected: "Ramt",
    none_affected: "Ingen tjenester ramt endnu",
    expected: "Forventes løst",
    unacked: "Ikke kvitteret",
    deputy: "Ingen svar – du er stedfortræder",
    status: "Status",
    raised: "Skærpet til",
    resolved: "LØST",
    recovered: "kører igen",
    closed_by: "afsluttet af",
    after: "efter",
    crisis: "KRISESTAB INDKALDT",
    meet: "Mødested",
    fuel: "Brændstof slipper op",
    and_more: "flere",
};

const EN: Words = Words {
    severity: |s| match s {
        Severity::Critical => "CRITICAL",
        Severity::Major => "MAJOR",
        Severity::Minor => "MINOR",
    },
    cause: |k| match k {
        AlarmKind::Fire => "Fire",
        AlarmKind::Power => "Power failure",
        AlarmKind::Generator => "Generator fault",
        AlarmKind::Ups => "UPS fault",
        AlarmKind::Environment => "Environment alarm",
        AlarmKind::Network => "Network failure",
        AlarmKind::Server => "Server failure",
        AlarmKind::Application => "System failure",
        AlarmKind::Security => "Security incident",
        AlarmKind::Generic => "Failure",
    },
    affected: "Affected",
    none_affected: "No services affected yet",
    expected: "Expected back",
    unacked: "Not acknowledged",
    deputy: "No answer – you are deputy",
    status: "Status",
    raised: "Raised to",
    resolved: "RESOLVED",
    recovered: "back to normal",
    closed_by: "closed by",
    after: "after",
    crisis: "CRISIS STAFF SUMMONED",
    meet: "Meet at",
    fuel: "Fuel runs out",
    and_more: "more",
};

/// Renders a message; shortens the service list, then the names, to fit
/// one SMS, and never exceeds [`MAX_CHARS`].
pub(super) fn render(lang: Language, tz: &TimeZone, kind: TextKind, f: &Facts) -> String {
    let w = match lang {
        Language::Da => &DA,
        Language::En => &EN,
    };
    let full = f.services.len();
    // Every service by its full name, then fewer, then shorter names,
    // and only then none.
    for limit in [None, Some(32), Some(20)] {
        for shown in (1..=full).rev() {
            let text = compose(w, lang, tz, kind, f, shown, limit);
            if text.chars().count() <= SMS_CHARS {
                return text;
            }
        }
    }
    for limit in [None, Some(40), Some(24)] {
        let text = compose(w, lang, tz, kind, f, 0, limit);
        if text.chars().count() <= SMS_CHARS {
            return text;
        }
    }
    cut(
        &compose(w, lang, tz, kind, f, full.min(10), Some(40)),
        MAX_CHARS,
    )
}

fn compose(
    w: &Words,
    lang: Language,
    tz: &TimeZone,
    kind: TextKind,
    f: &Facts,
    shown: usize,
    limit: Option<usize>,
) -> String {
    let name = |s: &str| match limit {
        Some(l) => cut(s, l),
        None => s.to_owned(),
    };
    let id = f.incident;
    let sev = (w.severity)(f.severity);
    // The cause is shortened only when nothing else is left to shorten.
    let root = if shown == 0 {
        name(&f.root)
    } else {
        f.root.clone()
    };
    let cause = format!("{} – {root}", (w.cause)(f.cause));
    let services = if f.services.is_empty() {
        w.none_affected.to_owned()
    } else {
        let mut list: Vec<String> = f.services.iter().take(shown).map(|s| name(s)).collect();
        let rest = f.services.len() - list.len();
        if rest > 0 {
            list.push(format!("+{rest} {}", w.and_more));
        }
        format!("{}: {}", w.affected, list.join(", "))
    };
    let services_plain = if f.services.is_empty() {
        String::new()
    } else {
        let mut list: Vec<String> = f.services.iter().take(shown).map(|s| name(s)).collect();
        let rest = f.services.len() - list.len();
        if rest > 0 {
            list.push(format!("+{rest} {}", w.and_more));
        }
        list.join(", ")
    };
    // Messages are about the hours and days around them: never a year.
    let when = |t| words::local_time(lang, tz, t, f.now, Year::Never);
    let expected = f
        .expected_end
        .map(|t| format!(" {} {}.", w.expected, when(t)))
        .unwrap_or_default();
    let fuel = f
        .fuel_out
        .filter(|_| kind != TextKind::Resolved && kind != TextKind::Recovery)
        .map(|t| format!(" {} {}.", w.fuel, when(t)))
        .unwrap_or_default();
    match kind {
        TextKind::Alert => format!("{sev} #{id}: {cause}. {services}.{fuel}{expected}"),
        TextKind::Unacked => {
            format!(
                "{} #{id} {sev}: {cause}. {services}.{fuel}{expected}",
                w.unacked
            )
        }
        TextKind::Deputy => format!(
            "{}. {sev} #{id}: {cause}. {services}.{fuel}{expected}",
            w.deputy
        ),
        TextKind::Status => {
            format!(
                "{} #{id} {sev}: {cause}. {services}.{fuel}{expected}",
                w.status
            )
        }
        TextKind::Severity => {
            format!(
                "{} {sev} #{id}: {cause}. {services}.{fuel}{expected}",
                w.raised
            )
        }
        TextKind::Resolved | TextKind::Recovery => {
            let took = f
                .duration_s
                .map(|d| format!(" {} {}", w.after, words::duration_short(lang, d)))
                .unwrap_or_default();
            if let Some(by) = &f.resolved_by {
                format!(
                    "{} #{id} ({} {by}): {cause}{took}.",
                    w.resolved, w.closed_by
                )
            } else if services_plain.is_empty() {
                format!("{} #{id}: {cause}{took}.", w.resolved)
            } else {
                format!(
                    "{} #{id}: {services_plain} {}{took}. ({cause})",
                    w.resolved, w.recovered
                )
            }
        }
        TextKind::Crisis | TextKind::DeputyCrisis => {
            // The meeting place is never shortened: it is why they read it.
            let place = f
                .meeting_place
                .as_ref()
                .map(|p| format!(" {}: {p}.", w.meet))
                .unwrap_or_default();
            let deputy = if kind == TextKind::DeputyCrisis {
                format!("{}. ", w.deputy)
            } else {
                String::new()
            };
            format!(
                "{deputy}{} #{id}: {cause}.{place} {services}.{fuel}",
                w.crisis
            )
        }
    }
}

/// At most `max` characters, with an ellipsis when shortened.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(services: usize) -> Facts {
        Facts {
            incident: IncidentId(7),
            severity: Severity::Critical,
            cause: AlarmKind::Fire,
            root: "Serverrum, rådhusets kælder".into(),
            services: (0..services)
                .map(|i| format!("Telefoni og netværk til institutioner {i}"))
                .collect(),
            expected_end: Some("2026-03-02T14:30:00Z".parse().unwrap()),
            fuel_out: None,
            duration_s: None,
            resolved_by: None,
            meeting_place: None,
            now: "2026-03-02T08:00:00Z".parse().unwrap(),
        }
    }

    fn tz() -> TimeZone {
        TimeZone::get("Europe/Copenhagen").unwrap()
    }

    #[test]
    fn an_alert_names_cause_services_and_return_time_in_one_sms() {
        let t = render(Language::Da, &tz(), TextKind::Alert, &facts(1));
        assert!(t.chars().count() <= SMS_CHARS, "{t}");
        assert!(t.starts_with("KRITISK #7: Brand – Serverrum"), "{t}");
        assert!(t.contains("Telefoni og netværk til institutioner 0"), "{t}");
        assert!(t.contains("kl. 15:30"), "{t}");
    }

    #[test]
    fn many_services_are_shortened_to_fit_one_sms() {
        for lang in [Language::Da, Language::En] {
            for kind in [
                TextKind::Alert,
                TextKind::Deputy,
                TextKind::Status,
                TextKind::Crisis,
                TextKind::Recovery,
            ] {
                let t = render(lang, &tz(), kind, &facts(40));
                assert!(t.chars().count() <= SMS_CHARS, "{kind:?}: {t}");
                assert!(t.contains('+'), "{kind:?}: {t}");
            }
        }
    }

    #[test]
    fn english_texts_use_english_words() {
        let t = render(Language::En, &tz(), TextKind::Alert, &facts(1));
        assert!(t.starts_with("CRITICAL #7: Fire"), "{t}");
        assert!(t.contains("Expected back at 15:30"), "{t}");
    }
}
