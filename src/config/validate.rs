//! Semantic checks of a parsed config: what serde cannot see.
//!
//! References between sections (components, services, people, roles,
//! groups, channels, policies), dependency and fallback cycles, and values
//! whose type is right but whose content is not. Every problem is a
//! `Finding` with a path into the file (`["component", 3, "depends_on", 1]`)
//! that the loader turns into a line and column. All checks are linear in
//! the size of the config: a catalogue of 100,000 components validates in
//! well under a second.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::duration_in_bounds;
use super::load::Level;
use super::schema::{AlarmKind, ChannelKind, Config, ProbeConfig, ProbeKind, RoleConfig};
use super::step::{RecipientRef, StepOn};
use super::template::Template;
use crate::tls::KeyPairError;

/// One step of a path into the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// The value of a key.
    Key(String),
    /// An element of an array.
    Index(usize),
    /// The key itself rather than its value (e.g. a map key that is wrong).
    Name(String),
}

impl From<&str> for Seg {
    fn from(key: &str) -> Self {
        Seg::Key(key.to_owned())
    }
}

impl From<usize> for Seg {
    fn from(index: usize) -> Self {
        Seg::Index(index)
    }
}

/// `path!["component", i, "depends_on", j]`.
macro_rules! path {
    ($($seg:expr),* $(,)?) => { vec![$(Seg::from($seg)),*] };
}

/// A problem found by validation, located by its path.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub level: Level,
    pub path: Vec<Seg>,
    pub message: String,
}

/// Checks everything serde could not; errors and warnings, unordered.
pub fn validate(config: &Config) -> Vec<Finding> {
    let mut v = Validator::new(config);
    v.site_and_server();
    v.tokens();
    v.mqtt();
    v.probes();
    v.components();
    v.services();
    v.roles();
    v.groups();
    v.channels();
    v.policies();
    v.estimate();
    v.correlation();
    v.meeting_places_and_crisis();
    v.secrets();
    let graph = v.graph();
    v.dependency_cycles(&graph);
    v.unused(&graph);
    v.out
}

/// Checks the files the config names, read from the disk: the HTTPS
/// certificate and key must read, parse and belong together. `file` is the
/// config's own path; relative paths are taken from its folder.
pub fn files(config: &Config, file: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some((cert, key)) = config.server.tls_files(file) else {
        return out;
    };
    if let Err(e) = crate::tls::load_server_key(&cert, &key) {
        let (at, message) = match e {
            KeyPairError::Cert(m) => ("tls_cert", m),
            KeyPairError::Key(m) | KeyPairError::Mismatch(m) => ("tls_key", m),
        };
        out.push(Finding {
            level: Level::Error,
            path: path!["server", at],
            message,
        });
    }
    out
}

/// Ids of one kind of thing, to the index of its first definition.
type Index<'a> = HashMap<&'a str, usize>;

struct Validator<'a> {
    config: &'a Config,
    out: Vec<Finding>,
    components: Index<'a>,
    services: Index<'a>,
    people: Index<'a>,
    roles: Index<'a>,
    groups: Index<'a>,
    channels: Index<'a>,
    policies: Index<'a>,
}

impl<'a> Validator<'a> {
    fn new(config: &'a Config) -> Self {
        let mut v = Validator {
            config,
            out: Vec::new(),
            components: HashMap::new(),
            services: HashMap::new(),
            people: HashMap::new(),
            roles: HashMap::new(),
            groups: HashMap::new(),
            channels: HashMap::new(),
            policies: HashMap::new(),
        };
        let c = config;
        v.components = v.index("component", c.components.iter().map(|x| x.id.as_str()));
        v.services = v.index("service", c.services.iter().map(|x| x.id.as_str()));
        v.people = v.index("person", c.people.iter().map(|x| x.id.as_str()));
        v.roles = v.index("role", c.roles.iter().map(|x| x.id.as_str()));
        v.groups = v.index("group", c.groups.iter().map(|x| x.id.as_str()));
        v.channels = v.index("channel", c.channels.iter().map(|x| x.id.as_str()));
        v.policies = v.index("policy", c.policies.iter().map(|x| x.id.as_str()));
        v.index("probe", c.probes.iter().map(|x| x.id.as_str()));
        v
    }

    fn error(&mut self, path: Vec<Seg>, message: String) {
        self.out.push(Finding {
            level: Level::Error,
            path,
            message,
        });
    }

    fn warning(&mut self, path: Vec<Seg>, message: String) {
        self.out.push(Finding {
            level: Level::Warning,
            path,
            message,
        });
    }

    /// Indexes the ids of `[[kind]]`, reporting empty and duplicate ones.
    fn index(&mut self, kind: &str, ids: impl Iterator<Item = &'a str>) -> Index<'a> {
        let mut index = HashMap::new();
        for (i, id) in ids.enumerate() {
            if id.trim().is_empty() {
                self.error(path![kind, i, "id"], format!("{kind} id is empty"));
            } else if index.contains_key(id) {
                self.error(path![kind, i, "id"], format!("duplicate {kind} id {id:?}"));
            } else {
                index.insert(id, i);
            }
        }
        index
    }

    /// A duration that must be more than zero and at most
    /// [`MAX_DURATION`](super::MAX_DURATION).
    fn positive(&mut self, path: Vec<Seg>, what: &str, d: Duration) {
        if d.is_zero() {
            self.error(path, format!("{what} must be greater than zero"));
        } else {
            self.bounded(path, what, d);
        }
    }

    /// A duration that must be at most [`MAX_DURATION`](super::MAX_DURATION):
    /// humantime reads `18446744073709551615s`, which no plan means, and
    /// the engine's clock arithmetic and calendar spans (a rotation's turns)
    /// are then never asked to hold more.
    fn bounded(&mut self, path: Vec<Seg>, what: &str, d: Duration) {
        if !duration_in_bounds(d) {
            self.error(
                path,
                format!(
                    "{what} {} is longer than 100 years",
                    humantime::format_duration(d)
                ),
            );
        }
    }

    /// Checks a list of recipient references; `whose` names the holder in
    /// messages (`service "omsorg" owner`).
    fn recipients(&mut self, base: Vec<Seg>, list: &[String], whose: &str, in_service: bool) {
        for (i, text) in list.iter().enumerate() {
            let mut path = base.clone();
            path.push(Seg::Index(i));
            self.recipient(path, text, whose, in_service);
        }
    }

    fn recipient(&mut self, path: Vec<Seg>, text: &str, whose: &str, in_service: bool) {
        let r = match RecipientRef::parse(text) {
            Ok(r) => r,
            Err(e) => return self.error(path, format!("{whose}: {e}")),
        };
        let (kind, id, known) = match &r {
            RecipientRef::Role(id) => ("role", id, self.roles.contains_key(id.as_str())),
            RecipientRef::Person(id) => ("person", id, self.people.contains_key(id.as_str())),
            RecipientRef::Group(id) => ("group", id, self.groups.contains_key(id.as_str())),
            RecipientRef::Owner | RecipientRef::Contacts => {
                // A service's own owner and contacts cannot refer to
                // themselves; elsewhere these mean the affected services'.
                if in_service {
                    self.error(path, format!("{whose}: \"{r}\" cannot be used here"));
                }
                return;
            }
        };
        if !known {
            self.error(path, format!("{whose} names unknown {kind} {id:?}"));
        }
    }

    fn channel_refs(&mut self, base: Vec<Seg>, list: &[String], whose: &str) {
        for (i, id) in list.iter().enumerate() {
            if !self.channels.contains_key(id.as_str()) {
                let mut path = base.clone();
                path.push(Seg::Index(i));
                self.error(path, format!("{whose} uses unknown channel {id:?}"));
            }
        }
    }

    fn person_ref(&mut self, path: Vec<Seg>, id: &str, whose: &str) {
        if !self.people.contains_key(id) {
            self.error(path, format!("{whose} names unknown person {id:?}"));
        }
    }

    fn site_and_server(&mut self) {
        let c = self.config;
        if c.site.name.trim().is_empty() {
            self.error(path!["site", "name"], "site name is empty".into());
        }
        if let Err(e) = jiff::tz::TimeZone::get(&c.site.timezone) {
            self.error(
                path!["site", "timezone"],
                format!("unknown time zone {:?}: {e}", c.site.timezone),
            );
        }
        let s = &c.server;
        if s.listen.parse::<SocketAddr>().is_err() {
            self.error(
                path!["server", "listen"],
                format!("listen address {:?} is not IP:PORT", s.listen),
            );
        }
        if let Some(url) = &s.public_url
            && !is_http(url)
        {
            self.error(
                path!["server", "public_url"],
                format!("public_url {url:?} is not an http:// or https:// url"),
            );
        }
        match (&s.tls_cert, &s.tls_key) {
            (Some(_), None) => self.error(
                path!["server", "tls_cert"],
                "tls_cert needs tls_key as well".into(),
            ),
            (None, Some(_)) => self.error(
                path!["server", "tls_key"],
                "tls_key needs tls_cert as well".into(),
            ),
            _ => {}
        }
        self.positive(
            path!["server", "ack_link_ttl"],
            "ack_link_ttl",
            s.ack_link_ttl,
        );
        let url = &c.store.url;
        if !["sqlite://", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme) && url.len() > scheme.len())
        {
            self.error(
                path!["store", "url"],
                format!("store url {url:?} is not sqlite://FILE or postgres://…"),
            );
        }
    }

