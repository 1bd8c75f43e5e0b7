//! Given/when/then tests of the payout aggregate.
