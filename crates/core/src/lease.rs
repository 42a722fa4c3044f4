//! The single-writer lease of an execution client (docs/architecture.md#single-writer): which
//! engine-driver may send forkchoice updates to one EL, decided without trusting any clock but
//! the deciding driver's own monotonic one.
//!
//! The lease is one key on the bus (a compare-and-set store: every write names the revision it
//! replaces). Its value names the holder; the holder rewrites it every [`LeaseConfig::renew_ms`].
//!
//! - **Taking over.** A driver that does not hold the lease may take it only when the key is
//!   absent, or when it has watched the key stay at one revision for [`LeaseConfig::ttl_ms`] on
//!   its own clock (the holder stopped renewing). The write replaces exactly that revision, so of
//!   several contenders one wins.
//! - **Fencing.** The holder may send only until `sent + ttl - margin`, where `sent` is when it
//!   *sent* its last successful write (before the store saw it, so before any contender started
//!   counting). A contender takes over no earlier than `seen + ttl`, with `seen` after the
//!   store's write: the holder's window closes before another's can open, whatever the wall
//!   clocks say, as long as both clocks run at about the same rate (the margin absorbs drift).
//!   A holder that is paused, partitioned or slow to renew therefore stops sending by itself,
//!   even with an update already planned.
//!
//! Pure: `(state, input) -> state, action`; times are the caller's monotonic milliseconds.

use std::collections::VecDeque;

use alloy_primitives::B256;

#[cfg(test)]
mod proptests;

/// How many INVALID heads the lease value carries at most ([`InvalidHeads`]).
pub const MAX_INVALID_HEADS: usize = 64;

/// The heads an EL answered INVALID, as its lease value carries them: distinct, never zero,
/// oldest first, the newest [`MAX_INVALID_HEADS`] (an older one is dropped when a new one
/// arrives). EL-scoped: every driver of the EL absorbs the list it reads from the key, and the
/// holder writes the list with every renewal (docs/architecture.md#single-writer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvalidHeads {
    heads: VecDeque<B256>,
}

impl InvalidHeads {
    /// Adds `head` as the newest; false (nothing changes) when it is zero or already known.
    pub fn insert(&mut self, head: B256) -> bool {
        if head == B256::ZERO || self.heads.contains(&head) {
            return false;
        }
        self.heads.push_back(head);
        while self.heads.len() > MAX_INVALID_HEADS {
            self.heads.pop_front();
        }
        true
    }

    /// True when `head` is in the list.
    pub fn contains(&self, head: &B256) -> bool {
        self.heads.contains(head)
    }

    /// The heads, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &B256> {
        self.heads.iter()
    }

    /// How many heads it holds (at most [`MAX_INVALID_HEADS`]).
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }
}

/// Lease timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// A key left at one revision this long (ms) is expired.
    pub ttl_ms: u64,
    /// The holder rewrites the key this often (ms); well below `ttl_ms`.
    pub renew_ms: u64,
    /// The holder stops sending this long (ms) before its lease could expire.
    pub margin_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self { ttl_ms: 6_000, renew_ms: 1_500, margin_ms: 1_000 }
    }
}

/// What the store holds for the lease key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// No key (never written, or deleted).
    Absent,
    /// The key at `revision`, held by `holder`.
    Held {
        /// The store's revision of the key.
        revision: u64,
        /// The holding driver's instance id.
        holder: String,
    },
}

/// A write the driver must attempt (compare-and-set on `expect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    /// The revision the write replaces (0: the key must be absent).
    pub expect: u64,
}

/// This driver's view of the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    me: String,
    cfg: LeaseConfig,
    /// The key as last read or written.
    stored: Stored,
    /// Monotonic ms at which `stored` was first seen at its current revision.
    seen_at: u64,
    /// Monotonic ms at which our last successful write was sent (we hold the lease then).
    sent_at: Option<u64>,
    /// A write in flight: its send time.
    pending: Option<u64>,
}

