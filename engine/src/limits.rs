//! Every named limit of the engine, in one place, units last.
//!
//! The pipeline allocates everything it needs at start-up from these numbers (and the
//! configuration values they bound): ring slots, batch buffers, frame buffers, histograms.
//! Nothing on the per-order path grows a buffer, so every bound below is also a memory bound.

/// Slots of each inter-stage ring when the configuration does not say.
///
/// 8192 orders × ~100 bytes per slot ≈ 0.8 MiB per ring: enough to absorb a few milliseconds of
/// bursts at a million orders per second, small enough to stay in L2/L3.
pub const RING_CAPACITY_ORDERS_DEFAULT: usize = 8_192;
/// Smallest ring accepted by the configuration.
pub const RING_CAPACITY_ORDERS_MIN: usize = 16;
/// Largest ring accepted by the configuration (4 Mi slots ≈ 400 MiB per ring).
pub const RING_CAPACITY_ORDERS_MAX: usize = 1 << 22;

/// Orders a stage takes from its input ring as one unit when the configuration does not say.
///
/// Smart batching: a stage takes everything waiting up to this bound, so batches grow under
/// load and stay at one when idle. 1024 orders × 48 bytes = 48 KiB per risk request, the
/// largest a `risk-server` takes by default. Measured on the 2-core machines (full pipeline,
/// risk-server over tcp, sink, `--rate max`): 256 → 0.9 M orders/s, 1024 → 1.6 M orders/s; at
/// a fixed rate below capacity batches stay small, so the bound does not cost latency.
pub const MAX_BATCH_ORDERS_DEFAULT: usize = 1_024;
/// Largest batch accepted by the configuration. Bounds the risk request, the egress frame
/// and every per-stage batch buffer.
pub const MAX_BATCH_ORDERS_MAX: usize = 4_096;

/// A stage takes at most `max_batch` orders and must always be able to take one full batch,
/// so a batch never exceeds the ring it comes from.
const _: () = assert!(MAX_BATCH_ORDERS_DEFAULT <= RING_CAPACITY_ORDERS_DEFAULT);
const _: () = assert!(RING_CAPACITY_ORDERS_MIN >= 1);
const _: () = assert!(MAX_BATCH_ORDERS_MAX <= RING_CAPACITY_ORDERS_MAX);
/// One engine batch is one risk request: the risk protocol must carry the largest batch, and a
/// `risk-server` with its default `--max-batch` must take the engine's default batch.
const _: () = assert!(MAX_BATCH_ORDERS_MAX <= risk::limits::MAX_BATCH_ORDERS_MAX);
const _: () = assert!(MAX_BATCH_ORDERS_DEFAULT <= risk::limits::MAX_BATCH_ORDERS_DEFAULT);

/// Risk round-trip timeout when the configuration does not say (the source design's 100 ms).
pub const RISK_TIMEOUT_MS_DEFAULT: u64 = 100;
/// Largest risk timeout accepted by the configuration.
pub const RISK_TIMEOUT_MS_MAX: u64 = 60_000;

/// Backoff idle strategy: busy-spin rounds (with `spin_loop` hints) before yielding.
pub const BACKOFF_SPINS_MAX: u32 = 64;
/// Backoff idle strategy: `sched_yield` rounds before parking.
pub const BACKOFF_YIELDS_MAX: u32 = 8;
/// Backoff idle strategy: first park duration; it doubles up to the maximum.
pub const BACKOFF_PARK_MIN_NS: u64 = 1_000;
/// Backoff idle strategy: longest park (50 µs). Bounds the latency added to an order that
/// arrives at an idle stage, and the CPU burnt by four idle stages on two cores (≈ 20 k
/// wake-ups per second per stage).
pub const BACKOFF_PARK_MAX_NS: u64 = 50_000;
const _: () = assert!(BACKOFF_PARK_MIN_NS <= BACKOFF_PARK_MAX_NS);
/// Backoff with a wake-up hand-off (`crate::wake`): longest park of a stage that its
/// neighbours unpark when they give it work or room (1 ms). It no longer bounds the latency of
/// an order, only what no neighbour rings for: the journal's periodic `maintain`, the replay
/// ingress noticing the stop flag. Long parks mean few idle wake-ups (1 k/s per idle stage
/// instead of 20 k/s), which leaves the shared cores to the threads that have work.
pub const HANDOFF_PARK_MAX_NS: u64 = 1_000_000;
const _: () = assert!(BACKOFF_PARK_MAX_NS <= HANDOFF_PARK_MAX_NS);
/// A parked journal stage still runs `maintain` on time (interval msync, checkpoints).
const _: () = assert!(HANDOFF_PARK_MAX_NS <= JOURNAL_MAINTAIN_INTERVAL_NS);

