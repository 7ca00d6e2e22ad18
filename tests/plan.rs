//! `beredskab plan -c FILE [--format markdown|html]`: the preparedness plan
//! printed from the config, read the way its readers would read it.
//!
//! Each test writes a small config into its own temp dir; the last test
//! prints the shipped example.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A config small enough to read next to the assertions: a life-critical
/// service, a critical one and an important one (listed out of order), an
/// IT chief with a deputy, and two meeting places written out of order.
const CONFIG: &str = r#"
[site]
name = "Testby Kommune"
language = "en"
timezone = "Europe/Copenhagen"

[mqtt]
url = "mqtt://monitor:hunter2@127.0.0.1:1883"
[[mqtt.subscription]]
topic = "raadhus/serverrum/+/brand"
kind = "fire"
component = "{1}"
heartbeat = "5m"

[[probe]]
id = "generator"
component = "generator"
url = "http://127.0.0.1:9230/status.json"
every = "30s"
[probe.generator]
running = "/running"
fuel_percent = "/fuel_percent"
full_tank_runtime = "8h"
[[probe.check]]
pointer = "/fuel_percent"
below = 25
then = "degraded"

[[component]]
id = "power-mains"
kind = "power"
backup = "generator"
[[component]]
id = "generator"
kind = "generator"
[[component]]
id = "serverrum"
kind = "room"
building = "raadhus"
depends_on = ["power-mains"]
[[component]]
id = "srv-web"
kind = "server"
depends_on = ["serverrum"]
[[component]]
id = "srv-mail"
kind = "server"
depends_on = ["serverrum"]
[[component]]
id = "alarm-net"
kind = "network"
depends_on = ["serverrum"]

[[service]]
id = "web"
name = "Website <script>alert(1)</script>"
criticality = "important"
depends_on = ["srv-web"]
owner = "role:drift-leder"
policy = "standard"

[[service]]
id = "mail"
name = "Mail and calendar"
criticality = "critical"
depends_on = ["srv-mail"]
owner = "role:drift-leder"
policy = "standard"
recovery_notify = ["role:kommunikation", "owner"]

[[service]]
id = "omsorg"
name = "Care alarms"
criticality = "life"
depends_on = ["alarm-net"]
owner = "role:drift-leder"
policy = "standard"

[[person]]
id = "p-drift"
name = "Mette Drift"
phone = "+4520112233"
email = "drift@example.dk"
[[person]]
id = "p-itchef"
name = "Henrik Chief"
phone = "+4520334455"
email = "chief@example.dk"
[[person]]
id = "p-afd"
name = "Birgitte Deputy"
phone = "+4520445566"
email = "deputy@example.dk"
[[person]]
id = "p-komm"
name = "Sofie Comms"
phone = "+4520889900"

[[role]]
id = "drift-leder"
name = "Leader of Drift"
primary = "p-drift"
[[role]]
id = "it-chef"
name = "IT chief"
primary = "p-itchef"
deputies = ["p-afd", "p-drift"]
[[role]]
id = "kommunikation"
name = "Communication"
primary = "p-komm"

[[channel]]
id = "sms"
kind = "sms-http"
url = "http://127.0.0.1:9/sms"
headers = { Authorization = "env:SMS_TOKEN", X-Api-Key = "literal-secret-value" }
[[channel]]
id = "mail"
kind = "smtp"
url = "smtp://127.0.0.1:25"
from = "beredskab@example.dk"
password_env = "SMTP_PASSWORD"
requires_service = "mail"
fallback = "sms"

[[policy]]
id = "standard"
deputy_after = "10m"
status_every = "30m"
status_to = ["role:kommunikation"]
[[policy.step]]
on = "open"
notify = ["role:drift-leder"]
via = ["sms"]
[[policy.step]]
on = "expected > 30m"
notify = ["role:it-chef"]
via = ["sms", "mail"]
[[policy.step]]
on = "expected > 1h 30m"
notify = ["role:it-chef"]
via = ["mail"]
[[policy.step]]
on = "resolved"
notify = ["role:drift-leder"]
via = ["sms"]

[[meeting_place]]
name = "Plejecenter Solhaven, staff room"
building = "solhaven"
priority = 2
[[meeting_place]]
name = "C335 - IT meeting room"
building = "raadhus"
priority = 1

