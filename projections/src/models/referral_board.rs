//! `read_models.referral_board`: one row per referral with its pipeline status,
//! eligibility, stage dates, hours and milestones, for recruiters' boards and the
//! ambassador's list of referrals.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use referrals_domain::referral::{ReferralEvent, ReferralStatus};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    aggregate_uuid, batch_database_error, database_error, decode, expect_one_row,
    ineligible_reason_code, missing_row, Decoded, RowUpdate,
};
use crate::{Projection, ProjectionError, StoredEvent};

/// Projects referral events into `read_models.referral_board`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReferralBoardProjection;

#[async_trait]
impl Projection for ReferralBoardProjection {
    fn name(&self) -> &'static str {
        "referral_board"
    }

    fn schema(&self) -> &'static str {
        "read_models"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["referral_board"]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let Some(Decoded::Referral(referral_event)) = decode(event)? else {
            return Ok(());
        };
        let referral_id = aggregate_uuid(event)?;
        let update = RowUpdate {
            table: "referral_board",
            key_column: "referral_id",
            key: referral_id,
            event,
        };

        match referral_event {
            ReferralEvent::ReferralSubmitted {
                agency_id,
                program_id,
                ambassador_id,
                candidate,
                status,
                duplicate_of,
                eligibility,
                at,
                ..
            } => {
                let result = sqlx::query(
                    "INSERT INTO referral_board (
                         referral_id, agency_id, program_id, ambassador_id, recruiter_id, status,
                         eligible, ineligible_reason, duplicate_of, candidate_name_sealed,
                         submitted_at, contacted_at, interviewing_at, hired_at, start_date,
                         end_date, hours_total, milestones_reached, version, updated_at)
                     VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, $9, $10, NULL, NULL, NULL,
                             NULL, NULL, 0, 0, $11, $12)
                     ON CONFLICT (referral_id) DO UPDATE
                        SET agency_id = EXCLUDED.agency_id, program_id = EXCLUDED.program_id,
                            ambassador_id = EXCLUDED.ambassador_id, status = EXCLUDED.status,
                            eligible = EXCLUDED.eligible,
                            ineligible_reason = EXCLUDED.ineligible_reason,
                            duplicate_of = EXCLUDED.duplicate_of,
                            candidate_name_sealed = EXCLUDED.candidate_name_sealed,
                            submitted_at = EXCLUDED.submitted_at, version = EXCLUDED.version,
                            updated_at = EXCLUDED.updated_at",
                )
                .bind(referral_id)
                .bind(agency_id.0)
                .bind(program_id.0)
                .bind(ambassador_id.0)
                .bind(status.as_str())
                .bind(eligibility.is_eligible())
                .bind(ineligible_reason_code(eligibility))
                .bind(duplicate_of.map(|id| id.0))
                .bind(candidate.name.0)
                .bind(at)
                .bind(event.sequence)
                .bind(event.recorded_at)
                .execute(&mut *connection)
                .await
                .map_err(database_error(event))?;
                expect_one_row(result, event, "referral_board")
            }
            ReferralEvent::RecruiterAssigned { recruiter_id, .. } => {
                update
                    .run(connection, "recruiter_id = $4", |query| {
                        query.bind(recruiter_id.0)
                    })
                    .await
            }
            ReferralEvent::ReferralContacted { at } => {
                update
                    .run(connection, "status = $4, contacted_at = $5", |query| {
                        query.bind(ReferralStatus::Contacted.as_str()).bind(at)
                    })
                    .await
            }
            ReferralEvent::ReferralInterviewing { at } => {
                update
                    .run(connection, "status = $4, interviewing_at = $5", |query| {
                        query.bind(ReferralStatus::Interviewing.as_str()).bind(at)
                    })
                    .await
            }
            ReferralEvent::ReferralHired { start_date, at, .. } => {
                update
                    .run(
                        connection,
                        "status = $4, hired_at = $5, start_date = $6",
                        |query| {
                            query
                                .bind(ReferralStatus::Hired.as_str())
                                .bind(at)
                                .bind(start_date)
                        },
                    )
                    .await
            }
            ReferralEvent::EligibilityChanged { eligibility, .. } => {
                update
                    .run(
                        connection,
                        "eligible = $4, ineligible_reason = $5",
                        |query| {
                            query
                                .bind(eligibility.is_eligible())
                                .bind(ineligible_reason_code(eligibility))
                        },
                    )
                    .await
            }
            ReferralEvent::MilestoneReached { .. } => {
                update
                    .run(
                        connection,
                        "milestones_reached = milestones_reached + 1",
                        |query| query,
                    )
                    .await
            }
            ReferralEvent::HoursRecorded { total_hours, .. }
            | ReferralEvent::HoursCorrected { total_hours, .. }
            | ReferralEvent::HoursAccrued {
                total_hours_all: total_hours,
                ..
            }
            | ReferralEvent::HoursTotalLowered {
                total_hours_all: total_hours,
                ..
            } => {
                // Hours travel as exact decimal text ("165.50"), never as a float.
                update
                    .run(connection, "hours_total = $4::numeric", |query| {
                        query.bind(total_hours.to_string())
                    })
                    .await
            }
            ReferralEvent::PlacementEnded { end_date, .. } => {
                update
                    .run(connection, "end_date = $4", |query| query.bind(end_date))
                    .await
            }
            ReferralEvent::ReferralDeclined { .. } => {
                set_status(&update, connection, ReferralStatus::Declined).await
            }
            ReferralEvent::ReferralWithdrawn { .. } => {
                set_status(&update, connection, ReferralStatus::Withdrawn).await
            }
            ReferralEvent::ReferralExpired { .. } => {
                set_status(&update, connection, ReferralStatus::Expired).await
            }
            ReferralEvent::ReferralCompleted { .. } => {
                set_status(&update, connection, ReferralStatus::Completed).await
            }
        }
    }

    /// Folds the batch into the rows of its referrals in memory: one statement reads the
    /// stored rows and one upserts each touched row once. The rows match those of
    /// [`apply`](Projection::apply) event by event.
    async fn apply_batch(
        &self,
        connection: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut referral_events = Vec::new();
        for event in events {
            if let Some(Decoded::Referral(referral_event)) = decode(event)? {
                referral_events.push((event, aggregate_uuid(event)?, referral_event));
            }
        }
        if referral_events.is_empty() {
            return Ok(());
        }

        let mut referral_ids: Vec<Uuid> = referral_events.iter().map(|(_, id, _)| *id).collect();
        referral_ids.sort_unstable();
        referral_ids.dedup();
        let mut rows = read_rows(connection, &referral_ids).await?;
        for (event, referral_id, referral_event) in referral_events {
            fold(&mut rows, referral_id, event, referral_event)?;
        }

        // Every referral event changes its row, so every row read or created is written.
        let mut rows: Vec<BoardRow> = rows.into_values().collect();
        rows.sort_unstable_by_key(|row| row.referral_id);
        write_rows(connection, &rows).await
    }
}

