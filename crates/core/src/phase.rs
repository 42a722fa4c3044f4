//! Phase-locked polling (docs/architecture.md#phase-locked-polling): when the poller's next
//! `optimism_syncStatus` poll starts.
//!
//! On a fixed cadence of one poll per block, a new unsafe head is found anywhere from at once to
//! one interval after the source could first answer it. [`PhaseLock`] learns *when* in the block
//! the source starts answering new heads and schedules the next poll just after that instant.
//!
//! **What is learned**, from the `unsafe_l2` head (number, timestamp) each successful poll read:
//! - the block time `B` = timestamp delta × 1000 / number delta between successive heads (the
//!   number delta makes heads the poller never saw harmless);
//! - the answerable offset `a`: how many ms after its timestamp a head can first be read. A poll
//!   sent `x` ms after a head's timestamp that reads it proves `a ≤ x`; one that does not proves
//!   `a > x`. The bracket `(lo, hi]` keeps the tightest bounds: `hi` is the lower envelope of the
//!   offsets at which heads were first read, `lo` the upper envelope of the polls that missed
//!   them. Offsets use the poll's *send* time, so a steady network delay cancels out.
//!
//! **Modes** ([`Mode`]):
//! - `Fixed`: the fixed cadence (`sent + interval`), nothing learned: at start, after a failed
//!   poll, after a stall (no new head for more than [`STALL_BLOCKS`] block times, or `k + 1` when
//!   aimed polls are `k` blocks apart); it ends with the next new head, the anchor of `Learning`.
//! - `Learning`: still the fixed cadence; every new head read adds a sample `(lo, hi]`. After
//!   [`LOCK_AFTER`] samples in a row with one block time whose brackets intersect (within
//!   [`TOLERANCE_MS`] of noise), the mode is `Locked`. An inconsistent sample restarts the count.
//! - `Locked`: each aimed poll targets head `n + k` (`n` the last head read, `k = max(1,
//!   interval / B)`, the whole blocks that fit in the interval), sent at
//!   `ts(n) + k·B + hi + MARGIN_MS + spread`. While the bracket is wider than [`PRECISION_MS`] the aimed poll probes its
//!   midpoint instead (bisection: a read lowers `hi`, a miss raises `lo`). A poll that misses the
//!   aimed head gets **one** follow-up: at `hi + MARGIN_MS + spread` after a missed probe, or
//!   `max(MARGIN_MS, B / 8) + jitter` later when the head is late (a miss after `hi`; the bracket
//!   then moves to `(miss, read]`). When the follow-up misses too, the lock gives up to
//!   `Learning`. A poll due later than one interval is sent at the interval (a shorter interval
//!   than the block time adds those polls in between, as the fixed cadence would).
//!
//! **Fallback and relearning.** A failed poll or a stall → `Fixed`; a missed block (a head past
//! the aimed one, earlier than the bracket allows), a block-time change, a head number going
//! backwards, an unusable timestamp delta, a late head its follow-up missed, or a miss with no
//! credit left → `Learning`. Each drops the bracket, so locking again needs [`LOCK_AFTER`] fresh
//! consistent heads. A restart (or a pause of the poller: [`PhaseLock::reset`]) starts from
//! `Fixed` with nothing known.
//!
//! **Invariants** (property-tested):
//! - every planned start is after the poll it follows and at most `interval` after its start,
//!   so polls stay single-flight and no wait exceeds the interval;
//! - `Fixed` and `Learning` plan exactly `sent + interval` (today's cadence);
//! - `Locked` makes one aimed poll per `k` blocks plus at most one follow-up per aimed head (and
//!   the polls the interval cap forces); follow-ups are paid from a credit that starts at
//!   [`FOLLOW_UP_BURST`] and earns one per [`POLLS_PER_FOLLOW_UP`] other polls, so over any run
//!   `follow-ups ≤ FOLLOW_UP_BURST + other polls / POLLS_PER_FOLLOW_UP`; a probe is only made
//!   with a follow-up in credit, and a miss without credit gives up to the fixed cadence;
//! - `spread`, a random phase offset in `0..=MAX_JITTER_MS` drawn from the injected seed each
//!   time the lock is gained, keeps pollers of one source apart. It is constant while locked:
//!   aimed polls are exactly `k·B` apart, and `k·B` may equal the interval, so a per-poll jitter
//!   could only ever shrink.
//!
//! Pure: `(state, poll) -> (state, plan)` through [`PhaseLock::step`]; times are the caller's
//! wall-clock milliseconds (head timestamps are wall-clock seconds).

