//! `read_models.programs`: each program with its current terms and whether it accepts
//! referrals.

use async_trait::async_trait;
use referrals_domain::program::ProgramEvent;
use sqlx::types::Json;
use sqlx::PgConnection;

use super::{aggregate_uuid, database_error, decode, expect_one_row, Decoded};
use crate::{Projection, ProjectionError, StoredEvent};

/// Projects program events into `read_models.programs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProgramsProjection;

#[async_trait]
impl Projection for ProgramsProjection {
    fn name(&self) -> &'static str {
        "programs"
    }

    fn schema(&self) -> &'static str {
        "read_models"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["programs"]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let Some(Decoded::Program(program_event)) = decode(event)? else {
            return Ok(());
        };
        let program_id = aggregate_uuid(event)?;

        let result = match program_event {
            ProgramEvent::ProgramCreated {
                program_id: _,
                agency_id,
                name,
                currency,
                terms,
                terms_version,
                at,
            } => sqlx::query(
                "INSERT INTO programs (program_id, agency_id, name, currency, terms_version,
                                       terms, open, version, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, true, $7, $8, $9)
                 ON CONFLICT (program_id) DO UPDATE
                    SET agency_id = EXCLUDED.agency_id, name = EXCLUDED.name,
                        currency = EXCLUDED.currency, terms_version = EXCLUDED.terms_version,
                        terms = EXCLUDED.terms, open = EXCLUDED.open,
                        version = EXCLUDED.version, created_at = EXCLUDED.created_at,
                        updated_at = EXCLUDED.updated_at",
            )
            .bind(program_id)
            .bind(agency_id.0)
            .bind(name)
            .bind(currency.as_str())
            .bind(i64::from(terms_version))
            .bind(Json(terms))
            .bind(event.sequence)
            .bind(at)
            .bind(event.recorded_at)
            .execute(&mut *connection)
            .await
            .map_err(database_error(event))?,
            ProgramEvent::ProgramTermsRevised {
                terms_version,
                terms,
                at: _,
            } => sqlx::query(
                "UPDATE programs
                    SET terms_version = $2, terms = $3, version = $4, updated_at = $5
                  WHERE program_id = $1",
            )
            .bind(program_id)
            .bind(i64::from(terms_version))
            .bind(Json(terms))
            .bind(event.sequence)
            .bind(event.recorded_at)
            .execute(&mut *connection)
            .await
            .map_err(database_error(event))?,
            ProgramEvent::ProgramClosed { at: _ } => sqlx::query(
                "UPDATE programs SET open = false, version = $2, updated_at = $3
                  WHERE program_id = $1",
            )
            .bind(program_id)
            .bind(event.sequence)
            .bind(event.recorded_at)
            .execute(&mut *connection)
            .await
            .map_err(database_error(event))?,
        };
        expect_one_row(result, event, "programs")
    }
}
