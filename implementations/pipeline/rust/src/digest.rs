//! The transform every node applies: `T(x)` = SHA-256 applied ROUNDS times.
//!
//! The first round hashes the input with the streaming `Sha256` hasher (the
//! input is `id "\n" payload` at node A, the upstream digest at B and C).
//! Every further round hashes a 32-byte digest, which always fills exactly
//! one padded 64-byte block: those rounds call the SHA-256 compression
//! function directly on a block whose padding is written once, instead of
//! going through the hasher's buffering for every round. sha2 picks its
//! backend at run time (cpufeatures): SHA-NI on x86-64 CPUs that have it,
//! the AArch64 SHA2 instructions there, portable code otherwise.

use sha2::block_api::compress256;
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Digest32 = [u8; 32];

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// `T` with a fixed number of rounds (>= 1).
#[derive(Clone, Copy, Debug)]
pub struct Transform {
    rounds: u32,
}

impl Transform {
    pub fn new(rounds: u32) -> Self {
        assert!(rounds >= 1, "ROUNDS must be at least 1");
        Transform { rounds }
    }

    /// `T(x)` of the concatenation of `parts`, without concatenating them.
    pub fn apply_parts(&self, parts: &[&[u8]]) -> Digest32 {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&hasher.finalize());
        self.chain(digest)
    }

    /// `T(x)`.
    pub fn apply(&self, input: &[u8]) -> Digest32 {
        self.apply_parts(&[input])
    }

    /// Rounds 2..=ROUNDS: `h(k+1) = SHA-256(h(k))`.
    fn chain(&self, mut digest: Digest32) -> Digest32 {
        // One block: the 32-byte message, the 0x80 terminator, zeros, and the
        // message length in bits (256) as a big-endian u64.
        let mut block = [0u8; 64];
        block[32] = 0x80;
        block[56..].copy_from_slice(&256u64.to_be_bytes());
        for _ in 1..self.rounds {
            block[..32].copy_from_slice(&digest);
            let mut state = IV;
            compress256(&mut state, std::slice::from_ref(&block));
            for (out, word) in digest.chunks_exact_mut(4).zip(state) {
                out.copy_from_slice(&word.to_be_bytes());
            }
        }
        digest
    }
}

/// Lowercase hex of a digest.
pub fn hex(digest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(digest.len() * 2);
    hex_into(&mut out, digest);
    out
}

/// Appends the lowercase hex of a digest to `out`.
pub fn hex_into(out: &mut Vec<u8>, digest: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(digest.len() * 2);
    for &b in digest {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
}

/// The digest written as 64 hex digits (either case), or `None`.
pub fn parse_hex(text: &[u8]) -> Option<Digest32> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// An operation id: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
pub fn valid_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(input: &[u8], rounds: u32) -> Digest32 {
        let mut d: Digest32 = Sha256::digest(input).into();
        for _ in 1..rounds {
            d = Sha256::digest(d).into();
        }
        d
    }

    fn d_c(id: &str, payload: &[u8]) -> String {
        let t = Transform::new(100);
        let a = t.apply_parts(&[id.as_bytes(), b"\n".as_slice(), payload]);
        let b = t.apply(&a);
        let c = t.apply(&b);
        String::from_utf8(hex(&c)).unwrap()
    }

    #[test]
    fn chain_matches_the_hasher() {
        for rounds in [1, 2, 3, 100] {
            for input in [&b""[..], b"x", &[7u8; 200][..]] {
                assert_eq!(Transform::new(rounds).apply(input), reference(input, rounds));
            }
        }
    }

    #[test]
    fn readme_vectors() {
        assert_eq!(
            d_c("op-1", b"hello pipeline"),
            "b557c49333ea56a32d7a54d1f2d05266a69da513c03344397489a899cfc2f89d"
        );
        assert_eq!(
            d_c("op-empty", b""),
            "55ff76d47192d3e6bfc7c6f63fe36278d8957943838b1f99395f05b0eb41adeb"
        );
        let t = Transform::new(100);
        let a = t.apply_parts(&[b"op-1".as_slice(), b"\n", b"hello pipeline"]);
        assert!(String::from_utf8(hex(&a)).unwrap().starts_with("5e95cebd"));
    }

    #[test]
    fn hex_round_trip() {
        let d = reference(b"abc", 1);
        assert_eq!(parse_hex(&hex(&d)), Some(d));
        assert_eq!(parse_hex(b"zz"), None);
    }

    #[test]
    fn ids() {
        assert!(valid_id(b"op-1"));
        assert!(valid_id(b"A.b_c:d-9"));
        assert!(valid_id(&[b'a'; 128]));
        assert!(!valid_id(&[b'a'; 129]));
        assert!(!valid_id(b""));
        assert!(!valid_id(b"a b"));
        assert!(!valid_id(b"a/b"));
        assert!(!valid_id(b"a%20"));
    }
}
