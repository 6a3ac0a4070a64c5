-- courier_daily: per ship day and courier, over shipped items:
--   items = shipped items, orders = distinct orders, shipments = distinct
--   shipments, shipping_cost = the sum of the distinct shipments' costs.
-- "Distinct" counts within the key. Costs are summed by `outbound reconcile`
-- after its value parser reads them (a cost it cannot read counts zero), so
-- rows carry each distinct raw cost with how many distinct shipments have it.
--
-- Each shipped item is read once and measured four ways (one row per
-- measure part): naming order_items once keeps the server from computing
-- the whole join once per part.
, shipped AS (SELECT * FROM order_items WHERE ship_day IS NOT NULL {day_filter})
, measured AS (
    SELECT s.ship_day, s.courier AS dim1, NULL AS dim2, p.part,
           CASE p.part WHEN 'shipping_cost' THEN s.shipment_cost_raw END AS raw,
           -- what the part counts, distinct
           CASE p.part WHEN 'orders' THEN s.order_id
                       WHEN 'items'  THEN CONCAT(s.item_db, ':', s.item_row_id)
                       ELSE CAST(s.shipment_row_id AS CHAR) END          AS counted
    FROM shipped s
    CROSS JOIN (SELECT 'items' AS part UNION ALL SELECT 'orders'
                UNION ALL SELECT 'shipments' UNION ALL SELECT 'shipping_cost') p
  )
SELECT DATE_FORMAT(ship_day, '%Y-%m-%d') AS day, dim1, dim2, part, raw,
       COUNT(DISTINCT counted) AS n
FROM measured
GROUP BY ship_day, dim1, dim2, part, raw
ORDER BY day, dim1, dim2, part
