//! First referral wins: one owner per candidate, under concurrency and across windows.

use chrono::{Duration, Utc};
use referrals_domain::ids::{AgencyId, ReferralId};
use referrals_domain::referral::{IneligibleReason, ReferralStatus};
use referrals_store::application::AppError;
use referrals_tests::*;
use sqlx::PgPool;

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn twenty_concurrent_referrals_have_one_owner(pool: PgPool) {
    let app = std::sync::Arc::new(application(&pool));
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let program = create_program(&app, &metadata, hire_and_hours_terms()).await;
    let mut ambassadors = Vec::new();
    for index in 0..20 {
        let details = contact(
            &format!("Ambassador {index}"),
            Some(&format!("amb{index}@example.com")),
            None,
        );
        ambassadors.push(enroll_ambassador(&app, &metadata, details).await);
    }

    let submissions = ambassadors.into_iter().map(|ambassador| {
        let app = app.clone();
        let metadata = metadata.clone();
        tokio::spawn(async move {
            let candidate = contact(
                "Grace Hopper",
                Some("grace@example.org"),
                Some("+15555550101"),
            );
            submit(&app, &metadata, program, ambassador, candidate).await
        })
    });
    let results = futures::future::join_all(submissions).await;
    let referrals: Vec<_> = results
        .into_iter()
        .map(|joined| joined.expect("task").expect("submission"))
        .collect();

    let owners: Vec<_> = referrals
        .iter()
        .filter(|executed| executed.aggregate.status() == Some(ReferralStatus::Submitted))
        .collect();
    assert_eq!(owners.len(), 1, "exactly one referral owns the candidate");
    let owner_id = owners[0].aggregate.referral_id().unwrap();
    let duplicates: Vec<_> = referrals
        .iter()
        .filter(|executed| executed.aggregate.status() == Some(ReferralStatus::Duplicate))
        .collect();
    assert_eq!(duplicates.len(), 19);
    for duplicate in duplicates {
        assert_eq!(duplicate.aggregate.duplicate_of(), Some(owner_id));
        let eligibility = duplicate.aggregate.eligibility().unwrap();
        assert!(!eligibility.is_eligible());
        assert_eq!(eligibility.reason(), Some(IneligibleReason::Duplicate));
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn matching_phone_alone_makes_a_duplicate(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let program = create_program(&app, &metadata, hire_and_hours_terms()).await;
    let ambassador = enroll_ambassador(
        &app,
        &metadata,
        contact("Ada", Some("ada@example.com"), None),
    )
    .await;

    let first = submit(
        &app,
        &metadata,
        program,
        ambassador,
        contact("Grace", Some("grace@example.org"), None),
    )
    .await
    .unwrap();
    let second = submit(
        &app,
        &metadata,
        program,
        ambassador,
        contact(
            "G. Hopper",
            Some("GRACE@example.org "),
            Some("(555) 555-0101"),
        ),
    )
    .await
    .unwrap();

    assert_eq!(second.aggregate.status(), Some(ReferralStatus::Duplicate));
    assert_eq!(
        second.aggregate.duplicate_of(),
        first.aggregate.referral_id()
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn lapsed_window_lets_next_referral_own(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let start = Utc::now() - Duration::days(400);
    let metadata = recruiter_at(agency, start);
    let program = create_program(&app, &metadata, hire_and_hours_terms()).await;
    let ambassador = enroll_ambassador(
        &app,
        &metadata,
        contact("Ada", Some("ada@example.com"), None),
    )
    .await;
    let candidate = || contact("Grace", Some("grace@example.org"), None);
    let first = submit(&app, &metadata, program, ambassador, candidate())
        .await
        .unwrap();

    let inside_window = recruiter_at(agency, start + Duration::days(179));
    let during = submit(&app, &inside_window, program, ambassador, candidate())
        .await
        .unwrap();
    let after_window = recruiter_at(agency, start + Duration::days(181));
    let after = submit(&app, &after_window, program, ambassador, candidate())
        .await
        .unwrap();

    assert_eq!(during.aggregate.status(), Some(ReferralStatus::Duplicate));
    assert_eq!(
        during.aggregate.duplicate_of(),
        first.aggregate.referral_id()
    );
    assert_eq!(after.aggregate.status(), Some(ReferralStatus::Submitted));
    let claimed_by: uuid::Uuid =
        sqlx::query_scalar("SELECT DISTINCT referral_id FROM candidate_claims")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(Some(ReferralId(claimed_by)), after.aggregate.referral_id());
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn self_referral_is_rejected(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let program = create_program(&app, &metadata, hire_and_hours_terms()).await;
    let ambassador = enroll_ambassador(
        &app,
        &metadata,
        contact("Ada", Some("ada@example.com"), None),
    )
    .await;

    let result = submit(
        &app,
        &metadata,
        program,
        ambassador,
        contact("Ada L.", Some(" Ada@Example.com"), None),
    )
    .await;

    match result {
        Err(AppError::Domain(error)) => assert_eq!(error.code(), "self_referral"),
        other => panic!("expected a self-referral rejection, got {other:?}"),
    }
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM candidate_claims")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(claims, 0, "a rejected referral claims nothing");
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn other_agency_cannot_see_or_use_program(pool: PgPool) {
    let app = application(&pool);
    let owner = recruiter(AgencyId::new());
    let program = create_program(&app, &owner, hire_and_hours_terms()).await;
    let stranger = recruiter(AgencyId::new());
    let ambassador = enroll_ambassador(
        &app,
        &stranger,
        contact("Ada", Some("ada@example.com"), None),
    )
    .await;

    let result = submit(
        &app,
        &stranger,
        program,
        ambassador,
        contact("Grace", Some("grace@example.org"), None),
    )
    .await;

    assert!(
        matches!(result, Err(AppError::NotFound("program"))),
        "{result:?}"
    );
    let loaded = app
        .programs
        .load(stranger.agency_id, &program.to_string())
        .await
        .unwrap();
    assert!(loaded.is_none());
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn prior_contact_makes_referral_ineligible(pool: PgPool) {
    let app = application(&pool);
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let program = create_program(&app, &metadata, hire_and_hours_terms()).await;
    let ambassador = enroll_ambassador(
        &app,
        &metadata,
        contact("Ada", Some("ada@example.com"), None),
    )
    .await;
    let email = referrals_domain::values::EmailAddress::parse("grace@example.org").unwrap();
    let keys = app
        .personal()
        .contact_keys(agency, Some(&email), None)
        .await
        .unwrap();
    sqlx::query("INSERT INTO known_candidates (agency_id, contact_key, last_contact_on) VALUES ($1, $2, $3)")
        .bind(agency.0)
        .bind(&keys.email.unwrap().0)
        .bind((Utc::now() - Duration::days(30)).date_naive())
        .execute(&pool)
        .await
        .unwrap();

    let referral = submit(
        &app,
        &metadata,
        program,
        ambassador,
        contact("Grace", Some("grace@example.org"), None),
    )
    .await
    .unwrap();

    assert_eq!(referral.aggregate.status(), Some(ReferralStatus::Submitted));
    let eligibility = referral.aggregate.eligibility().unwrap();
    assert_eq!(eligibility.reason(), Some(IneligibleReason::PriorContact));
}
