//! The chunked transfer coding of a request body (RFC 9112 §7.1), decoded strictly and
//! incrementally: bytes arrive in whatever pieces the socket hands over, so the decoder is a
//! byte-level state machine that never needs to see a whole chunk or line at once.
//!
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! last-chunk   = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext    = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
//! ```
//!
//! Strict where leniency lets two parsers disagree about where a body ends (the root of
//! request smuggling): a size line must have at least one hex digit, whitespace after the size
//! is only allowed before a `;`, every line ends with CRLF (a bare LF or CR is an error), and
//! the CRLF after chunk data must be exactly there. Extensions are skipped (they only have to
//! be free of control characters), trailer fields are read and dropped: a WSGI app has no way
//! to see them, and forwarding them as headers after the fact would let a client smuggle
//! headers past the router.
//!
//! Bounded: the body may not exceed the configured maximum, which is checked against each
//! chunk's declared size before its data is read (a client announcing 10 GB is refused at
//! once), a size line (size plus extensions) may not exceed [`MAX_SIZE_LINE`] bytes, and the
//! trailer section may not exceed [`MAX_TRAILERS`] bytes.

use std::fmt;

/// Longest chunk-size line, extensions included. Extensions are ignored, so a longer line only
/// costs reading; real clients send none or a few bytes.
pub const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section. Trailers are dropped, so this only bounds what is read and thrown
/// away; it matches the router's own limit on a request's header block.
pub const MAX_TRAILERS: usize = 65536;

/// Why a body could not be de-chunked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// The bytes are not a chunked body; the text says what was wrong, for the client.
    Malformed(&'static str),
    /// The body is larger than `limit` bytes (known as soon as a chunk size says so).
    TooLarge { limit: u64 },
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::Malformed(why) => write!(f, "malformed chunked body: {why}"),
            ChunkError::TooLarge { limit } => write!(f, "the request body exceeds {limit} bytes"),
        }
    }
}

impl std::error::Error for ChunkError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size (`digits` so far).
    Size {
        value: u64,
        digits: usize,
    },
    /// Whitespace after the size: only a `;` (an extension) may follow.
    SizeSpace {
        value: u64,
    },
    /// Inside chunk extensions, skipped up to the CR.
    Extension {
        value: u64,
    },
    /// After the size line's CR.
    SizeLf {
        value: u64,
    },
    /// Chunk data, `left` bytes to go.
    Data {
        left: u64,
    },
    /// After chunk data: its CR, then its LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final CRLF.
    TrailerStart,
    /// Inside a trailer field line, skipped up to the CR.
    Trailer,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final CR.
    FinalLf,
    Done,
}

/// An incremental, strict decoder of one chunked body. Feed it the bytes that follow the
/// request head with [`Dechunker::decode`] until [`Dechunker::is_done`].
#[derive(Clone, Debug)]
pub struct Dechunker {
    state: State,
    max_body: u64,
    body_len: u64,
    /// Bytes of the current size line, or of the trailer section.
    line: usize,
}

impl Dechunker {
    /// A decoder that refuses bodies larger than `max_body` bytes.
    pub fn new(max_body: u64) -> Self {
        Dechunker { state: State::Size { value: 0, digits: 0 }, max_body, body_len: 0, line: 0 }
    }

