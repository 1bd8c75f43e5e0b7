//! Master-key rotation: stored keys are re-wrapped under a new master key in batches,
//! after which the application with only the new key reads everything written before.

use referrals_domain::ids::{AgencyId, AmbassadorId, ProgramId};
use referrals_domain::referral::{Referral, ReferralStatus};
use referrals_domain::terms::AmbassadorKind;
use referrals_store::application::{Application, NewAmbassador};
use referrals_store::audit::verify_chain;
use referrals_store::crypto::{CryptoError, MasterKey};
use referrals_store::keys::{count_wrapped_keys, rewrap_batch, KeyError, WrappedKeyCounts};
use referrals_store::personal::{OpenedDetails, SealedDetails};
use referrals_tests::*;
use sqlx::PgPool;
use uuid::Uuid;

/// The data written under the old master key: one ambassador and two referred candidates.
struct Written {
    agency: AgencyId,
    program: ProgramId,
    ambassador_id: Uuid,
    ambassador: SealedDetails,
    referrals: Vec<(Uuid, SealedDetails)>,
}

async fn write_personal_data(app: &Application) -> Written {
    let agency = AgencyId::new();
    let metadata = recruiter(agency);
    let program = create_program(app, &metadata, hire_and_hours_terms()).await;
    let enrolled = app
        .enroll_ambassador(
            &metadata,
            NewAmbassador {
                contact: contact("Grace Hopper", Some("grace@example.com"), None),
                kind: AmbassadorKind::FieldWorker,
                external_id: None,
                sms_consent: false,
            },
        )
        .await
        .unwrap()
        .aggregate;
    let ambassador_id = enrolled.ambassador_id().unwrap();
    let ambassador = SealedDetails {
        name: enrolled.name().unwrap().clone(),
        email: enrolled.email().cloned(),
        phone: enrolled.phone().cloned(),
    };

    let mut referrals = Vec::new();
    for (name, email) in [
        ("Ada Lovelace", "ada@example.com"),
        ("Alan Turing", "alan@example.com"),
    ] {
        let candidate = contact(name, Some(email), Some("+15555550123"));
        let referral = submit(app, &metadata, program, ambassador_id, candidate)
            .await
            .unwrap()
            .aggregate;
        referrals.push((
            referral.referral_id().unwrap().0,
            sealed_candidate(&referral),
        ));
    }
    Written {
        agency,
        program,
        ambassador_id: ambassador_id.0,
        ambassador,
        referrals,
    }
}