[crisis]
staff = ["role:it-chef"]
via = ["sms"]
"#;

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "beredskab-plan-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write config");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `plan` and returns stdout; fails the test on a non-zero exit.
fn plan(config: &Path, format: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_beredskab"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "off")
        .arg("plan")
        .arg("-c")
        .arg(config);
    if let Some(f) = format {
        cmd.args(["--format", f]);
    }
    let out = cmd.output().expect("run beredskab");
    assert!(
        out.status.success(),
        "plan exited with {:?}; stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("plan prints UTF-8")
}

fn plan_of(config: &str, format: Option<&str>) -> String {
    let dir = TempDir::new();
    plan(&dir.write("beredskab.toml", config), format)
}

fn danish(config: &str) -> String {
    config.replace(r#"language = "en""#, r#"language = "da""#)
}

/// Where `needle` first appears; fails the test if it does not.
fn pos(haystack: &str, needle: &str) -> usize {
    haystack
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the plan:\n{haystack}"))
}

/// The plan's line that contains `needle`.
fn line_with<'a>(haystack: &'a str, needle: &str) -> &'a str {
    haystack
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in the plan:\n{haystack}"))
}

#[test]
fn the_thirty_minute_rule_reads_as_a_sentence() {
    let md = plan_of(CONFIG, None);
    let line = line_with(&md, "Expected longer than 30 minutes:");
    assert!(line.contains("IT chief"), "{line}");
    assert!(line.contains("`it-chef`"), "{line}");
    assert!(line.contains("by SMS and mail"), "{line}");
    // Mail needs the mail service; SMS is sent anyway.
    assert!(
        line.contains("no mail while the service `mail` is down"),
        "{line}"
    );

    let line = line_with(&md, "When an incident opens:");
    assert!(
        line.ends_with("Leader of Drift (role `drift-leder`), by SMS."),
        "{line}"
    );
    let line = line_with(&md, "Expected longer than 1 hour 30 minutes:");
    assert!(
        line.contains(
            "SMS instead of mail while the service `mail` is down or after 5 failed attempts"
        ),
        "{line}"
    );
    assert!(md.contains("If no one acknowledges within 10 minutes, the role's next deputy"));
    assert!(md.contains(
        "Major and critical incidents: status to Communication (role `kommunikation`) \
         every 30 minutes until a return time is known, by SMS."
    ));
}

#[test]
fn the_thirty_minute_rule_reads_in_danish() {
    let md = plan_of(&danish(CONFIG), None);
    let line = line_with(&md, "Forventet længere end 30 minutter:");
    assert!(line.contains("IT chief (rolle `it-chef`)"), "{line}");
    assert!(line.contains("via SMS og mail"), "{line}");
    assert!(md.starts_with("# Beredskabsplan – Testby Kommune\n"));
    assert!(md.contains("Forventet længere end 1 time 30 minutter:"));
    assert!(md.contains("Kvitterer ingen inden for 10 minutter"));
}

#[test]
fn deputies_are_listed_in_order_with_contact_details() {
    let md = plan_of(CONFIG, None);
    let roles = &md[pos(&md, "## Roles and people")..];
    let chief = &roles[pos(roles, "- IT chief (role `it-chef`)")..];
    let primary = pos(
        chief,
        "1. Henrik Chief, +4520334455, chief@example.dk (primary)",
    );
    let first = pos(
        chief,
        "2. Birgitte Deputy, +4520445566, deputy@example.dk (deputy)",
    );
    let second = pos(
        chief,
        "3. Mette Drift, +4520112233, drift@example.dk (deputy)",
    );
    assert!(primary < first && first < second, "{chief}");
}

#[test]
fn meeting_places_come_in_priority_order() {
    let md = plan_of(CONFIG, None);
    let first = pos(&md, "C335 - IT meeting room");
    let second = pos(&md, "Plejecenter Solhaven, staff room");
    assert!(first < second, "priority 1 must come first:\n{md}");
    let row = line_with(&md, "C335 - IT meeting room");
    assert!(row.starts_with("| 1 "), "{row}");
}

#[test]
fn services_are_ordered_by_criticality() {
    let md = plan_of(CONFIG, None);
    let life = pos(&md, "### `omsorg`");
    let critical = pos(&md, "### `mail`");
    let important = pos(&md, "### `web`");
    assert!(life < critical && critical < important, "{md}");

    let mail = &md[critical..important];
    assert!(mail.contains("**Criticality**: critical"), "{mail}");
    assert!(
        mail.contains(
            "**System owner**: Leader of Drift (role `drift-leder`) → Mette Drift, \
             +4520112233, drift@example.dk"
        ),
        "{mail}"
    );
    assert!(
        mail.contains("**Depends directly on**: `srv-mail`"),
        "{mail}"
    );
    assert!(
        mail.contains("`serverrum`, `power-mains` (backup: `generator`)"),
        "{mail}"
    );
    assert!(
        mail.contains(
            "**Told on recovery**: Communication (role `kommunikation`) and the system \
             owner (Leader of Drift (role `drift-leder`))"
        ),
        "{mail}"
    );
}