async fn set_status(
    update: &RowUpdate<'_>,
    connection: &mut PgConnection,
    status: ReferralStatus,
) -> Result<(), ProjectionError> {
    update
        .run(connection, "status = $4", |query| {
            query.bind(status.as_str())
        })
        .await
}

/// A `referral_board` row while a batch is folded in memory.
#[derive(Debug, sqlx::FromRow)]
struct BoardRow {
    referral_id: Uuid,
    agency_id: Uuid,
    program_id: Uuid,
    ambassador_id: Uuid,
    recruiter_id: Option<Uuid>,
    status: String,
    eligible: bool,
    ineligible_reason: Option<String>,
    duplicate_of: Option<Uuid>,
    candidate_name_sealed: String,
    submitted_at: DateTime<Utc>,
    contacted_at: Option<DateTime<Utc>>,
    interviewing_at: Option<DateTime<Utc>>,
    hired_at: Option<DateTime<Utc>>,
    start_date: Option<NaiveDate>,
    end_date: Option<NaiveDate>,
    /// Exact decimal text such as `165.50`, so no value passes through a float.
    hours_total: String,
    milestones_reached: i32,
    version: i64,
    updated_at: DateTime<Utc>,
}

/// Reads the stored rows of `referral_ids`, by referral id.
async fn read_rows(
    connection: &mut PgConnection,
    referral_ids: &[Uuid],
) -> Result<HashMap<Uuid, BoardRow>, ProjectionError> {
    let rows: Vec<BoardRow> = sqlx::query_as(
        "SELECT referral_id, agency_id, program_id, ambassador_id, recruiter_id, status,
                eligible, ineligible_reason, duplicate_of, candidate_name_sealed, submitted_at,
                contacted_at, interviewing_at, hired_at, start_date, end_date,
                hours_total::text AS hours_total, milestones_reached, version, updated_at
           FROM referral_board WHERE referral_id = ANY($1)",
    )
    .bind(referral_ids)
    .fetch_all(&mut *connection)
    .await
    .map_err(batch_database_error("referral_board"))?;
    Ok(rows.into_iter().map(|row| (row.referral_id, row)).collect())
}

