//! The `ambassadors` endpoints.

use utoipa_axum::router::OpenApiRouter;

use super::AppState;

/// The routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
