//! lightcl-telemetry (under construction).
