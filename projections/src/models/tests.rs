//! Tests of the projections with hand-built events, for cases the application cannot
//! produce on purpose: unknown and malformed events, events out of order, holds, voids
//! and candidate bonuses.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use cqrs_es::DomainEvent;
use referrals_domain::ambassador::AmbassadorEvent;
use referrals_domain::ids::{AgencyId, AmbassadorId, PayoutId, ProgramId, ReferralId, UserId};
use referrals_domain::payout::{PayoutEvent, Requester, VoidReason};
use referrals_domain::program::ProgramEvent;
use referrals_domain::referral::{
    Eligibility, IneligibleReason, ReferralEvent, ReferralStatus, SealedContact,
};
use referrals_domain::terms::{AmbassadorKind, Milestone, MilestoneKey, Recipient, Terms, Trigger};
use referrals_domain::values::{Currency, FreeText, Hours, Money, Sealed};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::*;

mod batch;

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, day, 9, 0, 0).unwrap()
}

/// Wraps a domain event as the runner reads it from the events table.
fn stored<E: Serialize + DomainEvent>(
    aggregate_type: &str,
    aggregate_id: Uuid,
    sequence: i64,
    agency_id: AgencyId,
    event: E,
) -> StoredEvent {
    StoredEvent {
        transaction_id: 1000 + sequence as u64,
        position: sequence,
        agency_id: agency_id.0,
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id: aggregate_id.to_string(),
        sequence,
        event_type: event.event_type(),
        event_version: event.event_version(),
        payload: serde_json::to_value(&event).unwrap(),
        metadata: json!({ "agency_id": agency_id.to_string() }),
        recorded_at: at(28),
    }
}

/// Applies `events` in one transaction, as one runner batch does.
async fn apply_all(
    pool: &PgPool,
    projection: &dyn Projection,
    events: &[StoredEvent],
) -> Result<(), ProjectionError> {
    let mut transaction = pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL search_path TO {}, public",
        projection.schema()
    ))
    .execute(&mut *transaction)
    .await?;
    for event in events {
        projection.apply(&mut transaction, event).await?;
    }
    transaction.commit().await?;
    Ok(())
}

fn enrolled(agency_id: AgencyId, ambassador_id: AmbassadorId, name: &str) -> AmbassadorEvent {
    AmbassadorEvent::AmbassadorEnrolled {
        ambassador_id,
        agency_id,
        kind: AmbassadorKind::External,
        name: Sealed(name.to_owned()),
        email: Some(Sealed("v1.email".to_owned())),
        phone: None,
        external_id: Some("P-17".to_owned()),
        sms_consent: false,
        at: at(1),
    }
}

fn payout_requested(
    agency_id: AgencyId,
    ambassador_id: AmbassadorId,
    recipient: Recipient,
    amount: i64,
) -> (PayoutId, PayoutEvent) {
    let referral_id = ReferralId::new();
    let milestone = MilestoneKey::parse(&format!("hired:0.00:{}", recipient.as_str())).unwrap();
    let payout_id = PayoutId::for_milestone(referral_id, &milestone, recipient);
    let event = PayoutEvent::PayoutRequested {
        payout_id,
        agency_id,
        referral_id,
        program_id: ProgramId::new(),
        ambassador_id,
        recipient,
        milestone,
        amount: Money::new(amount, Currency::USD).unwrap(),
        requested_by: Requester::User {
            user_id: UserId::new(),
        },
        annual_bonus_cap: None,
        referrer_must_be_active: false,
        at: at(10),
    };
    (payout_id, event)
}

/// Returns the error of decoding an event of type `name` with an empty body.
fn empty_body_error<E: DeserializeOwned + std::fmt::Debug>(name: &str) -> String {
    serde_json::from_value::<E>(json!({ name: {} }))
        .unwrap_err()
        .to_string()
}

#[test]
fn event_lists_name_real_variants() {
    // An empty body fails on a missing field for a real variant, and on the variant
    // name itself for a misspelled one.
    for name in PROGRAM_EVENTS {
        let error = empty_body_error::<ProgramEvent>(name);
        assert!(error.contains("missing field"), "{name}: {error}");
    }
    for name in AMBASSADOR_EVENTS {
        let error = empty_body_error::<AmbassadorEvent>(name);
        assert!(error.contains("missing field"), "{name}: {error}");
    }
    for name in REFERRAL_EVENTS {
        let error = empty_body_error::<ReferralEvent>(name);
        assert!(error.contains("missing field"), "{name}: {error}");
    }
    for name in PAYOUT_EVENTS {
        let error = empty_body_error::<PayoutEvent>(name);
        assert!(error.contains("missing field"), "{name}: {error}");
    }
}

