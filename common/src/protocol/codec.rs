//! Length-prefixed MessagePack framing, one codec for both directions.

use super::{Checked, MAX_FRAME_LEN};
use bytes::{Buf, BufMut, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use std::{io, marker::PhantomData};
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

const PREFIX: usize = 4;

/// What can go wrong while reading or writing frames.
#[derive(Debug, Error)]
pub enum CodecError {
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("could not encode frame: {0}")]
    Encode(String),
    #[error("connection closed in the middle of a frame ({0} bytes left unread)")]
    Truncated(usize),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Decodes frames of type `In` and encodes frames of type `Out`.
///
/// The length prefix is checked against the limit before any buffer is reserved for the
/// body, and an incomplete frame is `Ok(None)`, never an error. At end of stream, leftover
/// bytes are [`CodecError::Truncated`].
#[derive(Debug)]
pub struct FrameCodec<In, Out> {
    max_len: usize,
    counted_in: crate::metrics::FrameCounters,
    counted_out: crate::metrics::FrameCounters,
    _marker: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    pub fn new() -> Self {
        Self::with_max_len(MAX_FRAME_LEN)
    }

    pub fn with_max_len(max_len: usize) -> Self {
        Self {
            max_len,
            counted_in: crate::metrics::FrameCounters::new("in"),
            counted_out: crate::metrics::FrameCounters::new("out"),
            _marker: PhantomData,
        }
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In: DeserializeOwned + Checked, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        if src.len() < PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_len {
            return Err(CodecError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        if src.len() < PREFIX + len {
            // Reserve what is missing, never more than the (checked) frame length.
            src.reserve(PREFIX + len - src.len());
            return Ok(None);
        }
        src.advance(PREFIX);
        let body = src.split_to(len);
        self.counted_in.count(PREFIX + len);
        let frame: In =
            rmp_serde::from_slice(&body).map_err(|e| CodecError::Malformed(e.to_string()))?;
        frame.check().map_err(CodecError::Malformed)?;
        Ok(Some(frame))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(CodecError::Truncated(src.len())),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, frame: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        let start = dst.len();
        dst.put_u32(0);
        let mut writer = dst.writer();
        rmp_serde::encode::write_named(&mut writer, &frame)
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        let dst = writer.into_inner();
        let len = dst.len() - start - PREFIX;
        if len > self.max_len {
            dst.truncate(start);
            return Err(CodecError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        dst[start..start + PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
        self.counted_out.count(PREFIX + len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Entry, ErrorCode, ErrorFrame, MasterFrame, SecondaryFrame};

    type MasterSide = FrameCodec<SecondaryFrame, MasterFrame>;
    type SecondarySide = FrameCodec<MasterFrame, SecondaryFrame>;

    /// Found by the property tests (`fuzz.rs`): a vote request of term `u64::MAX`
    /// made a member adopt it, and its next election overflowed the term. Terms that
    /// large are refused as malformed, here, before any core sees them.
    #[test]
    fn terms_out_of_range_are_malformed() {
        let vote = |term| {
            SecondaryFrame::RequestVote(crate::replication::election::VoteRequest {
                term,
                candidate: "s2".into(),
                log: crate::replication::election::LogPosition {
                    last_term: 1,
                    last_id: 1,
                },
                pre_vote: false,
                transfer: false,
                comm: String::new(),
                config: Default::default(),
            })
        };
        for (term, ok) in [
            (crate::protocol::MAX_TERM - 1, true),
            (crate::protocol::MAX_TERM, false),
            (u64::MAX, false),
        ] {
            let mut buf = BytesMut::new();
            SecondarySide::new().encode(vote(term), &mut buf).unwrap();
            let got = MasterSide::new().decode(&mut buf);
            assert_eq!(got.is_ok(), ok, "term {term}: {got:?}");
        }
        let mut buf = BytesMut::new();
        MasterSide::new()
            .encode(MasterFrame::TimeoutNow { term: u64::MAX }, &mut buf)
            .unwrap();
        assert!(matches!(
            SecondarySide::new().decode(&mut buf),
            Err(CodecError::Malformed(m)) if m.contains("out of range")
        ));
    }

    fn samples() -> Vec<MasterFrame> {
        vec![
            MasterFrame::Welcome {
                version: 1,
                name: "m".into(),
                log_id: 42,
                last_id: 7,
                truncate_after: Some(5),
                http_host: Some("10.0.0.1".into()),
                http_port: 8080,
                term: 3,
                history: crate::replication::election::History(vec![
                    crate::replication::election::TermStart { term: 1, after: 0 },
                    crate::replication::election::TermStart { term: 3, after: 5 },
                ]),
                members: vec![crate::protocol::MemberInfo {
                    name: "m".into(),
                    comm: "10.0.0.1:4000".into(),
                    http: "10.0.0.1:8080".into(),
                    priority: 1,
                }],
                removed: Vec::new(),
                config_version: 2,
                config_term: 3,
                delay_ms: 0,
            },
            MasterFrame::AddMessages {
                entries: vec![Entry {
                    term: 1,
                    id: 1,
                    message: "héllo, wörld ✓".into(),
                    request_id: None,
                }],
                commit_id: 0,
                urgent: false,
                term: 1,
            },
            MasterFrame::Messages {
                entries: (1..=20)
                    .map(|id| Entry {
                        term: 1,
                        id,
                        message: "x".repeat(id as usize * 7),
                        request_id: None,
                    })
                    .collect(),
                last: true,
                term: 1,
            },
            MasterFrame::ReadyAck,
            MasterFrame::Heartbeat {
                last_id: u64::MAX,
                commit_id: 3,
                term: 9,
            },
            MasterFrame::TimeoutNow { term: 4 },
            MasterFrame::Vote(crate::replication::election::VoteResponse {
                term: 4,
                granted: true,
                pre_vote: false,
                reason: String::new(),
            }),
            MasterFrame::Error(ErrorFrame::new(ErrorCode::LogMismatch, "no")),
        ]
    }

    fn encode_all(frames: &[MasterFrame]) -> BytesMut {
        let mut codec = MasterSide::new();
        let mut buf = BytesMut::new();
        for f in frames {
            codec.encode(f.clone(), &mut buf).unwrap();
        }
        buf
    }

    fn decode_all(codec: &mut SecondarySide, buf: &mut BytesMut) -> Vec<MasterFrame> {
        let mut out = Vec::new();
        while let Some(f) = codec.decode(buf).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn round_trips_both_directions() {
        let frames = samples();
        let mut buf = encode_all(&frames);
        assert_eq!(decode_all(&mut SecondarySide::new(), &mut buf), frames);
        assert!(buf.is_empty());

        let up = vec![
            SecondaryFrame::Hello {
                version: 1,
                name: "s1".into(),
                next_expected: 1,
                log_id: 0,
                last_term: 0,
                term: 2,
                history: Default::default(),
                comm: Some("127.0.0.1:4001".into()),
                http: None,
                priority: 0,
                delay_ms: 5,
            },
            SecondaryFrame::RequestVote(crate::replication::election::VoteRequest {
                term: 3,
                candidate: "s2".into(),
                log: crate::replication::election::LogPosition {
                    last_term: 2,
                    last_id: 9,
                },
                pre_vote: true,
                transfer: false,
                comm: "127.0.0.1:4002".into(),
                config: crate::storage::ConfigStamp {
                    term: 2,
                    version: 5,
                },
            }),
            SecondaryFrame::GetMessages { start_id: 1 },
            SecondaryFrame::Ready,
            SecondaryFrame::Ack {
                upto: 3,
                buffered: vec![5, 6],
            },
            SecondaryFrame::Heartbeat {
                upto: 3,
                config_version: 4,
                config_term: 2,
            },
        ];
        let mut enc = SecondarySide::new();
        let mut buf = BytesMut::new();
        for f in &up {
            enc.encode(f.clone(), &mut buf).unwrap();
        }
        let mut dec = MasterSide::new();
        let mut got = Vec::new();
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            got.push(f);
        }
        assert_eq!(got, up);
    }

    #[test]
    fn split_at_every_offset() {
        let frames = samples();
        let whole = encode_all(&frames);
        for cut in 0..=whole.len() {
            let mut codec = SecondarySide::new();
            let mut buf = BytesMut::from(&whole[..cut]);
            let mut got = decode_all(&mut codec, &mut buf);
            buf.extend_from_slice(&whole[cut..]);
            got.extend(decode_all(&mut codec, &mut buf));
            assert_eq!(got, frames, "split at byte {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn byte_by_byte() {
        let frames = samples();
        let whole = encode_all(&frames);
        let mut codec = SecondarySide::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in whole.iter() {
            buf.put_u8(*b);
            got.extend(decode_all(&mut codec, &mut buf));
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn truncated_stream_is_an_error_at_eof() {
        let whole = encode_all(&samples());
        let boundaries: Vec<usize> = {
            let mut pos = 0;
            let mut v = vec![0];
            while pos < whole.len() {
                pos += 4 + u32::from_be_bytes(whole[pos..pos + 4].try_into().unwrap()) as usize;
                v.push(pos);
            }
            v
        };
        for cut in 1..whole.len() {
            let mut codec = SecondarySide::new();
            let mut buf = BytesMut::from(&whole[..cut]);
            let outcome = loop {
                match codec.decode_eof(&mut buf) {
                    Ok(Some(_)) => continue,
                    other => break other,
                }
            };
            match outcome {
                Ok(None) => assert!(boundaries.contains(&cut), "cut at {cut} not reported"),
                Err(CodecError::Truncated(n)) => {
                    assert!(!boundaries.contains(&cut));
                    assert!(n > 0);
                }
                other => panic!("unexpected {other:?} at {cut}"),
            }
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut codec = SecondarySide::with_max_len(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let cap_before = buf.capacity();
        match codec.decode(&mut buf) {
            Err(CodecError::TooLarge { len, max }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(max, 1024);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(
            buf.capacity(),
            cap_before,
            "no allocation for a refused frame"
        );
    }

    #[test]
    fn an_http_request_on_the_comm_port_is_too_large() {
        let mut codec = MasterSide::new();
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn encoder_refuses_oversized_frames_without_writing() {
        let mut codec = MasterSide::with_max_len(64);
        let mut buf = BytesMut::new();
        let big = MasterFrame::AddMessages {
            entries: vec![Entry {
                term: 1,
                id: 1,
                message: "y".repeat(100),
                request_id: None,
            }],
            term: 1,
            commit_id: 0,
            urgent: true,
        };
        assert!(matches!(
            codec.encode(big, &mut buf),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn garbage_bodies_are_malformed_not_panics() {
        // Deterministic pseudo-random garbage of many lengths.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..300usize {
            let mut body = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                body.push(x as u8);
            }
            let mut buf = BytesMut::new();
            buf.put_u32(len as u32);
            buf.extend_from_slice(&body);
            let mut codec = MasterSide::new();
            match codec.decode(&mut buf) {
                Ok(Some(_)) | Err(CodecError::Malformed(_)) => {}
                other => panic!("len {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_error_codes_decode_as_other() {
        #[derive(Serialize)]
        struct Fake {
            code: &'static str,
            message: &'static str,
        }
        #[derive(Serialize)]
        enum FakeFrame {
            Error(Fake),
        }
        let body = rmp_serde::to_vec_named(&FakeFrame::Error(Fake {
            code: "SomethingNew",
            message: "m",
        }))
        .unwrap();
        let frame: MasterFrame = rmp_serde::from_slice(&body).unwrap();
        assert_eq!(
            frame,
            MasterFrame::Error(ErrorFrame::new(ErrorCode::Other, "m"))
        );
    }
}
