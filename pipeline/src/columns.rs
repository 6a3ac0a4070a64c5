//! The source tables' column names, in one place so they can be aligned with
//! the schemas in `sql/`. The decoder reads only these columns: any other
//! column of a row image is ignored, and a column listed here but absent from
//! an image reads as null.

/// `orders.order_demo`: one customer order.
pub mod order_demo {
    pub const ID: &str = "id";
    pub const ORDER_ID: &str = "order_id";
    /// VARCHAR such as `Rs 52755`.
    pub const ORDER_VALUE: &str = "order_value";
    pub const ORDER_DESCRIPTION: &str = "order_description";
    /// Named `customer_address` in `sql/01_schema.sql`.
    pub const ORDER_ADDRESS: &str = "customer_address";
    pub const CREATED_AT: &str = "created_at";
    pub const UPDATED_AT: &str = "updated_at";

    /// Every column the decoder reads, in the order of [`crate::model::Order`]'s slots.
    pub const ALL: [&str; 7] = [
        ID,
        ORDER_ID,
        ORDER_VALUE,
        ORDER_DESCRIPTION,
        ORDER_ADDRESS,
        CREATED_AT,
        UPDATED_AT,
    ];
}

/// `wms.wms_demo`: one order item picked in a warehouse.
pub mod wms_demo {
    pub const ID: &str = "id";
    pub const ORDER_ID: &str = "order_id";
    pub const ITEM_TYPE: &str = "item_type";
    /// VARCHAR holding a non-negative integer.
    pub const ITEM_QTY: &str = "item_qty";
    pub const SHIPMENT_ID: &str = "shipment_id";
    pub const COURIER: &str = "courier";
    /// Optional: when absent or empty the warehouse is the item row's source database.
    pub const WAREHOUSE_ID: &str = "warehouse_id";
    pub const CREATED_AT: &str = "created_at";
    pub const UPDATED_AT: &str = "updated_at";

    pub const ALL: [&str; 9] = [
        ID,
        ORDER_ID,
        ITEM_TYPE,
        ITEM_QTY,
        SHIPMENT_ID,
        COURIER,
        WAREHOUSE_ID,
        CREATED_AT,
        UPDATED_AT,
    ];
}

/// `logistics.logistics_demo`: one shipment handed to a courier. Its
/// `item_type` column is a DATETIME that carries no meaning and is not read.
pub mod logistics_demo {
    pub const ID: &str = "id";
    pub const ORDER_ID: &str = "order_id";
    pub const WMSRECORD_ID: &str = "wmsrecord_id";
    /// VARCHAR holding an amount, possibly with a currency.
    pub const SHIPMENT_COST: &str = "shipment_cost";
    pub const COURIER: &str = "courier";
    pub const CREATED_AT: &str = "created_at";
    pub const UPDATED_AT: &str = "updated_at";

    pub const ALL: [&str; 7] = [
        ID,
        ORDER_ID,
        WMSRECORD_ID,
        SHIPMENT_COST,
        COURIER,
        CREATED_AT,
        UPDATED_AT,
    ];
}
