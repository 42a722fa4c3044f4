//! lightcl-poller binary.

fn main() {}
