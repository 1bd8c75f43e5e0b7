//! The program aggregate: a referral program's name, currency and versioned terms,
//! and whether it still accepts referrals.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{AgencyId, ProgramId};
use crate::referral::ProgramSnapshot;
use crate::terms::Terms;
use crate::values::{parse_label, Currency};

const AGGREGATE: &str = "program";

/// Maximum length of a program name in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// Creates a program with version 1 of its terms.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateProgram {
    /// Id of the new program.
    pub program_id: ProgramId,
    /// Agency that runs the program.
    pub agency_id: AgencyId,
    /// Display name, 1 to 200 characters on one line.
    pub name: String,
    /// Currency of every bonus amount in the terms.
    pub currency: Currency,
    /// Initial terms, validated with [`Terms::validate`].
    pub terms: Terms,
    /// When the program is created.
    pub at: DateTime<Utc>,
}

/// Replaces the terms with a new version. Referrals submitted earlier keep theirs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviseTerms {
    /// The new terms, validated with [`Terms::validate`].
    pub terms: Terms,
    /// When the revision takes effect.
    pub at: DateTime<Utc>,
}

/// Closes the program to new referrals and revisions.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseProgram {
    /// When the program closes.
    pub at: DateTime<Utc>,
}

/// Commands of the program aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgramCommand {
    /// See [`CreateProgram`].
    CreateProgram(CreateProgram),
    /// See [`ReviseTerms`].
    ReviseTerms(ReviseTerms),
    /// See [`CloseProgram`].
    CloseProgram(CloseProgram),
}

/// Events of the program aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProgramEvent {
    /// The program was created with version 1 of its terms.
    ProgramCreated {
        /// Id of the program.
        program_id: ProgramId,
        /// Agency that runs it.
        agency_id: AgencyId,
        /// Trimmed display name.
        name: String,
        /// Currency of the bonus amounts.
        currency: Currency,
        /// Initial terms.
        terms: Terms,
        /// Always 1.
        terms_version: u32,
        /// When it was created.
        at: DateTime<Utc>,
    },
    /// New terms replaced the previous version.
    ProgramTermsRevised {
        /// Previous version plus one.
        terms_version: u32,
        /// The new terms.
        terms: Terms,
        /// When the revision took effect.
        at: DateTime<Utc>,
    },
    /// The program stopped accepting referrals.
    ProgramClosed {
        /// When it closed.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ProgramEvent {
    fn event_type(&self) -> String {
        let name = match self {
            ProgramEvent::ProgramCreated { .. } => "ProgramCreated",
            ProgramEvent::ProgramTermsRevised { .. } => "ProgramTermsRevised",
            ProgramEvent::ProgramClosed { .. } => "ProgramClosed",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ProgramState {
    program_id: ProgramId,
    agency_id: AgencyId,
    name: String,
    currency: Currency,
    terms: Terms,
    terms_version: u32,
    open: bool,
}

/// A referral program. Empty (`Default`) until `ProgramCreated` is applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Program {
    state: Option<ProgramState>,
}

impl Program {
    /// Returns the id of the program, or `None` when it does not exist.
    #[must_use]
    pub fn program_id(&self) -> Option<ProgramId> {
        self.state.as_ref().map(|s| s.program_id)
    }

    /// Returns the agency that runs the program.
    #[must_use]
    pub fn agency_id(&self) -> Option<AgencyId> {
        self.state.as_ref().map(|s| s.agency_id)
    }

    /// Returns the display name.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.state.as_ref().map(|s| s.name.as_str())
    }

    /// Returns the currency of the bonus amounts.
    #[must_use]
    pub fn currency(&self) -> Option<Currency> {
        self.state.as_ref().map(|s| s.currency)
    }

    /// Returns the terms currently in force.
    #[must_use]
    pub fn terms(&self) -> Option<&Terms> {
        self.state.as_ref().map(|s| &s.terms)
    }

    /// Returns the version of the terms currently in force, starting at 1.
    #[must_use]
    pub fn terms_version(&self) -> Option<u32> {
        self.state.as_ref().map(|s| s.terms_version)
    }

    /// Returns whether the program exists and accepts referrals.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.open)
    }

    /// Builds the snapshot of terms and status that a new referral copies, or
    /// returns `None` when the program does not exist.
    #[must_use]
    pub fn snapshot(&self) -> Option<ProgramSnapshot> {
        self.state.as_ref().map(|s| ProgramSnapshot {
            program_id: s.program_id,
            terms_version: s.terms_version,
            terms: s.terms.clone(),
            currency: s.currency,
            open: s.open,
        })
    }

    fn decide(&self, command: ProgramCommand) -> Result<Vec<ProgramEvent>, DomainError> {
        let create = match command {
            ProgramCommand::CreateProgram(create) => create,
            ProgramCommand::ReviseTerms(revise) => return self.revise_terms(revise),
            ProgramCommand::CloseProgram(close) => return self.close(close),
        };
        if self.state.is_some() {
            return Err(DomainError::AlreadyExists {
                aggregate: AGGREGATE,
            });
        }
        let name = parse_label("name", &create.name, MAX_NAME_CHARS)?;
        create.terms.validate()?;

        Ok(vec![ProgramEvent::ProgramCreated {
            program_id: create.program_id,
            agency_id: create.agency_id,
            name,
            currency: create.currency,
            terms: create.terms,
            terms_version: 1,
            at: create.at,
        }])
    }

    fn revise_terms(&self, revise: ReviseTerms) -> Result<Vec<ProgramEvent>, DomainError> {
        let state = self.existing()?;
        if !state.open {
            return Err(DomainError::ProgramClosed);
        }
        revise.terms.validate()?;

        Ok(vec![ProgramEvent::ProgramTermsRevised {
            terms_version: state.terms_version + 1,
            terms: revise.terms,
            at: revise.at,
        }])
    }

    fn close(&self, close: CloseProgram) -> Result<Vec<ProgramEvent>, DomainError> {
        let state = self.existing()?;
        // Closing twice changes nothing, so a retried request succeeds quietly.
        if !state.open {
            return Ok(vec![]);
        }
        Ok(vec![ProgramEvent::ProgramClosed { at: close.at }])
    }

    fn existing(&self) -> Result<&ProgramState, DomainError> {
        self.state.as_ref().ok_or(DomainError::NotFound {
            aggregate: AGGREGATE,
        })
    }
}

