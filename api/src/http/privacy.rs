//! Subject requests for compliance auditors: erasure of every record of one person, and
//! access, which returns everything held about them as one JSON document.

use axum::extract::{Path, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use referrals_domain::privacy::{SubjectKind, SubjectRef};
use referrals_domain::values::{EmailAddress, PhoneNumber};
use referrals_domain::DomainError;
use referrals_store::privacy::{self as store_privacy, RequestKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::access_log::{record_accesses, SubjectType};
use super::auth::Authenticated;
use super::authorization::Action;
use super::conventions::{created, database_error, parse_id};
use super::json::StrictJson;
use super::problem::{ApiError, Problem};
use super::AppState;

/// The routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_subject_request))
        .routes(routes!(get_subject_request))
}

/// `POST /v1/privacy/subject-requests`: whom the request is about, by e-mail address,
/// phone number or both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectRequestBody {
    /// `access` or `erasure`.
    #[schema(example = "erasure")]
    pub kind: String,
    /// The person's e-mail address; matched after normalization (trimmed, lower case).
    pub email: Option<String>,
    /// The person's phone number; matched in E.164 form.
    pub phone: Option<String>,
}

/// A subject request and its outcome.
#[derive(Serialize, ToSchema)]
pub struct SubjectRequestResponse {
    /// The request's id.
    pub id: Uuid,
    /// `access` or `erasure`.
    pub kind: String,
    /// `completed`, or `erased` for an access request whose export a later erasure of the
    /// same person destroyed.
    pub status: String,
    /// The number of records (candidates of referrals, ambassadors) the request found.
    pub subjects_found: i32,
    /// When the request was made.
    pub requested_at: DateTime<Utc>,
    /// When it completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// For `access`, everything held about the person; only in `GET` responses.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<Value>,
}

/// Runs a subject request in the caller's agency. An erasure destroys the data keys of
/// every candidate and ambassador record with the e-mail address or phone number, and
/// removes their keyed hashes. History then shows `[erased]`, while counts, payouts and
/// the hash chain stay as they were. A later referral of the same person is treated as a
/// new candidate. An access request stores a sealed export, read with `GET`.
#[utoipa::path(post, path = "/v1/privacy/subject-requests", tag = "privacy",
    security(("bearer" = [])),
    request_body = SubjectRequestBody,
    responses(
        (status = 201, description = "Completed", body = SubjectRequestResponse),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a compliance auditor", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown kind, no contact given, or an invalid e-mail address or phone number", body = Problem, content_type = "application/problem+json")))]
pub async fn create_subject_request(
    State(state): State<AppState>,
    caller: Authenticated,
    StrictJson(body): StrictJson<SubjectRequestBody>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::HandleSubjectRequests)?;
    let kind = match body.kind.as_str() {
        "access" => RequestKind::Access,
        "erasure" => RequestKind::Erasure,
        _ => {
            return Err(
                ApiError::unprocessable("invalid_kind", "kind must be access or erasure")
                    .with_field("kind"),
            )
        }
    };
    let email = body
        .email
        .as_deref()
        .map(EmailAddress::parse)
        .transpose()
        .map_err(|error| DomainError::from(error.for_field("email")))?;
    let phone = body
        .phone
        .as_deref()
        .map(PhoneNumber::parse)
        .transpose()
        .map_err(|error| DomainError::from(error.for_field("phone")))?;
    if email.is_none() && phone.is_none() {
        return Err(ApiError::unprocessable(
            "contact_missing",
            "a subject request needs the person's email, phone or both",
        ));
    }

    let metadata = permitted.metadata();
    let keys = state
        .app
        .personal()
        .contact_keys(metadata.agency_id, email.as_ref(), phone.as_ref())
        .await
        .map_err(referrals_store::application::AppError::from)?;
    let (request_id, subjects) = match kind {
        RequestKind::Erasure => store_privacy::erase(&state.app, &metadata, &keys).await?,
        RequestKind::Access => {
            let (request_id, _, subjects) =
                store_privacy::export_access(&state.app, &metadata, &keys).await?;
            (request_id, subjects)
        }
    };
    // The stored completion time, so this response and later reads agree.
    let completed_at: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT completed_at FROM subject_requests WHERE request_id = $1")
            .bind(request_id)
            .fetch_one(&state.pool)
            .await
            .map_err(database_error)?;
    let response = SubjectRequestResponse {
        id: request_id,
        kind: kind.as_str().to_owned(),
        status: "completed".to_owned(),
        subjects_found: i32::try_from(subjects.len()).unwrap_or(i32::MAX),
        requested_at: metadata.recorded_at,
        completed_at,
        export: None,
    };
    created(
        &format!("/v1/privacy/subject-requests/{request_id}"),
        1,
        response,
    )
}

/// Reads a subject request of the caller's agency: its status and, for `access`, the
/// export. Reading an export writes the access log for every subject in it.
#[utoipa::path(get, path = "/v1/privacy/subject-requests/{id}", tag = "privacy",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The request's id")),
    responses(
        (status = 200, description = "The request", body = SubjectRequestResponse),
        (status = 400, description = "The id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a compliance auditor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request in the caller's agency", body = Problem, content_type = "application/problem+json")))]
pub async fn get_subject_request(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<SubjectRequestResponse>, ApiError> {
    let permitted = caller.authorize(Action::HandleSubjectRequests)?;
    let request_id = parse_id("id", &id)?;
    let request = store_privacy::read_request(&state.app, permitted.agency_id, request_id)
        .await?
        .ok_or_else(|| ApiError::not_found("subject request"))?;

    if request.export.is_some() {
        let endpoint = "GET /v1/privacy/subject-requests/{id}";
        for (kind, subject_type) in [
            (SubjectKind::Candidate, SubjectType::Candidate),
            (SubjectKind::Ambassador, SubjectType::Ambassador),
        ] {
            let ids = ids_of_kind(&request.export_subjects, kind);
            record_accesses(&state, &permitted, subject_type, &ids, endpoint).await?;
        }
    }
    Ok(axum::Json(SubjectRequestResponse {
        id: request.request_id,
        kind: request.kind,
        status: request.status,
        subjects_found: request.subjects,
        requested_at: request.requested_at,
        completed_at: request.completed_at,
        export: request.export,
    }))
}

fn ids_of_kind(subjects: &[SubjectRef], kind: SubjectKind) -> Vec<Uuid> {
    subjects
        .iter()
        .filter(|subject| subject.kind == kind)
        .map(|subject| subject.id)
        .collect()
}