#[test]
fn decode_skips_unknown_event_type() {
    let agency_id = AgencyId::new();
    let mut event = stored(
        "referral",
        Uuid::now_v7(),
        2,
        agency_id,
        ReferralEvent::ReferralExpired { at: at(2) },
    );
    event.event_type = "ReferralArchived".to_owned();
    event.payload = json!({ "ReferralArchived": { "at": at(2) } });

    assert!(decode(&event).unwrap().is_none());
}

#[test]
fn decode_skips_unknown_aggregate() {
    let agency_id = AgencyId::new();
    let mut event = stored(
        "referral",
        Uuid::now_v7(),
        1,
        agency_id,
        ReferralEvent::ReferralExpired { at: at(2) },
    );
    event.aggregate_type = "user".to_owned();

    assert!(decode(&event).unwrap().is_none());
}

#[test]
fn decode_malformed_payload_is_poison() {
    let agency_id = AgencyId::new();
    let mut event = stored(
        "referral",
        Uuid::now_v7(),
        2,
        agency_id,
        ReferralEvent::ReferralExpired { at: at(2) },
    );
    event.payload = json!({ "ReferralExpired": { "at": "yesterday" } });

    let error = decode(&event).unwrap_err();

    assert!(matches!(error, ProjectionError::Poison(_)), "{error:?}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn programs_follow_revision_and_closing(pool: PgPool) {
    let agency_id = AgencyId::new();
    let program_id = ProgramId::new();
    let terms = Terms::with_schedule(vec![Milestone {
        trigger: Trigger::HoursWorked,
        threshold: Hours::whole(160),
        amount: 75_000,
        recipient: Recipient::Ambassador,
    }]);
    let mut revised = terms.clone();
    revised.attribution_window_days = 90;
    let events = [
        stored(
            "program",
            program_id.0,
            1,
            agency_id,
            ProgramEvent::ProgramCreated {
                program_id,
                agency_id,
                name: "Night shift".to_owned(),
                currency: Currency::parse("EUR").unwrap(),
                terms,
                terms_version: 1,
                at: at(1),
            },
        ),
        stored(
            "program",
            program_id.0,
            2,
            agency_id,
            ProgramEvent::ProgramTermsRevised {
                terms_version: 2,
                terms: revised,
                at: at(2),
            },
        ),
        stored(
            "program",
            program_id.0,
            3,
            agency_id,
            ProgramEvent::ProgramClosed { at: at(3) },
        ),
    ];

    apply_all(&pool, &ProgramsProjection, &events)
        .await
        .unwrap();

    let (currency, terms_version, window, open, version, created_at): (
        String,
        i32,
        i64,
        bool,
        i64,
        DateTime<Utc>,
    ) = sqlx::query_as(
        "SELECT currency, terms_version, (terms ->> 'attribution_window_days')::bigint, open,
                version, created_at
           FROM read_models.programs WHERE program_id = $1",
    )
    .bind(program_id.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(currency, "EUR");
    assert_eq!(terms_version, 2);
    assert_eq!(window, 90);
    assert!(!open);
    assert_eq!(version, 3);
    assert_eq!(created_at, at(1));
}

#[derive(Debug, sqlx::FromRow)]
struct AmbassadorRow {
    name_sealed: String,
    email_sealed: Option<String>,
    phone_sealed: Option<String>,
    kind: String,
    external_id: Option<String>,
    sms_consent: bool,
    version: i64,
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn ambassador_update_keeps_absent_fields(pool: PgPool) {
    let agency_id = AgencyId::new();
    let ambassador_id = AmbassadorId::new();
    let events = [
        stored(
            "ambassador",
            ambassador_id.0,
            1,
            agency_id,
            enrolled(agency_id, ambassador_id, "v1.name"),
        ),
        stored(
            "ambassador",
            ambassador_id.0,
            2,
            agency_id,
            AmbassadorEvent::AmbassadorUpdated {
                name: None,
                email: None,
                phone: Some(Sealed("v1.phone".to_owned())),
                kind: Some(AmbassadorKind::FormerWorker),
                sms_consent: Some(true),
                external_id: None,
                at: at(2),
            },
        ),
    ];

    apply_all(&pool, &AmbassadorsProjection, &events)
        .await
        .unwrap();

    let row: AmbassadorRow = sqlx::query_as(
        "SELECT name_sealed, email_sealed, phone_sealed, kind, external_id, sms_consent, version
           FROM read_models.ambassadors WHERE ambassador_id = $1",
    )
    .bind(ambassador_id.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.name_sealed, "v1.name");
    assert_eq!(row.email_sealed.as_deref(), Some("v1.email"));
    assert_eq!(row.phone_sealed.as_deref(), Some("v1.phone"));
    assert_eq!(row.kind, "former_worker");
    assert_eq!(row.external_id.as_deref(), Some("P-17"));
    assert!(row.sms_consent);
    assert_eq!(row.version, 2);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn ambassador_plaintext_name_is_poison(pool: PgPool) {
    let agency_id = AgencyId::new();
    let ambassador_id = AmbassadorId::new();
    let event = stored(
        "ambassador",
        ambassador_id.0,
        1,
        agency_id,
        enrolled(agency_id, ambassador_id, "Ada Lovelace"),
    );

    let error = apply_all(&pool, &AmbassadorsProjection, &[event])
        .await
        .unwrap_err();

    assert!(matches!(error, ProjectionError::Poison(_)), "{error:?}");
    assert!(!error.to_string().contains("Ada"), "{error}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn board_event_before_submission_is_poison(pool: PgPool) {
    let agency_id = AgencyId::new();
    let event = stored(
        "referral",
        Uuid::now_v7(),
        2,
        agency_id,
        ReferralEvent::ReferralContacted { at: at(2) },
    );

    let error = apply_all(&pool, &ReferralBoardProjection, &[event])
        .await
        .unwrap_err();

    assert!(matches!(error, ProjectionError::Poison(_)), "{error:?}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn unknown_events_are_ignored(pool: PgPool) {
    let agency_id = AgencyId::new();
    let mut unknown_type = stored(
        "payout",
        Uuid::now_v7(),
        1,
        agency_id,
        PayoutEvent::PayoutReleased {
            by: UserId::new(),
            at: at(2),
        },
    );
    unknown_type.event_type = "PayoutDisputed".to_owned();
    unknown_type.payload = json!({ "PayoutDisputed": {} });
    let mut unknown_aggregate = unknown_type.clone();
    unknown_aggregate.aggregate_type = "user".to_owned();
    unknown_aggregate.event_type = "UserInvited".to_owned();

    for projection in all() {
        let outcome = apply_all(
            &pool,
            projection.as_ref(),
            &[unknown_type.clone(), unknown_aggregate.clone()],
        )
        .await;
        assert!(outcome.is_ok(), "{}: {outcome:?}", projection.name());
    }
}

#[derive(Debug, sqlx::FromRow)]
struct LedgerRow {
    status: String,
    held: bool,
    hold_reason: Option<String>,
    closed_at: Option<DateTime<Utc>>,
    closed_reason: Option<String>,
    version: i64,
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn ledger_records_hold_release_and_void(pool: PgPool) {
    let agency_id = AgencyId::new();
    let (payout_id, requested) = payout_requested(
        agency_id,
        AmbassadorId::new(),
        Recipient::Ambassador,
        25_000,
    );
    let hold_reason = "Timesheet under review";
    let events = [
        stored("payout", payout_id.0, 1, agency_id, requested),
        stored(
            "payout",
            payout_id.0,
            2,
            agency_id,
            PayoutEvent::PayoutHeld {
                by: UserId::new(),
                reason: FreeText::parse(hold_reason).unwrap(),
                at: at(11),
            },
        ),
        stored(
            "payout",
            payout_id.0,
            3,
            agency_id,
            PayoutEvent::PayoutReleased {
                by: UserId::new(),
                at: at(12),
            },
        ),
        stored(
            "payout",
            payout_id.0,
            4,
            agency_id,
            PayoutEvent::PayoutHeld {
                by: UserId::new(),
                reason: FreeText::parse(hold_reason).unwrap(),
                at: at(13),
            },
        ),
    ];
    apply_all(&pool, &PayoutLedgerProjection, &events)
        .await
        .unwrap();
    let held: (bool, Option<String>, String) = sqlx::query_as(
        "SELECT held, hold_reason, requester_kind FROM read_models.payout_ledger
          WHERE payout_id = $1",
    )
    .bind(payout_id.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(held.0);
    assert_eq!(held.1.as_deref(), Some(hold_reason));
    assert_eq!(held.2, "user");

    let voided = stored(
        "payout",
        payout_id.0,
        5,
        agency_id,
        PayoutEvent::PayoutVoided {
            by: Requester::System {
                job: "guarantee_check".to_owned(),
            },
            reason_code: VoidReason::PlacementEnded,
            note: None,
            at: at(14),
        },
    );
    apply_all(&pool, &PayoutLedgerProjection, &[voided])
        .await
        .unwrap();

    let row: LedgerRow = sqlx::query_as(
        "SELECT status, held, hold_reason, closed_at, closed_reason, version
           FROM read_models.payout_ledger WHERE payout_id = $1",
    )
    .bind(payout_id.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.status, "voided");
    assert!(!row.held);
    assert_eq!(row.hold_reason, None);
    assert_eq!(row.closed_at, Some(at(14)));
    assert_eq!(row.closed_reason.as_deref(), Some("placement_ended"));
    assert_eq!(row.version, 5);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn summaries_leave_out_candidate_bonuses(pool: PgPool) {
    let agency_id = AgencyId::new();
    let ambassador_id = AmbassadorId::new();
    let (own_id, own) = payout_requested(agency_id, ambassador_id, Recipient::Ambassador, 50_000);
    let (candidate_id, candidate) =
        payout_requested(agency_id, ambassador_id, Recipient::Candidate, 20_000);
    let approved = |payout_id: PayoutId| {
        stored(
            "payout",
            payout_id.0,
            2,
            agency_id,
            PayoutEvent::PayoutApproved {
                approver: UserId::new(),
                at: at(15),
            },
        )
    };
    let events = [
        stored(
            "ambassador",
            ambassador_id.0,
            1,
            agency_id,
            enrolled(agency_id, ambassador_id, "v1.name"),
        ),
        stored("payout", own_id.0, 1, agency_id, own),
        stored("payout", candidate_id.0, 1, agency_id, candidate),
        approved(own_id),
        approved(candidate_id),
    ];

    apply_all(&pool, &AmbassadorSummariesProjection, &events)
        .await
        .unwrap();

    let (pending, approved_count): (i32, i32) = sqlx::query_as(
        "SELECT payouts_pending, payouts_approved FROM read_models.ambassador_summaries
          WHERE ambassador_id = $1",
    )
    .bind(ambassador_id.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(pending, 0);
    assert_eq!(approved_count, 1);
    let earnings: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT currency, pending_amount, earned_amount, paid_amount
           FROM read_models.ambassador_earnings WHERE ambassador_id = $1",
    )
    .bind(ambassador_id.0)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(earnings, vec![("USD".to_owned(), 0, 50_000, 0)]);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn payout_event_without_request_is_poison(pool: PgPool) {
    let agency_id = AgencyId::new();
    let event = stored(
        "payout",
        Uuid::now_v7(),
        2,
        agency_id,
        PayoutEvent::PayoutPaid {
            paid_on: NaiveDate::from_ymd_opt(2026, 10, 30).unwrap(),
            reference: "PR-1".to_owned(),
            at: at(30),
        },
    );

    for projection in [
        &AmbassadorSummariesProjection as &dyn Projection,
        &PayoutLedgerProjection,
        &AnalyticsProjection,
    ] {
        let error = apply_all(&pool, projection, std::slice::from_ref(&event))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProjectionError::Poison(_)),
            "{}: {error:?}",
            projection.name()
        );
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn analytics_keeps_void_code_not_reason(pool: PgPool) {
    let agency_id = AgencyId::new();
    let (payout_id, requested) = payout_requested(
        agency_id,
        AmbassadorId::new(),
        Recipient::Ambassador,
        25_000,
    );
    let events = [
        stored("payout", payout_id.0, 1, agency_id, requested),
        stored(
            "payout",
            payout_id.0,
            2,
            agency_id,
            PayoutEvent::PayoutVoided {
                by: Requester::User {
                    user_id: UserId::new(),
                },
                reason_code: VoidReason::Other,
                note: Some(FreeText::parse("Candidate asked to stop").unwrap()),
                at: at(16),
            },
        ),
    ];

    apply_all(&pool, &AnalyticsProjection, &events)
        .await
        .unwrap();

    let (status, void_reason, closed_at): (String, Option<String>, Option<DateTime<Utc>>) =
        sqlx::query_as(
            "SELECT status, void_reason, closed_at FROM analytics.payout_facts
              WHERE payout_id = $1",
        )
        .bind(payout_id.0)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "voided");
    assert_eq!(void_reason.as_deref(), Some("other"));
    assert_eq!(closed_at, Some(at(16)));
}

/// Returns every row of the aggregate state tables as text, in key order.
async fn aggregate_state_rows(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('%s %s %s %s %s %s', aggregate_type, aggregate_id, agency_id, version,
                       updated_at, state)
           FROM read_models.aggregate_states
         UNION ALL
         SELECT format('snapshot %s %s %s %s %s %s', aggregate_type, aggregate_id, agency_id,
                       version, recorded_at, state)
           FROM read_models.aggregate_snapshots
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Two ambassadors with 60 events each, interleaved, so each passes a snapshot version.
fn interleaved_ambassador_events(agency_id: AgencyId) -> Vec<StoredEvent> {
    let ambassadors = [AmbassadorId::new(), AmbassadorId::new()];
    let mut events = Vec::new();
    for sequence in 1..=60 {
        for (index, ambassador_id) in ambassadors.iter().enumerate() {
            let event = if sequence == 1 {
                enrolled(agency_id, *ambassador_id, "v1.name")
            } else {
                AmbassadorEvent::AmbassadorUpdated {
                    name: None,
                    email: None,
                    phone: None,
                    kind: None,
                    sms_consent: Some(sequence % 2 == index as i64),
                    external_id: Some(format!("P-{sequence}")),
                    at: at(2),
                }
            };
            events.push(stored(
                "ambassador",
                ambassador_id.0,
                sequence,
                agency_id,
                event,
            ));
        }
    }
    events
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn aggregate_state_batches_match_single_events(pool: PgPool) {
    let events = interleaved_ambassador_events(AgencyId::new());
    apply_all(&pool, &AggregateStatesProjection, &events)
        .await
        .unwrap();
    let one_by_one = aggregate_state_rows(&pool).await;
    sqlx::query("DELETE FROM read_models.aggregate_states")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM read_models.aggregate_snapshots")
        .execute(&pool)
        .await
        .unwrap();

    // Batches of 7 split each aggregate's events, so later batches start from stored state.
    for batch in events.chunks(7) {
        let mut transaction = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL search_path TO read_models, public")
            .execute(&mut *transaction)
            .await
            .unwrap();
        AggregateStatesProjection
            .apply_batch(&mut transaction, batch)
            .await
            .unwrap();
        transaction.commit().await.unwrap();
    }
    let batched = aggregate_state_rows(&pool).await;

    assert_eq!(one_by_one.len(), 4, "two states and two snapshots");
    assert_eq!(batched, one_by_one);
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn aggregate_state_batch_with_gap_is_poison(pool: PgPool) {
    let mut events = interleaved_ambassador_events(AgencyId::new());
    events.remove(4);

    let mut transaction = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL search_path TO read_models, public")
        .execute(&mut *transaction)
        .await
        .unwrap();
    let result = AggregateStatesProjection
        .apply_batch(&mut transaction, &events[..10])
        .await;

    assert!(
        matches!(result, Err(ProjectionError::Poison(_))),
        "{result:?}"
    );
}

/// Builds a store's worth of events from the event histories of several aggregates.
///
/// Each aggregate's events keep their order and get sequences from 1. The histories are
/// interleaved in a fixed pseudo-random order, as concurrent commands interleave them in
/// the events table, and each event gets the next position and a later `recorded_at`.
struct History {
    agency_id: AgencyId,
    streams: Vec<Vec<StoredEvent>>,
}

impl History {
    fn new() -> Self {
        Self {
            agency_id: AgencyId::new(),
            streams: Vec::new(),
        }
    }

    fn add<E: Serialize + DomainEvent>(&mut self, aggregate_type: &str, id: Uuid, events: Vec<E>) {
        let stream = events
            .into_iter()
            .zip(1..)
            .map(|(event, sequence)| stored(aggregate_type, id, sequence, self.agency_id, event))
            .collect();
        self.streams.push(stream);
    }

    fn interleave(self) -> Vec<StoredEvent> {
        let mut streams: Vec<std::collections::VecDeque<StoredEvent>> =
            self.streams.into_iter().map(Into::into).collect();
        let mut events = Vec::new();
        // A linear congruential generator, so the order is the same on every run.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        while !streams.is_empty() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let index = (state >> 33) as usize % streams.len();
            let mut event = streams[index]
                .pop_front()
                .expect("empty streams are removed");
            if streams[index].is_empty() {
                streams.swap_remove(index);
            }
            let position = events.len() as i64 + 1;
            event.position = position;
            event.transaction_id = 5000 + position as u64;
            event.recorded_at = at(28) + chrono::Duration::microseconds(1_000 * position + 7);
            events.push(event);
        }
        events
    }
}

/// Returns a domain time with nanoseconds, which the database stores to the microsecond.
fn precise_at(day: u32, nanoseconds: i64) -> DateTime<Utc> {
    at(day) + chrono::Duration::nanoseconds(nanoseconds)
}

fn submitted(
    agency_id: AgencyId,
    referral_id: ReferralId,
    ambassador_id: AmbassadorId,
    index: u32,
) -> ReferralEvent {
    let (status, eligibility) = match index % 4 {
        0 => (
            ReferralStatus::Duplicate,
            Eligibility::ineligible(IneligibleReason::Duplicate),
        ),
        1 => (
            ReferralStatus::Submitted,
            Eligibility::ineligible(IneligibleReason::PriorContact),
        ),
        _ => (ReferralStatus::Submitted, Eligibility::ELIGIBLE),
    };
    ReferralEvent::ReferralSubmitted {
        referral_id,
        agency_id,
        program_id: ProgramId::new(),
        terms_version: 1,
        terms: Terms::with_schedule(Vec::new()),
        currency: if index % 3 == 0 {
            Currency::parse("EUR").unwrap()
        } else {
            Currency::USD
        },
        ambassador_id,
        ambassador_kind: AmbassadorKind::FieldWorker,
        candidate: SealedContact {
            name: Sealed("v1.candidate".to_owned()),
            email: None,
            phone: None,
        },
        prior_contact: index % 4 == 1,
        job_reference: Some("JOB-9".to_owned()),
        note: None,
        status,
        duplicate_of: (index % 4 == 0).then(ReferralId::new),
        eligibility,
        at: precise_at(2, i64::from(index) * 1_001),
    }
}

fn milestone_reached(trigger: Trigger, threshold: u32, day: u32) -> ReferralEvent {
    let milestone = Milestone {
        trigger,
        threshold: Hours::whole(threshold),
        amount: 50_000,
        recipient: Recipient::Ambassador,
    };
    ReferralEvent::MilestoneReached {
        key: milestone.key(),
        milestone,
        payable: true,
        reached_on: NaiveDate::from_ymd_opt(2026, 10, day).unwrap(),
        at: precise_at(day, 999),
    }
}

/// Returns the events of one referral, chosen by `index` among the paths a referral takes.
fn referral_path(
    agency_id: AgencyId,
    referral_id: ReferralId,
    ambassador_id: AmbassadorId,
    index: u32,
) -> Vec<ReferralEvent> {
    let submission = submitted(agency_id, referral_id, ambassador_id, index);
    let contacted = ReferralEvent::ReferralContacted {
        at: precise_at(3, 500),
    };
    let hired = ReferralEvent::ReferralHired {
        start_date: NaiveDate::from_ymd_opt(2026, 10, 6).unwrap(),
        job_title: "Forklift driver".to_owned(),
        client_name: "Client".to_owned(),
        external_worker_id: None,
        at: at(5),
    };
    let reason = || FreeText::parse("Candidate chose another offer").unwrap();
    match index % 6 {
        0 => vec![submission],
        1 => vec![
            submission,
            ReferralEvent::RecruiterAssigned {
                recruiter_id: UserId::new(),
                at: at(3),
            },
            contacted,
            ReferralEvent::ReferralInterviewing { at: at(4) },
            hired,
            milestone_reached(Trigger::Hired, 0, 6),
            ReferralEvent::HoursRecorded {
                week_ending: NaiveDate::from_ymd_opt(2026, 10, 11).unwrap(),
                hours: Hours::whole(40),
                total_hours: Hours::whole(40),
                at: at(11),
            },
            milestone_reached(Trigger::HoursWorked, 160, 12),
            // A later milestone leaves the time of the first one.
            milestone_reached(Trigger::DaysEmployed, 90, 20),
            ReferralEvent::ReferralCompleted { at: at(21) },
        ],
        2 => vec![
            submission,
            contacted,
            ReferralEvent::ReferralDeclined {
                reason: reason(),
                at: at(4),
            },
        ],
        3 => vec![
            submission,
            ReferralEvent::ReferralWithdrawn {
                reason: reason(),
                at: at(4),
            },
        ],
        4 => vec![submission, ReferralEvent::ReferralExpired { at: at(25) }],
        _ => vec![
            submission.clone(),
            contacted,
            hired,
            ReferralEvent::EligibilityChanged {
                eligibility: Eligibility::ineligible(IneligibleReason::PlacementEnded),
                at: at(8),
            },
            ReferralEvent::PlacementEnded {
                end_date: NaiveDate::from_ymd_opt(2026, 10, 8).unwrap(),
                reason: reason(),
                within_guarantee: true,
                at: at(8),
            },
            // A submission delivered again keeps the stage times already reached.
            submission,
            ReferralEvent::EligibilityChanged {
                eligibility: Eligibility::ELIGIBLE,
                at: at(9),
            },
        ],
    }
}

/// Returns the events of one payout, chosen by `index` among the paths a payout takes.
fn payout_path(requested: PayoutEvent, index: u32) -> Vec<PayoutEvent> {
    let user = UserId::new();
    let reason = || FreeText::parse("Timesheet under review").unwrap();
    let held = PayoutEvent::PayoutHeld {
        by: user,
        reason: reason(),
        at: at(11),
    };
    let approved = PayoutEvent::PayoutApproved {
        approver: user,
        at: precise_at(12, 321),
    };
    let exported = PayoutEvent::PayoutExported {
        batch_id: Uuid::now_v7(),
        at: at(13),
    };
    let paid = PayoutEvent::PayoutPaid {
        paid_on: NaiveDate::from_ymd_opt(2026, 10, 14).unwrap(),
        reference: format!("PR-{index}"),
        at: at(14),
    };
    match index % 5 {
        0 => vec![
            requested,
            held,
            PayoutEvent::PayoutReleased {
                by: user,
                at: at(12),
            },
            approved,
            exported,
            paid,
            PayoutEvent::PayoutReversed {
                by: user,
                reason: reason(),
                at: at(20),
            },
        ],
        1 => vec![
            requested,
            held,
            PayoutEvent::PayoutVoided {
                by: Requester::System {
                    job: "guarantee_check".to_owned(),
                },
                reason_code: VoidReason::PlacementEnded,
                note: Some(reason()),
                at: at(15),
            },
        ],
        2 => vec![
            requested,
            PayoutEvent::PayoutRejected {
                by: user,
                reason: reason(),
                at: at(12),
            },
        ],
        // A request delivered again keeps the approval and the hold.
        3 => vec![requested.clone(), approved, held, requested, exported, paid],
        _ => vec![requested],
    }
}

/// Returns a store's events: ambassadors, referrals and payouts on every path,
/// interleaved.
fn realistic_history() -> Vec<StoredEvent> {
    let mut history = History::new();
    let agency_id = history.agency_id;
    for index in 0..6 {
        let ambassador_id = AmbassadorId::new();
        let mut events = vec![enrolled(agency_id, ambassador_id, "v1.name")];
        if index % 2 == 0 {
            events.push(AmbassadorEvent::AmbassadorUpdated {
                name: None,
                email: None,
                phone: None,
                kind: Some(AmbassadorKind::FormerWorker),
                sms_consent: None,
                external_id: None,
                at: at(2),
            });
        }
        events.push(AmbassadorEvent::AmbassadorUpdated {
            name: Some(Sealed("v1.other".to_owned())),
            email: None,
            phone: None,
            kind: None,
            sms_consent: Some(true),
            external_id: None,
            at: at(3),
        });
        if index % 3 == 0 {
            events.push(AmbassadorEvent::AmbassadorDeactivated {
                at: precise_at(4, 42),
            });
        }
        if index == 3 {
            // An enrollment delivered again replaces the whole row.
            events.push(enrolled(agency_id, ambassador_id, "v1.name"));
        }
        history.add("ambassador", ambassador_id.0, events);

        for referral in 0..6 {
            let referral_index = index * 6 + referral;
            let referral_id = ReferralId::new();
            let events = referral_path(agency_id, referral_id, ambassador_id, referral_index);
            history.add("referral", referral_id.0, events);
        }
        for payout in 0..5 {
            let payout_index = index * 5 + payout;
            // Above 2^53, so a value that passed through a float would change.
            let amount = 9_007_199_254_740_993 - i64::from(payout_index);
            let recipient = if payout % 2 == 0 {
                Recipient::Ambassador
            } else {
                Recipient::Candidate
            };
            let (payout_id, mut requested) =
                payout_requested(agency_id, ambassador_id, recipient, amount);
            if let PayoutEvent::PayoutRequested { requested_by, .. } = &mut requested {
                if payout % 3 == 0 {
                    *requested_by = Requester::System {
                        job: "milestone_payouts".to_owned(),
                    };
                }
            }
            history.add("payout", payout_id.0, payout_path(requested, payout_index));
        }
    }
    history.interleave()
}

/// Returns every row of `tables` as text, table by table, in row order.
async fn table_rows(pool: &PgPool, tables: &[&str]) -> Vec<String> {
    let mut rows = Vec::new();
    for table in tables {
        let table_rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT '{table} ' || row_data::text FROM {table} AS row_data ORDER BY 1"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(!table_rows.is_empty(), "{table} has no rows");
        rows.extend(table_rows);
    }
    rows
}

async fn delete_rows(pool: &PgPool, tables: &[&str]) {
    for table in tables {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(pool)
            .await
            .unwrap();
    }
}

/// Applies `events` in batches of `batch_size`, one transaction each, as the runner does.
async fn apply_in_batches(
    pool: &PgPool,
    projection: &dyn Projection,
    events: &[StoredEvent],
    batch_size: usize,
) {
    for batch in events.chunks(batch_size) {
        let mut transaction = pool.begin().await.unwrap();
        sqlx::query(&format!(
            "SET LOCAL search_path TO {}, public",
            projection.schema()
        ))
        .execute(&mut *transaction)
        .await
        .unwrap();
        projection
            .apply_batch(&mut transaction, batch)
            .await
            .unwrap_or_else(|error| panic!("batch of {batch_size}: {error}"));
        transaction.commit().await.unwrap();
    }
}

/// Checks that batches of 1, 7 and 500 events leave the rows that single events leave.
async fn assert_batches_match_single_events(pool: &PgPool, projection: &dyn Projection) {
    let events = realistic_history();
    let tables: Vec<String> = projection
        .tables()
        .iter()
        .map(|table| format!("{}.{table}", projection.schema()))
        .collect();
    let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
    apply_all(pool, projection, &events).await.unwrap();
    let one_by_one = table_rows(pool, &tables).await;

    for batch_size in [1, 7, 500] {
        delete_rows(pool, &tables).await;
        apply_in_batches(pool, projection, &events, batch_size).await;
        let batched = table_rows(pool, &tables).await;

        assert_eq!(
            batched.len(),
            one_by_one.len(),
            "row count with batches of {batch_size}"
        );
        for (batched_row, single_row) in batched.iter().zip(&one_by_one) {
            assert_eq!(batched_row, single_row, "batches of {batch_size}");
        }
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn analytics_batches_match_single_events(pool: PgPool) {
    assert_batches_match_single_events(&pool, &AnalyticsProjection).await;
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn ledger_batches_match_single_events(pool: PgPool) {
    assert_batches_match_single_events(&pool, &PayoutLedgerProjection).await;
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn batch_event_before_its_row_is_poison(pool: PgPool) {
    let agency_id = AgencyId::new();
    let referral_id = Uuid::now_v7();
    let (payout_id, requested) = payout_requested(
        agency_id,
        AmbassadorId::new(),
        Recipient::Ambassador,
        25_000,
    );
    let events = [
        stored("payout", payout_id.0, 1, agency_id, requested),
        stored(
            "referral",
            referral_id,
            2,
            agency_id,
            ReferralEvent::ReferralContacted { at: at(2) },
        ),
        stored(
            "payout",
            Uuid::now_v7(),
            2,
            agency_id,
            PayoutEvent::PayoutReleased {
                by: UserId::new(),
                at: at(3),
            },
        ),
    ];

    for projection in [
        &AnalyticsProjection as &dyn Projection,
        &PayoutLedgerProjection,
    ] {
        let mut transaction = pool.begin().await.unwrap();
        sqlx::query(&format!(
            "SET LOCAL search_path TO {}, public",
            projection.schema()
        ))
        .execute(&mut *transaction)
        .await
        .unwrap();
        let result = projection.apply_batch(&mut transaction, &events).await;

        assert!(
            matches!(result, Err(ProjectionError::Poison(_))),
            "{}: {result:?}",
            projection.name()
        );
    }
}
