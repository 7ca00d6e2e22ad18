//! The OpenAPI 3.1 description of every route, served at
//! `/api/v1/openapi.json`. It is kept in `openapi.json` beside this file
//! and checked against the router by `api::tests::the_openapi_document_lists_every_route`.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn serve() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        DOCUMENT,
    )
}
