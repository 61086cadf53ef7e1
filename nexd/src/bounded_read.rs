//! Reading files whose size someone else decides (the config, a key file, the state file)
//! with a cap, so `--config /dev/zero` or a huge file costs at most the cap in memory.

use std::io::{self, Read};

/// Why a bounded read failed.
#[derive(Debug, thiserror::Error)]
pub enum BoundedReadError {
    /// The OS refused the read.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// More than the cap.
    #[error("larger than {limit} bytes; refusing to read it")]
    TooLarge {
        /// The cap in bytes.
        limit: u64,
    },
    /// Not UTF-8 text.
    #[error("not UTF-8 text")]
    NotText,
}

/// Reads at most `limit` bytes of text from `r`; one byte more is an error, so nothing
/// larger than the cap is ever held.
pub fn read_text(r: impl Read, limit: u64) -> Result<String, BoundedReadError> {
    let mut buf = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(BoundedReadError::TooLarge { limit });
    }
    String::from_utf8(buf).map_err(|_| BoundedReadError::NotText)
}

/// [`read_text`] of the file at `path`.
pub fn read_file(path: &std::path::Path, limit: u64) -> Result<String, BoundedReadError> {
    read_text(std::fs::File::open(path)?, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_limit_and_refuses_one_byte_more() {
        assert_eq!(read_text(&b"abcd"[..], 4).unwrap(), "abcd");
        assert!(matches!(
            read_text(&b"abcde"[..], 4),
            Err(BoundedReadError::TooLarge { limit: 4 })
        ));
        assert!(matches!(
            read_text(&[0xff, 0xfe][..], 4),
            Err(BoundedReadError::NotText)
        ));
        // An endless source stops at the cap.
        assert!(matches!(
            read_text(io::repeat(0), 1 << 20),
            Err(BoundedReadError::TooLarge { .. })
        ));
    }
}
