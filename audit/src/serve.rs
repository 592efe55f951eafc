//! The gap-fill service (`audit serve`): a REP socket that returns any range of records from
//! the journal files. The files, not the live feed, are the source of truth (Titanic).
//!
//! The service follows the journal as it grows: before each answer it reads (and verifies)
//! the records appended since the previous one, remembering the position of every
//! [`SERVE_INDEX_EVERY_RECORDS`]-th record so that a request seeks instead of scanning.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use metrics_endpoint::bump;

use zauth::ServerAuth;

use crate::error::JournalError;
use crate::format::{GENESIS_HASH, HASH_LEN_BYTES};
use crate::limits::{
    SERVE_ERROR_TEXT_BYTES_MAX, SERVE_INDEX_EVERY_RECORDS, SERVE_POLL_MS, SERVE_REPLY_BYTES_MAX,
    SERVE_REPLY_RECORDS_MAX, SERVE_REQUEST_BYTES_MAX,
};
use crate::reader::{Position, Reader};
use crate::security::bind_server;
use crate::wire::{
    entry_len, push_entry, GapReplyHeader, GapRequest, REPLY_HEADER_LEN_BYTES, STATUS_BAD_REQUEST,
    STATUS_JOURNAL_ERROR, STATUS_OK,
};

/// Answers gap-fill requests for one journal directory.
#[derive(Debug)]
pub struct GapFill {
    dir: PathBuf,
    reader: Option<Reader>,
    head: Option<Position>,
    head_seq: u64,
    head_hash: [u8; HASH_LEN_BYTES],
    /// Positions of records 1, 1+K, 1+2K, ... (K = SERVE_INDEX_EVERY_RECORDS).
    index: Vec<(u64, Position)>,
}

/// Counters of a running service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Requests answered.
    pub requests: u64,
    /// Records sent.
    pub records: u64,
    /// Requests answered with an error status.
    pub errors: u64,
}

/// The counters of a running service, written by its thread alone (relaxed load and store)
/// and read by the metrics endpoint (`audit serve --metrics`) at scrape time.
#[derive(Debug, Default)]
pub struct ServeCounters {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Records sent.
    pub records: AtomicU64,
    /// Reply bytes sent (headers, entries and error texts).
    pub reply_bytes: AtomicU64,
    /// Requests answered with status bad-request (not a 32-byte gap request).
    pub bad_requests: AtomicU64,
    /// Requests answered with status journal-error (the journal could not be read or verified).
    pub journal_errors: AtomicU64,
    /// The head sequence number the latest answer reported (0: empty journal).
    pub head_seq: AtomicU64,
}

impl ServeCounters {
    /// Counts one reply (`header` decoded from it, `len` bytes in all).
    pub fn count(&self, header: &GapReplyHeader, len: usize) {
        bump(&self.requests, 1);
        bump(&self.reply_bytes, len as u64);
        match header.status {
            STATUS_OK => bump(&self.records, u64::from(header.count)),
            STATUS_BAD_REQUEST => bump(&self.bad_requests, 1),
            _ => bump(&self.journal_errors, 1),
        }
        self.head_seq.store(header.head_seq, Ordering::Relaxed);
    }

    /// The counts as [`ServeStats`].
    pub fn stats(&self) -> ServeStats {
        let bad = self.bad_requests.load(Ordering::Relaxed);
        let journal = self.journal_errors.load(Ordering::Relaxed);
        ServeStats {
            requests: self.requests.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            errors: bad.saturating_add(journal),
        }
    }
}

impl GapFill {
    /// A service for the journal in `dir` (which may not exist yet).
    pub fn new(dir: &Path) -> GapFill {
        GapFill {
            dir: dir.to_path_buf(),
            reader: None,
            head: None,
            head_seq: 0,
            head_hash: GENESIS_HASH,
            index: Vec::new(),
        }
    }

    /// The last record seen by the latest answer (0 and the genesis hash when empty).
    pub fn head(&self) -> (u64, [u8; HASH_LEN_BYTES]) {
        (self.head_seq, self.head_hash)
    }

