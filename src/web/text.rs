//! The words of the web UI and the status page, in Danish and English,
//! and how they write times: Danish "kl. 14.32", "den 25. november";
//! English "14:32", "25 November".

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::config::Language;
use crate::engine::{Basis, Health, Severity};
use crate::words::{duration_short, month_name};

/// Every text of the pages. `{name}` placeholders are filled by
/// [`crate::words::fill`].
pub struct Words {
    pub lang: &'static str,
    pub oncall: &'static str,
    pub open_incidents: &'static str,
    pub no_incidents: &'static str,
    pub incident: &'static str,
    pub since: &'static str,
    pub cause: &'static str,
    pub affected: &'static str,
    pub none_affected: &'static str,
    pub expected: &'static str,
    pub updated: &'static str,
    pub acked_by: &'static str,
    pub not_acked: &'static str,
    pub resolved_at: &'static str,
    pub ack: &'static str,
    pub resolve: &'static str,
    pub comment: &'static str,
    pub resolve_note: &'static str,
    pub set_eta: &'static str,
    pub add_note: &'static str,
    pub raise: &'static str,
    pub details: &'static str,
    pub all_incidents: &'static str,
    pub eta_legend: &'static str,
    pub eta_in: [&'static str; 6],
    pub eta_at: &'static str,
    pub eta_save: &'static str,
    pub eta_missing: &'static str,
    pub note_text: &'static str,
    pub note_kind: &'static str,
    pub tag_event: &'static str,
    pub tag_decision: &'static str,
    pub tag_system: &'static str,
    pub note_save: &'static str,
    pub note_public: &'static str,
    pub note_missing: &'static str,
    pub crisis_title: &'static str,
    pub crisis_text: &'static str,
    pub crisis_no_place: &'static str,
    pub crisis_confirm: &'static str,
    pub cancel: &'static str,
    pub crisis_banner: &'static str,
    pub crisis_banner_no_place: &'static str,
    pub crisis_tag: &'static str,
    pub escalation: &'static str,
    pub col_person: &'static str,
    pub col_channel: &'static str,
    pub col_status: &'static str,
    pub col_time: &'static str,
    pub st_pending: &'static str,
    pub st_sent: &'static str,
    pub st_failed: &'static str,
    pub st_acked: &'static str,
    pub nobody_told: &'static str,
    /// What is due next if nobody acts: `{time}`, and `{via}`, `{to}`,
    /// `{person}`, `{role}`.
    pub next_first: &'static str,
    pub next_step: &'static str,
    pub next_deputy: &'static str,
    pub next_status: &'static str,
    pub failed_banner: &'static str,
    pub timeline: &'static str,
    pub show: &'static str,
    pub f_all: &'static str,
    pub f_decisions: &'static str,
    pub f_events: &'static str,
    pub nothing: &'static str,
    pub login: &'static str,
    pub token: &'static str,
    pub login_button: &'static str,
    pub login_hint: &'static str,
    pub login_prefilled: &'static str,
    pub unknown_token: &'static str,
    pub too_many: &'static str,
    pub logout: &'static str,
    pub logged_in_as: &'static str,
    pub read_only: &'static str,
    pub forbidden: &'static str,
    pub forbidden_text: &'static str,
    pub stale_form: &'static str,
    pub stale_form_text: &'static str,
    pub not_found: &'static str,
    pub not_found_text: &'static str,
    pub conflict: &'static str,
    pub conflict_text: &'static str,
    pub unavailable: &'static str,
    pub unavailable_text: &'static str,
    pub failed: &'static str,
    pub failed_text: &'static str,
    pub status_title: &'static str,
    pub all_up: &'static str,
    pub some_degraded: &'static str,
    pub some_down: &'static str,
    pub notices: &'static str,
    pub services: &'static str,
    pub health: [&'static str; 3],
    pub status_since: &'static str,
    pub status_expected: &'static str,
    pub status_unknown_return: &'static str,
    pub last_updated: &'static str,
    pub danish_time: &'static str,
    pub zone_time: &'static str,
    pub refresh: &'static str,
    pub status_link: &'static str,
    pub severity: [&'static str; 3],
    pub basis_manual: &'static str,
    pub basis_manual_nobody: &'static str,
    pub basis_history: &'static str,
    pub basis_kind: &'static str,
    pub basis_default: &'static str,
    pub basis_extended: &'static str,
    pub basis_generator: &'static str,
    pub tl_ack: &'static str,
    pub tl_eta: &'static str,
    pub tl_estimate: &'static str,
    pub tl_crisis: &'static str,
    pub tl_department: &'static str,
    pub tl_told: &'static str,
    pub tl_opened: &'static str,
    pub tl_step: &'static str,
    pub tl_root: &'static str,
    pub tl_merged_into: &'static str,
    pub tl_absorbed: &'static str,
    pub tl_resolved_by: &'static str,
    pub tl_resolved_auto: &'static str,
}

pub const DA: Words = Words {
    lang: "da",
    oncall: "Vagt",
    open_incidents: "Åbne hændelser",
    no_incidents: "Ingen åbne hændelser – alt kører.",
    incident: "Hændelse #{id}",
    since: "siden {when} ({age})",
    cause: "Fejl i",
    affected: "Ramt",
    none_affected: "ingen tjenester endnu",
    expected: "forventet retur ca. {when}",
    updated: "opdateret {when}",
    acked_by: "Kvitteret af {who} {when}",
    not_acked: "Ikke kvitteret",
    resolved_at: "Afsluttet {when}",
    ack: "Kvittér",
    resolve: "Afslut",
    comment: "Kommentar (valgfri)",
    resolve_note: "Afsluttende note (valgfri)",
    set_eta: "Forventet retur",
    add_note: "Note",
    raise: "Hæv til krise",
    details: "Detaljer og tidslinje",
    all_incidents: "Alle hændelser",
    eta_legend: "Hvornår er det forventet at virke igen?",
    eta_in: [
        "om 30 min",
        "om 1 time",
        "om 2 timer",
        "om 4 timer",
        "om 8 timer",
        "om 1 døgn",
    ],
    eta_at: "eller kl.",
    eta_save: "Gem forventet retur",
    eta_missing: "Vælg hvornår, eller skriv et klokkeslæt.",
    note_text: "Tekst",
    note_kind: "Slags",
    tag_event: "Hændelse",
    tag_decision: "Beslutning",
    tag_system: "System",
    note_save: "Tilføj note",
    note_public: "Vis på den offentlige driftsstatus",
    note_missing: "Skriv en tekst.",
    crisis_title: "Hæv hændelse #{id} til kriseniveau?",
    crisis_text: "Krisestaben bliver indkaldt og mødes: {place}",
    crisis_no_place: "Der er intet ledigt mødested i planen – aftal et mødested.",
    crisis_confirm: "Ja, hæv til krise",
    cancel: "Fortryd",
    crisis_banner: "KRISE · hændelse #{id} · krisestaben mødes: {place}",
    crisis_banner_no_place: "KRISE · hændelse #{id} · intet mødested i planen",
    crisis_tag: "KRISE",
    escalation: "Hvem er underrettet",
    col_person: "Person",
    col_channel: "Kanal",
    col_status: "Status",
    col_time: "Tid",
    st_pending: "Venter",
    st_sent: "Sendt",
    st_failed: "Fejlet",
    st_acked: "Kvitteret",
    nobody_told: "Ingen er underrettet endnu.",
    next_first: "Næste: de første beskeder sendes {time}.",
    next_step: "Næste: {via} til {to} {time}.",
    next_deputy: "Næste: {via} til {person}, stedfortræder for {role}, {time}, hvis ingen kvitterer.",
    next_status: "Næste: statusbesked {time}, indtil der er et skøn fra en person.",
    failed_banner: "Beskeden til {who} via {channel} kunne ikke sendes: {why}",
    timeline: "Tidslinje",
    show: "Vis:",
    f_all: "Alle",
    f_decisions: "Beslutninger",
    f_events: "Hændelser",
    nothing: "Intet at vise.",
    login: "Log ind",
    token: "Adgangsnøgle",
    login_button: "Log ind",
    login_hint: "Brug den adgangsnøgle (token), du har fået til beredskab.",
    login_prefilled: "Nøglen er udfyldt fra linket. Tryk for at logge ind.",
    unknown_token: "Nøglen kendes ikke, eller den må ikke se hændelser.",
    too_many: "For mange forkerte forsøg herfra. Vent et minut, og prøv igen.",
    logout: "Log ud",
    logged_in_as: "Logget ind som {who}",
    read_only: "Du kan se, men ikke handle: din nøgle må ikke kvittere.",
    forbidden: "Ikke tilladt",
    forbidden_text: "Din adgangsnøgle må ikke gøre dette.",
    stale_form: "Formularen kan ikke bruges",
    stale_form_text: "Den kom ikke fra en side i denne session, eller den er for gammel. \
                      Hent siden igen, og prøv igen.",
    not_found: "Findes ikke",
    not_found_text: "Der er ingen sådan hændelse.",
    conflict: "Hændelsen er afsluttet",
    conflict_text: "Hændelse #{id} er afsluttet; der kan ikke ændres mere.",
    unavailable: "Prøv igen om lidt",
    unavailable_text: "Beredskab svarer ikke lige nu. Se efter på siden, om det gik igennem, \
                       før du prøver igen.",
    failed: "Noget gik galt",
    failed_text: "Prøv igen om lidt.",
    status_title: "Driftsstatus",
    all_up: "Alle tjenester kører",
    some_degraded: "Nogle tjenester kører med nedsat funktion",
    some_down: "Nogle tjenester er nede",
    notices: "Meddelelser",
    services: "Tjenester",
    health: ["Kører", "Nedsat", "Nede"],
    status_since: "siden {when}",
    status_expected: "forventet retur ca. {when}",
    status_unknown_return: "forventet retur: ukendt",
    last_updated: "Sidst opdateret {when}",
    danish_time: "alle tider er dansk tid",
    zone_time: "alle tider er {zone}",
    refresh: "Opdatér",
    status_link: "Driftsstatus",
    severity: ["MINDRE", "ALVORLIG", "KRITISK"],
    basis_manual: "skøn fra {who}",
    basis_manual_nobody: "manuelt skøn",
    basis_history: "ud fra tidligere hændelser",
    basis_kind: "typisk for denne slags fejl",
    basis_default: "standardskøn",
    basis_extended: "forlænget: det varede længere end ventet",
    basis_generator: "generatorens brændstof slipper op {when}",
    tl_ack: "Kvitteret",
    tl_eta: "Forventet varighed sat til {d} fra start",
    tl_estimate: "Skøn: {d} ({basis})",
    tl_crisis: "Hævet til krise – krisestaben mødes: {place}",
    tl_department: "Sat til afdelingsniveau",
    tl_told: "Besked til {who} via {channel}",
    tl_opened: "Åbnet: {what}",
    tl_step: "Eskalering: trin «{on}» i politikken {policy}",
    tl_root: "Ny grundårsag: {what}",
    tl_merged_into: "Lagt sammen med hændelse #{id}",
    tl_absorbed: "Hændelse #{id} er lagt ind i denne",
    tl_resolved_by: "Afsluttet af {who}",
    tl_resolved_auto: "Afsluttet: alle komponenter kører igen",
};

pub const EN: Words = Words {
    lang: "en",
    oncall: "On call",
    open_incidents: "Open incidents",
    no_incidents: "No open incidents – everything is running.",
    incident: "Incident #{id}",
    since: "since {when} ({age})",
    cause: "Fault in",
    affected: "Affected",
    none_affected: "no services yet",
    expected: "expected back about {when}",
    updated: "updated {when}",
    acked_by: "Acknowledged by {who} {when}",
    not_acked: "Not acknowledged",
    resolved_at: "Resolved {when}",
    ack: "Acknowledge",
    resolve: "Resolve",
    comment: "Comment (optional)",
    resolve_note: "Closing note (optional)",
    set_eta: "Expected return",
    add_note: "Note",
    raise: "Raise to crisis",
    details: "Details and timeline",
    all_incidents: "All incidents",
    eta_legend: "When is it expected to work again?",
    eta_in: [
        "in 30 min",
        "in 1 hour",
        "in 2 hours",
        "in 4 hours",
        "in 8 hours",
        "in 1 day",
    ],
    eta_at: "or at",
    eta_save: "Save expected return",
    eta_missing: "Choose when, or enter a time.",
    note_text: "Text",
    note_kind: "Kind",
    tag_event: "Event",
    tag_decision: "Decision",
    tag_system: "System",
    note_save: "Add note",
    note_public: "Show on the public status page",
    note_missing: "Write a text.",
    crisis_title: "Raise incident #{id} to crisis level?",
    crisis_text: "The crisis staff is summoned and meets at: {place}",
    crisis_no_place: "No meeting place of the plan is free – agree on one.",
    crisis_confirm: "Yes, raise to crisis",
    cancel: "Cancel",
    crisis_banner: "CRISIS · incident #{id} · the crisis staff meets at: {place}",
    crisis_banner_no_place: "CRISIS · incident #{id} · no meeting place in the plan",
    crisis_tag: "CRISIS",
    escalation: "Who was told",
    col_person: "Person",
    col_channel: "Channel",
    col_status: "Status",
    col_time: "Time",
    st_pending: "Pending",
    st_sent: "Sent",
    st_failed: "Failed",
    st_acked: "Acknowledged",
    nobody_told: "Nobody has been told yet.",
    next_first: "Next: the first messages go out at {time}.",
    next_step: "Next: {via} to {to} at {time}.",
    next_deputy: "Next: {via} to {person}, deputy for {role}, at {time}, unless someone acknowledges.",
    next_status: "Next: a status reminder at {time}, until a person gives an estimate.",
    failed_banner: "The message to {who} by {channel} could not be sent: {why}",
    timeline: "Timeline",
    show: "Show:",
    f_all: "All",
    f_decisions: "Decisions",
    f_events: "Events",
    nothing: "Nothing to show.",
    login: "Log in",
    token: "Access token",
    login_button: "Log in",
    login_hint: "Use the access token you were given for beredskab.",
    login_prefilled: "The token is filled in from the link. Tap to log in.",
    unknown_token: "Unknown token, or one that may not see incidents.",
    too_many: "Too many wrong attempts from here. Wait a minute and try again.",
    logout: "Log out",
    logged_in_as: "Logged in as {who}",
    read_only: "You can look but not act: your token may not acknowledge.",
    forbidden: "Not allowed",
    forbidden_text: "Your access token may not do this.",
    stale_form: "This form cannot be used",
    stale_form_text: "It did not come from a page of this session, or it is too old. \
                      Load the page again and retry.",
    not_found: "Not found",
    not_found_text: "There is no such incident.",
    conflict: "The incident is resolved",
    conflict_text: "Incident #{id} is resolved; nothing can be changed.",
    unavailable: "Try again in a moment",
    unavailable_text: "beredskab is not answering right now. Check the page to see whether it \
                       went through before trying again.",
    failed: "Something went wrong",
    failed_text: "Try again in a moment.",
    status_title: "Service status",
    all_up: "All services are running",
    some_degraded: "Some services are degraded",
    some_down: "Some services are down",
    notices: "Notices",
    services: "Services",
    health: ["Running", "Degraded", "Down"],
    status_since: "since {when}",
    status_expected: "expected back about {when}",
    status_unknown_return: "expected return: unknown",
    last_updated: "Last updated {when}",
    danish_time: "all times are Danish time",
    zone_time: "all times are {zone} time",
    refresh: "Refresh",
    status_link: "Service status",
    severity: ["MINOR", "MAJOR", "CRITICAL"],
    basis_manual: "estimate from {who}",
    basis_manual_nobody: "manual estimate",
    basis_history: "from past incidents",
    basis_kind: "typical for this kind of fault",
    basis_default: "default estimate",
    basis_extended: "extended: it lasted longer than expected",
    basis_generator: "the generator's fuel runs out {when}",
    tl_ack: "Acknowledged",
    tl_eta: "Expected duration set to {d} from the start",
    tl_estimate: "Estimate: {d} ({basis})",
    tl_crisis: "Raised to crisis – the crisis staff meets at: {place}",
    tl_department: "Set to department level",
    tl_told: "Message to {who} by {channel}",
    tl_opened: "Opened: {what}",
    tl_step: "Escalation: step “{on}” of policy {policy}",
    tl_root: "New root cause: {what}",
    tl_merged_into: "Merged into incident #{id}",
    tl_absorbed: "Incident #{id} was merged into this one",
    tl_resolved_by: "Resolved by {who}",
    tl_resolved_auto: "Resolved: every component is up again",
};

pub fn words(lang: Language) -> &'static Words {
    match lang {
        Language::Da => &DA,
        Language::En => &EN,
    }
}

impl Words {
    pub fn severity(&self, s: Severity) -> &'static str {
        match s {
            Severity::Minor => self.severity[0],
            Severity::Major => self.severity[1],
            Severity::Critical => self.severity[2],
        }
    }

    pub fn health(&self, h: Health) -> &'static str {
        match h {
            Health::Up => self.health[0],
            Health::Degraded => self.health[1],
            Health::Down => self.health[2],
        }
    }

