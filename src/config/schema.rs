//! The configuration file's schema (SPEC §2) as serde structs.
//!
//! These types mirror the TOML one to one and carry no behaviour beyond
//! small helpers; `validate.rs` checks what serde cannot, and
//! `catalogue.rs` turns a valid `Config` into the graph the engine runs on.

use std::collections::BTreeMap;
use std::fmt;
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
/// The default probe interval and timeout.
pub const DEFAULT_PROBE_EVERY: Duration = Duration::from_secs(30);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// MQTT payloads larger than this are rejected as `oversized`.
pub const DEFAULT_MAX_PAYLOAD: ByteSize = ByteSize(64 * 1024);
/// The MQTT client's packet limit.
pub const DEFAULT_MAX_PACKET: ByteSize = ByteSize(8 * 1024 * 1024);

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub site: SiteConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenConfig>,
    #[serde(default)]
    pub store: StoreConfig,
    pub mqtt: Option<MqttConfig>,
    #[serde(default, rename = "probe")]
    pub probes: Vec<ProbeConfig>,
    #[serde(default, rename = "component")]
    pub components: Vec<ComponentConfig>,
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
    #[serde(default, rename = "person")]
    pub people: Vec<PersonConfig>,
    #[serde(default, rename = "role")]
    pub roles: Vec<RoleConfig>,
    #[serde(default, rename = "group")]
    pub groups: Vec<GroupConfig>,
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelConfig>,
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicyConfig>,
    #[serde(default)]
    pub estimate: EstimateConfig,
    #[serde(default)]
    pub correlation: CorrelationConfig,
    #[serde(default, rename = "meeting_place")]
    pub meeting_places: Vec<MeetingPlaceConfig>,
    #[serde(default)]
    pub crisis: CrisisConfig,
}

/// `[site]`: who we are and how messages are worded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub name: String,
    #[serde(default)]
    pub language: Language,
    /// IANA time zone for rotations and the times in messages.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

fn default_timezone() -> String {
    "Europe/Copenhagen".to_owned()
}

/// The language of message texts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Da,
    En,
}

/// `[server]`: the HTTP API, web UI and ack links.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Base of links in messages; defaults to `http://{listen}`.
    pub public_url: Option<String>,
    /// Environment variable holding the HMAC key for ack links.
    pub secret_env: Option<String>,
    #[serde(default = "default_ack_link_ttl", with = "humantime_serde")]
    pub ack_link_ttl: Duration,
    #[serde(default = "default_true")]
    pub metrics_public: bool,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            secret_env: None,
            ack_link_ttl: DEFAULT_ACK_LINK_TTL,
            metrics_public: true,
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
fn default_true() -> bool {
    true
}

/// `[[token]]`: an API token, stored only as its SHA-256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub sha256: String,
    pub scopes: Vec<Scope>,
    /// The person this token acts as.
    pub person: Option<String>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Ack,
    Ingest,
    Admin,
}

/// `[store]`: where incidents and alarms are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://FILE` (relative to the config file) or `postgres://…`.
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
    "sqlite://beredskab.db".to_owned()
}

/// `[mqtt]`: the broker the sensors publish to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub url: String,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    pub username: Option<String>,
    pub password_env: Option<String>,
    #[serde(default = "default_max_payload")]
    pub max_payload: ByteSize,
    #[serde(default = "default_max_packet")]
    pub max_packet: ByteSize,
    #[serde(default, rename = "subscription")]
    pub subscriptions: Vec<SubscriptionConfig>,
}

