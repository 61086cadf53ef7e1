//! The byte stream a flow sends: a function of (seed, offset), so the receiver can check every
//! byte in place without keeping a copy, and a shifted, repeated or swapped segment shows.

use crate::rng::mix;

fn word(seed: u64, index: u64) -> [u8; 8] {
    mix(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes()
}

/// Calls `f(stream offset, word bytes, range in word)` for each 8-byte word `len` bytes cover.
fn for_each_word(seed: u64, offset: u64, len: usize, mut f: impl FnMut(usize, &[u8])) {
    let mut done = 0;
    while done < len {
        let off = offset + done as u64;
        let w = word(seed, off / 8);
        let start = (off % 8) as usize;
        let n = (8 - start).min(len - done);
        f(done, &w[start..start + n]);
        done += n;
    }
}

/// Writes the stream's bytes at `offset..offset + buf.len()` into `buf`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    for_each_word(seed, offset, buf.len(), |at, w| {
        buf[at..at + w.len()].copy_from_slice(w)
    });
}

/// The stream offset of the first byte of `data` (received at `offset`) that is wrong.
pub fn first_mismatch(seed: u64, offset: u64, data: &[u8]) -> Option<u64> {
    let mut bad = None;
    for_each_word(seed, offset, data.len(), |at, w| {
        if bad.is_none() && data[at..at + w.len()] != *w {
            let i = w.iter().zip(&data[at..]).position(|(a, b)| a != b);
            bad = Some(offset + (at + i.unwrap_or(0)) as u64);
        }
    });
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_match_the_whole() {
        let mut whole = vec![0; 100];
        fill(3, 5, &mut whole);
        let mut part = vec![0; 37];
        fill(3, 5 + 11, &mut part);
        assert_eq!(&whole[11..48], &part[..]);
        assert_eq!(first_mismatch(3, 5, &whole), None);
        whole[42] ^= 1;
        assert_eq!(first_mismatch(3, 5, &whole), Some(47));
        assert_eq!(first_mismatch(4, 5, &part).map(|o| o >= 5), Some(true));
    }
}