/// The shared duty-cycle thread under `backoff` yields its core (`sched_yield`) for this long
/// before the next replayed order is due (whether or not a risk reply is awaited meanwhile),
/// and blocks on its sockets otherwise, so a reply awaited with no order due soon is blocked
/// for. At 100 k/s an order is always due within the window, so the thread yields throughout
/// (`docs/results.md`, "where the 100 k/s tail comes from": blocking instead while a reply is
/// awaited doubled the median and did not remove the tail). On this project's 2-vCPU VMs a blocked thread pays ~25–30 µs to be
/// woken by its timer (the vCPU was halted): every order was that late, and its request went
/// out from a cold vCPU. Yielding through the last stretch makes the schedule exact to a few
/// µs and halved the median at 10 k orders/s; yielding during the round trip as well measured
/// no better (it competes with the risk server and ZeroMQ's I/O thread for the two cores)
/// (`docs/results.md`, "shared: yield before an order is due"). A yield hands the core to any
/// runnable thread, so it is not a spin; the source design's replay (`bench baseline`) paces
/// the same way. An idle service (nothing due) blocks.
pub const SHARED_YIELD_WINDOW_NS: u64 = 100_000;
const _: () = assert!(SHARED_YIELD_WINDOW_NS < HANDOFF_PARK_MAX_NS);

/// Replay ingress in `spin` mode: below this distance to a deadline the ingress busy-spins
/// instead of yielding, so it wakes on time.
pub const SCHEDULE_SPIN_WINDOW_NS: u64 = 20_000;

/// Replay ingress in `backoff` mode: a deadline further away than this is slept for (with
/// the stage threads' 1 µs timer slack), a nearer one is spun for.
pub const SCHEDULE_SLEEP_MIN_NS: u64 = 2_000;
/// Replay ingress in `backoff` mode: the shortest sleep for a deadline. A nearer deadline is
/// overslept by up to this much (the orders then go out together, their lateness measured from
/// their scheduled times), for fewer timer wake-ups: each costs ~10 µs of CPU on a VM, and at
/// 100 k orders/s one per order kept a third of a core busy (`docs/results.md`).
pub const SCHEDULE_SLEEP_QUANTUM_NS: u64 = 20_000;
const _: () = assert!(SCHEDULE_SLEEP_MIN_NS < SCHEDULE_SLEEP_QUANTUM_NS);
const _: () = assert!(SCHEDULE_SLEEP_QUANTUM_NS <= HANDOFF_PARK_MAX_NS);

/// Largest number of orders in one binary ingress frame.
pub const INGRESS_FRAME_ORDERS_MAX: usize = 1_024;
/// Largest ingress message in bytes (a full binary frame); longer messages are bad frames.
pub const INGRESS_MESSAGE_BYTES_MAX: usize =
    crate::frames::INGRESS_HEADER_LEN_BYTES + INGRESS_FRAME_ORDERS_MAX * orders::ORDER_LEN_BYTES;
