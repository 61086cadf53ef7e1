//! `nexd genkey` and `nexd pubkey`: WireGuard key pairs, as `wg genkey` / `wg pubkey` make them.

use boringtun::x25519::{PublicKey, StaticSecret};
use nexd_common::Key;
use rand::TryRngCore as _;

/// A new private key: 32 bytes from the operating system's CSPRNG, clamped for Curve25519
/// as `wg genkey` does. Fails only if the OS has no randomness to give.
pub fn generate() -> Result<Key, String> {
    let mut k = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut k)
        .map_err(|e| format!("cannot read random bytes: {e}"))?;
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    Ok(Key(k))
}

/// The public key of a private key.
pub fn public(private: &Key) -> Key {
    let secret = StaticSecret::from(private.0);
    Key(PublicKey::from(&secret).to_bytes())
}

/// Parses a private key as `wg pubkey` reads it: base64 on one line, surrounding whitespace
/// ignored. The error is one line.
pub fn parse_private(text: &str) -> Result<Key, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(
            "no private key on stdin: expected a base64 key, as 'nexd genkey' prints".into(),
        );
    }
    t.parse::<Key>()
        .map_err(|e| format!("invalid private key on stdin: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 7748 section 6.1: Alice's key pair.
        let private = Key([
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2,
            0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5,
            0x1d, 0xb9, 0x2c, 0x2a,
        ]);
        let want = [
            0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e,
            0xf7, 0x5a, 0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e,
            0xaa, 0x9b, 0x4e, 0x6a,
        ];
        assert_eq!(public(&private).0, want);
    }

    #[test]
    fn generated_keys_are_clamped_and_differ() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.0[0] & 7, 0);
        assert_eq!(a.0[31] & 0xc0, 0x40);
    }

    #[test]
    fn bad_input_is_one_line() {
        for bad in ["", "  \n", "abc", "%%%%"] {
            let e = parse_private(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e:?}");
        }
        assert!(parse_private(" yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n").is_ok());
    }
}
