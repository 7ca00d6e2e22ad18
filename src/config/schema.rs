//! The configuration file's schema (SPEC §2) as serde structs.
//!
//! These types mirror the TOML one to one and carry no behaviour beyond
//! small helpers; `validate.rs` checks what serde cannot, and
//! `catalogue.rs` turns a valid `Config` into the graph the engine runs on.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Consecutive probe failures before its component is down.
pub const DEFAULT_FAIL_AFTER: u32 = 3;
/// Consecutive probe successes before its component is up again.
pub const DEFAULT_RECOVER_AFTER: u32 = 2;
/// Time a channel request may take before it counts as failed.
pub const DEFAULT_CHANNEL_TIMEOUT: Duration = Duration::from_secs(10);
/// Failed attempts before a channel's fallback is used.
pub const DEFAULT_CHANNEL_ATTEMPTS: u32 = 5;
/// How long a channel without a fallback keeps retrying a notification.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Expected duration when nothing better is known.
pub const DEFAULT_ESTIMATE: Duration = Duration::from_secs(3600);
/// How much an incident that outlives its estimate is extended by.
pub const DEFAULT_EXTEND: Duration = Duration::from_secs(30 * 60);
/// Resolved incidents with the same root needed before history is trusted.
pub const DEFAULT_HISTORY_MIN_SAMPLES: usize = 5;
/// The quantile of past durations used as the estimate.
pub const DEFAULT_HISTORY_QUANTILE: f64 = 0.8;
/// Time related alarms get to join an incident before anyone is told.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(10);
/// Lifetime of an acknowledgement link.
pub const DEFAULT_ACK_LINK_TTL: Duration = Duration::from_secs(24 * 3600);
/// Where the daemon listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// How often a probe is checked.
pub const DEFAULT_PROBE_EVERY: Duration = Duration::from_secs(30);
/// How long a probe request may take before it counts as failed.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// ICMP echoes per check of an icmp probe.
pub const DEFAULT_ICMP_COUNT: u32 = 3;
/// How long before its certificate expires a tls probe is degraded.
pub const DEFAULT_WARN_BEFORE: Duration = Duration::from_secs(14 * 24 * 3600);
/// MQTT payloads larger than this are rejected as `oversized`.
pub const DEFAULT_MAX_PAYLOAD: ByteSize = ByteSize(64 * 1024);
/// The MQTT client's packet limit.
pub const DEFAULT_MAX_PACKET: ByteSize = ByteSize(8 * 1024 * 1024);
/// The MQTT client id, which names the broker's persistent session.
pub const DEFAULT_CLIENT_ID: &str = "beredskab";
/// The time zone of rotations and of the times in messages.
pub const DEFAULT_TIMEZONE: &str = "Europe/Copenhagen";
/// Where incidents are kept, relative to the config file.
pub const DEFAULT_STORE_URL: &str = "sqlite://beredskab.db";
/// Whether `/metrics` answers without a token.
pub const DEFAULT_METRICS_PUBLIC: bool = true;

/// Elements deserialized each behind an [`Arc`], to be shared.
pub(super) fn shared<'de, D, T>(d: D) -> Result<Vec<Arc<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Vec::<T>::deserialize(d)?
        .into_iter()
        .map(Arc::new)
        .collect())
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[site]`, required: the site's name, language and time zone.
    pub site: SiteConfig,
    /// `[server]`: the HTTP server and ack links; every key has a default.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[[token]]`, any number: the API's bearer tokens.
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenConfig>,
    /// `[store]`: where incidents are kept; defaults to [`DEFAULT_STORE_URL`].
    #[serde(default)]
    pub store: StoreConfig,
    /// `[mqtt]`, optional: without it no broker is contacted.
    pub mqtt: Option<MqttConfig>,
    /// `[[probe]]`, any number: health endpoints polled over HTTP, and
    /// network gear checked by ICMP, TCP, DNS or TLS. Shared with the
    /// catalogue, which the daemon holds beside the config: with 10,000
    /// probes each copy is 5 MB.
    #[serde(default, rename = "probe", deserialize_with = "shared")]
    pub probes: Vec<Arc<ProbeConfig>>,
    /// `[[component]]`, any number: the things that fail.
    #[serde(default, rename = "component")]
    pub components: Vec<ComponentConfig>,
    /// `[[service]]`, any number: the critical services of the plan.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
    /// `[[person]]`, any number: everyone who can be notified.
    #[serde(default, rename = "person")]
    pub people: Vec<PersonConfig>,
    /// `[[role]]`, any number: a primary with deputies, or a rotation.
    #[serde(default, rename = "role")]
    pub roles: Vec<RoleConfig>,
    /// `[[group]]`, any number: named lists of recipients.
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupConfig>,
    /// `[[channel]]`, any number: the ways people are reached.
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelConfig>,
    /// `[[policy]]`, any number: who is told what, when.
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicyConfig>,
    /// `[estimate]`: how an incident's expected duration is guessed.
    #[serde(default)]
    pub estimate: EstimateConfig,
    /// `[correlation]`: how long related alarms get to join an incident.
    #[serde(default)]
    pub correlation: CorrelationConfig,
    /// `[[meeting_place]]`, any number: where the crisis staff meets.
    #[serde(default, rename = "meeting_place")]
    pub meeting_places: Vec<MeetingPlaceConfig>,
    /// `[crisis]`: who is summoned when an incident's level is raised.
    #[serde(default)]
    pub crisis: CrisisConfig,
}