impl Lease {
    /// A driver `me` that has not read the key yet (holds nothing).
    pub fn new(me: impl Into<String>, cfg: LeaseConfig, now: u64) -> Self {
        Self {
            me: me.into(),
            cfg,
            stored: Stored::Absent,
            seen_at: now,
            sent_at: None,
            pending: None,
        }
    }

    /// This driver's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The key as last seen.
    pub fn stored(&self) -> &Stored {
        &self.stored
    }

    /// True while this driver may send forkchoice updates at `now`.
    pub fn may_send(&self, now: u64) -> bool {
        self.holds()
            && self.sent_at.is_some_and(|s| {
                now < s.saturating_add(self.cfg.ttl_ms).saturating_sub(self.cfg.margin_ms)
            })
    }

    /// When (monotonic ms) this driver's sending window closes: [`Lease::may_send`] is true
    /// exactly while `now` is below it. `None` while it holds no window.
    pub fn send_until(&self) -> Option<u64> {
        if !self.holds() {
            return None;
        }
        self.sent_at.map(|s| s.saturating_add(self.cfg.ttl_ms).saturating_sub(self.cfg.margin_ms))
    }

    /// True when the key last seen names this driver.
    pub fn holds(&self) -> bool {
        matches!(&self.stored, Stored::Held { holder, .. } if *holder == self.me)
    }

    /// The current holder, if any.
    pub fn holder(&self) -> Option<&str> {
        match &self.stored {
            Stored::Held { holder, .. } => Some(holder),
            Stored::Absent => None,
        }
    }

    /// The key as read from the store (a watch or a get) at `now`.
    pub fn observe(&mut self, stored: Stored, now: u64) {
        if stored != self.stored {
            if let Stored::Held { holder, .. } = &stored
                && *holder != self.me
            {
                // Someone else holds it: our window (if any) is over.
                self.sent_at = None;
            }
            self.stored = stored;
            self.seen_at = now;
        }
    }

    /// The write to attempt at `now`, if any: renew when holding and due, take over when the
    /// key is absent or expired. Never two writes in flight.
    pub fn tick(&mut self, now: u64) -> Option<Write> {
        if self.pending.is_some() {
            return None;
        }
        let write = match &self.stored {
            Stored::Absent => Some(Write { expect: 0 }),
            Stored::Held { revision, .. } if self.holds() => {
                let due = self.sent_at.is_none_or(|s| now >= s.saturating_add(self.cfg.renew_ms));
                due.then_some(Write { expect: *revision })
            }
            Stored::Held { revision, .. } => (now.saturating_sub(self.seen_at) >= self.cfg.ttl_ms)
                .then_some(Write { expect: *revision }),
        };
        if write.is_some() {
            self.pending = Some(now);
        }
        write
    }

    /// A renewal at `now` ahead of schedule (the value to store changed, e.g. a new INVALID
    /// head): the write when this driver holds the key and no write is in flight, else `None`.
    /// Renewing early is always safe: the window it opens counts from this send time.
    pub fn renew_now(&mut self, now: u64) -> Option<Write> {
        if self.pending.is_some() || !self.holds() {
            return None;
        }
        let Stored::Held { revision, .. } = &self.stored else { return None };
        let write = Write { expect: *revision };
        self.pending = Some(now);
        Some(write)
    }

    /// The store accepted the pending write as `revision` (at `now`).
    pub fn written(&mut self, revision: u64, now: u64) {
        let Some(sent) = self.pending.take() else { return };
        self.stored = Stored::Held { revision, holder: self.me.clone() };
        self.seen_at = now;
        self.sent_at = Some(sent);
    }

    /// The pending write failed: another revision is there (`current`, when the store said
    /// which), or the store could not be reached. Either way this driver's window is not
    /// extended; a compare-and-set loss means someone else wrote.
    pub fn write_failed(&mut self, current: Option<Stored>, now: u64) {
        self.pending = None;
        if let Some(c) = current {
            self.observe(c, now);
        }
    }
}
