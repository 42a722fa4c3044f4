//! A simulated source and poll loop for the phase-lock tests. Every head has a timestamp and the
//! instant (send-time ms) from which a poll reads it; a poll sent at `t` reads the newest head
//! answerable by `t`. The loop is the poller's: one poll, then the next at the planned time.

use super::*;

/// Timestamp of the genesis head (s).
pub const T0_S: u64 = 1_700_000_000;

/// One head of the simulated chain.
#[derive(Debug, Clone, Copy)]
pub struct SimHead {
    pub head: Head,
    pub answerable_ms: i64,
}

/// A simulated chain, oldest head first (answerable times never decrease).
#[derive(Debug, Clone)]
pub struct World {
    pub heads: Vec<SimHead>,
}

/// A deterministic value in `0..=max` for index `i` (the per-head noise).
pub fn noise(seed: u64, i: usize, max: i64) -> i64 {
    let mut z = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (((z ^ (z >> 31)) >> 1) as i64) % (max + 1)
}

impl World {
    /// A chain whose genesis (number 1000) is answerable from the start.
    pub fn new() -> Self {
        let genesis = Head { number: 1000, timestamp: T0_S };
        Self { heads: vec![SimHead { head: genesis, answerable_ms: i64::MIN }] }
    }

    /// `n` heads `block_s` apart, answerable `offset_ms` plus `noise(seed, i, noise_ms)` after
    /// their timestamps; the first one not before `pause_ms` after the previous head became
    /// answerable (a stall), and each at least 50 ms after the previous one (catching up).
    pub fn extend(
        mut self,
        block_s: u64,
        n: usize,
        offset_ms: i64,
        noise_ms: i64,
        seed: u64,
        pause_ms: i64,
    ) -> Self {
        for i in 0..n {
            let prev = *self.heads.last().expect("genesis");
            let head =
                Head { number: prev.head.number + 1, timestamp: prev.head.timestamp + block_s };
            let due = head.timestamp as i64 * 1000 + offset_ms + noise(seed, i, noise_ms);
            let floor = if i == 0 {
                prev.answerable_ms.saturating_add(pause_ms.max(1))
            } else {
                prev.answerable_ms.saturating_add(50)
            };
            self.heads.push(SimHead { head, answerable_ms: due.max(floor) });
        }
        self
    }

    /// The newest head answerable at `t`.
    pub fn read(&self, t: i64) -> SimHead {
        let i = self.heads.partition_point(|h| h.answerable_ms <= t);
        self.heads[i.saturating_sub(1)]
    }

    /// When the last head becomes answerable.
    pub fn end_ms(&self) -> i64 {
        self.heads.last().expect("genesis").answerable_ms
    }
}

/// One simulated poll and what the lock made of it.
#[derive(Debug, Clone, Copy)]
pub struct Rec {
    pub sent: i64,
    /// The head read (`None`: the poll failed).
    pub read: Option<SimHead>,
    /// The read head's number differs from the last head read.
    pub new_head: bool,
    /// Send time of the first poll that read the last head read (after this poll).
    pub first_read: i64,
    /// The lock's block time before this poll.
    pub block_before: Option<i64>,
    pub mode_before: Mode,
    /// The head the lock aimed at before this poll (locked only).
    pub aim_before: Option<u64>,
    pub plan: Plan,
    pub mode: Mode,
    pub block_after: Option<i64>,
}

/// Polls `world` from `start` until `end`; poll `i` sent at `t` fails when `fails(i, t)`.
pub fn run(
    world: &World,
    lock: &mut PhaseLock,
    start: i64,
    end: i64,
    mut fails: impl FnMut(usize, i64) -> bool,
) -> Vec<Rec> {
    let mut t = start;
    let mut out: Vec<Rec> = Vec::new();
    let mut last: Option<(u64, i64)> = None;
    while t < end {
        let read = (!fails(out.len(), t)).then(|| world.read(t));
        let new_head = read.is_some_and(|r| last.is_none_or(|(n, _)| n != r.head.number));
        if let (true, Some(r)) = (new_head, read) {
            last = Some((r.head.number, t));
        }
        let block_before = lock.block_ms;
        let mode_before = lock.mode();
        let aim_before = lock.aim.map(|a| a.number);
        let plan = lock.step(Poll { sent_ms: t as u64, head: read.map(|r| r.head) });
        out.push(Rec {
            sent: t,
            read,
            new_head,
            first_read: last.map_or(t, |(_, f)| f),
            block_before,
            mode_before,
            aim_before,
            plan,
            mode: lock.mode(),
            block_after: lock.block_ms,
        });
        let next = plan.at_ms as i64;
        assert!(next > t, "the next poll starts after this one: {plan:?} at {t}");
        t = next;
    }
    out
}

/// Milliseconds of `s` seconds after genesis.
pub fn at(s: u64) -> i64 {
    (T0_S + s) as i64 * 1000
}
