//! Analytics for analysts: the program funnel, the ambassador leaderboard and payout
//! totals, read from the `analytics` fact tables, which contain ids, codes, dates, counts
//! and amounts but no personal data.
//!
//! The queries compute the same figures as the views `analytics.program_funnel`,
//! `analytics.ambassador_leaderboard` and `analytics.payout_totals`, which BI tools read,
//! but over the facts of one period and program only. The views cannot take those
//! filters, because they aggregate before a caller's `WHERE` applies. A test checks that
//! the unfiltered figures equal the views'.
//!
//! For the funnel and the leaderboard, the period selects referrals by the day they were
//! submitted, and the figures count those referrals and their payouts. For the payout
//! totals, it selects payouts by the day they were requested. Days are UTC, and both ends
//! are included.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Days, NaiveDate, Utc};
use referrals_domain::ids::AgencyId;
use referrals_store::application::AppError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Authenticated;
use super::authorization::Action;
use super::conventions::{cursor, Page, PageQuery};
use super::payouts::{Amount, PayoutStatusName};
use super::problem::{ApiError, Problem};
use super::AppState;

/// The routes of this module, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_funnel))
        .routes(routes!(get_leaderboard))
        .routes(routes!(get_payout_totals))
}

/// Filters and paging of the analytics endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsQuery {
    /// Only this program.
    pub program_id: Option<Uuid>,
    /// First day of the period (UTC), included.
    pub from: Option<NaiveDate>,
    /// Last day of the period (UTC), included.
    pub to: Option<NaiveDate>,
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The funnel of one program: how many referrals reached each stage, and at what cost.
#[derive(Debug, Serialize, ToSchema)]
pub struct FunnelStage {
    /// The program.
    pub program_id: Uuid,
    /// Referrals submitted, without duplicates.
    pub submitted: i64,
    /// Referrals contacted or further along.
    pub contacted: i64,
    /// Referrals interviewing or further along.
    pub interviewing: i64,
    /// Referrals hired.
    pub hired: i64,
    /// Referrals that reached a milestone after the hire, such as hours worked.
    pub milestone: i64,
    /// Referrals recorded as duplicates, which are left out of every stage.
    pub duplicates: i64,
    /// Fraction of submitted referrals that were contacted, absent when none were submitted.
    pub submitted_to_contacted: Option<f64>,
    /// Fraction of contacted referrals that reached interviews.
    pub contacted_to_interviewing: Option<f64>,
    /// Fraction of interviewing referrals that were hired.
    pub interviewing_to_hired: Option<f64>,
    /// Fraction of hired referrals that reached a later milestone.
    pub hired_to_milestone: Option<f64>,
    /// Median days from submission to hire, to two decimals.
    pub median_days_to_hire: Option<f64>,
    /// Bonuses approved, exported or paid for these referrals.
    pub bonus_cost: Amount,
    /// `bonus_cost` divided by `hired`, rounded to a minor unit, absent without hires.
    pub bonus_cost_per_hire: Option<Amount>,
}

/// One ambassador's place on the leaderboard of a currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderboardEntry {
    /// Rank among the ambassadors of the currency, by hires, then by bonuses paid. Ties
    /// share a rank.
    pub rank: i64,
    /// The ambassador.
    pub ambassador_id: Uuid,
    /// The ambassador's kind, such as `field_worker`.
    pub kind: Option<String>,
    /// Referrals submitted, duplicates included.
    pub referrals: i64,
    /// Referrals hired.
    pub hires: i64,
    /// Bonuses to the ambassador approved, exported or paid.
    pub earned: Amount,
    /// Bonuses to the ambassador paid.
    pub paid: Amount,
}

/// Number and sum of the payouts of one program in one status.
#[derive(Debug, Serialize, ToSchema)]
pub struct PayoutTotal {
    /// The program.
    pub program_id: Uuid,
    /// The payouts' status.
    pub status: PayoutStatusName,
    /// Number of payouts.
    pub payouts: i64,
    /// Their sum.
    pub amount: Amount,
}

