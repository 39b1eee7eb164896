//! Structural validation of credentials (being written).

use crate::credentials::Credentials;
use crate::error::FieldViolation;

/// Every structural problem of `credentials`, each naming its field relative
/// to the kind's credentials message (`token`, `region`, ...).
pub fn credentials(credentials: &Credentials) -> Vec<FieldViolation> {
    let _ = credentials;
    Vec::new()
}