    fn tokens(&mut self) {
        let mut names = HashSet::new();
        for (i, t) in self.config.tokens.iter().enumerate() {
            let whose = format!("token {:?}", t.name);
            if !names.insert(t.name.as_str()) {
                self.error(
                    path!["token", i, "name"],
                    format!("duplicate token name {:?}", t.name),
                );
            }
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.error(
                    path!["token", i, "sha256"],
                    format!("{whose}: sha256 must be 64 hexadecimal digits"),
                );
            }
            if t.scopes.is_empty() {
                self.error(
                    path!["token", i, "scopes"],
                    format!("{whose} has no scopes"),
                );
            }
            if let Some(p) = &t.person {
                self.person_ref(path!["token", i, "person"], p, &whose);
            }
        }
    }

    fn mqtt(&mut self) {
        let Some(m) = &self.config.mqtt else { return };
        if !["mqtt://", "mqtts://"]
            .iter()
            .any(|scheme| m.url.starts_with(scheme) && m.url.len() > scheme.len())
        {
            self.error(
                path!["mqtt", "url"],
                format!(
                    "mqtt url {:?} is not mqtt://HOST:PORT or mqtts://HOST:PORT",
                    m.url
                ),
            );
        }
        if m.client_id.trim().is_empty() {
            self.error(path!["mqtt", "client_id"], "mqtt client_id is empty".into());
        }
        if m.max_payload > m.max_packet {
            self.error(
                path!["mqtt", "max_payload"],
                "mqtt max_payload is larger than max_packet".into(),
            );
        }
        for (i, s) in m.subscriptions.iter().enumerate() {
            let at = |key: &str| path!["mqtt", "subscription", i, key];
            let wildcards = match topic_filter_wildcards(&s.topic) {
                Ok(n) => n,
                Err(why) => {
                    self.error(at("topic"), format!("topic filter {:?} {why}", s.topic));
                    continue;
                }
            };
            match template_wildcards(&s.component) {
                Err(why) => self.error(
                    at("component"),
                    format!("subscription component {:?} {why}", s.component),
                ),
                Ok(refs) if refs.is_empty() => {
                    if !self.components.contains_key(s.component.as_str()) {
                        self.error(
                            at("component"),
                            format!("subscription names unknown component {:?}", s.component),
                        );
                    }
                }
                Ok(refs) => {
                    if let Some(n) = refs.into_iter().find(|&n| n == 0 || n > wildcards) {
                        self.error(
                            at("component"),
                            format!(
                                "subscription component {:?} refers to wildcard {{{n}}} but topic {:?} has {wildcards}",
                                s.component, s.topic
                            ),
                        );
                    }
                }
            }
            if let Some(h) = s.heartbeat {
                self.positive(at("heartbeat"), "heartbeat", h);
            }
        }
    }

    fn probes(&mut self) {
        for (i, p) in self.config.probes.iter().enumerate() {
            let whose = format!("probe {:?}", p.id);
            let at = |key: &str| path!["probe", i, key];
            if !self.components.contains_key(p.component.as_str()) {
                self.error(
                    at("component"),
                    format!("{whose} names unknown component {:?}", p.component),
                );
            }
            self.probe_kind(i, p);
            self.positive(at("every"), &format!("{whose}: every"), p.every);
            self.positive(at("timeout"), &format!("{whose}: timeout"), p.timeout);
            if p.fail_after == 0 {
                self.error(
                    at("fail_after"),
                    format!("{whose}: fail_after must be at least 1"),
                );
            }
            if p.recover_after == 0 {
                self.error(
                    at("recover_after"),
                    format!("{whose}: recover_after must be at least 1"),
                );
            }
            for (j, code) in p.expect_status.iter().enumerate() {
                if !(100..=599).contains(code) {
                    self.error(
                        path!["probe", i, "expect_status", j],
                        format!("{whose}: {code} is not an HTTP status code"),
                    );
                }
            }
            if let Some(g) = &p.generator {
                for (key, pointer) in [("running", &g.running), ("fuel_percent", &g.fuel_percent)] {
                    if !is_json_pointer(pointer) {
                        self.error(
                            path!["probe", i, "generator", key],
                            format!("{whose}: {pointer:?} is not a JSON pointer (starts with /)"),
                        );
                    }
                }
                self.positive(
                    path!["probe", i, "generator", "full_tank_runtime"],
                    &format!("{whose}: full_tank_runtime"),
                    g.full_tank_runtime,
                );
            }
            for (j, check) in p.checks.iter().enumerate() {
                let at = |key: &str| path!["probe", i, "check", j, key];
                if !is_json_pointer(&check.pointer) {
                    self.error(
                        at("pointer"),
                        format!(
                            "{whose}: {:?} is not a JSON pointer (starts with /)",
                            check.pointer
                        ),
                    );
                }
                let set = [
                    check.below.is_some(),
                    check.above.is_some(),
                    check.equals.is_some(),
                ];
                if set.iter().filter(|s| **s).count() != 1 {
                    self.error(
                        path!["probe", i, "check", j],
                        format!("{whose}: a check needs exactly one of below, above or equals"),
                    );
                }
                for (key, bound) in [("below", check.below), ("above", check.above)] {
                    if bound.is_some_and(|b| !b.is_finite()) {
                        self.error(at(key), format!("{whose}: {key} must be a finite number"));
                    }
                }
            }
        }
    }

    /// The keys of a probe's kind: those it needs are there and right,
    /// those of another kind are not there.
    fn probe_kind(&mut self, i: usize, p: &ProbeConfig) {
        let whose = format!("probe {:?}", p.id);
        let kind = p.kind;
        let at = |key: &str| path!["probe", i, key];
        let set: [(&str, bool); 12] = [
            ("url", p.url.is_some()),
            ("host", p.host.is_some()),
            ("count", p.count.is_some()),
            ("max_rtt", p.max_rtt.is_some()),
            ("address", p.address.is_some()),
            ("server", p.server.is_some()),
            ("name", p.name.is_some()),
            ("record", p.record.is_some()),
            ("warn_before", p.warn_before.is_some()),
            ("expect_status", !p.expect_status.is_empty()),
            ("generator", p.generator.is_some()),
            ("check", !p.checks.is_empty()),
        ];
        for (key, present) in set {
            if present && !kind.keys().contains(&key) {
                let owners: Vec<&str> = [
                    ProbeKind::Http,
                    ProbeKind::Icmp,
                    ProbeKind::Tcp,
                    ProbeKind::Dns,
                    ProbeKind::Tls,
                ]
                .into_iter()
                .filter(|k| k.keys().contains(&key))
                .map(ProbeKind::as_str)
                .collect();
                self.error(
                    path!["probe", i, Seg::Name(key.to_owned())],
                    format!(
                        "{whose}: {key} is a key of {} probes, not of a {kind} probe",
                        owners.join(" and ")
                    ),
                );
            }
        }
        let needs = |v: &mut Self, key: &str, value: Option<&String>| -> Option<String> {
            if value.is_none() {
                v.error(
                    path!["probe", i],
                    format!("{whose}: {kind} probes need {key}"),
                );
            }
            value.cloned()
        };
        match kind {
            ProbeKind::Http => {
                if let Some(url) = needs(self, "url", p.url.as_ref())
                    && !is_http(&url)
                {
                    self.error(
                        at("url"),
                        format!("{whose}: url {url:?} is not an http:// or https:// url"),
                    );
                }
            }
            ProbeKind::Icmp => {
                if let Some(host) = needs(self, "host", p.host.as_ref())
                    && host.parse::<std::net::IpAddr>().is_err()
                    && !is_host_name(&host)
                {
                    self.error(
                        at("host"),
                        format!("{whose}: host {host:?} is not an IP address or a host name"),
                    );
                }
                if let Some(count) = p.count
                    && !(1..=MAX_ICMP_COUNT).contains(&count)
                {
                    self.error(
                        at("count"),
                        format!("{whose}: count must be 1 to {MAX_ICMP_COUNT} echoes, not {count}"),
                    );
                }
            }
            ProbeKind::Tcp | ProbeKind::Tls => {
                if let Some(address) = needs(self, "address", p.address.as_ref())
                    && let Err(why) = host_port(&address)
                {
                    self.error(at("address"), format!("{whose}: address {address:?} {why}"));
                }
            }
            ProbeKind::Dns => {
                if let Some(server) = needs(self, "server", p.server.as_ref())
                    && dns_server(&server).is_none()
                {
                    self.error(
                        at("server"),
                        format!(
                            "{whose}: server {server:?} is not an IP address, with or without a port \
                             (10.0.0.53, 10.0.0.53:53, [fd00::53]:53)"
                        ),
                    );
                }
                if let Some(name) = needs(self, "name", p.name.as_ref())
                    && !is_host_name(name.trim_end_matches('.'))
                {
                    self.error(
                        at("name"),
                        format!("{whose}: name {name:?} is not a DNS name"),
                    );
                }
                if let Some(record) = &p.record
                    && !is_record_type(record)
                {
                    self.error(
                        at("record"),
                        format!(
                            "{whose}: record {record:?} is not a DNS record type a probe can ask for \
                             (A, AAAA, MX, TXT, CNAME, NS, SRV, PTR, SOA, …)"
                        ),
                    );
                }
            }
        }
        if let Some(max_rtt) = p.max_rtt {
            self.positive(at("max_rtt"), &format!("{whose}: max_rtt"), max_rtt);
            if max_rtt >= p.timeout && kind.keys().contains(&"max_rtt") {
                self.warning(
                    at("max_rtt"),
                    format!(
                        "{whose}: max_rtt {} is not below timeout {}: a check that slow fails",
                        humantime::format_duration(max_rtt),
                        humantime::format_duration(p.timeout)
                    ),
                );
            }
        }
        if let Some(warn) = p.warn_before {
            self.positive(at("warn_before"), &format!("{whose}: warn_before"), warn);
        }
    }

    fn components(&mut self) {
        for (i, c) in self.config.components.iter().enumerate() {
            for (j, d) in c.depends_on.iter().enumerate() {
                if self.components.contains_key(d.as_str()) {
                    continue;
                }
                let message = if self.services.contains_key(d.as_str()) {
                    format!(
                        "component {:?} depends on service {d:?}; components depend only on components",
                        c.id
                    )
                } else {
                    format!("component {:?} depends on unknown component {d:?}", c.id)
                };
                self.error(path!["component", i, "depends_on", j], message);
            }
            if let Some(b) = &c.backup {
                if b == &c.id {
                    self.error(
                        path!["component", i, "backup"],
                        format!("component {:?} is its own backup", c.id),
                    );
                } else if !self.components.contains_key(b.as_str()) {
                    self.error(
                        path!["component", i, "backup"],
                        format!("component {:?} has unknown backup component {b:?}", c.id),
                    );
                }
            }
        }
    }

    fn services(&mut self) {
        for (i, s) in self.config.services.iter().enumerate() {
            let whose = format!("service {:?}", s.id);
            if self.components.contains_key(s.id.as_str()) {
                self.error(
                    path!["service", i, "id"],
                    format!("{whose} has the same id as a component"),
                );
            }
            for (j, d) in s.depends_on.iter().enumerate() {
                if !self.components.contains_key(d.as_str())
                    && !self.services.contains_key(d.as_str())
                {
                    self.error(
                        path!["service", i, "depends_on", j],
                        format!("{whose} depends on unknown component or service {d:?}"),
                    );
                }
            }
            if let Some(p) = &s.policy
                && !self.policies.contains_key(p.as_str())
            {
                self.error(
                    path!["service", i, "policy"],
                    format!("{whose} uses unknown policy {p:?}"),
                );
            }
            if let Some(owner) = &s.owner {
                self.recipient(
                    path!["service", i, "owner"],
                    owner,
                    &format!("{whose} owner"),
                    true,
                );
            }
            self.recipients(
                path!["service", i, "contacts"],
                &s.contacts,
                &format!("{whose} contacts"),
                true,
            );
            self.recipients(
                path!["service", i, "recovery_notify"],
                &s.recovery_notify,
                &format!("{whose} recovery_notify"),
                false,
            );
        }
    }

    fn roles(&mut self) {
        for (i, r) in self.config.roles.iter().enumerate() {
            self.role(i, r);
        }
    }

    fn role(&mut self, i: usize, r: &RoleConfig) {
        let whose = format!("role {:?}", r.id);
        match (&r.primary, &r.rotation) {
            (Some(_), Some(_)) => self.error(
                path!["role", i, "rotation"],
                format!("{whose} has both a primary and a rotation; give one"),
            ),
            (None, None) => self.error(
                path!["role", i],
                format!("{whose} needs a primary or a rotation"),
            ),
            _ => {}
        }
        if let Some(p) = &r.primary {
            self.person_ref(path!["role", i, "primary"], p, &format!("{whose} primary"));
        }
        let mut seen = HashSet::new();
        for (j, d) in r.deputies.iter().enumerate() {
            let at = path!["role", i, "deputies", j];
            if r.primary.as_ref() == Some(d) {
                self.error(at, format!("{whose}: deputy {d:?} is also the primary"));
            } else if !seen.insert(d.as_str()) {
                self.error(at, format!("{whose}: deputy {d:?} is listed twice"));
            } else {
                self.person_ref(at, d, &format!("{whose} deputy"));
            }
        }
        if let Some(rot) = &r.rotation {
            let at = |key: &str| path!["role", i, "rotation", key];
            self.positive(at("every"), &format!("{whose}: rotation every"), rot.every);
            if let Err(e) = rot.start.parse::<jiff::Timestamp>() {
                self.error(
                    at("start"),
                    format!(
                        "{whose}: rotation start {:?} is not an RFC 3339 time: {e}",
                        rot.start
                    ),
                );
            }
            if rot.people.is_empty() {
                self.error(at("people"), format!("{whose}: rotation has no people"));
            }
            for (j, p) in rot.people.iter().enumerate() {
                self.person_ref(
                    path!["role", i, "rotation", "people", j],
                    p,
                    &format!("{whose} rotation"),
                );
            }
        }
    }

    fn groups(&mut self) {
        for (i, g) in self.config.groups.iter().enumerate() {
            self.recipients(
                path!["group", i, "members"],
                &g.members,
                &format!("group {:?} members", g.id),
                false,
            );
        }
        // A group that contains itself, directly or through others, would
        // expand forever.
        let edges: Vec<Vec<(usize, EdgeAt)>> = self
            .config
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                g.members
                    .iter()
                    .enumerate()
                    .filter_map(|(j, m)| match RecipientRef::parse(m) {
                        Ok(RecipientRef::Group(id)) => self
                            .groups
                            .get(id.as_str())
                            .map(|&to| (to, EdgeAt::Member(i, j))),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        let names = |i: usize| self.config.groups[i].id.as_str();
        for (path, cycle) in cycles(&edges, names) {
            self.error(path, format!("group cycle: {cycle}"));
        }
    }

    fn channels(&mut self) {
        let config = self.config;
        for (i, c) in config.channels.iter().enumerate() {
            let whose = format!("channel {:?}", c.id);
            let at = |key: &str| path!["channel", i, key];
            let kind = c.kind.as_str();
            match c.kind {
                ChannelKind::SmsHttp | ChannelKind::CallHttp | ChannelKind::Webhook => {
                    match (&c.body, c.kind, c.format) {
                        (Some(_), ChannelKind::Webhook, Some(_)) => self.error(
                            at("format"),
                            format!(
                                "{whose}: a webhook takes a body template or a format, not both"
                            ),
                        ),
                        (Some(body), _, _) => {
                            if let Err(e) = Template::parse(body) {
                                self.error(at("body"), format!("{whose}: {e}"));
                            }
                        }
                        _ => {}
                    }
                    match &c.url {
                        None => {
                            self.error(path!["channel", i], format!("{whose} ({kind}) needs a url"))
                        }
                        Some(url) if !is_http(url) => self.error(
                            at("url"),
                            format!("{whose}: url {url:?} is not an http:// or https:// url"),
                        ),
                        Some(_) => {}
                    }
                }
                ChannelKind::Smtp => {
                    match &c.url {
                        None => {
                            self.error(path!["channel", i], format!("{whose} (smtp) needs a url"))
                        }
                        Some(url)
                            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) =>
                        {
                            self.error(
                                at("url"),
                                format!("{whose}: url {url:?} is not an smtp:// or smtps:// url"),
                            )
                        }
                        Some(_) => {}
                    }
                    match &c.from {
                        None => {
                            self.error(path!["channel", i], format!("{whose} (smtp) needs from"))
                        }
                        Some(from) if !from.contains('@') => self.error(
                            at("from"),
                            format!("{whose}: from {from:?} is not a mail address"),
                        ),
                        Some(_) => {}
                    }
                }
                ChannelKind::Log => {}
            }
            let http = matches!(
                c.kind,
                ChannelKind::SmsHttp | ChannelKind::CallHttp | ChannelKind::Webhook
            );
            if c.format.is_some() && c.kind != ChannelKind::Webhook {
                self.error(
                    at("format"),
                    format!("{whose}: format applies only to webhook channels"),
                );
            }
            if c.tls.is_some() && c.kind != ChannelKind::Smtp {
                self.error(
                    at("tls"),
                    format!("{whose}: tls applies only to smtp channels"),
                );
            }
            if c.from.is_some() && c.kind != ChannelKind::Smtp {
                self.error(
                    at("from"),
                    format!("{whose}: from applies only to smtp channels"),
                );
            }
            for (key, set) in [
                ("method", c.method.is_some()),
                ("body", c.body.is_some()),
                ("headers", !c.headers.is_empty()),
            ] {
                if set && !http {
                    self.error(
                        at(key),
                        format!("{whose}: {key} applies only to http channels (sms-http, call-http, webhook)"),
                    );
                }
            }
            if let Some(m) = &c.method
                && !matches!(m.as_str(), "GET" | "POST" | "PUT" | "PATCH")
            {
                self.error(
                    at("method"),
                    format!("{whose}: method {m:?} is not GET, POST, PUT or PATCH"),
                );
            }
            for (name, value) in &c.headers {
                if name.is_empty() || !name.bytes().all(is_header_name_byte) {
                    self.error(
                        path!["channel", i, "headers", Seg::Name(name.clone())],
                        format!("{whose}: {name:?} is not a valid header name"),
                    );
                }
                let bad = match value.strip_prefix("env:") {
                    Some(var) => {
                        var.is_empty()
                            || var.contains(['=', '\0'])
                            || var.contains(char::is_whitespace)
                    }
                    None => value.chars().any(|ch| ch.is_control() && ch != '\t'),
                };
                if bad {
                    self.error(
                        path!["channel", i, "headers", name.as_str()],
                        format!("{whose}: header {name:?} has an invalid value (a literal without control characters, or env:VARIABLE)"),
                    );
                }
            }
            if let Some(g) = c.give_up_after {
                self.positive(at("give_up_after"), &format!("{whose}: give_up_after"), g);
            }
            if let Some(t) = c.timeout {
                self.positive(at("timeout"), &format!("{whose}: timeout"), t);
            }
            if c.attempts == Some(0) {
                self.error(
                    at("attempts"),
                    format!("{whose}: attempts must be at least 1"),
                );
            }
            if let Some(s) = &c.requires_service
                && !self.services.contains_key(s.as_str())
            {
                self.error(
                    at("requires_service"),
                    format!("{whose} requires unknown service {s:?}"),
                );
            }
            if let Some(f) = &c.fallback
                && !self.channels.contains_key(f.as_str())
            {
                self.error(
                    at("fallback"),
                    format!("{whose} falls back to unknown channel {f:?}"),
                );
            }
        }
        let edges: Vec<Vec<(usize, EdgeAt)>> = config
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.fallback
                    .as_deref()
                    .and_then(|f| self.channels.get(f))
                    .map(|&to| (to, EdgeAt::Fallback(i)))
                    .into_iter()
                    .collect()
            })
            .collect();
        let names = |i: usize| config.channels[i].id.as_str();
        for (path, cycle) in cycles(&edges, names) {
            self.error(path, format!("fallback cycle: {cycle}"));
        }
    }

    fn policies(&mut self) {
        for (i, p) in self.config.policies.iter().enumerate() {
            let whose = format!("policy {:?}", p.id);
            if let Some(d) = p.deputy_after {
                self.positive(
                    path!["policy", i, "deputy_after"],
                    &format!("{whose}: deputy_after"),
                    d,
                );
            }
            if let Some(d) = p.status_every {
                self.positive(
                    path!["policy", i, "status_every"],
                    &format!("{whose}: status_every"),
                    d,
                );
            }
            self.recipients(
                path!["policy", i, "status_to"],
                &p.status_to,
                &format!("{whose} status_to"),
                false,
            );
            for (j, step) in p.steps.iter().enumerate() {
                let step_name = format!("{whose} step {}", j + 1);
                let at = |key: &str| path!["policy", i, "step", j, key];
                if let Err(e) = StepOn::parse(&step.on) {
                    self.error(at("on"), format!("{step_name}: {e}"));
                }
                self.recipients(
                    at("notify"),
                    &step.notify,
                    &format!("{step_name} notify"),
                    false,
                );
                self.channel_refs(at("via"), &step.via, &step_name);
                if !step.notify.is_empty() && step.via.is_empty() {
                    self.error(
                        path!["policy", i, "step", j],
                        format!("{step_name} notifies people but has no via"),
                    );
                }
            }
        }
    }

    fn estimate(&mut self) {
        let e = &self.config.estimate;
        self.positive(path!["estimate", "default"], "estimate default", e.default);
        self.positive(path!["estimate", "extend"], "estimate extend", e.extend);
        for (kind, d) in &e.by_kind {
            if AlarmKind::parse(kind).is_none() {
                let kinds: Vec<&str> = AlarmKind::ALL.iter().map(|k| k.as_str()).collect();
                self.error(
                    path!["estimate", "by_kind", Seg::Name(kind.clone())],
                    format!(
                        "estimate by_kind: {kind:?} is not an alarm kind ({})",
                        kinds.join(", ")
                    ),
                );
            } else {
                self.positive(
                    path!["estimate", "by_kind", kind.as_str()],
                    &format!("estimate by_kind {kind}"),
                    d.0,
                );
            }
        }
        let h = &e.history;
        if !(h.quantile > 0.0 && h.quantile <= 1.0) {
            self.error(
                path!["estimate", "history", "quantile"],
                format!("estimate history quantile {} is not in (0, 1]", h.quantile),
            );
        }
        if h.min_samples == 0 {
            self.error(
                path!["estimate", "history", "min_samples"],
                "estimate history min_samples must be at least 1".into(),
            );
        }
    }

    fn correlation(&mut self) {
        let settle = self.config.correlation.settle;
        self.bounded(path!["correlation", "settle"], "correlation settle", settle);
    }

    fn meeting_places_and_crisis(&mut self) {
        let mut priorities: HashMap<u32, &str> = HashMap::new();
        for (i, m) in self.config.meeting_places.iter().enumerate() {
            if m.name.trim().is_empty() {
                self.error(
                    path!["meeting_place", i, "name"],
                    "meeting place name is empty".into(),
                );
            }
            if let Some(other) = priorities.insert(m.priority, &m.name) {
                priorities.insert(m.priority, other);
                self.warning(
                    path!["meeting_place", i, "priority"],
                    format!(
                        "meeting place {:?} has the same priority {} as {other:?}",
                        m.name, m.priority
                    ),
                );
            }
        }
        let crisis = &self.config.crisis;
        self.recipients(
            path!["crisis", "staff"],
            &crisis.staff,
            "crisis staff",
            false,
        );
        self.channel_refs(path!["crisis", "via"], &crisis.via, "crisis");
        if !crisis.staff.is_empty() && crisis.via.is_empty() {
            self.error(
                path!["crisis"],
                "crisis staff is set but crisis via is empty".into(),
            );
        }
    }

    /// Components and services as one graph: node `i < C` is component
    /// `i`, node `C + j` is service `j`; edges point upstream along
    /// `depends_on` and from a component to its backup.
    fn graph(&self) -> Vec<Vec<(usize, EdgeAt)>> {
        let c = &self.config;
        let offset = c.components.len();
        let mut edges = Vec::with_capacity(offset + c.services.len());
        for (i, comp) in c.components.iter().enumerate() {
            let mut out: Vec<(usize, EdgeAt)> = comp
                .depends_on
                .iter()
                .enumerate()
                .filter_map(|(j, d)| {
                    let to = *self.components.get(d.as_str())?;
                    Some((to, EdgeAt::ComponentDep(i, j)))
                })
                .collect();
            if let Some(&to) = comp.backup.as_deref().and_then(|b| self.components.get(b))
                && to != i
            {
                out.push((to, EdgeAt::Backup(i)));
            }
            edges.push(out);
        }
        for (i, s) in c.services.iter().enumerate() {
            edges.push(
                s.depends_on
                    .iter()
                    .enumerate()
                    .filter_map(|(j, d)| {
                        let to = match self.components.get(d.as_str()) {
                            Some(&to) => to,
                            None => offset + *self.services.get(d.as_str())?,
                        };
                        Some((to, EdgeAt::ServiceDep(i, j)))
                    })
                    .collect(),
            );
        }
        edges
    }

    fn dependency_cycles(&mut self, edges: &[Vec<(usize, EdgeAt)>]) {
        let c = self.config;
        let offset = c.components.len();
        let names = |i: usize| {
            if i < offset {
                c.components[i].id.as_str()
            } else {
                c.services[i - offset].id.as_str()
            }
        };
        for (path, cycle) in cycles(edges, names) {
            self.error(path, format!("cycle: {cycle}"));
        }
    }

    /// Warnings for components that feed no service and policies no
    /// service uses.
    fn unused(&mut self, edges: &[Vec<(usize, EdgeAt)>]) {
        let c = self.config;
        let offset = c.components.len();
        // Everything reachable upstream from a service feeds it; a backup
        // feeds what the component it backs feeds (that edge is in the graph).
        let mut feeds = vec![false; edges.len()];
        let mut queue: VecDeque<usize> = (offset..edges.len()).collect();
        for &s in &queue {
            feeds[s] = true;
        }
        while let Some(n) = queue.pop_front() {
            for (to, _) in &edges[n] {
                if !feeds[*to] {
                    feeds[*to] = true;
                    queue.push_back(*to);
                }
            }
        }
        for (i, comp) in c.components.iter().enumerate() {
            if !feeds[i] && self.components.get(comp.id.as_str()) == Some(&i) {
                self.warning(
                    path!["component", i, "id"],
                    format!("component {:?} feeds no service", comp.id),
                );
            }
        }
        let used: HashSet<&str> = c
            .services
            .iter()
            .filter_map(|s| s.policy.as_deref())
            .collect();
        for (i, p) in c.policies.iter().enumerate() {
            if !used.contains(p.id.as_str()) {
                self.warning(
                    path!["policy", i, "id"],
                    format!("policy {:?} is not used by any service", p.id),
                );
            }
        }
    }
}

