//! `POST /v1/auth/token` and `GET /.well-known/jwks.json`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Principal};
use crate::error::{Error, Problem, Result};
use crate::http::extract::JsonBody;
use crate::state::AppState;
use crate::tenancy::apikey;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token))
        .routes(routes!(get_jwks))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenIn {
    pub api_key: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct TokenOut {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires (at most 900).
    pub expires_in: u64,
}

/// Exchanges an API key for a short-lived access token.
#[utoipa::path(
    post, path = "/v1/auth/token", tag = "auth",
    request_body = TokenIn,
    responses(
        (status = 200, description = "A token valid for `expires_in` seconds", body = TokenOut),
        (status = 401, description = "Unknown or revoked key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an API key", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_token(
    State(state): State<AppState>,
    JsonBody(input): JsonBody<TokenIn>,
) -> Result<Json<TokenOut>> {
    if apikey::parse_prefix(&input.api_key).is_none() {
        return Err(Error::invalid("api_key", "not an API key"));
    }
    let Principal::ApiKey { key_id, org, .. } = auth::authenticate(&state, &input.api_key).await?
    else {
        return Err(Error::invalid("api_key", "not an API key"));
    };
    let token = state.jwt.issue(&key_id, org).map_err(Error::internal)?;
    Ok(Json(TokenOut {
        access_token: token,
        token_type: "Bearer".into(),
        expires_in: state.jwt.ttl_secs(),
    }))
}

/// The public keys that verify access tokens (a JSON Web Key Set).
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "JSON Web Key Set", body = serde_json::Value))
)]
async fn get_jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.jwt.jwks().clone())
}
