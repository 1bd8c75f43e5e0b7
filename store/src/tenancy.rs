//! Which agency each aggregate belongs to, for the store's tenant check.

use referrals_domain::agency::Agency;
use referrals_domain::ambassador::Ambassador;
use referrals_domain::ids::AgencyId;
use referrals_domain::payout::Payout;
use referrals_domain::privacy::PrivacyRecord;
use referrals_domain::program::Program;
use referrals_domain::referral::Referral;
use referrals_domain::user::User;

use crate::event_store::Tenanted;

macro_rules! tenanted_by_accessor {
    ($($aggregate:ty),+) => {$(
        impl Tenanted for $aggregate {
            fn agency_id(&self) -> Option<AgencyId> {
                <$aggregate>::agency_id(self)
            }
        }
    )+};
}

tenanted_by_accessor!(Agency, Program, Ambassador, Referral, Payout, PrivacyRecord);

/// A platform operator has no agency; its events are stored under `PLATFORM_AGENCY`.
impl Tenanted for User {
    fn agency_id(&self) -> Option<AgencyId> {
        self.tenant_id()
    }
}