use std::time::Duration;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

/// Consistent heads (after the anchor) needed to lock.
pub const LOCK_AFTER: u32 = 3;
/// No new head for more than this many block times is a stall.
pub const STALL_BLOCKS: i64 = 2;
/// How long after the estimated answerable instant an aimed poll is sent.
pub const MARGIN_MS: i64 = 50;
/// Upper end of the random phase offset of aimed polls (and of the jitter of late follow-ups).
pub const MAX_JITTER_MS: u64 = 20;
/// Bracket width below which the lock stops probing.
pub const PRECISION_MS: i64 = 20;
/// How far learning samples may disagree (noise) and still count as consistent.
pub const TOLERANCE_MS: i64 = 50;
/// Follow-ups the credit holds at most (and starts with).
pub const FOLLOW_UP_BURST: u32 = 8;
/// Polls (other than follow-ups) that earn one follow-up.
pub const POLLS_PER_FOLLOW_UP: u32 = 16;
/// A poll sent up to this much before its aimed time still counts as the aimed poll (timer and
/// clock granularity).
const EARLY_SLACK_MS: i64 = 5;
/// Credit is counted in 1/POLLS_PER_FOLLOW_UP follow-ups.
const COST: u32 = POLLS_PER_FOLLOW_UP;
const CREDIT_CAP: u32 = FOLLOW_UP_BURST * POLLS_PER_FOLLOW_UP;

/// How the poller currently schedules its polls (exported as a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fixed cadence, no pattern known.
    Fixed,
    /// Fixed cadence while collecting consistent heads.
    Learning,
    /// Polls aimed just after the next head becomes answerable.
    Locked,
}

impl Mode {
    /// Stable label (`fixed`, `learning`, `locked`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Learning => "learning",
            Self::Locked => "locked",
        }
    }

    /// Gauge value: 0 fixed, 1 learning, 2 locked.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Fixed => 0,
            Self::Learning => 1,
            Self::Locked => 2,
        }
    }
}

/// The unsafe head a poll read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Block number.
    pub number: u64,
    /// Block timestamp (seconds).
    pub timestamp: u64,
}

/// One finished poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    /// Wall clock (ms) when the request was sent.
    pub sent_ms: u64,
    /// The unsafe head read, or `None` when the poll failed.
    pub head: Option<Head>,
}

/// Why the next poll starts when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The fixed cadence: one interval after the last poll started.
    Cadence,
    /// Just after the aimed head is expected to be answerable.
    Aimed,
    /// At the middle of the bracket (narrowing it).
    Probe,
    /// The aimed poll missed its head: one more try.
    FollowUp,
}

/// When to start the next poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Wall clock (ms): after the poll's `sent_ms`, at most one interval after it.
    pub at_ms: u64,
    /// Why.
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    head: Head,
    /// Send time of the first poll that read it.
    first_ms: i64,
}

/// `lo < a ≤ hi`, offsets in ms after the head's timestamp; `lo < hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bracket {
    lo: i64,
    hi: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Aim {
    number: u64,
    /// The aimed head's expected timestamp (ms).
    ts_ms: i64,
    /// Offset at or after which a poll counts as the aimed one.
    base: i64,
    /// Planned send time (before the interval cap).
    at_ms: i64,
    probe: bool,
    followed_up: bool,
    /// Offset of an aimed poll that missed at or after `hi` (the head is late).
    late: Option<i64>,
}

