//! The preparedness plan rendered from the config, so that the plan on
//! paper and the plan that runs cannot drift apart.
//!
//! Reads only the [`Config`] (no catalogue, network, store or clock): the
//! same config always gives the same document. The plan is first built as
//! a small document tree (headings, paragraphs, lists, tables of inline
//! text and code), then written as Markdown or as a self-contained HTML
//! page; the Markdown writer escapes what it writes, maud the HTML. Every
//! sentence lives in [`Words`], once per language; durations are worded in
//! [`crate::words`].

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use maud::{Markup, PreEscaped, html};

use crate::config::{
    AlarmKind, ChannelConfig, ChannelKind, CheckOutcome, ComponentKind, Config, Criticality,
    Language, PersonConfig, PolicyConfig, ProbeConfig, ProbeKind, RecipientRef, RoleConfig,
    ServiceConfig, StepOn, WebhookFormat,
};
use crate::html::{DOCTYPE, Text};
use crate::words::{Piece, duration_words, fill_with};

/// Output format of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
}

/// Renders the plan in the site's language.
pub fn render(config: &Config, format: Format) -> String {
    let w = words(config.site.language);
    let blocks = Plan { cfg: config, w }.build();
    match format {
        Format::Markdown => markdown(&blocks),
        Format::Html => html(&blocks, w, &format!("{} – {}", w.title, config.site.name)),
    }
}

// ---------------------------------------------------------------------
// The words, once per language
// ---------------------------------------------------------------------

/// Every heading and sentence of the plan. `{name}` marks where a value
/// goes (see [`fill`]).
struct Words {
    html_lang: &'static str,
    and: &'static str,
    or: &'static str,
    none: &'static str,
    dash: &'static str,

    title: &'static str,
    generated: &'static str,

