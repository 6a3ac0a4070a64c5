-- units_daily: per ship day, warehouse and item type, over shipped items:
--   items = how many shipped items, units = the sum of their quantities.
-- One row per key and measure part; quantities are summed by
-- `outbound reconcile` after its value parser reads them (a quantity it
-- cannot read counts zero), so rows carry each distinct raw quantity with
-- how many items have it.
--
-- Each shipped item is read once and measured both ways (one row per
-- measure part): naming order_items once keeps the server from computing
-- the whole join once per part.
, shipped AS (SELECT * FROM order_items WHERE ship_day IS NOT NULL {day_filter})
, measured AS (
    SELECT s.ship_day, s.warehouse AS dim1, s.item_type AS dim2, p.part,
           CASE p.part WHEN 'units' THEN s.item_qty_raw END AS raw,
           CONCAT(s.item_db, ':', s.item_row_id)            AS counted
    FROM shipped s
    CROSS JOIN (SELECT 'items' AS part UNION ALL SELECT 'units') p
  )
SELECT DATE_FORMAT(ship_day, '%Y-%m-%d') AS day, dim1, dim2, part, raw,
       COUNT(DISTINCT counted) AS n
FROM measured
GROUP BY ship_day, dim1, dim2, part, raw
ORDER BY day, dim1, dim2, part
