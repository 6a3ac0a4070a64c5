-- The original sample rows: one order, its one warehouse item, its one
-- shipment. The item is in the state *before* the original test update
-- (update.sql): quantity 1 and the "64 GB" description.
-- logistics_demo.item_type holds the original's zero date, which MariaDB keeps
-- as 0000-00-00 (allowed: no NO_ZERO_DATE in sql_mode) and Debezium emits as null.
-- INSERT IGNORE with fixed ids: loading twice changes nothing.

SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION';
SET SESSION time_zone = '+00:00';

INSERT IGNORE INTO orders.order_demo
  (`id`, `order_id`, `order_date`, `order_description`, `order_value`, `customer_address`, `created_at`)
VALUES
  (1, '1', '2020-02-02 12:23:25.000000', 'Apple Iphone X Black-64 GB', 'Rs 52755',
   'Jotaro Kujo,No 1,2nd cross,RK Puram, Bangalore -5600103', '2020-02-02 12:23:25.000000');

INSERT IGNORE INTO wms.wms_demo
  (`id`, `order_id`, `item_type`, `courier`, `item_qty`, `item_localtion`, `shipment_id`, `created_at`)
VALUES
  (1, '1', 'electronics', 'DHL', '1', 'RACK12BA3', '2', '2020-02-03 12:28:44.000000');

INSERT IGNORE INTO logistics.logistics_demo
  (`id`, `wmsrecord_id`, `item_type`, `shipment_cost`, `created_at`, `courier`, `order_id`)
VALUES
  (2, '1', '0000-00-00 00:00:00.000000', '24.5', '2020-02-04 00:04:05.000000', 'FETCHR', '1');
