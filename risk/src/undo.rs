//! The undo log behind the `void` request (`docs/formats/risk-protocol.md`, "Void").
//!
//! A client that timed out on a batch cannot know whether the server applied it. On its next
//! contact it asks the server to *void* the batch: the server undoes the batch's effects if,
//! and only if, it applied it and nothing has changed the state since, so that the state
//! equals that of a server that never saw the batch (and so that of a server rebuilt from the
//! engine's journal, where those orders are `risk-timeout` rejections).
//!
//! While a binary batch is checked, every state change the checker makes is recorded here as
//! a primitive [`UndoOp`] carrying what it overwrote. Voiding the newest batch applies the
//! inverses in reverse order. Only the newest batches can be undone (LIFO): once anything
//! else has changed the state (a JSON order, an admin request, a reload, recovery) the
//! records are *sealed* (dropped) and a void of an older batch is answered `too-old`.
//!
//! Memory is fixed at start-up: [`UNDO_BATCHES_MAX`] batch records and an op ring of
//! `UNDO_OPS_PER_ORDER × max_batch × UNDO_RING_BATCHES` ops. A batch whose ops do not fit (a
//! duplicate-horizon time window expiring thousands of ids at once) is not recorded and cannot
//! be voided (`too-old`).
//!
//! The same log serves the reconciliation of a `hello` after a client restarted: the client
//! names the session its journal ends on and the newest batch of it the journal holds, and the
//! newest records of that session after it (and of sessions that continued it without
//! journaling anything) are undone. For that the log keeps, per tracked session, the newest
//! batch it can no longer undo (`sealed`) and the session it continues (`pred`); and the
//! sessions a reconciliation ended are refused from then on (`retired`).

use std::collections::VecDeque;

use orders::Side;

use crate::limits::{
    RETIRED_SESSIONS_MAX, SESSIONS_TRACKED_MAX, UNDO_BATCHES_MAX, UNDO_OPS_PER_ORDER,
    UNDO_RING_BATCHES, VOID_TOMBSTONES_MAX,
};

/// What a void request did for one batch id (the `outcome` of a void result on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum VoidOutcome {
    /// The server had applied the batch and has undone it: its state is as if the batch had
    /// never arrived.
    Voided = 0,
    /// The server has no record of applying the batch (it never arrived, it is still queued,
    /// or it was voided before). The server will refuse it should it arrive later.
    Unknown = 1,
    /// The server applied the batch but cannot undo it any more: other state changes came
    /// after it, or it is older than the undo log. Its effects stay (conservative: over-counted
    /// exposure, remembered ids and rate tokens until cancels, or a restart with
    /// `--recover-from`).
    TooOld = 2,
}

impl VoidOutcome {
    /// Decodes an outcome code.
    pub fn from_u16(v: u16) -> Option<VoidOutcome> {
        match v {
            0 => Some(VoidOutcome::Voided),
            1 => Some(VoidOutcome::Unknown),
            2 => Some(VoidOutcome::TooOld),
            _ => None,
        }
    }

    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            VoidOutcome::Voided => "voided",
            VoidOutcome::Unknown => "unknown",
            VoidOutcome::TooOld => "too-old",
        }
    }
}

/// One primitive state change, with what it overwrote. See `Checker::undo_op` for the inverse
/// of each.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UndoOp<S: Copy> {
    /// An account was appended to the account table.
    PushAccount,
    /// A symbol was appended to the symbol table.
    PushSymbol,
    /// A position was appended (and to its symbol's position list).
    PushPosition,
    /// An account's throttle state (theoretical arrival time) was replaced.
    Tat { account: u32, old: u64 },
    /// A symbol's reference price was replaced; `revalued`: the positions held in the symbol
    /// were revalued at the new price.
    Reference {
        symbol: u32,
        old: Option<i64>,
        revalued: bool,
    },
    /// A symbol's market-halt flag was replaced.
    EventHalted { symbol: u32, old: bool },
    /// Open quantity `qty` at `price` was added to (`added`) or removed from a position's open
    /// side and its account's open notional.
    Open {
        position: u32,
        side: Side,
        price: i64,
        qty: u64,
        added: bool,
    },
    /// The order-id table entry of `id` was written or removed; `before` is what it held.
    Slot { id: u64, before: Option<S> },
    /// An id was appended to the duplicate-horizon ring.
    RingPush,
    /// The oldest id was dropped from the duplicate-horizon ring.
    RingPop { id: u64, t: u64 },
    /// A position moved by `signed` shares (a fill).
    Move { position: u32, signed: i64 },
    /// The next order of the batch starts here (no state change: lets a reconciliation undo
    /// the tail of a batch whose first orders the client journaled).
    OrderStart,
}

