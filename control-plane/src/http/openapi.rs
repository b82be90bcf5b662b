//! The OpenAPI 3.1 document: metadata, the bearer scheme, and shared schemas. Paths come from
//! the handlers' `#[utoipa::path]` declarations.

use std::sync::Arc;

use axum::{Extension, Json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{FieldError, Problem};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_openapi))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value)))]
async fn get_openapi(
    Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json(doc.as_ref().clone())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "Control plane for GitHub-App code bots: orgs, members, keys, GitHub \
                       installations, trigger rules, jobs, usage and billing.",
        license(name = "Apache-2.0")
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&Bearer),
    tags(
        (name = "auth", description = "Access tokens"),
        (name = "orgs", description = "Orgs, members and API keys"),
        (name = "github", description = "GitHub App installations and webhooks"),
        (name = "jobs", description = "Jobs"),
        (name = "platform", description = "Operator endpoints"),
        (name = "operations", description = "Health, readiness, metrics")
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key, an access token from POST /v1/auth/token, or an operator token"))
                    .build(),
            ),
        );
    }
}

/// Documents the API rate limit ([`crate::http::rate_limit`]) on every org-scoped operation:
/// the `429` problem with `Retry-After` and `RateLimit-*`, which the org scope extractor can
/// answer on any of them. Added to the merged document, where the paths are known.
pub fn document_rate_limit(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{Content, Header, Ref, ResponseBuilder};
    let header = |description: &str| {
        let mut h = Header::new(ObjectBuilder::new().schema_type(Type::Integer));
        h.description = Some(description.to_owned());
        h
    };
    let response = ResponseBuilder::new()
        .description(
            "Over the org's or the API key's rate limit (plan `api_*`); retry after \
             `Retry-After` seconds",
        )
        .content(
            "application/problem+json",
            Content::new(Some(Ref::from_schema_name("Problem"))),
        )
        .header(
            "Retry-After",
            header("Seconds until a request is allowed again"),
        )
        .header(
            "RateLimit-Limit",
            header("Requests the budget holds at once"),
        )
        .header("RateLimit-Remaining", header("Requests left now (0)"))
        .header(
            "RateLimit-Reset",
            header("Seconds until a request is allowed again"),
        )
        .build();
    for (path, item) in &mut doc.paths.paths {
        if !path.starts_with("/v1/orgs/{org}") {
            continue;
        }
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            op.responses
                .responses
                .entry("429".to_owned())
                .or_insert_with(|| response.clone().into());
        }
    }
}
