//! Checks that a projection's `apply_batch` leaves the same rows as `apply` event by
//! event. The events are an agency's history in which the events of many aggregates
//! interleave. It contains the edge cases of the read models: repeated submissions,
//! enrollments and requests, several milestones per referral, fractional hours, every
//! status of a referral and every end of a payout, and payouts in several currencies and to
//! both recipients.

use std::collections::{HashMap, VecDeque};

use chrono::Duration;
use referrals_domain::referral::{Eligibility, IneligibleReason, ReferralStatus, SealedContact};

use super::*;

/// Referrals in [`agency_history`] besides the late one at its end.
const REFERRALS: usize = 24;

/// Batch sizes compared with event-by-event application: single events, batches that
/// split each aggregate's events, and the runner's default.
const BATCH_SIZES: [usize; 3] = [1, 7, crate::runner::DEFAULT_BATCH_SIZE as usize];

/// Hands out each aggregate's next sequence number.
#[derive(Default)]
struct Sequences(HashMap<Uuid, i64>);

impl Sequences {
    fn stored<E: Serialize + DomainEvent>(
        &mut self,
        aggregate_type: &str,
        aggregate_id: Uuid,
        agency_id: AgencyId,
        event: E,
    ) -> StoredEvent {
        let sequence = self.0.entry(aggregate_id).or_default();
        *sequence += 1;
        stored(aggregate_type, aggregate_id, *sequence, agency_id, event)
    }
}

/// A small linear congruential generator, so that the interleaving is the same on every
/// run.
struct Shuffle(u64);

impl Shuffle {
    fn below(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % bound as u64) as usize
    }
}

fn hours(text: &str) -> Hours {
    Hours::parse(text).unwrap()
}

fn day(number: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, number).unwrap()
}

fn reason(text: &str) -> FreeText {
    FreeText::parse(text).unwrap()
}

/// Returns one agency's history: three ambassadors, [`REFERRALS`] referrals through the
/// pipeline and the payouts of their milestones. Each referral with its payouts, and each
/// ambassador's later changes, is a thread of events in causal order, and the threads
/// interleave. Every event gets its own position and recording time.
fn agency_history(agency_id: AgencyId) -> Vec<StoredEvent> {
    let mut sequences = Sequences::default();
    let ambassadors = [
        AmbassadorId::new(),
        AmbassadorId::new(),
        AmbassadorId::new(),
    ];
    let mut events: Vec<StoredEvent> = ambassadors
        .iter()
        .map(|ambassador_id| {
            sequences.stored(
                "ambassador",
                ambassador_id.0,
                agency_id,
                enrolled(agency_id, *ambassador_id, "v1.name"),
            )
        })
        .collect();

    let mut threads: Vec<VecDeque<StoredEvent>> = Vec::new();
    threads.push(ambassador_changes(&mut sequences, agency_id, &ambassadors));
    let mut owner = None;
    for index in 0..REFERRALS {
        let referral_id = ReferralId::new();
        threads.push(referral_thread(
            &mut sequences,
            agency_id,
            index,
            referral_id,
            &ambassadors,
            owner,
        ));
        owner.get_or_insert(referral_id);
    }

    let mut shuffle = Shuffle(7);
    while !threads.is_empty() {
        let index = shuffle.below(threads.len());
        events.push(threads[index].pop_front().unwrap());
        if threads[index].is_empty() {
            threads.swap_remove(index);
        }
    }
    // A late referral makes a referral recount, not a payout recount, the last change of
    // an ambassador's summary.
    let late_id = ReferralId::new();
    let late = submitted(agency_id, REFERRALS, ambassadors[1], None);
    events.push(sequences.stored("referral", late_id.0, agency_id, late));
    for (position, event) in (1..).zip(events.iter_mut()) {
        event.position = position;
        event.transaction_id = 1000 + position as u64;
        event.recorded_at = at(1) + Duration::minutes(position);
    }
    events
}

/// Changes of the enrolled ambassadors: a new kind, contact details only, a repeated
/// enrollment and a deactivation.
fn ambassador_changes(
    sequences: &mut Sequences,
    agency_id: AgencyId,
    ambassadors: &[AmbassadorId; 3],
) -> VecDeque<StoredEvent> {
    let updated = |kind| AmbassadorEvent::AmbassadorUpdated {
        name: None,
        email: None,
        phone: Some(Sealed("v1.phone".to_owned())),
        kind,
        sms_consent: None,
        external_id: None,
        at: at(5),
    };
    VecDeque::from([
        sequences.stored(
            "ambassador",
            ambassadors[0].0,
            agency_id,
            updated(Some(AmbassadorKind::FormerWorker)),
        ),
        sequences.stored("ambassador", ambassadors[1].0, agency_id, updated(None)),
        sequences.stored(
            "ambassador",
            ambassadors[1].0,
            agency_id,
            enrolled(agency_id, ambassadors[1], "v1.renamed"),
        ),
        sequences.stored(
            "ambassador",
            ambassadors[2].0,
            agency_id,
            AmbassadorEvent::AmbassadorDeactivated { at: at(20) },
        ),
    ])
}