/// What the log knows of one client session.
#[derive(Debug, Clone, Copy)]
struct SessionInfo {
    session: u64,
    /// Highest batch id applied.
    highest: u64,
    /// The newest batch applied that can no longer be undone (0: none), and its orders.
    sealed: u64,
    sealed_orders: u32,
    /// The session this one continues (its `hello` named it), 0 if none.
    pred: u64,
    /// For the LRU replacement.
    last_use: u64,
}

/// The sessions a reconciliation acts on: the named one and those that continued it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lineage {
    ids: [u64; SESSIONS_TRACKED_MAX + 1],
    len: usize,
}

impl Lineage {
    fn contains(&self, session: u64) -> bool {
        self.ids[..self.len].contains(&session)
    }
}

/// A recorded batch: who sent it and where its ops are in the ring.
#[derive(Debug, Clone, Copy)]
struct BatchRecord {
    session: u64,
    batch_id: u64,
    /// Absolute op positions `[start, end)`.
    start: u64,
    end: u64,
    /// Orders (batch positions) recorded.
    orders: u32,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct UndoLog<S: Copy> {
    ops: Vec<UndoOp<S>>,
    /// Absolute position of the oldest op kept and of the next op.
    head: u64,
    tail: u64,
    batches: VecDeque<BatchRecord>,
    /// The batch being recorded (between `begin` and `end`).
    open: Option<BatchRecord>,
    /// The open batch did not fit the ring: it will not be recorded.
    overflowed: bool,
    /// Recent sessions: tells `too-old` from `unknown` for batches no longer in the log, and
    /// what a reconciliation can no longer undo.
    sessions: Vec<SessionInfo>,
    uses: u64,
    /// Batches voided before they arrived: refused if they do.
    tombstones: VecDeque<(u64, u64)>,
    /// Sessions ended by a reconciliation: their batches are refused.
    retired: VecDeque<u64>,
}

impl<S: Copy> UndoLog<S> {
    /// A log for batches of up to `max_batch` orders; `enabled = false` records nothing (every
    /// void is answered from the session table alone).
    pub(crate) fn new(max_batch: usize, enabled: bool) -> Self {
        let ops = if enabled {
            (max_batch.max(1) * UNDO_OPS_PER_ORDER * UNDO_RING_BATCHES).next_power_of_two()
        } else {
            0
        };
        UndoLog {
            ops: Vec::with_capacity(ops),
            head: 0,
            tail: 0,
            batches: VecDeque::with_capacity(UNDO_BATCHES_MAX),
            open: None,
            overflowed: false,
            sessions: Vec::with_capacity(SESSIONS_TRACKED_MAX),
            uses: 0,
            tombstones: VecDeque::with_capacity(VOID_TOMBSTONES_MAX),
            retired: VecDeque::with_capacity(RETIRED_SESSIONS_MAX),
        }
    }

    /// Ops the ring holds.
    fn capacity(&self) -> usize {
        self.ops.capacity()
    }

    /// Recording a batch now.
    #[inline]
    pub(crate) fn recording(&self) -> bool {
        self.open.is_some()
    }

    /// Whether there is anything a void could still undo.
    #[inline]
    pub(crate) fn has_records(&self) -> bool {
        !self.batches.is_empty()
    }

    /// Starts recording batch (`session`, `batch_id`). Returns `false` (and records nothing)
    /// if that batch was voided before it arrived, or its session was ended by a
    /// reconciliation: the caller must not apply it.
    pub(crate) fn begin(&mut self, session: u64, batch_id: u64) -> bool {
        debug_assert!(self.open.is_none());
        if session != 0
            && (self.tombstones.contains(&(session, batch_id)) || self.retired.contains(&session))
        {
            return false;
        }
        self.open = Some(BatchRecord {
            session,
            batch_id,
            start: self.tail,
            end: self.tail,
            orders: 0,
        });
        self.overflowed = self.capacity() == 0;
        true
    }

    /// The open batch's next order starts (each batch position, decodable or not).
    #[inline]
    pub(crate) fn begin_order(&mut self) {
        if let Some(open) = &mut self.open {
            open.orders += 1;
            self.push(UndoOp::OrderStart);
        }
    }

    /// Records one op of the open batch (called by the checker only while recording).
    #[inline]
    pub(crate) fn push(&mut self, op: UndoOp<S>) {
        let Some(open) = &self.open else {
            return;
        };
        if self.overflowed {
            return;
        }
        let cap = self.capacity() as u64;
        if self.tail - open.start == cap {
            // This batch alone fills the ring: it cannot be recorded.
            self.overflowed = true;
            return;
        }
        let open_start = open.start;
        while self.tail - self.head == cap {
            // Make room: drop the oldest batch record (the open batch starts after them all,
            // and it alone does not fill the ring).
            if let Some(old) = self.batches.pop_front() {
                self.note_sealed(&old);
            }
            self.head = self.batches.front().map_or(open_start, |b| b.start);
        }
        let i = (self.tail % cap) as usize;
        if i == self.ops.len() {
            self.ops.push(op);
        } else {
            self.ops[i] = op;
        }
        self.tail += 1;
    }