/// `[site]`: who we are and how messages are worded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Required, not empty: the name in mail subjects, webhooks and the plan.
    pub name: String,
    /// `"da"` (the default) or `"en"`: the language of message texts.
    #[serde(default)]
    pub language: Language,
    /// IANA time zone (e.g. `"Europe/Copenhagen"`, the default,
    /// [`DEFAULT_TIMEZONE`]) for rotations and the times in messages.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

fn default_timezone() -> String {
    DEFAULT_TIMEZONE.to_owned()
}

/// The language of message texts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// `da`: Danish.
    #[default]
    Da,
    /// `en`: English.
    En,
}

/// `[server]`: the HTTP API, web UI and ack links.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `IP:PORT` the HTTP server binds (default [`DEFAULT_LISTEN`]).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// An `http://` or `https://` URL, the base of links in messages;
    /// defaults to `http://{listen}`.
    pub public_url: Option<String>,
    /// The name of the environment variable holding the HMAC key for ack
    /// links; unset or empty, a key is made per run and links die at a restart.
    pub secret_env: Option<String>,
    /// Duration: how long an ack link works (default [`DEFAULT_ACK_LINK_TTL`]).
    #[serde(default = "default_ack_link_ttl", with = "humantime_serde")]
    pub ack_link_ttl: Duration,
    /// `true` (default, [`DEFAULT_METRICS_PUBLIC`]): `/metrics` needs no
    /// token; `false`: it needs one with the `read` scope.
    #[serde(default = "default_metrics_public")]
    pub metrics_public: bool,
    /// Path of a PEM certificate chain (the server's certificate first),
    /// given together with `tls_key`: the listener then serves HTTPS only
    /// (rustls). Relative to the config file; read again on every reload.
    pub tls_cert: Option<String>,
    /// Path of the PEM private key of `tls_cert`; see there.
    pub tls_key: Option<String>,
}

impl ServerConfig {
    /// The certificate and key files when both are set, relative paths
    /// taken from the folder of `config_file`.
    pub fn tls_files(&self, config_file: &Path) -> Option<(PathBuf, PathBuf)> {
        let dir = config_file.parent().unwrap_or_else(|| Path::new("."));
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((dir.join(cert), dir.join(key))),
            _ => None,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            secret_env: None,
            ack_link_ttl: DEFAULT_ACK_LINK_TTL,
            metrics_public: DEFAULT_METRICS_PUBLIC,
            tls_cert: None,
            tls_key: None,
        }
    }
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}
fn default_ack_link_ttl() -> Duration {
    DEFAULT_ACK_LINK_TTL
}
fn default_metrics_public() -> bool {
    DEFAULT_METRICS_PUBLIC
}

