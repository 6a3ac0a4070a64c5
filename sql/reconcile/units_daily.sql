-- units_daily: per ship day, warehouse and item type, over shipped items:
--   items = how many shipped items, units = the sum of their quantities.
-- One row per key and measure part; quantities are summed by
-- `outbound reconcile` after its value parser reads them (a quantity it
-- cannot read counts zero), so rows carry each distinct raw quantity with
-- how many items have it.
, shipped AS (SELECT * FROM order_items WHERE ship_day IS NOT NULL {day_filter})
SELECT DATE_FORMAT(ship_day, '%Y-%m-%d') AS day, warehouse AS dim1, item_type AS dim2,
       'items' AS part, NULL AS raw, COUNT(*) AS n
FROM shipped GROUP BY ship_day, warehouse, item_type
UNION ALL
SELECT DATE_FORMAT(ship_day, '%Y-%m-%d'), warehouse, item_type,
       'units', item_qty_raw, COUNT(*)
FROM shipped GROUP BY ship_day, warehouse, item_type, item_qty_raw
ORDER BY day, dim1, dim2, part
