//! Helpers for the end-to-end tests in `tests/tests/`, which run against real PostgreSQL:
//! every database test gets a fresh, migrated database from `sqlx::test`.

use chrono::{DateTime, Utc};
use referrals_domain::ids::{AgencyId, AmbassadorId, ProgramId, UserId};
use referrals_domain::referral::Referral;
use referrals_domain::terms::{AmbassadorKind, Milestone, Recipient, Terms, Trigger};
use referrals_domain::values::{Currency, EmailAddress, Hours, PersonName, PhoneNumber};
use referrals_store::application::{Application, NewAmbassador, NewProgram, NewReferral};
use referrals_store::crypto::MasterKey;
use referrals_store::event_store::{Actor, CommandMetadata, Executed};
use referrals_store::personal::ContactDetails;
use std::time::Duration;

use referrals_projections::runner::{ProjectionRunner, RunnerError};
use referrals_projections::status::projection_status;
use referrals_projections::Projection;
use sqlx::PgPool;
use uuid::Uuid;

/// Wires the application over a test database with a fresh master key.
pub fn application(pool: &PgPool) -> Application {
    Application::new(pool.clone(), MasterKey::generate().0)
}

/// Metadata of a recruiter of `agency_id` acting at `at`.
pub fn recruiter_at(agency_id: AgencyId, at: DateTime<Utc>) -> CommandMetadata {
    let mut metadata = CommandMetadata::new(
        agency_id,
        Actor::User {
            id: UserId(Uuid::now_v7()),
            role: "recruiter".to_owned(),
        },
    );
    metadata.recorded_at = at;
    metadata
}

/// Metadata of a recruiter of `agency_id` acting now.
pub fn recruiter(agency_id: AgencyId) -> CommandMetadata {
    recruiter_at(agency_id, Utc::now())
}

/// Terms paying $500 at hire and $1,000 after 160 hours, with the default windows.
pub fn hire_and_hours_terms() -> Terms {
    Terms::with_schedule(vec![
        Milestone {
            trigger: Trigger::Hired,
            threshold: Hours::whole(0),
            amount: 50_000,
            recipient: Recipient::Ambassador,
        },
        Milestone {
            trigger: Trigger::HoursWorked,
            threshold: Hours::whole(160),
            amount: 100_000,
            recipient: Recipient::Ambassador,
        },
    ])
}

/// Creates a USD program with `terms`.
pub async fn create_program(
    app: &Application,
    metadata: &CommandMetadata,
    terms: Terms,
) -> ProgramId {
    let executed = app
        .create_program(
            metadata,
            NewProgram {
                name: "Warehouse referrals".to_owned(),
                currency: Currency::parse("USD").unwrap(),
                terms,
            },
        )
        .await
        .expect("creating the program");
    executed.aggregate.program_id().expect("program id")
}

/// Contact details from plain strings.
pub fn contact(name: &str, email: Option<&str>, phone: Option<&str>) -> ContactDetails {
    ContactDetails {
        name: PersonName::parse(name).unwrap(),
        email: email.map(|email| EmailAddress::parse(email).unwrap()),
        phone: phone.map(|phone| PhoneNumber::parse(phone).unwrap()),
    }
}

/// Enrolls a field worker as ambassador.
pub async fn enroll_ambassador(
    app: &Application,
    metadata: &CommandMetadata,
    details: ContactDetails,
) -> AmbassadorId {
    let executed = app
        .enroll_ambassador(
            metadata,
            NewAmbassador {
                contact: details,
                kind: AmbassadorKind::FieldWorker,
                external_id: None,
                sms_consent: false,
            },
        )
        .await
        .expect("enrolling the ambassador");
    executed.aggregate.ambassador_id().expect("ambassador id")
}

/// Submits a referral of `candidate` without job reference or note.
pub async fn submit(
    app: &Application,
    metadata: &CommandMetadata,
    program_id: ProgramId,
    ambassador_id: AmbassadorId,
    candidate: ContactDetails,
) -> Result<Executed<Referral>, referrals_store::application::AppError> {
    app.submit_referral(
        metadata,
        NewReferral {
            program_id,
            ambassador_id,
            candidate,
            job_reference: None,
            note: None,
        },
    )
    .await
}

/// Catches up until the status reports no event behind. Other tests' transactions hold
/// the cluster-wide read horizon back for a while, so one pass may stop short.
///
/// # Panics
/// Panics when the runner fails or the projection is still behind after 15 seconds.
pub async fn catch_up_fully(
    pool: &PgPool,
    runner: &ProjectionRunner,
    projection: &dyn Projection,
) -> u64 {
    let mut applied = 0;
    for _ in 0..300 {
        applied += runner.catch_up(projection).await.unwrap();
        let status = &projection_status(pool, &[projection.name()]).await.unwrap()[0];
        if status.events_behind == 0 {
            return applied;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} did not catch up within 15 seconds", projection.name());
}

/// Catches up until the runner reports an error, or every event is applied.
pub async fn catch_up_until_error(
    pool: &PgPool,
    runner: &ProjectionRunner,
    projection: &dyn Projection,
) -> Result<u64, RunnerError> {
    let mut applied = 0;
    for _ in 0..300 {
        applied += runner.catch_up(projection).await?;
        let status = &projection_status(pool, &[projection.name()]).await.unwrap()[0];
        if status.events_behind == 0 {
            return Ok(applied);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} neither failed nor caught up within 15 seconds",
        projection.name()
    );
}

/// Creates a program paying at hire and after 160 hours, enrolls an ambassador and submits
/// a referral of one candidate; returns the referral's id.
///
/// # Panics
/// Panics when a step fails.
pub async fn submitted_referral(
    app: &Application,
    metadata: &CommandMetadata,
) -> referrals_domain::ids::ReferralId {
    let program = create_program(app, metadata, hire_and_hours_terms()).await;
    let ambassador =
        enroll_ambassador(app, metadata, contact("Ada", Some("ada@example.com"), None)).await;
    let referral = submit(
        app,
        metadata,
        program,
        ambassador,
        contact("Grace", Some("grace@example.org"), None),
    )
    .await
    .expect("submitting the referral");
    referral.aggregate.referral_id().expect("referral id")
}
