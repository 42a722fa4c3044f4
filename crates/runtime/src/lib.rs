//! lightcl-runtime (under construction).
