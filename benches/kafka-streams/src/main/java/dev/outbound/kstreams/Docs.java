package dev.outbound.kstreams;

import java.math.BigDecimal;
import java.time.Instant;
import java.time.LocalDate;

import dev.outbound.kstreams.Model.Row;
import dev.outbound.kstreams.Model.Sourced;
import dev.outbound.kstreams.Values.Money;
import dev.outbound.kstreams.Values.Parsed;

/** The detail document of one order item, as pipeline/src/docs.rs builds and serialises it. */
final class Docs {
    private Docs() {}

    /** The item's warehouse: its warehouse_id column when set, else its source database. */
    static String warehouse(Sourced item) {
        return item.row().warehouseId != null ? item.row().warehouseId : item.db();
    }

    /** The shipment's courier when linked and non-blank, else the item's. */
    static String courier(Row item, Row shipment) {
        if (shipment != null && shipment.courier != null && !RustText.trim(shipment.courier).isEmpty()) {
            return shipment.courier;
        }
        return item.courier;
    }

    /** The date of the shipment's created_at in the business time zone. */
    static LocalDate shipDay(Settings s, Row shipment) {
        if (shipment.createdAt == null) return null;
        long us = shipment.createdAt;
        Instant at = Instant.ofEpochSecond(Math.floorDiv(us, 1_000_000L), Math.floorMod(us, 1_000_000L) * 1000);
        return at.atZone(s.businessTz).toLocalDate();
    }

    private static String ts(Long micros) {
        return micros == null ? null : Json.instant(micros);
    }

    private static <T> void unparseable(Json j, String field, Parsed<T> p) {
        if (p.isInvalid()) {
            j.open().field("field", field).field("raw", p.raw).field("problem", "unparseable").close();
        }
    }

    static byte[] itemDoc(Settings s, Sourced item, Sourced order, Sourced shipment) {
        Row i = item.row();
        Row o = order == null ? null : order.row();
        Row sh = shipment == null ? null : shipment.row();
        LocalDate day = sh == null ? null : shipDay(s, sh);
        Json j = new Json().open()
                .field("order_id", i.orderId)
                .field("status", sh != null ? "shipped" : "pending")
                .field("ship_day", day == null ? null : Json.day(day))
                .field("warehouse", warehouse(item))
                .field("courier", courier(i, sh));
        j.openObject("item")
                .field("id", i.id)
                .field("db", item.db())
                .field("item_type", i.itemType)
                .field("item_qty", i.itemQty.isValid() ? i.itemQty.value : null)
                .field("shipment_id", i.shipmentId)
                .field("courier", i.courier)
                .field("warehouse_id", i.warehouseId)
                .field("created_at", ts(i.createdAt))
                .field("updated_at", ts(i.updatedAt))
                .close();
        if (o == null) {
            j.nullField("order");
        } else {
            Money m = o.orderValue.isValid() ? o.orderValue.value : null;
            j.openObject("order")
                    .field("id", o.id)
                    .field("order_value", m == null ? null : Values.text(m.amount()))
                    .field("currency", m == null ? null : m.currency())
                    .field("order_description", o.orderDescription)
                    .field("order_address", o.orderAddress)
                    .field("created_at", ts(o.createdAt))
                    .field("updated_at", ts(o.updatedAt))
                    .close();
        }
        if (sh == null) {
            j.nullField("shipment");
        } else {
            Money m = sh.shipmentCost.isValid() ? sh.shipmentCost.value : null;
            j.openObject("shipment")
                    .field("id", sh.id)
                    .field("wmsrecord_id", sh.wmsrecordId)
                    .field("shipment_cost", m == null ? null : Values.text(m.amount()))
                    .field("currency", m == null ? null : m.currency())
                    .field("courier", sh.courier)
                    .field("created_at", ts(sh.createdAt))
                    .field("updated_at", ts(sh.updatedAt))
                    .close();
        }
        j.openArray("data_quality");
        unparseable(j, "item.item_qty", i.itemQty);
        if (o != null) unparseable(j, "order.order_value", o.orderValue);
        if (sh != null) {
            unparseable(j, "shipment.shipment_cost", sh.shipmentCost);
            if (sh.createdAt == null) {
                j.open().field("field", "shipment.created_at").nullField("raw").field("problem", "missing").close();
            }
        }
        j.closeArray();
        j.openObject("source")
                .field("item_ts_ms", item.tsMs())
                .field("order_ts_ms", order == null ? null : (Long) order.tsMs())
                .field("shipment_ts_ms", shipment == null ? null : (Long) shipment.tsMs())
                .close();
        return j.close().bytes();
    }

    /** The amount a money column contributes to a sum: zero when null or unparseable. */
    static BigDecimal amountOrZero(Parsed<Money> p) {
        return p.isValid() ? p.value.amount() : BigDecimal.ZERO;
    }
}