impl Aggregate for Program {
    const TYPE: &'static str = AGGREGATE;
    type Command = ProgramCommand;
    type Event = ProgramEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProgramEvent::ProgramCreated {
                program_id,
                agency_id,
                name,
                currency,
                terms,
                terms_version,
                at: _,
            } => {
                self.state = Some(ProgramState {
                    program_id,
                    agency_id,
                    name,
                    currency,
                    terms,
                    terms_version,
                    open: true,
                });
            }
            ProgramEvent::ProgramTermsRevised {
                terms_version,
                terms,
                at: _,
            } => {
                if let Some(state) = self.state.as_mut() {
                    state.terms = terms;
                    state.terms_version = terms_version;
                }
            }
            ProgramEvent::ProgramClosed { at: _ } => {
                if let Some(state) = self.state.as_mut() {
                    state.open = false;
                }
            }
        }
    }
}

impl From<CreateProgram> for ProgramCommand {
    fn from(command: CreateProgram) -> Self {
        ProgramCommand::CreateProgram(command)
    }
}

impl From<ReviseTerms> for ProgramCommand {
    fn from(command: ReviseTerms) -> Self {
        ProgramCommand::ReviseTerms(command)
    }
}

impl From<CloseProgram> for ProgramCommand {
    fn from(command: CloseProgram) -> Self {
        ProgramCommand::CloseProgram(command)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::terms::{Milestone, Recipient, Trigger};
    use crate::values::Hours;

    type ProgramTest = TestFramework<Program>;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, day, 9, 0, 0).unwrap()
    }

    fn terms(amount: i64) -> Terms {
        Terms::with_schedule(vec![Milestone {
            trigger: Trigger::HoursWorked,
            threshold: Hours::whole(160),
            amount,
            recipient: Recipient::Ambassador,
        }])
    }

    fn ids() -> (ProgramId, AgencyId) {
        (
            ProgramId(uuid::uuid!("0195a0b0-0000-7000-8000-000000000001")),
            AgencyId(uuid::uuid!("0195a0b0-0000-7000-8000-0000000000a1")),
        )
    }

    fn create_command(name: &str, terms: Terms) -> ProgramCommand {
        let (program_id, agency_id) = ids();
        CreateProgram {
            program_id,
            agency_id,
            name: name.to_owned(),
            currency: Currency::USD,
            terms,
            at: at(1),
        }
        .into()
    }

    fn created() -> ProgramEvent {
        let (program_id, agency_id) = ids();
        ProgramEvent::ProgramCreated {
            program_id,
            agency_id,
            name: "Warehouse referrals".to_owned(),
            currency: Currency::USD,
            terms: terms(50_000),
            terms_version: 1,
            at: at(1),
        }
    }

    fn closed() -> ProgramEvent {
        ProgramEvent::ProgramClosed { at: at(2) }
    }

    #[tokio::test]
    async fn create_program_with_valid_terms_creates_version_one() {
        ProgramTest::with(())
            .given_no_previous_events()
            .when_async(create_command("  Warehouse referrals ", terms(50_000)))
            .await
            .then_expect_events(vec![created()]);
    }

    #[tokio::test]
    async fn create_program_with_invalid_terms_names_the_field() {
        let error = ProgramTest::with(())
            .given_no_previous_events()
            .when_async(create_command("Warehouse referrals", terms(0)))
            .await
            .inspect_result()
            .unwrap_err();

        let DomainError::Invalid(value_error) = error else {
            panic!("expected an invalid value, got {error:?}");
        };
        assert_eq!(value_error.field, "terms.bonus_schedule[0].amount");
    }

    #[tokio::test]
    async fn create_program_with_control_characters_in_name_is_rejected() {
        let error = ProgramTest::with(())
            .given_no_previous_events()
            .when_async(create_command("Warehouse\0referrals", terms(50_000)))
            .await
            .inspect_result()
            .unwrap_err();

        assert_eq!(error.code(), "invalid_value");
    }

    #[tokio::test]
    async fn create_program_twice_is_rejected() {
        ProgramTest::with(())
            .given(vec![created()])
            .when_async(create_command("Warehouse referrals", terms(50_000)))
            .await
            .then_expect_error(DomainError::AlreadyExists {
                aggregate: "program",
            });
    }

    #[tokio::test]
    async fn revise_terms_increments_the_version() {
        ProgramTest::with(())
            .given(vec![created()])
            .when_async(
                ReviseTerms {
                    terms: terms(75_000),
                    at: at(3),
                }
                .into(),
            )
            .await
            .then_expect_events(vec![ProgramEvent::ProgramTermsRevised {
                terms_version: 2,
                terms: terms(75_000),
                at: at(3),
            }]);
    }

    #[tokio::test]
    async fn revise_terms_with_invalid_terms_is_rejected() {
        let error = ProgramTest::with(())
            .given(vec![created()])
            .when_async(
                ReviseTerms {
                    terms: Terms::with_schedule(vec![]),
                    at: at(3),
                }
                .into(),
            )
            .await
            .inspect_result()
            .unwrap_err();

        assert_eq!(error.code(), "invalid_value");
    }

    #[tokio::test]
    async fn revise_terms_of_closed_program_is_rejected() {
        ProgramTest::with(())
            .given(vec![created(), closed()])
            .when_async(
                ReviseTerms {
                    terms: terms(75_000),
                    at: at(3),
                }
                .into(),
            )
            .await
            .then_expect_error(DomainError::ProgramClosed);
    }

    #[tokio::test]
    async fn revise_terms_of_unknown_program_is_not_found() {
        ProgramTest::with(())
            .given_no_previous_events()
            .when_async(
                ReviseTerms {
                    terms: terms(75_000),
                    at: at(3),
                }
                .into(),
            )
            .await
            .then_expect_error(DomainError::NotFound {
                aggregate: "program",
            });
    }

    #[tokio::test]
    async fn close_program_closes_it() {
        ProgramTest::with(())
            .given(vec![created()])
            .when_async(CloseProgram { at: at(2) }.into())
            .await
            .then_expect_events(vec![closed()]);
    }

    #[tokio::test]
    async fn close_program_again_changes_nothing() {
        ProgramTest::with(())
            .given(vec![created(), closed()])
            .when_async(CloseProgram { at: at(4) }.into())
            .await
            .then_expect_events(vec![]);
    }

    #[test]
    fn snapshot_carries_the_current_terms_version() {
        let mut program = Program::default();
        program.apply(created());
        program.apply(ProgramEvent::ProgramTermsRevised {
            terms_version: 2,
            terms: terms(75_000),
            at: at(3),
        });

        let snapshot = program.snapshot().unwrap();

        assert_eq!(snapshot.terms_version, 2);
        assert_eq!(snapshot.terms, terms(75_000));
        assert!(snapshot.open);
    }

    #[test]
    fn event_types_are_fixed_names() {
        assert_eq!(created().event_type(), "ProgramCreated");
        assert_eq!(closed().event_type(), "ProgramClosed");
        assert_eq!(created().event_version(), "1.0");
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut program = Program::default();
        program.apply(created());

        let json = serde_json::to_string(&program).unwrap();

        assert_eq!(serde_json::from_str::<Program>(&json).unwrap(), program);
    }
}