/// Applies one event to the rows in memory, with the same effect as the statement that
/// [`ReferralBoardProjection::apply`] runs for it.
///
/// # Errors
/// [`ProjectionError::Poison`] when the event changes a referral that has no row yet.
fn fold(
    rows: &mut HashMap<Uuid, BoardRow>,
    referral_id: Uuid,
    event: &StoredEvent,
    referral_event: ReferralEvent,
) -> Result<(), ProjectionError> {
    if let ReferralEvent::ReferralSubmitted {
        agency_id,
        program_id,
        ambassador_id,
        candidate,
        status,
        duplicate_of,
        eligibility,
        at,
        ..
    } = referral_event
    {
        // A repeated submission replaces these columns and keeps the others, as the
        // upsert of `apply` does.
        let row = match rows.entry(referral_id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(BoardRow {
                referral_id,
                agency_id: agency_id.0,
                program_id: program_id.0,
                ambassador_id: ambassador_id.0,
                recruiter_id: None,
                status: String::new(),
                eligible: false,
                ineligible_reason: None,
                duplicate_of: None,
                candidate_name_sealed: String::new(),
                submitted_at: at,
                contacted_at: None,
                interviewing_at: None,
                hired_at: None,
                start_date: None,
                end_date: None,
                hours_total: "0".to_owned(),
                milestones_reached: 0,
                version: event.sequence,
                updated_at: event.recorded_at,
            }),
        };
        row.agency_id = agency_id.0;
        row.program_id = program_id.0;
        row.ambassador_id = ambassador_id.0;
        row.status = status.as_str().to_owned();
        row.eligible = eligibility.is_eligible();
        row.ineligible_reason = ineligible_reason_code(eligibility).map(str::to_owned);
        row.duplicate_of = duplicate_of.map(|id| id.0);
        row.candidate_name_sealed = candidate.name.0;
        row.submitted_at = at;
        row.version = event.sequence;
        row.updated_at = event.recorded_at;
        return Ok(());
    }

    let row = rows
        .get_mut(&referral_id)
        .ok_or_else(|| missing_row(event, "referral_board"))?;
    match referral_event {
        ReferralEvent::ReferralSubmitted { .. } => unreachable!("handled above"),
        ReferralEvent::RecruiterAssigned { recruiter_id, .. } => {
            row.recruiter_id = Some(recruiter_id.0);
        }
        ReferralEvent::ReferralContacted { at } => {
            row.status = ReferralStatus::Contacted.as_str().to_owned();
            row.contacted_at = Some(at);
        }
        ReferralEvent::ReferralInterviewing { at } => {
            row.status = ReferralStatus::Interviewing.as_str().to_owned();
            row.interviewing_at = Some(at);
        }
        ReferralEvent::ReferralHired { start_date, at, .. } => {
            row.status = ReferralStatus::Hired.as_str().to_owned();
            row.hired_at = Some(at);
            row.start_date = Some(start_date);
        }
        ReferralEvent::EligibilityChanged { eligibility, .. } => {
            row.eligible = eligibility.is_eligible();
            row.ineligible_reason = ineligible_reason_code(eligibility).map(str::to_owned);
        }
        ReferralEvent::MilestoneReached { .. } => {
            row.milestones_reached += 1;
        }
        ReferralEvent::HoursRecorded { total_hours, .. }
        | ReferralEvent::HoursCorrected { total_hours, .. }
        | ReferralEvent::HoursAccrued {
            total_hours_all: total_hours,
            ..
        }
        | ReferralEvent::HoursTotalLowered {
            total_hours_all: total_hours,
            ..
        } => {
            row.hours_total = total_hours.to_string();
        }
        ReferralEvent::PlacementEnded { end_date, .. } => {
            row.end_date = Some(end_date);
        }
        ReferralEvent::ReferralDeclined { .. } => {
            row.status = ReferralStatus::Declined.as_str().to_owned();
        }
        ReferralEvent::ReferralWithdrawn { .. } => {
            row.status = ReferralStatus::Withdrawn.as_str().to_owned();
        }
        ReferralEvent::ReferralExpired { .. } => {
            row.status = ReferralStatus::Expired.as_str().to_owned();
        }
        ReferralEvent::ReferralCompleted { .. } => {
            row.status = ReferralStatus::Completed.as_str().to_owned();
        }
    }
    row.version = event.sequence;
    row.updated_at = event.recorded_at;
    Ok(())
}

