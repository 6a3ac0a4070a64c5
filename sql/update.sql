-- The original test update: the item's quantity 1 -> 2 and the order's
-- description "64 GB" -> "128 GB". Apply it after the seed to see `u` change
-- events (before and after images) on outbound.wms.wms_demo and
-- outbound.orders.order_demo:
--   mariadb -h 127.0.0.1 -P 3306 -u outbound_app -poutbound < sql/update.sql
-- Applying it twice changes nothing the second time.
UPDATE wms.wms_demo SET item_qty = '2' WHERE id = 1;
UPDATE orders.order_demo SET order_description = 'Apple Iphone X Black-128 GB' WHERE id = 1;