fn submitted(
    agency_id: AgencyId,
    index: usize,
    ambassador_id: AmbassadorId,
    duplicate_of: Option<ReferralId>,
) -> ReferralEvent {
    let eligibility = match (duplicate_of, index % 6) {
        (Some(_), _) => Eligibility::ineligible(IneligibleReason::Duplicate),
        (None, 1) => Eligibility::ineligible(IneligibleReason::PriorContact),
        (None, _) => Eligibility::ELIGIBLE,
    };
    ReferralEvent::ReferralSubmitted {
        referral_id: ReferralId::new(),
        agency_id,
        program_id: ProgramId::new(),
        terms_version: 1,
        terms: Terms::with_schedule(Vec::new()),
        currency: Currency::USD,
        ambassador_id,
        ambassador_kind: AmbassadorKind::External,
        // Sealed text is stored byte for byte, so it contains a character outside ASCII.
        candidate: SealedContact {
            name: Sealed(format!("v1.candidate-{index}-\u{e9}")),
            email: None,
            phone: None,
        },
        prior_contact: index % 6 == 1,
        job_reference: None,
        note: None,
        status: if duplicate_of.is_some() {
            ReferralStatus::Duplicate
        } else {
            ReferralStatus::Submitted
        },
        duplicate_of,
        eligibility,
        at: at(2),
    }
}

fn milestone(trigger: Trigger, threshold: &str, recipient: Recipient) -> ReferralEvent {
    let milestone = Milestone {
        trigger,
        threshold: hours(threshold),
        amount: 10_000,
        recipient,
    };
    ReferralEvent::MilestoneReached {
        key: milestone.key(),
        milestone,
        payable: true,
        reached_on: day(20),
        at: at(20),
    }
}

