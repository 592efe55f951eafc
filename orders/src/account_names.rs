//! Account names (`ACC11`, a FIX `Account`) interned to the `u32` account id every wire and
//! record carries, and the journal record that binds a name to its id.
//!
//! The account id space is split by bit 31:
//!
//! | ids | what |
//! |---|---|
//! | `0 ..= 2^31 − 1` | numeric accounts: the number is the id |
//! | `2^31 ..= 2^32 − 1` ([`NAMED_ACCOUNT_BASE`] ..) | names, in first-seen order: the first name interned is `2^31`, the next `2^31 + 1`, … |
//!
//! A name is 1 to [`ACCOUNT_NAME_LEN_MAX`] bytes of printable ASCII (`!` to `~`, no space)
//! with at least one byte that is not a digit (an all-digit field is an account number).
//!
//! The table is recorded in the audit journal: a record of kind 4 ([`KIND_ACCOUNT_NAME`])
//! binds one name to its id, appended before the first decision that uses the id, so that a
//! reader of the journal alone sees every name. Its payload (little-endian, 12 + `name_len`
//! bytes):
//!
//! ```text
//!  0        4           8          10         12
//!  +--------+-----------+----------+----------+----------------------+
//!  | id u32 | table_len | name_len | reserved | name [name_len]      |
//!  |        | u32       | u16      | u16 = 0  | printable ASCII      |
//!  +--------+-----------+----------+----------+----------------------+
//! ```
//!
//! `table_len` is how many names the table held once this one was in it (so it is at least
//! `id − 2^31 + 1`): a reader that has seen records for every id below `2^31 + table_len`
//! knows the whole table as of that record. `docs/formats/audit-log.md` has the same layout.

use std::collections::HashMap;

/// The journal record kind of an account-name binding.
pub const KIND_ACCOUNT_NAME: u16 = 4;
/// The first id given to a name; numeric accounts are below it.
pub const NAMED_ACCOUNT_BASE: u32 = 1 << 31;
/// Longest account name, in bytes.
pub const ACCOUNT_NAME_LEN_MAX: usize = 32;
/// Most names a table can ever hold (the whole named range).
pub const ACCOUNT_NAMES_MAX: usize = (u32::MAX - NAMED_ACCOUNT_BASE) as usize + 1;
/// Fixed bytes of a kind-4 payload before the name.
pub const ACCOUNT_NAME_RECORD_HEADER_BYTES: usize = 12;
/// Largest kind-4 payload.
pub const ACCOUNT_NAME_RECORD_LEN_MAX: usize =
    ACCOUNT_NAME_RECORD_HEADER_BYTES + ACCOUNT_NAME_LEN_MAX;

/// Whether `id` lies in the named range.
#[inline]
pub const fn is_named_account(id: u32) -> bool {
    id >= NAMED_ACCOUNT_BASE
}

/// A problem with an account name or the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountNameError {
    /// Not a valid name.
    #[error(
        "bad account name {0:?}: expected 1 to {ACCOUNT_NAME_LEN_MAX} printable ASCII \
         characters (no space), not all digits"
    )]
    Invalid(String),
    /// The table is full.
    #[error(
        "the account name table is full ({capacity} names): cannot intern {name:?} \
         (raise --max-account-names)"
    )]
    Full {
        /// The table's capacity.
        capacity: usize,
        /// The name refused.
        name: String,
    },
    /// A recorded binding contradicts the table.
    #[error("account name {name:?} recorded with id {id}, but {what}")]
    Conflict {
        /// The id recorded.
        id: u32,
        /// The name recorded.
        name: String,
        /// What it contradicts.
        what: String,
    },
}

/// Checks an account name (see the module docs).
pub fn validate_account_name(name: &str) -> Result<(), AccountNameError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= ACCOUNT_NAME_LEN_MAX
        && b.iter().all(|c| c.is_ascii_graphic())
        && !b.iter().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(AccountNameError::Invalid(name.chars().take(64).collect()))
    }
}

