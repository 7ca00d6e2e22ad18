//! The person on call in the demo's script: what they do, they do through
//! the daemon's HTTP API with the run's `ack` token, as the web UI's
//! buttons do, so the morning shows up in the browser as it happens.

use std::time::Duration;

use serde_json::{Value, json};

/// What the person on call does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deed {
    /// Raises the fire's incident to crisis level.
    RaiseCrisis,
    /// Writes a decision on the fire's incident, public on `/status`.
    PublicDecision(&'static str),
    /// Gives the fire's incident an expected time left.
    Remaining(&'static str),
}

/// The API the person uses.
#[derive(Debug, Clone)]
pub struct Operator {
    base: String,
    token: String,
    client: reqwest::Client,
}

/// The component the server room's fire alarm belongs to.
const FIRE_ROOT: &str = "serverrum";

impl Operator {
    /// Acts on the daemon at `base` (`http://127.0.0.1:8080`) with `token`.
    pub fn new(base: String, token: String) -> Operator {
        crate::tls::install_provider();
        let client = reqwest::Client::builder()
            .user_agent(crate::USER_AGENT)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Operator {
            base,
            token,
            client,
        }
    }

    /// Does `deed`; returns the line to print, or why it could not.
    pub async fn act(&self, deed: &Deed) -> Result<String, String> {
        let id = self.fire_incident().await?;
        match deed {
            Deed::RaiseCrisis => {
                let inc = self.post(id, "level", json!({ "level": "crisis" })).await?;
                let place = inc["meeting_place"].as_str().unwrap_or("no meeting place");
                Ok(format!(
                    "on call: raises incident {id} to crisis level – the crisis staff is summoned to \
                     {place}, not the burning town hall"
                ))
            }
            Deed::PublicDecision(text) => {
                self.post(
                    id,
                    "notes",
                    json!({ "text": text, "kind": "decision", "public": true }),
                )
                .await?;
                Ok(format!(
                    "on call: logs a decision on incident {id}, public on /status: {text}"
                ))
            }
            Deed::Remaining(left) => {
                self.post(id, "eta", json!({ "remaining": left })).await?;
                Ok(format!(
                    "on call: the vendor expects incident {id} over in {left}; the estimate is set"
                ))
            }
        }
    }

    /// The open incident whose root is the server room, else the newest.
    async fn fire_incident(&self) -> Result<u64, String> {
        let url = format!("{}/api/v1/incidents?state=open", self.base);
        let list: Value = self
            .client
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("cannot list the incidents: {e}"))?
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("cannot read the incidents")?;
        let list = list.as_array().cloned().unwrap_or_default();
        list.iter()
            .find(|i| i["root"] == FIRE_ROOT)
            .or_else(|| list.first())
            .and_then(|i| i["id"].as_u64())
            .ok_or_else(|| "no open incident to act on".to_owned())
    }

    async fn post(&self, id: u64, action: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}/api/v1/incidents/{id}/{action}", self.base);
        let resp = self
            .client
            .post(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("{action} on incident {id}: {e}"))?;
        let status = resp.status();
        let answer: Value = resp
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if status.is_success() {
            Ok(answer)
        } else {
            Err(format!(
                "{action} on incident {id}: {status} {}",
                answer["error"]
            ))
        }
    }
}
