//! The access review: every user of the agency with their roles, status, MFA enrolment,
//! last activity and the history of their role changes, as JSON or CSV.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use referrals_store::application::AppError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::access_log::{record_accesses, SubjectType};
use super::audit_events::open_sealed_fields;
use super::auth::Authenticated;
use super::authorization::Action;
use super::conventions::{database_error, query_error};
use super::problem::{ApiError, Problem};
use super::AppState;

/// Routes of the access review.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_access_review))
}

/// The response format of the review.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccessReviewQuery {
    /// `json` (the default) or `csv`.
    pub format: Option<String>,
}

/// The access review of an agency.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessReview {
    /// Every user of the agency, by id.
    pub users: Vec<ReviewedUser>,
}

/// One user in the access review.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewedUser {
    /// The user's id.
    pub user_id: Uuid,
    /// The e-mail address, or `"[erased]"`.
    pub email: Option<String>,
    /// The name, when the inviter gave one.
    pub name: Option<String>,
    /// Current roles.
    pub roles: Vec<String>,
    /// `invited`, `active` or `deactivated`.
    pub status: String,
    /// Whether a TOTP secret is enrolled.
    pub mfa_enrolled: bool,
    /// The last sign-in or authenticated request, if any.
    pub last_active_at: Option<DateTime<Utc>>,
    /// Every role change, oldest first.
    pub role_changes: Vec<RoleChange>,
}

/// One change of a user's roles.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoleChange {
    /// When the roles changed.
    pub at: DateTime<Utc>,
    /// The user who changed them; `None` for a command-line or system change.
    pub by: Option<Uuid>,
    /// Roles before the change.
    pub previous: Vec<String>,
    /// Roles after the change.
    pub roles: Vec<String>,
}

/// Lists every user of the agency for an access review: roles, status, MFA enrolment,
/// last activity and role changes. `?format=csv` returns the same as `text/csv`, with
/// role changes joined into one column. The read is recorded in the access log, once per
/// user, because it shows their e-mail addresses and names.
#[utoipa::path(get, path = "/v1/audit/access-review", tag = "audit", security(("bearer" = [])),
    params(AccessReviewQuery),
    responses(
        (status = 200, description = "The review as JSON, or as CSV with `format=csv`",
            content((AccessReview = "application/json"), (String = "text/csv"))),
        (status = 400, description = "`format` is neither json nor csv", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only compliance auditors and agency admins review access", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_access_review(
    State(state): State<AppState>,
    caller: Authenticated,
    query: Result<Query<AccessReviewQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let permitted = caller.authorize(Action::ReviewAccess)?;

    let Query(query) = query.map_err(query_error)?;
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_format", "format must be json or csv")
                    .with_field("format"),
            )
        }
    };

    let users = reviewed_users(&state, permitted.agency_id).await?;
    let user_ids: Vec<Uuid> = users.iter().map(|user| user.user_id).collect();
    let endpoint = "GET /v1/audit/access-review";
    record_accesses(&state, &permitted, SubjectType::User, &user_ids, endpoint).await?;

    if csv {
        let body = review_csv(&users);
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response());
    }
    Ok(Json(AccessReview { users }).into_response())
}

type AccountRow = (Uuid, Vec<String>, String, bool, Option<DateTime<Utc>>);

/// Reads the agency's accounts, then their invitations (for e-mail and name) and role
/// changes from the user events.
async fn reviewed_users(
    state: &AppState,
    agency_id: referrals_domain::ids::AgencyId,
) -> Result<Vec<ReviewedUser>, ApiError> {
    let accounts: Vec<AccountRow> = sqlx::query_as(
        "SELECT account.user_id, account.roles, account.status, account.mfa_enrolled,
                activity.last_active_at
           FROM user_accounts AS account
           LEFT JOIN user_activity AS activity USING (user_id)
          WHERE account.agency_id = $1
          ORDER BY account.user_id",
    )
    .bind(agency_id.0)
    .fetch_all(&state.pool)
    .await
    .map_err(database_error)?;
    let ids: Vec<String> = accounts.iter().map(|row| row.0.to_string()).collect();

    // The first admin of an agency is invited by a platform operator, so user events are
    // selected by the agency's user ids rather than by the events' agency.
    let events: Vec<(String, String, Value)> = sqlx::query_as(
        "SELECT aggregate_id, event_type, payload::jsonb FROM events
          WHERE aggregate_type = 'user' AND aggregate_id = ANY($1)
            AND event_type IN ('UserInvited', 'RolesChanged')
          ORDER BY aggregate_id, sequence",
    )
    .bind(&ids)
    .fetch_all(&state.pool)
    .await
    .map_err(database_error)?;
    let mut by_user: HashMap<String, Vec<(String, Value)>> = HashMap::new();
    for (aggregate_id, event_type, payload) in events {
        by_user
            .entry(aggregate_id)
            .or_default()
            .push((event_type, payload));
    }

    let mut users = Vec::with_capacity(accounts.len());
    for (user_id, roles, status, mfa_enrolled, last_active_at) in accounts {
        let mut reviewed = ReviewedUser {
            user_id,
            email: None,
            name: None,
            roles,
            status,
            mfa_enrolled,
            last_active_at,
            role_changes: Vec::new(),
        };
        for (event_type, mut payload) in by_user.remove(&user_id.to_string()).unwrap_or_default() {
            let Some(fields) = payload.get_mut(&event_type) else {
                continue;
            };
            if event_type == "RolesChanged" {
                let change = serde_json::from_value(fields.take())
                    .map_err(|error| ApiError::internal(&error))?;
                reviewed.role_changes.push(change);
                continue;
            }
            open_sealed_fields(
                state.app.personal(),
                agency_id,
                "user",
                user_id,
                &mut [fields],
            )
            .await
            .map_err(AppError::from)?;
            let text = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_owned);
            reviewed.email = text("email");
            reviewed.name = text("name");
        }
        users.push(reviewed);
    }
    Ok(users)
}

fn review_csv(users: &[ReviewedUser]) -> String {
    let mut csv =
        String::from("user_id,email,name,roles,status,mfa_enrolled,last_active_at,role_changes\n");
    for user in users {
        let changes: Vec<String> = user
            .role_changes
            .iter()
            .map(|change| {
                format!(
                    "{} by {}: {} -> {}",
                    change.at.to_rfc3339_opts(SecondsFormat::Secs, true),
                    change
                        .by
                        .map_or_else(|| "system".to_owned(), |by| by.to_string()),
                    change.previous.join("|"),
                    change.roles.join("|"),
                )
            })
            .collect();
        let cells = [
            user.user_id.to_string(),
            user.email.clone().unwrap_or_default(),
            user.name.clone().unwrap_or_default(),
            user.roles.join("|"),
            user.status.clone(),
            user.mfa_enrolled.to_string(),
            user.last_active_at
                .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true))
                .unwrap_or_default(),
            changes.join("; "),
        ];
        let cells: Vec<String> = cells.iter().map(|cell| csv_cell(cell)).collect();
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    csv
}

/// Quotes a CSV cell when needed, and prefixes a cell that a spreadsheet would run as a
/// formula (starting with `=`, `+`, `-` or `@`) with an apostrophe.
fn csv_cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}