/// Reports the funnel of each program: referrals per stage, conversion from stage to
/// stage, median days to hire and bonus cost per hire.
#[utoipa::path(get, path = "/v1/analytics/funnel", tag = "analytics",
    security(("bearer" = [])),
    params(AnalyticsQuery),
    responses(
        (status = 200, description = "One row per program, by program id", body = Page<FunnelStage>),
        (status = 400, description = "Invalid filter, period, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an analyst", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such program in the agency", body = Problem, content_type = "application/problem+json")))]
pub async fn get_funnel(
    State(state): State<AppState>,
    caller: Authenticated,
    query: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Result<Json<Page<FunnelStage>>, ApiError> {
    let permitted = caller.authorize(Action::ReadAnalytics)?;

    let filter = Filter::parse(&state, permitted.agency_id, query).await?;
    let after: Option<Uuid> = filter.page.position()?;

    let rows: Vec<FunnelRow> = sqlx::query_as(FUNNEL_SQL)
        .bind(filter.agency_id.0)
        .bind(filter.program_id)
        .bind(filter.start)
        .bind(filter.end)
        .bind(after)
        .bind(filter.limit + 1)
        .fetch_all(&state.read_pool)
        .await
        .map_err(|error| ApiError::unavailable(&error))?;

    Ok(Json(paginate(
        rows,
        filter.limit,
        |row| row.program_id,
        FunnelRow::into_view,
    )))
}

/// Ranks the ambassadors of each currency by hires, then by bonuses paid.
#[utoipa::path(get, path = "/v1/analytics/leaderboard", tag = "analytics",
    security(("bearer" = [])),
    params(AnalyticsQuery),
    responses(
        (status = 200, description = "Ambassadors by currency and rank", body = Page<LeaderboardEntry>),
        (status = 400, description = "Invalid filter, period, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an analyst", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such program in the agency", body = Problem, content_type = "application/problem+json")))]
pub async fn get_leaderboard(
    State(state): State<AppState>,
    caller: Authenticated,
    query: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Result<Json<Page<LeaderboardEntry>>, ApiError> {
    let permitted = caller.authorize(Action::ReadAnalytics)?;

    let filter = Filter::parse(&state, permitted.agency_id, query).await?;
    let after: Option<(String, i64, Uuid)> = filter.page.position()?;

    let (currency, rank, ambassador_id) = after
        .map_or((None, None, None), |(currency, rank, ambassador)| {
            (Some(currency), Some(rank), Some(ambassador))
        });
    let rows: Vec<LeaderboardRow> = sqlx::query_as(LEADERBOARD_SQL)
        .bind(filter.agency_id.0)
        .bind(filter.program_id)
        .bind(filter.start)
        .bind(filter.end)
        .bind(currency)
        .bind(rank)
        .bind(ambassador_id)
        .bind(filter.limit + 1)
        .fetch_all(&state.read_pool)
        .await
        .map_err(|error| ApiError::unavailable(&error))?;

    let position = |row: &LeaderboardRow| (row.currency.clone(), row.rank, row.ambassador_id);
    Ok(Json(paginate(
        rows,
        filter.limit,
        position,
        LeaderboardRow::into_view,
    )))
}

/// Counts and sums the payouts of each program by status.
#[utoipa::path(get, path = "/v1/analytics/payouts", tag = "analytics",
    security(("bearer" = [])),
    params(AnalyticsQuery),
    responses(
        (status = 200, description = "One row per program, currency and status", body = Page<PayoutTotal>),
        (status = 400, description = "Invalid filter, period, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an analyst", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such program in the agency", body = Problem, content_type = "application/problem+json")))]
pub async fn get_payout_totals(
    State(state): State<AppState>,
    caller: Authenticated,
    query: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Result<Json<Page<PayoutTotal>>, ApiError> {
    let permitted = caller.authorize(Action::ReadAnalytics)?;

    let filter = Filter::parse(&state, permitted.agency_id, query).await?;
    let after: Option<(Uuid, String, String)> = filter.page.position()?;

    let (program_id, currency, status) = after
        .map_or((None, None, None), |(program, currency, status)| {
            (Some(program), Some(currency), Some(status))
        });
    let rows: Vec<PayoutTotalRow> = sqlx::query_as(PAYOUT_TOTALS_SQL)
        .bind(filter.agency_id.0)
        .bind(filter.program_id)
        .bind(filter.start)
        .bind(filter.end)
        .bind(program_id)
        .bind(currency)
        .bind(status)
        .bind(filter.limit + 1)
        .fetch_all(&state.read_pool)
        .await
        .map_err(|error| ApiError::unavailable(&error))?;

    let position =
        |row: &PayoutTotalRow| (row.program_id, row.currency.clone(), row.status.clone());
    let page = paginate(rows, filter.limit, position, PayoutTotalRow::into_view);
    let items = page.items.into_iter().collect::<Result<_, _>>()?;
    Ok(Json(Page {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// The checked filters of one request.
struct Filter {
    agency_id: AgencyId,
    program_id: Option<Uuid>,
    /// Start of the period, included.
    start: Option<DateTime<Utc>>,
    /// End of the period, excluded: midnight after the last day.
    end: Option<DateTime<Utc>>,
    limit: i64,
    page: PageQuery,
}

impl Filter {
    /// Checks the query: the period's order and the program's agency.
    async fn parse(
        state: &AppState,
        agency_id: AgencyId,
        query: Result<Query<AnalyticsQuery>, QueryRejection>,
    ) -> Result<Self, ApiError> {
        let Query(query) = query
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))?;
        let page = PageQuery {
            limit: query.limit,
            cursor: query.cursor,
        };
        let limit = page.limit()?;
        if let (Some(from), Some(to)) = (query.from, query.to) {
            if from > to {
                return Err(ApiError::bad_request(
                    "invalid_period",
                    format!("the period ends ({to}) before it starts ({from}); swap from and to"),
                )
                .with_field("to"));
            }
        }
        if let Some(program_id) = query.program_id {
            let program = state
                .app
                .programs
                .load(agency_id, &program_id.to_string())
                .await
                .map_err(AppError::from)?;
            if program.is_none() {
                return Err(ApiError::not_found("program"));
            }
        }

        Ok(Self {
            agency_id,
            program_id: query.program_id,
            start: query.from.map(midnight),
            end: query
                .to
                .map(|to| midnight(to.checked_add_days(Days::new(1)).unwrap_or(to))),
            limit,
            page,
        })
    }
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// Builds a page from up to `limit + 1` rows: one more row than `limit` means there is a
/// next page, which starts after the position of the last row shown.
fn paginate<R, V, P: Serialize>(
    mut rows: Vec<R>,
    limit: i64,
    position: impl Fn(&R) -> P,
    view: impl Fn(R) -> V,
) -> Page<V> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|row| cursor(&position(row)))
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(view).collect(),
        next_cursor,
    }
}

/// The referrals of the agency that the filters select, as the first part of the funnel
/// and leaderboard queries. Parameters: $1 agency, $2 program, $3 and $4 the period.
macro_rules! cohort {
    () => {
        "cohort AS (
            SELECT * FROM analytics.referral_facts
             WHERE agency_id = $1
               AND ($2::uuid IS NULL OR program_id = $2)
               AND ($3::timestamptz IS NULL OR submitted_at >= $3)
               AND ($4::timestamptz IS NULL OR submitted_at < $4)
        )"
    };
}

/// The funnel as `analytics.program_funnel` computes it, over the cohort's referrals and
/// their payouts. $5 is the last program id shown, $6 the number of rows.
const FUNNEL_SQL: &str = concat!(
    "WITH ",
    cohort!(),
    ",
    stages AS (
        SELECT program_id,
               currency,
               count(*) FILTER (WHERE duplicate) AS duplicates,
               count(*) FILTER (WHERE NOT duplicate) AS submitted,
               count(*) FILTER (
                   WHERE NOT duplicate
                     AND (contacted_at IS NOT NULL OR interviewing_at IS NOT NULL
                          OR hired_at IS NOT NULL)
               ) AS contacted,
               count(*) FILTER (
                   WHERE NOT duplicate AND (interviewing_at IS NOT NULL OR hired_at IS NOT NULL)
               ) AS interviewing,
               count(*) FILTER (WHERE NOT duplicate AND hired_at IS NOT NULL) AS hired,
               count(*) FILTER (
                   WHERE NOT duplicate AND first_bonus_milestone_at IS NOT NULL
               ) AS milestone,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM hired_at - submitted_at) / 86400
               ) FILTER (WHERE NOT duplicate AND hired_at IS NOT NULL) AS median_days_to_hire
          FROM cohort
         GROUP BY program_id, currency
    ),
    costs AS (
        SELECT program_id, currency, sum(amount) AS bonus_cost
          FROM analytics.payout_facts
         WHERE agency_id = $1
           AND status IN ('approved', 'exported', 'paid')
           AND referral_id IN (SELECT referral_id FROM cohort)
         GROUP BY program_id, currency
    )
    SELECT stages.program_id,
           stages.currency,
           stages.submitted,
           stages.contacted,
           stages.interviewing,
           stages.hired,
           stages.milestone,
           stages.duplicates,
           round(stages.contacted::numeric / NULLIF(stages.submitted, 0), 4)::float8
               AS submitted_to_contacted,
           round(stages.interviewing::numeric / NULLIF(stages.contacted, 0), 4)::float8
               AS contacted_to_interviewing,
           round(stages.hired::numeric / NULLIF(stages.interviewing, 0), 4)::float8
               AS interviewing_to_hired,
           round(stages.milestone::numeric / NULLIF(stages.hired, 0), 4)::float8
               AS hired_to_milestone,
           round(stages.median_days_to_hire::numeric, 2)::float8 AS median_days_to_hire,
           coalesce(costs.bonus_cost, 0)::bigint AS bonus_cost,
           round(coalesce(costs.bonus_cost, 0) / NULLIF(stages.hired, 0))::bigint
               AS bonus_cost_per_hire
      FROM stages
      LEFT JOIN costs USING (program_id, currency)
     WHERE ($5::uuid IS NULL OR stages.program_id > $5)
     ORDER BY stages.program_id
     LIMIT $6"
);

/// The leaderboard as `analytics.ambassador_leaderboard` computes it, over the cohort's
/// referrals and their payouts to ambassadors. $5 to $7 are the currency, rank and
/// ambassador of the last row shown, $8 the number of rows.
const LEADERBOARD_SQL: &str = concat!(
    "WITH ",
    cohort!(),
    ",
    referrals AS (
        SELECT ambassador_id,
               currency,
               count(*) AS referrals,
               count(*) FILTER (WHERE hired_at IS NOT NULL) AS hires
          FROM cohort
         GROUP BY ambassador_id, currency
    ),
    bonuses AS (
        SELECT ambassador_id,
               currency,
               sum(amount) FILTER (WHERE status IN ('approved', 'exported', 'paid'))
                   AS earned_amount,
               sum(amount) FILTER (WHERE status = 'paid') AS paid_amount
          FROM analytics.payout_facts
         WHERE agency_id = $1
           AND recipient = 'ambassador'
           AND referral_id IN (SELECT referral_id FROM cohort)
         GROUP BY ambassador_id, currency
    ),
    ranked AS (
        SELECT referrals.ambassador_id,
               ambassadors.kind,
               referrals.currency,
               referrals.referrals,
               referrals.hires,
               coalesce(bonuses.earned_amount, 0)::bigint AS earned_amount,
               coalesce(bonuses.paid_amount, 0)::bigint AS paid_amount,
               rank() OVER (
                   PARTITION BY referrals.currency
                   ORDER BY referrals.hires DESC, coalesce(bonuses.paid_amount, 0) DESC
               ) AS rank
          FROM referrals
          LEFT JOIN bonuses USING (ambassador_id, currency)
          LEFT JOIN analytics.ambassador_facts AS ambassadors
                 ON ambassadors.ambassador_id = referrals.ambassador_id
    )
    SELECT ambassador_id, kind, currency, referrals, hires, earned_amount, paid_amount, rank
      FROM ranked
     WHERE ($5::text IS NULL OR (currency, rank, ambassador_id) > ($5, $6::bigint, $7::uuid))
     ORDER BY currency, rank, ambassador_id
     LIMIT $8"
);

/// The totals as `analytics.payout_totals` computes them, over the payouts requested in
/// the period. $5 to $7 are the program, currency and status of the last row shown, $8
/// the number of rows.
const PAYOUT_TOTALS_SQL: &str = "
    SELECT program_id, currency, status, count(*) AS payouts, sum(amount)::bigint AS amount
      FROM analytics.payout_facts
     WHERE agency_id = $1
       AND ($2::uuid IS NULL OR program_id = $2)
       AND ($3::timestamptz IS NULL OR requested_at >= $3)
       AND ($4::timestamptz IS NULL OR requested_at < $4)
     GROUP BY program_id, currency, status
    HAVING ($5::uuid IS NULL OR (program_id, currency, status) > ($5, $6::text, $7::text))
     ORDER BY program_id, currency, status
     LIMIT $8";

#[derive(sqlx::FromRow)]
struct FunnelRow {
    program_id: Uuid,
    currency: String,
    submitted: i64,
    contacted: i64,
    interviewing: i64,
    hired: i64,
    milestone: i64,
    duplicates: i64,
    submitted_to_contacted: Option<f64>,
    contacted_to_interviewing: Option<f64>,
    interviewing_to_hired: Option<f64>,
    hired_to_milestone: Option<f64>,
    median_days_to_hire: Option<f64>,
    bonus_cost: i64,
    bonus_cost_per_hire: Option<i64>,
}

impl FunnelRow {
    fn into_view(self) -> FunnelStage {
        let amount = |amount| Amount {
            amount,
            currency: self.currency.clone(),
        };
        FunnelStage {
            program_id: self.program_id,
            submitted: self.submitted,
            contacted: self.contacted,
            interviewing: self.interviewing,
            hired: self.hired,
            milestone: self.milestone,
            duplicates: self.duplicates,
            submitted_to_contacted: self.submitted_to_contacted,
            contacted_to_interviewing: self.contacted_to_interviewing,
            interviewing_to_hired: self.interviewing_to_hired,
            hired_to_milestone: self.hired_to_milestone,
            median_days_to_hire: self.median_days_to_hire,
            bonus_cost: amount(self.bonus_cost),
            bonus_cost_per_hire: self.bonus_cost_per_hire.map(amount),
        }
    }
}

#[derive(sqlx::FromRow)]
struct LeaderboardRow {
    ambassador_id: Uuid,
    kind: Option<String>,
    currency: String,
    referrals: i64,
    hires: i64,
    earned_amount: i64,
    paid_amount: i64,
    rank: i64,
}

impl LeaderboardRow {
    fn into_view(self) -> LeaderboardEntry {
        LeaderboardEntry {
            rank: self.rank,
            ambassador_id: self.ambassador_id,
            kind: self.kind,
            referrals: self.referrals,
            hires: self.hires,
            earned: Amount {
                amount: self.earned_amount,
                currency: self.currency.clone(),
            },
            paid: Amount {
                amount: self.paid_amount,
                currency: self.currency,
            },
        }
    }
}

#[derive(sqlx::FromRow)]
struct PayoutTotalRow {
    program_id: Uuid,
    currency: String,
    status: String,
    payouts: i64,
    amount: i64,
}

impl PayoutTotalRow {
    fn into_view(self) -> Result<PayoutTotal, ApiError> {
        let status = PayoutStatusName::parse(&self.status).ok_or_else(|| {
            ApiError::internal(&format!(
                "analytics.payout_facts has the unknown status {:?}",
                self.status
            ))
        })?;
        Ok(PayoutTotal {
            program_id: self.program_id,
            status,
            payouts: self.payouts,
            amount: Amount {
                amount: self.amount,
                currency: self.currency,
            },
        })
    }
}
