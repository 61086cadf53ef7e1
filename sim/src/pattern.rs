//! The byte stream a flow sends: a function of (seed, offset), so the receiver can check every
//! byte in place without keeping a copy, and a shifted, repeated or swapped segment shows.

/// Word `index` of the stream: a multiply by an odd constant is a bijection, so no two words
/// of one stream are equal (a shifted or repeated segment cannot match), and it costs one
/// multiply where a full hash took a third of a run's time.
fn word(seed: u64, index: u64) -> u64 {
    (index ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.rotate_left(32)
}

/// Splits `offset..offset + len` into a head up to the next 8-byte boundary, whole words and
/// a tail: (head length, number of whole words).
fn split(offset: u64, len: usize) -> (usize, usize) {
    let head = ((8 - offset % 8) % 8).min(len as u64) as usize;
    (head, (len - head) / 8)
}

fn byte(seed: u64, off: u64) -> u8 {
    word(seed, off / 8).to_le_bytes()[(off % 8) as usize]
}

/// Writes the stream's bytes at `offset..offset + buf.len()` into `buf`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let (head, words) = split(offset, buf.len());
    for (i, b) in buf[..head].iter_mut().enumerate() {
        *b = byte(seed, offset + i as u64);
    }
    let first = (offset + head as u64) / 8;
    let body = &mut buf[head..head + words * 8];
    for (i, chunk) in body.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&word(seed, first + i as u64).to_le_bytes());
    }
    let tail = head + words * 8;
    for (i, b) in buf[tail..].iter_mut().enumerate() {
        *b = byte(seed, offset + (tail + i) as u64);
    }
}

/// The stream offset of the first byte of `data` (received at `offset`) that is wrong.
pub fn first_mismatch(seed: u64, offset: u64, data: &[u8]) -> Option<u64> {
    let (head, words) = split(offset, data.len());
    let at = |i: usize| offset + i as u64;
    if let Some(i) = (0..head).find(|&i| data[i] != byte(seed, at(i))) {
        return Some(at(i));
    }
    let first = (offset + head as u64) / 8;
    let body = &data[head..head + words * 8];
    for (w, chunk) in body.chunks_exact(8).enumerate() {
        let mut got = [0; 8];
        got.copy_from_slice(chunk);
        if u64::from_le_bytes(got) != word(seed, first + w as u64) {
            let i = head + w * 8;
            return (i..i + 8).find(|&i| data[i] != byte(seed, at(i))).map(at);
        }
    }
    let tail = head + words * 8;
    (tail..data.len())
        .find(|&i| data[i] != byte(seed, at(i)))
        .map(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_match_the_whole() {
        let mut whole = vec![0; 100];
        fill(3, 5, &mut whole);
        for (start, len) in [(11, 37), (0, 3), (3, 8), (40, 60), (99, 1), (2, 0)] {
            let mut part = vec![0; len];
            fill(3, 5 + start as u64, &mut part);
            assert_eq!(&whole[start..start + len], &part[..], "{start} {len}");
            assert_eq!(first_mismatch(3, 5 + start as u64, &part), None);
        }
        assert_eq!(first_mismatch(3, 5, &whole), None);
        for bad in [0, 2, 42, 99] {
            let mut w = whole.clone();
            w[bad] ^= 1;
            assert_eq!(first_mismatch(3, 5, &w), Some(5 + bad as u64));
        }
        assert!(first_mismatch(4, 5, &whole).is_some());
    }
}