    pub fn basis(&self, b: Basis) -> &'static str {
        match b {
            Basis::Manual => self.basis_manual,
            Basis::History => self.basis_history,
            Basis::Kind => self.basis_kind,
            Basis::Default => self.basis_default,
            Basis::Extended => self.basis_extended,
            Basis::Generator => self.basis_generator,
        }
    }
}

/// Writes times for one reader: in the site's zone, relative to `now`.
#[derive(Clone)]
pub struct Clock {
    pub lang: Language,
    pub tz: TimeZone,
    pub now: Timestamp,
}

impl Clock {
    /// `14.32` / `14:32`.
    pub fn hm(&self, t: Timestamp) -> String {
        let z = t.to_zoned(self.tz.clone());
        match self.lang {
            Language::Da => z.strftime("%H.%M").to_string(),
            Language::En => z.strftime("%H:%M").to_string(),
        }
    }

    /// A time as a sentence reads it: `kl. 14.32` today, `den 25.
    /// november kl. 14.32` on another day (with the year when not this
    /// year); `14:32`, `25 November 14:32`.
    pub fn at(&self, t: Timestamp) -> String {
        let z = t.to_zoned(self.tz.clone());
        let now = self.now.to_zoned(self.tz.clone());
        let hm = self.hm(t);
        let same_day = z.date() == now.date();
        let month = month_name(self.lang, z.month());
        let year = if z.year() == now.year() {
            String::new()
        } else {
            format!(" {}", z.year())
        };
        match (self.lang, same_day) {
            (Language::Da, true) => format!("kl. {hm}"),
            (Language::Da, false) => format!("den {}. {month}{year} kl. {hm}", z.day()),
            (Language::En, true) => hm,
            (Language::En, false) => format!("{} {month}{year} {hm}", z.day()),
        }
    }

