-- Every order item with the order and the shipment it joins, as DESIGN.md §2
-- defines them. The other queries in this folder start from it: details.sql
-- streams it ordered by item, the rollup queries aggregate it.
--
-- The placeholders in braces are filled in by `outbound reconcile` from its
-- configuration (src/reconcile/queries.rs):
--   {items}         the item rows of every warehouse database in scope, each
--                   with `source_db` (its database) and the columns below;
--                   a column a table lacks (warehouse_id, updated_at) is NULL
--   {items_scope}   which items: nothing (all), `WHERE w.id IN (...)` or
--                   `WHERE w.created_at >= ?`
--   {orders_table}, {shipments_table}   <database>.<table>
--   {order_updated_at}, {shipment_updated_at}   the optional column, or NULL
--   {warehouse}     the warehouse rule (warehouse_id, else the database)
--   {time_zone}     the business time zone, as MariaDB's CONVERT_TZ reads it
--
-- Rules, as the business states them:
--   * An id is its text with surrounding whitespace trimmed; an empty id is
--     no id (it joins nothing). Ids compare exactly (case and accents count),
--     hence COLLATE utf8mb4_nopad_bin.
--   * An item's order: among the order rows of its order_id, the greatest id.
--   * An item's shipment: among the shipments of its order, the one whose id
--     is the item's shipment_id; failing that, one whose wmsrecord_id is the
--     item's id. Several candidates: the greatest shipment id.
--   * An item is shipped when it has a shipment. Its ship day is the date of
--     the shipment's created_at (stored as UTC) in the business time zone.
--   * Its warehouse is its warehouse_id when it has one, else its database.
--   * Its courier is the shipment's when that is not blank, else the item's.
--   * MySQL's zero date reads as no date.
--
-- How it runs (src/reconcile/queries.rs sets `derived_merge=off`): each CTE
-- is materialised once per use, and MariaDB indexes it for the joins that
-- look it up. A trimmed key is long text, which those indexes cannot hold,
-- so every order key travels with its MD5 (`order_hash`): the joins match
-- on the hash first and then on the key itself.
WITH
  scope_items AS (
    SELECT
      w.source_db,
      w.id,
      CAST(w.id AS CHAR) COLLATE utf8mb4_nopad_bin                                      AS id_text,
      NULLIF(REGEXP_REPLACE(w.order_id, '^\\s+|\\s+$', ''), '') COLLATE utf8mb4_nopad_bin    AS order_key,
      MD5(NULLIF(REGEXP_REPLACE(w.order_id, '^\\s+|\\s+$', ''), ''))                         AS order_hash,
      NULLIF(REGEXP_REPLACE(w.shipment_id, '^\\s+|\\s+$', ''), '') COLLATE utf8mb4_nopad_bin AS shipment_key,
      NULLIF(REGEXP_REPLACE(w.warehouse_id, '^\\s+|\\s+$', ''), '') COLLATE utf8mb4_nopad_bin AS warehouse_key,
      w.item_type COLLATE utf8mb4_nopad_bin AS item_type,
      w.item_qty COLLATE utf8mb4_nopad_bin  AS item_qty,
      w.courier COLLATE utf8mb4_nopad_bin   AS courier,
      NULLIF(w.created_at, '0000-00-00 00:00:00')                                 AS created_at,
      NULLIF(w.updated_at, '0000-00-00 00:00:00')                                AS updated_at
    FROM {items} w
    {items_scope}
  ),
  all_orders AS (
    SELECT
      o.id,
      NULLIF(REGEXP_REPLACE(o.order_id, '^\\s+|\\s+$', ''), '') COLLATE utf8mb4_nopad_bin AS order_key,
      MD5(NULLIF(REGEXP_REPLACE(o.order_id, '^\\s+|\\s+$', ''), ''))                      AS order_hash,
      o.order_value COLLATE utf8mb4_nopad_bin AS order_value,
      o.order_description,
      o.customer_address,
      NULLIF(o.created_at, '0000-00-00 00:00:00')                                AS created_at,
      NULLIF({order_updated_at}, '0000-00-00 00:00:00')                          AS updated_at
    FROM {orders_table} o
  ),
  -- The order keys of the items in scope: the other tables are narrowed to
  -- them by a join (an IN-subquery on a computed key is re-run per row).
  scope_keys AS (
    SELECT DISTINCT order_key, order_hash FROM scope_items WHERE order_key IS NOT NULL
  ),
  -- "If several order rows share an order_id, the greatest id wins."
  best_order AS (
    SELECT *
    FROM (
      SELECT o.*, ROW_NUMBER() OVER (PARTITION BY o.order_hash, o.order_key ORDER BY o.id DESC) AS rank_in_order
      FROM all_orders o
      JOIN scope_keys k ON k.order_hash = o.order_hash AND k.order_key = o.order_key
    ) ranked
    WHERE rank_in_order = 1
  ),
  all_shipments AS (
    SELECT
      l.id,
      CAST(l.id AS CHAR) COLLATE utf8mb4_nopad_bin                                         AS id_text,
      NULLIF(REGEXP_REPLACE(l.order_id, '^\\s+|\\s+$', ''), '') COLLATE utf8mb4_nopad_bin     AS order_key,
      MD5(NULLIF(REGEXP_REPLACE(l.order_id, '^\\s+|\\s+$', ''), ''))                         AS order_hash,
      NULLIF(REGEXP_REPLACE(l.wmsrecord_id, '^\\s+|\\s+$', ''), '') COLLATE utf8mb4_nopad_bin AS wmsrecord_key,
      l.shipment_cost COLLATE utf8mb4_nopad_bin AS shipment_cost,
      l.courier COLLATE utf8mb4_nopad_bin AS courier,
      NULLIF(l.created_at, '0000-00-00 00:00:00')                                    AS created_at,
      NULLIF({shipment_updated_at}, '0000-00-00 00:00:00')                           AS updated_at
    FROM {shipments_table} l
  ),
  shipments_of_scope AS (
    SELECT l.*
    FROM all_shipments l
    JOIN scope_keys k ON k.order_hash = l.order_hash AND k.order_key = l.order_key
  ),
  -- "L.id = W.shipment_id; failing that, L.wmsrecord_id = W.id; the greatest L.id."
  item_shipment AS (
    SELECT
      w.source_db,
      w.id AS item_id,
      COALESCE(MAX(CASE WHEN l.id_text = w.shipment_key THEN l.id END),
               MAX(CASE WHEN l.wmsrecord_key = w.id_text THEN l.id END)) AS shipment_row_id
    FROM scope_items w
    JOIN shipments_of_scope l ON l.order_hash = w.order_hash AND l.order_key = w.order_key
    GROUP BY w.source_db, w.id
  ),
  order_items AS (
    SELECT
      w.id                                  AS item_row_id,
      w.id_text                             AS item_id,
      w.source_db                           AS item_db,
      w.order_key                           AS order_id,
      w.item_type,
      w.item_qty                            AS item_qty_raw,
      w.shipment_key                        AS item_shipment_id,
      w.courier                             AS item_courier,
      w.warehouse_key                       AS item_warehouse_id,
      w.created_at                          AS item_created_at,
      w.updated_at                          AS item_updated_at,
      o.id                                  AS order_row_id,
      o.order_value                         AS order_value_raw,
      o.order_description,
      o.customer_address                    AS order_address,
      o.created_at                          AS order_created_at,
      o.updated_at                          AS order_updated_at,
      l.id                                  AS shipment_row_id,
      l.wmsrecord_key                       AS shipment_wmsrecord_id,
      l.shipment_cost                       AS shipment_cost_raw,
      l.courier                             AS shipment_courier,
      l.created_at                          AS shipment_created_at,
      l.updated_at                          AS shipment_updated_at,
      CASE WHEN l.id IS NULL THEN 'pending' ELSE 'shipped' END AS status,
      DATE(CONVERT_TZ(l.created_at, '+00:00', '{time_zone}'))  AS ship_day,
      {warehouse}                           AS warehouse,
      COALESCE(CASE WHEN REGEXP_REPLACE(l.courier, '^\\s+|\\s+$', '') <> '' THEN l.courier END,
               w.courier)                   AS courier
    FROM scope_items w
    LEFT JOIN best_order o         ON o.order_hash = w.order_hash AND o.order_key = w.order_key
    LEFT JOIN item_shipment s      ON s.source_db = w.source_db AND s.item_id = w.id
    LEFT JOIN shipments_of_scope l ON l.id = s.shipment_row_id
  )
