//! The engine's account name table ([`orders::account_names`]): names (`ACC11`) interned to
//! account ids of the named range (≥ 2^31, first-seen order), recorded in the journal.
//!
//! - **Recorded before use.** A name new to the table gets a kind-4 record
//!   ([`audit::KIND_ACCOUNT_NAME`]) appended before any decision that uses its id: `engine
//!   replay` interns the order file's names (and the limits file's) at start-up, before the
//!   pipeline decides anything, so a verifier reading the journal alone sees every name.
//! - **Found again on restart, cheaply.** The whole table is the journal writer's segment
//!   prologue ([`audit::Writer::push_prologue`]): every segment the engine creates starts with
//!   one kind-4 record per name, newest first. Recovery reads at least the last segment ([`crate::recovery`]),
//!   so it sees the whole table without reading older segments; each record's `table_len`
//!   tells whether the table is whole (a crash in the middle of a prologue leaves it partial:
//!   then every record is read for it, [`read_all`], with a warning). Names keep their ids
//!   across restarts, whatever the snapshots cover: the table is not in the risk-state
//!   snapshot, and needs not be.
//! - **Fixed capacity.** `--max-account-names` (default [`default_capacity`]) bounds the
//!   table; a name beyond it is an error, never a silent reuse. The prologue of a full table
//!   must fit in half a segment, which bounds the capacity by the segment size.

use std::path::Path;

use anyhow::Context as _;
use orders::account_names::ACCOUNT_NAME_RECORD_LEN_MAX;
use orders::AccountNames;

/// Default `--max-account-names`, when the segment size allows it.
pub const ACCOUNT_NAMES_DEFAULT: usize = 65_536;

/// Bytes one name takes in a segment's prologue at most (a record of the largest payload).
pub const PROLOGUE_BYTES_PER_NAME: usize =
    32 + ACCOUNT_NAME_RECORD_LEN_MAX.next_multiple_of(8) + 32;

/// The most names whose prologue fits in half a segment of `segment_size_bytes`.
pub fn capacity_for_segment(segment_size_bytes: u64) -> usize {
    let capacity = usize::try_from(segment_size_bytes)
        .unwrap_or(usize::MAX)
        .saturating_sub(audit::format::SEGMENT_HEADER_LEN_BYTES);
    capacity / 2 / PROLOGUE_BYTES_PER_NAME
}

/// `--max-account-names` when not given: [`ACCOUNT_NAMES_DEFAULT`], or fewer when the segment
/// is too small for their prologue.
pub fn default_capacity(segment_size_bytes: u64) -> usize {
    ACCOUNT_NAMES_DEFAULT.min(capacity_for_segment(segment_size_bytes))
}

/// Checks a `--max-account-names` against the segment size.
pub fn check_capacity(max_names: usize, segment_size_bytes: u64) -> anyhow::Result<()> {
    let fits = capacity_for_segment(segment_size_bytes);
    anyhow::ensure!(
        max_names <= fits,
        "--max-account-names {max_names}: the table is written at the start of every journal \
         segment and may take at most half of one; {segment_size_bytes}-byte segments hold \
         {fits} names (raise --segment-size or lower --max-account-names)"
    );
    Ok(())
}

/// Collects the kind-4 records of a pass over the journal. They may come in any order (a
/// segment's prologue is written newest name first, [`audit::Writer::push_prologue`]).
#[derive(Debug, Default)]
pub struct NameCollector {
    by_id: std::collections::BTreeMap<u32, String>,
    by_name: std::collections::HashMap<String, u32>,
    /// The largest `table_len` seen: the table had at least that many names.
    table_len: u32,
}

impl NameCollector {
    /// Takes one kind-4 record; a record that does not decode or contradicts another binding
    /// is damage (the open is refused: the ids would be ambiguous).
    pub fn visit(&mut self, seq: u64, payload: &[u8]) -> Result<(), audit::VisitError> {
        let r = orders::decode_account_name_record(payload)
            .map_err(|e| format!("journal record {seq}: {e}"))?;
        self.table_len = self.table_len.max(r.table_len);
        let by_id = self.by_id.get(&r.id).map(String::as_str);
        let by_name = self.by_name.get(r.name).copied();
        match (by_id, by_name) {
            (Some(n), Some(id)) if n == r.name && id == r.id => Ok(()),
            (None, None) => {
                self.by_id.insert(r.id, r.name.to_owned());
                self.by_name.insert(r.name.to_owned(), r.id);
                Ok(())
            }
            _ => Err(format!(
                "journal record {seq}: account name {:?} bound to id {}, but the journal \
                 binds {} before",
                r.name,
                r.id,
                match (by_id, by_name) {
                    (Some(n), _) if n != r.name => format!("that id to {n:?}"),
                    (_, Some(id)) => format!("that name to id {id}"),
                    _ => "otherwise".to_owned(),
                }
            )
            .into()),
        }
    }