/// Where an edge of a graph checked for cycles is written, kept small
/// because a big catalogue has hundreds of thousands of them.
#[derive(Debug, Clone, Copy)]
enum EdgeAt {
    ComponentDep(usize, usize),
    Backup(usize),
    ServiceDep(usize, usize),
    Member(usize, usize),
    Fallback(usize),
}

impl EdgeAt {
    fn path(self) -> Vec<Seg> {
        match self {
            EdgeAt::ComponentDep(i, j) => path!["component", i, "depends_on", j],
            EdgeAt::Backup(i) => path!["component", i, "backup"],
            EdgeAt::ServiceDep(i, j) => path!["service", i, "depends_on", j],
            EdgeAt::Member(i, j) => path!["group", i, "members", j],
            EdgeAt::Fallback(i) => path!["channel", i, "fallback"],
        }
    }
}

/// One cycle per strongly connected component of a graph given as
/// adjacency lists (target, path of the edge), found with an iterative
/// Tarjan so that deep graphs cannot overflow the stack. Each cycle is
/// reported at the edge leaving its first member (lowest index), as
/// `a -> b -> a`, following a shortest way back.
fn cycles<'n>(
    edges: &[Vec<(usize, EdgeAt)>],
    name: impl Fn(usize) -> &'n str,
) -> Vec<(Vec<Seg>, String)> {
    let n = edges.len();
    const NONE: usize = usize::MAX;
    let mut index = vec![NONE; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut scc_of = vec![NONE; n];
    let mut sccs: Vec<Vec<usize>> = Vec::new();
    let mut next = 0;
    // (node, next edge to look at)
    let mut work: Vec<(usize, usize)> = Vec::new();
    for start in 0..n {
        if index[start] != NONE {
            continue;
        }
        work.push((start, 0));
        while let Some(&mut (v, ref mut e)) = work.last_mut() {
            if *e == 0 && index[v] == NONE {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some((w, _)) = edges[v].get(*e) {
                let w = *w;
                *e += 1;
                if index[w] == NONE {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut members = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    scc_of[w] = sccs.len();
                    members.push(w);
                    if w == v {
                        break;
                    }
                }
                sccs.push(members);
            }
        }
    }

    let mut out = Vec::new();
    let mut parent = vec![NONE; n];
    for (id, members) in sccs.iter().enumerate() {
        let Some(&first) = members.iter().min() else {
            continue;
        };
        if members.len() == 1 && !edges[first].iter().any(|(w, _)| *w == first) {
            continue;
        }
        // Breadth-first from `first` inside its component, back to `first`.
        let mut queue = VecDeque::from([first]);
        let mut last = NONE;
        'search: while let Some(v) = queue.pop_front() {
            for (w, _) in &edges[v] {
                let w = *w;
                if scc_of[w] != id {
                    continue;
                }
                if w == first {
                    last = v;
                    break 'search;
                }
                if parent[w] == NONE {
                    parent[w] = v;
                    queue.push_back(w);
                }
            }
        }
        let mut way = vec![first];
        let mut v = last;
        while v != first && v != NONE {
            way.push(v);
            v = parent[v];
        }
        way.push(first);
        way.reverse();
        // `way` runs first -> … -> first; the edge to report leaves `first`.
        let second = way[1];
        let Some((_, at)) = edges[first].iter().find(|(w, _)| *w == second) else {
            continue;
        };
        let text: Vec<&str> = way.iter().map(|&v| name(v)).collect();
        out.push((at.path(), text.join(" -> ")));
    }
    out
}

/// Counts the wildcards of an MQTT topic filter, or says why it is not one.
fn topic_filter_wildcards(filter: &str) -> Result<usize, &'static str> {
    if filter.is_empty() {
        return Err("is empty");
    }
    if filter.contains('\0') {
        return Err("contains a NUL character");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let mut count = 0;
    for (i, level) in levels.iter().enumerate() {
        match *level {
            "+" => count += 1,
            "#" if i + 1 == levels.len() => count += 1,
            "#" => return Err("has # before its last level"),
            l if l.contains(['+', '#']) => {
                return Err("has a wildcard that is not a whole level");
            }
            _ => {}
        }
    }
    Ok(count)
}

/// The `{N}` wildcard references in a subscription's component template.
fn template_wildcards(template: &str) -> Result<Vec<usize>, &'static str> {
    let mut refs = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("has a { without }")?;
        let n = after[..close]
            .parse::<usize>()
            .map_err(|_| "has {…} that is not a wildcard number {N}")?;
        refs.push(n);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err("has a } without {");
    }
    Ok(refs)
}