    /// The date alone when not today (`25/11`, `25 Nov`), for timeline rows.
    pub fn day_if_not_today(&self, t: Timestamp) -> Option<String> {
        let z = t.to_zoned(self.tz.clone());
        let now = self.now.to_zoned(self.tz.clone());
        (z.date() != now.date()).then(|| {
            let month = month_name(self.lang, z.month());
            match self.lang {
                Language::Da => format!("{}. {month}", z.day()),
                Language::En => format!("{} {month}", z.day()),
            }
        })
    }

    /// How long ago, short: `12 min`, `2 t 5 min`; `12m`, `2h 5m`.
    pub fn age(&self, since: Timestamp) -> String {
        let secs = self
            .now
            .as_second()
            .saturating_sub(since.as_second())
            .max(0);
        duration_short(self.lang, secs)
    }

    /// "alle tider er dansk tid", or the zone's name elsewhere.
    pub fn zone_words(&self, w: &Words) -> String {
        match self.tz.iana_name() {
            Some("Europe/Copenhagen") => w.danish_time.to_owned(),
            Some(name) => crate::words::fill(w.zone_time, &[("zone", name)]),
            None => crate::words::fill(w.zone_time, &[("zone", "UTC")]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(lang: Language) -> Clock {
        Clock {
            lang,
            tz: TimeZone::get("Europe/Copenhagen").unwrap(),
            now: "2026-11-25T13:44:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn danish_times_read_kl_with_a_dot_and_the_month_in_words() {
        let c = clock(Language::Da);
        let today: Timestamp = "2026-11-25T13:32:00Z".parse().unwrap();
        assert_eq!(c.at(today), "kl. 14.32");
        assert_eq!(c.age(today), "12 min");
        let other: Timestamp = "2026-11-24T16:30:00Z".parse().unwrap();
        assert_eq!(c.at(other), "den 24. november kl. 17.30");
        assert_eq!(c.day_if_not_today(other).as_deref(), Some("24. november"));
        assert_eq!(c.day_if_not_today(today), None);
        let last_year: Timestamp = "2025-06-01T10:00:00Z".parse().unwrap();
        assert_eq!(c.at(last_year), "den 1. juni 2025 kl. 12.00");
        assert_eq!(c.zone_words(&DA), "alle tider er dansk tid");
    }

    #[test]
    fn english_times_read_with_a_colon_and_the_day_first() {
        let c = clock(Language::En);
        let today: Timestamp = "2026-11-25T16:30:00Z".parse().unwrap();
        assert_eq!(c.at(today), "17:30");
        let other: Timestamp = "2026-11-24T16:30:00Z".parse().unwrap();
        assert_eq!(c.at(other), "24 November 17:30");
        assert_eq!(c.age("2026-11-25T11:39:00Z".parse().unwrap()), "2h 5m");
    }
}
