-- The expected detail documents: one per order item, a page at a time
-- (keyset pagination on the item's primary key: the items after the last id
-- of the previous page, at most a page of them; see {items_scope} in
-- order_items.sql). Money and quantities come out as the source wrote them;
-- `outbound reconcile` reads them with the pipeline's value parsers, and a
-- value they cannot read becomes null with a data-quality entry.
SELECT
  item_row_id,
  item_id,
  item_db,
  order_id,
  status,
  DATE_FORMAT(ship_day, '%Y-%m-%d')                              AS ship_day,
  warehouse,
  courier,
  item_type,
  item_qty_raw,
  item_shipment_id,
  item_courier,
  item_warehouse_id,
  DATE_FORMAT(item_created_at, '%Y-%m-%dT%H:%i:%s.%fZ')          AS item_created_at,
  DATE_FORMAT(item_updated_at, '%Y-%m-%dT%H:%i:%s.%fZ')          AS item_updated_at,
  CAST(order_row_id AS CHAR)                                     AS order_row_id,
  order_value_raw,
  order_description,
  order_address,
  DATE_FORMAT(order_created_at, '%Y-%m-%dT%H:%i:%s.%fZ')         AS order_created_at,
  DATE_FORMAT(order_updated_at, '%Y-%m-%dT%H:%i:%s.%fZ')         AS order_updated_at,
  CAST(shipment_row_id AS CHAR)                                  AS shipment_row_id,
  shipment_wmsrecord_id,
  shipment_cost_raw,
  shipment_courier,
  DATE_FORMAT(shipment_created_at, '%Y-%m-%dT%H:%i:%s.%fZ')      AS shipment_created_at,
  DATE_FORMAT(shipment_updated_at, '%Y-%m-%dT%H:%i:%s.%fZ')      AS shipment_updated_at
FROM order_items
ORDER BY item_row_id