/// Returns the MD5 digest of every column of every row of the events table, as text in
/// position order.
async fn events_digest(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT md5(string_agg(event::text, E'\\n' ORDER BY event.position))
           FROM events AS event",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

fn sealed_candidate(referral: &Referral) -> SealedDetails {
    let candidate = referral.candidate().unwrap();
    SealedDetails {
        name: candidate.name.clone(),
        email: candidate.email.clone(),
        phone: candidate.phone.clone(),
    }
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn rotation_in_batches_lets_only_the_new_key_read_old_data(pool: PgPool) {
    let (key_a, _) = MasterKey::generate();
    let (key_b, _) = MasterKey::generate();
    let written = write_personal_data(&Application::new(pool.clone(), key_a.clone())).await;
    let events_before = events_digest(&pool).await;
    let before = count_wrapped_keys(&pool, &key_a, &key_b).await.unwrap();
    // Three data keys (the ambassador and two candidates) and at least one agency key.
    assert!(before.old >= 4, "{before:?}");
    assert_eq!((before.new, before.other), (0, 0));

    // One batch, then an interruption, then a new run that continues until nothing is left.
    let first = rewrap_batch(&pool, &key_a, &key_b, 2).await.unwrap();
    assert_eq!(first.total(), 2);
    let mut rewrapped = first.total();
    loop {
        let progress = rewrap_batch(&pool, &key_a, &key_b, 2).await.unwrap();
        if progress.total() == 0 {
            break;
        }
        rewrapped += progress.total();
    }
    assert_eq!(rewrapped, before.old);
    let after = count_wrapped_keys(&pool, &key_a, &key_b).await.unwrap();
    assert_eq!(
        after,
        WrappedKeyCounts {
            old: 0,
            new: before.old,
            other: 0
        }
    );

    assert_eq!(
        events_digest(&pool).await,
        events_before,
        "the rotation changed stored events"
    );
    let report = verify_chain(&pool, None, false).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert!(report.events_checked > 0, "{report:?}");

    let with_b = Application::new(pool.clone(), key_b.clone());
    let (referral_id, sealed) = &written.referrals[0];
    let candidate = with_b
        .personal()
        .open_contact(written.agency, *referral_id, sealed)
        .await
        .unwrap();
    assert_eq!(
        candidate,
        OpenedDetails::Present {
            name: "Ada Lovelace".to_owned(),
            email: Some("ada@example.com".to_owned()),
            phone: Some("+15555550123".to_owned()),
        }
    );
    let ambassador = with_b
        .personal()
        .open_contact(written.agency, written.ambassador_id, &written.ambassador)
        .await
        .unwrap();
    assert!(
        matches!(&ambassador, OpenedDetails::Present { name, .. } if name == "Grace Hopper"),
        "{ambassador:?}"
    );

    let with_a = Application::new(pool.clone(), key_a.clone());
    let retired = with_a
        .personal()
        .open_contact(written.agency, *referral_id, sealed)
        .await;
    assert!(
        matches!(
            retired,
            Err(KeyError::Crypto(CryptoError::WrongMasterKey { .. }))
        ),
        "{retired:?}"
    );

    let second_run = rewrap_batch(&pool, &key_a, &key_b, 500).await.unwrap();
    assert_eq!(second_run.total(), 0);
    assert_eq!(
        count_wrapped_keys(&pool, &key_a, &key_b).await.unwrap(),
        after
    );

    // The agency's hashing key survived the rotation: the same candidate, referred again
    // under the new master key, produces the same keyed hash and is found as a duplicate.
    let again = submit(
        &with_b,
        &recruiter(written.agency),
        written.program,
        AmbassadorId(written.ambassador_id),
        contact("A. Lovelace", Some("ada@example.com"), None),
    )
    .await
    .unwrap()
    .aggregate;
    assert_eq!(again.status(), Some(ReferralStatus::Duplicate));
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn tampered_data_key_stops_rotation_naming_its_subject(pool: PgPool) {
    let (key_a, _) = MasterKey::generate();
    let (key_b, _) = MasterKey::generate();
    let written = write_personal_data(&Application::new(pool.clone(), key_a.clone())).await;
    let (tampered_subject, _) = written.referrals[1];
    sqlx::query(
        "UPDATE data_keys SET wrapped_key = set_byte(wrapped_key, 20, get_byte(wrapped_key, 20) # 1)
          WHERE subject_id = $1",
    )
    .bind(tampered_subject)
    .execute(&pool)
    .await
    .unwrap();
    let before = count_wrapped_keys(&pool, &key_a, &key_b).await.unwrap();

    let result = rewrap_batch(&pool, &key_a, &key_b, 500).await;

    let Err(error) = result else {
        panic!("the rotation went on past a tampered key: {result:?}");
    };
    assert!(
        matches!(
            error,
            KeyError::DataKeyUnwrap { subject_id, source: CryptoError::DecryptionFailed, .. }
                if subject_id == tampered_subject
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&tampered_subject.to_string()), "{message}");
    assert!(message.contains(&written.agency.to_string()), "{message}");
    // The failed batch is rolled back as a whole.
    assert_eq!(
        count_wrapped_keys(&pool, &key_a, &key_b).await.unwrap(),
        before
    );
}

#[sqlx::test(migrator = "referrals_store::database::MIGRATOR")]
async fn rotation_to_the_current_key_is_rejected(pool: PgPool) {
    let (key_a, text) = MasterKey::generate();
    let same = MasterKey::from_base64(&text).unwrap();

    let result = rewrap_batch(&pool, &key_a, &same, 500).await;

    assert!(
        matches!(result, Err(KeyError::SameMasterKey { .. })),
        "{result:?}"
    );
}
