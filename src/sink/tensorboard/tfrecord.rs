//! TFRecord framing, the container format of TensorBoard event files.
//!
//! Each record is
//!
//! ```text
//!   u64 LE  length of data
//!   u32 LE  masked CRC-32C of those 8 length bytes
//!   [u8]    data
//!   u32 LE  masked CRC-32C of data
//! ```
//!
//! The CRC is "masked" (rotated and offset) because a CRC computed over
//! bytes that themselves contain CRCs is weak; TensorFlow's
//! `tensorflow/core/lib/hash/crc32c.h` defines the mask, and TensorBoard's
//! readers (`tensorboard/data/server/masked_crc.rs`,
//! `tensorboard/summary/writer/record_writer.py`) check it.

/// The constant TensorFlow adds after rotating a CRC.
const MASK_DELTA: u32 = 0xa282_ead8;

/// Bytes a record adds around its data.
pub const OVERHEAD: usize = 8 + 4 + 4;

/// The masked CRC-32C (Castagnoli) of `data`.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Appends one record holding `data` to `out`.
pub fn append_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.reserve(OVERHEAD + data.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// Why bytes are not a sequence of whole, valid records.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The bytes end inside a record: what a reader sees while a writer is
    /// mid-append, or after a crash tore the last record.
    #[error("truncated record at byte {offset}")]
    Truncated { offset: usize },
    #[error("bad length checksum at byte {offset}")]
    LengthCrc { offset: usize },
    #[error("bad data checksum in the record at byte {offset}")]
    DataCrc { offset: usize },
}

/// Splits `bytes` into the data of its records, checking both checksums.
/// The sink never reads its files back (recovery cuts to a committed
/// length); this exists for tests and diagnostics.
pub fn read_records(bytes: &[u8]) -> Result<Vec<&[u8]>, ReadError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let offset = at;
        let header = bytes
            .get(at..at + 12)
            .ok_or(ReadError::Truncated { offset })?;
        let (len_bytes, len_crc) = header.split_at(8);
        if masked_crc(len_bytes).to_le_bytes() != len_crc {
            return Err(ReadError::LengthCrc { offset });
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let len = usize::try_from(len).map_err(|_| ReadError::Truncated { offset })?;
        let data_end = (at + 12)
            .checked_add(len)
            .ok_or(ReadError::Truncated { offset })?;
        let data = bytes
            .get(at + 12..data_end)
            .ok_or(ReadError::Truncated { offset })?;
        let crc = bytes
            .get(data_end..data_end + 4)
            .ok_or(ReadError::Truncated { offset })?;
        if masked_crc(data).to_le_bytes() != crc {
            return Err(ReadError::DataCrc { offset });
        }
        out.push(data);
        at = data_end + 4;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_mask_match_published_values() {
        // RFC 3720 (iSCSI) B.4: CRC-32C of 32 zero bytes is 0x8a9136aa.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        // Masked values as tensorboard 2.21.0's own masked_crc32c
        // (tensorboard.compat.tensorflow_stub.pywrap_tensorflow) gives them.
        assert_eq!(masked_crc(&[0u8; 32]), 0x0fd7_fffa);
        assert_eq!(masked_crc(b"hello"), 0x191c_1fbb);
    }

    #[test]
    fn empty_record_known_bytes() {
        // A zero-length record: the length is 8 zero bytes, so both
        // checksums are masked CRCs of fixed inputs.
        let mut out = Vec::new();
        append_record(&mut out, b"");
        assert_eq!(out.len(), OVERHEAD);
        assert_eq!(&out[..8], &[0u8; 8]);
        assert_eq!(&out[8..12], &masked_crc(&[0u8; 8]).to_le_bytes());
        assert_eq!(&out[12..], &masked_crc(b"").to_le_bytes());
        assert_eq!(masked_crc(b""), MASK_DELTA, "CRC of nothing is 0");
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let mut out = Vec::new();
        append_record(&mut out, b"hello");
        append_record(&mut out, &[7u8; 300]);
        let first_len = OVERHEAD + 5;
        assert_eq!(
            read_records(&out).unwrap(),
            vec![&b"hello"[..], &[7u8; 300][..]]
        );
        for cut in [1, 11, 12, first_len + 13, out.len() - 1] {
            assert_eq!(
                read_records(&out[..cut]).err(),
                Some(ReadError::Truncated {
                    offset: if cut < first_len { 0 } else { first_len }
                }),
                "cut at {cut}"
            );
        }
        let mut bad = out.clone();
        bad[14] ^= 1;
        assert_eq!(read_records(&bad), Err(ReadError::DataCrc { offset: 0 }));
        let mut bad = out.clone();
        bad[0] ^= 1;
        assert_eq!(read_records(&bad), Err(ReadError::LengthCrc { offset: 0 }));
    }
}
