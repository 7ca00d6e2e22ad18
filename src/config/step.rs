//! The two small languages inside config strings: a policy step's `on`
//! condition and a recipient reference.

use std::fmt;
use std::time::Duration;

/// When a policy step fires (SPEC §3 "Escalation").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOn {
    /// The incident is notified for the first time (after `settle`).
    Open,
    /// The expected duration is strictly greater than this.
    ExpectedOver(Duration),
    /// Not acknowledged this long after opening.
    Unacked(Duration),
    /// Unresolved this long after opening.
    OpenFor(Duration),
    /// The incident is resolved.
    Resolved,
    /// The level is raised to crisis.
    LevelCrisis,
}

impl StepOn {
    /// Parses `open`, `resolved`, `level crisis`, `expected > DUR`,
    /// `unacked DUR` or `open DUR`.
    pub fn parse(text: &str) -> Result<StepOn, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let duration = |rest: &[&str]| -> Result<Duration, String> {
            let joined = rest.join(" ");
            if joined.is_empty() {
                return Err(format!("step condition {text:?} lacks a duration"));
            }
            let d = humantime::parse_duration(&joined).map_err(|e| {
                format!("step condition {text:?}: invalid duration {joined:?}: {e}")
            })?;
            // Beyond this, `opened + d` overflows the engine's clock.
            if !super::duration_in_bounds(d) {
                return Err(format!(
                    "step condition {text:?}: duration {joined:?} is longer than 100 years"
                ));
            }
            Ok(d)
        };
        match words.as_slice() {
            ["open"] => Ok(StepOn::Open),
            ["resolved"] => Ok(StepOn::Resolved),
            ["level", "crisis"] => Ok(StepOn::LevelCrisis),
            ["expected", ">", rest @ ..] => duration(rest).map(StepOn::ExpectedOver),
            ["unacked", rest @ ..] => duration(rest).map(StepOn::Unacked),
            ["open", rest @ ..] => duration(rest).map(StepOn::OpenFor),
            _ => Err(format!(
                "step condition {text:?} does not parse: expected `open`, `resolved`, \
                 `level crisis`, `expected > DUR`, `unacked DUR` or `open DUR`"
            )),
        }
    }
}

/// A reference to who is told: `role:ID`, `person:ID`, `group:ID`,
/// `owner` or `contacts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecipientRef {
    Role(String),
    Person(String),
    Group(String),
    /// The system owner of each affected service.
    Owner,
    /// The super users / IT contacts of each affected service.
    Contacts,
}

impl RecipientRef {
    pub fn parse(text: &str) -> Result<RecipientRef, String> {
        let text = text.trim();
        match text.split_once(':') {
            Some(("role", id)) if !id.is_empty() => Ok(RecipientRef::Role(id.to_owned())),
            Some(("person", id)) if !id.is_empty() => Ok(RecipientRef::Person(id.to_owned())),
            Some(("group", id)) if !id.is_empty() => Ok(RecipientRef::Group(id.to_owned())),
            None if text == "owner" => Ok(RecipientRef::Owner),
            None if text == "contacts" => Ok(RecipientRef::Contacts),
            _ => Err(format!(
                "recipient {text:?} is not `role:ID`, `person:ID`, `group:ID`, `owner` or `contacts`"
            )),
        }
    }
}

impl fmt::Display for RecipientRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecipientRef::Role(id) => write!(f, "role:{id}"),
            RecipientRef::Person(id) => write!(f, "person:{id}"),
            RecipientRef::Group(id) => write!(f, "group:{id}"),
            RecipientRef::Owner => f.write_str("owner"),
            RecipientRef::Contacts => f.write_str("contacts"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_conditions_parse() {
        assert_eq!(StepOn::parse("open"), Ok(StepOn::Open));
        assert_eq!(StepOn::parse("resolved"), Ok(StepOn::Resolved));
        assert_eq!(StepOn::parse("level crisis"), Ok(StepOn::LevelCrisis));
        assert_eq!(
            StepOn::parse("expected > 30m"),
            Ok(StepOn::ExpectedOver(Duration::from_secs(1800)))
        );
        assert_eq!(
            StepOn::parse("expected > 1h 30m"),
            Ok(StepOn::ExpectedOver(Duration::from_secs(5400)))
        );
        assert_eq!(
            StepOn::parse("unacked 15m"),
            Ok(StepOn::Unacked(Duration::from_secs(900)))
        );
        assert_eq!(
            StepOn::parse("open 2h"),
            Ok(StepOn::OpenFor(Duration::from_secs(7200)))
        );
        assert_eq!(
            StepOn::parse("expected > 100y"),
            Ok(StepOn::ExpectedOver(crate::config::MAX_DURATION))
        );
    }

    #[test]
    fn malformed_step_conditions_are_refused() {
        for bad in [
            "",
            "expected 30m",
            "expected >",
            "unacked soon",
            "closed",
            "level",
            "expected > 101y",
            "unacked 18446744073709551615s",
            "open 500y",
        ] {
            assert!(StepOn::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn recipient_references_parse() {
        assert_eq!(
            RecipientRef::parse("role:it-chef"),
            Ok(RecipientRef::Role("it-chef".into()))
        );
        assert_eq!(RecipientRef::parse("owner"), Ok(RecipientRef::Owner));
        assert_eq!(RecipientRef::parse("contacts"), Ok(RecipientRef::Contacts));
        assert!(RecipientRef::parse("it-chef").is_err());
        assert!(RecipientRef::parse("role:").is_err());
        assert!(RecipientRef::parse("team:x").is_err());
    }
}
