//! Batch → bulk request body: the items' pre-encoded action and source lines,
//! concatenated in order. Retries build a body from the items still pending,
//! so an item's position in the response maps back to the item.

use bytes::{Bytes, BytesMut};

use super::encoder::BulkItem;

/// The newline-delimited body of one bulk request over `items`, in order.
pub fn bulk_body<'a>(items: impl IntoIterator<Item = &'a BulkItem>) -> Bytes {
    let items: Vec<&BulkItem> = items.into_iter().collect();
    if let [one] = items.as_slice() {
        return one.encoded.clone();
    }
    let len = items.iter().map(|i| i.encoded.len()).sum();
    let mut body = BytesMut::with_capacity(len);
    for item in items {
        body.extend_from_slice(&item.encoded);
    }
    body.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::encoder::tests::targets;
    use crate::sink::encoder::{Encoder, Origin};

    #[test]
    fn concatenates_lines_in_order() {
        let enc = Encoder::new(&targets("", 0), "d", "r", 1 << 20).unwrap();
        let items: Vec<BulkItem> = (0..3)
            .map(|i| {
                let origin = Origin {
                    topic: "d".into(),
                    partition: 0,
                    offset: i,
                };
                let value = (i != 1).then_some(&br#"{"a":1}"#[..]);
                enc.encode(origin, Some(i.to_string().as_bytes()), value, None)
                    .unwrap()
            })
            .collect();
        let body = bulk_body(&items);
        let text = std::str::from_utf8(&body).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            5,
            "index, source, delete, index, source: {text}"
        );
        assert!(lines[0].contains(r#""_id":"0""#) && lines[2].starts_with(r#"{"delete""#));
        assert!(text.ends_with('\n'));
        assert_eq!(bulk_body(&items[2..]), items[2].encoded);
    }
}
