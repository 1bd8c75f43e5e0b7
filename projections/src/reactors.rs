//! Process managers that follow the events table like projections but act by issuing
//! commands. They run with at-least-once delivery: the checkpoint moves only after the
//! commands succeeded, and the commands are idempotent, so a repeat changes nothing.

use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::EventEnvelope;
use referrals_domain::ids::{AgencyId, ReferralId};
use referrals_domain::referral::ReferralEvent;
use referrals_store::application::{AppError, Application, PAYOUT_REQUESTER_JOB};
use referrals_store::event_store::{Actor, CommandMetadata};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Projection, ProjectionError, StoredEvent};

/// Requests the payout of every payable milestone a referral reaches, and voids the
/// unpaid payouts of a placement that ended within its guarantee period.
///
/// Commands on referrals already do both right after they commit. This reactor makes
/// them durable when a process stops between the two.
pub struct PayoutRequester {
    app: Arc<Application>,
}

impl PayoutRequester {
    /// Creates the reactor over the application.
    pub fn new(app: Arc<Application>) -> Self {
        Self { app }
    }
}

#[async_trait]
impl Projection for PayoutRequester {
    fn name(&self) -> &'static str {
        PAYOUT_REQUESTER_JOB
    }

    fn schema(&self) -> &'static str {
        "public"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    async fn apply(
        &self,
        _connection: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != "referral"
            || !matches!(
                event.event_type.as_str(),
                "MilestoneReached" | "PlacementEnded"
            )
        {
            return Ok(());
        }
        let payload: ReferralEvent = event.decode()?;
        if !matches!(
            payload,
            ReferralEvent::MilestoneReached { payable: true, .. }
                | ReferralEvent::PlacementEnded {
                    within_guarantee: true,
                    ..
                }
        ) {
            return Ok(());
        }
        let referral_id: ReferralId = event.aggregate_id.parse().map_err(|_| {
            ProjectionError::Poison(format!(
                "{} has an aggregate id that is not a UUID",
                event.describe()
            ))
        })?;
        let agency_id = AgencyId(event.agency_id);
        let referral = match self
            .app
            .referrals
            .load(agency_id, &event.aggregate_id)
            .await
        {
            Ok(Some((referral, _))) => referral,
            Ok(None) => {
                return Err(ProjectionError::Poison(format!(
                    "{} belongs to a referral that cannot be loaded",
                    event.describe()
                )))
            }
            Err(error) => return Err(ProjectionError::Transient(error.to_string())),
        };

        let metadata = metadata_of(event, agency_id);
        let envelope = EventEnvelope {
            aggregate_id: event.aggregate_id.clone(),
            sequence: usize::try_from(event.sequence).unwrap_or_default(),
            payload,
            metadata: Default::default(),
        };
        let envelopes = [envelope];
        let outcome = match self
            .app
            .request_payouts(&metadata, referral_id, &referral, &envelopes)
            .await
        {
            Ok(_) => {
                self.app
                    .void_payouts_after_early_end(&metadata, referral_id, &referral, &envelopes)
                    .await
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(_) => Ok(()),
            Err(error @ (AppError::Unavailable(_) | AppError::Conflict { .. })) => {
                Err(ProjectionError::Transient(error.to_string()))
            }
            Err(error) => Err(ProjectionError::Poison(format!(
                "requesting or voiding the payouts for {} failed: {error}",
                event.describe()
            ))),
        }
    }
}

/// Metadata for commands caused by `event`: same agency and correlation, the job as actor.
fn metadata_of(event: &StoredEvent, agency_id: AgencyId) -> CommandMetadata {
    let mut metadata = CommandMetadata::new(
        agency_id,
        Actor::System {
            job: PAYOUT_REQUESTER_JOB.to_owned(),
        },
    );
    if let Some(correlation) = event
        .metadata_text("correlation_id")
        .and_then(|text| Uuid::parse_str(text).ok())
    {
        metadata.correlation_id = correlation;
    }
    metadata.causation_id = Uuid::new_v5(&Uuid::NAMESPACE_URL, event.id().as_bytes());
    metadata
}