    /// Ends the open batch: it becomes the newest record (or, if it overflowed, every record
    /// is dropped, since nothing older can be undone past it).
    pub(crate) fn end(&mut self) {
        let Some(mut b) = self.open.take() else {
            return;
        };
        b.end = self.tail;
        self.note_session(b.session, b.batch_id);
        if self.overflowed {
            self.note_sealed(&b);
            self.seal();
            return;
        }
        if self.batches.len() == UNDO_BATCHES_MAX {
            if let Some(old) = self.batches.pop_front() {
                self.note_sealed(&old);
            }
        }
        self.batches.push_back(b);
        self.head = self.batches.front().map_or(b.start, |f| f.start);
    }

    /// Drops every record: something outside a recorded batch changed the state.
    pub(crate) fn seal(&mut self) {
        while let Some(old) = self.batches.pop_front() {
            self.note_sealed(&old);
        }
        self.head = self.tail;
    }

    /// The entry of `session`, created (replacing the least recently used) if absent.
    fn session_entry(&mut self, session: u64) -> &mut SessionInfo {
        self.uses += 1;
        let uses = self.uses;
        let fresh = SessionInfo {
            session,
            highest: 0,
            sealed: 0,
            sealed_orders: 0,
            pred: 0,
            last_use: uses,
        };
        let i = match self.sessions.iter().position(|s| s.session == session) {
            Some(i) => i,
            None if self.sessions.len() < SESSIONS_TRACKED_MAX => {
                self.sessions.push(fresh);
                self.sessions.len() - 1
            }
            None => {
                let lru = (0..self.sessions.len())
                    .min_by_key(|&i| self.sessions[i].last_use)
                    .unwrap_or(0);
                self.sessions[lru] = fresh;
                lru
            }
        };
        let s = &mut self.sessions[i];
        s.last_use = uses;
        s
    }

    fn note_session(&mut self, session: u64, batch_id: u64) {
        if session == 0 {
            return;
        }
        let s = self.session_entry(session);
        s.highest = s.highest.max(batch_id);
    }

    /// Batch `b` is applied and can no longer be undone.
    fn note_sealed(&mut self, b: &BatchRecord) {
        if b.session == 0 {
            return;
        }
        if let Some(s) = self.sessions.iter_mut().find(|s| s.session == b.session) {
            if b.batch_id > s.sealed {
                (s.sealed, s.sealed_orders) = (b.batch_id, b.orders);
            } else if b.batch_id == s.sealed {
                s.sealed_orders = s.sealed_orders.max(b.orders);
            }
        }
    }

    /// `prev` and every tracked session that continues it (transitively), except `new` (the
    /// session asking). The first entry is `prev`.
    pub(crate) fn lineage(&self, prev: u64, new: u64) -> Lineage {
        let mut l = Lineage {
            ids: [0; SESSIONS_TRACKED_MAX + 1],
            len: 1,
        };
        l.ids[0] = prev;
        let mut grew = true;
        while grew {
            grew = false;
            for s in &self.sessions {
                if s.session != new
                    && s.pred != 0
                    && l.contains(s.pred)
                    && !l.contains(s.session)
                    && l.len < l.ids.len()
                {
                    l.ids[l.len] = s.session;
                    l.len += 1;
                    grew = true;
                }
            }
        }
        l
    }

    /// Whether the newest record is one a reconciliation of `lineage` through batch `through`
    /// of its first session must undo; if so removes it and returns its op range.
    pub(crate) fn pop_newest_after(&mut self, l: &Lineage, through: u64) -> Option<(u64, u64)> {
        let b = self.batches.back()?;
        if !Self::after(l, through, b.session, b.batch_id) {
            return None;
        }
        let (start, end) = (b.start, b.end);
        self.batches.pop_back();
        Some((start, end))
    }

    /// Batch (`session`, `batch_id`) is not in the journal of a client whose journal ends on
    /// the lineage's first session at batch `through`.
    fn after(l: &Lineage, through: u64, session: u64, batch_id: u64) -> bool {
        if session == l.ids[0] {
            batch_id > through
        } else {
            l.contains(session)
        }
    }