/// `[[token]]`: an API token, stored only as its SHA-256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A unique name; the `by` of what the token does when it has no `person`.
    pub name: String,
    /// The SHA-256 of the token as 64 hexadecimal digits; the token itself
    /// is never stored.
    pub sha256: String,
    /// At least one of `read`, `ack`, `ingest`, `admin`.
    pub scopes: Vec<Scope>,
    /// A person id: the token acts as this person (optional).
    pub person: Option<String>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `read`: list incidents and services, read `/metrics`.
    Read,
    /// `ack`: acknowledge, set ETAs, levels and notes, resolve.
    Ack,
    /// `ingest`: push alarms, Alertmanager bodies and reports.
    Ingest,
    /// `admin`: everything the other scopes allow.
    Admin,
}

/// `[store]`: where incidents and alarms are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://FILE`, relative to the config file (default
    /// [`DEFAULT_STORE_URL`]); `check` also takes `postgres://…`, which
    /// this build cannot run.
    #[serde(default = "default_store_url")]
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: default_store_url(),
        }
    }
}

fn default_store_url() -> String {
    DEFAULT_STORE_URL.to_owned()
}

/// `[mqtt]`: the broker the sensors publish to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Required: `mqtt://HOST[:PORT]` (port 1883 by default) or
    /// `mqtts://HOST[:PORT]` (TLS, 8883, trusting `SSL_CERT_FILE` or the
    /// system's roots).
    pub url: String,
    /// Not empty (default [`DEFAULT_CLIENT_ID`]): names the persistent
    /// session, so it must be fixed and unique on the broker.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// The broker login's user name (optional).
    pub username: Option<String>,
    /// The name of the environment variable holding the password
    /// (optional; needs `username`).
    pub password_env: Option<String>,
    /// Size (`"64KiB"`, `"1MB"` or bytes): larger payloads are rejected as
    /// `oversized` (default [`DEFAULT_MAX_PAYLOAD`]); at most `max_packet`.
    #[serde(default = "default_max_payload")]
    pub max_payload: ByteSize,
    /// Size: the client's packet limit (default [`DEFAULT_MAX_PACKET`]); the
    /// broker's `message_size_limit` belongs between `max_payload` and this.
    #[serde(default = "default_max_packet")]
    pub max_packet: ByteSize,
    /// `[[mqtt.subscription]]`, any number: the topics listened to.
    #[serde(default, rename = "subscription")]
    pub subscriptions: Vec<SubscriptionConfig>,
}

fn default_client_id() -> String {
    DEFAULT_CLIENT_ID.to_owned()
}
fn default_max_payload() -> ByteSize {
    DEFAULT_MAX_PAYLOAD
}
fn default_max_packet() -> ByteSize {
    DEFAULT_MAX_PACKET
}

/// `[[mqtt.subscription]]`: a topic filter mapped to components.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// An MQTT topic filter; `+` stands for one level, `#` (last) for the rest.
    pub topic: String,
    /// The kind of the alarms on these topics: `fire`, `power`, `generator`,
    /// `ups`, `environment`, `network`, `server`, `application`,
    /// `security` or `generic`.
    pub kind: AlarmKind,
    /// A component id; `{N}` (1-based) is replaced by the segment the N-th
    /// wildcard of `topic` stood for.
    pub component: String,
    /// Duration (optional): a topic silent this long after its first
    /// message raises a warning that the sensor is lost.
    #[serde(default, with = "humantime_serde")]
    pub heartbeat: Option<Duration>,
}

/// The kind of an alarm, which decides its default expected duration.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AlarmKind {
    Fire,
    Power,
    Generator,
    Ups,
    Environment,
    Network,
    Server,
    Application,
    Security,
    Generic,
}

