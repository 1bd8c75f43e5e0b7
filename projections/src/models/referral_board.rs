//! `read_models.referral_board`: one row per referral with its pipeline status,
//! eligibility, stage dates, hours and milestones, for recruiters' boards and the
//! ambassador's list of referrals.

use async_trait::async_trait;
use referrals_domain::referral::{ReferralEvent, ReferralStatus};
use sqlx::PgConnection;

use super::{
    aggregate_uuid, database_error, decode, expect_one_row, ineligible_reason_code, Decoded,
    RowUpdate,
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
