-- warehouse_daily: per ship day and warehouse, over shipped items:
--   items = shipped items, units = the sum of their quantities,
--   shipping_cost = the sum of the distinct shipments' costs,
--   order_value = the sum of the distinct orders' values.
-- "Distinct" counts within the key: a shipment serving items of two
-- warehouses counts once in each. Amounts are summed by `outbound reconcile`
-- after its value parser reads them (what it cannot read counts zero), so
-- rows carry each distinct raw value with how many items, shipments or
-- orders have it.
--
-- Each shipped item is read once and measured four ways (one row per
-- measure part): naming order_items once keeps the server from computing
-- the whole join once per part.
, shipped AS (SELECT * FROM order_items WHERE ship_day IS NOT NULL {day_filter})
, measured AS (
    SELECT s.ship_day, s.warehouse AS dim1, NULL AS dim2, p.part,
           CASE p.part WHEN 'units'         THEN s.item_qty_raw
                       WHEN 'shipping_cost' THEN s.shipment_cost_raw
                       WHEN 'order_value'   THEN s.order_value_raw END   AS raw,
           -- what the part counts, distinct
           CASE p.part WHEN 'shipping_cost' THEN CAST(s.shipment_row_id AS CHAR)
                       WHEN 'order_value'   THEN s.order_id
                       ELSE CONCAT(s.item_db, ':', s.item_row_id) END    AS counted
    FROM shipped s
    CROSS JOIN (SELECT 'items' AS part UNION ALL SELECT 'units'
                UNION ALL SELECT 'shipping_cost' UNION ALL SELECT 'order_value') p
  )
SELECT DATE_FORMAT(ship_day, '%Y-%m-%d') AS day, dim1, dim2, part, raw,
       COUNT(DISTINCT counted) AS n
FROM measured
GROUP BY ship_day, dim1, dim2, part, raw
ORDER BY day, dim1, dim2, part