impl AlarmKind {
    pub const ALL: [AlarmKind; 10] = [
        AlarmKind::Fire,
        AlarmKind::Power,
        AlarmKind::Generator,
        AlarmKind::Ups,
        AlarmKind::Environment,
        AlarmKind::Network,
        AlarmKind::Server,
        AlarmKind::Application,
        AlarmKind::Security,
        AlarmKind::Generic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::Fire => "fire",
            AlarmKind::Power => "power",
            AlarmKind::Generator => "generator",
            AlarmKind::Ups => "ups",
            AlarmKind::Environment => "environment",
            AlarmKind::Network => "network",
            AlarmKind::Server => "server",
            AlarmKind::Application => "application",
            AlarmKind::Security => "security",
            AlarmKind::Generic => "generic",
        }
    }

    pub fn parse(s: &str) -> Option<AlarmKind> {
        AlarmKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[probe]]`: a component's health checked on a timetable: an HTTP
/// health endpoint (the default), or network gear by ICMP echo, a TCP
/// connection, a DNS query or a TLS handshake (`kind`). Each kind has keys
/// of its own; a key of another kind is an error (`validate.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// A unique id: the probe's alarm key and its metrics label.
    pub id: String,
    /// The id of the component the probe watches.
    pub component: String,
    /// `http` (the default), `icmp`, `tcp`, `dns` or `tls`.
    #[serde(default)]
    pub kind: ProbeKind,
    /// http, required: the `http://` or `https://` URL requested (GET, no
    /// proxy).
    pub url: Option<String>,
    /// icmp, required: the IPv4 or IPv6 address (or host name) pinged.
    pub host: Option<String>,
    /// icmp: echoes per check (default [`DEFAULT_ICMP_COUNT`]); the check
    /// fails when all are lost.
    pub count: Option<u32>,
    /// icmp and tcp, optional duration: a slower round trip (or connect)
    /// makes the component degraded.
    #[serde(default, with = "humantime_serde")]
    pub max_rtt: Option<Duration>,
    /// tcp and tls, required: `HOST:PORT` connected to.
    pub address: Option<String>,
    /// dns, required: the server asked, `IP` or `IP:PORT` (port 53 by default).
    pub server: Option<String>,
    /// dns, required: the name asked for.
    pub name: Option<String>,
    /// dns: the record type asked for (default `A`); no answer of that type
    /// fails the check.
    pub record: Option<String>,
    /// tls, duration: a certificate expiring sooner makes the component
    /// degraded (default [`DEFAULT_WARN_BEFORE`]).
    #[serde(default, with = "humantime_serde")]
    pub warn_before: Option<Duration>,
    /// Duration: how often the probe is checked (default [`DEFAULT_PROBE_EVERY`]).
    #[serde(default = "default_probe_every", with = "humantime_serde")]
    pub every: Duration,
    /// Duration: a check slower than this fails (default
    /// [`DEFAULT_PROBE_TIMEOUT`]); for icmp it bounds all `count` echoes.
    #[serde(default = "default_probe_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failures before the component is down, at least 1
    /// (default [`DEFAULT_FAIL_AFTER`]).
    #[serde(default = "default_fail_after")]
    pub fail_after: u32,
    /// Consecutive successes before it is up again, at least 1 (default
    /// [`DEFAULT_RECOVER_AFTER`]).
    #[serde(default = "default_recover_after")]
    pub recover_after: u32,
    /// http: accepted status codes (100–599); empty, the default, means any 2xx.
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// http, `[probe.generator]` (optional): the body reports a generator's
    /// running state and fuel.
    pub generator: Option<GeneratorProbeConfig>,
    /// http, `[[probe.check]]`, any number: conditions on the JSON body.
    #[serde(default, rename = "check")]
    pub checks: Vec<ProbeCheckConfig>,
}

impl Default for ProbeConfig {
    /// An http probe with no id, component or URL and every default.
    fn default() -> Self {
        ProbeConfig {
            id: String::new(),
            component: String::new(),
            kind: ProbeKind::Http,
            url: None,
            host: None,
            count: None,
            max_rtt: None,
            address: None,
            server: None,
            name: None,
            record: None,
            warn_before: None,
            every: DEFAULT_PROBE_EVERY,
            timeout: DEFAULT_PROBE_TIMEOUT,
            fail_after: DEFAULT_FAIL_AFTER,
            recover_after: DEFAULT_RECOVER_AFTER,
            expect_status: Vec::new(),
            generator: None,
            checks: Vec::new(),
        }
    }
}

impl ProbeConfig {
    /// The URL of an http probe (empty for the other kinds).
    pub fn url(&self) -> &str {
        self.url.as_deref().unwrap_or("")
    }

    /// icmp: echoes per check.
    pub fn echo_count(&self) -> u32 {
        self.count.unwrap_or(DEFAULT_ICMP_COUNT)
    }

    /// dns: the record type asked for, as written (upper-cased).
    pub fn record_type(&self) -> String {
        self.record.as_deref().unwrap_or("A").to_ascii_uppercase()
    }