/// Returns the events of one referral and of the payouts of its milestones. `index`
/// chooses the ambassador, how far the referral gets and how its payouts end. `owner` is
/// the referral that a duplicate names.
fn referral_thread(
    sequences: &mut Sequences,
    agency_id: AgencyId,
    index: usize,
    referral_id: ReferralId,
    ambassadors: &[AmbassadorId; 3],
    owner: Option<ReferralId>,
) -> VecDeque<StoredEvent> {
    let mut ambassador_id = ambassadors[index % ambassadors.len()];
    let mut thread = VecDeque::new();
    let mut push = |sequences: &mut Sequences, event: ReferralEvent| {
        thread.push_back(sequences.stored("referral", referral_id.0, agency_id, event));
    };
    let duplicate_of = owner.filter(|_| index % 8 == 5);
    push(
        sequences,
        submitted(agency_id, index, ambassador_id, duplicate_of),
    );
    if duplicate_of.is_some() {
        if index % 16 == 5 {
            push(sequences, ReferralEvent::ReferralExpired { at: at(30) });
        }
        return thread;
    }
    push(
        sequences,
        ReferralEvent::RecruiterAssigned {
            recruiter_id: UserId::new(),
            at: at(3),
        },
    );
    push(sequences, ReferralEvent::ReferralContacted { at: at(4) });
    if index == 9 {
        // A repeated submission that names another ambassador moves the referral to them
        // and resets its status.
        ambassador_id = ambassadors[(index + 1) % ambassadors.len()];
        push(sequences, submitted(agency_id, index, ambassador_id, None));
    }
    match index % 12 {
        2 => {
            push(
                sequences,
                ReferralEvent::ReferralDeclined {
                    reason: reason("Not a match"),
                    at: at(5),
                },
            );
            return thread;
        }
        3 => {
            push(
                sequences,
                ReferralEvent::ReferralWithdrawn {
                    reason: reason("Took another job"),
                    at: at(5),
                },
            );
            return thread;
        }
        4 => return thread,
        _ => {}
    }
    push(sequences, ReferralEvent::ReferralInterviewing { at: at(6) });
    match index % 12 {
        5 => {
            push(sequences, ReferralEvent::ReferralExpired { at: at(25) });
            return thread;
        }
        6 => return thread,
        _ => {}
    }
    push(
        sequences,
        ReferralEvent::ReferralHired {
            start_date: day(2),
            job_title: "Forklift driver".to_owned(),
            client_name: "Harbor Logistics".to_owned(),
            external_worker_id: None,
            at: at(8),
        },
    );
    push(
        sequences,
        milestone(Trigger::Hired, "0", Recipient::Ambassador),
    );
    let mut payouts = vec![Recipient::Ambassador];

    for (week, worked, total) in [
        (1, "37.25", "37.25"),
        (2, "40", "77.25"),
        (3, "12.5", "89.75"),
    ] {
        push(
            sequences,
            ReferralEvent::HoursRecorded {
                week_ending: day(week * 7),
                hours: hours(worked),
                total_hours: hours(total),
                at: at(9 + week),
            },
        );
    }
    push(
        sequences,
        ReferralEvent::HoursCorrected {
            week_ending: day(14),
            hours: hours("38.5"),
            previous_hours: hours("40"),
            total_hours: hours("88.25"),
            at: at(13),
        },
    );
    push(
        sequences,
        ReferralEvent::HoursAccrued {
            as_of: day(21),
            total_hours: hours("80.05"),
            added: hours("80.05"),
            total_hours_all: hours("168.30"),
            at: at(14),
        },
    );
    let recipient = if index % 2 == 0 {
        Recipient::Candidate
    } else {
        Recipient::Ambassador
    };
    push(sequences, milestone(Trigger::HoursWorked, "160", recipient));
    payouts.push(recipient);
    push(
        sequences,
        ReferralEvent::HoursTotalLowered {
            as_of: day(22),
            reported_total: hours("70"),
            previous_total: hours("80.05"),
            needs_review: true,
            total_hours_all: hours("158.25"),
            at: at(15),
        },
    );
    match index % 4 {
        1 => {
            push(
                sequences,
                ReferralEvent::EligibilityChanged {
                    eligibility: Eligibility::ineligible(IneligibleReason::PlacementEnded),
                    at: at(16),
                },
            );
            push(
                sequences,
                ReferralEvent::PlacementEnded {
                    end_date: day(23),
                    reason: reason("Contract ended"),
                    within_guarantee: true,
                    at: at(16),
                },
            );
        }
        2 => push(sequences, ReferralEvent::ReferralCompleted { at: at(17) }),
        _ => {}
    }

    for (number, recipient) in payouts.into_iter().enumerate() {
        // A candidate's bonus in a currency of no own payout of the ambassador leaves the
        // ambassador without earnings in that currency.
        let currency = match (index % 4, recipient) {
            (0, _) => Currency::parse("EUR").unwrap(),
            (2, Recipient::Candidate) => Currency::parse("GBP").unwrap(),
            _ => Currency::USD,
        };
        thread.extend(payout_thread(
            sequences,
            agency_id,
            ambassador_id,
            recipient,
            Money::new(5_000 * (number as i64 + 1) + index as i64, currency).unwrap(),
            index * 2 + number,
        ));
    }
    thread
}

