//! Deadline-bound polling: the one way lightcl's tests, devnet and bench wait for something.
//!
//! Sleeping as synchronisation is not allowed in this repository: every wait polls a condition
//! every `poll_every` until it holds or the deadline passes. The condition may answer
//!
//! - `bool`: done when `true` ([`until`] then returns `Ok(())`);
//! - `Option<T>`: done with the value on `Some` (e.g. "the first log line that matches");
//! - `Result<T, E>`: done with the value on `Ok`; on timeout the last `Err` is kept in
//!   [`Timeout::last_error`] (e.g. "bind the port again", "create the stream").
//!
//! [`until`] polls from a plain thread; [`until_async`] from async code (a condition that is
//! not itself async is written `|| std::future::ready(cond)`). The deadline is either a
//! [`Duration`] from now or an [`Instant`] (several waits sharing one deadline).
//!
//! ```no_run
//! # async fn f(el: &lightcl_harness::mock_el::MockEl) {
//! use std::time::Duration;
//! use lightcl_harness::wait;
//!
//! wait::until_async(Duration::from_secs(5), wait::POLL, || {
//!     std::future::ready(el.safe().number == 25)
//! })
//! .await
//! .expect("safe head applied");
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// The poll interval most waits use.
pub const POLL: Duration = Duration::from_millis(20);

/// When a wait gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self(Instant::now() + budget)
    }

    /// The instant.
    pub fn at(self) -> Instant {
        self.0
    }

    /// True once the deadline has passed.
    pub fn passed(self) -> bool {
        Instant::now() >= self.0
    }

    /// Time left (zero once passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

impl From<Duration> for Deadline {
    fn from(budget: Duration) -> Self {
        Self::after(budget)
    }
}

impl From<Instant> for Deadline {
    fn from(at: Instant) -> Self {
        Self(at)
    }
}

impl From<tokio::time::Instant> for Deadline {
    fn from(at: tokio::time::Instant) -> Self {
        Self(at.into_std())
    }
}

/// The condition did not hold before the deadline. Its `Debug` is its `Display`, so
/// `wait::until(..).expect("what")` panics with "what: condition not reached within …".
#[derive(Clone, PartialEq, Eq)]
pub struct Timeout<E = Infallible> {
    /// How long the wait polled.
    pub waited: Duration,
    /// The last error of a `Result` condition (`None` for `bool` and `Option` conditions).
    pub last_error: Option<E>,
}

impl<E: fmt::Display> fmt::Display for Timeout<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "condition not reached within {:?}", self.waited)?;
        match &self.last_error {
            Some(e) => write!(f, " (last error: {e})"),
            None => Ok(()),
        }
    }
}

impl<E: fmt::Display> fmt::Debug for Timeout<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<E: fmt::Display> std::error::Error for Timeout<E> {}

/// What a condition answers: done (with a value) or not yet (with the error that kept it from
/// being done, if any). Implemented for `bool`, `Option<T>` and `Result<T, E>`.
pub trait Outcome {
    /// The value a finished wait returns.
    type Value;
    /// The error a `Result` condition reports while not done.
    type Error;
    /// `Ok(value)` when done, `Err(last error)` when not yet.
    fn into_done(self) -> Result<Self::Value, Option<Self::Error>>;
}

impl Outcome for bool {
    type Value = ();
    type Error = Infallible;
    fn into_done(self) -> Result<(), Option<Infallible>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    type Error = Infallible;
    fn into_done(self) -> Result<T, Option<Infallible>> {
        self.ok_or(None)
    }
}

impl<T, E> Outcome for Result<T, E> {
    type Value = T;
    type Error = E;
    fn into_done(self) -> Result<T, Option<E>> {
        self.map_err(Some)
    }
}

/// Polls `cond` every `poll_every` (blocking this thread between polls) until it is done or
/// `deadline` passes. `cond` is always checked at least once, and once more at the deadline.
pub fn until<O: Outcome>(
    deadline: impl Into<Deadline>,
    poll_every: Duration,
    mut cond: impl FnMut() -> O,
) -> Result<O::Value, Timeout<O::Error>> {
    let deadline = deadline.into();
    let started = Instant::now();
    loop {
        let last_error = match cond().into_done() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if deadline.passed() {
            return Err(Timeout { waited: started.elapsed(), last_error });
        }
        std::thread::sleep(poll_every.min(deadline.remaining()));
    }
}

/// Async variant of [`until`]: polls the future `cond` returns every `poll_every` (a tokio
/// sleep between polls) until it is done or `deadline` passes.
pub async fn until_async<O, F, Fut>(
    deadline: impl Into<Deadline>,
    poll_every: Duration,
    mut cond: F,
) -> Result<O::Value, Timeout<O::Error>>
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let deadline = deadline.into();
    let started = Instant::now();
    loop {
        let last_error = match cond().await.into_done() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if deadline.passed() {
            return Err(Timeout { waited: started.elapsed(), last_error });
        }
        tokio::time::sleep(poll_every.min(deadline.remaining())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn bool_option_and_result_conditions() {
        let n = Cell::new(0);
        let bump = || {
            n.set(n.get() + 1);
            n.get()
        };
        assert_eq!(until(Duration::from_secs(5), Duration::from_millis(1), || bump() >= 3), Ok(()));
        assert_eq!(
            until(Duration::from_secs(5), Duration::from_millis(1), || (bump() >= 5).then_some(7)),
            Ok(7)
        );
        let r = until(Duration::from_secs(5), Duration::from_millis(1), || {
            if bump() >= 8 { Ok("done") } else { Err("not yet") }
        });
        assert_eq!(r, Ok("done"));
    }

    #[test]
    fn times_out_with_the_last_error_after_a_final_check() {
        let started = Instant::now();
        let mut calls = 0;
        let r: Result<(), _> = until(Duration::from_millis(60), Duration::from_millis(20), || {
            calls += 1;
            Err::<(), _>(format!("attempt {calls}"))
        });
        let t = r.unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert!(t.waited >= Duration::from_millis(60));
        assert_eq!(t.last_error, Some(format!("attempt {calls}")));
        assert!(calls >= 3, "{calls}");
        assert!(t.to_string().starts_with("condition not reached within"), "{t}");
        assert!(t.to_string().ends_with(&format!("(last error: attempt {calls})")), "{t}");
    }

    #[test]
    fn a_passed_instant_still_checks_once() {
        let past = Instant::now();
        assert_eq!(until(past, POLL, || true), Ok(()));
        let t = until(past, POLL, || false).unwrap_err();
        assert_eq!(t.last_error, None);
        assert_eq!(t.to_string(), format!("condition not reached within {:?}", t.waited));
    }

    #[tokio::test]
    async fn async_conditions() {
        let n = std::sync::atomic::AtomicU32::new(0);
        let got = until_async(Duration::from_secs(5), Duration::from_millis(1), || async {
            let k = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (k >= 3).then_some(k)
        })
        .await;
        assert_eq!(got, Ok(3));
        let t = until_async(Duration::from_millis(30), Duration::from_millis(5), || {
            std::future::ready(false)
        })
        .await
        .unwrap_err();
        assert!(t.waited >= Duration::from_millis(30));
    }
}
