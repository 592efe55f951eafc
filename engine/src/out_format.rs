//! The encodings of the egress messages (`--out-format`, `egress.format`): one message per
//! batch (ours), or one per order for the source design's order-queue consumers, binary or
//! JSON. `docs/formats/egress.md`.
//!
//! [`OutEncoder`] is what the egress stage and the resume redelivery both fill, so a message
//! holds the same orders in both: a batch frame of up to `max_batch` orders, or exactly one
//! order. Back-pressure is per message either way (a message ZeroMQ cannot take is held, and
//! its orders stay on the ring), and the redelivery window (`limits::redelivery_window_records`)
//! counts `max_batch` orders per queued message and 64 bytes per order in the kernel buffer,
//! which over-counts for one-order messages (at least 72 bytes each): the same window covers
//! every format.

use std::io::Write as _;

use crate::frames::{EgressEntry, EgressFrameBuilder};

/// How accepted orders leave the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutFormat {
    /// One binary egress frame per batch (up to `max_batch` orders): the default.
    #[default]
    Batch,
    /// One binary egress frame per order (the same frame layout, `count` = 1).
    Order,
    /// One JSON object per order: `{"order_id","symbol","quantity","price","side"}`.
    Json,
}

impl OutFormat {
    /// `batch`, `order`, `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutFormat::Batch => "batch",
            OutFormat::Order => "order",
            OutFormat::Json => "json",
        }
    }

    /// Parses [`OutFormat::as_str`].
    pub fn parse(text: &str) -> Option<OutFormat> {
        [OutFormat::Batch, OutFormat::Order, OutFormat::Json]
            .into_iter()
            .find(|f| f.as_str() == text)
    }
}

/// Longest JSON message: an id and a quantity of 20 digits, a price of 21, an 8-byte symbol.
const JSON_MESSAGE_LEN_BYTES_MAX: usize = 160;

/// Builds one egress message in buffers allocated at start-up.
#[derive(Debug)]
pub struct OutEncoder {
    format: OutFormat,
    frame: EgressFrameBuilder,
    json: Vec<u8>,
    json_len: usize,
    max: usize,
}

impl OutEncoder {
    /// An encoder for `format`, batches of up to `max_batch` orders (one for `order`/`json`).
    pub fn new(format: OutFormat, max_batch: usize) -> OutEncoder {
        let max = match format {
            OutFormat::Batch => max_batch.clamp(1, crate::frames::EGRESS_FRAME_ENTRIES_MAX),
            OutFormat::Order | OutFormat::Json => 1,
        };
        OutEncoder {
            format,
            frame: EgressFrameBuilder::new(max),
            json: Vec::with_capacity(JSON_MESSAGE_LEN_BYTES_MAX),
            json_len: 0,
            max,
        }
    }

    /// The format.
    pub fn format(&self) -> OutFormat {
        self.format
    }

    /// Most orders one message holds.
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Starts a new message.
    #[inline]
    pub fn clear(&mut self) {
        self.frame.clear();
        self.json_len = 0;
    }

    /// Orders in the message.
    pub fn len(&self) -> usize {
        match self.format {
            OutFormat::Json => self.json_len,
            _ => self.frame.len(),
        }
    }

    /// Whether the message holds no order.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the message holds as many orders as it can.
    pub fn is_full(&self) -> bool {
        match self.format {
            OutFormat::Json => self.json_len == 1,
            _ => self.frame.is_full(),
        }
    }

    /// Adds one order.
    ///
    /// # Panics
    /// If the message is full (callers bound their batch by [`OutEncoder::capacity`]).
    #[inline]
    pub fn push(&mut self, e: &EgressEntry) {
        match self.format {
            OutFormat::Json => {
                assert!(self.json_len == 0, "egress JSON message overflow");
                encode_json(e, &mut self.json);
                self.json_len = 1;
            }
            _ => self.frame.push(e),
        }
    }

    /// The message's bytes.
    #[inline]
    pub fn finish(&mut self) -> &[u8] {
        match self.format {
            OutFormat::Json => &self.json,
            _ => self.frame.finish(),
        }
    }
}

/// `{"order_id":…,"symbol":"…","quantity":…,"price":…,"side":"BUY"|"SELL"}`: the source
/// design's order fields plus `order_id` and `side`; the price is the exact decimal of its
/// ticks (`185.25`). Written into `out` (cleared first; no allocation within its capacity).
pub fn encode_json(e: &EgressEntry, out: &mut Vec<u8>) {
    out.clear();
    let o = &e.order;
    let abs = o.price.unsigned_abs();
    let sign = if o.price < 0 { "-" } else { "" };
    let (int, mut frac) = (abs / 10_000, abs % 10_000);
    let _ = write!(
        out,
        r#"{{"order_id":{},"symbol":"{}","quantity":{},"price":{sign}{int}"#,
        o.order_id,
        o.symbol.as_str(),
        o.qty
    );
    if frac != 0 {
        let mut digits = 4;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        let _ = write!(out, ".{frac:0digits$}");
    }
    let _ = write!(out, r#","side":"{}"}}"#, o.side.as_str());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use orders::{Order, Side, Symbol};

    fn entry(i: u64, price: i64) -> EgressEntry {
        EgressEntry {
            input_seq: i,
            journal_seq: i + 1,
            order: Order {
                order_id: 100 + i,
                price,
                qty: 7,
                symbol: Symbol::new("AAPL").unwrap(),
                side: Side::Sell,
                ..Order::default()
            },
        }
    }

    #[test]
    fn each_format_holds_what_it_says() {
        let mut b = OutEncoder::new(OutFormat::Batch, 3);
        assert_eq!(b.capacity(), 3);
        for i in 0..3 {
            b.push(&entry(i, 1));
        }
        assert!(b.is_full());
        let f = crate::frames::EgressFrame::parse(b.finish()).unwrap();
        assert_eq!(f.iter().count(), 3);

        let mut o = OutEncoder::new(OutFormat::Order, 64);
        assert_eq!(o.capacity(), 1);
        o.push(&entry(5, 1));
        assert!(o.is_full());
        let f = crate::frames::EgressFrame::parse(o.finish()).unwrap();
        let got: Vec<_> = f.iter().map(|e| e.order.order_id).collect();
        assert_eq!(got, vec![105]);

        let mut j = OutEncoder::new(OutFormat::Json, 64);
        assert_eq!(j.capacity(), 1);
        j.push(&entry(6, 1_852_500));
        assert!(j.is_full());
        let v: serde_json::Value = serde_json::from_slice(j.finish()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"order_id":106,"symbol":"AAPL","quantity":7,"price":185.25,"side":"SELL"})
        );
        j.clear();
        assert!(j.is_empty());
        j.push(&entry(7, -5));
        let text = std::str::from_utf8(j.finish()).unwrap().to_owned();
        assert!(text.contains(r#""price":-0.0005"#), "{text}");
    }
}