/// The service ingress only receives a message when the ring has room for the largest frame,
/// so the ring must be able to hold one.
const _: () = assert!(INGRESS_FRAME_ORDERS_MAX <= RING_CAPACITY_ORDERS_DEFAULT);
/// Messages the service ingress takes from its socket per unit of work.
pub const INGRESS_MESSAGES_PER_WORK_MAX: usize = 64;
/// Receive high-water mark of the ingress PULL socket (messages) when the config does not say.
pub const INGRESS_RCVHWM_MESSAGES_DEFAULT: i32 = 1_000;
/// Send high-water mark of the egress PUSH socket (frames) when the config does not say.
///
/// Frames in ZeroMQ's send queue are lost if the process is killed, so after `kill -9` the
/// resume re-sends the journal's tail, and that window grows with the orders the queue can
/// hold: [`EGRESS_QUEUE_ORDERS`] (see [`egress_frame_orders`], [`redelivery_window_records`]).
/// The queue is counted in frames, and a frame carries one order at low rates, so a short
/// queue fills whenever ZeroMQ's I/O thread is slow to wake: at 100 k/s, 16 one-order frames
/// are 160 µs, less than a wake-up of a halted vCPU under load, and egress then waited on
/// back-pressure for ms (docs/results.md, "The egress queue in orders"). 1024 frames hold 10 ms
/// at 100 k/s of one-order frames.
pub const EGRESS_SNDHWM_MESSAGES_DEFAULT: i32 = 1_024;
/// Orders ZeroMQ's egress send queue may hold: a frame carries at most this many divided by
/// the send high-water mark (and at most `max_batch`), so that a longer queue means smaller
/// frames, not a longer redelivery window. 64 Ki: frames of up to 64 orders with the default
/// queue. It was 16 Ki (16 orders a frame) until issue 12's tenth session: at `--rate max`
/// that is 62 k frames per million orders, and each frame costs a message, its copy and a
/// receive in the engine, ZeroMQ's I/O threads and the consumer, which on a 2-core host share
/// the cores with the pipeline (inline `--rate max` in `split`, medians of 4: 3.00 M/s with
/// frames of ≤ 16 orders, 3.55 with ≤ 64, 3.99 with ≤ 128; docs/results.md, "Tenth session"). The price is the redelivery window: a resume
/// after `kill -9` re-sends up to 64 Ki more recent orders (duplicates the consumer drops by
/// `input_seq`), never fewer.
pub const EGRESS_QUEUE_ORDERS: usize = 64 * 1_024;

/// Most orders in one egress frame: [`EGRESS_QUEUE_ORDERS`] spread over `sndhwm` frames, at
/// least 1, at most `max_batch`.
pub const fn egress_frame_orders(sndhwm: usize, max_batch: usize) -> usize {
    let per = EGRESS_QUEUE_ORDERS / if sndhwm == 0 { 1 } else { sndhwm };
    let per = if per > max_batch { max_batch } else { per };
    if per == 0 {
        1
    } else {
        per
    }
}
/// Largest egress send high-water mark accepted (frames): at most one order per frame
/// beyond [`EGRESS_QUEUE_ORDERS`] frames, so this bounds the redelivery window.
pub const EGRESS_SNDHWM_MESSAGES_MAX: i32 = 16 * 1_024;
const _: () = assert!(EGRESS_SNDHWM_MESSAGES_DEFAULT >= 1);
const _: () = assert!(EGRESS_SNDHWM_MESSAGES_DEFAULT <= EGRESS_SNDHWM_MESSAGES_MAX);
/// Kernel send buffer of the egress socket (`ZMQ_SNDBUF`, bytes). Fixed rather than
/// autotuned (up to several MiB) so that the redelivery window can cover what sat in it when
/// the process died (Linux doubles the value it is given; the window counts that).
pub const EGRESS_SNDBUF_BYTES: i32 = 256 * 1024;
/// Extra frames beyond the send queue counted in the redelivery window: the frame ZeroMQ's I/O
/// thread was encoding, and slack.
pub const REDELIVER_MARGIN_FRAMES: usize = 8;

/// Journal records re-read on resume to re-send their accepted orders (at-least-once): every
/// place an accepted, journaled order can have been when the previous process died without
/// reaching the downstream process — the journal → egress ring (`ring_capacity`), ZeroMQ's
/// send queue (`sndhwm` frames of up to [`egress_frame_orders`] orders, plus
/// [`REDELIVER_MARGIN_FRAMES`]),
/// and the kernel's send buffer (2 × `sndbuf_bytes` of 64-byte entries). Counted in records,
/// which include rejections, so the window is conservative.
pub const fn redelivery_window_records(
    ring_capacity: usize,
    max_batch: usize,
    sndhwm: usize,
    sndbuf_bytes: usize,
) -> usize {
    let queued = sndhwm.saturating_add(REDELIVER_MARGIN_FRAMES);
    ring_capacity
        .saturating_add(queued.saturating_mul(egress_frame_orders(sndhwm, max_batch)))
        .saturating_add(sndbuf_bytes.saturating_mul(2) / crate::frames::EGRESS_ENTRY_LEN_BYTES)
}
/// Egress waits this long for the downstream socket to become writable before retrying.
pub const EGRESS_POLL_MS: i64 = 10;
/// Linger of the egress socket at shutdown: how long ZeroMQ keeps trying to deliver frames it
/// already accepted once the engine closes the socket.
pub const EGRESS_LINGER_MS: i32 = 30_000;

