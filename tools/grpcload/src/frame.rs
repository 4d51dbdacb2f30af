//! gRPC length-prefixed message framing: building request frames once, and
//! an incremental parser for response DATA that may be split anywhere.

use bytes::{BufMut, Bytes, BytesMut};

/// Frames one protobuf message: flag byte 0 (not compressed), u32 big-endian
/// length, payload.
pub fn frame_message(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The flag byte was not 0 (we never ask for compression).
    Compressed,
    /// The stream ended inside a prefix or a payload.
    Truncated,
}

impl FrameError {
    pub fn kind(self) -> &'static str {
        match self {
            FrameError::Compressed => "compressed message",
            FrameError::Truncated => "truncated message",
        }
    }
}

/// Incremental parser of a stream of gRPC message frames. Feed it every DATA
/// chunk as it arrives; it counts complete messages and their payload bytes,
/// and optionally hashes the payloads (with their lengths) for consistency
/// checks. No allocation.
#[derive(Debug, Default, Clone)]
pub struct FrameParser {
    hdr: [u8; 5],
    hdr_len: u8,
    in_payload: bool,
    remaining: u32,
    /// Complete messages seen.
    pub messages: u64,
    /// Payload bytes of messages (prefixes excluded), complete or not.
    pub payload_bytes: u64,
}

impl FrameParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes one chunk.
    pub fn feed(&mut self, mut data: &[u8], mut hash: Option<&mut Hasher64>) -> Result<(), FrameError> {
        while !data.is_empty() {
            if self.in_payload {
                let take = (self.remaining as usize).min(data.len());
                if let Some(h) = hash.as_deref_mut() {
                    h.write(&data[..take]);
                }
                self.remaining -= take as u32;
                self.payload_bytes += take as u64;
                data = &data[take..];
                if self.remaining == 0 {
                    self.in_payload = false;
                    self.messages += 1;
                }
            } else {
                let have = self.hdr_len as usize;
                let take = (5 - have).min(data.len());
                self.hdr[have..have + take].copy_from_slice(&data[..take]);
                self.hdr_len += take as u8;
                data = &data[take..];
                if self.hdr_len == 5 {
                    self.hdr_len = 0;
                    if self.hdr[0] != 0 {
                        return Err(FrameError::Compressed);
                    }
                    let len = u32::from_be_bytes([self.hdr[1], self.hdr[2], self.hdr[3], self.hdr[4]]);
                    if let Some(h) = hash.as_deref_mut() {
                        h.write_u32(len);
                    }
                    if len == 0 {
                        self.messages += 1;
                    } else {
                        self.in_payload = true;
                        self.remaining = len;
                    }
                }
            }
        }
        Ok(())
    }

    /// To be called at end of stream: a partial prefix or payload is an error.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.in_payload || self.hdr_len != 0 {
            Err(FrameError::Truncated)
        } else {
            Ok(())
        }
    }
}

/// A fast streaming 64-bit hash, word at a time (multiply-rotate, with a
/// final avalanche). The result does not depend on how the input is split
/// into `write` calls. Not cryptographic: it only has to tell different
/// answers apart.
#[derive(Debug, Clone, Copy)]
pub struct Hasher64 {
    h: u64,
    tail: u64,
    tail_len: u32,
    total: u64,
}

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl Default for Hasher64 {
    fn default() -> Self {
        Hasher64 { h: 0x243F_6A88_85A3_08D3, tail: 0, tail_len: 0, total: 0 }
    }
}

impl Hasher64 {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    fn mix(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(K).rotate_left(31);
    }

    pub fn write_u32(&mut self, v: u32) {
        self.write(&v.to_le_bytes());
    }

