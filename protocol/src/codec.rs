//! Binary encoding of messages and their chunking into data-channel frames.
//!
//! A message is `b"ST"`, the protocol version (u16, big-endian), then the postcard body.
//! The version comes first so that a peer on another version gets a precise
//! [`CodecError::Version`] instead of a garbled decode.
//!
//! Data channels drop messages over 64 KiB, so each encoded message travels as one or more
//! frames: one flag byte ([`FRAME_MORE`] or [`FRAME_LAST`]) and up to
//! `MAX_CHUNK_BYTES - 1` bytes of the message. The channel is ordered and reliable, so the
//! receiver only has to concatenate until the last frame.

use crate::PROTOCOL_VERSION;
use serde::{de::DeserializeOwned, Serialize};

const MAGIC: [u8; 2] = *b"ST";
const HEADER_LEN: usize = 4;
/// Largest frame put on a data channel, header included.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;
/// Frame flag: more frames of this message follow.
pub const FRAME_MORE: u8 = 0;
/// Frame flag: this frame ends the message.
pub const FRAME_LAST: u8 = 1;

/// Why bytes could not be decoded into a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// Not a Starling message at all.
    #[error("not a Starling protocol message (bad magic or too short)")]
    NotStarling,
    /// The peer speaks another protocol version.
    #[error("protocol version {got} is not supported; this side speaks version {expected}")]
    Version {
        /// What the peer sent.
        got: u16,
        /// What we speak.
        expected: u16,
    },
    /// The body does not decode as the expected message type.
    #[error("malformed message body: {0}")]
    Body(String),
}

/// Encodes a message with the version header.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    // postcard only fails on types it cannot represent (maps with non-string keys under
    // some formats, `serde(flatten)`); our message types contain none, so this is an
    // invariant of this crate, and the round-trip tests exercise every variant.
    postcard::to_extend(msg, out).expect("protocol messages are always postcard-encodable")
}

/// Decodes a message, checking the version header first.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() < HEADER_LEN || bytes[..2] != MAGIC {
        return Err(CodecError::NotStarling);
    }
    let got = u16::from_be_bytes([bytes[2], bytes[3]]);
    if got != PROTOCOL_VERSION {
        return Err(CodecError::Version {
            got,
            expected: PROTOCOL_VERSION,
        });
    }
    postcard::from_bytes(&bytes[HEADER_LEN..]).map_err(|e| CodecError::Body(e.to_string()))
}

/// Encodes a message and splits it into data-channel frames, in sending order.
///
/// Nearly every message fits one frame: it is encoded straight after its flag byte, one
/// allocation and no copy (a unit's `Assign` or `Result` of a few KiB is sent a few
/// thousand times a second).
pub fn encode_frames<T: Serialize>(msg: &T) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    out.push(FRAME_LAST);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    // As in `encode`: our message types are always postcard-encodable.
    let out =
        postcard::to_extend(msg, out).expect("protocol messages are always postcard-encodable");
    if out.len() <= MAX_CHUNK_BYTES {
        return vec![out];
    }
    Chunker::frames(&out[1..])
}

/// Why incoming frames did not yield a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The frames themselves were refused.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// The reassembled bytes are not a message of this protocol version.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Splits encoded messages into frames of at most [`MAX_CHUNK_BYTES`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Chunker;