/// The phase-lock state of one poller over one source (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseLock {
    interval_ms: i64,
    rng: u64,
    credit: u32,
    mode: Mode,
    block_ms: Option<i64>,
    last: Option<Seen>,
    /// Send time of the previous successful poll since the last fallback (a lower bound for the
    /// next head).
    prev_sent: Option<i64>,
    samples: u32,
    bracket: Option<Bracket>,
    aim: Option<Aim>,
    /// The kind of the last plan (the poll the next step reports).
    pending: Kind,
    /// This lock's random phase offset (`0..=MAX_JITTER_MS`), drawn when it locks.
    spread: i64,
}

impl PhaseLock {
    /// A fresh state (`Fixed`) for `interval` (clamped to at least 1 ms), random offsets drawn
    /// from `seed`.
    pub fn new(interval: Duration, seed: u64) -> Self {
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX).max(1);
        Self {
            interval_ms,
            rng: seed,
            credit: CREDIT_CAP,
            mode: Mode::Fixed,
            block_ms: None,
            last: None,
            prev_sent: None,
            samples: 0,
            bracket: None,
            aim: None,
            pending: Kind::Cadence,
            spread: 0,
        }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The learned block time.
    pub fn block_time(&self) -> Option<Duration> {
        self.block_ms.and_then(|b| u64::try_from(b).ok()).map(Duration::from_millis)
    }

    /// The estimated answerable offset (`hi`, ms after a head's timestamp) while learning or
    /// locked.
    pub fn offset_ms(&self) -> Option<i64> {
        self.bracket.map(|b| b.hi)
    }

    /// Forgets everything learned (a restart; a pause): back to `Fixed`. The follow-up credit
    /// is kept.
    pub fn reset(&mut self) {
        self.fall_back();
        self.last = None;
        self.block_ms = None;
        self.pending = Kind::Cadence;
    }

    /// Feeds one finished poll; returns when to start the next.
    pub fn step(&mut self, poll: Poll) -> Plan {
        let sent = to_i64(poll.sent_ms);
        if self.pending != Kind::FollowUp {
            self.credit = (self.credit + 1).min(CREDIT_CAP);
        }
        let plan = match poll.head {
            None => {
                self.fall_back();
                self.cadence(sent)
            }
            Some(head) => self.observe(sent, head),
        };
        self.pending = plan.kind;
        plan
    }

    fn observe(&mut self, sent: i64, head: Head) -> Plan {
        let Some(last) = self.last else {
            self.anchor(sent, head);
            return self.cadence(sent);
        };
        if head.number == last.head.number {
            if self.block_ms.is_some_and(|b| sent.saturating_sub(last.first_ms) > self.stall_ms(b))
            {
                self.fall_back();
                return self.cadence(sent);
            }
            if self.mode == Mode::Locked {
                return self.missed(sent);
            }
            self.prev_sent = self.prev_sent.map(|_| sent);
            return self.cadence(sent);
        }
        if self.mode == Mode::Fixed || head.number < last.head.number {
            self.anchor(sent, head);
            return self.cadence(sent);
        }
        let Some(b) = block_time(last.head, head) else {
            self.block_ms = None;
            self.anchor(sent, head);
            return self.cadence(sent);
        };
        if self.block_ms.is_some_and(|known| known != b) {
            self.block_ms = Some(b);
            self.anchor(sent, head);
            return self.cadence(sent);
        }
        self.block_ms = Some(b);
        match self.mode {
            Mode::Locked => self.locked_head(sent, head),
            Mode::Learning | Mode::Fixed => self.learn(sent, head),
        }
    }

