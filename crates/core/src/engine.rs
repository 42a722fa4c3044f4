//! Engine-driver decisions (DESIGN §6). Filled in by the planner work.