fn default_client_id() -> String {
    "beredskab".to_owned()
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
    pub topic: String,
    pub kind: AlarmKind,
    /// A component id; `{N}` is replaced by the N-th wildcard's segment.
    pub component: String,
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

/// `[[probe]]`: an HTTP health endpoint polled for a component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    pub id: String,
    pub component: String,
    pub url: String,
    #[serde(default = "default_probe_every", with = "humantime_serde")]
    pub every: Duration,
    #[serde(default = "default_probe_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_fail_after")]
    pub fail_after: u32,
    #[serde(default = "default_recover_after")]
    pub recover_after: u32,
    /// Accepted status codes; empty means any 2xx.
    #[serde(default)]
    pub expect_status: Vec<u16>,
    pub generator: Option<GeneratorProbeConfig>,
    #[serde(default, rename = "check")]
    pub checks: Vec<ProbeCheckConfig>,
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
    /// JSON pointer to a boolean: the generator runs.
    pub running: String,
    /// JSON pointer to a number 0–100.
    pub fuel_percent: String,
    #[serde(with = "humantime_serde")]
    pub full_tank_runtime: Duration,
}

/// `[[probe.check]]`: a condition on a probe's JSON body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeCheckConfig {
    pub pointer: String,
    pub below: Option<f64>,
    pub above: Option<f64>,
    pub equals: Option<toml::Value>,
    pub then: CheckOutcome,
}

/// What a failing check makes of its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckOutcome {
    Degraded,
    Down,
}

/// `[[component]]`: something services depend on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    pub id: String,
    pub name: Option<String>,
    pub kind: ComponentKind,
    pub building: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// A component that carries this one's dependents while this one is down.
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
    pub id: String,
    pub name: Option<String>,
    pub criticality: Criticality,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The system owner (a recipient reference).
    pub owner: Option<String>,
    /// Super users and IT contacts (recipient references).
    #[serde(default)]
    pub contacts: Vec<String>,
    pub policy: Option<String>,
    #[serde(default)]
    pub recovery_notify: Vec<String>,
}

/// How much a service matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    Life,
    Critical,
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
    pub id: String,
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
}

/// `[[role]]`: a primary with deputies, or a rotation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub id: String,
    pub name: Option<String>,
    pub primary: Option<String>,
    #[serde(default)]
    pub deputies: Vec<String>,
    pub rotation: Option<RotationConfig>,
}

/// A role's on-call rotation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// RFC 3339: when the first person's turn begins.
    pub start: String,
    pub people: Vec<String>,
}

/// `[[group]]`: a named list of recipients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub id: String,
    pub name: Option<String>,
    pub members: Vec<String>,
}

/// `[[channel]]`: a way to reach people.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub id: String,
    pub kind: ChannelKind,
    pub url: Option<String>,
    pub method: Option<String>,
    pub body: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub attempts: Option<u32>,
    /// Without a usable `fallback`, a notification this channel cannot
    /// deliver is retried until this long after it was decided (default
    /// 24h), then given up: logged at error, counted as failed and shown
    /// in the incident's timeline.
    #[serde(default, with = "humantime_serde")]
    pub give_up_after: Option<Duration>,
    pub tls: Option<SmtpTls>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub from: Option<String>,
    pub requires_service: Option<String>,
    pub fallback: Option<String>,
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
    #[default]
    Starttls,
    Tls,
    None,
}

/// The JSON shape a webhook posts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Teams,
    Slack,
    Mattermost,
}

/// `[[policy]]`: who is told what, when.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub id: String,
    #[serde(default, with = "humantime_serde")]
    pub deputy_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub status_every: Option<Duration>,
    #[serde(default)]
    pub status_to: Vec<String>,
    #[serde(default, rename = "step")]
    pub steps: Vec<StepConfig>,
}

/// `[[policy.step]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// The condition, e.g. `open` or `expected > 30m` (see `StepOn`).
    pub on: String,
    #[serde(default)]
    pub notify: Vec<String>,
    #[serde(default)]
    pub via: Vec<String>,
}

/// `[estimate]`: how expected durations are guessed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimateConfig {
    #[serde(default = "default_estimate", with = "humantime_serde")]
    pub default: Duration,
    #[serde(default)]
    pub by_kind: BTreeMap<String, HumanDuration>,
    #[serde(default = "default_extend", with = "humantime_serde")]
    pub extend: Duration,
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
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
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
    pub name: String,
    pub building: Option<String>,
    pub priority: u32,
}

/// `[crisis]`: who is summoned when the level is raised.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrisisConfig {
    #[serde(default)]
    pub staff: Vec<String>,
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
