//! Audit records: every decision, with what, why and the inputs that led to it.

use crate::ids::{Epoch, Millis};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: Millis,
    pub epoch: Epoch,
    /// What was decided, e.g. `promote`, `fence`, `reseed db=sales`.
    pub what: String,
    /// Why, in a sentence.
    pub why: String,
    /// The facts that led to it (probe counts, arbiter view, positions), as `key=value` pairs.
    pub inputs: Vec<(String, String)>,
}