    h_services: &'static str,
    services_intro: &'static str,
    services_cols: [&'static str; 4],
    criticality: fn(Criticality) -> &'static str,
    l_criticality: &'static str,
    l_owner: &'static str,
    l_contacts: &'static str,
    l_depends: &'static str,
    l_upstream: &'static str,
    l_policy: &'static str,
    policy_ref: &'static str,
    no_policy: &'static str,
    l_recovery: &'static str,
    backup: &'static str,
    primary: &'static str,
    deputy: &'static str,
    deputies: &'static str,
    rotation_short: &'static str,
    role_word: &'static str,
    group_word: &'static str,
    owner_each: &'static str,
    contacts_each: &'static str,
    the_owner: &'static str,
    the_contacts: &'static str,

    h_components: &'static str,
    components_intro: &'static str,
    component_kind: fn(ComponentKind) -> &'static str,
    building: &'static str,
    depends_on: &'static str,

    h_sources: &'static str,
    h_mqtt: &'static str,
    mqtt_intro: &'static str,
    mqtt_cols: [&'static str; 4],
    alarm_kind: fn(AlarmKind) -> &'static str,
    h_probes: &'static str,
    probes_intro: &'static str,
    probe: &'static str,
    status_any: &'static str,
    status_some: &'static str,
    /// What each kind of probe checks: `{target}` (and `{count}` echoes).
    probe_kind: fn(ProbeKind) -> &'static str,
    /// When a network probe fails, by kind; `{warn}` for tls.
    probe_fails: fn(ProbeKind) -> &'static str,
    /// `{max}`: a slower answer is degraded.
    probe_slow: &'static str,
    generator: &'static str,
    check: &'static str,
    below: &'static str,
    above: &'static str,
    equals: &'static str,
    outcome: fn(CheckOutcome) -> &'static str,
    api: &'static str,

    h_escalation: &'static str,
    escalation_intro: &'static str,
    h_policy: &'static str,
    applies_to: &'static str,
    applies_to_none: &'static str,
    on_open: &'static str,
    on_expected: &'static str,
    on_unacked: &'static str,
    on_open_for: &'static str,
    on_resolved: &'static str,
    on_crisis: &'static str,
    by: &'static str,
    no_steps: &'static str,
    deputy_after: &'static str,
    no_deputy_after: &'static str,
    status: &'static str,
    recovery: &'static str,
    severity_rise: &'static str,
    fb_instead: &'static str,
    fb_dropped: &'static str,
    fb_while_down: &'static str,
    fb_after_attempts: &'static str,
    h_estimate: &'static str,
    estimate_intro: &'static str,
    est_manual: &'static str,
    est_history: &'static str,
    est_kind: &'static str,
    est_default: &'static str,
    est_extend: &'static str,
    est_generator: &'static str,
    settle: &'static str,

    h_people: &'static str,
    h_roles: &'static str,
    roles_intro: &'static str,
    rotation: &'static str,
    weekdays: [&'static str; 7],
    moment: &'static str,
    h_groups: &'static str,
    no_groups: &'static str,
    h_phone_list: &'static str,
    phone_cols: [&'static str; 4],

    h_crisis: &'static str,
    crisis_intro: &'static str,
    crisis_staff: &'static str,
    no_staff: &'static str,
    h_meeting: &'static str,
    meeting_cols: [&'static str; 3],
    no_meeting: &'static str,

    h_channels: &'static str,
    channels_intro: &'static str,
    channel_cols: [&'static str; 6],
    channel_kind: &'static str,
    from_env: &'static str,
    hidden: &'static str,
    password_from_env: &'static str,
    timeout: &'static str,
    sender: &'static str,
    channel_word: fn(ChannelKind) -> &'static str,
}

const DA: Words = Words {
    html_lang: "da",
    and: "og",
    or: "eller",
    none: "ingen",
    dash: "–",

    title: "Beredskabsplan",
    generated: "Genereret fra konfigurationen med {cmd}, så planen og det kørende system \
                ikke kan komme ud af trit. Ret konfigurationen, ikke dette dokument.",

    h_services: "Kritiske ydelser",
    services_intro: "Ordnet efter kritikalitet ({order}), derefter efter id.",
    services_cols: ["Kritikalitet", "Ydelse", "Id", "Eskalering"],
    criticality: |c| match c {
        Criticality::Life => "livskritisk",
        Criticality::Critical => "kritisk",
        Criticality::Important => "vigtig",
    },
    l_criticality: "Kritikalitet",
    l_owner: "Systemejer",
    l_contacts: "Superbrugere og IT-kontaktpersoner",
    l_depends: "Afhænger direkte af",
    l_upstream: "Og derigennem af",
    l_policy: "Eskalering",
    policy_ref: "politik {id}",
    no_policy: "ingen politik: ingen får automatisk besked",
    l_recovery: "Får besked ved genopretning",
    backup: "reserve",
    primary: "primær",
    deputy: "stedfortræder",
    deputies: "stedfortrædere",
    rotation_short: "vagtordning",
    role_word: "rolle",
    group_word: "gruppen",
    owner_each: "systemejeren for hver berørt ydelse",
    contacts_each: "superbrugere og IT-kontaktpersoner for hver berørt ydelse",
    the_owner: "systemejeren",
    the_contacts: "superbrugere og IT-kontaktpersoner",

    h_components: "Komponenter",
    components_intro: "Det, der kan svigte. Et nedbrud går videre til alt, der afhænger af \
                       komponenten, medmindre dens reserve bærer.",
    component_kind: |k| match k {
        ComponentKind::Room => "rum",
        ComponentKind::Power => "strømforsyning",
        ComponentKind::Generator => "generator",
        ComponentKind::Ups => "UPS",
        ComponentKind::Network => "netværk",
        ComponentKind::Server => "server",
        ComponentKind::Application => "applikation",
        ComponentKind::Building => "bygning",
        ComponentKind::External => "ekstern leverandør",
    },
    building: "bygning",
    depends_on: "afhænger af",

    h_sources: "Alarmkilder",
    h_mqtt: "MQTT-sensorer",
    mqtt_intro: "Broker: {url}. {n} i komponenten er emnets N-te jokertegn. Hjerteslag: \
                 hører vi intet fra en sensor så længe, regnes sensoren for tabt.",
    mqtt_cols: ["Emne", "Type", "Komponent", "Hjerteslag"],
    alarm_kind: |k| match k {
        AlarmKind::Fire => "brand",
        AlarmKind::Power => "strøm",
        AlarmKind::Generator => "generator",
        AlarmKind::Ups => "UPS",
        AlarmKind::Environment => "miljø (temperatur, køling)",
        AlarmKind::Network => "netværk",
        AlarmKind::Server => "server",
        AlarmKind::Application => "applikation",
        AlarmKind::Security => "sikkerhed",
        AlarmKind::Generic => "generel",
    },
    h_probes: "Sundhedstjek",
    probes_intro: "En komponent er nede efter det angivne antal fejl i træk og oppe igen \
                   efter det angivne antal svar i orden.",
    probe: "{kind} med interval {every}, timeout {timeout}; nede efter {fail} fejl i træk, \
            oppe igen efter {recover} svar i orden; {status}.",
    status_any: "enhver 2xx-statuskode er i orden",
    status_some: "statuskode {codes} er i orden",
    probe_kind: |k| match k {
        ProbeKind::Http => "HTTP {target}",
        ProbeKind::Icmp => "ping (ICMP, {count} ekkoer) af {target}",
        ProbeKind::Tcp => "TCP-forbindelse til {target}",
        ProbeKind::Dns => "DNS-opslag {target}",
        ProbeKind::Tls => "TLS-certifikatet på {target}",
    },
    probe_fails: |k| match k {
        ProbeKind::Http => "",
        ProbeKind::Icmp => "fejl når alle ekkoer går tabt",
        ProbeKind::Tcp => "fejl uden forbindelse",
        ProbeKind::Dns => "fejl uden svar, ved SERVFAIL eller NXDOMAIN",
        ProbeKind::Tls => {
            "nedsat når certifikatet udløber inden for {warn}, fejl når det er \
                           udløbet eller ugyldigt"
        }
    },
    probe_slow: "langsommere end {max} er nedsat",
    generator: "Generator: kører ifølge {running}, brændstof i procent ifølge {fuel}; \
                driftstid på fuld tank {runtime}.",
    check: "Tjek: er {pointer} {cond}, er komponenten {then}.",
    below: "under",
    above: "over",
    equals: "lig med",
    outcome: |o| match o {
        CheckOutcome::Degraded => "nedsat",
        CheckOutcome::Down => "nede",
    },
    api: "Alarmer og meldinger fra personer, leverandører og andre kan også sendes til \
          HTTP-API'et: {alarms}, {alertmanager} og {reports}.",

    h_escalation: "Eskalering",
    escalation_intro: "Der eskaleres til roller, ikke navne. En hændelse følger politikkerne \
                       for alle de ydelser, den berører; hvert trin udløses højst én gang.",
    h_policy: "Politik {id}",
    applies_to: "Gælder for: {services}.",
    applies_to_none: "Ingen ydelser bruger denne politik.",
    on_open: "Når en hændelse åbnes",
    on_expected: "Forventet længere end {d}",
    on_unacked: "Ikke kvitteret efter {d}",
    on_open_for: "Stadig åben efter {d}",
    on_resolved: "Når hændelsen er løst",
    on_crisis: "Når niveauet hæves til krise",
    by: "via",
    no_steps: "Politikken har ingen trin.",
    deputy_after: "Kvitterer ingen inden for {d}, får rollens næste stedfortræder besked, \
                   og så videre til den sidste.",
    no_deputy_after: "Stedfortrædere får ikke automatisk besked.",
    status: "Alvorlige og kritiske hændelser: status til {who} med et interval på {d}, \
             indtil et tidspunkt for normal drift er kendt{via}.",
    recovery: "Ved genopretning får også genopretningslisten for hver berørt ydelse besked \
               (se ydelserne){via}, undtagen dem, trinnet »{resolved}« netop har underrettet.",
    severity_rise: "Stiger alvoren, efter at trin er udløst, får alle, de trin har \
                    underrettet, besked igen.",
    fb_instead: "{fallback} i stedet for {channel} {cond}",
    fb_dropped: "ingen {channel} {cond}",
    fb_while_down: "mens ydelsen {service} er nede",
    fb_after_attempts: "efter {n} mislykkede forsøg",
    h_estimate: "Forventet varighed",
    estimate_intro: "Den forventede varighed styrer eskaleringen. Den er den første af \
                     disse, der gælder:",
    est_manual: "et tidspunkt, en person eller leverandør har givet (regnet fra \
                 hændelsens start);",
    est_history: "historik: når mindst {n} løste hændelser har haft samme rodårsag, \
                  {q} %-fraktilen af deres varighed;",
    est_kind: "rodårsagens type:",
    est_default: "ellers {d}.",
    est_extend: "Varer en hændelse længere end forventet, forlænges forventningen med {d} \
                 ad gangen.",
    est_generator: "Kører serverrummet på generator, og rækker brændstoffet kortere end den \
                    forventede varighed, berører hændelsen alt, hvad netforsyningen fører \
                    til, og beskeden siger, hvornår brændstoffet slipper op.",
    settle: "Relaterede alarmer får {d} til at samle sig i én hændelse, før nogen får \
             besked; en brandalarm eller en livskritisk ydelse venter ikke.",

    h_people: "Roller og personer",
    h_roles: "Roller",
    roles_intro: "Primær først, derefter stedfortrædere i rækkefølge.",
    rotation: "vagtordning med vagtperioder på {every}; første vagt begynder {start}, i \
               denne rækkefølge:",
    weekdays: [
        "mandag", "tirsdag", "onsdag", "torsdag", "fredag", "lørdag", "søndag",
    ],
    moment: "{weekday} {date} kl. {time}",
    h_groups: "Grupper",
    no_groups: "Ingen grupper.",
    h_phone_list: "Telefonliste",
    phone_cols: ["Navn", "Telefon", "Mail", "Roller"],

    h_crisis: "Krisestab og mødesteder",
    crisis_intro: "Kriselederen kan hæve niveauet til krise. Så indkaldes krisestaben via \
                   {via} til det første mødested i prioriteret rækkefølge, hvis bygning \
                   ikke har en åben hændelse med brand- eller strømalarm.",
    crisis_staff: "Krisestab:",
    no_staff: "Ingen krisestab er konfigureret.",
    h_meeting: "Mødesteder",
    meeting_cols: ["Prioritet", "Mødested", "Bygning"],
    no_meeting: "Ingen mødesteder er konfigureret.",

    h_channels: "Kanaler",
    channels_intro: "Hemmeligheder står aldrig i planen; de læses fra miljøet, når \
                     systemet kører.",
    channel_cols: [
        "Id",
        "Type",
        "Reserve",
        "Kræver ydelse",
        "Forsøg",
        "Detaljer",
    ],
    channel_kind: "{word} ({kind})",
    from_env: "(fra miljøvariablen {var})",
    hidden: "(skjult)",
    password_from_env: "adgangskode fra miljøvariablen {var}",
    timeout: "timeout {d}",
    sender: "afsender {from}",
    channel_word: |k| match k {
        ChannelKind::SmsHttp => "SMS",
        ChannelKind::CallHttp => "opkald",
        ChannelKind::Smtp => "mail",
        ChannelKind::Webhook => "webhook",
        ChannelKind::Log => "log",
    },
};

const EN: Words = Words {
    html_lang: "en",
    and: "and",
    or: "or",
    none: "none",
    dash: "–",

    title: "Preparedness plan",
    generated: "Generated from the configuration by {cmd}, so that the plan and the running \
                system cannot drift apart. Change the configuration, not this document.",

    h_services: "Critical services",
    services_intro: "Ordered by criticality ({order}), then by id.",
    services_cols: ["Criticality", "Service", "Id", "Escalation"],
    criticality: |c| match c {
        Criticality::Life => "life-critical",
        Criticality::Critical => "critical",
        Criticality::Important => "important",
    },
    l_criticality: "Criticality",
    l_owner: "System owner",
    l_contacts: "Super users and IT contacts",
    l_depends: "Depends directly on",
    l_upstream: "And through them on",
    l_policy: "Escalation",
    policy_ref: "policy {id}",
    no_policy: "no policy: nobody is notified automatically",
    l_recovery: "Told on recovery",
    backup: "backup",
    primary: "primary",
    deputy: "deputy",
    deputies: "deputies",
    rotation_short: "rotation",
    role_word: "role",
    group_word: "group",
    owner_each: "the system owner of each affected service",
    contacts_each: "the super users and IT contacts of each affected service",
    the_owner: "the system owner",
    the_contacts: "the super users and IT contacts",

    h_components: "Components",
    components_intro: "What can fail. An outage passes on to everything that depends on the \
                       component, unless its backup carries.",
    component_kind: |k| match k {
        ComponentKind::Room => "room",
        ComponentKind::Power => "power supply",
        ComponentKind::Generator => "generator",
        ComponentKind::Ups => "UPS",
        ComponentKind::Network => "network",
        ComponentKind::Server => "server",
        ComponentKind::Application => "application",
        ComponentKind::Building => "building",
        ComponentKind::External => "external supplier",
    },
    building: "building",
    depends_on: "depends on",

    h_sources: "Alarm sources",
    h_mqtt: "MQTT sensors",
    mqtt_intro: "Broker: {url}. {n} in the component is the topic's N-th wildcard. \
                 Heartbeat: a sensor silent this long is counted as lost.",
    mqtt_cols: ["Topic", "Kind", "Component", "Heartbeat"],
    alarm_kind: |k| match k {
        AlarmKind::Fire => "fire",
        AlarmKind::Power => "power",
        AlarmKind::Generator => "generator",
        AlarmKind::Ups => "UPS",
        AlarmKind::Environment => "environment (temperature, cooling)",
        AlarmKind::Network => "network",
        AlarmKind::Server => "server",
        AlarmKind::Application => "application",
        AlarmKind::Security => "security",
        AlarmKind::Generic => "generic",
    },
    h_probes: "Health checks",
    probes_intro: "A component is down after the given number of failures in a row and up \
                   again after the given number of successes.",
    probe: "{kind} every {every}, timeout {timeout}; down after {fail} failures in a row, \
            up again after {recover} successes; {status}.",
    status_any: "any 2xx status is fine",
    status_some: "status {codes} is fine",
    probe_kind: |k| match k {
        ProbeKind::Http => "HTTP {target}",
        ProbeKind::Icmp => "ping (ICMP, {count} echoes) of {target}",
        ProbeKind::Tcp => "TCP connection to {target}",
        ProbeKind::Dns => "DNS query {target}",
        ProbeKind::Tls => "the TLS certificate of {target}",
    },
    probe_fails: |k| match k {
        ProbeKind::Http => "",
        ProbeKind::Icmp => "failed when all echoes are lost",
        ProbeKind::Tcp => "failed without a connection",
        ProbeKind::Dns => "failed without an answer, on SERVFAIL or NXDOMAIN",
        ProbeKind::Tls => {
            "degraded when the certificate expires within {warn}, failed when \
                           expired or invalid"
        }
    },
    probe_slow: "slower than {max} is degraded",
    generator: "Generator: running according to {running}, fuel percent according to \
                {fuel}; runtime on a full tank {runtime}.",
    check: "Check: if {pointer} is {cond}, the component is {then}.",
    below: "below",
    above: "above",
    equals: "equal to",
    outcome: |o| match o {
        CheckOutcome::Degraded => "degraded",
        CheckOutcome::Down => "down",
    },
    api: "Alarms, and reports from people, vendors and others, can also be sent to the \
          HTTP API: {alarms}, {alertmanager} and {reports}.",

    h_escalation: "Escalation",
    escalation_intro: "Escalation goes to roles, not names. An incident follows the policies \
                       of every service it affects; each step fires at most once.",
    h_policy: "Policy {id}",
    applies_to: "Applies to: {services}.",
    applies_to_none: "No service uses this policy.",
    on_open: "When an incident opens",
    on_expected: "Expected longer than {d}",
    on_unacked: "Unacknowledged after {d}",
    on_open_for: "Still open after {d}",
    on_resolved: "When resolved",
    on_crisis: "When the level is raised to crisis",
    by: "by",
    no_steps: "The policy has no steps.",
    deputy_after: "If no one acknowledges within {d}, the role's next deputy is notified, \
                   and so on to the last.",
    no_deputy_after: "Deputies are not notified automatically.",
    status: "Major and critical incidents: status to {who} every {d} until a return time \
             is known{via}.",
    recovery: "On recovery, each affected service's recovery list is told as well (see the \
               services){via}, except those the step “{resolved}” has just told.",
    severity_rise: "If the severity rises after steps have fired, everyone those steps told \
                    is told again.",
    fb_instead: "{fallback} instead of {channel} {cond}",
    fb_dropped: "no {channel} {cond}",
    fb_while_down: "while the service {service} is down",
    fb_after_attempts: "after {n} failed attempts",
    h_estimate: "Expected duration",
    estimate_intro: "The expected duration drives escalation. It is the first of these \
                     that applies:",
    est_manual: "a time given by a person or a vendor (counted from the incident's \
                 opening);",
    est_history: "history: once at least {n} resolved incidents had the same root cause, \
                  the {q} % quantile of their durations;",
    est_kind: "the kind of the root cause:",
    est_default: "otherwise {d}.",
    est_extend: "An incident that outlives its estimate is extended by {d} at a time.",
    est_generator: "When the server room runs on the generator and the fuel will not last \
                    the expected duration, the incident takes in everything mains power \
                    feeds, and the message says when the fuel runs out.",
    settle: "Related alarms get {d} to join one incident before anyone is told; a fire \
             alarm or a life-critical service does not wait.",

    h_people: "Roles and people",
    h_roles: "Roles",
    roles_intro: "Primary first, then deputies in order.",
    rotation: "rotation with shifts of {every}; the first shift begins {start}, in this \
               order:",
    weekdays: [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ],
    moment: "{weekday} {date} at {time}",
    h_groups: "Groups",
    no_groups: "No groups.",
    h_phone_list: "Phone list",
    phone_cols: ["Name", "Phone", "Mail", "Roles"],

    h_crisis: "Crisis staff and meeting places",
    crisis_intro: "The crisis leader may raise the level to crisis. The crisis staff is then \
                   summoned by {via} to the first meeting place in priority order whose \
                   building has no open incident with a fire or power alarm.",
    crisis_staff: "Crisis staff:",
    no_staff: "No crisis staff is configured.",
    h_meeting: "Meeting places",
    meeting_cols: ["Priority", "Meeting place", "Building"],
    no_meeting: "No meeting places are configured.",

    h_channels: "Channels",
    channels_intro: "Secrets are never printed here; they are read from the environment \
                     when the system runs.",
    channel_cols: [
        "Id",
        "Kind",
        "Fallback",
        "Requires service",
        "Attempts",
        "Details",
    ],
    channel_kind: "{word} ({kind})",
    from_env: "(from environment {var})",
    hidden: "(hidden)",
    password_from_env: "password from environment {var}",
    timeout: "timeout {d}",
    sender: "from {from}",
    channel_word: |k| match k {
        ChannelKind::SmsHttp => "SMS",
        ChannelKind::CallHttp => "phone call",
        ChannelKind::Smtp => "mail",
        ChannelKind::Webhook => "webhook",
        ChannelKind::Log => "log",
    },
};

fn words(language: Language) -> &'static Words {
    match language {
        Language::Da => &DA,
        Language::En => &EN,
    }
}

// ---------------------------------------------------------------------
// The document tree
// ---------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Inline {
    Text(String),
    Code(String),
    Strong(String),
}

/// A run of inline text.
#[derive(Debug, Clone, Default, PartialEq)]
struct Line(Vec<Inline>);

impl Line {
    fn text(s: impl AsRef<str>) -> Line {
        Line::default().t(s)
    }
    fn code(s: impl AsRef<str>) -> Line {
        Line::default().c(s)
    }
    fn t(mut self, s: impl AsRef<str>) -> Line {
        let s = s.as_ref();
        if s.is_empty() {
            return self;
        }
        match self.0.last_mut() {
            Some(Inline::Text(prev)) => prev.push_str(s),
            _ => self.0.push(Inline::Text(s.to_owned())),
        }
        self
    }
    fn c(mut self, s: impl AsRef<str>) -> Line {
        self.0.push(Inline::Code(s.as_ref().to_owned()));
        self
    }
    fn b(mut self, s: impl AsRef<str>) -> Line {
        self.0.push(Inline::Strong(s.as_ref().to_owned()));
        self
    }
    fn l(mut self, other: Line) -> Line {
        for i in other.0 {
            self = match i {
                Inline::Text(s) => self.t(s),
                other => {
                    self.0.push(other);
                    self
                }
            };
        }
        self
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A list item, with an optional nested list.
#[derive(Debug, Clone)]
struct Item {
    line: Line,
    sub: Vec<Item>,
    sub_ordered: bool,
}

impl Item {
    fn new(line: Line) -> Item {
        Item {
            line,
            sub: Vec::new(),
            sub_ordered: false,
        }
    }
}

#[derive(Debug, Clone)]
enum Block {
    /// Level 1 to 3.
    Heading(u8, Line),
    Para(Line),
    List {
        ordered: bool,
        items: Vec<Item>,
    },
    Table {
        head: Vec<String>,
        rows: Vec<Vec<Line>>,
    },
}

/// Fills `{name}` placeholders in a template with lines; text outside
/// them is kept as is, an unknown `{…}` too.
fn fill(template: &str, args: &[(&str, Line)]) -> Line {
    let mut out = Line::default();
    fill_with(template, args, |piece| {
        out = match piece {
            Piece::Text(s) => std::mem::take(&mut out).t(s),
            Piece::Value(line) => std::mem::take(&mut out).l(line.clone()),
        }
    });
    out
}

/// `a`, `a and b`, `a, b and c`.
fn join(w: &Words, items: Vec<Line>) -> Line {
    let n = items.len();
    let mut out = Line::default();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out = out.t(if i + 1 == n {
                format!(" {} ", w.and)
            } else {
                ", ".to_owned()
            });
        }
        out = out.l(item);
    }
    out
}

fn join_with(sep: &str, items: Vec<Line>) -> Line {
    let mut out = Line::default();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out = out.t(sep);
        }
        out = out.l(item);
    }
    out
}

// ---------------------------------------------------------------------
// Building the plan
// ---------------------------------------------------------------------

struct Plan<'a> {
    cfg: &'a Config,
    w: &'static Words,
}

impl Plan<'_> {
    fn build(&self) -> Vec<Block> {
        let mut out = vec![
            Block::Heading(
                1,
                Line::text(format!("{} – {}", self.w.title, self.cfg.site.name)),
            ),
            Block::Para(fill(
                self.w.generated,
                &[("cmd", Line::code("beredskab plan"))],
            )),
        ];
        self.services(&mut out);
        self.components(&mut out);
        self.sources(&mut out);
        self.escalation(&mut out);
        self.people(&mut out);
        self.crisis(&mut out);
        self.channels(&mut out);
        out
    }

