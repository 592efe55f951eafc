//! A live reader (`audit tail`): subscribes to the binary feed, notices sequence gaps (slow
//! joiner, high-water-mark drops), fetches the missing ranges from the gap-fill service, and
//! verifies the hash chain record by record, so that it ends on the journal's head hash.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zauth::ClientAuth;

use crate::error::JournalError;
use crate::format::{chain_hash, GENESIS_HASH, HASH_LEN_BYTES};
use crate::limits::{
    TAIL_FEED_MESSAGE_BYTES_MAX, TAIL_GAP_RETRY_MS, TAIL_GAP_WAIT_MS_MAX,
    TAIL_IDLE_POLL_MS_DEFAULT, TAIL_RCVHWM_MESSAGES_DEFAULT, TAIL_REPLY_BYTES_MAX,
    TAIL_REQUEST_ATTEMPTS, TAIL_REQUEST_TIMEOUT_MS,
};
use crate::security::HandshakeWatch;
use crate::wire::{decode_entries, decode_pub, EntryRef, GapReplyHeader, GapRequest, STATUS_OK};

/// What to follow and when to stop.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// The binary PUB feed to subscribe to.
    pub sub_endpoint: String,
    /// The gap-fill service (`audit serve`).
    pub serve_endpoint: String,
    /// First sequence number to deliver (1: verify the chain from genesis; N > 1: the chain is
    /// anchored at the hash of record N-1 as served).
    pub from_seq: u64,
    /// Stop after this record (otherwise run until `stop` is set).
    pub until_seq: Option<u64>,
    /// Receive high-water mark of the SUB socket (messages).
    pub rcvhwm: i32,
    /// With no live message for this long, ask the server for records past the last one.
    pub idle_poll_ms: u64,
    /// Timeout of one gap-fill request before the REQ socket is reopened.
    pub request_timeout_ms: u64,
    /// Credentials for servers that require PLAIN, used on both sockets (feed and gap fill).
    /// A server that refuses them ends the tail at once with
    /// [`JournalError::AuthRefused`].
    pub client_auth: ClientAuth,
}

impl TailOptions {
    /// Options with defaults for everything but the endpoints.
    pub fn new(sub_endpoint: &str, serve_endpoint: &str) -> TailOptions {
        TailOptions {
            sub_endpoint: sub_endpoint.to_owned(),
            serve_endpoint: serve_endpoint.to_owned(),
            from_seq: 1,
            until_seq: None,
            rcvhwm: TAIL_RCVHWM_MESSAGES_DEFAULT,
            idle_poll_ms: TAIL_IDLE_POLL_MS_DEFAULT,
            request_timeout_ms: TAIL_REQUEST_TIMEOUT_MS,
            client_auth: ClientAuth::default(),
        }
    }
}

/// What a tail run saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailStats {
    /// The last verified record (`from_seq - 1` when none).
    pub last_seq: u64,
    /// Its hash: the journal's head hash once the tail has caught up.
    pub head_hash: [u8; HASH_LEN_BYTES],
    /// Records taken from the live feed.
    pub live_records: u64,
    /// Records fetched from the gap-fill service.
    pub fetched_records: u64,
    /// Gaps seen in the live feed.
    pub gaps: u64,
    /// Live records already delivered (after a fetch overtook the feed).
    pub duplicates: u64,
    /// Gap-fill requests made.
    pub requests: u64,
}

/// One verified record handed to the caller.
#[derive(Debug, Clone, Copy)]
pub struct TailRecord<'a> {
    /// The record (its hash verified against the chain).
    pub entry: EntryRef<'a>,
    /// Whether it came from the live feed (or from the gap-fill service).
    pub live: bool,
}

struct GapClient<'a> {
    ctx: &'a zmq::Context,
    endpoint: String,
    auth: ClientAuth,
    socket: Option<(zmq::Socket, HandshakeWatch)>,
    timeout_ms: u64,
}

/// A client socket with its credentials, size limit and handshake watch, not yet connected.
fn client_socket(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    endpoint: &str,
    auth: &ClientAuth,
    max_message_bytes: usize,
) -> Result<(zmq::Socket, HandshakeWatch), JournalError> {
    let s = ctx
        .socket(kind)
        .map_err(|e| JournalError::zmq("create socket", endpoint, e))?;
    s.set_linger(0)
        .map_err(|e| JournalError::zmq("set LINGER", endpoint, e))?;
    // A peer announcing a larger message is dropped by libzmq before it allocates it.
    s.set_maxmsgsize(max_message_bytes as i64)
        .map_err(|e| JournalError::zmq("set MAXMSGSIZE", endpoint, e))?;
    auth.apply(&s)?;
    let watch = HandshakeWatch::start(ctx, &s, endpoint)?;
    Ok((s, watch))
}

