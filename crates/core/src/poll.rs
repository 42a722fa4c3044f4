//! Poller decisions (DESIGN §4): when a polled status is published. Filled in by the poller work.