    // -- lookups ------------------------------------------------------

    fn person(&self, id: &str) -> Option<&PersonConfig> {
        self.cfg.people.iter().find(|p| p.id == id)
    }
    fn role(&self, id: &str) -> Option<&RoleConfig> {
        self.cfg.roles.iter().find(|r| r.id == id)
    }
    fn service(&self, id: &str) -> Option<&ServiceConfig> {
        self.cfg.services.iter().find(|s| s.id == id)
    }
    fn channel(&self, id: &str) -> Option<&ChannelConfig> {
        self.cfg.channels.iter().find(|c| c.id == id)
    }
    /// What a component or service depends on, and its backup.
    fn node_deps(&self, id: &str) -> (&[String], Option<&str>) {
        if let Some(c) = self.cfg.components.iter().find(|c| c.id == id) {
            (&c.depends_on, c.backup.as_deref())
        } else if let Some(s) = self.service(id) {
            (&s.depends_on, None)
        } else {
            (&[], None)
        }
    }

    /// Services most critical first, then by id.
    fn services_ordered(&self) -> Vec<&ServiceConfig> {
        let mut v: Vec<&ServiceConfig> = self.cfg.services.iter().collect();
        v.sort_by(|a, b| (a.criticality, &a.id).cmp(&(b.criticality, &b.id)));
        v
    }

