//! Supply-chain policy over index files: the rules a company sets (a release
//! cooldown, exemptions from it, a deny list), the filter that applies them
//! to one index file, and first-seen checksum pinning.
//!
//! Pure domain code: it knows no HTTP, no database and no settings layer.
//! Callers hand it small policy structs, bodies and the time; it hands back
//! the body to serve and what it held back, so the index cache can compute
//! the served body once per upstream change (and once per coming-of-age),
//! not per request.
//!
//! The order, when both apply: pinning first (on the upstream's body, so the
//! pins see every version the upstream offers), then the filter.

mod edit;
pub mod filter;
pub mod pins;
pub mod pubtime;
pub mod rules;

pub use filter::{filter, Filtered, Held, HeldReason};
pub use pins::{pin, PinnedLine, Pinning, RefusedRewrite};
pub use rules::{parse_min_release_age, CooldownMode, CrateRule, Policy};
