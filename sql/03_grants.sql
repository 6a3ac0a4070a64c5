-- Users. Idempotent (CREATE USER IF NOT EXISTS; GRANT only adds).
--
-- debezium: the change-data-capture user, with exactly the privileges
-- Debezium's MySQL-family connectors need, on *.* (they are global privileges):
--   SELECT              read the tables during the initial snapshot
--   RELOAD              FLUSH TABLES [WITH READ LOCK] for a consistent snapshot
--   SHOW DATABASES      list databases during the snapshot
--   REPLICATION SLAVE   read the binary log as a replica
--   REPLICATION CLIENT  SHOW MASTER STATUS / SHOW BINARY LOGS; MariaDB 10.5+
--                       calls this privilege BINLOG MONITOR (same thing)
-- The password matches stack/config/debezium-mariadb.json (local stack only).
CREATE USER IF NOT EXISTS 'debezium'@'%' IDENTIFIED BY 'dbz';
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'debezium'@'%';

-- outbound_app: what the services (and the tests, and outbound's reconcile
-- queries) use to read and write the three databases over TCP.
CREATE USER IF NOT EXISTS 'outbound_app'@'%' IDENTIFIED BY 'outbound';
GRANT SELECT, INSERT, UPDATE, DELETE ON orders.*    TO 'outbound_app'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE ON wms.*       TO 'outbound_app'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE ON logistics.* TO 'outbound_app'@'%';

-- No anonymous accounts: they would shadow the users above for local logins.
DROP USER IF EXISTS ''@'localhost';
FLUSH PRIVILEGES;
