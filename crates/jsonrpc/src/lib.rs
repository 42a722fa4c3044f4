//! lightcl-jsonrpc (under construction).
