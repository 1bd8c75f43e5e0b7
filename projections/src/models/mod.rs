//! The read models: one projection per module, and [`all`] to run them together.
//!
//! Each projection writes only the tables of its own schema (`read_models` or
//! `analytics`, created by the migrations), with unqualified table names. It derives every
//! value from the events alone, so a rebuild into a shadow schema produces the same rows
//! as the live catch-up. Business dates come from the domain time in the event's payload
//! (`at`), and `updated_at` from [`StoredEvent::recorded_at`].
//!
//! This module also contains what the projections share: decoding an event into the
//! aggregate's event type, and turning database failures into [`ProjectionError`]s.

mod aggregate_states;
mod ambassador_summaries;
mod ambassadors;
mod analytics;
mod batch_rows;
mod payout_ledger;
mod programs;
mod referral_board;
#[cfg(test)]
mod tests;

use cqrs_es::Aggregate;
use referrals_domain::ambassador::{Ambassador, AmbassadorEvent};
use referrals_domain::payout::{Payout, PayoutEvent};
use referrals_domain::program::{Program, ProgramEvent};
use referrals_domain::referral::{Eligibility, Referral, ReferralEvent};
use sqlx::postgres::{PgArguments, PgQueryResult};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

pub use aggregate_states::AggregateStatesProjection;
pub use ambassador_summaries::AmbassadorSummariesProjection;
pub use ambassadors::AmbassadorsProjection;
pub use analytics::AnalyticsProjection;
pub use payout_ledger::PayoutLedgerProjection;
pub use programs::ProgramsProjection;
pub use referral_board::ReferralBoardProjection;

use crate::{Projection, ProjectionError, StoredEvent};

/// Returns every read model projection. Their order does not matter, because each follows
/// the events on its own checkpoint and reads no other projection's tables.
pub fn all() -> Vec<Box<dyn Projection>> {
    vec![
        Box::new(AggregateStatesProjection),
        Box::new(ProgramsProjection),
        Box::new(AmbassadorsProjection),
        Box::new(ReferralBoardProjection),
        Box::new(AmbassadorSummariesProjection),
        Box::new(PayoutLedgerProjection),
        Box::new(AnalyticsProjection),
    ]
}

/// Event types of the program aggregate that this code can decode.
const PROGRAM_EVENTS: &[&str] = &["ProgramCreated", "ProgramTermsRevised", "ProgramClosed"];

/// Event types of the ambassador aggregate that this code can decode.
const AMBASSADOR_EVENTS: &[&str] = &[
    "AmbassadorEnrolled",
    "AmbassadorUpdated",
    "AmbassadorDeactivated",
];

/// Event types of the referral aggregate that this code can decode.
const REFERRAL_EVENTS: &[&str] = &[
    "ReferralSubmitted",
    "RecruiterAssigned",
    "ReferralContacted",
    "ReferralInterviewing",
    "ReferralHired",
    "EligibilityChanged",
    "MilestoneReached",
    "HoursRecorded",
    "HoursCorrected",
    "HoursAccrued",
    "HoursTotalLowered",
    "PlacementEnded",
    "ReferralDeclined",
    "ReferralWithdrawn",
    "ReferralExpired",
    "ReferralCompleted",
];

/// Event types of the payout aggregate that this code can decode.
const PAYOUT_EVENTS: &[&str] = &[
    "PayoutRequested",
    "PayoutApproved",
    "PayoutRejected",
    "PayoutHeld",
    "PayoutReleased",
    "PayoutVoided",
    "PayoutExported",
    "PayoutPaid",
    "PayoutReversed",
];

/// A stored event decoded into its aggregate's event type.
#[allow(
    clippy::large_enum_variant,
    reason = "one value is decoded per event and dropped after it is applied"
)]
#[derive(Debug)]
enum Decoded {
    Program(ProgramEvent),
    Ambassador(AmbassadorEvent),
    Referral(ReferralEvent),
    Payout(PayoutEvent),
}

/// Decodes `event` into its aggregate's event type.
///
/// Returns `None` for an aggregate or event type this code does not know, such as one
/// added by a later release, and projections ignore those.
///
/// # Errors
/// [`ProjectionError::Poison`] when the event has a known type but its payload cannot be
/// decoded.
fn decode(event: &StoredEvent) -> Result<Option<Decoded>, ProjectionError> {
    let event_type = event.event_type.as_str();
    let aggregate_type = event.aggregate_type.as_str();
    let decoded = if aggregate_type == Program::TYPE && PROGRAM_EVENTS.contains(&event_type) {
        Decoded::Program(event.decode()?)
    } else if aggregate_type == Ambassador::TYPE && AMBASSADOR_EVENTS.contains(&event_type) {
        Decoded::Ambassador(event.decode()?)
    } else if aggregate_type == Referral::TYPE && REFERRAL_EVENTS.contains(&event_type) {
        Decoded::Referral(event.decode()?)
    } else if aggregate_type == Payout::TYPE && PAYOUT_EVENTS.contains(&event_type) {
        Decoded::Payout(event.decode()?)
    } else {
        return Ok(None);
    };
    Ok(Some(decoded))
}