    /// If the newest record is batch `batch_id` of `session` with more than `keep` orders:
    /// cuts it to its first `keep` orders (drops it if `keep` is 0) and returns the op range
    /// `[from, end)` of the orders cut, for the caller to undo.
    pub(crate) fn cut_newest(
        &mut self,
        session: u64,
        batch_id: u64,
        keep: u32,
    ) -> Option<(u64, u64)> {
        let b = *self.batches.back()?;
        if b.session != session || b.batch_id != batch_id || b.orders <= keep {
            return None;
        }
        let mut seen = 0u32;
        let from = (b.start..b.end).find(|&pos| {
            if !matches!(self.op(pos), UndoOp::OrderStart) {
                return false;
            }
            seen += 1;
            seen == keep + 1
        })?;
        if keep == 0 {
            self.batches.pop_back();
        } else if let Some(last) = self.batches.back_mut() {
            last.end = from;
            last.orders = keep;
        }
        Some((from, b.end))
    }

    /// After undoing what [`UndoLog::pop_newest_after`] and [`UndoLog::cut_newest`] could:
    /// whether the state now agrees with the client's journal (`voided`), the server never
    /// heard of the lineage (`unknown`), or a batch (or the tail of one) the journal does not
    /// hold is applied and cannot be undone (`too-old`: still in the log behind another
    /// session's batch, or sealed). `keep`: the orders of batch `through` the journal holds.
    pub(crate) fn reconciled(
        &self,
        l: &Lineage,
        through: u64,
        keep: u32,
        undone: u64,
    ) -> VoidOutcome {
        let prev = l.ids[0];
        let stuck = self.batches.iter().any(|b| {
            Self::after(l, through, b.session, b.batch_id)
                || (b.session == prev && b.batch_id == through && b.orders > keep)
        }) || self.sessions.iter().any(|s| {
            s.sealed != 0
                && (Self::after(l, through, s.session, s.sealed)
                    || (s.session == prev && s.sealed == through && s.sealed_orders > keep))
        });
        if stuck {
            return VoidOutcome::TooOld;
        }
        let known = undone > 0 || self.sessions.iter().any(|s| l.contains(s.session));
        if known {
            VoidOutcome::Voided
        } else {
            VoidOutcome::Unknown
        }
    }

    /// Ends the sessions of `l`: their batches are refused from now on.
    pub(crate) fn retire(&mut self, l: &Lineage) {
        for &s in &l.ids[..l.len] {
            if s == 0 || self.retired.contains(&s) {
                continue;
            }
            if self.retired.len() == RETIRED_SESSIONS_MAX {
                self.retired.pop_front();
            }
            self.retired.push_back(s);
        }
    }

    /// Session `new` starts (its `hello`), continuing `prev` (0: none).
    pub(crate) fn start_session(&mut self, new: u64, prev: u64) {
        if new == 0 {
            return;
        }
        let s = self.session_entry(new);
        if prev != 0 && prev != new {
            s.pred = prev;
        }
    }

    /// If the newest record is (`session`, one of `ids`), removes it and returns the index in
    /// `ids` and its op range (absolute positions) for the caller to undo, newest op last.
    pub(crate) fn pop_newest(&mut self, session: u64, ids: &[u64]) -> Option<(usize, u64, u64)> {
        let b = self.batches.back()?;
        if b.session != session {
            return None;
        }
        let k = ids.iter().position(|&id| id == b.batch_id)?;
        let (start, end) = (b.start, b.end);
        self.batches.pop_back();
        Some((k, start, end))
    }

    /// The op at absolute position `pos` (within a range from [`UndoLog::pop_newest`]).
    pub(crate) fn op(&self, pos: u64) -> UndoOp<S> {
        self.ops[(pos % self.capacity() as u64) as usize]
    }

    /// After undoing the ops `[start, end)` of the newest record: forget them.
    pub(crate) fn truncate_to(&mut self, start: u64) {
        self.tail = start;
        self.head = self.head.min(start);
    }

    /// The outcome for a batch that was not undone: `too-old` if the session is known to have
    /// had it applied, else `unknown` (and the batch is refused should it arrive later).
    pub(crate) fn not_undone(&mut self, session: u64, batch_id: u64) -> VoidOutcome {
        if self.tombstones.contains(&(session, batch_id)) {
            // Voided (or refused) before.
            return VoidOutcome::Unknown;
        }
        let applied = self
            .sessions
            .iter()
            .any(|s| s.session == session && s.highest >= batch_id);
        let in_log = self
            .batches
            .iter()
            .any(|b| b.session == session && b.batch_id == batch_id);
        if applied || in_log {
            return VoidOutcome::TooOld;
        }
        self.tombstone(session, batch_id);
        VoidOutcome::Unknown
    }

    /// Marks (`session`, `batch_id`) as voided: refused if it arrives.
    pub(crate) fn tombstone(&mut self, session: u64, batch_id: u64) {
        if self.tombstones.contains(&(session, batch_id)) {
            return;
        }
        if self.tombstones.len() == VOID_TOMBSTONES_MAX {
            self.tombstones.pop_front();
        }
        self.tombstones.push_back((session, batch_id));
    }
}