    // -- names --------------------------------------------------------

    fn service_name(&self, id: &str) -> Line {
        match self.service(id) {
            Some(ServiceConfig { name: Some(n), .. }) => Line::text(n),
            _ => Line::code(id),
        }
    }

    fn person_name(&self, id: &str) -> Line {
        match self.person(id) {
            Some(p) => Line::text(&p.name),
            None => Line::code(id),
        }
    }

    /// Name, phone and mail.
    fn person_contact(&self, id: &str) -> Line {
        let Some(p) = self.person(id) else {
            return Line::code(id);
        };
        let mut parts = vec![Line::text(&p.name)];
        parts.extend(p.phone.iter().map(Line::text));
        parts.extend(p.email.iter().map(Line::text));
        join_with(", ", parts)
    }

    fn role_label(&self, id: &str) -> Line {
        match self.role(id) {
            Some(RoleConfig { name: Some(n), .. }) => Line::text(n)
                .t(format!(" ({} ", self.w.role_word))
                .c(id)
                .t(")"),
            _ => Line::code(id),
        }
    }

    fn group_label(&self, id: &str) -> Line {
        let name = self
            .cfg
            .groups
            .iter()
            .find(|g| g.id == id)
            .and_then(|g| g.name.as_deref());
        match name {
            Some(n) => Line::text(n).t(" (").l(self.group_prefix()).c(id).t(")"),
            None => self.group_prefix().c(id),
        }
    }

    fn group_prefix(&self) -> Line {
        Line::text(format!("{} ", self.w.group_word))
    }

    /// A recipient reference in words. In a service's context, `owner` and
    /// `contacts` name that service's own.
    fn recipient(&self, r: &str, service: Option<&ServiceConfig>) -> Line {
        match RecipientRef::parse(r) {
            Ok(RecipientRef::Role(id)) => self.role_label(&id),
            Ok(RecipientRef::Person(id)) => self.person_name(&id),
            Ok(RecipientRef::Group(id)) => self.group_label(&id),
            Ok(RecipientRef::Owner) => match service {
                Some(s) => {
                    let whose = s
                        .owner
                        .as_deref()
                        .map(|o| self.recipient(o, None))
                        .unwrap_or_else(|| Line::text(self.w.none));
                    Line::text(self.w.the_owner).t(" (").l(whose).t(")")
                }
                None => Line::text(self.w.owner_each),
            },
            Ok(RecipientRef::Contacts) => match service {
                Some(s) => {
                    let whose: Vec<Line> =
                        s.contacts.iter().map(|c| self.recipient(c, None)).collect();
                    let whose = if whose.is_empty() {
                        Line::text(self.w.none)
                    } else {
                        join(self.w, whose)
                    };
                    Line::text(self.w.the_contacts).t(" (").l(whose).t(")")
                }
                None => Line::text(self.w.contacts_each),
            },
            Err(_) => Line::code(r),
        }
    }

    fn recipients(&self, refs: &[String], service: Option<&ServiceConfig>) -> Line {
        if refs.is_empty() {
            return Line::text(self.w.none);
        }
        join(
            self.w,
            refs.iter().map(|r| self.recipient(r, service)).collect(),
        )
    }

    /// A reference resolved down to people with their phone and mail.
    fn resolved(&self, r: &str) -> Line {
        match RecipientRef::parse(r) {
            Ok(RecipientRef::Role(id)) => {
                let head = self.role_label(&id).t(" → ");
                let Some(role) = self.role(&id) else {
                    return head.t(self.w.none);
                };
                let mut line = head;
                if let Some(p) = &role.primary {
                    line = line.l(self.person_contact(p));
                } else if let Some(rot) = &role.rotation {
                    let people = rot.people.iter().map(|p| self.person_name(p)).collect();
                    line = line
                        .t(format!("{}: ", self.w.rotation_short))
                        .l(join(self.w, people));
                }
                if !role.deputies.is_empty() {
                    let word = if role.deputies.len() == 1 {
                        self.w.deputy
                    } else {
                        self.w.deputies
                    };
                    let names = role.deputies.iter().map(|p| self.person_name(p)).collect();
                    line = line.t(format!("; {word}: ")).l(join(self.w, names));
                }
                line
            }
            Ok(RecipientRef::Person(id)) => self.person_contact(&id),
            Ok(RecipientRef::Group(id)) => {
                let members = self
                    .cfg
                    .groups
                    .iter()
                    .find(|g| g.id == id)
                    .map(|g| self.recipients(&g.members, None))
                    .unwrap_or_else(|| Line::text(self.w.none));
                self.group_label(&id).t(" → ").l(members)
            }
            _ => self.recipient(r, None),
        }
    }

