//! lightcl-engine-driver (under construction).