/// The name table: names ↔ ids in the named range, dense from [`NAMED_ACCOUNT_BASE`], with a
/// fixed capacity chosen at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountNames {
    names: Vec<String>,
    ids: HashMap<String, u32>,
    capacity: usize,
}

impl AccountNames {
    /// An empty table holding at most `capacity` names (capped at [`ACCOUNT_NAMES_MAX`]).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.min(ACCOUNT_NAMES_MAX);
        AccountNames {
            names: Vec::new(),
            ids: HashMap::new(),
            capacity,
        }
    }

    /// Names in the table.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the table holds no name.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The most names it may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The id of `name`, if interned.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// The name of `id`, if it is one of the table's.
    pub fn name(&self, id: u32) -> Option<&str> {
        let i = id.checked_sub(NAMED_ACCOUNT_BASE)? as usize;
        self.names.get(i).map(String::as_str)
    }

    /// `(id, name)` in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| (NAMED_ACCOUNT_BASE + i as u32, n.as_str()))
    }

    /// The id of `name`, interning it (the next id) when new: `(id, true)` for a new name.
    pub fn intern(&mut self, name: &str) -> Result<(u32, bool), AccountNameError> {
        if let Some(id) = self.id(name) {
            return Ok((id, false));
        }
        validate_account_name(name)?;
        if self.names.len() >= self.capacity {
            return Err(AccountNameError::Full {
                capacity: self.capacity,
                name: name.to_owned(),
            });
        }
        let id = NAMED_ACCOUNT_BASE + self.names.len() as u32;
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        Ok((id, true))
    }

    /// Takes a binding read from a journal record: the same binding again is a no-op, a new
    /// one must be the next id; anything else is a [`AccountNameError::Conflict`]. The
    /// capacity grows to hold what was recorded.
    pub fn insert_recorded(&mut self, id: u32, name: &str) -> Result<(), AccountNameError> {
        let conflict = |what: String| AccountNameError::Conflict {
            id,
            name: name.chars().take(64).collect(),
            what,
        };
        validate_account_name(name).map_err(|_| conflict("the name is not valid".into()))?;
        match (self.name(id), self.id(name)) {
            (Some(n), _) if n == name => Ok(()),
            (Some(n), _) => Err(conflict(format!("that id is {n:?}"))),
            (None, Some(other)) => Err(conflict(format!("the name has id {other}"))),
            (None, None) => {
                let next = NAMED_ACCOUNT_BASE as u64 + self.names.len() as u64;
                if id as u64 != next {
                    return Err(conflict(format!("the next id is {next}")));
                }
                self.names.push(name.to_owned());
                self.ids.insert(name.to_owned(), id);
                self.capacity = self.capacity.max(self.names.len());
                Ok(())
            }
        }
    }

    /// Raises the capacity to at least `capacity` (capped at [`ACCOUNT_NAMES_MAX`]).
    pub fn reserve_to(&mut self, capacity: usize) {
        self.capacity = self.capacity.max(capacity.min(ACCOUNT_NAMES_MAX));
    }

    /// The kind-4 payload binding `id` (one of the table's) with the table's current length.
    pub fn record_of(&self, id: u32) -> Option<Vec<u8>> {
        let name = self.name(id)?;
        let mut out = Vec::with_capacity(ACCOUNT_NAME_RECORD_LEN_MAX);
        encode_account_name_record(id, self.names.len() as u32, name, &mut out);
        Some(out)
    }
}

/// A decoded kind-4 payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountNameRecord<'a> {
    /// The id bound.
    pub id: u32,
    /// Names in the table once this one was in it.
    pub table_len: u32,
    /// The name.
    pub name: &'a str,
}

/// Appends the kind-4 payload of `(id, table_len, name)` to `out`.
pub fn encode_account_name_record(id: u32, table_len: u32, name: &str, out: &mut Vec<u8>) {
    debug_assert!(name.len() <= ACCOUNT_NAME_LEN_MAX);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&table_len.to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(name.as_bytes());
}