    /// tls: how long before expiry the certificate makes it degraded.
    pub fn warn_before(&self) -> Duration {
        self.warn_before.unwrap_or(DEFAULT_WARN_BEFORE)
    }

    /// What is checked, for the plan and logs: the URL, host, address or
    /// `name RECORD @ server`.
    pub fn target(&self) -> String {
        match self.kind {
            ProbeKind::Http => self.url().to_owned(),
            ProbeKind::Icmp => self.host.clone().unwrap_or_default(),
            ProbeKind::Tcp | ProbeKind::Tls => self.address.clone().unwrap_or_default(),
            ProbeKind::Dns => format!(
                "{} {} @ {}",
                self.name.as_deref().unwrap_or(""),
                self.record_type(),
                self.server.as_deref().unwrap_or("")
            ),
        }
    }
}

/// How a probe checks its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// A GET of `url`.
    #[default]
    Http,
    /// `count` ICMP echoes to `host`.
    Icmp,
    /// A TCP connection to `address`.
    Tcp,
    /// A query for `name` and `record` to `server`.
    Dns,
    /// A TLS handshake with `address`, and its certificate's expiry.
    Tls,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Http => "http",
            ProbeKind::Icmp => "icmp",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Dns => "dns",
            ProbeKind::Tls => "tls",
        }
    }

    /// The keys only this kind takes (beside those every probe has).
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            ProbeKind::Http => &["url", "expect_status", "generator", "check"],
            ProbeKind::Icmp => &["host", "count", "max_rtt"],
            ProbeKind::Tcp => &["address", "max_rtt"],
            ProbeKind::Dns => &["server", "name", "record"],
            ProbeKind::Tls => &["address", "warn_before"],
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_probe_every() -> Duration {
    DEFAULT_PROBE_EVERY
}
fn default_probe_timeout() -> Duration {
    DEFAULT_PROBE_TIMEOUT
}
fn default_fail_after() -> u32 {
    DEFAULT_FAIL_AFTER
}
fn default_recover_after() -> u32 {
    DEFAULT_RECOVER_AFTER
}

/// `[probe.generator]`: where a generator's status is in its JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorProbeConfig {
    /// A JSON pointer (`/running`) to whether the generator runs: a boolean,
    /// a number (not 0) or a state word such as `on`.
    pub running: String,
    /// A JSON pointer to the fuel level, a number 0–100.
    pub fuel_percent: String,
    /// Duration, required: how long a full tank lasts; runtime left is
    /// `fuel_percent`/100 × this.
    #[serde(with = "humantime_serde")]
    pub full_tank_runtime: Duration,
}

/// `[[probe.check]]`: a condition on a probe's JSON body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeCheckConfig {
    /// A JSON pointer (`/fuel_percent`) into the body; a value that is not
    /// there meets the condition.
    pub pointer: String,
    /// The condition holds when the value is a number less than this; give
    /// exactly one of `below`, `above` and `equals`.
    pub below: Option<f64>,
    /// The condition holds when the value is a number greater than this.
    pub above: Option<f64>,
    /// The condition holds when the value equals this string, number or
    /// boolean.
    pub equals: Option<toml::Value>,
    /// `degraded` or `down`: what the component is while the condition holds.
    pub then: CheckOutcome,
}

/// What a failing check makes of its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckOutcome {
    /// `degraded`: the component is degraded.
    Degraded,
    /// `down`: the probe counts as failed.
    Down,
}

/// `[[component]]`: something services depend on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// A unique id, shared with no service.
    pub id: String,
    /// The name people read; defaults to the id.
    pub name: Option<String>,
    /// `room`, `power`, `generator`, `ups`, `network`, `server`,
    /// `application`, `building` or `external`; decides its probe's alarm kind.
    pub kind: ComponentKind,
    /// A free label shared with meeting places: a fire or power alarm here
    /// rules out the meeting places in the same building.
    pub building: Option<String>,
    /// Ids of the components this one needs; impact flows from them to it.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// A component id that carries this one's dependents while this one is
    /// down (while the backup is not down itself).
    pub backup: Option<String>,
}

/// What a component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    Room,
    Power,
    Generator,
    Ups,
    Network,
    Server,
    Application,
    Building,
    External,
}