    /// A channel in words: "SMS", "phone call", "mail"; the id is added
    /// where the word alone is ambiguous.
    fn channel_name(&self, id: &str) -> Line {
        let Some(c) = self.channel(id) else {
            return Line::code(id);
        };
        let word = self.channel_word(c);
        let shared = self
            .cfg
            .channels
            .iter()
            .filter(|o| self.channel_word(o) == word)
            .count()
            > 1;
        if c.kind == ChannelKind::Webhook && c.format.unwrap_or_default() == WebhookFormat::Json
            || shared
        {
            Line::text(format!("{word} (")).c(id).t(")")
        } else {
            Line::text(word)
        }
    }

    fn channel_word(&self, c: &ChannelConfig) -> &'static str {
        match (c.kind, c.format.unwrap_or_default()) {
            (ChannelKind::Webhook, WebhookFormat::Teams) => "Teams",
            (ChannelKind::Webhook, WebhookFormat::Slack) => "Slack",
            (ChannelKind::Webhook, WebhookFormat::Mattermost) => "Mattermost",
            (kind, _) => (self.w.channel_word)(kind),
        }
    }

    /// "by SMS and mail (no mail while Mail is down or after 5 failed
    /// attempts)"; empty without channels.
    fn via(&self, via: &[String]) -> Line {
        if via.is_empty() {
            return Line::default();
        }
        let names = via.iter().map(|v| self.channel_name(v)).collect();
        let mut line = Line::text(format!("{} ", self.w.by)).l(join(self.w, names));
        let notes: Vec<Line> = via
            .iter()
            .filter_map(|v| self.fallback_note(v, via))
            .collect();
        if !notes.is_empty() {
            line = line.t(" (").l(join_with("; ", notes)).t(")");
        }
        line
    }

    /// When a channel is replaced by its fallback, in words.
    fn fallback_note(&self, id: &str, via: &[String]) -> Option<Line> {
        let c = self.channel(id)?;
        // A fallback that is sent anyway only matters while the service
        // the channel needs is down.
        let fallback_sent = c.fallback.as_ref().is_some_and(|fb| via.contains(fb));
        let mut conds = Vec::new();
        if let Some(s) = &c.requires_service {
            conds.push(fill(self.w.fb_while_down, &[("service", Line::code(s))]));
        }
        if c.fallback.is_some() && !fallback_sent {
            conds.push(fill(
                self.w.fb_after_attempts,
                &[("n", Line::text(c.attempts().to_string()))],
            ));
        }
        if conds.is_empty() {
            return None;
        }
        let cond = join_with(&format!(" {} ", self.w.or), conds);
        let channel = self.channel_name(id);
        Some(match &c.fallback {
            Some(fb) if !fallback_sent => fill(
                self.w.fb_instead,
                &[
                    ("fallback", self.channel_name(fb)),
                    ("channel", channel),
                    ("cond", cond),
                ],
            ),
            _ => fill(self.w.fb_dropped, &[("channel", channel), ("cond", cond)]),
        })
    }

    /// An RFC 3339 time as the site's local weekday, date and time; the
    /// text as written if it does not parse.
    fn moment(&self, text: &str) -> String {
        let Ok(ts) = text.parse::<jiff::Timestamp>() else {
            return text.to_owned();
        };
        let tz =
            jiff::tz::TimeZone::get(&self.cfg.site.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
        let local = ts.to_zoned(tz);
        let day = usize::try_from(local.weekday().to_monday_zero_offset()).unwrap_or(0);
        crate::words::fill(
            self.w.moment,
            &[
                ("weekday", self.w.weekdays[day % 7]),
                ("date", &local.strftime("%Y-%m-%d").to_string()),
                ("time", &local.strftime("%H:%M").to_string()),
            ],
        )
    }

    fn dur(&self, d: Duration) -> Line {
        Line::text(duration_words(self.cfg.site.language, d))
    }

    // -- sections -----------------------------------------------------

    fn services(&self, out: &mut Vec<Block>) {
        let w = self.w;
        out.push(Block::Heading(2, Line::text(w.h_services)));
        let order = [
            Criticality::Life,
            Criticality::Critical,
            Criticality::Important,
        ]
        .map(|c| (w.criticality)(c))
        .join(", ");
        out.push(Block::Para(fill(
            w.services_intro,
            &[("order", Line::text(order))],
        )));
        let services = self.services_ordered();
        out.push(Block::Table {
            head: w.services_cols.map(str::to_owned).to_vec(),
            rows: services
                .iter()
                .map(|s| {
                    vec![
                        Line::text((w.criticality)(s.criticality)),
                        self.service_name(&s.id),
                        Line::code(&s.id),
                        s.policy.as_deref().map(Line::code).unwrap_or_default(),
                    ]
                })
                .collect(),
        });
        for s in services {
            let mut title = Line::code(&s.id);
            if let Some(n) = &s.name {
                title = title.t(format!(" {} {n}", w.dash));
            }
            out.push(Block::Heading(3, title));
            let label = |l: &str| Line::default().b(l).t(": ");
            let mut items = vec![Item::new(
                label(w.l_criticality).t((w.criticality)(s.criticality)),
            )];
            items.push(Item::new(label(w.l_owner).l(match &s.owner {
                Some(o) => self.resolved(o),
                None => Line::text(w.none),
            })));
            let mut contacts = Item::new(label(w.l_contacts));
            match s.contacts.as_slice() {
                [] => contacts.line = contacts.line.t(w.none),
                [one] => contacts.line = contacts.line.l(self.resolved(one)),
                many => contacts.sub = many.iter().map(|c| Item::new(self.resolved(c))).collect(),
            }
            items.push(contacts);
            let (direct, further) = self.upstream(s);
            items.push(Item::new(label(w.l_depends).l(self.chain(&direct))));
            if !further.is_empty() {
                items.push(Item::new(label(w.l_upstream).l(self.chain(&further))));
            }
            items.push(Item::new(label(w.l_policy).l(match &s.policy {
                Some(p) => fill(w.policy_ref, &[("id", Line::code(p))]),
                None => Line::text(w.no_policy),
            })));
            items.push(Item::new(
                label(w.l_recovery).l(self.recipients(&s.recovery_notify, Some(s))),
            ));
            out.push(Block::List {
                ordered: false,
                items,
            });
        }
    }

    /// A service's direct dependencies and everything further upstream,
    /// breadth first, each once. Backups are noted, not followed.
    fn upstream<'s>(&'s self, s: &'s ServiceConfig) -> (Vec<&'s str>, Vec<&'s str>) {
        let direct: Vec<&str> = s.depends_on.iter().map(String::as_str).collect();
        let mut seen: BTreeSet<&str> = direct.iter().copied().collect();
        seen.insert(&s.id);
        let mut further = Vec::new();
        let mut queue: Vec<&str> = direct.clone();
        let mut i = 0;
        while i < queue.len() {
            let (deps, _) = self.node_deps(queue[i]);
            for d in deps {
                if seen.insert(d) {
                    further.push(d.as_str());
                    queue.push(d);
                }
            }
            i += 1;
        }
        (direct, further)
    }

    fn chain(&self, ids: &[&str]) -> Line {
        if ids.is_empty() {
            return Line::text(self.w.none);
        }
        let items = ids
            .iter()
            .map(|id| {
                let line = Line::code(id);
                match self.node_deps(id).1 {
                    Some(b) => line.t(format!(" ({}: ", self.w.backup)).c(b).t(")"),
                    None => line,
                }
            })
            .collect();
        join_with(", ", items)
    }

    fn components(&self, out: &mut Vec<Block>) {
        let w = self.w;
        out.push(Block::Heading(2, Line::text(w.h_components)));
        out.push(Block::Para(Line::text(w.components_intro)));
        let items = self
            .cfg
            .components
            .iter()
            .map(|c| {
                let mut line = Line::code(&c.id).t(format!(" {} ", w.dash));
                if let Some(n) = &c.name {
                    line = line.t(format!("{n} "));
                }
                line = line.t(format!("({}", (w.component_kind)(c.kind)));
                if let Some(b) = &c.building {
                    line = line.t(format!(", {} ", w.building)).c(b);
                }
                line = line.t(")");
                if !c.depends_on.is_empty() {
                    let deps = c.depends_on.iter().map(Line::code).collect();
                    line = line.t(format!("; {} ", w.depends_on)).l(join(w, deps));
                }
                if let Some(b) = &c.backup {
                    line = line.t(format!("; {}: ", w.backup)).c(b);
                }
                Item::new(line)
            })
            .collect();
        out.push(Block::List {
            ordered: false,
            items,
        });
    }

    fn sources(&self, out: &mut Vec<Block>) {
        let w = self.w;
        out.push(Block::Heading(2, Line::text(w.h_sources)));
        if let Some(mqtt) = &self.cfg.mqtt {
            out.push(Block::Heading(3, Line::text(w.h_mqtt)));
            out.push(Block::Para(fill(
                w.mqtt_intro,
                &[
                    ("url", Line::code(without_userinfo(&mqtt.url))),
                    ("n", Line::code("{N}")),
                ],
            )));
            if !mqtt.subscriptions.is_empty() {
                out.push(Block::Table {
                    head: w.mqtt_cols.map(str::to_owned).to_vec(),
                    rows: mqtt
                        .subscriptions
                        .iter()
                        .map(|s| {
                            vec![
                                Line::code(&s.topic),
                                Line::text((w.alarm_kind)(s.kind)),
                                Line::code(&s.component),
                                s.heartbeat
                                    .map(|d| self.dur(d))
                                    .unwrap_or_else(|| Line::text(w.dash)),
                            ]
                        })
                        .collect(),
                });
            }
        }
        if !self.cfg.probes.is_empty() {
            out.push(Block::Heading(3, Line::text(w.h_probes)));
            out.push(Block::Para(Line::text(w.probes_intro)));
            let items = self.cfg.probes.iter().map(|p| self.probe(p)).collect();
            out.push(Block::List {
                ordered: false,
                items,
            });
        }
        out.push(Block::Para(fill(
            w.api,
            &[
                ("alarms", Line::code("POST /api/v1/alarms")),
                ("alertmanager", Line::code("POST /api/v1/alertmanager")),
                ("reports", Line::code("POST /api/v1/reports")),
            ],
        )));
    }

    /// What a probe checks: its kind and target.
    fn probe_target(&self, p: &ProbeConfig) -> Line {
        let target = match p.kind {
            ProbeKind::Http => without_userinfo(p.url()),
            _ => p.target(),
        };
        fill(
            (self.w.probe_kind)(p.kind),
            &[
                ("target", Line::code(target)),
                ("count", Line::text(p.echo_count().to_string())),
            ],
        )
    }

    fn probe(&self, p: &ProbeConfig) -> Item {
        let w = self.w;
        let status = if p.kind != ProbeKind::Http {
            let mut parts = vec![fill(
                (w.probe_fails)(p.kind),
                &[("warn", self.dur(p.warn_before()))],
            )];
            if let Some(max) = p.max_rtt {
                parts.push(fill(w.probe_slow, &[("max", self.dur(max))]));
            }
            join_with("; ", parts)
        } else if p.expect_status.is_empty() {
            Line::text(w.status_any)
        } else {
            let codes = p
                .expect_status
                .iter()
                .map(|c| Line::text(c.to_string()))
                .collect();
            fill(w.status_some, &[("codes", join(w, codes))])
        };
        let line = Line::default()
            .b(&p.id)
            .t(" → ")
            .c(&p.component)
            .t(": ")
            .l(fill(
                w.probe,
                &[
                    ("kind", self.probe_target(p)),
                    ("every", self.dur(p.every)),
                    ("timeout", self.dur(p.timeout)),
                    ("fail", Line::text(p.fail_after.to_string())),
                    ("recover", Line::text(p.recover_after.to_string())),
                    ("status", status),
                ],
            ));
        let mut item = Item::new(line);
        if let Some(g) = &p.generator {
            item.sub.push(Item::new(fill(
                w.generator,
                &[
                    ("running", Line::code(&g.running)),
                    ("fuel", Line::code(&g.fuel_percent)),
                    ("runtime", self.dur(g.full_tank_runtime)),
                ],
            )));
        }
        for c in &p.checks {
            let mut conds = Vec::new();
            if let Some(v) = c.below {
                conds.push(Line::text(format!("{} {v}", w.below)));
            }
            if let Some(v) = c.above {
                conds.push(Line::text(format!("{} {v}", w.above)));
            }
            if let Some(v) = &c.equals {
                conds.push(Line::text(format!("{} ", w.equals)).c(v.to_string()));
            }
            item.sub.push(Item::new(fill(
                w.check,
                &[
                    ("pointer", Line::code(&c.pointer)),
                    ("cond", join(w, conds)),
                    ("then", Line::text((w.outcome)(c.then))),
                ],
            )));
        }
        item
    }

    fn escalation(&self, out: &mut Vec<Block>) {
        let w = self.w;
        out.push(Block::Heading(2, Line::text(w.h_escalation)));
        out.push(Block::Para(Line::text(w.escalation_intro)));
        for p in &self.cfg.policies {
            self.policy(p, out);
        }
        self.estimate(out);
    }

    fn policy(&self, p: &PolicyConfig, out: &mut Vec<Block>) {
        let w = self.w;
        out.push(Block::Heading(
            3,
            fill(w.h_policy, &[("id", Line::code(&p.id))]),
        ));
        let users: Vec<Line> = self
            .services_ordered()
            .into_iter()
            .filter(|s| s.policy.as_deref() == Some(p.id.as_str()))
            .map(|s| self.service_name(&s.id))
            .collect();
        out.push(Block::Para(if users.is_empty() {
            Line::text(w.applies_to_none)
        } else {
            // Service names may hold commas of their own.
            fill(w.applies_to, &[("services", join_with("; ", users))])
        }));
        if p.steps.is_empty() {
            out.push(Block::Para(Line::text(w.no_steps)));
        } else {
            let items = p
                .steps
                .iter()
                .map(|step| {
                    let mut line = self
                        .condition(&step.on)
                        .t(": ")
                        .l(self.recipients(&step.notify, None));
                    let via = self.via(&step.via);
                    if !via.is_empty() {
                        line = line.t(", ").l(via);
                    }
                    Item::new(line.t("."))
                })
                .collect();
            out.push(Block::List {
                ordered: true,
                items,
            });
        }
        // Recovery and status use the `resolved` step's channels, else
        // the `open` step's (SPEC §3).
        let followup = |on: StepOn| {
            p.steps
                .iter()
                .find(|s| StepOn::parse(&s.on) == Ok(on))
                .map(|s| s.via.as_slice())
        };
        let followup_via = followup(StepOn::Resolved)
            .or_else(|| followup(StepOn::Open))
            .unwrap_or_default();
        let via = self.via(followup_via);
        let via = if via.is_empty() {
            via
        } else {
            Line::text(", ").l(via)
        };
        let mut notes = vec![match p.deputy_after {
            Some(d) => fill(w.deputy_after, &[("d", self.dur(d))]),
            None => Line::text(w.no_deputy_after),
        }];
        if let Some(d) = p.status_every
            && !p.status_to.is_empty()
        {
            notes.push(fill(
                w.status,
                &[
                    ("who", self.recipients(&p.status_to, None)),
                    ("d", self.dur(d)),
                    ("via", via.clone()),
                ],
            ));
        }
        notes.push(fill(
            w.recovery,
            &[("via", via), ("resolved", Line::text(w.on_resolved))],
        ));
        notes.push(Line::text(w.severity_rise));
        out.push(Block::List {
            ordered: false,
            items: notes.into_iter().map(Item::new).collect(),
        });
    }

    /// A step's `on` in words; the raw text if it does not parse.
    fn condition(&self, on: &str) -> Line {
        let w = self.w;
        match StepOn::parse(on) {
            Ok(StepOn::Open) => Line::text(w.on_open),
            Ok(StepOn::ExpectedOver(d)) => fill(w.on_expected, &[("d", self.dur(d))]),
            Ok(StepOn::Unacked(d)) => fill(w.on_unacked, &[("d", self.dur(d))]),
            Ok(StepOn::OpenFor(d)) => fill(w.on_open_for, &[("d", self.dur(d))]),
            Ok(StepOn::Resolved) => Line::text(w.on_resolved),
            Ok(StepOn::LevelCrisis) => Line::text(w.on_crisis),
            Err(_) => Line::code(on),
        }
    }

    fn estimate(&self, out: &mut Vec<Block>) {
        let w = self.w;
        let e = &self.cfg.estimate;
        out.push(Block::Heading(3, Line::text(w.h_estimate)));
        out.push(Block::Para(Line::text(w.estimate_intro)));
        let quantile = e.history.quantile * 100.0;
        let quantile = if (quantile - quantile.round()).abs() < 1e-9 {
            format!("{quantile:.0}")
        } else {
            format!("{quantile:.1}")
        };
        let mut items = vec![
            Item::new(Line::text(w.est_manual)),
            Item::new(fill(
                w.est_history,
                &[
                    ("n", Line::text(e.history.min_samples.to_string())),
                    ("q", Line::text(quantile)),
                ],
            )),
        ];
        if !e.by_kind.is_empty() {
            // Alarm kinds in their usual order; anything else after them.
            let mut kinds: Vec<(Line, Duration)> = AlarmKind::ALL
                .iter()
                .filter_map(|k| {
                    e.by_kind
                        .get(k.as_str())
                        .map(|d| (Line::text((w.alarm_kind)(*k)), d.0))
                })
                .collect();
            kinds.extend(
                e.by_kind
                    .iter()
                    .filter(|(k, _)| AlarmKind::parse(k).is_none())
                    .map(|(k, d)| (Line::code(k), d.0)),
            );
            let mut item = Item::new(Line::text(w.est_kind));
            item.sub = kinds
                .into_iter()
                .map(|(k, d)| Item::new(k.t(": ").l(self.dur(d))))
                .collect();
            items.push(item);
        }
        items.push(Item::new(fill(
            w.est_default,
            &[("d", self.dur(e.default))],
        )));
        out.push(Block::List {
            ordered: true,
            items,
        });
        let mut notes = vec![fill(w.est_extend, &[("d", self.dur(e.extend))])];
        if self.cfg.probes.iter().any(|p| p.generator.is_some()) {
            notes.push(Line::text(w.est_generator));
        }
        notes.push(fill(
            w.settle,
            &[("d", self.dur(self.cfg.correlation.settle))],
        ));
        out.push(Block::List {
            ordered: false,
            items: notes.into_iter().map(Item::new).collect(),
        });
    }

    fn people(&self, out: &mut Vec<Block>) {
        let w = self.w;
        out.push(Block::Heading(2, Line::text(w.h_people)));
        out.push(Block::Heading(3, Line::text(w.h_roles)));
        out.push(Block::Para(Line::text(w.roles_intro)));
        let items = self
            .cfg
            .roles
            .iter()
            .map(|r| {
                let mut item = Item::new(self.role_label(&r.id));
                item.sub_ordered = true;
                if let Some(p) = &r.primary {
                    item.sub.push(Item::new(
                        self.person_contact(p).t(format!(" ({})", w.primary)),
                    ));
                }
                if let Some(rot) = &r.rotation {
                    item.line = item.line.t(": ").l(fill(
                        w.rotation,
                        &[
                            ("every", self.dur(rot.every)),
                            ("start", Line::text(self.moment(&rot.start))),
                        ],
                    ));
                    item.sub
                        .extend(rot.people.iter().map(|p| Item::new(self.person_contact(p))));
                }
                item.sub.extend(
                    r.deputies
                        .iter()
                        .map(|d| Item::new(self.person_contact(d).t(format!(" ({})", w.deputy)))),
                );
                item
            })
            .collect();
        out.push(Block::List {
            ordered: false,
            items,
        });

        out.push(Block::Heading(3, Line::text(w.h_groups)));
        if self.cfg.groups.is_empty() {
            out.push(Block::Para(Line::text(w.no_groups)));
        } else {
            let items = self
                .cfg
                .groups
                .iter()
                .map(|g| {
                    Item::new(
                        self.group_label(&g.id)
                            .t(": ")
                            .l(self.recipients(&g.members, None)),
                    )
                })
                .collect();
            out.push(Block::List {
                ordered: false,
                items,
            });
        }

        out.push(Block::Heading(3, Line::text(w.h_phone_list)));
        let mut people: Vec<&PersonConfig> = self.cfg.people.iter().collect();
        people.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        let rows = people
            .into_iter()
            .map(|p| {
                let roles: Vec<Line> = self
                    .cfg
                    .roles
                    .iter()
                    .filter(|r| {
                        r.primary.as_deref() == Some(p.id.as_str())
                            || r.deputies.contains(&p.id)
                            || r.rotation
                                .as_ref()
                                .is_some_and(|rot| rot.people.contains(&p.id))
                    })
                    .map(|r| Line::code(&r.id))
                    .collect();
                vec![
                    Line::text(&p.name),
                    Line::text(p.phone.as_deref().unwrap_or(w.dash)),
                    Line::text(p.email.as_deref().unwrap_or(w.dash)),
                    join_with(", ", roles),
                ]
            })
            .collect();
        out.push(Block::Table {
            head: w.phone_cols.map(str::to_owned).to_vec(),
            rows,
        });
    }

    fn crisis(&self, out: &mut Vec<Block>) {
        let w = self.w;
        let crisis = &self.cfg.crisis;
        out.push(Block::Heading(2, Line::text(w.h_crisis)));
        let via = crisis.via.iter().map(|v| self.channel_name(v)).collect();
        out.push(Block::Para(fill(w.crisis_intro, &[("via", join(w, via))])));
        if crisis.staff.is_empty() {
            out.push(Block::Para(Line::text(w.no_staff)));
        } else {
            out.push(Block::Para(Line::default().b(w.crisis_staff)));
            out.push(Block::List {
                ordered: false,
                items: crisis
                    .staff
                    .iter()
                    .map(|r| Item::new(self.resolved(r)))
                    .collect(),
            });
        }
        out.push(Block::Heading(3, Line::text(w.h_meeting)));
        let mut places: Vec<_> = self.cfg.meeting_places.iter().collect();
        // A stable sort: equal priorities keep the file's order.
        places.sort_by_key(|m| m.priority);
        if places.is_empty() {
            out.push(Block::Para(Line::text(w.no_meeting)));
        } else {
            out.push(Block::Table {
                head: w.meeting_cols.map(str::to_owned).to_vec(),
                rows: places
                    .into_iter()
                    .map(|m| {
                        vec![
                            Line::text(m.priority.to_string()),
                            Line::text(&m.name),
                            m.building
                                .as_deref()
                                .map(Line::code)
                                .unwrap_or_else(|| Line::text(w.dash)),
                        ]
                    })
                    .collect(),
            });
        }
    }

    fn channels(&self, out: &mut Vec<Block>) {
        let w = self.w;
        out.push(Block::Heading(2, Line::text(w.h_channels)));
        out.push(Block::Para(Line::text(w.channels_intro)));
        if self.cfg.channels.is_empty() {
            out.push(Block::Para(Line::text(w.none)));
            return;
        }
        let dash = || Line::text(w.dash);
        let rows = self
            .cfg
            .channels
            .iter()
            .map(|c| {
                let mut details: Vec<Line> = c
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        let shown = match value.strip_prefix("env:") {
                            Some(var) => fill(w.from_env, &[("var", Line::code(var))]),
                            None => Line::text(w.hidden),
                        };
                        Line::code(name).t(": ").l(shown)
                    })
                    .collect();
                if let Some(var) = &c.password_env {
                    details.push(fill(w.password_from_env, &[("var", Line::code(var))]));
                }
                if let Some(from) = &c.from {
                    details.push(fill(w.sender, &[("from", Line::text(from))]));
                }
                if c.kind != ChannelKind::Log {
                    details.push(fill(w.timeout, &[("d", self.dur(c.timeout()))]));
                }
                vec![
                    Line::code(&c.id),
                    fill(
                        w.channel_kind,
                        &[
                            ("word", Line::text(self.channel_word(c))),
                            ("kind", Line::code(c.kind.as_str())),
                        ],
                    ),
                    c.fallback.as_deref().map(Line::code).unwrap_or_else(dash),
                    c.requires_service
                        .as_deref()
                        .map(Line::code)
                        .unwrap_or_else(dash),
                    Line::text(c.attempts().to_string()),
                    join_with("; ", details),
                ]
            })
            .collect();
        out.push(Block::Table {
            head: w.channel_cols.map(str::to_owned).to_vec(),
            rows,
        });
    }
}

