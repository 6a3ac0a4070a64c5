//! How the join keeps an order's rows: one state entry per row, plus two
//! small indexes and the order's rollup contribution per key, all under the
//! order's prefix. No value grows with the order: an order with 30 000 items
//! is 30 000 entries of one row each, and a change to one item reads and
//! writes a handful of them.
//!
//! Keys (every string field is length-prefixed, u32 BE, so no key is a
//! prefix of another's field):
//!
//! | key | value |
//! |---|---|
//! | `o` order_id db id | an order row ([`Sourced<Order>`]) |
//! | `i` order_id id db | an item row, keyed by id first: all items of one id are one prefix |
//! | `s` order_id id db | a shipment row, keyed by id first (`L.id = W.shipment_id` is a prefix scan) |
//! | `w` order_id wmsrecord_id shipment_id db | empty: shipments by `wmsrecord_id` |
//! | `r` order_id shipment_id item_id db | empty: items by `shipment_id` |
//! | `a` order_id rollup-key | the order's items in that rollup key ([`super::contribution`]) |
//! | `b` order_id rollup-key shipment_id db | the order's items in that key served by that shipment |
//! | `O` db id | an orphan item (no `order_id`) |
//!
//! Only the rows (`o`, `i`, `s`, `O`) are logged to the changelog: the
//! indexes and counts are derived from an order's rows, and a restore
//! rebuilds them ([`super::derived`]).

use crate::codec;
use crate::model::{Order, OrderItem, Shipment, Sourced};
use crate::store::StoreError;

pub(super) const ORDER: u8 = b'o';
pub(super) const ITEM: u8 = b'i';
pub(super) const SHIPMENT: u8 = b's';
pub(super) const SHIPMENT_BY_WMS: u8 = b'w';
pub(super) const ITEM_BY_SHIPMENT: u8 = b'r';
pub(super) const KEY_TOTAL: u8 = b'a';
pub(super) const KEY_SHIPMENT: u8 = b'b';
pub(super) const ORPHAN: u8 = b'O';

/// Appends a length-prefixed string.
pub(super) fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `tag` + order_id: the prefix of one kind of entry of one order.
pub(super) fn prefix(tag: u8, order_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + order_id.len() + 32);
    k.push(tag);
    push_str(&mut k, order_id);
    k
}

pub(super) fn order_key(order_id: &str, db: &str, id: &str) -> Vec<u8> {
    let mut k = prefix(ORDER, order_id);
    push_str(&mut k, db);
    push_str(&mut k, id);
    k
}

/// Items and shipments are keyed id first, then database.
pub(super) fn row_key(tag: u8, order_id: &str, id: &str, db: &str) -> Vec<u8> {
    let mut k = prefix(tag, order_id);
    push_str(&mut k, id);
    push_str(&mut k, db);
    k
}

/// The prefix of every row of `tag` with this id (any database).
pub(super) fn id_prefix(tag: u8, order_id: &str, id: &str) -> Vec<u8> {
    let mut k = prefix(tag, order_id);
    push_str(&mut k, id);
    k
}

/// An index entry: `tag` order_id `by` then the row's id and database.
pub(super) fn index_key(tag: u8, order_id: &str, by: &str, id: &str, db: &str) -> Vec<u8> {
    let mut k = id_prefix(tag, order_id, by);
    push_str(&mut k, id);
    push_str(&mut k, db);
    k
}

pub(super) fn orphan_prefix(db: &str) -> Vec<u8> {
    let mut k = vec![ORPHAN];
    push_str(&mut k, db);
    k
}

pub(super) fn orphan_key(db: &str, id: &str) -> Vec<u8> {
    let mut k = orphan_prefix(db);
    push_str(&mut k, id);
    k
}

/// Reads the length-prefixed strings of a key after its first `skip` bytes.
pub(super) struct Fields<'a> {
    key: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    pub(super) fn new(key: &'a [u8], skip: usize) -> Self {
        Fields { key, at: skip }
    }

    pub(super) fn next_str(&mut self) -> Result<&'a str, StoreError> {
        let bad = || StoreError::Corrupt {
            key: self.key.to_vec(),
            source: codec::CodecError::Decode("malformed join state key".into()),
        };
        let len_bytes = self.key.get(self.at..self.at + 4).ok_or_else(bad)?;
        let len = u32::from_be_bytes(len_bytes.try_into().map_err(|_| bad())?) as usize;
        let start = self.at + 4;
        let bytes = self.key.get(start..start + len).ok_or_else(bad)?;
        self.at = start + len;
        std::str::from_utf8(bytes).map_err(|_| bad())
    }
}

/// The order id, and the two strings after it, of a row or index key.
pub(super) fn key_fields(key: &[u8]) -> Result<(&str, &str, &str), StoreError> {
    let mut f = Fields::new(key, 1);
    Ok((f.next_str()?, f.next_str()?, f.next_str()?))
}

/// The last two strings of an index key (the indexed row's id and database).
pub(super) fn index_target(key: &[u8]) -> Result<(&str, &str), StoreError> {
    let mut f = Fields::new(key, 1);
    f.next_str()?; // order id
    f.next_str()?; // indexed value
    Ok((f.next_str()?, f.next_str()?))
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    key: &[u8],
    value: &[u8],
) -> Result<T, StoreError> {
    codec::decode(value).map_err(|source| StoreError::Corrupt {
        key: key.to_vec(),
        source,
    })
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    codec::encode(value).map_err(StoreError::Encode)
}

pub(super) type OrderRow = Sourced<Order>;
pub(super) type ItemRow = Sourced<OrderItem>;
pub(super) type ShipmentRow = Sourced<Shipment>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_and_prefixes_do_not_collide() {
        let k = row_key(ITEM, "A", "12", "wms");
        assert_eq!(key_fields(&k).unwrap(), ("A", "12", "wms"));
        assert!(k.starts_with(&id_prefix(ITEM, "A", "12")));
        assert!(
            !k.starts_with(&id_prefix(ITEM, "A", "1")),
            "id 1 is not a prefix of id 12"
        );
        assert!(!k.starts_with(&prefix(ITEM, "AB")));
        let w = index_key(SHIPMENT_BY_WMS, "A", "7", "30", "logistics");
        assert_eq!(index_target(&w).unwrap(), ("30", "logistics"));
        assert!(index_target(&w[..w.len() - 2]).is_err());
    }
}
