//! Use cases that need more than one aggregate: enrolling with sealed contact details,
//! submitting a referral (program terms, ambassador, candidate claim, prior contact), and
//! the process manager that requests a payout for every payable milestone.
//!
//! The HTTP API, the demo loader and the tests all go through these functions, so a
//! referral made by any of them has the same events, keys and reservations.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::EventEnvelope;
use referrals_domain::ambassador::{
    Ambassador, AmbassadorCommand, EnrollAmbassador, UpdateAmbassador,
};
use referrals_domain::ids::{AgencyId, AmbassadorId, PayoutId, ProgramId, ReferralId};
use referrals_domain::payout::{
    Payout, PayoutCommand, PayoutStatus, RequestPayout, Requester, VoidPayout, VoidReason,
};
use referrals_domain::privacy::{PrivacyRecord, SubjectKind};
use referrals_domain::program::{CreateProgram, Program, ProgramCommand};
use referrals_domain::referral::{
    assess_eligibility, AmbassadorSnapshot, Eligibility, ProgramSnapshot, Referral,
    ReferralCommand, ReferralEvent, SealedContact, SubmitReferral,
};
use referrals_domain::services::{PayoutServices, ReferralServices};
use referrals_domain::terms::{AmbassadorKind, Recipient, Terms};
use referrals_domain::values::{
    ContactKeys, Currency, EmailAddress, FreeText, Money, PersonName, PhoneNumber, Sealed,
};
use referrals_domain::DomainError;
use serde_json::Value;
use sqlx::PgPool;

use crate::crypto::{seal_field, Field, MasterKey};
use crate::event_store::{
    Actor, AggregateStore, CommandError, CommandMetadata, Executed, Tenanted,
};
use crate::keys::{KeyError, KeyVault};
use crate::personal::{ContactDetails, PersonalData};
use crate::reservations::{PgBonusCapLedger, PgCandidateRegistry, IN_FLIGHT_GRACE};

/// The name recorded as the actor of payouts requested for reached milestones.
pub const PAYOUT_REQUESTER_JOB: &str = "payout_requester";

/// The name recorded as the actor of payouts voided because a placement ended within
/// its guarantee period.
pub const GUARANTEE_JOB: &str = "guarantee";

/// How many times a command that lost a version race is retried by a job.
const JOB_RETRIES: usize = 5;

/// Errors of the use cases.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A rule rejected the command, or a value was invalid.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The named resource does not exist in the caller's agency.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Another request changed the resource first.
    #[error("the {aggregate_type} was changed by another request; reload it and try again")]
    Conflict {
        /// The aggregate's type.
        aggregate_type: &'static str,
    },
    /// The database is unavailable.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Anything else that is the platform's fault.
    #[error("internal failure: {0}")]
    Internal(String),
}

impl From<CommandError<DomainError>> for AppError {
    fn from(error: CommandError<DomainError>) -> Self {
        match error {
            CommandError::Rejected(error) => Self::Domain(error),
            CommandError::NotFound { aggregate_type } => Self::NotFound(aggregate_type),
            CommandError::Conflict { aggregate_type } => Self::Conflict { aggregate_type },
            CommandError::Unavailable(error) => Self::Unavailable(error.to_string()),
            CommandError::Failed(error) => Self::Internal(error.to_string()),
        }
    }
}

impl From<KeyError> for AppError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Database(error) => Self::Unavailable(error.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// A new program, as a user enters it.
#[derive(Debug, Clone)]
pub struct NewProgram {
    /// The program's name.
    pub name: String,
    /// The currency its bonuses are paid in.
    pub currency: Currency,
    /// The first version of its terms.
    pub terms: Terms,
}

/// A new ambassador, as a recruiter enters them.
#[derive(Debug, Clone)]
pub struct NewAmbassador {
    /// Contact details, sealed before they are stored.
    pub contact: ContactDetails,
    /// What kind of ambassador this is.
    pub kind: AmbassadorKind,
    /// The agency's own id for the person, such as a payroll number.
    pub external_id: Option<String>,
    /// Whether the ambassador agreed to text messages.
    pub sms_consent: bool,
}

/// Changes to an ambassador, as a recruiter enters them; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AmbassadorChanges {
    /// The new name.
    pub name: Option<PersonName>,
    /// The new e-mail address.
    pub email: Option<EmailAddress>,
    /// The new phone number.
    pub phone: Option<PhoneNumber>,
    /// The new kind.
    pub kind: Option<AmbassadorKind>,
    /// The new external id.
    pub external_id: Option<String>,
    /// The new SMS consent; `Some(false)` records an opt-out.
    pub sms_consent: Option<bool>,
}