    pub fn write(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        // complete a pending partial word first
        while self.tail_len != 0 && !data.is_empty() {
            self.tail |= (data[0] as u64) << (8 * self.tail_len);
            self.tail_len += 1;
            data = &data[1..];
            if self.tail_len == 8 {
                let w = self.tail;
                self.mix(w);
                self.tail = 0;
                self.tail_len = 0;
            }
        }
        if self.tail_len != 0 {
            return; // all of `data` went into the partial word
        }
        let mut words = data.chunks_exact(8);
        for c in &mut words {
            self.mix(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        for (i, &b) in words.remainder().iter().enumerate() {
            self.tail |= (b as u64) << (8 * i);
        }
        self.tail_len = words.remainder().len() as u32;
    }

    pub fn finish(&self) -> u64 {
        let mut h = self.h;
        if self.tail_len != 0 {
            h = (h ^ self.tail).wrapping_mul(K).rotate_left(31);
        }
        h ^= self.total;
        // murmur3 fmix64
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(msgs: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for m in msgs {
            v.extend_from_slice(&frame_message(m));
        }
        v
    }

    /// Feeds `data` split at the given cut points, returns (parser, hash).
    fn feed_split(data: &[u8], cuts: &[usize]) -> (Result<(), FrameError>, FrameParser, u64) {
        let mut p = FrameParser::new();
        let mut h = Hasher64::new();
        let mut last = 0;
        let mut points: Vec<usize> = cuts.iter().copied().filter(|&c| c <= data.len()).collect();
        points.push(data.len());
        for c in points {
            if c < last {
                continue;
            }
            if let Err(e) = p.feed(&data[last..c], Some(&mut h)) {
                return (Err(e), p, h.finish());
            }
            last = c;
        }
        let r = p.finish();
        (r, p, h.finish())
    }

    #[test]
    fn frame_message_layout() {
        let f = frame_message(b"abc");
        assert_eq!(&f[..], &[0, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(&frame_message(b"")[..], &[0, 0, 0, 0, 0]);
    }

    #[test]
    fn whole_stream_in_one_chunk() {
        let data = stream(&[b"hello", b"", b"world!!"]);
        let (r, p, _) = feed_split(&data, &[]);
        assert_eq!(r, Ok(()));
        assert_eq!(p.messages, 3);
        assert_eq!(p.payload_bytes, 12);
    }

    #[test]
    fn every_single_and_double_split_gives_the_same_result() {
        let data = stream(&[b"hello", b"", b"a", &[7u8; 300], b"xyz"]);
        let (r0, p0, h0) = feed_split(&data, &[]);
        assert_eq!(r0, Ok(()));
        assert_eq!(p0.messages, 5);
        assert_eq!(p0.payload_bytes, 5 + 1 + 300 + 3);
        for a in 0..=data.len() {
            let (r, p, h) = feed_split(&data, &[a]);
            assert_eq!(r, Ok(()), "cut at {a}");
            assert_eq!((p.messages, p.payload_bytes, h), (p0.messages, p0.payload_bytes, h0), "cut at {a}");
        }
        for a in 0..data.len().min(40) {
            for b in a..data.len() {
                let (r, p, h) = feed_split(&data, &[a, b]);
                assert_eq!(r, Ok(()));
                assert_eq!((p.messages, p.payload_bytes, h), (p0.messages, p0.payload_bytes, h0), "cuts {a},{b}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let data = stream(&[b"one", b"two", &[1u8; 70]]);
        let cuts: Vec<usize> = (0..data.len()).collect();
        let (r, p, h) = feed_split(&data, &cuts);
        let (_, _, h0) = feed_split(&data, &[]);
        assert_eq!(r, Ok(()));
        assert_eq!(p.messages, 3);
        assert_eq!(h, h0);
    }

    #[test]
    fn prefix_split_between_chunks() {
        // 5-byte prefix cut after 1, 2, 3 and 4 bytes
        let data = stream(&[b"payload"]);
        for cut in 1..5 {
            let mut p = FrameParser::new();
            p.feed(&data[..cut], None).unwrap();
            assert_eq!(p.messages, 0);
            assert_eq!(p.finish(), Err(FrameError::Truncated), "partial prefix is truncated");
            p.feed(&data[cut..], None).unwrap();
            assert_eq!(p.messages, 1);
            assert_eq!(p.payload_bytes, 7);
            assert_eq!(p.finish(), Ok(()));
        }
    }

    #[test]
    fn compressed_flag_is_an_error() {
        let mut data = stream(&[b"abc"]);
        data[0] = 1;
        let (r, _, _) = feed_split(&data, &[]);
        assert_eq!(r, Err(FrameError::Compressed));
        // also when the flag arrives alone, and for a second message
        let mut p = FrameParser::new();
        assert_eq!(p.feed(&[1], None), Ok(()));
        assert_eq!(p.feed(&[0, 0, 0, 0], None), Err(FrameError::Compressed));
        let mut d2 = stream(&[b"ok", b"bad"]);
        d2[7] = 1;
        for cut in 0..d2.len() {
            let (r, _, _) = feed_split(&d2, &[cut]);
            assert_eq!(r, Err(FrameError::Compressed), "cut {cut}");
        }
        assert_eq!(FrameError::Compressed.kind(), "compressed message");
    }

    #[test]
    fn truncated_payload() {
        let data = stream(&[b"abcdef"]);
        for end in 1..data.len() {
            let (r, _, _) = feed_split(&data[..end], &[end / 2]);
            assert_eq!(r, Err(FrameError::Truncated), "end {end}");
        }
        assert_eq!(FrameError::Truncated.kind(), "truncated message");
    }

    #[test]
    fn hash_tells_answers_apart() {
        let a = feed_split(&stream(&[b"note A"]), &[]).2;
        let b = feed_split(&stream(&[b"note B"]), &[]).2;
        let ab = feed_split(&stream(&[b"no", b"te A"]), &[]).2;
        assert_ne!(a, b);
        assert_ne!(a, ab, "message boundaries are part of the hash");
        let mut h1 = Hasher64::new();
        h1.write(b"");
        let mut h2 = Hasher64::new();
        h2.write(&[0]);
        assert_ne!(h1.finish(), h2.finish());
    }
}