/// A URL without `user:password@`, which must never reach paper.
fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let rest = match rest[..end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    match scheme {
        Some(s) => format!("{s}://{rest}"),
        None => rest.to_owned(),
    }
}

// ---------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------

fn markdown(blocks: &[Block]) -> String {
    let mut out = String::new();
    for (i, block) in blocks.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match block {
            Block::Heading(level, line) => {
                let _ = writeln!(
                    out,
                    "{} {}",
                    "#".repeat(usize::from(*level)),
                    md_line(line, false)
                );
            }
            Block::Para(line) => {
                let _ = writeln!(out, "{}", md_line(line, false));
            }
            Block::List { ordered, items } => md_list(&mut out, items, *ordered, 0),
            Block::Table { head, rows } => md_table(&mut out, head, rows),
        }
    }
    out
}

fn md_list(out: &mut String, items: &[Item], ordered: bool, indent: usize) {
    for (i, item) in items.iter().enumerate() {
        let marker = if ordered {
            format!("{}. ", i + 1)
        } else {
            "- ".to_owned()
        };
        let text = format!("{:indent$}{marker}{}", "", md_line(&item.line, false));
        let _ = writeln!(out, "{}", text.trim_end());
        // Nested items line up with the parent's text (CommonMark).
        md_list(out, &item.sub, item.sub_ordered, indent + marker.len());
    }
}