    /// True once the last chunk and the trailer section's final CRLF have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes announced by the chunk sizes read so far (all of the body once done).
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// Decodes a prefix of `input`. Returns how many bytes were consumed and the body bytes
    /// among them: framing is consumed up to the next piece of chunk data, and that piece (as
    /// much of it as `input` holds) is returned as a slice of `input`, so nothing is copied.
    /// Call again with the rest until all of `input` is consumed or the body is done; bytes
    /// after the end of the body are never consumed.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, &'a [u8]), ChunkError> {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Done => break,
                State::Data { left } => {
                    let available = (input.len() - at) as u64;
                    let take = left.min(available) as usize;
                    let left = left - take as u64;
                    self.state = if left == 0 { State::DataCr } else { State::Data { left } };
                    return Ok((at + take, &input[at..at + take]));
                }
                _ => {
                    self.step(input[at])?;
                    at += 1;
                }
            }
        }
        Ok((at, &[]))
    }

    /// One byte of framing (anything but chunk data).
    fn step(&mut self, byte: u8) -> Result<(), ChunkError> {
        use ChunkError::Malformed;
        self.state = match self.state {
            State::Size { value, digits } => {
                self.count_size_line()?;
                match (hex_value(byte), byte) {
                    (Some(digit), _) => {
                        // Compared with what is left of the allowance digit by digit: the value
                        // only grows, so a huge size is refused before it can overflow.
                        let value = value.checked_mul(16).and_then(|v| v.checked_add(u64::from(digit)));
                        match value {
                            Some(value) if value <= self.max_body - self.body_len => {
                                State::Size { value, digits: digits + 1 }
                            }
                            _ => return Err(ChunkError::TooLarge { limit: self.max_body }),
                        }
                    }
                    _ if digits == 0 => return Err(Malformed("a chunk size must start with a hexadecimal digit")),
                    (None, b';') => State::Extension { value },
                    (None, b' ' | b'\t') => State::SizeSpace { value },
                    (None, b'\r') => State::SizeLf { value },
                    (None, _) => return Err(Malformed("invalid character after a chunk size")),
                }
            }
            State::SizeSpace { value } => {
                self.count_size_line()?;
                match byte {
                    b' ' | b'\t' => State::SizeSpace { value },
                    b';' => State::Extension { value },
                    _ => return Err(Malformed("whitespace after a chunk size must be followed by an extension")),
                }
            }
            State::Extension { value } => {
                self.count_size_line()?;
                match byte {
                    b'\r' => State::SizeLf { value },
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => State::Extension { value },
                    _ => return Err(Malformed("control character in a chunk extension")),
                }
            }
            State::SizeLf { value } => {
                if byte != b'\n' {
                    return Err(Malformed("a chunk size line must end with CRLF"));
                }
                self.line = 0;
                self.body_len += value;
                if value == 0 {
                    State::TrailerStart
                } else {
                    State::Data { left: value }
                }
            }
            State::Data { .. } => unreachable!("decode hands chunk data over without stepping"),
            State::DataCr if byte == b'\r' => State::DataLf,
            State::DataLf if byte == b'\n' => State::Size { value: 0, digits: 0 },
            State::DataCr | State::DataLf => {
                return Err(Malformed("chunk data must be followed by CRLF (is the chunk size right?)"))
            }
            State::TrailerStart | State::Trailer => {
                self.line += 1;
                if self.line > MAX_TRAILERS {
                    return Err(Malformed("the trailer section is too large"));
                }
                match (self.state, byte) {
                    (State::TrailerStart, b'\r') => State::FinalLf,
                    (_, b'\r') => State::TrailerLf,
                    (_, b'\n') => return Err(Malformed("a trailer line must end with CRLF")),
                    _ => State::Trailer,
                }
            }
            State::TrailerLf if byte == b'\n' => State::TrailerStart,
            State::TrailerLf => return Err(Malformed("a trailer line must end with CRLF")),
            State::FinalLf if byte == b'\n' => State::Done,
            State::FinalLf => return Err(Malformed("a chunked body must end with CRLF")),
            State::Done => unreachable!("decode stops at the end of the body"),
        };
        Ok(())
    }

    fn count_size_line(&mut self) -> Result<(), ChunkError> {
        self.line += 1;
        if self.line > MAX_SIZE_LINE {
            return Err(ChunkError::Malformed("a chunk size line is too long"));
        }
        Ok(())
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `pieces` fed one after the other; returns the body and how many bytes of the
    /// last piece were left over after the end of the body.
    fn decode_pieces(max: u64, pieces: &[&[u8]]) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = Dechunker::new(max);
        let mut body = Vec::new();
        let mut left_over = 0;
        for piece in pieces {
            let mut rest = *piece;
            while !rest.is_empty() && !d.is_done() {
                let (used, data) = d.decode(rest)?;
                assert!(used > 0, "decode made no progress on {rest:?}");
                body.extend_from_slice(data);
                rest = &rest[used..];
            }
            left_over = rest.len();
        }
        if !d.is_done() {
            return Err(ChunkError::Malformed("test: input ended before the body did"));
        }
        assert_eq!(d.body_len(), body.len() as u64, "body_len must count every body byte");
        Ok((body, left_over))
    }

    fn decode_all(input: &[u8]) -> Result<Vec<u8>, ChunkError> {
        decode_pieces(1 << 20, &[input]).map(|(body, _)| body)
    }

    fn encode_chunks(body: &[u8], sizes: &mut dyn FnMut() -> usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let n = sizes().clamp(1, rest.len());
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    /// xorshift64*: reproducible "random" splits without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn decodes_simple_bodies() {
        assert_eq!(decode_all(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").unwrap(), b"hello world");
        assert_eq!(decode_all(b"0\r\n\r\n").unwrap(), b"");
        assert_eq!(decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap(), b"0123456789");
        assert_eq!(decode_all(b"a\r\n0123456789\r\n000\r\n\r\n").unwrap(), b"0123456789");
        assert_eq!(decode_all(b"0005\r\nhello\r\n0\r\n\r\n").unwrap(), b"hello");
    }

    #[test]
    fn chunk_data_may_hold_any_bytes() {
        assert_eq!(decode_all(b"6\r\n\r\n0\r\n\n\r\n0\r\n\r\n").unwrap(), b"\r\n0\r\n\n");
    }

    #[test]
    fn ignores_extensions_and_drops_trailers() {
        let input = b"5;name=value;q=\"a b\"\r\nhello\r\n3 ; x\r\nabc\r\n0;last\r\nDigest: x\r\nOther: y\r\n\r\n";
        assert_eq!(decode_all(input).unwrap(), b"helloabc");
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let (body, left_over) = decode_pieces(100, &[b"2\r\nab\r\n0\r\n\r\nGET / HTTP/1.1\r\n"]).unwrap();
        assert_eq!(body, b"ab");
        assert_eq!(left_over, b"GET / HTTP/1.1\r\n".len());
    }

    #[test]
    fn random_bodies_in_random_chunks_and_random_reads() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let len = match round % 3 {
                0 => rng.below(16),
                1 => rng.below(4096),
                _ => rng.below(200_000),
            };
            let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let max_chunk = 1 + rng.below(70_000);
            let encoded = encode_chunks(&body, &mut || 1 + rng.below(max_chunk));
            // Split the encoded stream at random points, including single bytes.
            let mut pieces = Vec::new();
            let mut rest = &encoded[..];
            while !rest.is_empty() {
                let longest = if rng.below(4) == 0 { 3 } else { 9000 };
                let n = (1 + rng.below(longest)).min(rest.len());
                pieces.push(&rest[..n]);
                rest = &rest[n..];
            }
            let (decoded, left_over) = decode_pieces(u64::MAX, &pieces).unwrap();
            assert_eq!(left_over, 0);
            assert!(decoded == body, "round {round}: {} bytes decoded, {} sent", decoded.len(), body.len());
        }
    }

    #[test]
    fn every_split_of_a_small_body_decodes_the_same() {
        let encoded: &[u8] = b"3;e=1\r\nabc\r\n1\r\n\n\r\n0\r\nT: v\r\n\r\n";
        for a in 0..=encoded.len() {
            for b in a..=encoded.len() {
                let pieces = [&encoded[..a], &encoded[a..b], &encoded[b..]];
                let (body, _) = decode_pieces(100, &pieces).unwrap();
                assert_eq!(body, b"abc\n", "split at {a} and {b}");
            }
        }
    }

    #[test]
    fn refuses_malformed_chunking() {
        let cases: &[&[u8]] = &[
            b"\r\n",                              // no size
            b";ext\r\n",                          // extension without a size
            b"x\r\n",                             // not hex
            b"-1\r\n",                            // a sign
            b"0x5\r\nhello\r\n0\r\n\r\n",         // a C prefix
            b"5\nhello\r\n0\r\n\r\n",             // bare LF after the size
            b"5\rhello\r\n0\r\n\r\n",             // bare CR after the size
            b"5 \r\nhello\r\n0\r\n\r\n",          // whitespace without an extension
            b" 5\r\nhello\r\n0\r\n\r\n",          // leading whitespace
            b"5;a\x00b\r\nhello\r\n0\r\n\r\n",    // control character in an extension
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",      // bare LF in an extension
            b"5\r\nhello world\r\n0\r\n\r\n",     // more data than the size says
            b"5\r\nhell\r\n0\r\n\r\n",            // less data than the size says
            b"5\r\nhello\n0\r\n\r\n",             // bare LF after data
            b"5\r\nhelloXX0\r\n\r\n",             // no CRLF after data
            b"0\r\nTrailer: x\n\r\n",             // bare LF in a trailer
            b"0\r\nTrailer: x\rx\r\n\r\n",        // bare CR in a trailer
            b"0\r\n\n",                           // bare LF as the final line
            b"0\r\n\rx",                          // CR without LF at the end
            b"5\r\n\r\nhello\r\n0\r\n\r\n",       // data shifted by an empty line
            b"1\r\na\r\n1\r\nb\r\n0\r\n\r\r\n\n", // doubled CR
        ];
        for case in cases {
            match decode_all(case) {
                Err(ChunkError::Malformed(_)) => {}
                other => panic!("{:?} decoded as {other:?}", String::from_utf8_lossy(case)),
            }
        }
    }

    #[test]
    fn refuses_an_overlong_size_line_and_trailer_section() {
        let mut line = b"1;".to_vec();
        line.resize(MAX_SIZE_LINE + 10, b'x');
        assert!(matches!(decode_all(&line), Err(ChunkError::Malformed(_))));
        let zeros = vec![b'0'; MAX_SIZE_LINE + 1];
        assert!(matches!(decode_all(&zeros), Err(ChunkError::Malformed(_))));
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_TRAILERS + 100 {
            trailers.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(matches!(decode_all(&trailers), Err(ChunkError::Malformed(_))));
    }

    #[test]
    fn refuses_a_body_over_the_limit_before_reading_its_data() {
        // Exactly the limit is fine, one byte more is not, however it is split into chunks.
        assert_eq!(decode_pieces(10, &[b"a\r\n0123456789\r\n0\r\n\r\n"]).unwrap().0, b"0123456789");
        assert_eq!(decode_pieces(10, &[b"6\r\n012345\r\n4\r\n6789\r\n0\r\n\r\n"]).unwrap().0, b"0123456789");
        assert_eq!(decode_pieces(10, &[b"b\r\n"]), Err(ChunkError::TooLarge { limit: 10 }));
        assert_eq!(decode_pieces(10, &[b"6\r\n012345\r\n5\r\n"]), Err(ChunkError::TooLarge { limit: 10 }));
        // The size alone decides: no data follows it here.
        assert_eq!(decode_pieces(1 << 20, &[b"40000000"]), Err(ChunkError::TooLarge { limit: 1 << 20 }));
        // Sizes beyond u64 are refused, not wrapped.
        assert_eq!(decode_pieces(u64::MAX, &[b"1ffffffffffffffff\r\n"]), Err(ChunkError::TooLarge { limit: u64::MAX }));
        assert_eq!(decode_pieces(0, &[b"0\r\n\r\n"]).unwrap().0, b"");
        assert_eq!(decode_pieces(0, &[b"1\r\n"]), Err(ChunkError::TooLarge { limit: 0 }));
    }

    #[test]
    fn random_corruption_never_panics_and_never_overruns() {
        let mut rng = Rng(42);
        for _ in 0..3000 {
            let body: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
            let mut encoded = encode_chunks(&body, &mut || 1 + rng.below(50));
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(encoded.len());
                match rng.below(3) {
                    0 => encoded[at] = rng.next() as u8,
                    1 => {
                        encoded.remove(at);
                    }
                    _ => encoded.insert(at, b"\r\n;0 \t"[rng.below(6)]),
                }
            }
            let mut d = Dechunker::new(1000);
            let mut rest = &encoded[..];
            let mut out = 0u64;
            while !rest.is_empty() && !d.is_done() {
                match d.decode(rest) {
                    Ok((used, data)) => {
                        out += data.len() as u64;
                        rest = &rest[used..];
                    }
                    Err(_) => break,
                }
            }
            assert!(out <= 1000 && out <= d.body_len());
        }
    }
}