/// Returns the stored code of an ineligibility reason, such as `prior_contact`, or
/// `None` while the referral is eligible.
fn ineligible_reason_code(eligibility: Eligibility) -> Option<&'static str> {
    eligibility.reason().map(|reason| reason.as_str())
}

/// Parses the event's aggregate id, which every aggregate of this product draws from
/// UUIDs.
///
/// # Errors
/// [`ProjectionError::Poison`] when the id is not a UUID.
fn aggregate_uuid(event: &StoredEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&event.aggregate_id).map_err(|error| {
        ProjectionError::Poison(format!(
            "the aggregate id of {} is not a UUID: {error}",
            event.describe()
        ))
    })
}

/// Converts a database error met while applying `event`.
///
/// An integrity constraint violation (SQLSTATE class 23), such as a plaintext value in a
/// column that must contain sealed ciphertext, fails again on every retry, so it stops the
/// projection. Any other failure is treated as transient. The message names the
/// constraint but never the row's values.
fn database_error(event: &StoredEvent) -> impl Fn(sqlx::Error) -> ProjectionError + '_ {
    move |error| {
        if violates_constraint(&error) {
            ProjectionError::Poison(format!(
                "{} breaks a constraint of the read model: {error}",
                event.describe()
            ))
        } else {
            ProjectionError::Transient(format!(
                "database error while applying {}: {error}",
                event.describe()
            ))
        }
    }
}

/// Converts a database error met while applying a batch of events to `table`, as
/// [`database_error`] does for one event. A constraint violation (SQLSTATE class 23) fails
/// on every retry, so it is poison: the runner applies the batch again event by event and
/// stops at the event that breaks it. The message names the constraint but never the
/// rows' values.
fn batch_database_error(table: &'static str) -> impl Fn(sqlx::Error) -> ProjectionError {
    move |error| {
        let message = format!("database error while writing a batch to {table}: {error}");
        if violates_constraint(&error) {
            ProjectionError::Poison(message)
        } else {
            ProjectionError::Transient(message)
        }
    }
}

/// Returns true for an integrity constraint violation (SQLSTATE class 23), which fails
/// again on every retry.
fn violates_constraint(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Database(database)
            if database.code().is_some_and(|code| code.starts_with("23"))
    )
}

/// Checks that a statement wrote exactly one row.
///
/// # Errors
/// [`ProjectionError::Poison`] when it changed none. The row is created by an earlier
/// event (enrollment, submission, request), so that event was not applied first.
fn expect_one_row(
    result: PgQueryResult,
    event: &StoredEvent,
    table: &str,
) -> Result<(), ProjectionError> {
    if result.rows_affected() == 1 {
        return Ok(());
    }
    Err(missing_row(event, table))
}

/// Returns the error for `event` finding no row to update in `table`. The row is created
/// by an earlier event (enrollment, submission, request), so that event was not applied
/// first.
fn missing_row(event: &StoredEvent, table: &str) -> ProjectionError {
    ProjectionError::Poison(format!(
        "{} found no row in {table} to update, because the event that creates the row was \
         not applied before it",
        event.describe()
    ))
}

/// An update of the one row that an aggregate owns in a table, which also records the
/// event's sequence in `version` and its time in `updated_at`.
struct RowUpdate<'e> {
    table: &'static str,
    key_column: &'static str,
    key: Uuid,
    event: &'e StoredEvent,
}

impl RowUpdate<'_> {
    /// Runs `UPDATE <table> SET <assignments>, version, updated_at` on the row.
    /// Parameters $1 to $3 are taken, so `bind` binds the assignments' values from $4 on.
    ///
    /// # Errors
    /// As [`database_error`] and [`expect_one_row`].
    async fn run<F>(
        &self,
        connection: &mut PgConnection,
        assignments: &str,
        bind: F,
    ) -> Result<(), ProjectionError>
    where
        F: for<'q> FnOnce(Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments>
            + Send,
    {
        let sql = format!(
            "UPDATE {table} SET {assignments}, version = $2, updated_at = $3 WHERE {key} = $1",
            table = self.table,
            key = self.key_column,
        );
        let query = sqlx::query(&sql)
            .bind(self.key)
            .bind(self.event.sequence)
            .bind(self.event.recorded_at);
        let result = bind(query)
            .execute(&mut *connection)
            .await
            .map_err(database_error(self.event))?;
        expect_one_row(result, self.event, self.table)
    }
}
