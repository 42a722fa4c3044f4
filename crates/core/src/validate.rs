//! Validator decisions (DESIGN §5). Filled in by the validator-rules work.