/// Waits up to `timeout_ms` for `socket` to be readable; a refused handshake seen on `watch`
/// meanwhile is an error, and so is a signal ([`JournalError::Interrupted`]). Returns whether
/// the socket is readable.
fn wait_readable(
    socket: &zmq::Socket,
    watch: &HandshakeWatch,
    endpoint: &str,
    timeout_ms: u64,
) -> Result<bool, JournalError> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as i64;
        let mut items = [
            socket.as_poll_item(zmq::POLLIN),
            watch.socket().as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, left) {
            Ok(_) => {}
            // A signal (the caller's stop request, usually): `tail` looks at its stop flag.
            Err(zmq::Error::EINTR) => return Err(JournalError::Interrupted),
            Err(e) => return Err(JournalError::zmq("poll", endpoint, e)),
        }
        if items[1].is_readable() {
            watch.check()?;
        }
        if items[0].is_readable() {
            return Ok(true);
        }
        if left == 0 {
            return Ok(false);
        }
    }
}

impl GapClient<'_> {
    fn socket(&mut self) -> Result<&(zmq::Socket, HandshakeWatch), JournalError> {
        if self.socket.is_none() {
            let (s, watch) = client_socket(
                self.ctx,
                zmq::REQ,
                &self.endpoint,
                &self.auth,
                TAIL_REPLY_BYTES_MAX,
            )?;
            s.connect(&self.endpoint)
                .map_err(|e| JournalError::zmq("connect", &self.endpoint, e))?;
            self.socket = Some((s, watch));
        }
        self.socket
            .as_ref()
            .ok_or_else(|| JournalError::Protocol("no REQ socket".into()))
    }

    /// One request, Lazy Pirate: on timeout the socket is closed and reopened, a few times.
    fn request(&mut self, req: &GapRequest) -> Result<Vec<u8>, JournalError> {
        let bytes = req.encode();
        for _ in 0..TAIL_REQUEST_ATTEMPTS {
            let timeout = self.timeout_ms;
            let endpoint = self.endpoint.clone();
            let (s, watch) = self.socket()?;
            s.send(&bytes[..], 0)
                .map_err(|e| JournalError::zmq("send", &endpoint, e))?;
            if wait_readable(s, watch, &endpoint, timeout)? {
                return s
                    .recv_bytes(0)
                    .map_err(|e| JournalError::zmq("receive", &endpoint, e));
            }
            // A REQ socket cannot send again before it receives: close and reopen it.
            self.socket = None;
        }
        Err(JournalError::Timeout {
            endpoint: self.endpoint.clone(),
            ms: self.timeout_ms,
            attempts: TAIL_REQUEST_ATTEMPTS,
        })
    }
}

struct Follower<'a, 'f> {
    expected: u64,
    prev: [u8; HASH_LEN_BYTES],
    until: u64,
    stats: TailStats,
    client: GapClient<'a>,
    on_record: &'f mut dyn FnMut(&TailRecord<'_>),
}

impl Follower<'_, '_> {
    fn done(&self) -> bool {
        self.expected > self.until
    }

    fn accept(&mut self, e: &EntryRef<'_>, live: bool) -> Result<(), JournalError> {
        debug_assert_eq!(e.seq, self.expected);
        let computed = chain_hash(&self.prev, e.seq, e.ts_ns, e.kind, e.payload);
        if computed != e.hash {
            return Err(JournalError::FeedHash {
                seq: e.seq,
                from: if live { "live feed" } else { "gap-fill reply" },
            });
        }
        self.prev = computed;
        self.expected += 1;
        self.stats.last_seq = e.seq;
        self.stats.head_hash = computed;
        if live {
            self.stats.live_records += 1;
        } else {
            self.stats.fetched_records += 1;
        }
        (self.on_record)(&TailRecord { entry: *e, live });
        Ok(())
    }

    /// Fetches `expected ..= to`. With `must`, the records are known to exist (the live feed
    /// showed a later one) and a server without them is an error after a short wait.
    fn fetch(&mut self, to: u64, must: bool) -> Result<(), JournalError> {
        let started = Instant::now();
        while self.expected <= to && !self.done() {
            let req = GapRequest {
                from_seq: self.expected,
                to_seq: to.min(self.until),
                max_records: 0,
            };
            self.stats.requests += 1;
            let reply = self.client.request(&req)?;
            let (header, rest) = GapReplyHeader::decode(&reply)?;
            if header.status != STATUS_OK {
                return Err(JournalError::Protocol(format!(
                    "gap-fill server answered status {}: {}",
                    header.status,
                    String::from_utf8_lossy(rest)
                )));
            }
            let entries = decode_entries(rest, header.count as usize)?;
            if entries.is_empty() {
                if !must {
                    return Ok(());
                }
                if started.elapsed() > Duration::from_millis(TAIL_GAP_WAIT_MS_MAX) {
                    return Err(JournalError::Protocol(format!(
                        "gap-fill server has no record {} (its head is {}) although the live \
                         feed showed later ones",
                        self.expected, header.head_seq
                    )));
                }
                std::thread::sleep(Duration::from_millis(TAIL_GAP_RETRY_MS));
                continue;
            }
            for e in &entries {
                if e.seq != self.expected {
                    return Err(JournalError::Protocol(format!(
                        "gap-fill reply has seq {} where {} was expected",
                        e.seq, self.expected
                    )));
                }
                self.accept(e, false)?;
                if self.done() {
                    break;
                }
            }
        }
        Ok(())
    }