fn md_table(out: &mut String, head: &[String], rows: &[Vec<Line>]) {
    let cells: Vec<Vec<String>> = std::iter::once(head.iter().map(|h| md_text(h)).collect())
        .chain(
            rows.iter()
                .map(|r| r.iter().map(|l| md_line(l, true)).collect()),
        )
        .collect();
    let columns = head.len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            cells
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
                .max(3)
        })
        .collect();
    let row = |out: &mut String, r: &[String]| {
        out.push('|');
        for (c, width) in widths.iter().enumerate() {
            let cell = r.get(c).map(String::as_str).unwrap_or("");
            let pad = width - cell.chars().count();
            let _ = write!(out, " {cell}{:pad$} |", "");
        }
        out.push('\n');
    };
    row(out, &cells[0]);
    out.push('|');
    for width in &widths {
        let _ = write!(out, " {} |", "-".repeat(*width));
    }
    out.push('\n');
    for r in &cells[1..] {
        row(out, r);
    }
}

fn md_line(line: &Line, in_table: bool) -> String {
    let mut out = String::new();
    for inline in &line.0 {
        match inline {
            Inline::Text(s) => out.push_str(&md_text(s)),
            Inline::Strong(s) => {
                let _ = write!(out, "**{}**", md_text(s));
            }
            Inline::Code(s) => out.push_str(&md_code(s, in_table)),
        }
    }
    out
}

