//! Typed identifiers of agencies, programs, ambassadors, referrals, payouts and users.
//!
//! Each id wraps a UUID so that, for example, a referral id cannot be passed where a
//! payout id is expected. New ids are UUID v7, whose time-ordered prefix keeps database
//! indexes compact. Payout ids are UUID v5 derived from the milestone they pay, see
//! [`PayoutId::for_milestone`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::terms::{MilestoneKey, Recipient};

macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        // A `Default` that mints a random id would hide where ids are created.
        #[allow(clippy::new_without_default)]
        impl $name {
            /// Creates a new time-ordered id (UUID v7).
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

define_id!(
    /// Identifier of an agency, the tenant that owns all other records.
    AgencyId
);
define_id!(
    /// Identifier of a referral program.
    ProgramId
);
define_id!(
    /// Identifier of an ambassador, the person who refers candidates.
    AmbassadorId
);
define_id!(
    /// Identifier of a referral of one candidate by one ambassador.
    ReferralId
);
define_id!(
    /// Identifier of a payout. Milestone payouts get theirs from [`PayoutId::for_milestone`].
    PayoutId
);
define_id!(
    /// Identifier of a platform user account (recruiter, approver and so on).
    UserId
);

/// The agency id under which platform records are stored: the events and data keys of
/// platform operators, and the key of the e-mail index that login searches before the
/// user's agency is known.
///
/// The events table requires an agency on every event, and no real agency has the nil
/// UUID because new agency ids are UUID v7.
pub const PLATFORM_AGENCY: AgencyId = AgencyId(Uuid::nil());

/// UUID v5 namespace of payout ids.
///
/// Changing it would give every milestone a new payout id, and payouts already
/// requested under the old ids could then be requested and paid a second time.
pub const PAYOUT_ID_NAMESPACE: Uuid = uuid::uuid!("eed44ad4-6959-4464-8b53-b3de97207710");

impl PayoutId {
    /// Derives the payout id of one referral milestone for one recipient.
    ///
    /// The id is a UUID v5 of `<referral id>/<milestone key>/<recipient>` under
    /// [`PAYOUT_ID_NAMESPACE`]. Every process that requests this payout computes the
    /// same id, so the event store's uniqueness on the aggregate id keeps a milestone
    /// from being paid twice. The name format is stored implicitly in every payout id
    /// and must never change.
    #[must_use]
    pub fn for_milestone(
        referral: ReferralId,
        milestone: &MilestoneKey,
        recipient: Recipient,
    ) -> PayoutId {
        let name = format!(
            "{}/{}/{}",
            referral.0,
            milestone.as_str(),
            recipient.as_str()
        );
        PayoutId(Uuid::new_v5(&PAYOUT_ID_NAMESPACE, name.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terms::{Milestone, Trigger};
    use crate::values::Hours;

    fn hours_milestone(recipient: Recipient) -> MilestoneKey {
        Milestone {
            trigger: Trigger::HoursWorked,
            threshold: Hours::whole(160),
            amount: 50_000,
            recipient,
        }
        .key()
    }

    #[test]
    fn new_ids_are_version_7() {
        assert_eq!(ReferralId::new().0.get_version_num(), 7);
    }

    #[test]
    fn payout_id_is_stable_for_one_milestone() {
        let referral = ReferralId(uuid::uuid!("01890a5d-ac96-774b-bcce-b302099a8057"));
        let key = hours_milestone(Recipient::Ambassador);

        let first = PayoutId::for_milestone(referral, &key, Recipient::Ambassador);
        let second = PayoutId::for_milestone(referral, &key, Recipient::Ambassador);

        assert_eq!(first, second);
        assert_eq!(first.0.get_version_num(), 5);
    }

    #[test]
    fn payout_id_pins_the_derivation() {
        // Pins the name format and namespace: if this value changes, payouts requested
        // before the change could be requested again under a new id.
        let referral = ReferralId(uuid::uuid!("01890a5d-ac96-774b-bcce-b302099a8057"));
        let key = hours_milestone(Recipient::Ambassador);

        let id = PayoutId::for_milestone(referral, &key, Recipient::Ambassador);
        let expected = Uuid::new_v5(
            &PAYOUT_ID_NAMESPACE,
            b"01890a5d-ac96-774b-bcce-b302099a8057/hours_worked:160.00:ambassador/ambassador",
        );

        assert_eq!(id.0, expected);
    }

    #[test]
    fn payout_id_differs_by_referral_milestone_and_recipient() {
        let referral = ReferralId::new();
        let other_referral = ReferralId::new();
        let ambassador_key = hours_milestone(Recipient::Ambassador);
        let candidate_key = hours_milestone(Recipient::Candidate);

        let base = PayoutId::for_milestone(referral, &ambassador_key, Recipient::Ambassador);

        assert_ne!(
            base,
            PayoutId::for_milestone(other_referral, &ambassador_key, Recipient::Ambassador)
        );
        assert_ne!(
            base,
            PayoutId::for_milestone(referral, &candidate_key, Recipient::Candidate)
        );
        assert_ne!(
            base,
            PayoutId::for_milestone(referral, &ambassador_key, Recipient::Candidate)
        );
    }

    #[test]
    fn id_serializes_as_a_bare_uuid_string() {
        let id = AgencyId(uuid::uuid!("01890a5d-ac96-774b-bcce-b302099a8057"));

        let json = serde_json::to_string(&id).unwrap();

        assert_eq!(json, "\"01890a5d-ac96-774b-bcce-b302099a8057\"");
        assert_eq!(serde_json::from_str::<AgencyId>(&json).unwrap(), id);
    }

    #[test]
    fn id_parses_from_its_display_text() {
        let id = UserId::new();

        assert_eq!(id.to_string().parse::<UserId>().unwrap(), id);
    }
}