/// The most ICMP echoes one check sends.
pub const MAX_ICMP_COUNT: u32 = 100;

/// A host name: dot-separated labels of letters, digits, `-` and `_`, each
/// 1–63 characters, not starting or ending with `-`; 253 characters at most.
pub fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `HOST:PORT`, `IP:PORT` or `[IPv6]:PORT` split into host and port; the
/// error says what is wrong ("has no port", …).
pub fn host_port(address: &str) -> Result<(String, u16), String> {
    if let Ok(sock) = address.parse::<SocketAddr>() {
        if sock.port() == 0 {
            return Err("has port 0".into());
        }
        return Ok((sock.ip().to_string(), sock.port()));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err("has no port (HOST:PORT)".into());
    };
    if host.contains(':') {
        return Err("is not HOST:PORT (an IPv6 address goes in brackets: [::1]:443)".into());
    }
    let port: u16 = match port.parse() {
        Ok(0) | Err(_) => return Err(format!("has no valid port ({port:?} is not 1–65535)")),
        Ok(p) => p,
    };
    if !is_host_name(host) {
        return Err(format!("has no valid host ({host:?})"));
    }
    Ok((host.to_owned(), port))
}

/// A DNS server's address: an IP address, with or without a port (53).
pub fn dns_server(server: &str) -> Option<SocketAddr> {
    if let Ok(ip) = server.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    server.parse::<SocketAddr>().ok().filter(|s| s.port() != 0)
}