impl ComponentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Room => "room",
            ComponentKind::Power => "power",
            ComponentKind::Generator => "generator",
            ComponentKind::Ups => "ups",
            ComponentKind::Network => "network",
            ComponentKind::Server => "server",
            ComponentKind::Application => "application",
            ComponentKind::Building => "building",
            ComponentKind::External => "external",
        }
    }

    /// The kind of alarm a probe of this component raises.
    pub fn alarm_kind(self) -> AlarmKind {
        match self {
            ComponentKind::Room => AlarmKind::Environment,
            ComponentKind::Power => AlarmKind::Power,
            ComponentKind::Generator => AlarmKind::Generator,
            ComponentKind::Ups => AlarmKind::Ups,
            ComponentKind::Network => AlarmKind::Network,
            ComponentKind::Server => AlarmKind::Server,
            ComponentKind::Application => AlarmKind::Application,
            ComponentKind::Building | ComponentKind::External => AlarmKind::Generic,
        }
    }
}

/// `[[service]]`: a critical service from the plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// A unique id, shared with no component.
    pub id: String,
    /// The name people read; defaults to the id.
    pub name: Option<String>,
    /// `life`, `critical` or `important`: decides an incident's severity.
    pub criticality: Criticality,
    /// Ids of the components or services it needs; down when any of them is
    /// (unless a backup carries).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The system owner: a recipient reference (`role:ID`, `person:ID`,
    /// `group:ID`); what `owner` means in steps.
    pub owner: Option<String>,
    /// Super users and IT contacts: recipient references; what `contacts`
    /// means in steps.
    #[serde(default)]
    pub contacts: Vec<String>,
    /// The id of the policy an incident affecting it follows (optional).
    pub policy: Option<String>,
    /// Recipient references told when an incident that affected it resolves.
    #[serde(default)]
    pub recovery_notify: Vec<String>,
}

/// How much a service matters.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    /// `life`: down makes an incident critical, and it does not wait for
    /// `settle`.
    Life,
    /// `critical`: down makes an incident critical, degraded major.
    Critical,
    /// `important`: down makes an incident major.
    Important,
}

impl Criticality {
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Life => "life",
            Criticality::Critical => "critical",
            Criticality::Important => "important",
        }
    }
}

/// `[[person]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonConfig {
    /// A unique id, as in `person:ID` and a role's `primary`.
    pub id: String,
    /// The full name, used in mails and the plan.
    pub name: String,
    /// The number SMS and calls go to (optional; without it they fail).
    pub phone: Option<String>,
    /// The mail address `smtp` channels send to (optional).
    pub email: Option<String>,
}

/// `[[role]]`: a primary with deputies, or a rotation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// A unique id, as in `role:ID`.
    pub id: String,
    /// The name people read; defaults to the id.
    pub name: Option<String>,
    /// The person id who holds the role; give this or `rotation`.
    pub primary: Option<String>,
    /// Person ids told in order when nobody acknowledges within the
    /// policy's `deputy_after`.
    #[serde(default)]
    pub deputies: Vec<String>,
    /// An on-call rotation instead of a `primary`.
    pub rotation: Option<RotationConfig>,
}

/// A role's on-call rotation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// Duration: the length of one turn (`"1w"`); handovers keep the local
    /// time in `site.timezone`.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// RFC 3339: when the first person's turn begins.
    pub start: String,
    /// Person ids in turn order, at least one; without deputies, the next
    /// people in turn are the role's deputies.
    pub people: Vec<String>,
}

/// `[[group]]`: a named list of recipients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// A unique id, as in `group:ID`.
    pub id: String,
    /// The name people read (optional).
    pub name: Option<String>,
    /// Recipient references (`role:ID`, `person:ID`, `group:ID`, …); a
    /// group may not contain itself.
    pub members: Vec<String>,
}

