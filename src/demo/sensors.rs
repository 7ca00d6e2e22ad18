//! The demo's simulated sensors: what the daemon would otherwise find in the
//! server room.
//!
//! - an HTTP server on 127.0.0.1 with one health endpoint per probe of the
//!   demo config, `/probe/{id}`: 200 or 503 as the script says, and for a
//!   probe with a `[probe.generator]` section the controller's status JSON,
//!   `{"running": bool, "fuel_percent": n}`;
//! - an MQTT client that publishes the sensor topics to the demo broker at
//!   QoS 1 (payloads per SPEC §6), and again as heartbeats for the topics
//!   whose subscription has a `heartbeat`.
//!
//! The script (`script.rs`) changes the readings; the daemon only ever sees
//! them over HTTP and MQTT.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, QoS};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::Config;
use crate::engine::intake::match_topic;

/// The sensors' MQTT client id.
pub const CLIENT_ID: &str = "beredskab-demo-sensors";
/// How often the sensors' MQTT connection is kept alive.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Requests the sensors' MQTT client may hold before `publish` waits.
const REQUEST_CAPACITY: usize = 64;
/// The wait after a lost connection to the broker (it is in the same
/// process, so it is back at once or never).
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// How long stopping waits for the DISCONNECT to reach the broker.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);
/// A heartbeat topic is published again this many times per `heartbeat`,
/// so that one late message does not look like a lost sensor.
pub const HEARTBEATS_PER_PERIOD: u32 = 3;

/// Why the sensors cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SensorsError {
    #[error("cannot start the simulated sensors' http server: {0}")]
    Bind(#[source] std::io::Error),
    #[error("the demo config has no [mqtt] section for the sensors to publish to")]
    NoMqtt,
    #[error("the sensors' mqtt client has stopped")]
    Stopped,
}

/// The path of a probe's endpoint on the sensors' server.
pub fn probe_url(sensors: SocketAddr, id: &str) -> String {
    format!("http://{sensors}/probe/{id}")
}

/// Binds the sensors' HTTP server on 127.0.0.1, on a free port.
pub async fn bind() -> Result<TcpListener, SensorsError> {
    TcpListener::bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0))
        .await
        .map_err(SensorsError::Bind)
}

/// The generator controller's status, as its endpoint serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GeneratorStatus {
    pub running: bool,
    pub fuel_percent: u8,
}

/// What every simulated device reports right now.
#[derive(Debug, Clone, PartialEq)]
pub struct Readings {
    /// Probe id to whether its endpoint answers 200.
    pub healthy: BTreeMap<String, bool>,
    /// Probe ids served as a generator controller.
    pub generators: Vec<String>,
    pub generator: GeneratorStatus,
    /// The last payload published on each sensor topic.
    pub topics: BTreeMap<String, String>,
}

/// A sensor topic whose subscription wants heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub topic: String,
    /// The subscription's `heartbeat`: silence this long is a lost sensor.
    pub heartbeat: Duration,
}

impl Heartbeat {
    /// How often the topic is published again.
    pub fn every(&self) -> Duration {
        self.heartbeat / HEARTBEATS_PER_PERIOD
    }
}

/// The running sensors.
#[derive(Debug, Clone)]
pub struct Sensors {
    readings: Arc<Mutex<Readings>>,
    client: AsyncClient,
    subscriptions: Vec<(Vec<String>, Option<Duration>)>,
}