#[test]
fn alarm_sources_are_described() {
    let md = plan_of(CONFIG, None);
    let row = line_with(&md, "`raadhus/serverrum/+/brand`");
    assert!(row.contains("fire") && row.contains("5 minutes"), "{row}");
    assert!(md.contains("runtime on a full tank 8 hours"));
    assert!(md.contains("Check: if `/fuel_percent` is below 25, the component is degraded."));
    assert!(
        md.contains("`mqtt://127.0.0.1:1883`"),
        "broker without credentials"
    );
}

#[test]
fn secrets_never_reach_the_plan() {
    for format in [None, Some("html")] {
        let out = plan_of(CONFIG, format);
        for secret in ["hunter2", "literal-secret-value", "monitor:"] {
            assert!(!out.contains(secret), "{secret} printed:\n{out}");
        }
        assert!(out.contains("SMS_TOKEN"), "the variable is named");
        assert!(out.contains("SMTP_PASSWORD"), "the variable is named");
    }
    let md = plan_of(CONFIG, None);
    assert!(md.contains("`Authorization`: (from environment `SMS_TOKEN`)"));
    assert!(md.contains("`X-Api-Key`: (hidden)"));
}

#[test]
fn html_is_a_complete_escaped_document() {
    let html = plan_of(CONFIG, Some("html"));
    assert!(
        html.starts_with("<!doctype html>\n<html lang=\"en\">"),
        "{html}"
    );
    assert!(html.contains("<meta charset=\"utf-8\">"));
    assert!(html.contains("<style>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert!(
        !html.contains("<script>"),
        "unescaped service name:\n{html}"
    );
    assert!(html.contains("Website &lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("Expected longer than 30 minutes: IT chief (role <code>it-chef</code>)"));
}

#[test]
fn markdown_escapes_markup_in_names() {
    let md = plan_of(CONFIG, None);
    assert!(!md.contains("<script>"), "{md}");
    assert!(md.contains(r"Website \<script\>alert(1)\</script\>"));
}

#[test]
fn the_plan_is_the_same_every_time() {
    let dir = TempDir::new();
    let path = dir.write("beredskab.toml", CONFIG);
    for format in [None, Some("html")] {
        assert_eq!(plan(&path, format), plan(&path, format));
    }
}

#[test]
fn the_example_plan_names_every_service() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/example/beredskab.toml");
    let text = std::fs::read_to_string(&example).expect("read the example config");
    let md = plan(&example, None);
    let html = plan(&example, Some("html"));
    let config: toml::Value = toml::from_str(&text).expect("example is TOML");
    let services = config
        .get("service")
        .and_then(toml::Value::as_array)
        .expect("the example has services");
    assert!(!services.is_empty());
    for s in services {
        let name = s
            .get("name")
            .or_else(|| s.get("id"))
            .and_then(toml::Value::as_str)
            .expect("a service has an id");
        assert!(md.contains(name), "{name} missing from the Markdown plan");
        let escaped = name
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('\'', "&#39;");
        assert!(html.contains(&escaped), "{name} missing from the HTML plan");
    }
}

#[test]
fn the_alarm_sources_name_each_probe_kind_and_target() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/example/beredskab.toml");
    let md = plan(&example, None);
    for line in [
        "**core-switch** → `net-core`: ping (ICMP, 3 ekkoer) af `10.0.0.1`",
        "fejl når alle ekkoer går tabt; langsommere end 200 ms er nedsat.",
        "**firewall** → `firewall`: TCP-forbindelse til `10.0.0.2:22`",
        "**intern-dns** → `srv-ad`: DNS-opslag `intranet.example.dk A @ 10.0.0.53:53`",
        "**web-cert** → `srv-web`: TLS-certifikatet på `www.example.dk:443`",
        "nedsat når certifikatet udløber inden for 2 uger, fejl når det er udløbet eller ugyldigt",
        "**core-router** → `net-core`: HTTP `http://127.0.0.1:9202/health`",
    ] {
        assert!(md.contains(line), "{line:?} missing from the plan:\n{md}");
    }
}