/// `[[channel]]`: a way to reach people.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// A unique id, as in a step's `via`.
    pub id: String,
    /// `sms-http`, `call-http`, `smtp`, `webhook` or `log`.
    pub kind: ChannelKind,
    /// The gateway or webhook (`http://`, `https://`), or the mail relay
    /// (`smtp://`, `smtps://`); required by every kind but `log`.
    pub url: Option<String>,
    /// HTTP kinds: `GET`, `POST` (the default), `PUT` or `PATCH`.
    pub method: Option<String>,
    /// HTTP kinds: the request body with `{{phone}}`, `{{text}}` (ending
    /// with the ack link), `{{link}}`, `{{incident}}`, `{{name}}`, each
    /// JSON-escaped; sms/call default to
    /// [`DEFAULT_BODY`](super::template::DEFAULT_BODY).
    pub body: Option<String>,
    /// HTTP kinds: request headers; a value `env:VAR` is read from the
    /// environment (for secrets). `Content-Type` defaults to JSON.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Duration: one attempt longer than this fails (default
    /// [`DEFAULT_CHANNEL_TIMEOUT`]).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Failed attempts, at least 1, before `fallback` takes over (default
    /// [`DEFAULT_CHANNEL_ATTEMPTS`]).
    pub attempts: Option<u32>,
    /// Duration: without a usable `fallback`, a notification this channel
    /// cannot deliver is retried until this long after it was decided
    /// (default [`DEFAULT_GIVE_UP_AFTER`]), then given up: logged at error,
    /// counted as failed and shown in the incident's timeline.
    #[serde(default, with = "humantime_serde")]
    pub give_up_after: Option<Duration>,
    /// `smtp`: `starttls` (the default), `tls` or `none`; an `smtps://` url
    /// is `tls`.
    pub tls: Option<SmtpTls>,
    /// `smtp`: the relay login's user name (optional; needs `password_env`).
    pub username: Option<String>,
    /// `smtp`: the name of the environment variable holding the password.
    pub password_env: Option<String>,
    /// `smtp`, required: the sender address, optionally `Name <address>`.
    pub from: Option<String>,
    /// A service id: while that service is down, `fallback` is used instead.
    pub requires_service: Option<String>,
    /// A channel id used after `attempts` failures, at once for a failure
    /// no retry mends, and while `requires_service` is down.
    pub fallback: Option<String>,
    /// `webhook`: `json` (the default), `teams`, `slack` or `mattermost`;
    /// not together with `body`.
    pub format: Option<WebhookFormat>,
}

impl ChannelConfig {
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_CHANNEL_TIMEOUT)
    }
    pub fn attempts(&self) -> u32 {
        self.attempts.unwrap_or(DEFAULT_CHANNEL_ATTEMPTS)
    }
    pub fn give_up_after(&self) -> Duration {
        self.give_up_after.unwrap_or(DEFAULT_GIVE_UP_AFTER)
    }
}

/// How a channel delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelKind {
    SmsHttp,
    CallHttp,
    Smtp,
    Webhook,
    Log,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::SmsHttp => "sms-http",
            ChannelKind::CallHttp => "call-http",
            ChannelKind::Smtp => "smtp",
            ChannelKind::Webhook => "webhook",
            ChannelKind::Log => "log",
        }
    }
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// `starttls`: a plain connection that must upgrade to TLS (port 587).
    #[default]
    Starttls,
    /// `tls`: TLS from the start (port 465).
    Tls,
    /// `none`: no encryption (port 25).
    None,
}

/// The JSON shape a webhook posts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `json`: incident, reason, person, role, text, link, site and key.
    #[default]
    Json,
    /// `teams`: an Office 365 connector card.
    Teams,
    /// `slack`: `{"text"}` with Slack's escaping and link markup.
    Slack,
    /// `mattermost`: `{"text"}`.
    Mattermost,
}

/// `[[policy]]`: who is told what, when.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A unique id, as in a service's `policy`.
    pub id: String,
    /// Duration (optional): unacknowledged this long after a role was told,
    /// its next deputy is; without it, deputies are never told.
    #[serde(default, with = "humantime_serde")]
    pub deputy_after: Option<Duration>,
    /// Duration (optional): how often `status_to` is reminded of a major or
    /// critical incident without a manual ETA; without it, never.
    #[serde(default, with = "humantime_serde")]
    pub status_every: Option<Duration>,
    /// Recipient references that get the status reminders.
    #[serde(default)]
    pub status_to: Vec<String>,
    /// `[[policy.step]]`, any number: the escalation steps.
    #[serde(default, rename = "step")]
    pub steps: Vec<StepConfig>,
}