/// Why a kind-4 payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountNameRecordError {
    /// Too short, or `name_len` disagrees with the payload's length.
    #[error("account name record of {got} bytes: expected 12 + name_len ({name_len})")]
    Length {
        /// Payload bytes.
        got: usize,
        /// The `name_len` field (0 when the payload is shorter than its header).
        name_len: usize,
    },
    /// Reserved bytes not zero.
    #[error("account name record: reserved bytes are not zero")]
    Reserved,
    /// The id is below the named range, or beyond `table_len`.
    #[error("account name record: id {id} with table_len {table_len} is out of range")]
    Id {
        /// The id.
        id: u32,
        /// The table length.
        table_len: u32,
    },
    /// The name is not a valid name.
    #[error(transparent)]
    Name(#[from] AccountNameError),
}

/// Decodes a kind-4 payload (see the module docs).
pub fn decode_account_name_record(
    payload: &[u8],
) -> Result<AccountNameRecord<'_>, AccountNameRecordError> {
    let h = ACCOUNT_NAME_RECORD_HEADER_BYTES;
    if payload.len() < h {
        return Err(AccountNameRecordError::Length {
            got: payload.len(),
            name_len: 0,
        });
    }
    let u32_at =
        |o: usize| u32::from_le_bytes([payload[o], payload[o + 1], payload[o + 2], payload[o + 3]]);
    let id = u32_at(0);
    let table_len = u32_at(4);
    let name_len = u16::from_le_bytes([payload[8], payload[9]]) as usize;
    if payload[10] != 0 || payload[11] != 0 {
        return Err(AccountNameRecordError::Reserved);
    }
    if payload.len() != h + name_len {
        return Err(AccountNameRecordError::Length {
            got: payload.len(),
            name_len,
        });
    }
    if !is_named_account(id) || (id - NAMED_ACCOUNT_BASE) as u64 >= table_len as u64 {
        return Err(AccountNameRecordError::Id { id, table_len });
    }
    let name = std::str::from_utf8(&payload[h..])
        .map_err(|_| AccountNameError::Invalid(String::from_utf8_lossy(&payload[h..]).into()))?;
    validate_account_name(name)?;
    Ok(AccountNameRecord {
        id,
        table_len,
        name,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_get_ids_in_first_seen_order_from_the_base() {
        let mut t = AccountNames::with_capacity(3);
        assert_eq!(t.intern("ACC11").unwrap(), (NAMED_ACCOUNT_BASE, true));
        assert_eq!(t.intern("ACC2").unwrap(), (NAMED_ACCOUNT_BASE + 1, true));
        assert_eq!(t.intern("ACC11").unwrap(), (NAMED_ACCOUNT_BASE, false));
        assert_eq!(t.name(NAMED_ACCOUNT_BASE + 1), Some("ACC2"));
        assert_eq!(t.name(7), None);
        assert_eq!(t.intern("X").unwrap().0, NAMED_ACCOUNT_BASE + 2);
        assert!(matches!(
            t.intern("Y"),
            Err(AccountNameError::Full { capacity: 3, .. })
        ));
        assert_eq!(t.intern("X").unwrap(), (NAMED_ACCOUNT_BASE + 2, false));
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "123", "has space", "é", &"A".repeat(33), "tab\t"] {
            assert!(validate_account_name(bad).is_err(), "{bad:?}");
        }
        for good in ["ACC11", "a", "007x", "acct-1/sub.2", &"Z".repeat(32)] {
            validate_account_name(good).unwrap();
        }
    }

    #[test]
    fn recorded_bindings_must_be_dense_and_consistent() {
        let mut t = AccountNames::with_capacity(0);
        t.insert_recorded(NAMED_ACCOUNT_BASE, "A").unwrap();
        t.insert_recorded(NAMED_ACCOUNT_BASE, "A").unwrap();
        assert!(t.insert_recorded(NAMED_ACCOUNT_BASE, "B").is_err());
        assert!(t.insert_recorded(NAMED_ACCOUNT_BASE + 1, "A").is_err());
        assert!(t.insert_recorded(NAMED_ACCOUNT_BASE + 2, "C").is_err());
        t.insert_recorded(NAMED_ACCOUNT_BASE + 1, "B").unwrap();
        assert_eq!(t.capacity(), 2);
        assert_eq!(t.id("B"), Some(NAMED_ACCOUNT_BASE + 1));
    }

    #[test]
    fn the_record_layout_is_as_documented() {
        let mut out = Vec::new();
        encode_account_name_record(NAMED_ACCOUNT_BASE + 1, 2, "ACC11", &mut out);
        assert_eq!(
            out,
            [0x01, 0x00, 0x00, 0x80, 0x02, 0, 0, 0, 5, 0, 0, 0, b'A', b'C', b'C', b'1', b'1']
        );
        let r = decode_account_name_record(&out).unwrap();
        assert_eq!(
            (r.id, r.table_len, r.name),
            (NAMED_ACCOUNT_BASE + 1, 2, "ACC11")
        );
    }

    #[test]
    fn malformed_records_do_not_decode() {
        let mut ok = Vec::new();
        encode_account_name_record(NAMED_ACCOUNT_BASE, 1, "AB", &mut ok);
        assert!(decode_account_name_record(&ok[..11]).is_err());
        assert!(decode_account_name_record(&ok[..13]).is_err());
        let mut r = ok.clone();
        r[10] = 1;
        assert_eq!(
            decode_account_name_record(&r),
            Err(AccountNameRecordError::Reserved)
        );
        let mut r = ok.clone();
        r[3] = 0; // id 0: not a named id
        assert!(matches!(
            decode_account_name_record(&r),
            Err(AccountNameRecordError::Id { .. })
        ));
        let mut r = ok.clone();
        r[4] = 0; // table_len 0 < id - base + 1
        assert!(decode_account_name_record(&r).is_err());
        let mut r = ok;
        r[12] = b' ';
        assert!(matches!(
            decode_account_name_record(&r),
            Err(AccountNameRecordError::Name(_))
        ));
    }

    proptest! {
        #[test]
        fn records_round_trip(name in "[!-~]{1,32}", id_off in 0u32..1000, extra in 0u32..1000) {
            prop_assume!(!name.bytes().all(|b| b.is_ascii_digit()));
            let id = NAMED_ACCOUNT_BASE + id_off;
            let mut out = Vec::new();
            encode_account_name_record(id, id_off + 1 + extra, &name, &mut out);
            prop_assert_eq!(out.len(), ACCOUNT_NAME_RECORD_HEADER_BYTES + name.len());
            let r = decode_account_name_record(&out).unwrap();
            prop_assert_eq!((r.id, r.table_len, r.name), (id, id_off + 1 + extra, name.as_str()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_account_name_record(&bytes);
        }

        #[test]
        fn interning_is_a_bijection_that_survives_a_replay_of_its_records(
            names in proptest::collection::vec("[A-Z][A-Z0-9]{0,5}", 0..40)
        ) {
            let mut t = AccountNames::with_capacity(1000);
            let mut records = Vec::new();
            for n in &names {
                let (id, new) = t.intern(n).unwrap();
                prop_assert_eq!(t.name(id), Some(n.as_str()));
                if new {
                    records.push(t.record_of(id).unwrap());
                }
            }
            // A table rebuilt from the records alone is the same table.
            let mut back = AccountNames::with_capacity(0);
            for r in &records {
                let r = decode_account_name_record(r).unwrap();
                back.insert_recorded(r.id, r.name).unwrap();
            }
            prop_assert_eq!(back.len(), t.len());
            for (id, n) in t.iter() {
                prop_assert_eq!(back.id(n), Some(id));
            }
        }
    }
}
