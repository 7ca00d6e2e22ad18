//! `GET /api/v1/services` (SPEC §5): every service with its state and
//! open incident, from the core's board.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::{ApiError, ApiState, ClientAddr, incidents};
use crate::config::Scope;
use crate::core::Board;
use crate::store::{IncidentRow, Store};

/// The services as JSON, with each open incident's row when the store
/// has it.
pub fn services_json(board: &Board, open: &BTreeMap<u64, IncidentRow>) -> Value {
    board
        .services
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "name": s.name,
                "criticality": s.criticality.as_str(),
                "state": s.health.as_str(),
                "since": s.since.map(|t| t.to_timestamp().to_string()),
                "incident": s.incident.map(|id| {
                    open.get(&id.0)
                        .map_or_else(|| json!({ "id": id.0 }), incidents::incident_json)
                }),
            })
        })
        .collect()
}

pub async fn list<S: Store + Clone + 'static>(
    State(st): State<ApiState<S>>,
    from: ClientAddr,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    st.authorize(&headers, Scope::Read, &from)?;
    let board = st.status.board.borrow().clone();
    // One read per open incident: bounded by the number of services.
    let mut open = BTreeMap::new();
    for id in board.services.iter().filter_map(|s| s.incident) {
        if open.contains_key(&id.0) {
            continue;
        }
        match st.store.incident(id.0).await {
            Ok(Some(d)) => {
                open.insert(id.0, d.incident);
            }
            Ok(None) => {}
            Err(e) => return Err(ApiError::internal("reading an open incident", e)),
        }
    }
    Ok(Json(services_json(&board, &open)))
}