/// Risk-state snapshots ([`crate::snapshots`]): one after this many decisions by default.
/// Restart replays at most about this many records after a `kill -9` (a clean stop writes a
/// last snapshot); making one costs a few ms per MB of state on the snapshot thread.
pub const SNAPSHOT_EVERY_RECORDS_DEFAULT: u64 = 1_000_000;
/// … or this long after the last one (with enough decisions since).
pub const SNAPSHOT_EVERY_MS_DEFAULT: u64 = 60_000;
/// A snapshot by time or at stop needs at least `min(every_records, this)` decisions since the
/// last one: fewer replay faster than a snapshot is made.
pub const SNAPSHOT_MIN_RECORDS_MAX: u64 = 65_536;
/// The snapshot thread looks for new journal records this often when it has caught up.
pub const SNAPSHOT_POLL_MS: u64 = 10;

/// Journal stage: call `Writer::maintain` (interval msync, time-based checkpoints) at most this
/// often.
pub const JOURNAL_MAINTAIN_INTERVAL_NS: u64 = 1_000_000;

/// Recording stages publish latency quantiles for the metrics endpoint this often.
pub const METRICS_PUBLISH_INTERVAL_NS: u64 = 1_000_000_000;
/// The metrics HTTP thread wakes this often to notice shutdown.
pub const METRICS_POLL_MS: u64 = 100;

/// Highest latency a histogram records exactly (1 hour in ns); longer values saturate.
pub const LATENCY_MAX_NS: u64 = 3_600_000_000_000;
/// Significant decimal digits kept by the latency histograms.
pub const LATENCY_SIGFIGS: u8 = 3;

/// At most one bad-frame log line per this interval (the count is always exact).
pub const BAD_FRAME_LOG_INTERVAL_NS: u64 = 1_000_000_000;

/// The main thread refreshes the progress bar and checks the stages this often.
pub const SUPERVISE_INTERVAL_MS: u64 = 50;

/// Start-up check of remote risk services' authentication: the longest wait for their
/// handshakes, all endpoints together. A refusal is usually known within milliseconds; a
/// server that is down simply runs the wait out (the run then starts; timeouts handle it).
pub const RISK_AUTH_PROBE_MS: u64 = 1_000;

/// Start-up hello with each remote risk service (its batch bound; the reconciliation of a
/// resumed journal): the longest wait per endpoint, or the risk timeout if that is longer.
pub const RISK_HELLO_WAIT_MS: u64 = 2_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redelivery_window_covers_ring_send_queue_and_kernel_buffer() {
        // Defaults: 8192-slot ring, 1024 frames of at most 64 orders queued, 256 KiB kernel
        // buffer.
        let w = redelivery_window_records(
            RING_CAPACITY_ORDERS_DEFAULT,
            MAX_BATCH_ORDERS_DEFAULT,
            EGRESS_SNDHWM_MESSAGES_DEFAULT as usize,
            EGRESS_SNDBUF_BYTES as usize,
        );
        assert_eq!(w, 8_192 + (1_024 + 8) * 64 + 2 * 256 * 1_024 / 64);
        // Each part counts: a larger ring or buffer widens the window; so do larger frames
        // (a short queue of up to `max_batch` orders each).
        assert!(redelivery_window_records(16_384, 1_024, 1_024, 262_144) > w);
        assert!(redelivery_window_records(8_192, 1_024, 1_024, 4 << 20) > w);
        assert_eq!(
            redelivery_window_records(8_192, 1_024, 16, 262_144),
            8_192 + (16 + 8) * 1_024 + 8_192
        );
        // A longer queue means smaller frames, not a longer window: the queue's orders stay
        // within EGRESS_QUEUE_ORDERS (plus the margin frames).
        for hwm in [1usize, 16, 100, 1_024, 4_096] {
            let queued = hwm * egress_frame_orders(hwm, 1_024);
            assert!(queued <= EGRESS_QUEUE_ORDERS.max(hwm), "{hwm}: {queued}");
        }
        assert_eq!(egress_frame_orders(1_024, 1_024), 64);
        assert_eq!(egress_frame_orders(64, 1_024), 1_024);
        assert_eq!(egress_frame_orders(16, 8), 8, "never above max_batch");
        assert_eq!(egress_frame_orders(100_000, 1_024), 1, "never below 1");
        assert_eq!(egress_frame_orders(0, 1_024), 1_024, "no division by zero");
        // No overflow at the extremes.
        assert_eq!(
            redelivery_window_records(usize::MAX, usize::MAX, usize::MAX, usize::MAX),
            usize::MAX
        );
    }
}
