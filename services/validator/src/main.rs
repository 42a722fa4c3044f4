//! lightcl-validator binary.

fn main() {}
