//! The compact binary encoding of everything the pipeline keeps in state or
//! sends on internal topics (`KeyedChange`, `RollupDelta`, stored rows and
//! counters): one format-version byte, then bincode 2 (standard config) of the
//! value's serde form.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The first byte of every encoded record.
/// 2: decimals as mantissa and scale; join state as one record per order.
/// 3: versions are binlog positions ([`crate::model::Version`]); join state
/// as one record per row.
pub const FORMAT_VERSION: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("unknown format version {0} (this build reads {FORMAT_VERSION})")]
    Version(u8),
    #[error("cannot decode record: {0}")]
    Decode(String),
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    #[error("cannot encode record: {0}")]
    Encode(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// [`encode`], appending to `out`.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(())
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version(version));
    }
    let (value, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let bytes = encode(&(1u32, "x".to_string())).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(
            decode::<(u32, String)>(&bytes).unwrap(),
            (1, "x".to_string())
        );
        assert!(matches!(decode::<u32>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<u32>(&[9, 1]),
            Err(CodecError::Version(9))
        ));
        assert!(matches!(
            decode::<u8>(&[FORMAT_VERSION, 1, 2]),
            Err(CodecError::Trailing(1))
        ));
    }
}
