-- warehouse_daily: per ship day and warehouse, over shipped items:
--   items = shipped items, units = the sum of their quantities,
--   shipping_cost = the sum of the distinct shipments' costs,
--   order_value = the sum of the distinct orders' values.
-- "Distinct" counts within the key: a shipment serving items of two
-- warehouses counts once in each. Amounts are summed by `outbound reconcile`
-- after its value parser reads them (what it cannot read counts zero), so
-- rows carry each distinct raw value with how many items, shipments or
-- orders have it.
, shipped AS (SELECT * FROM order_items WHERE ship_day IS NOT NULL {day_filter})
SELECT DATE_FORMAT(ship_day, '%Y-%m-%d') AS day, warehouse AS dim1, NULL AS dim2,
       'items' AS part, NULL AS raw, COUNT(*) AS n
FROM shipped GROUP BY ship_day, warehouse
UNION ALL
SELECT DATE_FORMAT(ship_day, '%Y-%m-%d'), warehouse, NULL,
       'units', item_qty_raw, COUNT(*)
FROM shipped GROUP BY ship_day, warehouse, item_qty_raw
UNION ALL
SELECT DATE_FORMAT(ship_day, '%Y-%m-%d'), warehouse, NULL,
       'shipping_cost', shipment_cost_raw, COUNT(DISTINCT shipment_row_id)
FROM shipped GROUP BY ship_day, warehouse, shipment_cost_raw
UNION ALL
SELECT DATE_FORMAT(ship_day, '%Y-%m-%d'), warehouse, NULL,
       'order_value', order_value_raw, COUNT(DISTINCT order_id)
FROM shipped GROUP BY ship_day, warehouse, order_value_raw
ORDER BY day, dim1, dim2, part
