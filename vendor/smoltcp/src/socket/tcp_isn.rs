//! Initial sequence numbers as RFC 6528 defines them: `ISN = M + F(localip, localport,
//! remoteip, remoteport, secretkey)`, where M is a 4-microsecond timer and F a keyed hash
//! (SipHash-2-4 here, as Linux uses).
//!
//! Two connections on one 4-tuple thus get sequence numbers that grow with the time between
//! them, so a peer still holding the old connection in TIME-WAIT sees the new SYN as newer
//! and accepts it (RFC 9293 3.4.1 and Linux `tcp_timewait_state_process`), while an off-path
//! attacker, not knowing the key, cannot predict the sequence numbers of other 4-tuples.

use crate::time::Instant;
use crate::wire::{IpAddress, IpEndpoint, TcpSeqNumber};

/// The key of F: 128 bits, secret, fixed for the life of an interface.
pub(crate) type IsnKey = [u64; 2];

/// The initial sequence number of a connection from `local` to `remote` at `now`.
pub(crate) fn initial_seq_no(
    key: &IsnKey,
    now: Instant,
    local: IpEndpoint,
    remote: IpEndpoint,
) -> TcpSeqNumber {
    // 16 + 16 + 2 + 2 bytes at most (IPv6).
    let mut msg = [0u8; 36];
    let mut len = 0;
    for addr in [local.addr, remote.addr] {
        let bytes: &[u8] = match &addr {
            #[cfg(feature = "proto-ipv4")]
            IpAddress::Ipv4(a) => &a.octets()[..],
            #[cfg(feature = "proto-ipv6")]
            IpAddress::Ipv6(a) => &a.octets()[..],
        };
        msg[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    }
    msg[len..len + 2].copy_from_slice(&local.port.to_be_bytes());
    msg[len + 2..len + 4].copy_from_slice(&remote.port.to_be_bytes());
    len += 4;
    let m = (now.total_micros() / 4) as u32;
    let f = siphash24(key, &msg[..len]) as u32;
    TcpSeqNumber(m.wrapping_add(f) as i32)
}

/// SipHash-2-4 (Aumasson and Bernstein) of `data` under `key`.
fn siphash24(key: &IsnKey, data: &[u8]) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut compress = |m: u64, v: &mut [u64; 4]| {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    };
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        compress(u64::from_le_bytes(w), &mut v);
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    last[7] = data.len() as u8;
    compress(u64::from_le_bytes(last), &mut v);
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// A key from an interface's random seed, drawn from its own generator so the interface's
/// other random numbers stay as they were.
pub(crate) fn key_from_seed(seed: u64) -> IsnKey {
    let mut rand = crate::rand::Rand::new(seed ^ 0x5443_5020_4953_4e21);
    let mut word = || (u64::from(rand.rand_u32()) << 32) | u64::from(rand.rand_u32());
    [word(), word()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::IpAddress;

    #[test]
    fn siphash_reference_vectors() {
        // From the SipHash paper's appendix and its reference implementation: key 00..0f,
        // message 00..(n-1).
        let key = [
            u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]),
            u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]),
        ];
        let msg: [u8; 64] = core::array::from_fn(|i| i as u8);
        assert_eq!(siphash24(&key, &msg[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(&key, &msg[..1]), 0x74f8_39c5_93dc_67fd);
        assert_eq!(siphash24(&key, &msg[..15]), 0xa129_ca61_49be_45e5);
        assert_eq!(siphash24(&key, &msg[..63]), 0x958a_324c_eb06_4572);
    }

    #[cfg(feature = "proto-ipv4")]
    #[test]
    fn isn_follows_a_4us_clock_per_tuple_under_a_secret_offset() {
        let key = key_from_seed(1);
        let local = IpEndpoint::new(IpAddress::v4(100, 100, 0, 1), 40000);
        let remote = IpEndpoint::new(IpAddress::v4(100, 100, 0, 2), 7);
        let t0 = Instant::from_secs(5);
        let a = initial_seq_no(&key, t0, local, remote);
        // The same tuple 1 ms later: 250 ticks on, exactly.
        let b = initial_seq_no(
            &key,
            t0 + crate::time::Duration::from_millis(1),
            local,
            remote,
        );
        assert_eq!(b - a, 250);
        // Deterministic for a key, time and tuple.
        assert_eq!(a, initial_seq_no(&key, t0, local, remote));
        // Another port, another key or the reverse direction: another offset.
        let other_port = IpEndpoint::new(local.addr, 40001);
        assert_ne!(a, initial_seq_no(&key, t0, other_port, remote));
        assert_ne!(a, initial_seq_no(&key_from_seed(2), t0, local, remote));
        assert_ne!(a, initial_seq_no(&key, t0, remote, local));
        // The 32-bit clock wraps (every 4.8 hours) without a discontinuity.
        let late = Instant::from_micros(4 * (1i64 << 32) + 5_000_000);
        assert_eq!(initial_seq_no(&key, late, local, remote), a);
    }

    #[cfg(feature = "proto-ipv6")]
    #[test]
    fn isn_covers_ipv6_addresses() {
        let key = key_from_seed(1);
        let l = IpEndpoint::new(IpAddress::v6(0xfd00, 0, 0, 0, 0, 0, 0, 1), 40000);
        let r1 = IpEndpoint::new(IpAddress::v6(0xfd00, 0, 0, 0, 0, 0, 0, 2), 443);
        let r2 = IpEndpoint::new(IpAddress::v6(0xfd00, 0, 0, 0, 0, 0, 1, 2), 443);
        let t = Instant::from_secs(1);
        assert_ne!(
            initial_seq_no(&key, t, l, r1),
            initial_seq_no(&key, t, l, r2)
        );
    }
}