/// A point in an aggregate's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryPoint {
    /// After every event recorded at or before this time.
    Time(DateTime<Utc>),
    /// After the event with this sequence number, which is the version it produced.
    Version(usize),
}

/// A new referral, as a recruiter enters it.
#[derive(Debug, Clone)]
pub struct NewReferral {
    /// The program it is submitted to.
    pub program_id: ProgramId,
    /// Who refers.
    pub ambassador_id: AmbassadorId,
    /// The referred candidate.
    pub candidate: ContactDetails,
    /// The job the candidate is referred for, in the agency's words.
    pub job_reference: Option<String>,
    /// A note about the candidate, sealed like their contact details.
    pub note: Option<FreeText>,
}

/// Whether payouts are requested right after the command that reached their milestones,
/// when they usually do not exist yet, or again by the reactor, when they usually do.
#[derive(Debug, Clone, Copy)]
enum Requesting {
    First,
    Again,
}

/// The application: every aggregate store and the services behind them.
pub struct Application {
    pool: PgPool,
    personal: PersonalData,
    /// Programs and their versioned terms.
    pub programs: AggregateStore<Program>,
    /// Ambassadors.
    pub ambassadors: AggregateStore<Ambassador>,
    /// Referrals.
    pub referrals: AggregateStore<Referral>,
    /// Payouts.
    pub payouts: AggregateStore<Payout>,
    /// Records of subject requests and agency off-boarding.
    pub privacy: AggregateStore<PrivacyRecord>,
}