impl Chunker {
    /// The frames of one message, in order. An empty message is one empty last frame.
    pub fn frames(message: &[u8]) -> Vec<Vec<u8>> {
        let body = MAX_CHUNK_BYTES - 1;
        if message.is_empty() {
            return vec![vec![FRAME_LAST]];
        }
        let count = message.len().div_ceil(body);
        message
            .chunks(body)
            .enumerate()
            .map(|(i, part)| {
                let mut frame = Vec::with_capacity(part.len() + 1);
                frame.push(if i + 1 == count {
                    FRAME_LAST
                } else {
                    FRAME_MORE
                });
                frame.extend_from_slice(part);
                frame
            })
            .collect()
    }
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    /// A frame with no flag byte.
    #[error("empty frame")]
    Empty,
    /// A flag byte that is neither more nor last.
    #[error("unknown frame flag {0}")]
    Flag(u8),
    /// The message being reassembled grew past the receiver's limit.
    #[error("message exceeds the {limit}-byte limit")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

/// Rebuilds messages from frames, refusing any message larger than its limit so a peer
/// cannot make the receiver buffer without bound.
#[derive(Debug)]
pub struct Reassembler {
    limit: usize,
    partial: Vec<u8>,
}

impl Reassembler {
    /// A reassembler that refuses messages over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            partial: Vec::new(),
        }
    }

    /// Changes the limit, e.g. once a peer is authenticated or holds work whose output is
    /// larger. A message being reassembled is held to the new limit from its next frame.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// The current limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes of the unfinished message held now.
    pub fn pending_bytes(&self) -> usize {
        self.partial.len()
    }

    /// Feeds one frame; returns a whole message when this frame completes one.
    /// After an error the partial message is dropped and the next frame starts a new one.
    pub fn push(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, ChunkError> {
        let (&flag, body) = frame.split_first().ok_or(ChunkError::Empty)?;
        if flag != FRAME_MORE && flag != FRAME_LAST {
            self.partial.clear();
            return Err(ChunkError::Flag(flag));
        }
        let needed = self.partial.len() + body.len();
        if needed > self.limit {
            self.partial = Vec::new();
            return Err(ChunkError::TooLarge { limit: self.limit });
        }
        // Grown by doubling like a Vec, but never past the limit: an unfinished message
        // holds at most `limit` bytes, not up to twice that.
        if needed > self.partial.capacity() {
            let target = needed.max(self.partial.capacity() * 2).min(self.limit);
            self.partial.reserve_exact(target - self.partial.len());
        }
        self.partial.extend_from_slice(body);
        Ok((flag == FRAME_LAST).then(|| std::mem::take(&mut self.partial)))
    }

    /// Feeds one frame and decodes the message it completes, if any.
    pub fn push_message<T: DeserializeOwned>(
        &mut self,
        frame: &[u8],
    ) -> Result<Option<T>, FrameError> {
        // A whole message in one frame (nearly all of them) is decoded where it lies,
        // not copied into the buffer first; held to the limit all the same.
        if let ([FRAME_LAST, body @ ..], true) = (frame, self.partial.is_empty()) {
            if body.len() > self.limit {
                return Err(ChunkError::TooLarge { limit: self.limit }.into());
            }
            return Ok(Some(decode(body)?));
        }
        match self.push(frame)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Assignment, DeviceInfo, LeaseId, ToRelay, ToVolunteer};
    use proptest::prelude::*;
    use uuid::Uuid;

    fn lease(n: u128) -> LeaseId {
        LeaseId::from_uuid(Uuid::from_u128(n))
    }

    fn assignment(n: u128) -> Assignment {
        Assignment {
            lease: lease(n),
            kernel: "matmul".into(),
            params_json: "{}".into(),
            input: vec![0; 10],
            deadline_ms: 1000,
            job_age_s: 125,
        }
    }

    /// An `Ack` carrying the next unit, encoded.
    fn ack_with_next() -> Vec<u8> {
        encode(&ToVolunteer::Ack {
            lease: lease(1),
            accepted: true,
            detail: String::new(),
            next: Some(assignment(2)),
        })
    }

    #[test]
    fn every_message_variant_round_trips() {
        let device = DeviceInfo {
            adapter: "SwiftShader".into(),
            backend: "webgpu".into(),
            fallback: true,
        };
        let key = crate::WalletKey::from_seed([3; 32]);
        let up = [
            ToRelay::Hello {
                version: PROTOCOL_VERSION,
                client: "test".into(),
                device,
                wallet: key.address(),
                site: Some(crate::SiteClaim {
                    wallet: crate::WalletKey::from_seed([4; 32]).address(),
                    origin: "https://blog.example".into(),
                }),
                proof: crate::Signature([9; 64]),
            },
            ToRelay::Ready { slots: 3 },
            ToRelay::Result {
                lease: lease(1),
                output: vec![1, 2, 3],
                elapsed_ms: 7,
                more: 0,
            },
            ToRelay::Result {
                lease: lease(4),
                output: vec![],
                elapsed_ms: u32::MAX,
                more: 1,
            },
            ToRelay::Failed {
                lease: lease(2),
                reason: "oom".into(),
            },
        ];
        for msg in up {
            assert_eq!(decode::<ToRelay>(&encode(&msg)), Ok(msg));
        }
        let down = [
            ToVolunteer::Welcome { version: 1 },
            ToVolunteer::Assign(assignment(3)),
            ToVolunteer::Ack {
                lease: lease(3),
                accepted: false,
                detail: "late".into(),
                next: None,
            },
            ToVolunteer::Ack {
                lease: lease(3),
                accepted: true,
                detail: String::new(),
                next: Some(assignment(5)),
            },
            ToVolunteer::Refused {
                reason: "old".into(),
            },
        ];
        for msg in down {
            assert_eq!(decode::<ToVolunteer>(&encode(&msg)), Ok(msg));
        }
    }

    #[test]
    fn rejects_other_protocol_versions_precisely() {
        let mut bytes = encode(&ToRelay::Ready { slots: 1 });
        bytes[3] = bytes[3].wrapping_add(1);
        assert_eq!(
            decode::<ToRelay>(&bytes),
            Err(CodecError::Version {
                got: PROTOCOL_VERSION + 1,
                expected: PROTOCOL_VERSION
            })
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(decode::<ToRelay>(b"xx"), Err(CodecError::NotStarling));
        assert_eq!(decode::<ToRelay>(b"hello"), Err(CodecError::NotStarling));
        let mut bytes = encode(&ToRelay::Ready { slots: 1 });
        bytes.truncate(HEADER_LEN);
        assert!(matches!(
            decode::<ToRelay>(&bytes),
            Err(CodecError::Body(_))
        ));
    }

    #[test]
    fn a_garbled_ack_with_its_next_unit_is_refused_without_panicking() {
        let whole = ack_with_next();
        // Cut anywhere: never a message, never a panic.
        for end in HEADER_LEN..whole.len() {
            assert!(
                matches!(
                    decode::<ToVolunteer>(&whole[..end]),
                    Err(CodecError::Body(_))
                ),
                "cut at {end}"
            );
        }
        // The option's tag (after the variant, the lease's 16 bytes and its length
        // prefix, `accepted` and an empty `detail`) is neither 0 nor 1.
        let tag = HEADER_LEN + 1 + 17 + 1 + 1;
        assert_eq!(whole[tag], 1, "the layout this test assumes");
        let mut bad = whole.clone();
        bad[tag] = 2;
        assert!(matches!(
            decode::<ToVolunteer>(&bad),
            Err(CodecError::Body(_))
        ));
        // A next unit whose input claims 4 GiB in a short message: refused, with no
        // buffer of that size allocated first.
        let mut huge = whole[..tag + 1 + 17 + 1 + 6 + 1 + 2].to_vec();
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            decode::<ToVolunteer>(&huge),
            Err(CodecError::Body(_))
        ));
    }

    #[test]
    fn a_result_asking_for_more_in_an_older_version_is_refused_by_version() {
        let mut bytes = encode(&ToRelay::Result {
            lease: lease(1),
            output: vec![1],
            elapsed_ms: 1,
            more: 1,
        });
        bytes[2..4].copy_from_slice(&(PROTOCOL_VERSION - 1).to_be_bytes());
        assert_eq!(
            decode::<ToRelay>(&bytes),
            Err(CodecError::Version {
                got: PROTOCOL_VERSION - 1,
                expected: PROTOCOL_VERSION
            })
        );
    }

    #[test]
    fn one_frame_messages_decode_in_place_within_the_limit() {
        let frames = encode_frames(&ToVolunteer::Ack {
            lease: lease(1),
            accepted: true,
            detail: String::new(),
            next: Some(assignment(2)),
        });
        assert_eq!(frames.len(), 1);
        let mut r = Reassembler::new(frames[0].len() - 1);
        assert!(matches!(
            r.push_message::<ToVolunteer>(&frames[0]),
            Ok(Some(ToVolunteer::Ack { next: Some(_), .. }))
        ));
        let mut r = Reassembler::new(frames[0].len() - 2);
        assert_eq!(
            r.push_message::<ToVolunteer>(&frames[0]),
            Err(FrameError::Chunk(ChunkError::TooLarge {
                limit: frames[0].len() - 2
            }))
        );
        // Garbage in one frame is a codec error, as through the buffer.
        assert_eq!(
            r.push_message::<ToVolunteer>(&[FRAME_LAST, b'x']),
            Err(FrameError::Codec(CodecError::NotStarling))
        );
    }

    #[test]
    fn reassembler_refuses_oversized_messages() {
        let frames = Chunker::frames(&vec![7; 3 * MAX_CHUNK_BYTES]);
        let mut r = Reassembler::new(2 * MAX_CHUNK_BYTES);
        let outcome: Result<Vec<_>, _> = frames.iter().map(|f| r.push(f)).collect();
        assert_eq!(
            outcome,
            Err(ChunkError::TooLarge {
                limit: 2 * MAX_CHUNK_BYTES
            })
        );
        // The next message still goes through.
        assert_eq!(r.push(&[FRAME_LAST, 9]), Ok(Some(vec![9])));
    }

    #[test]
    fn an_unfinished_message_holds_no_more_than_the_limit() {
        let limit = 3 * MAX_CHUNK_BYTES + 17;
        let mut r = Reassembler::new(limit);
        let frame = {
            let mut f = vec![FRAME_MORE];
            f.resize(MAX_CHUNK_BYTES, 1);
            f
        };
        for _ in 0..3 {
            assert_eq!(r.push(&frame), Ok(None));
            assert!(r.partial.capacity() <= limit, "{}", r.partial.capacity());
        }
        assert_eq!(r.pending_bytes(), 3 * (MAX_CHUNK_BYTES - 1));
        assert_eq!(r.push(&frame), Err(ChunkError::TooLarge { limit }));
        assert_eq!(r.pending_bytes(), 0);
        // Lowered mid-message (a peer that holds no more work): the next frame is refused.
        assert_eq!(r.push(&frame), Ok(None));
        r.set_limit(1024);
        assert_eq!(
            r.push(&[FRAME_LAST, 1]),
            Err(ChunkError::TooLarge { limit: 1024 })
        );
    }

    #[test]
    fn reassembler_refuses_bad_frames() {
        let mut r = Reassembler::new(100);
        assert_eq!(r.push(&[]), Err(ChunkError::Empty));
        assert_eq!(r.push(&[5, 1]), Err(ChunkError::Flag(5)));
    }

    proptest! {
        #[test]
        fn chunking_round_trips_any_message(len in 0usize..(3 * MAX_CHUNK_BYTES + 10), seed: u8) {
            let message: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let frames = Chunker::frames(&message);
            prop_assert!(frames.iter().all(|f| f.len() <= MAX_CHUNK_BYTES));
            let mut r = Reassembler::new(4 * MAX_CHUNK_BYTES);
            let mut out = None;
            for (i, f) in frames.iter().enumerate() {
                let got = r.push(f).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(got.is_some(), i + 1 == frames.len());
                out = got.or(out);
            }
            prop_assert_eq!(out, Some(message));
        }

        #[test]
        fn encode_frames_matches_chunking_the_encoding(len in prop_oneof![0usize..200, (MAX_CHUNK_BYTES - 100)..(2 * MAX_CHUNK_BYTES + 10)]) {
            let msg = ToRelay::Result { lease: lease(1), output: vec![7; len], elapsed_ms: 3, more: 1 };
            let frames = encode_frames(&msg);
            prop_assert_eq!(&frames, &Chunker::frames(&encode(&msg)));
            let mut r = Reassembler::new(4 * MAX_CHUNK_BYTES);
            let mut out = None;
            for f in &frames {
                out = r.push_message::<ToRelay>(f).map_err(|e| TestCaseError::fail(e.to_string()))?.or(out);
            }
            prop_assert_eq!(out, Some(msg));
        }

        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode::<ToRelay>(&bytes);
            let mut with_header = encode(&ToRelay::Ready { slots: 0 });
            with_header.truncate(HEADER_LEN);
            with_header.extend_from_slice(&bytes);
            let _ = decode::<ToVolunteer>(&with_header);
        }
    }
}
