//! lightcl-bus (under construction).
