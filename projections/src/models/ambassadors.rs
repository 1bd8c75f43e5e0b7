//! `read_models.ambassadors`: each ambassador's kind, activity and contact details as
//! sealed ciphertext, for lists and detail pages that open the names through the API.

use async_trait::async_trait;
use referrals_domain::ambassador::AmbassadorEvent;
use referrals_domain::values::Sealed;
use sqlx::PgConnection;

use super::{aggregate_uuid, database_error, decode, expect_one_row, Decoded};
use crate::{Projection, ProjectionError, StoredEvent};

/// Projects ambassador events into `read_models.ambassadors`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AmbassadorsProjection;

#[async_trait]
impl Projection for AmbassadorsProjection {
    fn name(&self) -> &'static str {
        "ambassadors"
    }

    fn schema(&self) -> &'static str {
        "read_models"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["ambassadors"]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let Some(Decoded::Ambassador(ambassador_event)) = decode(event)? else {
            return Ok(());
        };
        let ambassador_id = aggregate_uuid(event)?;
        let sealed_text = |sealed: Option<Sealed>| sealed.map(|Sealed(text)| text);

        let result = match ambassador_event {
            AmbassadorEvent::AmbassadorEnrolled {
                ambassador_id: _,
                agency_id,
                kind,
                name,
                email,
                phone,
                external_id,
                sms_consent,
                at,
            } => sqlx::query(
                "INSERT INTO ambassadors (ambassador_id, agency_id, kind, active, name_sealed,
                                          email_sealed, phone_sealed, external_id, sms_consent,
                                          version, enrolled_at, updated_at)
                 VALUES ($1, $2, $3, true, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (ambassador_id) DO UPDATE
                    SET agency_id = EXCLUDED.agency_id, kind = EXCLUDED.kind,
                        active = EXCLUDED.active, name_sealed = EXCLUDED.name_sealed,
                        email_sealed = EXCLUDED.email_sealed,
                        phone_sealed = EXCLUDED.phone_sealed,
                        external_id = EXCLUDED.external_id,
                        sms_consent = EXCLUDED.sms_consent, version = EXCLUDED.version,
                        enrolled_at = EXCLUDED.enrolled_at, updated_at = EXCLUDED.updated_at",
            )
            .bind(ambassador_id)
            .bind(agency_id.0)
            .bind(kind.as_str())
            .bind(name.0)
            .bind(sealed_text(email))
            .bind(sealed_text(phone))
            .bind(external_id)
            .bind(sms_consent)
            .bind(event.sequence)
            .bind(at)
            .bind(event.recorded_at)
            .execute(&mut *connection)
            .await
            .map_err(database_error(event))?,
            // Only the changed fields are present; NULL keeps the current value.
            AmbassadorEvent::AmbassadorUpdated {
                name,
                email,
                phone,
                kind,
                sms_consent,
                external_id,
                at: _,
            } => sqlx::query(
                "UPDATE ambassadors
                    SET name_sealed = coalesce($2, name_sealed),
                        email_sealed = coalesce($3, email_sealed),
                        phone_sealed = coalesce($4, phone_sealed),
                        kind = coalesce($5, kind),
                        sms_consent = coalesce($6, sms_consent),
                        external_id = coalesce($7, external_id),
                        version = $8, updated_at = $9
                  WHERE ambassador_id = $1",
            )
            .bind(ambassador_id)
            .bind(sealed_text(name))
            .bind(sealed_text(email))
            .bind(sealed_text(phone))
            .bind(kind.map(|kind| kind.as_str()))
            .bind(sms_consent)
            .bind(external_id)
            .bind(event.sequence)
            .bind(event.recorded_at)
            .execute(&mut *connection)
            .await
            .map_err(database_error(event))?,
            AmbassadorEvent::AmbassadorDeactivated { at: _ } => sqlx::query(
                "UPDATE ambassadors SET active = false, version = $2, updated_at = $3
                  WHERE ambassador_id = $1",
            )
            .bind(ambassador_id)
            .bind(event.sequence)
            .bind(event.recorded_at)
            .execute(&mut *connection)
            .await
            .map_err(database_error(event))?,
        };
        expect_one_row(result, event, "ambassadors")
    }
}
