//! End-to-end scenarios (under construction).
