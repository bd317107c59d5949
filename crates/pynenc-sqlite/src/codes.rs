//! The stable status codes of the schema: shared with the other SQL backend.

pub(crate) use pynenc_store::codes::{status_code, status_from_code, FAILED_CODE, FINAL_CODES};