    /// Reads the records appended since the last call, verifying them.
    fn advance(&mut self) -> Result<(), JournalError> {
        if self.reader.is_none() {
            if !self.dir.exists() {
                // The writer has not created the journal yet: nothing to serve, no error.
                return Ok(());
            }
            match Reader::open(&self.dir) {
                Ok(r) => self.reader = Some(r),
                Err(JournalError::NoJournal { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let GapFill {
            reader,
            head,
            head_seq,
            head_hash,
            index,
            ..
        } = self;
        let Some(reader) = reader.as_mut() else {
            return Ok(());
        };
        reader.refresh()?;
        let mut it = match head {
            Some(p) => reader.records_at(*p),
            None => reader.iter_from(1),
        };
        loop {
            let before = it.position();
            match it.next() {
                None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(r)) => {
                    if (r.seq - 1) % SERVE_INDEX_EVERY_RECORDS == 0 {
                        if let Some(p) = before {
                            index.push((r.seq, p));
                        }
                    }
                    *head_seq = r.seq;
                    *head_hash = r.hash;
                }
            }
        }
        if let Some(p) = it.position() {
            *head = Some(p);
        }
        Ok(())
    }

    /// Answers one request (the bytes received) into `out` (cleared first).
    pub fn answer(&mut self, request: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(SERVE_REPLY_BYTES_MAX);
        out.resize(REPLY_HEADER_LEN_BYTES, 0);
        let req = match GapRequest::decode(request) {
            Ok(r) => r,
            Err(msg) => return self.error_reply(out, STATUS_BAD_REQUEST, &msg),
        };
        if let Err(e) = self.advance() {
            return self.error_reply(out, STATUS_JOURNAL_ERROR, &e.to_string());
        }
        let max_records = match req.max_records {
            0 => SERVE_REPLY_RECORDS_MAX,
            n => n.min(SERVE_REPLY_RECORDS_MAX),
        };
        let mut count = 0u32;
        if req.from_seq <= self.head_seq {
            let Some(reader) = self.reader.as_ref() else {
                return self.error_reply(out, STATUS_JOURNAL_ERROR, "journal vanished");
            };
            let at = self.index.partition_point(|(s, _)| *s <= req.from_seq);
            let it = match at {
                0 => reader.iter_from(req.from_seq),
                i => reader.records_at(self.index[i - 1].1),
            };
            for r in it {
                let r = match r {
                    Ok(r) => r,
                    Err(e) => return self.error_reply(out, STATUS_JOURNAL_ERROR, &e.to_string()),
                };
                if r.seq < req.from_seq {
                    continue;
                }
                if r.seq > req.to_seq
                    || count >= max_records
                    || (count > 0 && out.len() + entry_len(r.payload.len()) > SERVE_REPLY_BYTES_MAX)
                {
                    break;
                }
                push_entry(out, r.seq, &r.hash, r.kind, r.ts_ns, &r.payload);
                count += 1;
            }
        }
        GapReplyHeader {
            status: STATUS_OK,
            count,
            head_seq: self.head_seq,
            head_hash: self.head_hash,
        }
        .encode_into(out);
    }

    fn error_reply(&self, out: &mut Vec<u8>, status: u16, msg: &str) {
        out.clear();
        out.resize(REPLY_HEADER_LEN_BYTES, 0);
        GapReplyHeader {
            status,
            count: 0,
            head_seq: self.head_seq,
            head_hash: self.head_hash,
        }
        .encode_into(out);
        out.extend_from_slice(truncate_text(msg, SERVE_ERROR_TEXT_BYTES_MAX).as_bytes());
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncate_text(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Runs the gap-fill service on a REP socket bound to `endpoint` until `stop` is set, with
/// the default security policy (in-process, ipc and loopback endpoints only; see
/// [`serve_secure`]). `on_bound` receives the bound endpoint (with the port chosen for
/// `tcp://host:*`).
pub fn serve(
    ctx: &zmq::Context,
    dir: &Path,
    endpoint: &str,
    stop: &AtomicBool,
    on_bound: &mut dyn FnMut(&str),
) -> Result<ServeStats, JournalError> {
    serve_secure(ctx, dir, endpoint, &ServerAuth::default(), stop, on_bound)
}

/// [`serve`] under an authentication policy: a remote endpoint needs an allow-list or PLAIN
/// credentials (or `auth.insecure`), and when `auth` configures either, a ZAP handler must
/// already run on `ctx` ([`zauth::ZapHandler::start`]). Requests larger than
/// [`SERVE_REQUEST_BYTES_MAX`] are dropped by libzmq before they are allocated.
pub fn serve_secure(
    ctx: &zmq::Context,
    dir: &Path,
    endpoint: &str,
    auth: &ServerAuth,
    stop: &AtomicBool,
    on_bound: &mut dyn FnMut(&str),
) -> Result<ServeStats, JournalError> {
    let counters = ServeCounters::default();
    serve_counted(ctx, dir, endpoint, auth, stop, on_bound, &counters)
}

/// [`serve_secure`], counting into `counters` as it goes (the metrics endpoint of
/// `audit serve --metrics` reads them while it runs). Returns the counts at the end.
pub fn serve_counted(
    ctx: &zmq::Context,
    dir: &Path,
    endpoint: &str,
    auth: &ServerAuth,
    stop: &AtomicBool,
    on_bound: &mut dyn FnMut(&str),
    counters: &ServeCounters,
) -> Result<ServeStats, JournalError> {
    let socket = ctx
        .socket(zmq::REP)
        .map_err(|e| JournalError::zmq("create REP socket", endpoint, e))?;
    socket
        .set_linger(0)
        .map_err(|e| JournalError::zmq("set LINGER", endpoint, e))?;
    socket
        .set_maxmsgsize(SERVE_REQUEST_BYTES_MAX as i64)
        .map_err(|e| JournalError::zmq("set MAXMSGSIZE", endpoint, e))?;
    let bound = bind_server(ctx, &socket, endpoint, auth)?;
    on_bound(&bound);
    let mut gap = GapFill::new(dir);
    let mut out = Vec::with_capacity(SERVE_REPLY_BYTES_MAX);
    // A signal (SIGTERM, SIGINT: the caller's stop request) interrupts a blocking call with
    // EINTR: the loop then looks at `stop` again instead of failing.
    while !stop.load(Ordering::Relaxed) {
        let ready = match socket.poll(zmq::POLLIN, SERVE_POLL_MS) {
            Ok(n) => n,
            Err(zmq::Error::EINTR) => continue,
            Err(e) => return Err(JournalError::zmq("poll", &bound, e)),
        };
        if ready == 0 {
            continue;
        }
        let frames = match socket.recv_multipart(0) {
            Ok(f) => f,
            Err(zmq::Error::EINTR) => continue,
            Err(e) => return Err(JournalError::zmq("receive", &bound, e)),
        };
        match frames.as_slice() {
            [one] if one.len() <= SERVE_REQUEST_BYTES_MAX => gap.answer(one, &mut out),
            _ => gap.error_reply(
                &mut out,
                STATUS_BAD_REQUEST,
                "a request is one frame of 32 bytes",
            ),
        }
        let (header, _) = GapReplyHeader::decode(&out)?;
        counters.count(&header, out.len());
        match socket.send(&out[..], 0) {
            // Interrupted by the stop request: the reply is lost, the loop ends.
            Ok(()) | Err(zmq::Error::EINTR) => {}
            Err(e) => return Err(JournalError::zmq("send", &bound, e)),
        }
    }
    Ok(counters.stats())
}

/// The collector of `audit serve --metrics`: reads a service's [`ServeCounters`] (and, when
/// the server authenticates, its ZAP handler's counters) at every scrape. Sample names (a
/// counter family `x` is sampled as `x_total`; docs/monitoring.md is the reference):
///
/// | sample | type | labels |
/// |---|---|---|
/// | `audit_serve_requests_total` | counter | |
/// | `audit_serve_records_total` | counter | |
/// | `audit_serve_reply_bytes_total` | counter | |
/// | `audit_serve_errors_total` | counter | `status` = `bad-request`, `journal-error` |
/// | `audit_serve_head_seq` | gauge | |
/// | `audit_serve_connections_total` | counter | `result` = `accepted`, `refused` |
#[derive(Debug)]
pub struct ServeCollector {
    counters: std::sync::Arc<ServeCounters>,
    zap: Option<std::sync::Arc<zauth::ZapStats>>,
}

impl ServeCollector {
    /// A collector over `counters` and the ZAP handler's counters, if one runs (without one,
    /// no connection is authenticated: both counts stay 0).
    pub fn new(
        counters: std::sync::Arc<ServeCounters>,
        zap: Option<std::sync::Arc<zauth::ZapStats>>,
    ) -> Self {
        ServeCollector { counters, zap }
    }
}

impl metrics_endpoint::Collector for ServeCollector {
    fn encode(&self, mut enc: metrics_endpoint::DescriptorEncoder) -> std::fmt::Result {
        use metrics_endpoint::{counter, counter_family, gauge};
        let c = &*self.counters;
        let e = &mut enc;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            e,
            "audit_serve_requests",
            "Gap-fill requests answered.",
            l(&c.requests),
        )?;
        counter(
            e,
            "audit_serve_records",
            "Journal records sent in gap-fill replies.",
            l(&c.records),
        )?;
        counter(
            e,
            "audit_serve_reply_bytes",
            "Reply bytes sent.",
            l(&c.reply_bytes),
        )?;
        counter_family(
            e,
            "audit_serve_errors",
            "Requests answered with an error status.",
            ["status"],
            [
                (["bad-request"], l(&c.bad_requests)),
                (["journal-error"], l(&c.journal_errors)),
            ],
        )?;
        gauge(
            e,
            "audit_serve_head_seq",
            "Head sequence number reported by the latest reply (0: empty journal or no request yet).",
            l(&c.head_seq),
        )?;
        let (accepted, refused) = self.zap.as_ref().map_or((0, 0), |z| {
            (
                z.accepted.load(Ordering::Relaxed),
                z.refused.load(Ordering::Relaxed),
            )
        });
        counter_family(
            e,
            "audit_serve_connections",
            "Connections authenticated by the ZAP handler (0 without authentication).",
            ["result"],
            [(["accepted"], accepted), (["refused"], refused)],
        )
    }
}

#[cfg(test)]
mod metrics_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_replies_by_status_and_exposes_them() {
        let c = Arc::new(ServeCounters::default());
        let ok = GapReplyHeader {
            status: STATUS_OK,
            count: 3,
            head_seq: 9,
            head_hash: GENESIS_HASH,
        };
        c.count(&ok, 100);
        c.count(
            &GapReplyHeader {
                status: STATUS_BAD_REQUEST,
                count: 0,
                ..ok
            },
            50,
        );
        c.count(
            &GapReplyHeader {
                status: STATUS_JOURNAL_ERROR,
                count: 0,
                ..ok
            },
            60,
        );
        assert_eq!(
            c.stats(),
            ServeStats {
                requests: 3,
                records: 3,
                errors: 2
            }
        );
        let zap = Arc::new(zauth::ZapStats::default());
        zap.accepted.store(4, Ordering::Relaxed);
        let text = metrics_endpoint::render(&metrics_endpoint::registry_of(ServeCollector::new(
            Arc::clone(&c),
            Some(zap),
        )));
        let e = metrics_endpoint::exposition::parse(&text).unwrap();
        assert_eq!(e.value("audit_serve_requests_total", &[]), Some(3.0));
        assert_eq!(e.value("audit_serve_records_total", &[]), Some(3.0));
        assert_eq!(e.value("audit_serve_reply_bytes_total", &[]), Some(210.0));
        assert_eq!(
            e.value("audit_serve_errors_total", &[("status", "journal-error")]),
            Some(1.0)
        );
        assert_eq!(e.value("audit_serve_head_seq", &[]), Some(9.0));
        assert_eq!(
            e.value("audit_serve_connections_total", &[("result", "accepted")]),
            Some(4.0)
        );
    }
}