/// A record type a probe may ask for: a known type, case-insensitively,
/// other than the zone transfers and meta types (AXFR, IXFR, ANY, OPT, …).
pub fn is_record_type(record: &str) -> bool {
    let upper = record.to_ascii_uppercase();
    !["AXFR", "IXFR", "ANY", "OPT", "TSIG", "ZERO", "NULL"].contains(&upper.as_str())
        && upper
            .parse::<hickory_proto::rr::RecordType>()
            .is_ok_and(|t| !matches!(t, hickory_proto::rr::RecordType::Unknown(_)))
}

fn is_http(url: &str) -> bool {
    ["http://", "https://"]
        .iter()
        .any(|scheme| url.starts_with(scheme) && url.len() > scheme.len())
}

/// A JSON pointer (RFC 6901): empty (the whole document) or `/…`.
fn is_json_pointer(p: &str) -> bool {
    p.is_empty() || p.starts_with('/')
}

/// RFC 9110 token characters.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Validator<'_> {
    /// Secrets come from the environment; one that is not set is a
    /// warning here (SPEC §1: `check`, `drill` and `plan` need none), and
    /// the daemon refuses to start without it.
    fn secrets(&mut self) {
        let c = self.config;
        let mut wanted: Vec<(Vec<Seg>, String, String)> = Vec::new();
        if let Some(var) = &c.server.secret_env {
            wanted.push((
                path!["server", "secret_env"],
                var.clone(),
                "server.secret_env".into(),
            ));
        }
        if let Some(var) = c.mqtt.as_ref().and_then(|m| m.password_env.as_ref()) {
            wanted.push((
                path!["mqtt", "password_env"],
                var.clone(),
                "mqtt.password_env".into(),
            ));
        }
        for (i, ch) in c.channels.iter().enumerate() {
            if let Some(var) = &ch.password_env {
                wanted.push((
                    path!["channel", i, "password_env"],
                    var.clone(),
                    format!("channel {:?} password_env", ch.id),
                ));
            }
            for (name, value) in &ch.headers {
                if let Some(var) = value.strip_prefix("env:") {
                    wanted.push((
                        path!["channel", i, "headers", name.as_str()],
                        var.to_owned(),
                        format!("channel {:?} header {name}", ch.id),
                    ));
                }
            }
        }
        for (path, var, what) in wanted {
            if std::env::var_os(&var).is_none_or(|v| v.is_empty()) {
                self.warning(
                    path,
                    format!("secret {var} ({what}) is not set in the environment"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ComponentConfig;

    const SITE: &str = "[site]\nname = \"t\"\n";

    /// Validates `SITE` plus `text`; findings as `LEVEL path: message`.
    fn findings(text: &str) -> Vec<String> {
        let config: Config = toml::from_str(&format!("{SITE}{text}")).expect("schema");
        let mut out: Vec<String> = validate(&config)
            .into_iter()
            .map(|f| {
                let path: Vec<String> = f
                    .path
                    .iter()
                    .map(|s| match s {
                        Seg::Key(k) => k.clone(),
                        Seg::Index(i) => i.to_string(),
                        Seg::Name(k) => format!("<{k}>"),
                    })
                    .collect();
                let level = match f.level {
                    Level::Error => "error",
                    Level::Warning => "warning",
                };
                format!("{level} {}: {}", path.join("."), f.message)
            })
            .collect();
        out.sort();
        out
    }

    fn components(list: &[(&str, &[&str])]) -> String {
        let mut text = String::new();
        for (id, deps) in list {
            let deps: Vec<String> = deps.iter().map(|d| format!("{d:?}")).collect();
            text.push_str(&format!(
                "[[component]]\nid = {id:?}\nkind = \"server\"\ndepends_on = [{}]\n",
                deps.join(", ")
            ));
        }
        text
    }

    #[test]
    fn a_consistent_config_has_no_findings() {
        let text = components(&[("a", &["b"]), ("b", &[])])
            + "[[service]]\nid = \"s\"\ncriticality = \"life\"\ndepends_on = [\"a\"]\n\
               policy = \"p\"\nowner = \"person:x\"\n\
               [[person]]\nid = \"x\"\nname = \"X\"\n[[policy]]\nid = \"p\"\n";
        assert_eq!(findings(&text), Vec::<String>::new());
    }

    #[test]
    fn duplicate_ids_are_reported_at_the_second() {
        let text = components(&[("a", &[]), ("a", &[])])
            + "[[service]]\nid = \"s\"\ncriticality = \"life\"\ndepends_on = [\"a\"]\n";
        assert_eq!(
            findings(&text),
            ["error component.1.id: duplicate component id \"a\""]
        );
    }

    #[test]
    fn components_depend_only_on_components_and_services_on_both() {
        let text = components(&[("a", &["s1"])])
            + "[[service]]\nid = \"s1\"\ncriticality = \"life\"\ndepends_on = [\"a\"]\n\
               [[service]]\nid = \"s2\"\ncriticality = \"life\"\ndepends_on = [\"s1\"]\n";
        assert_eq!(
            findings(&text),
            [
                "error component.0.depends_on.0: component \"a\" depends on service \"s1\"; \
              components depend only on components"
            ]
        );
    }

    #[test]
    fn a_component_depending_on_itself_is_a_cycle() {
        let text = components(&[("a", &["a"])])
            + "[[service]]\nid = \"s\"\ncriticality = \"life\"\ndepends_on = [\"a\"]\n";
        assert_eq!(
            findings(&text),
            ["error component.0.depends_on.0: cycle: a -> a"]
        );
    }

    #[test]
    fn each_cycle_is_reported_once_at_its_first_member() {
        // Two separate cycles, and one component (x) with two ways round.
        let text = components(&[
            ("p", &[]),
            ("x", &["y", "z"]),
            ("y", &["x"]),
            ("z", &["y"]),
            ("m", &["n"]),
            ("n", &["m"]),
        ]) + "[[service]]\nid = \"s\"\ncriticality = \"life\"\n\
               depends_on = [\"p\", \"x\", \"m\"]\n";
        assert_eq!(
            findings(&text),
            [
                "error component.1.depends_on.0: cycle: x -> y -> x",
                "error component.4.depends_on.0: cycle: m -> n -> m",
            ]
        );
    }

    #[test]
    fn backup_edges_count_for_cycles_and_for_feeding() {
        let cycle = components(&[("mains", &[]), ("gen", &["mains"])])
            + "backup = \"mains\"\n"
            + "[[service]]\nid = \"s\"\ncriticality = \"life\"\ndepends_on = [\"gen\"]\n";
        // `gen` depends on `mains` and is backed by it: a loop.
        let cycle = cycle.replacen(
            "id = \"mains\"\nkind = \"server\"\ndepends_on = []\n",
            "id = \"mains\"\nkind = \"server\"\ndepends_on = []\nbackup = \"gen\"\n",
            1,
        );
        assert_eq!(
            findings(&cycle),
            ["error component.0.backup: cycle: mains -> gen -> mains"]
        );

        let fed = components(&[("mains", &[]), ("gen", &[]), ("idle", &[])]).replacen(
            "depends_on = []\n",
            "depends_on = []\nbackup = \"gen\"\n",
            1,
        ) + "[[service]]\nid = \"s\"\ncriticality = \"life\"\ndepends_on = [\"mains\"]\n";
        assert_eq!(
            findings(&fed),
            ["warning component.2.id: component \"idle\" feeds no service"]
        );
    }

    #[test]
    fn services_may_not_name_their_own_owner_as_owner() {
        let text = "[[service]]\nid = \"s\"\ncriticality = \"life\"\nowner = \"owner\"\n\
                    recovery_notify = [\"owner\", \"contacts\"]\n";
        assert_eq!(
            findings(text),
            ["error service.0.owner: service \"s\" owner: \"owner\" cannot be used here"]
        );
    }

    #[test]
    fn roles_take_one_of_primary_or_rotation_and_distinct_deputies() {
        let text = "[[person]]\nid = \"a\"\nname = \"A\"\n[[person]]\nid = \"b\"\nname = \"B\"\n\
                    [[role]]\nid = \"r\"\nprimary = \"a\"\ndeputies = [\"b\", \"b\"]\n\
                    rotation = { every = \"0s\", start = \"2026-01-05T08:00:00+01:00\", people = [\"a\"] }\n";
        assert_eq!(
            findings(text),
            [
                "error role.0.deputies.1: role \"r\": deputy \"b\" is listed twice",
                "error role.0.rotation.every: role \"r\": rotation every must be greater than zero",
                "error role.0.rotation: role \"r\" has both a primary and a rotation; give one",
            ]
        );
    }

    #[test]
    fn steps_that_notify_need_a_channel() {
        let text = "[[policy]]\nid = \"p\"\nstatus_to = [\"role:nobody\"]\n\
                    [[policy.step]]\non = \"open 0s\"\nnotify = [\"owner\"]\n\
                    [[policy.step]]\non = \"resolved\"\nvia = []\n";
        assert_eq!(
            findings(text),
            [
                "error policy.0.status_to.0: policy \"p\" status_to names unknown role \"nobody\"",
                "error policy.0.step.0: policy \"p\" step 1 notifies people but has no via",
                "warning policy.0.id: policy \"p\" is not used by any service",
            ]
        );
    }

    #[test]
    fn crisis_and_meeting_places() {
        let text = "[[meeting_place]]\nname = \"A\"\npriority = 1\n\
                    [[meeting_place]]\nname = \"B\"\npriority = 1\n\
                    [crisis]\nstaff = [\"role:ghost\"]\nvia = [\"pigeon\"]\n";
        assert_eq!(
            findings(text),
            [
                "error crisis.staff.0: crisis staff names unknown role \"ghost\"",
                "error crisis.via.0: crisis uses unknown channel \"pigeon\"",
                "warning meeting_place.1.priority: meeting place \"B\" has the same priority 1 as \"A\"",
            ]
        );
    }

    #[test]
    fn channel_settings_fit_their_kind() {
        let text = "[[channel]]\nid = \"hook\"\nkind = \"webhook\"\nurl = \"ftp://x\"\ntls = \"tls\"\n\
                    [[channel]]\nid = \"mail\"\nkind = \"smtp\"\nurl = \"smtp://x\"\nfrom = \"a@b\"\n\
                    body = \"x\"\nattempts = 0\nfallback = \"mail\"\n\
                    [[channel]]\nid = \"log\"\nkind = \"log\"\nmethod = \"FETCH\"\n";
        assert_eq!(
            findings(text),
            [
                "error channel.0.tls: channel \"hook\": tls applies only to smtp channels",
                "error channel.0.url: channel \"hook\": url \"ftp://x\" is not an http:// or https:// url",
                "error channel.1.attempts: channel \"mail\": attempts must be at least 1",
                "error channel.1.body: channel \"mail\": body applies only to http channels \
                 (sms-http, call-http, webhook)",
                "error channel.1.fallback: fallback cycle: mail -> mail",
                "error channel.2.method: channel \"log\": method \"FETCH\" is not GET, POST, PUT or PATCH",
                "error channel.2.method: channel \"log\": method applies only to http channels \
                 (sms-http, call-http, webhook)",
            ]
        );
    }

    #[test]
    fn every_duration_is_bounded_at_a_hundred_years() {
        // 101 years in each duration field; the rest only makes them valid.
        let long = "\"101y\"";
        let text = format!(
            "[server]\nack_link_ttl = {long}\n\
             [mqtt]\nurl = \"mqtt://b:1883\"\n\
             [[mqtt.subscription]]\ntopic = \"t\"\nkind = \"fire\"\ncomponent = \"a\"\nheartbeat = {long}\n\
             [[probe]]\nid = \"p\"\ncomponent = \"a\"\nurl = \"http://x\"\nevery = {long}\ntimeout = {long}\n\
             generator = {{ running = \"/r\", fuel_percent = \"/f\", full_tank_runtime = {long} }}\n\
             [[person]]\nid = \"x\"\nname = \"X\"\n\
             [[role]]\nid = \"r\"\nrotation = {{ every = {long}, start = \"2026-01-01T00:00:00Z\", people = [\"x\"] }}\n\
             [[channel]]\nid = \"c\"\nkind = \"log\"\ntimeout = {long}\ngive_up_after = {long}\n\
             [[policy]]\nid = \"p\"\ndeputy_after = {long}\nstatus_every = {long}\n\
             [[policy.step]]\non = \"unacked 101y\"\n[[policy.step]]\non = \"open 101y\"\n\
             [estimate]\ndefault = {long}\nextend = {long}\nby_kind = {{ fire = {long} }}\n\
             [correlation]\nsettle = {long}\n",
        ) + &components(&[("a", &[])])
            + "[[service]]\nid = \"s\"\ncriticality = \"life\"\ndepends_on = [\"a\"]\npolicy = \"p\"\n";
        let found = findings(&text);
        let too_long = " 101years is longer than 100 years";
        let expected: Vec<String> = [
            ("channel.0.timeout", "channel \"c\": timeout"),
            ("channel.0.give_up_after", "channel \"c\": give_up_after"),
            ("correlation.settle", "correlation settle"),
            ("estimate.by_kind.fire", "estimate by_kind fire"),
            ("estimate.default", "estimate default"),
            ("estimate.extend", "estimate extend"),
            ("mqtt.subscription.0.heartbeat", "heartbeat"),
            ("policy.0.deputy_after", "policy \"p\": deputy_after"),
            ("policy.0.status_every", "policy \"p\": status_every"),
            ("probe.0.every", "probe \"p\": every"),
            (
                "probe.0.generator.full_tank_runtime",
                "probe \"p\": full_tank_runtime",
            ),
            ("probe.0.timeout", "probe \"p\": timeout"),
            ("role.0.rotation.every", "role \"r\": rotation every"),
            ("server.ack_link_ttl", "ack_link_ttl"),
        ]
        .iter()
        .map(|(path, what)| format!("error {path}: {what}{too_long}"))
        .chain([
            "error policy.0.step.0.on: policy \"p\" step 1: step condition \"unacked 101y\": \
             duration \"101y\" is longer than 100 years"
                .to_owned(),
            "error policy.0.step.1.on: policy \"p\" step 2: step condition \"open 101y\": \
             duration \"101y\" is longer than 100 years"
                .to_owned(),
        ])
        .collect();
        let mut expected = expected;
        expected.sort();
        assert_eq!(found, expected);

        // A hundred years is the bound itself, and allowed.
        let text = text.replace("101y", "100y");
        assert_eq!(findings(&text), Vec::<String>::new());
    }

    #[test]
    fn topic_filters_and_templates() {
        assert_eq!(topic_filter_wildcards("a/+/b/#"), Ok(2));
        assert_eq!(topic_filter_wildcards("#"), Ok(1));
        assert_eq!(topic_filter_wildcards("a/b"), Ok(0));
        assert!(topic_filter_wildcards("a/#/b").is_err());
        assert!(topic_filter_wildcards("a/b+").is_err());
        assert!(topic_filter_wildcards("").is_err());
        assert_eq!(template_wildcards("{1}-{2}"), Ok(vec![1, 2]));
        assert_eq!(template_wildcards("plain"), Ok(vec![]));
        assert!(template_wildcards("{x}").is_err());
        assert!(template_wildcards("{1").is_err());
        assert!(template_wildcards("1}").is_err());
    }

    #[test]
    fn a_wildcard_template_may_name_the_multi_level_wildcard() {
        let text = "[mqtt]\nurl = \"mqtts://broker:8883\"\n\
                    [[mqtt.subscription]]\ntopic = \"site/+/#\"\nkind = \"fire\"\ncomponent = \"{2}\"\n\
                    [[mqtt.subscription]]\ntopic = \"site/+\"\nkind = \"fire\"\ncomponent = \"{0}\"\n";
        assert_eq!(
            findings(text),
            [
                "error mqtt.subscription.1.component: subscription component \"{0}\" refers to \
              wildcard {0} but topic \"site/+\" has 1"
            ]
        );
    }

    #[test]
    fn a_hundred_thousand_components_validate_quickly_and_without_recursion() {
        const N: usize = 100_000;
        let mut config: Config = toml::from_str(SITE).expect("schema");
        let template: ComponentConfig =
            toml::from_str("id = \"x\"\nkind = \"server\"\n").expect("c");
        for i in 0..N {
            let mut c = template.clone();
            c.id = format!("c{i}");
            // A chain as deep as the catalogue, closed into one cycle.
            c.depends_on = vec![format!("c{}", (i + 1) % N)];
            config.components.push(c);
        }
        let started = std::time::Instant::now();
        let found = validate(&config);
        let took = started.elapsed();
        let errors: Vec<&Finding> = found.iter().filter(|f| f.level == Level::Error).collect();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.starts_with("cycle: c0 -> c1 -> c2 -> "));
        assert!(errors[0].message.ends_with(" -> c99999 -> c0"));
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    }
}