    /// Learning: a new head one or more blocks after the last (block time checked).
    fn learn(&mut self, sent: i64, head: Head) -> Plan {
        let ts = ts_ms(head);
        let sample = self
            .prev_sent
            .map(|p| Bracket { lo: p.saturating_sub(ts), hi: sent.saturating_sub(ts) });
        self.last = Some(Seen { head, first_ms: sent });
        self.prev_sent = Some(sent);
        let Some(s) = sample.filter(|s| s.lo < s.hi) else {
            // No poll before it in this run, or the clock went back: an anchor only.
            self.samples = 0;
            self.bracket = None;
            return self.cadence(sent);
        };
        let merged = match self.bracket {
            Some(br) if self.samples > 0 => {
                let (lo, hi) = (br.lo.max(s.lo), br.hi.min(s.hi));
                (lo.saturating_sub(hi) < TOLERANCE_MS)
                    .then(|| Bracket { lo: lo.min(hi.saturating_sub(1)), hi })
            }
            _ => None,
        };
        match merged {
            Some(br) => {
                self.bracket = Some(br);
                self.samples += 1;
            }
            None => {
                self.bracket = Some(s);
                self.samples = 1;
            }
        }
        if self.samples >= LOCK_AFTER {
            self.mode = Mode::Locked;
            self.spread = self.jitter();
            return self.plan_aim(sent);
        }
        self.cadence(sent)
    }

    /// Locked: a new head (block time checked).
    fn locked_head(&mut self, sent: i64, head: Head) -> Plan {
        let (Some(aim), Some(br)) = (self.aim, self.bracket) else {
            self.anchor(sent, head);
            return self.cadence(sent);
        };
        let u = sent.saturating_sub(ts_ms(head));
        if head.number > aim.number && (aim.late.is_some() || u <= br.lo) {
            // A block went by unseen, earlier than the bracket allows: the phase is wrong.
            self.anchor(sent, head);
            return self.cadence(sent);
        }
        self.last = Some(Seen { head, first_ms: sent });
        self.prev_sent = Some(sent);
        if head.number < aim.number {
            return self.missed(sent);
        }
        // The aimed head, or (a poll late in a still wide bracket) a later one: `a ≤ u` either way.
        self.bracket = Some(match aim.late {
            // The head came after the bracket: the bracket moves to (miss, read].
            Some(l) => Bracket { lo: l.min(u.saturating_sub(1)), hi: u },
            None => {
                let hi = br.hi.min(u);
                Bracket { lo: br.lo.min(hi.saturating_sub(1)), hi }
            }
        });
        self.plan_aim(sent)
    }

    /// Locked: the poll did not read the aimed head.
    fn missed(&mut self, sent: i64) -> Plan {
        let (Some(mut aim), Some(mut br), Some(b)) = (self.aim, self.bracket, self.block_ms) else {
            self.fall_back();
            return self.cadence(sent);
        };
        let x = sent.saturating_sub(aim.ts_ms);
        if x.saturating_add(EARLY_SLACK_MS) < aim.base {
            // Sent before the aimed time (the interval cap): only a lower bound.
            if x < br.hi {
                br.lo = br.lo.max(x);
                self.bracket = Some(br);
            }
            let kind = if aim.probe { Kind::Probe } else { Kind::Aimed };
            return Plan { at_ms: self.clamp(aim.at_ms, sent), kind };
        }
        if aim.followed_up || self.credit < COST {
            return self.give_up(sent);
        }
        self.credit -= COST;
        aim.followed_up = true;
        let at = if x < br.hi {
            // A probe missed: the head is due by `hi`.
            br.lo = br.lo.max(x);
            self.bracket = Some(br);
            let due = aim.ts_ms.saturating_add(br.hi).saturating_add(MARGIN_MS);
            due.saturating_add(self.spread).max(sent.saturating_add(MARGIN_MS))
        } else {
            aim.late = Some(x);
            sent.saturating_add((b / 8).max(MARGIN_MS)).saturating_add(self.jitter())
        };
        self.aim = Some(aim);
        Plan { at_ms: self.clamp(at, sent), kind: Kind::FollowUp }
    }

