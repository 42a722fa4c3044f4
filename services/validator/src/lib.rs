//! lightcl-validator (under construction).