/// Escapes what CommonMark would read as markup, and the pipe, which
/// would end a table cell. Newlines become spaces: every block is one line.
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' => {
                out.push('\\');
                out.push(ch);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}

/// A code span with a fence longer than any backtick run inside; in a
/// table the pipe is escaped, which GFM allows even inside code.
fn md_code(s: &str, in_table: bool) -> String {
    let s = s.replace(['\n', '\r'], " ");
    let s = if in_table { s.replace('|', "\\|") } else { s };
    let mut run = 0;
    let mut max_run = 0;
    for c in s.chars() {
        if c == '`' {
            run += 1;
            max_run = max_run.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat(max_run + 1);
    if max_run > 0 || s.starts_with(' ') || s.ends_with(' ') {
        format!("{fence} {s} {fence}")
    } else {
        format!("{fence}{s}{fence}")
    }
}

// ---------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:60rem;\
margin:2rem auto;padding:0 1rem;line-height:1.45;color:#111;background:#fff}
h1{border-bottom:2px solid #333;padding-bottom:.3rem}
h2{border-bottom:1px solid #aaa;margin-top:2.2rem;padding-bottom:.2rem}
h3{margin-top:1.6rem}
table{border-collapse:collapse;margin:.6rem 0 1rem}
th,td{border:1px solid #aaa;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eee}
code{font-family:ui-monospace,'SFMono-Regular',Consolas,monospace;font-size:.9em;\
background:#f3f3f3;padding:0 .2em;border-radius:2px}
li{margin:.15rem 0}
@media print{body{margin:0;max-width:none;font-size:10pt;padding:0}\
h2,h3{break-after:avoid}table,li{break-inside:avoid}code{background:none;padding:0}}
";

/// The whole page. Every element of the document starts a line of its
/// own, so that saved plans compare line by line.
fn html(blocks: &[Block], w: &Words, title: &str) -> String {
    html! {
        (DOCTYPE) "\n"
        html lang=(w.html_lang) {
            "\n"
            head {
                "\n"
                meta charset="utf-8"; "\n"
                meta name="viewport" content="width=device-width, initial-scale=1"; "\n"
                title { (Text(title)) } "\n"
                style { "\n" (PreEscaped(CSS)) } "\n"
            }
            "\n"
            body {
                "\n"
                @for block in blocks {
                    (html_block(block))
                }
            }
            "\n"
        }
        "\n"
    }
    .into_string()
}

fn html_block(block: &Block) -> Markup {
    html! {
        @match block {
            Block::Heading(1, line) => { h1 { (html_line(line)) } "\n" }
            Block::Heading(2, line) => { h2 { (html_line(line)) } "\n" }
            Block::Heading(_, line) => { h3 { (html_line(line)) } "\n" }
            Block::Para(line) => { p { (html_line(line)) } "\n" }
            Block::List { ordered, items } => (html_list(items, *ordered)),
            Block::Table { head, rows } => {
                table {
                    "\n"
                    thead { tr { @for h in head { th { (Text(h)) } } } } "\n"
                    tbody {
                        "\n"
                        @for r in rows {
                            tr { @for cell in r { td { (html_line(cell)) } } } "\n"
                        }
                    }
                    "\n"
                }
                "\n"
            }
        }
    }
}

fn html_list(items: &[Item], ordered: bool) -> Markup {
    let items = html! {
        "\n"
        @for item in items {
            li {
                (html_line(&item.line))
                @if !item.sub.is_empty() {
                    "\n" (html_list(&item.sub, item.sub_ordered))
                }
            }
            "\n"
        }
    };
    html! {
        @if ordered { ol { (items) } } @else { ul { (items) } } "\n"
    }
}

fn html_line(line: &Line) -> Markup {
    html! {
        @for inline in &line.0 {
            @match inline {
                Inline::Text(s) => (Text(s)),
                Inline::Strong(s) => strong { (Text(s)) },
                Inline::Code(s) => code { (Text(s)) },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_take_lines() {
        let l = fill(
            "a {x} b {unknown} c {y}",
            &[("x", Line::code("X")), ("y", Line::text("Y"))],
        );
        assert_eq!(
            l.0,
            vec![
                Inline::Text("a ".into()),
                Inline::Code("X".into()),
                Inline::Text(" b {unknown} c Y".into()),
            ]
        );
    }

    #[test]
    fn lists_are_joined_with_and() {
        let items = |n: usize| (0..n).map(|i| Line::text(i.to_string())).collect();
        assert_eq!(md_line(&join(&EN, items(1)), false), "0");
        assert_eq!(md_line(&join(&EN, items(2)), false), "0 and 1");
        assert_eq!(md_line(&join(&DA, items(3)), false), "0, 1 og 2");
    }

    #[test]
    fn markdown_escapes_markup_and_pipes() {
        assert_eq!(md_text("a|b *c* <d>"), r"a\|b \*c\* \<d\>");
        assert_eq!(md_code("a|b", true), r"`a\|b`");
        assert_eq!(md_code("a`b", false), "`` a`b ``");
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            without_userinfo("mqtts://user:secret@broker:8883/x"),
            "mqtts://broker:8883/x"
        );
        assert_eq!(
            without_userinfo("http://10.0.0.1/health?a=b@c"),
            "http://10.0.0.1/health?a=b@c"
        );
    }
}