    /// The aimed head is late beyond its follow-up (or no credit is left): fixed cadence, relearn
    /// from the last head read.
    fn give_up(&mut self, sent: i64) -> Plan {
        self.mode = Mode::Learning;
        self.samples = 0;
        self.bracket = None;
        self.aim = None;
        self.prev_sent = Some(sent);
        self.cadence(sent)
    }

    /// Locked: aims at the next head (`k` blocks after the last one read).
    fn plan_aim(&mut self, sent: i64) -> Plan {
        let (Some(b), Some(last), Some(br)) = (self.block_ms, self.last, self.bracket) else {
            self.fall_back();
            return self.cadence(sent);
        };
        let k = self.blocks_per_aim(b);
        let width = br.hi.saturating_sub(br.lo);
        let probe = width > PRECISION_MS && self.credit >= COST;
        let base = if probe {
            br.lo.saturating_add(width / 2)
        } else {
            br.hi.saturating_add(MARGIN_MS).saturating_add(self.spread)
        };
        let ts = ts_ms(last.head).saturating_add(k.saturating_mul(b));
        let at = ts.saturating_add(base);
        self.aim = Some(Aim {
            number: last.head.number.saturating_add(u64::try_from(k).unwrap_or(1)),
            ts_ms: ts,
            base,
            at_ms: at,
            probe,
            followed_up: false,
            late: None,
        });
        let kind = if probe { Kind::Probe } else { Kind::Aimed };
        Plan { at_ms: self.clamp(at, sent), kind }
    }

    /// A new pattern starts at `head` (learning, nothing sampled yet).
    fn anchor(&mut self, sent: i64, head: Head) {
        self.fall_back();
        self.mode = Mode::Learning;
        self.last = Some(Seen { head, first_ms: sent });
        self.prev_sent = Some(sent);
    }

    /// The pattern is broken: fixed cadence until a new head.
    fn fall_back(&mut self) {
        self.mode = Mode::Fixed;
        self.samples = 0;
        self.bracket = None;
        self.aim = None;
        self.prev_sent = None;
    }

    /// `k`: blocks between aimed polls, as many whole blocks as fit in the interval (at least 1).
    fn blocks_per_aim(&self, b: i64) -> i64 {
        (self.interval_ms / b.max(1)).max(1)
    }

    /// No new head for longer than this is a stall: [`STALL_BLOCKS`] block times, or `k + 1`
    /// when aimed polls are `k` blocks apart.
    fn stall_ms(&self, b: i64) -> i64 {
        STALL_BLOCKS.max(self.blocks_per_aim(b) + 1).saturating_mul(b)
    }

    fn cadence(&self, sent: i64) -> Plan {
        Plan { at_ms: to_u64(sent.saturating_add(self.interval_ms)), kind: Kind::Cadence }
    }

    /// `at`, but after `sent` and at most one interval after it.
    fn clamp(&self, at: i64, sent: i64) -> u64 {
        let earliest = sent.saturating_add(MARGIN_MS.min(self.interval_ms));
        to_u64(at.clamp(earliest, sent.saturating_add(self.interval_ms)))
    }

    /// Uniform in `0..=MAX_JITTER_MS` (splitmix64).
    fn jitter(&mut self) -> i64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        to_i64(z % (MAX_JITTER_MS + 1))
    }
}

/// The block time between two heads (`later` newer), when it is a whole positive number of ms.
fn block_time(earlier: Head, later: Head) -> Option<i64> {
    let dn = i64::try_from(later.number.checked_sub(earlier.number)?).ok()?;
    let dt = ts_ms(later).checked_sub(ts_ms(earlier))?;
    (dn > 0 && dt > 0 && dt % dn == 0).then(|| dt / dn)
}

fn ts_ms(head: Head) -> i64 {
    to_i64(head.timestamp).saturating_mul(1000)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