/// `[[policy.step]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// When the step fires, once per incident: `open`, `expected > DUR`,
    /// `unacked DUR`, `open DUR`, `resolved` or `level crisis` (see `StepOn`).
    pub on: String,
    /// Recipient references: `role:ID`, `person:ID`, `group:ID`, `owner`,
    /// `contacts`.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Channel ids: every recipient is sent on each; required with `notify`.
    #[serde(default)]
    pub via: Vec<String>,
}

/// `[estimate]`: how expected durations are guessed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimateConfig {
    /// Duration: the expected duration when nothing better is known
    /// (default [`DEFAULT_ESTIMATE`]).
    #[serde(default = "default_estimate", with = "humantime_serde")]
    pub default: Duration,
    /// Alarm kind to duration (`{ fire = "1d" }`): the expected duration by
    /// the root alarm's kind, used when history is too short.
    #[serde(default)]
    pub by_kind: BTreeMap<String, HumanDuration>,
    /// Duration: how much an incident that outlives its estimate is
    /// extended by (default [`DEFAULT_EXTEND`]).
    #[serde(default = "default_extend", with = "humantime_serde")]
    pub extend: Duration,
    /// `history = { … }`: estimates from past incidents with the same root.
    #[serde(default)]
    pub history: HistoryConfig,
}

impl Default for EstimateConfig {
    fn default() -> Self {
        Self {
            default: DEFAULT_ESTIMATE,
            by_kind: BTreeMap::new(),
            extend: DEFAULT_EXTEND,
            history: HistoryConfig::default(),
        }
    }
}

fn default_estimate() -> Duration {
    DEFAULT_ESTIMATE
}
fn default_extend() -> Duration {
    DEFAULT_EXTEND
}

/// `[estimate] history`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Resolved incidents with the same root needed, at least 1, before
    /// history is used (default [`DEFAULT_HISTORY_MIN_SAMPLES`]).
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
    /// In (0, 1]: the quantile of their durations taken, by nearest rank
    /// (default [`DEFAULT_HISTORY_QUANTILE`]).
    #[serde(default = "default_quantile")]
    pub quantile: f64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            min_samples: DEFAULT_HISTORY_MIN_SAMPLES,
            quantile: DEFAULT_HISTORY_QUANTILE,
        }
    }
}

fn default_min_samples() -> usize {
    DEFAULT_HISTORY_MIN_SAMPLES
}
fn default_quantile() -> f64 {
    DEFAULT_HISTORY_QUANTILE
}

/// `[correlation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationConfig {
    /// Duration: a new incident tells nobody this long, so related alarms
    /// join first (default [`DEFAULT_SETTLE`]); one with a firing fire alarm
    /// or a `life` service down does not wait.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        Self {
            settle: DEFAULT_SETTLE,
        }
    }
}

fn default_settle() -> Duration {
    DEFAULT_SETTLE
}

/// `[[meeting_place]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeetingPlaceConfig {
    /// Not empty: the name in crisis messages.
    pub name: String,
    /// The building label it shares with components: skipped while one of
    /// them has a firing fire or power alarm.
    pub building: Option<String>,
    /// Order of preference, 1 first; each should be unique.
    pub priority: u32,
}

/// `[crisis]`: who is summoned when the level is raised.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrisisConfig {
    /// Recipient references summoned when an incident's level becomes crisis.
    #[serde(default)]
    pub staff: Vec<String>,
    /// Channel ids the staff is summoned on; required with `staff`.
    #[serde(default)]
    pub via: Vec<String>,
}

/// A duration written as a humantime string, usable inside maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        humantime_serde::deserialize(d).map(HumanDuration)
    }
}

/// A size in bytes written as `64KiB`, `8MiB`, `512` or `1MB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Option<ByteSize> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().ok()?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return None,
        };
        n.checked_mul(mult).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(ByteSize(n)),
            Raw::Text(s) => ByteSize::parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {s:?}: expected a number with B, KiB, MiB or GiB"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(ByteSize::parse("64KiB"), Some(ByteSize(65536)));
        assert_eq!(ByteSize::parse("8MiB"), Some(ByteSize(8 << 20)));
        assert_eq!(ByteSize::parse("512"), Some(ByteSize(512)));
        assert_eq!(ByteSize::parse("1MB"), Some(ByteSize(1_000_000)));
        assert_eq!(ByteSize::parse("lots"), None);
        assert_eq!(ByteSize::parse("12 parsecs"), None);
    }
}
