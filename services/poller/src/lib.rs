//! lightcl-poller (under construction).