impl Application {
    /// Wires the application over a pool and the master key.
    pub fn new(pool: PgPool, master: MasterKey) -> Self {
        let vault = Arc::new(KeyVault::new(pool.clone(), master));
        let referral_services = ReferralServices {
            candidates: Arc::new(PgCandidateRegistry::new(pool.clone())),
        };
        let payout_services = PayoutServices {
            bonus_caps: Arc::new(PgBonusCapLedger::new(pool.clone())),
        };
        Self {
            personal: PersonalData::new(vault),
            programs: AggregateStore::new(pool.clone(), ()),
            ambassadors: AggregateStore::new(pool.clone(), ()),
            referrals: AggregateStore::new(pool.clone(), referral_services),
            payouts: AggregateStore::new(pool.clone(), payout_services),
            privacy: AggregateStore::new(pool.clone(), ()),
            pool,
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Sealing and opening of personal data.
    pub fn personal(&self) -> &PersonalData {
        &self.personal
    }

    /// Rebuilds an aggregate of `agency_id` as it was at `point`: starts from the nearest
    /// earlier state in `read_models.aggregate_snapshots` (kept every 50 events), or from
    /// an empty aggregate, and applies the events after it up to that point.
    ///
    /// Returns the state and its version, or `None` when the aggregate had no event by
    /// then, belongs to another agency, or has no event with the requested version.
    ///
    /// # Errors
    /// [`AppError::Unavailable`] when the query fails, and [`AppError::Internal`] when a
    /// stored event does not decode.
    pub async fn state_at<A: cqrs_es::Aggregate>(
        &self,
        agency_id: AgencyId,
        aggregate_id: &str,
        point: HistoryPoint,
    ) -> Result<Option<(A, usize)>, AppError> {
        let (until_time, until_version) = match point {
            HistoryPoint::Time(at) => (Some(at), None),
            HistoryPoint::Version(version) => {
                (None, Some(i64::try_from(version).unwrap_or(i64::MAX)))
            }
        };
        let snapshot: Option<(i64, Value)> = sqlx::query_as(
            "SELECT version, state FROM read_models.aggregate_snapshots
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND agency_id = $3
                AND ($4::timestamptz IS NULL OR recorded_at <= $4)
                AND ($5::bigint IS NULL OR version <= $5)
              ORDER BY version DESC
              LIMIT 1",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(agency_id.0)
        .bind(until_time)
        .bind(until_version)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| AppError::Unavailable(error.to_string()))?;
        let (mut aggregate, mut version) = match snapshot {
            Some((version, state)) => (
                serde_json::from_value::<A>(state)
                    .map_err(|error| AppError::Internal(error.to_string()))?,
                usize::try_from(version).unwrap_or_default(),
            ),
            None => (A::default(), 0),
        };

        // Payloads are read as stored text: a cast to jsonb would reject `\u0000`.
        let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT sequence, event_type, event_version, payload::text FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND agency_id = $3
                AND sequence > $6
                AND ($4::timestamptz IS NULL OR recorded_at <= $4)
                AND ($5::bigint IS NULL OR sequence <= $5)
              ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(agency_id.0)
        .bind(until_time)
        .bind(until_version)
        .bind(i64::try_from(version).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|error| AppError::Unavailable(error.to_string()))?;

        let last = rows
            .last()
            .map(|(sequence, ..)| *sequence)
            .or((version > 0).then_some(i64::try_from(version).unwrap_or(i64::MAX)));
        if last.is_none() || (until_version.is_some() && last != until_version) {
            return Ok(None);
        }
        for (sequence, event_type, event_version, payload) in rows {
            let payload: Value = serde_json::from_str(&payload)
                .map_err(|error| AppError::Internal(error.to_string()))?;
            version = usize::try_from(sequence).unwrap_or_default();
            let stored = SerializedEvent {
                aggregate_id: aggregate_id.to_owned(),
                sequence: version,
                aggregate_type: A::TYPE.to_owned(),
                event_type,
                event_version,
                payload,
                metadata: Value::Null,
            };
            let event = crate::upcast::decode::<A>(stored)
                .map_err(|error| AppError::Internal(error.to_string()))?;
            aggregate.apply(event);
        }
        Ok(Some((aggregate, version)))
    }

    /// Creates a program with its first terms.
    ///
    /// # Errors
    /// Returns [`AppError::Domain`] when the terms are invalid.
    pub async fn create_program(
        &self,
        metadata: &CommandMetadata,
        program: NewProgram,
    ) -> Result<Executed<Program>, AppError> {
        let program_id = ProgramId::new();
        let command = ProgramCommand::CreateProgram(CreateProgram {
            program_id,
            agency_id: metadata.agency_id,
            name: program.name,
            currency: program.currency,
            terms: program.terms,
            at: metadata.recorded_at,
        });
        Ok(self
            .programs
            .create(&program_id.to_string(), command, metadata)
            .await?)
    }

    /// Enrolls an ambassador, sealing their contact details under a new data key.
    ///
    /// # Errors
    /// Returns [`AppError::Domain`] when a value is invalid.
    pub async fn enroll_ambassador(
        &self,
        metadata: &CommandMetadata,
        ambassador: NewAmbassador,
    ) -> Result<Executed<Ambassador>, AppError> {
        let ambassador_id = AmbassadorId::new();
        let sealed = self
            .personal
            .seal_contact(metadata.agency_id, ambassador_id.0, &ambassador.contact)
            .await?;
        let contact_keys = self
            .personal
            .contact_keys(
                metadata.agency_id,
                ambassador.contact.email.as_ref(),
                ambassador.contact.phone.as_ref(),
            )
            .await?;
        crate::privacy::index_subject(
            &self.pool,
            metadata.agency_id,
            SubjectKind::Ambassador,
            ambassador_id.0,
            &contact_keys,
        )
        .await?;
        let command = AmbassadorCommand::EnrollAmbassador(EnrollAmbassador {
            ambassador_id,
            agency_id: metadata.agency_id,
            kind: ambassador.kind,
            name: sealed.name,
            email: sealed.email,
            phone: sealed.phone,
            external_id: ambassador.external_id,
            sms_consent: ambassador.sms_consent,
            at: metadata.recorded_at,
        });
        Ok(self
            .ambassadors
            .create(&ambassador_id.to_string(), command, metadata)
            .await?)
    }

    /// Changes an ambassador's details, sealing new contact details under the
    /// ambassador's data key.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown ambassador, [`AppError::Conflict`] when the
    /// ambassador is no longer at `expected_version`, and an invalid transition when new
    /// contact details are given for an ambassador whose personal data was erased.
    pub async fn update_ambassador(
        &self,
        metadata: &CommandMetadata,
        ambassador_id: AmbassadorId,
        changes: AmbassadorChanges,
        expected_version: Option<usize>,
    ) -> Result<Executed<Ambassador>, AppError> {
        let agency_id = metadata.agency_id;
        // Checked before sealing, so that an unknown or foreign id never gets a data key.
        if self
            .ambassadors
            .load(agency_id, &ambassador_id.to_string())
            .await?
            .is_none()
        {
            return Err(AppError::NotFound("ambassador"));
        }
        let (name, email, phone) = self
            .seal_ambassador_contact(agency_id, ambassador_id, &changes)
            .await?;
        let contact_keys = self
            .personal
            .contact_keys(agency_id, changes.email.as_ref(), changes.phone.as_ref())
            .await?;
        crate::privacy::index_subject(
            &self.pool,
            agency_id,
            SubjectKind::Ambassador,
            ambassador_id.0,
            &contact_keys,
        )
        .await?;

        let command = AmbassadorCommand::UpdateAmbassador(UpdateAmbassador {
            name,
            email,
            phone,
            kind: changes.kind,
            sms_consent: changes.sms_consent,
            external_id: changes.external_id,
            at: metadata.recorded_at,
        });
        Ok(self
            .ambassadors
            .execute(
                &ambassador_id.to_string(),
                command,
                metadata,
                expected_version,
            )
            .await?)
    }

    /// Seals the contact fields present in `changes`; reads no key when none is present.
    async fn seal_ambassador_contact(
        &self,
        agency_id: AgencyId,
        ambassador_id: AmbassadorId,
        changes: &AmbassadorChanges,
    ) -> Result<(Option<Sealed>, Option<Sealed>, Option<Sealed>), AppError> {
        if changes.name.is_none() && changes.email.is_none() && changes.phone.is_none() {
            return Ok((None, None, None));
        }
        let key = match self
            .personal
            .vault()
            .data_key_or_create(agency_id, ambassador_id.0)
            .await
        {
            Ok(key) => key,
            // New details for an erased person would undo the erasure.
            Err(KeyError::Erased) => {
                return Err(DomainError::InvalidTransition {
                    aggregate: "ambassador",
                    from: "erased".to_owned(),
                    action: "change the contact details of the ambassador",
                }
                .into())
            }
            Err(error) => return Err(error.into()),
        };
        let seal = |field, text: &str| seal_field(&key, agency_id, ambassador_id.0, field, text);
        Ok((
            changes
                .name
                .as_ref()
                .map(|name| seal(Field::Name, name.as_str())),
            changes
                .email
                .as_ref()
                .map(|email| seal(Field::Email, email.as_str())),
            changes
                .phone
                .as_ref()
                .map(|phone| seal(Field::Phone, phone.as_str())),
        ))
    }

    /// Decides whether `referral` would earn bonuses if it were submitted at `at`. Runs
    /// the checks of [`Self::submit_referral`] but claims no candidate, creates no data
    /// key for the candidate and records no event. The result reveals only whether another
    /// referral owns the candidate, never which one.
    ///
    /// # Errors
    /// As [`Self::submit_referral`]: [`AppError::NotFound`] for an unknown program or
    /// ambassador, [`AppError::Domain`] for a closed program, an inactive ambassador, a
    /// candidate without e-mail and phone, or a self-referral.
    pub async fn check_eligibility(
        &self,
        agency_id: AgencyId,
        referral: &NewReferral,
        at: DateTime<Utc>,
    ) -> Result<Eligibility, AppError> {
        let program = self
            .program_snapshot(agency_id, referral.program_id)
            .await?;
        let ambassador = self
            .ambassador_snapshot(agency_id, referral.ambassador_id)
            .await?;
        if !program.open {
            return Err(DomainError::ProgramClosed.into());
        }
        if !ambassador.active {
            return Err(DomainError::AmbassadorInactive.into());
        }

        let candidate_keys = self
            .personal
            .contact_keys(
                agency_id,
                referral.candidate.email.as_ref(),
                referral.candidate.phone.as_ref(),
            )
            .await?;
        if candidate_keys.is_empty() {
            return Err(DomainError::CandidateContactMissing.into());
        }
        if candidate_keys.matches_any(&ambassador.contact_keys) {
            return Err(DomainError::SelfReferral.into());
        }

        let prior_contact = self
            .known_before(
                agency_id,
                &candidate_keys,
                at,
                program.terms.prior_contact_lookback_days,
            )
            .await?;
        let owned_by_other = self.candidate_owned(agency_id, &candidate_keys, at).await?;
        Ok(assess_eligibility(
            &program,
            &ambassador,
            prior_contact,
            owned_by_other,
        )?)
    }

    /// Returns true when a referral owns a candidate with one of `keys` at `at`. Reads the
    /// claims the way [`PgCandidateRegistry`] judges them, without taking any: a claim
    /// whose referral has no events yet counts while it is younger than
    /// [`IN_FLIGHT_GRACE`], because its submission may still be in flight.
    async fn candidate_owned(
        &self,
        agency_id: AgencyId,
        keys: &ContactKeys,
        at: DateTime<Utc>,
    ) -> Result<bool, AppError> {
        let keys: Vec<&str> = [&keys.email, &keys.phone]
            .into_iter()
            .flatten()
            .map(|key| key.0.as_str())
            .collect();
        let claims: Vec<(uuid::Uuid, bool)> = sqlx::query_as(
            "SELECT referral_id, claimed_at > now() - make_interval(secs => $3)
               FROM candidate_claims
              WHERE agency_id = $1 AND contact_key = ANY($2)",
        )
        .bind(agency_id.0)
        .bind(&keys)
        .bind(IN_FLIGHT_GRACE.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map_err(|error| AppError::Unavailable(error.to_string()))?;

        for (owner, claim_is_fresh) in claims {
            let owns = match self.referrals.load(agency_id, &owner.to_string()).await? {
                Some((referral, _)) => referral.owns_candidate_at(at),
                None => claim_is_fresh,
            };
            if owns {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Submits a referral: takes the terms in force now, checks the ambassador, claims the
    /// candidate (or records the referral as a duplicate of the owner) and records it.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown program or ambassador, [`AppError::Domain`]
    /// when a rule rejects the referral (self-referral, closed program, ...).
    pub async fn submit_referral(
        &self,
        metadata: &CommandMetadata,
        referral: NewReferral,
    ) -> Result<Executed<Referral>, AppError> {
        let agency_id = metadata.agency_id;
        let program = self
            .program_snapshot(agency_id, referral.program_id)
            .await?;
        let ambassador = self
            .ambassador_snapshot(agency_id, referral.ambassador_id)
            .await?;

        let referral_id = ReferralId::new();
        let candidate_keys = self
            .personal
            .contact_keys(
                agency_id,
                referral.candidate.email.as_ref(),
                referral.candidate.phone.as_ref(),
            )
            .await?;
        let (sealed, note) = self
            .personal
            .seal_contact_with_note(
                agency_id,
                referral_id.0,
                &referral.candidate,
                referral.note.as_ref(),
            )
            .await?;
        crate::privacy::index_subject(
            &self.pool,
            agency_id,
            SubjectKind::Candidate,
            referral_id.0,
            &candidate_keys,
        )
        .await?;
        let prior_contact = self
            .known_before(
                agency_id,
                &candidate_keys,
                metadata.recorded_at,
                program.terms.prior_contact_lookback_days,
            )
            .await?;

        let command = ReferralCommand::SubmitReferral(SubmitReferral {
            referral_id,
            agency_id,
            program,
            ambassador,
            candidate: SealedContact {
                name: sealed.name,
                email: sealed.email,
                phone: sealed.phone,
            },
            candidate_keys,
            prior_contact,
            job_reference: referral.job_reference,
            note,
            at: metadata.recorded_at,
        });
        Ok(self
            .referrals
            .create(&referral_id.to_string(), command, metadata)
            .await?)
    }

    /// Executes a command on an existing referral, then requests the payouts of any
    /// milestone it reached.
    ///
    /// # Errors
    /// As [`AggregateStore::execute`], plus failures of the payout requests.
    pub async fn execute_referral(
        &self,
        metadata: &CommandMetadata,
        referral_id: ReferralId,
        command: ReferralCommand,
        expected_version: Option<usize>,
    ) -> Result<Executed<Referral>, AppError> {
        let executed = self
            .referrals
            .execute(
                &referral_id.to_string(),
                command,
                metadata,
                expected_version,
            )
            .await?;
        self.request_payouts_of(
            metadata,
            referral_id,
            &executed.aggregate,
            &executed.events,
            Requesting::First,
        )
        .await?;
        self.void_payouts_after_early_end(
            metadata,
            referral_id,
            &executed.aggregate,
            &executed.events,
        )
        .await?;
        Ok(executed)
    }

    /// The process manager for milestones: requests one payout for every payable
    /// milestone among `events`. Payout ids are derived from the referral, the milestone
    /// and the recipient, so running it again for the same events creates nothing new.
    ///
    /// # Errors
    /// Returns the first payout request that failed after its retries.
    pub async fn request_payouts(
        &self,
        cause: &CommandMetadata,
        referral_id: ReferralId,
        referral: &Referral,
        events: &[EventEnvelope<Referral>],
    ) -> Result<Vec<PayoutId>, AppError> {
        self.request_payouts_of(cause, referral_id, referral, events, Requesting::Again)
            .await
    }

    async fn request_payouts_of(
        &self,
        cause: &CommandMetadata,
        referral_id: ReferralId,
        referral: &Referral,
        events: &[EventEnvelope<Referral>],
        requesting: Requesting,
    ) -> Result<Vec<PayoutId>, AppError> {
        let mut requested = Vec::new();
        for envelope in events {
            let ReferralEvent::MilestoneReached {
                milestone,
                key,
                payable: true,
                ..
            } = &envelope.payload
            else {
                continue;
            };
            let (Some(terms), Some(program_id), Some(ambassador_id), Some(currency)) = (
                referral.terms(),
                referral.program_id(),
                referral.ambassador_id(),
                referral.currency(),
            ) else {
                return Err(AppError::Internal(format!(
                    "referral {referral_id} reached a milestone before it was submitted"
                )));
            };
            let payout_id = PayoutId::for_milestone(referral_id, key, milestone.recipient);
            let event_id =
                uuid::Uuid::new_v5(&referral_id.0, format!("{}", envelope.sequence).as_bytes());
            let metadata = cause.caused_by(
                Actor::System {
                    job: PAYOUT_REQUESTER_JOB.to_owned(),
                },
                event_id,
            );
            let command = PayoutCommand::RequestPayout(RequestPayout {
                payout_id,
                agency_id: cause.agency_id,
                referral_id,
                program_id,
                ambassador_id,
                recipient: milestone.recipient,
                milestone: key.clone(),
                amount: Money::new(milestone.amount, currency).map_err(DomainError::from)?,
                requested_by: Requester::System {
                    job: PAYOUT_REQUESTER_JOB.to_owned(),
                },
                annual_bonus_cap: match milestone.recipient {
                    Recipient::Ambassador => terms.annual_bonus_cap,
                    Recipient::Candidate => None,
                },
                referrer_must_be_active: terms.referrer_must_be_active,
                at: metadata.recorded_at,
            });
            let payout_id_text = payout_id.to_string();
            match requesting {
                Requesting::First => {
                    self.create_with_retries(&self.payouts, &payout_id_text, command, &metadata)
                        .await?
                }
                Requesting::Again => {
                    self.execute_with_retries(&self.payouts, &payout_id_text, command, &metadata)
                        .await?
                }
            };
            requested.push(payout_id);
        }
        Ok(requested)
    }

    /// Applies the guarantee rule: when `events` contain a placement end within the
    /// guarantee period, voids every payout of the referral's payable milestones that is not paid
    /// yet (pending approval, approved or exported). Paid payouts stay paid, because a
    /// clawback is a person's decision (`ReversePayout`).
    ///
    /// Running it again voids nothing new: already voided, rejected and paid payouts
    /// are skipped. A payout that is not requested yet is skipped too; the payout
    /// requester reactor applies this rule after requesting it.
    ///
    /// # Errors
    /// Returns the first load or void that failed after its retries.
    pub async fn void_payouts_after_early_end(
        &self,
        cause: &CommandMetadata,
        referral_id: ReferralId,
        referral: &Referral,
        events: &[EventEnvelope<Referral>],
    ) -> Result<Vec<PayoutId>, AppError> {
        let mut voided = Vec::new();
        for envelope in events {
            let ReferralEvent::PlacementEnded {
                within_guarantee: true,
                ..
            } = &envelope.payload
            else {
                continue;
            };
            let event_id =
                uuid::Uuid::new_v5(&referral_id.0, format!("{}", envelope.sequence).as_bytes());
            let metadata = cause.caused_by(
                Actor::System {
                    job: GUARANTEE_JOB.to_owned(),
                },
                event_id,
            );
            for reached in referral.milestones_reached().iter().filter(|m| m.payable) {
                let payout_id =
                    PayoutId::for_milestone(referral_id, &reached.key, reached.milestone.recipient);
                let Some((payout, _)) = self
                    .payouts
                    .load(cause.agency_id, &payout_id.to_string())
                    .await?
                else {
                    continue;
                };
                let unpaid = matches!(
                    payout.status(),
                    Some(
                        PayoutStatus::PendingApproval
                            | PayoutStatus::Approved
                            | PayoutStatus::Exported
                    )
                );
                if !unpaid {
                    continue;
                }
                let command = PayoutCommand::VoidPayout(VoidPayout {
                    by: Requester::System {
                        job: GUARANTEE_JOB.to_owned(),
                    },
                    reason_code: VoidReason::PlacementEnded,
                    note: None,
                    at: metadata.recorded_at,
                });
                match self
                    .execute_with_retries(&self.payouts, &payout_id.to_string(), command, &metadata)
                    .await
                {
                    Ok(_) => {}
                    // A concurrent run or an approver settled the payout after it was
                    // loaded. Whatever its status is now, this rule has nothing to void.
                    Err(AppError::Domain(DomainError::InvalidTransition { .. })) => continue,
                    Err(error) => return Err(error),
                }
                tracing::info!(%referral_id, %payout_id, "payout voided: placement ended within the guarantee period");
                voided.push(payout_id);
            }
        }
        Ok(voided)
    }

    /// Executes a job's command that usually creates its aggregate under a derived id,
    /// without reading the aggregate's events first. When the id has events already (the
    /// job ran before), the creation conflicts and the command runs on the loaded
    /// aggregate as [`Application::execute_with_retries`] does.
    async fn create_with_retries<A>(
        &self,
        store: &AggregateStore<A>,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Executed<A>, AppError>
    where
        A: cqrs_es::Aggregate<Error = DomainError> + Tenanted,
        A::Command: Clone,
    {
        match store.create(aggregate_id, command.clone(), metadata).await {
            Err(CommandError::Conflict { .. }) => {
                self.execute_with_retries(store, aggregate_id, command, metadata)
                    .await
            }
            outcome => Ok(outcome?),
        }
    }

    /// Executes a job's command, retrying when a concurrent writer won the version race:
    /// the retry sees the winner's events and, for idempotent commands, does nothing.
    async fn execute_with_retries<A>(
        &self,
        store: &AggregateStore<A>,
        aggregate_id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Executed<A>, AppError>
    where
        A: cqrs_es::Aggregate<Error = DomainError> + Tenanted,
        A::Command: Clone,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match store
                .execute(aggregate_id, command.clone(), metadata, None)
                .await
            {
                Err(CommandError::Conflict { .. }) if attempt < JOB_RETRIES => continue,
                outcome => return Ok(outcome?),
            }
        }
    }

    async fn program_snapshot(
        &self,
        agency_id: AgencyId,
        program_id: ProgramId,
    ) -> Result<ProgramSnapshot, AppError> {
        let (program, _) = self
            .programs
            .load(agency_id, &program_id.to_string())
            .await?
            .ok_or(AppError::NotFound("program"))?;
        program.snapshot().ok_or(AppError::NotFound("program"))
    }

    async fn ambassador_snapshot(
        &self,
        agency_id: AgencyId,
        ambassador_id: AmbassadorId,
    ) -> Result<AmbassadorSnapshot, AppError> {
        let (ambassador, _) = self
            .ambassadors
            .load(agency_id, &ambassador_id.to_string())
            .await?
            .ok_or(AppError::NotFound("ambassador"))?;
        let contact_keys = self
            .personal
            .sealed_contact_keys(
                agency_id,
                ambassador_id.0,
                ambassador.email(),
                ambassador.phone(),
            )
            .await?;
        ambassador
            .snapshot(contact_keys)
            .ok_or(AppError::NotFound("ambassador"))
    }

    /// Returns true when the agency knew the candidate within the look-back period.
    async fn known_before(
        &self,
        agency_id: AgencyId,
        keys: &ContactKeys,
        at: DateTime<Utc>,
        lookback_days: u32,
    ) -> Result<bool, AppError> {
        let keys: Vec<&str> = [&keys.email, &keys.phone]
            .into_iter()
            .flatten()
            .map(|key| key.0.as_str())
            .collect();
        let since = (at - Duration::days(i64::from(lookback_days))).date_naive();
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM known_candidates
                             WHERE agency_id = $1 AND contact_key = ANY($2) AND last_contact_on >= $3)",
        )
        .bind(agency_id.0)
        .bind(&keys)
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(|error| AppError::Unavailable(error.to_string()))
    }
}
