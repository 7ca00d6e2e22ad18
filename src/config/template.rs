//! The body-template mini-language of HTTP channels (`[[channel]] body`):
//! literal text with `{{phone}}`, `{{text}}`, `{{link}}`, `{{incident}}`
//! and `{{name}}` placeholders.
//!
//! A template is parsed here, once, so that `check` and the channel's
//! sender refuse the same typos; the notifier fills in the values when it
//! sends. Nothing here knows about notifications.

/// The body of an sms-http or call-http channel without a `body`: the
/// common gateway shape.
pub const DEFAULT_BODY: &str = r#"{"to":"{{phone}}","text":"{{text}}"}"#;

/// A request body with `{{placeholders}}`, parsed once when the config is
/// read so that a typo fails at start-up, not at the first alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Piece>);

/// A stretch of a template: text as written, or a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Literal(String),
    Var(Var),
}

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Var {
    /// `{{phone}}`: the recipient's phone number.
    Phone,
    /// `{{text}}`: the text, a space and the link when there is one.
    Text,
    /// `{{link}}`: the acknowledgement link, or nothing.
    Link,
    /// `{{incident}}`: the incident's number.
    Incident,
    /// `{{name}}`: the recipient's name.
    Name,
}

impl Template {
    /// Parses a template; the error is a message for `check` and the log
    /// (`body: unknown placeholder {{fone}} …`).
    pub fn parse(body: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = body;
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                format!(
                    "body: {{{{ at byte {} is never closed",
                    body.len() - rest.len() + open
                )
            })?;
            let name = after[..close].trim();
            let var = match name {
                "phone" => Var::Phone,
                "text" => Var::Text,
                "link" => Var::Link,
                "incident" => Var::Incident,
                "name" => Var::Name,
                other => {
                    return Err(format!(
                        "body: unknown placeholder {{{{{other}}}}} (known: phone, text, link, incident, name)"
                    ));
                }
            };
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_owned()));
            }
            pieces.push(Piece::Var(var));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        Ok(Template(pieces))
    }

    /// The pieces in order, to be filled in.
    pub fn pieces(&self) -> &[Piece] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_templates_are_refused() {
        assert!(
            Template::parse("{{phone}} {{fone}}")
                .unwrap_err()
                .contains("unknown placeholder {{fone}}")
        );
        assert!(
            Template::parse("{\"a\":\"{{text\"}")
                .unwrap_err()
                .contains("never closed")
        );
        // Nested JSON objects are not placeholders.
        assert_eq!(
            Template::parse(r#"{"a":{"b":1}}"#).expect("template"),
            Template(vec![Piece::Literal(r#"{"a":{"b":1}}"#.into())])
        );
    }
}
