//! Pipeline rules: recruiter assignment, contact, interview, hire, decline,
//! withdrawal and expiry.

use super::*;

fn declined() -> ReferralEvent {
    ReferralEvent::ReferralDeclined {
        reason: text("Not available for night shifts"),
        at: day(5),
    }
}

fn hire_command(at: DateTime<Utc>) -> ReferralCommand {
    RecordHire {
        start_date: start_date(),
        job_title: " Forklift operator ".to_owned(),
        client_name: "Northside Logistics".to_owned(),
        external_worker_id: None,
        at,
    }
    .into()
}

fn hired_at(at: DateTime<Utc>) -> ReferralEvent {
    ReferralEvent::ReferralHired {
        start_date: start_date(),
        job_title: "Forklift operator".to_owned(),
        client_name: "Northside Logistics".to_owned(),
        external_worker_id: None,
        at,
    }
}

#[tokio::test]
async fn assign_recruiter_records_the_assignment() {
    ReferralTest::with(services())
        .given(vec![submitted()])
        .when_async(
            AssignRecruiter {
                recruiter_id: recruiter_id(),
                at: day(1),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![ReferralEvent::RecruiterAssigned {
            recruiter_id: recruiter_id(),
            at: day(1),
        }]);
}

#[tokio::test]
async fn assign_recruiter_again_emits_nothing() {
    ReferralTest::with(services())
        .given(vec![
            submitted(),
            ReferralEvent::RecruiterAssigned {
                recruiter_id: recruiter_id(),
                at: day(1),
            },
        ])
        .when_async(
            AssignRecruiter {
                recruiter_id: recruiter_id(),
                at: day(2),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn assign_recruiter_to_declined_referral_is_rejected() {
    ReferralTest::with(services())
        .given(vec![submitted(), declined()])
        .when_async(
            AssignRecruiter {
                recruiter_id: recruiter_id(),
                at: day(6),
            }
            .into(),
        )
        .await
        .then_expect_error(invalid_transition(
            "declined",
            "assign a recruiter to the referral",
        ));
}

#[tokio::test]
async fn mark_contacted_from_submitted_records_contact() {
    ReferralTest::with(services())
        .given(vec![submitted()])
        .when_async(MarkContacted { at: day(1) }.into())
        .await
        .then_expect_events(vec![ReferralEvent::ReferralContacted { at: day(1) }]);
}

#[tokio::test]
async fn mark_contacted_twice_is_an_invalid_transition() {
    ReferralTest::with(services())
        .given(vec![
            submitted(),
            ReferralEvent::ReferralContacted { at: day(1) },
        ])
        .when_async(MarkContacted { at: day(2) }.into())
        .await
        .then_expect_error(invalid_transition(
            "contacted",
            "mark the referral contacted",
        ));
}

#[tokio::test]
async fn mark_interviewing_from_contacted_records_interview() {
    ReferralTest::with(services())
        .given(vec![
            submitted(),
            ReferralEvent::ReferralContacted { at: day(1) },
        ])
        .when_async(MarkInterviewing { at: day(3) }.into())
        .await
        .then_expect_events(vec![ReferralEvent::ReferralInterviewing { at: day(3) }]);
}

#[tokio::test]
async fn mark_interviewing_after_hire_is_an_invalid_transition() {
    ReferralTest::with(services())
        .given(hired_history())
        .when_async(MarkInterviewing { at: day(25) }.into())
        .await
        .then_expect_error(invalid_transition(
            "hired",
            "mark the referral interviewing",
        ));
}

#[tokio::test]
async fn record_hire_before_deadline_reaches_the_hire_milestone() {
    ReferralTest::with(services())
        .given(vec![
            submitted(),
            ReferralEvent::ReferralInterviewing { at: day(3) },
        ])
        .when_async(hire_command(day(20)))
        .await
        .then_expect_events(vec![
            hired_at(day(20)),
            reached(hired_milestone(), true, start_date(), day(20)),
        ]);
}

#[tokio::test]
async fn record_hire_at_the_deadline_stays_eligible() {
    ReferralTest::with(services())
        .given(vec![submitted()])
        .when_async(hire_command(day(180)))
        .await
        .then_expect_events(vec![
            hired_at(day(180)),
            reached(hired_milestone(), true, start_date(), day(180)),
        ]);
}

#[tokio::test]
async fn record_hire_after_deadline_is_recorded_but_ineligible() {
    let late = day(180) + TimeDelta::seconds(1);

    ReferralTest::with(services())
        .given(vec![submitted()])
        .when_async(hire_command(late))
        .await
        .then_expect_events(vec![
            hired_at(late),
            ReferralEvent::EligibilityChanged {
                eligibility: Eligibility::ineligible(IneligibleReason::HireDeadlinePassed),
                at: late,
            },
            reached(hired_milestone(), false, start_date(), late),
        ]);
}

#[tokio::test]
async fn record_hire_of_ineligible_referral_keeps_the_first_reason() {
    let late = day(200);

    ReferralTest::with(services())
        .given(vec![submitted_ineligible(IneligibleReason::PriorContact)])
        .when_async(hire_command(late))
        .await
        .then_expect_events(vec![
            hired_at(late),
            reached(hired_milestone(), false, start_date(), late),
        ]);
}

#[tokio::test]
async fn record_hire_with_blank_job_title_is_rejected() {
    let result = ReferralTest::with(services())
        .given(vec![submitted()])
        .when_async(
            RecordHire {
                start_date: start_date(),
                job_title: "  ".to_owned(),
                client_name: "Northside Logistics".to_owned(),
                external_worker_id: None,
                at: day(20),
            }
            .into(),
        )
        .await
        .inspect_result();

    assert_eq!(invalid_field(result), "job_title");
}

#[tokio::test]
async fn record_hire_of_declined_referral_is_an_invalid_transition() {
    ReferralTest::with(services())
        .given(vec![submitted(), declined()])
        .when_async(hire_command(day(20)))
        .await
        .then_expect_error(invalid_transition(
            "declined",
            "record a hire for the referral",
        ));
}

#[tokio::test]
async fn record_hire_twice_is_an_invalid_transition() {
    ReferralTest::with(services())
        .given(hired_history())
        .when_async(hire_command(day(21)))
        .await
        .then_expect_error(invalid_transition(
            "hired",
            "record a hire for the referral",
        ));
}

#[tokio::test]
async fn record_hire_with_only_a_hire_milestone_completes_the_referral() {
    let terms = Terms::with_schedule(vec![hired_milestone()]);

    ReferralTest::with(services())
        .given(vec![submitted_under(terms)])
        .when_async(hire_command(day(20)))
        .await
        .then_expect_events(vec![
            hired_at(day(20)),
            reached(hired_milestone(), true, start_date(), day(20)),
            ReferralEvent::ReferralCompleted { at: day(20) },
        ]);
}

#[tokio::test]
async fn decline_from_interviewing_declines() {
    ReferralTest::with(services())
        .given(vec![
            submitted(),
            ReferralEvent::ReferralInterviewing { at: day(3) },
        ])
        .when_async(
            Decline {
                reason: text("Not available for night shifts"),
                at: day(5),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![declined()]);
}

#[tokio::test]
async fn decline_after_hire_is_an_invalid_transition() {
    ReferralTest::with(services())
        .given(hired_history())
        .when_async(
            Decline {
                reason: text("Changed our mind"),
                at: day(25),
            }
            .into(),
        )
        .await
        .then_expect_error(invalid_transition("hired", "decline the referral"));
}

#[tokio::test]
async fn withdraw_from_submitted_withdraws() {
    ReferralTest::with(services())
        .given(vec![submitted()])
        .when_async(
            Withdraw {
                reason: text("Candidate accepted another offer"),
                at: day(4),
            }
            .into(),
        )
        .await
        .then_expect_events(vec![ReferralEvent::ReferralWithdrawn {
            reason: text("Candidate accepted another offer"),
            at: day(4),
        }]);
}

#[tokio::test]
async fn withdraw_declined_referral_is_an_invalid_transition() {
    ReferralTest::with(services())
        .given(vec![submitted(), declined()])
        .when_async(
            Withdraw {
                reason: text("Candidate accepted another offer"),
                at: day(6),
            }
            .into(),
        )
        .await
        .then_expect_error(invalid_transition("declined", "withdraw the referral"));
}

#[tokio::test]
async fn expire_referral_at_the_deadline_expires() {
    ReferralTest::with(services())
        .given(vec![
            submitted(),
            ReferralEvent::ReferralContacted { at: day(1) },
        ])
        .when_async(ExpireReferral { at: day(180) }.into())
        .await
        .then_expect_events(vec![ReferralEvent::ReferralExpired { at: day(180) }]);
}

#[tokio::test]
async fn expire_referral_before_the_deadline_is_not_due_yet() {
    ReferralTest::with(services())
        .given(vec![submitted()])
        .when_async(ExpireReferral { at: day(179) }.into())
        .await
        .then_expect_error(DomainError::NotDueYet {
            action: "expire the referral",
            due: day(180),
        });
}

#[tokio::test]
async fn expire_hired_referral_is_an_invalid_transition() {
    ReferralTest::with(services())
        .given(hired_history())
        .when_async(ExpireReferral { at: day(200) }.into())
        .await
        .then_expect_error(invalid_transition("hired", "expire the referral"));
}