/// Returns the events of one payout. `variant` chooses how it ends.
fn payout_thread(
    sequences: &mut Sequences,
    agency_id: AgencyId,
    ambassador_id: AmbassadorId,
    recipient: Recipient,
    amount: Money,
    variant: usize,
) -> Vec<StoredEvent> {
    let payout_id = PayoutId::new();
    let requested = |amount: Money| PayoutEvent::PayoutRequested {
        payout_id,
        agency_id,
        referral_id: ReferralId::new(),
        program_id: ProgramId::new(),
        ambassador_id,
        recipient,
        milestone: MilestoneKey::parse(&format!("hired:0.00:{}", recipient.as_str())).unwrap(),
        amount,
        requested_by: Requester::System {
            job: "milestones".to_owned(),
        },
        annual_bonus_cap: None,
        referrer_must_be_active: false,
        at: at(20),
    };
    let user = UserId::new();
    let mut events = vec![requested(amount)];
    match variant % 7 {
        0 => events.extend([
            PayoutEvent::PayoutApproved {
                approver: user,
                at: at(21),
            },
            PayoutEvent::PayoutExported {
                batch_id: Uuid::now_v7(),
                at: at(22),
            },
            PayoutEvent::PayoutPaid {
                paid_on: day(25),
                reference: "PR-1".to_owned(),
                at: at(25),
            },
        ]),
        1 => events.extend([
            PayoutEvent::PayoutApproved {
                approver: user,
                at: at(21),
            },
            PayoutEvent::PayoutPaid {
                paid_on: day(25),
                reference: "PR-2".to_owned(),
                at: at(25),
            },
            PayoutEvent::PayoutReversed {
                by: user,
                reason: reason("Paid twice"),
                at: at(26),
            },
        ]),
        2 => events.push(PayoutEvent::PayoutRejected {
            by: user,
            reason: reason("Hours not confirmed"),
            at: at(21),
        }),
        3 => events.extend([
            PayoutEvent::PayoutHeld {
                by: user,
                reason: reason("Timesheet under review"),
                at: at(21),
            },
            PayoutEvent::PayoutReleased {
                by: user,
                at: at(22),
            },
            PayoutEvent::PayoutVoided {
                by: Requester::User { user_id: user },
                reason_code: VoidReason::PlacementEnded,
                note: None,
                at: at(23),
            },
        ]),
        // A repeated request in another currency replaces the pending one.
        4 => events.push(requested(
            Money::new(amount.amount() + 1, Currency::parse("EUR").unwrap()).unwrap(),
        )),
        5 => events.push(PayoutEvent::PayoutApproved {
            approver: user,
            at: at(21),
        }),
        _ => events.extend([
            PayoutEvent::PayoutApproved {
                approver: user,
                at: at(21),
            },
            PayoutEvent::PayoutExported {
                batch_id: Uuid::now_v7(),
                at: at(22),
            },
        ]),
    }
    events
        .into_iter()
        .map(|event| sequences.stored("payout", payout_id.0, agency_id, event))
        .collect()
}

/// Returns every row of the projection's tables as text, table by table in sorted order.
async fn projection_rows(pool: &PgPool, projection: &dyn Projection) -> Vec<String> {
    let mut rows = Vec::new();
    for table in projection.tables() {
        let table_rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT '{table} ' || row::text FROM {schema}.{table} AS row ORDER BY 1",
            schema = projection.schema(),
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        rows.extend(table_rows);
    }
    rows
}

async fn delete_rows(pool: &PgPool, projection: &dyn Projection) {
    for table in projection.tables() {
        sqlx::query(&format!("DELETE FROM {}.{table}", projection.schema()))
            .execute(pool)
            .await
            .unwrap();
    }
}

/// Applies `events` with `apply_batch`, `size` events per transaction, as the runner does.
async fn apply_in_batches(
    pool: &PgPool,
    projection: &dyn Projection,
    events: &[StoredEvent],
    size: usize,
) -> Result<(), ProjectionError> {
    for batch in events.chunks(size) {
        let mut transaction = pool.begin().await?;
        sqlx::query(&format!(
            "SET LOCAL search_path TO {}, public",
            projection.schema()
        ))
        .execute(&mut *transaction)
        .await?;
        projection.apply_batch(&mut transaction, batch).await?;
        transaction.commit().await?;
    }
    Ok(())
}

