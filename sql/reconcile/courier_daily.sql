-- courier_daily: per ship day and courier, over shipped items:
--   items = shipped items, orders = distinct orders, shipments = distinct
--   shipments, shipping_cost = the sum of the distinct shipments' costs.
-- "Distinct" counts within the key. Costs are summed by `outbound reconcile`
-- after its value parser reads them (a cost it cannot read counts zero), so
-- rows carry each distinct raw cost with how many distinct shipments have it.
, shipped AS (SELECT * FROM order_items WHERE ship_day IS NOT NULL {day_filter})
SELECT DATE_FORMAT(ship_day, '%Y-%m-%d') AS day, courier AS dim1, NULL AS dim2,
       'items' AS part, NULL AS raw, COUNT(*) AS n
FROM shipped GROUP BY ship_day, courier
UNION ALL
SELECT DATE_FORMAT(ship_day, '%Y-%m-%d'), courier, NULL,
       'orders', NULL, COUNT(DISTINCT order_id)
FROM shipped GROUP BY ship_day, courier
UNION ALL
SELECT DATE_FORMAT(ship_day, '%Y-%m-%d'), courier, NULL,
       'shipments', NULL, COUNT(DISTINCT shipment_row_id)
FROM shipped GROUP BY ship_day, courier
UNION ALL
SELECT DATE_FORMAT(ship_day, '%Y-%m-%d'), courier, NULL,
       'shipping_cost', shipment_cost_raw, COUNT(DISTINCT shipment_row_id)
FROM shipped GROUP BY ship_day, courier, shipment_cost_raw
ORDER BY day, dim1, dim2, part