    fn live(&mut self, msg: &[u8]) -> Result<(), JournalError> {
        for e in decode_pub(msg)? {
            if self.done() {
                break;
            }
            if e.seq < self.expected {
                self.stats.duplicates += 1;
                continue;
            }
            if e.seq > self.expected {
                self.stats.gaps += 1;
                self.fetch(e.seq - 1, true)?;
                if self.done() {
                    break;
                }
            }
            self.accept(&e, true)?;
        }
        Ok(())
    }
}

/// Follows a journal until `until_seq` is verified or `stop` is set; `on_record` sees every
/// record in order, exactly once, verified.
pub fn tail(
    ctx: &zmq::Context,
    opts: &TailOptions,
    stop: &AtomicBool,
    on_record: &mut dyn FnMut(&TailRecord<'_>),
) -> Result<TailStats, JournalError> {
    let (sub, sub_watch) = client_socket(
        ctx,
        zmq::SUB,
        &opts.sub_endpoint,
        &opts.client_auth,
        TAIL_FEED_MESSAGE_BYTES_MAX,
    )?;
    sub.set_rcvhwm(opts.rcvhwm)
        .map_err(|e| JournalError::zmq("set RCVHWM", &opts.sub_endpoint, e))?;
    sub.set_subscribe(b"")
        .map_err(|e| JournalError::zmq("subscribe", &opts.sub_endpoint, e))?;
    sub.connect(&opts.sub_endpoint)
        .map_err(|e| JournalError::zmq("connect", &opts.sub_endpoint, e))?;
    let from = opts.from_seq.max(1);
    let mut f = Follower {
        expected: from,
        prev: GENESIS_HASH,
        until: opts.until_seq.unwrap_or(u64::MAX),
        stats: TailStats {
            last_seq: from - 1,
            head_hash: GENESIS_HASH,
            live_records: 0,
            fetched_records: 0,
            gaps: 0,
            duplicates: 0,
            requests: 0,
        },
        client: GapClient {
            ctx,
            endpoint: opts.serve_endpoint.clone(),
            auth: opts.client_auth.clone(),
            socket: None,
            timeout_ms: opts.request_timeout_ms,
        },
        on_record,
    };
    match follow(&mut f, &sub, &sub_watch, opts, stop) {
        Ok(()) => Ok(f.stats),
        // A stop request (SIGINT/SIGTERM) interrupted a wait: a clean stop.
        Err(JournalError::Interrupted) if stop.load(Ordering::Relaxed) => Ok(f.stats),
        Err(e) => Err(e),
    }
}

fn follow(
    f: &mut Follower<'_, '_>,
    sub: &zmq::Socket,
    sub_watch: &HandshakeWatch,
    opts: &TailOptions,
    stop: &AtomicBool,
) -> Result<(), JournalError> {
    let from = f.expected;
    if from > 1 {
        // Anchor the chain at record from-1 as the server has it.
        let reply = f.client.request(&GapRequest {
            from_seq: from - 1,
            to_seq: from - 1,
            max_records: 1,
        })?;
        let (header, rest) = GapReplyHeader::decode(&reply)?;
        let entries = decode_entries(rest, header.count as usize)?;
        match entries.first() {
            Some(e) if header.status == STATUS_OK && e.seq == from - 1 => {
                f.prev = e.hash;
                f.stats.head_hash = e.hash;
            }
            _ => {
                return Err(JournalError::Protocol(format!(
                    "gap-fill server cannot give record {} to anchor --from {from}",
                    from - 1
                )))
            }
        }
    }
    while !f.done() && !stop.load(Ordering::Relaxed) {
        if !wait_readable(sub, sub_watch, &opts.sub_endpoint, opts.idle_poll_ms)? {
            // Quiet feed: records dropped at the very end of a burst have no later message to
            // reveal them, so ask the server for anything past the last one.
            f.fetch(u64::MAX, false)?;
            continue;
        }
        while !f.done() {
            match sub.recv_bytes(zmq::DONTWAIT) {
                Ok(msg) => f.live(&msg)?,
                Err(zmq::Error::EAGAIN) => break,
                Err(zmq::Error::EINTR) => return Err(JournalError::Interrupted),
                Err(e) => return Err(JournalError::zmq("receive", &opts.sub_endpoint, e)),
            }
        }
    }
    Ok(())
}