/// Asserts that `apply_batch` in each of [`BATCH_SIZES`] leaves the rows that `apply`
/// leaves event by event, and returns those rows. The tables keep them afterwards.
async fn assert_batches_match(
    pool: &PgPool,
    projection: &dyn Projection,
    events: &[StoredEvent],
) -> Vec<String> {
    apply_all(pool, projection, events).await.unwrap();
    let one_by_one = projection_rows(pool, projection).await;

    for size in BATCH_SIZES {
        delete_rows(pool, projection).await;
        apply_in_batches(pool, projection, events, size)
            .await
            .unwrap();
        let batched = projection_rows(pool, projection).await;
        assert_eq!(batched.len(), one_by_one.len(), "rows in batches of {size}");
        for (batched, expected) in batched.iter().zip(&one_by_one) {
            assert_eq!(batched, expected, "batches of {size}");
        }
    }
    one_by_one
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn board_batches_match_single_events(pool: PgPool) {
    let events = agency_history(AgencyId::new());

    let rows = assert_batches_match(&pool, &ReferralBoardProjection, &events).await;

    assert_eq!(rows.len(), REFERRALS + 1);
    // The history reaches the cases the batch path must get right.
    let (statuses, fractional, most_milestones, ended, sealed): (i64, i64, i32, i64, i64) =
        sqlx::query_as(
            "SELECT count(DISTINCT status),
                    count(*) FILTER (WHERE hours_total <> trunc(hours_total)),
                    max(milestones_reached),
                    count(*) FILTER (WHERE end_date IS NOT NULL AND NOT eligible),
                    count(*) FILTER (WHERE candidate_name_sealed LIKE '%\u{e9}')
               FROM read_models.referral_board",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(statuses, 9, "every referral status");
    assert!(fractional > 0, "fractional hours");
    assert_eq!(most_milestones, 2, "milestones of one referral");
    assert!(ended > 0, "ended placements");
    assert_eq!(sealed, rows.len() as i64, "sealed names");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn summary_batches_match_single_events(pool: PgPool) {
    let events = agency_history(AgencyId::new());

    assert_batches_match(&pool, &AmbassadorSummariesProjection, &events).await;

    // The history reaches the cases the batch path must get right.
    let figures: (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE NOT active), sum(referrals_duplicate),
                sum(referrals_hired), sum(milestones_reached), sum(payouts_pending),
                sum(payouts_approved), sum(payouts_paid)
           FROM read_models.ambassador_summaries",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (inactive, duplicates, hired, milestones, pending, approved, paid) = figures;
    assert_eq!(inactive, 1, "deactivated ambassadors");
    assert!(duplicates > 0, "duplicates");
    assert!(hired > 0, "hires");
    assert!(milestones > hired, "milestones after the hire");
    assert!(pending > 0, "pending payouts");
    assert!(approved > 0, "approved payouts");
    assert!(paid > 0, "paid payouts");
    let currencies: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT currency) FROM read_models.ambassador_earnings")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(currencies, 2, "currencies");
    let (exported, candidate_only): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'exported' AND recipient = 'ambassador'),
                count(*) FILTER (WHERE currency = 'GBP')
           FROM read_models.ambassador_summary_payouts",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(exported > 0, "exported payouts");
    assert!(candidate_only > 0, "candidate bonuses in a third currency");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn board_batch_before_submission_is_poison(pool: PgPool) {
    let agency_id = AgencyId::new();
    let mut sequences = Sequences::default();
    let referral_id = ReferralId::new();
    let events = [
        sequences.stored(
            "referral",
            referral_id.0,
            agency_id,
            submitted(agency_id, 0, AmbassadorId::new(), None),
        ),
        stored(
            "referral",
            Uuid::now_v7(),
            2,
            agency_id,
            ReferralEvent::ReferralContacted { at: at(2) },
        ),
    ];

    let error = apply_in_batches(&pool, &ReferralBoardProjection, &events, events.len())
        .await
        .unwrap_err();

    assert!(matches!(error, ProjectionError::Poison(_)), "{error:?}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn board_batch_plaintext_name_is_poison(pool: PgPool) {
    let agency_id = AgencyId::new();
    let mut sequences = Sequences::default();
    let mut submission = submitted(agency_id, 0, AmbassadorId::new(), None);
    if let ReferralEvent::ReferralSubmitted { candidate, .. } = &mut submission {
        candidate.name = Sealed("Grace Hopper".to_owned());
    }
    let event = sequences.stored("referral", Uuid::now_v7(), agency_id, submission);

    let error = apply_in_batches(&pool, &ReferralBoardProjection, &[event], 1)
        .await
        .unwrap_err();

    assert!(matches!(error, ProjectionError::Poison(_)), "{error:?}");
    assert!(!error.to_string().contains("Grace"), "{error}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn summary_batch_without_enrollment_is_poison(pool: PgPool) {
    let agency_id = AgencyId::new();
    let mut sequences = Sequences::default();
    let event = sequences.stored(
        "referral",
        Uuid::now_v7(),
        agency_id,
        submitted(agency_id, 0, AmbassadorId::new(), None),
    );

    let error = apply_in_batches(&pool, &AmbassadorSummariesProjection, &[event], 1)
        .await
        .unwrap_err();

    assert!(matches!(error, ProjectionError::Poison(_)), "{error:?}");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn summary_batch_payout_without_request_is_poison(pool: PgPool) {
    let agency_id = AgencyId::new();
    let ambassador_id = AmbassadorId::new();
    let mut sequences = Sequences::default();
    let events = [
        sequences.stored(
            "ambassador",
            ambassador_id.0,
            agency_id,
            enrolled(agency_id, ambassador_id, "v1.name"),
        ),
        stored(
            "payout",
            Uuid::now_v7(),
            2,
            agency_id,
            PayoutEvent::PayoutApproved {
                approver: UserId::new(),
                at: at(15),
            },
        ),
    ];

    let error = apply_in_batches(&pool, &AmbassadorSummariesProjection, &events, events.len())
        .await
        .unwrap_err();

    assert!(matches!(error, ProjectionError::Poison(_)), "{error:?}");
}