impl Sensors {
    /// Serves the probes of `config` on `listener` and connects to the
    /// broker at `broker`; both stop when `shutdown` is cancelled. All is
    /// well at start: every endpoint healthy, the generator stopped with a
    /// full tank, nothing published yet.
    pub fn start(
        listener: TcpListener,
        config: &Config,
        broker: SocketAddr,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Sensors, SensorsError> {
        let mqtt = config.mqtt.as_ref().ok_or(SensorsError::NoMqtt)?;
        let readings = Readings {
            healthy: config.probes.iter().map(|p| (p.id.clone(), true)).collect(),
            generators: config
                .probes
                .iter()
                .filter(|p| p.generator.is_some())
                .map(|p| p.id.clone())
                .collect(),
            generator: GeneratorStatus {
                running: false,
                fuel_percent: 100,
            },
            topics: BTreeMap::new(),
        };
        let readings = Arc::new(Mutex::new(readings));

        let app = router(Arc::clone(&readings));
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                warn!(%error, "simulated sensors' http server failed");
            }
        });

        let mut options = MqttOptions::new(CLIENT_ID, broker.ip().to_string(), broker.port());
        options.set_keep_alive(KEEP_ALIVE);
        let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        tasks.spawn(poll(eventloop, client.clone(), shutdown));

        let subscriptions = mqtt
            .subscriptions
            .iter()
            .map(|s| {
                let filter = s.topic.split('/').map(str::to_owned).collect();
                (filter, s.heartbeat)
            })
            .collect();
        Ok(Sensors {
            readings,
            client,
            subscriptions,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Readings> {
        // The readings are plain values, consistent after every statement.
        self.readings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the current readings.
    pub fn readings(&self) -> Readings {
        self.lock().clone()
    }

    /// Makes a probe's endpoint answer 200 (`true`) or 503. An id the config
    /// has no probe for is ignored and reported as `false`.
    pub fn set_healthy(&self, probe: &str, healthy: bool) -> bool {
        match self.lock().healthy.get_mut(probe) {
            Some(h) => {
                *h = healthy;
                true
            }
            None => false,
        }
    }

    /// Sets what the generator controller reports.
    pub fn set_generator(&self, status: GeneratorStatus) {
        self.lock().generator = status;
    }

    /// Publishes `payload` on `topic` at QoS 1 and remembers it as the
    /// sensor's state, which heartbeats repeat.
    pub async fn publish(&self, topic: &str, payload: &str) -> Result<(), SensorsError> {
        self.lock()
            .topics
            .insert(topic.to_owned(), payload.to_owned());
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .map_err(|_| SensorsError::Stopped)
    }

    /// Publishes a topic's last payload again, if it has one.
    pub async fn republish(&self, topic: &str) -> Result<(), SensorsError> {
        let payload = self.lock().topics.get(topic).cloned();
        match payload {
            Some(payload) => self.publish(topic, &payload).await,
            None => Ok(()),
        }
    }

    /// The heartbeat of the first subscription that matches `topic` (the
    /// one the daemon routes it by), if that subscription has one.
    pub fn heartbeat(&self, topic: &str) -> Option<Heartbeat> {
        let (_, heartbeat) = self
            .subscriptions
            .iter()
            .find(|(filter, _)| match_topic(filter, topic).is_some())?;
        heartbeat.map(|heartbeat| Heartbeat {
            topic: topic.to_owned(),
            heartbeat,
        })
    }
}

/// Polls the sensors' MQTT client until shutdown, then disconnects.
async fn poll(mut eventloop: EventLoop, client: AsyncClient, shutdown: CancellationToken) {
    loop {
        let polled = tokio::select! {
            () = shutdown.cancelled() => break,
            polled = eventloop.poll() => polled,
        };
        if let Err(error) = polled {
            debug!(%error, "simulated sensors: mqtt connection lost, reconnecting");
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(RECONNECT_DELAY) => {}
            }
        }
    }
    if client.try_disconnect().is_ok() {
        let sent = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(DISCONNECT_GRACE, sent).await;
    }
}

/// The sensors' HTTP routes.
fn router(readings: Arc<Mutex<Readings>>) -> Router {
    Router::new()
        .route("/probe/{id}", get(probe))
        .with_state(readings)
}

async fn probe(State(readings): State<Arc<Mutex<Readings>>>, Path(id): Path<String>) -> Response {
    let readings = readings.lock().unwrap_or_else(PoisonError::into_inner);
    match readings.healthy.get(&id) {
        None => (StatusCode::NOT_FOUND, "no such probe\n").into_response(),
        Some(false) => (StatusCode::SERVICE_UNAVAILABLE, "down\n").into_response(),
        Some(true) if readings.generators.contains(&id) => Json(readings.generator).into_response(),
        Some(true) => (StatusCode::OK, "ok\n").into_response(),
    }
}