    /// The table, when the records read hold all of it (every id below 2^31 + the largest
    /// `table_len` seen); else how many of how many names were found.
    pub fn finish(self) -> Result<AccountNames, String> {
        let want = u64::from(self.table_len);
        if (self.by_id.len() as u64) < want {
            return Err(format!("{} of {} names", self.by_id.len(), want));
        }
        let mut table = AccountNames::with_capacity(0);
        for (id, name) in &self.by_id {
            // Dense from the base: `decode` bounds each id by its `table_len`, so as many
            // ids as the largest `table_len` are exactly those below base + table_len.
            table
                .insert_recorded(*id, name)
                .map_err(|e| e.to_string())?;
        }
        Ok(table)
    }
}

/// The table from every record of the journal in `dir` (the slow path: each record read and
/// its hash checked).
pub fn read_all(dir: &Path) -> anyhow::Result<AccountNames> {
    let reader = audit::Reader::open(dir)
        .with_context(|| format!("cannot read the journal in {}", dir.display()))?;
    let mut names = NameCollector::default();
    for rec in reader.iter_from(1) {
        let rec = rec.with_context(|| {
            format!(
                "cannot read the journal in {} for its account names",
                dir.display()
            )
        })?;
        if rec.kind == audit::KIND_ACCOUNT_NAME {
            names
                .visit(rec.seq, &rec.payload)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    names.finish().map_err(|missing| {
        anyhow::anyhow!(
            "the journal in {} does not hold its whole account name table ({missing}): \
             records are missing",
            dir.display()
        )
    })
}

/// Ns since the Unix epoch, for the records appended here.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Start-up: interns `names` (the limits file's, then the order file's) into `table` (the
/// journal's, as recovered) under `max_names`, appends (and publishes) a kind-4 record for
/// each new one before anything else is appended, and makes the whole table the writer's
/// segment prologue. Returns how many names were new.
pub fn settle<'a>(
    log: &mut crate::stages::journal::AuditLog,
    table: &mut AccountNames,
    max_names: usize,
    names: impl IntoIterator<Item = &'a str>,
) -> anyhow::Result<usize> {
    table.reserve_to(max_names);
    let ts = now_ns();
    let mut new = 0;
    for name in names {
        let (id, fresh) = table
            .intern(name)
            .context("cannot give the account name an id")?;
        if fresh {
            let payload = table
                .record_of(id)
                .context("a name just interned has no id")?;
            log.append_account_name(ts, &payload)
                .context("cannot journal an account name")?;
            new += 1;
        }
    }
    if new > 0 {
        log.writer
            .sync()
            .context("cannot sync the account name records")?;
        if let Some(p) = &mut log.publisher {
            // The live feed: a failure here is gap-filled like any other (the records are
            // in the journal).
            let _ = p.flush();
        }
    }
    for (id, _) in table.iter() {
        let payload = table
            .record_of(id)
            .context("a name of the table has no id")?;
        log.writer
            .push_prologue(audit::KIND_ACCOUNT_NAME, &payload)
            .context("the account name table does not fit the journal's segments")?;
    }
    Ok(new)
}

/// Maps an order file's local name ids (first-seen order in the file) to `table`'s. Returns
/// `None` when the ids are the same (the common case: a resume of the same file, or a first
/// run), else the map, indexed by local id − 2^31.
pub fn file_map(file: &AccountNames, table: &AccountNames) -> anyhow::Result<Option<Vec<u32>>> {
    let mut map = Vec::with_capacity(file.len());
    let mut same = true;
    for (local, name) in file.iter() {
        let id = table
            .id(name)
            .with_context(|| format!("account name {name:?} has no id in the table"))?;
        same &= id == local;
        map.push(id);
    }
    Ok((!same).then_some(map))
}

/// `engine run`: the ingress's copy of the table. A JSON order naming an account new to the
/// table interns it here and sends its kind-4 record to the journal stage ([`NamesInbox`])
/// before the order goes on: the journal stage appends the records it has received before
/// each batch of decisions, so the record precedes the first decision that uses the id (the
/// name is sent before the order is pushed, and the decision reaches the journal stage only
/// after the order went through the rings). A lookup of a known name allocates nothing;
/// only a new name does (once).
#[derive(Debug)]
pub struct IngressNames {
    table: AccountNames,
    tx: std::sync::mpsc::Sender<Vec<u8>>,
    /// A remote risk client's feed ([`risk::RiskClient::feed_names_from`]), if there is one.
    risk_tx: Option<std::sync::mpsc::Sender<(u32, String)>>,
}

/// The journal stage's end of [`IngressNames`]: the kind-4 records of names interned by the
/// ingress, in id order.
#[derive(Debug)]
pub struct NamesInbox(pub std::sync::mpsc::Receiver<Vec<u8>>);

/// Splits the table (with its capacity) between the ingress and the journal stage.
pub fn ingress_channel(table: AccountNames) -> (IngressNames, NamesInbox) {
    let (tx, rx) = std::sync::mpsc::channel();
    (
        IngressNames {
            table,
            tx,
            risk_tx: None,
        },
        NamesInbox(rx),
    )
}

impl IngressNames {
    /// New names also go to `tx` (a remote risk client, which sends them to its server
    /// before the batch holding the first order that uses them).
    pub fn also_to_risk(&mut self, tx: std::sync::mpsc::Sender<(u32, String)>) {
        self.risk_tx = Some(tx);
    }

    /// The id of `name`, interning it (and sending its record) when new; a bad name or a full
    /// table is an error for the order (counted and logged as a bad message, never reused).
    pub fn id_of(&mut self, name: &str) -> Result<u32, String> {
        if let Some(id) = self.table.id(name) {
            return Ok(id);
        }
        let (id, _) = self.table.intern(name).map_err(|e| e.to_string())?;
        let payload = self
            .table
            .record_of(id)
            .ok_or_else(|| "a name just interned has no id".to_owned())?;
        if let Some(risk) = &self.risk_tx {
            // Before the order is pushed, like the record: the risk stage takes it before
            // the batch that holds the order. A client gone means the pipeline is stopping.
            let _ = risk.send((id, name.to_owned()));
        }
        self.tx
            .send(payload)
            .map_err(|_| "the journal stage has stopped".to_owned())?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use orders::NAMED_ACCOUNT_BASE;

    fn record(id_off: u32, table_len: u32, name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        orders::encode_account_name_record(NAMED_ACCOUNT_BASE + id_off, table_len, name, &mut out);
        out
    }

    #[test]
    fn a_whole_table_is_found_and_a_partial_one_is_told() {
        let mut c = NameCollector::default();
        c.visit(1, &record(0, 1, "A")).unwrap();
        c.visit(2, &record(1, 2, "B")).unwrap();
        c.visit(3, &record(0, 2, "A")).unwrap(); // a prologue restating them
        let t = c.finish().unwrap();
        assert_eq!(t.id("B"), Some(NAMED_ACCOUNT_BASE + 1));

        // A prologue (newest first) cut after its first two records: 2 of 3 names.
        let mut c = NameCollector::default();
        c.visit(9, &record(2, 3, "C")).unwrap();
        c.visit(10, &record(1, 2, "B")).unwrap();
        assert_eq!(c.finish().unwrap_err(), "2 of 3 names");
        // Whole, in any order.
        let mut c = NameCollector::default();
        c.visit(9, &record(2, 3, "C")).unwrap();
        c.visit(10, &record(1, 2, "B")).unwrap();
        c.visit(11, &record(0, 1, "A")).unwrap();
        assert_eq!(c.finish().unwrap().id("C"), Some(NAMED_ACCOUNT_BASE + 2));

        // A contradiction is damage.
        let mut c = NameCollector::default();
        c.visit(1, &record(0, 1, "A")).unwrap();
        assert!(c.visit(2, &record(0, 1, "Z")).is_err());
        assert!(c.visit(2, &record(1, 2, "A")).is_err());
        assert!(c.visit(3, &[1, 2, 3]).is_err());
    }

    #[test]
    fn file_ids_map_to_the_table() {
        let mut file = AccountNames::with_capacity(10);
        file.intern("X").unwrap();
        file.intern("Y").unwrap();
        let mut table = AccountNames::with_capacity(10);
        table.intern("X").unwrap();
        table.intern("Y").unwrap();
        assert_eq!(file_map(&file, &table).unwrap(), None);
        let mut table = AccountNames::with_capacity(10);
        table.intern("Y").unwrap();
        table.intern("X").unwrap();
        assert_eq!(
            file_map(&file, &table).unwrap(),
            Some(vec![NAMED_ACCOUNT_BASE + 1, NAMED_ACCOUNT_BASE])
        );
    }

    #[test]
    fn capacity_follows_the_segment_size() {
        assert_eq!(default_capacity(64 << 20), ACCOUNT_NAMES_DEFAULT);
        let small = default_capacity(64 << 10);
        assert!(small > 0 && small < ACCOUNT_NAMES_DEFAULT);
        check_capacity(small, 64 << 10).unwrap();
        assert!(check_capacity(small + 1, 64 << 10).is_err());
    }
}