/// Upserts `rows` with one statement that passes each column as an array.
async fn write_rows(
    connection: &mut PgConnection,
    rows: &[BoardRow],
) -> Result<(), ProjectionError> {
    fn column<'r, T>(rows: &'r [BoardRow], value: impl Fn(&'r BoardRow) -> T) -> Vec<T> {
        rows.iter().map(value).collect()
    }

    // The hours travel as text and become numeric in the database, as in `apply`.
    sqlx::query(
        "INSERT INTO referral_board (
             referral_id, agency_id, program_id, ambassador_id, recruiter_id, status, eligible,
             ineligible_reason, duplicate_of, candidate_name_sealed, submitted_at, contacted_at,
             interviewing_at, hired_at, start_date, end_date, hours_total, milestones_reached,
             version, updated_at)
         SELECT * FROM UNNEST(
             $1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[],
             $7::boolean[], $8::text[], $9::uuid[], $10::text[], $11::timestamptz[],
             $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::date[],
             $16::date[], $17::text[]::numeric[], $18::integer[], $19::bigint[],
             $20::timestamptz[])
         ON CONFLICT (referral_id) DO UPDATE
            SET agency_id = EXCLUDED.agency_id, program_id = EXCLUDED.program_id,
                ambassador_id = EXCLUDED.ambassador_id, recruiter_id = EXCLUDED.recruiter_id,
                status = EXCLUDED.status, eligible = EXCLUDED.eligible,
                ineligible_reason = EXCLUDED.ineligible_reason,
                duplicate_of = EXCLUDED.duplicate_of,
                candidate_name_sealed = EXCLUDED.candidate_name_sealed,
                submitted_at = EXCLUDED.submitted_at, contacted_at = EXCLUDED.contacted_at,
                interviewing_at = EXCLUDED.interviewing_at, hired_at = EXCLUDED.hired_at,
                start_date = EXCLUDED.start_date, end_date = EXCLUDED.end_date,
                hours_total = EXCLUDED.hours_total,
                milestones_reached = EXCLUDED.milestones_reached, version = EXCLUDED.version,
                updated_at = EXCLUDED.updated_at",
    )
    .bind(column(rows, |row| row.referral_id))
    .bind(column(rows, |row| row.agency_id))
    .bind(column(rows, |row| row.program_id))
    .bind(column(rows, |row| row.ambassador_id))
    .bind(column(rows, |row| row.recruiter_id))
    .bind(column(rows, |row| row.status.as_str()))
    .bind(column(rows, |row| row.eligible))
    .bind(column(rows, |row| row.ineligible_reason.as_deref()))
    .bind(column(rows, |row| row.duplicate_of))
    .bind(column(rows, |row| row.candidate_name_sealed.as_str()))
    .bind(column(rows, |row| row.submitted_at))
    .bind(column(rows, |row| row.contacted_at))
    .bind(column(rows, |row| row.interviewing_at))
    .bind(column(rows, |row| row.hired_at))
    .bind(column(rows, |row| row.start_date))
    .bind(column(rows, |row| row.end_date))
    .bind(column(rows, |row| row.hours_total.as_str()))
    .bind(column(rows, |row| row.milestones_reached))
    .bind(column(rows, |row| row.version))
    .bind(column(rows, |row| row.updated_at))
    .execute(&mut *connection)
    .await
    .map_err(batch_database_error("referral_board"))?;
    Ok(())
}
