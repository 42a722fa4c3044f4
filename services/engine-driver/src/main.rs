//! lightcl-engine-driver binary.

fn main() {}
