//! How batch objects are compressed: none, gzip or zstd, the three `FORMAT CSV` encodings
//! Redshift's COPY reads natively (`GZIP`, `ZSTD`).
//!
//! The consumer compresses a batch's CSV before it writes the object (`consumer.compression`); the
//! importer decompresses it to check it against its metadata before loading it into a warehouse
//! that needs the bytes. The metadata's checksum and size are of the *uncompressed* CSV, so they
//! name the content whatever encoding, level or library version wrote it, and a replayed flush
//! still names the same content.
//!
//! Output is deterministic for a given input (single-threaded encoders at fixed levels), so the
//! same records make the same object bytes too.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// How an object's bytes are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

/// gzip level 1: most of the ratio of the default level 6 at several times the speed; the
/// consumer compresses on its own task, so speed is what matters.
const GZIP_LEVEL: u32 = 1;
/// zstd's default level: better ratio than gzip at a higher speed.
const ZSTD_LEVEL: i32 = 3;

/// A stored object that does not decompress into what its metadata promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("{compression:?} data is corrupt: {detail}")]
    Corrupt {
        compression: Compression,
        detail: String,
    },
    #[error("{compression:?} data inflates past the {limit} bytes its metadata promises")]
    TooLarge { compression: Compression, limit: u64 },
}

impl Compression {
    pub const ALL: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

    /// The object key's extension.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => ".csv",
            Compression::Gzip => ".csv.gz",
            Compression::Zstd => ".csv.zst",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Compression::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The `Content-Encoding` an object of this compression is stored with, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
        }
    }

    /// `data` compressed; `None` compression hands the bytes back as they are.
    pub fn compress(self, data: Vec<u8>) -> Vec<u8> {
        match self {
            Compression::None => data,
            Compression::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 4 + 64),
                    flate2::Compression::new(GZIP_LEVEL),
                );
                encoder.write_all(&data).expect("writing to a Vec cannot fail");
                encoder.finish().expect("writing to a Vec cannot fail")
            }
            Compression::Zstd => zstd::bulk::compress(&data, ZSTD_LEVEL).expect("zstd compresses any input"),
        }
    }

    /// `data` decompressed, refusing to produce more than `limit` bytes (a corrupt or hostile
    /// object must not exhaust memory).
    pub fn decompress(self, data: &[u8], limit: u64) -> Result<Vec<u8>, DecompressError> {
        let corrupt = |e: std::io::Error| DecompressError::Corrupt {
            compression: self,
            detail: e.to_string(),
        };
        let mut out = Vec::with_capacity(limit.min(64 << 20) as usize);
        let read = match self {
            Compression::None => return Ok(data.to_vec()),
            Compression::Gzip => flate2::read::MultiGzDecoder::new(data)
                .take(limit.saturating_add(1))
                .read_to_end(&mut out),
            Compression::Zstd => zstd::stream::read::Decoder::new(data)
                .map_err(corrupt)?
                .take(limit.saturating_add(1))
                .read_to_end(&mut out),
        };
        read.map_err(corrupt)?;
        if out.len() as u64 > limit {
            return Err(DecompressError::TooLarge {
                compression: self,
                limit,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_and_extensions() {
        for c in Compression::ALL {
            assert_eq!(Compression::parse(c.as_str()), Some(c));
        }
        assert_eq!(Compression::parse("lz4"), None);
        assert_eq!(Compression::Zstd.extension(), ".csv.zst");
    }

    #[test]
    fn corrupt_and_oversized_data_is_refused() {
        let csv = b"a,b\n".repeat(1000);
        for c in [Compression::Gzip, Compression::Zstd] {
            let packed = c.compress(csv.clone());
            assert!(packed.len() < csv.len() / 10, "{c:?} compresses");
            assert_eq!(c.decompress(&packed, csv.len() as u64).unwrap(), csv);
            assert_eq!(
                c.decompress(&packed, csv.len() as u64 - 1),
                Err(DecompressError::TooLarge {
                    compression: c,
                    limit: csv.len() as u64 - 1
                })
            );
            let err = c.decompress(b"not compressed at all", 100).unwrap_err();
            assert!(matches!(err, DecompressError::Corrupt { .. }), "{err}");
            // The same input makes the same bytes: a replayed flush rewrites the same object.
            assert_eq!(c.compress(csv.clone()), packed);
        }
    }

    proptest! {
        #[test]
        fn round_trips(data in prop::collection::vec(any::<u8>(), 0..4096)) {
            for c in Compression::ALL {
                let packed = c.compress(data.clone());
                prop_assert_eq!(c.decompress(&packed, data.len() as u64).unwrap(), data.clone());
            }
        }
    }
}
