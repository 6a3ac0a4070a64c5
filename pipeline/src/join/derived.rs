//! The join state's derived entries: the two indexes (`w`, `r`) and the rollup
//! counts (`a`, `b`) of [`super::layout`] are a function of an order's rows
//! (`o`, `i`, `s`). They are kept in the store so a change reads only what it
//! touches, but they need not be logged: a changelog of the rows alone is
//! enough to rebuild them, order by order. Logging only the rows is what
//! makes one item change one changelog record instead of up to seven.

use std::collections::BTreeMap;

use super::contribution::{self, Shipped};
use super::layout::*;
use super::{shipped, Join};
use crate::config::PipelineConfig;
use crate::store::{StateStore, StoreError};

/// The tags of the derived entries.
const DERIVED: [u8; 4] = [SHIPMENT_BY_WMS, ITEM_BY_SHIPMENT, KEY_TOTAL, KEY_SHIPMENT];

/// Whether a join state key is derived from the rows (and so need not be
/// logged: [`rebuild`] recreates it).
pub fn is_derived(key: &[u8]) -> bool {
    key.first().is_some_and(|t| DERIVED.contains(t))
}

/// The order a join state key belongs to: every key but an orphan item's
/// (which has no order and nothing derived from it). `None` also for a key
/// that does not parse.
pub fn owner(key: &[u8]) -> Option<&str> {
    match key.first() {
        Some(&ORDER | &ITEM | &SHIPMENT) => {}
        Some(t) if DERIVED.contains(t) => {}
        _ => return None,
    }
    Fields::new(key, 1).next_str().ok()
}

/// The `w` entries an order's shipment rows give.
fn wms_index<S: StateStore + ?Sized>(
    store: &S,
    order_id: &str,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
    let mut want = BTreeMap::new();
    for (k, v) in store.scan_prefix(&prefix(SHIPMENT, order_id))? {
        let s: ShipmentRow = decode(&k, &v)?;
        if let Some(w) = s.row.wmsrecord_id.as_deref() {
            want.insert(
                index_key(SHIPMENT_BY_WMS, order_id, w, &s.row.id, &s.db),
                Vec::new(),
            );
        }
    }
    Ok(want)
}

/// The `r`, `a` and `b` entries an order's rows give, with the store's `w`
/// index (which [`Join::shipment_of`] reads) taken as right.
fn item_entries<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
    order_id: &str,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
    let mut want = BTreeMap::new();
    let items: Vec<ItemRow> = store
        .scan_prefix(&prefix(ITEM, order_id))?
        .into_iter()
        .map(|(k, v)| decode(&k, &v))
        .collect::<Result<_, _>>()?;
    for item in &items {
        if let Some(sid) = item.row.shipment_id.as_deref() {
            want.insert(
                index_key(ITEM_BY_SHIPMENT, order_id, sid, &item.row.id, &item.db),
                Vec::new(),
            );
        }
    }
    let join = Join::new(config, store, order_id);
    let mut linked = Vec::with_capacity(items.len());
    for item in items {
        let s = join.shipment_of(&item.row)?;
        linked.push((item, s));
    }
    let shipped: Vec<Shipped<'_>> = linked
        .iter()
        .filter_map(|(i, s)| shipped(config, i, s.as_ref()))
        .collect();
    want.extend(contribution::recompute(order_id, &shipped)?);
    Ok(want)
}

/// The derived entries the store holds for an order, by tag.
fn held<S: StateStore + ?Sized>(
    store: &S,
    order_id: &str,
    tags: &[u8],
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
    let mut have = BTreeMap::new();
    for tag in tags {
        have.extend(store.scan_prefix(&prefix(*tag, order_id))?);
    }
    Ok(have)
}

/// Makes the store's entries under `tags` of the order exactly `want`.
fn replace<S: StateStore + ?Sized>(
    store: &mut S,
    order_id: &str,
    tags: &[u8],
    want: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<(), StoreError> {
    let have = held(store, order_id, tags)?;
    for k in have.keys().filter(|k| !want.contains_key(*k)) {
        store.delete(k)?;
    }
    for (k, v) in want {
        if have.get(k) != Some(v) {
            store.put(k, v)?;
        }
    }
    Ok(())
}

/// Recreates the derived entries of one order from its rows, leaving none
/// that the rows do not give: what a restore does for every order whose rows
/// it brought back.
pub fn rebuild<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
    order_id: &str,
) -> Result<(), StoreError> {
    // The `w` index first: finding an item's shipment reads it.
    let wms = wms_index(store, order_id)?;
    replace(store, order_id, &[SHIPMENT_BY_WMS], &wms)?;
    let rest = item_entries(config, store, order_id)?;
    replace(
        store,
        order_id,
        &[ITEM_BY_SHIPMENT, KEY_TOTAL, KEY_SHIPMENT],
        &rest,
    )
}

/// What differs between the derived entries an order has and those its rows
/// give, or `None` when they agree. For tests: it reads the whole order.
pub(super) fn check<S: StateStore + ?Sized>(
    config: &PipelineConfig,
    store: &mut S,
    order_id: &str,
) -> Result<Option<String>, StoreError> {
    let mut want = wms_index(store, order_id)?;
    want.extend(item_entries(config, store, order_id)?);
    let have = held(store, order_id, &DERIVED)?;
    if have == want {
        return Ok(None);
    }
    let names = |keys: Vec<&Vec<u8>>| -> Vec<String> {
        keys.into_iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    };
    let missing = names(want.keys().filter(|k| !have.contains_key(*k)).collect());
    let extra = names(have.keys().filter(|k| !want.contains_key(*k)).collect());
    let differ = names(
        want.iter()
            .filter(|(k, v)| have.get(*k).is_some_and(|h| h != *v))
            .map(|(k, _)| k)
            .collect(),
    );
    Ok(Some(format!(
        "order {order_id:?}: join state indexes or counts differ from its rows: missing {missing:?}, extra {extra:?}, different {differ:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_logged_and_indexes_and_counts_are_not() {
        assert!(!is_derived(&row_key(ITEM, "A", "1", "wms")));
        assert!(!is_derived(&order_key("A", "oms", "1")));
        assert!(!is_derived(&orphan_key("wms", "1")));
        assert!(is_derived(&index_key(
            ITEM_BY_SHIPMENT,
            "A",
            "s",
            "1",
            "wms"
        )));
        assert!(is_derived(&prefix(KEY_TOTAL, "A")));
        assert!(!is_derived(b""));
        assert_eq!(owner(&row_key(SHIPMENT, "A7", "1", "tms")), Some("A7"));
        assert_eq!(owner(&prefix(KEY_SHIPMENT, "B")), Some("B"));
        assert_eq!(owner(&orphan_key("wms", "1")), None);
        assert_eq!(owner(&[ITEM, 0, 0]), None, "a key that does not parse");
    }
}
