//! Streaming receiver: bytes in, messages (or counted errors) out, in bounded memory.

use super::Message;
use super::codec::{PacketError, decode_packet};

/// Counts of everything the decoder has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Bytes fed.
    pub bytes: u64,
    /// Packets decoded successfully.
    pub packets: u64,
    /// Packets longer than the buffer.
    pub overflow: u64,
    /// Invalid COBS.
    pub cobs: u64,
    /// Too short.
    pub too_short: u64,
    /// CRC mismatches.
    pub crc: u64,
    /// Intact packets of another protocol version.
    pub version: u64,
    /// CRC good, message unparseable.
    pub malformed: u64,
}

impl DecoderStats {
    /// All rejected packets.
    pub fn errors(&self) -> u64 {
        self.overflow + self.cobs + self.too_short + self.crc + self.version + self.malformed
    }

    fn count(&mut self, error: PacketError) {
        *match error {
            PacketError::Overflow => &mut self.overflow,
            PacketError::Cobs => &mut self.cobs,
            PacketError::TooShort => &mut self.too_short,
            PacketError::Crc => &mut self.crc,
            PacketError::Version(_) => &mut self.version,
            PacketError::Malformed => &mut self.malformed,
        } += 1;
    }
}

/// Splits a byte stream at zero bytes and decodes each packet, with an `N`-byte buffer (no
/// allocation). After garbage, truncation or a bit flip it resynchronises at the next zero byte;
/// every rejected packet is reported once and counted in [`stats`](Self::stats).
///
/// `N` = [`MAX_WIRE_PACKET`](super::MAX_WIRE_PACKET) accepts every valid packet; a probe that only
/// receives results can use a few hundred bytes. Large decoders belong in a `Box`.
pub struct FrameDecoder<const N: usize> {
    buf: [u8; N],
    len: usize,
    discarding: bool,
    stats: DecoderStats,
}

impl<const N: usize> Default for FrameDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameDecoder<N> {
    /// An empty decoder.
    pub const fn new() -> Self {
        FrameDecoder {
            buf: [0; N],
            len: 0,
            discarding: false,
            stats: DecoderStats {
                bytes: 0,
                packets: 0,
                overflow: 0,
                cobs: 0,
                too_short: 0,
                crc: 0,
                version: 0,
                malformed: 0,
            },
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Drops any partial packet (e.g. after the link was reopened).
    pub fn reset(&mut self) {
        self.len = 0;
        self.discarding = false;
    }

    /// Consumes bytes from `input` up to and including the end of the first complete packet (or an
    /// overflow), and returns how many bytes were consumed with what was found. Call again with the
    /// rest of the input until it is empty; `None` means all of `input` was consumed without a
    /// complete packet.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Result<Message<'_>, PacketError>>) {
        for (i, &byte) in input.iter().enumerate() {
            if byte != 0 {
                if self.discarding {
                    continue;
                }
                if self.len == N {
                    self.discarding = true;
                    self.len = 0;
                    self.stats.bytes += i as u64 + 1;
                    self.stats.count(PacketError::Overflow);
                    return (i + 1, Some(Err(PacketError::Overflow)));
                }
                self.buf[self.len] = byte;
                self.len += 1;
                continue;
            }
            // A zero ends a packet.
            if self.discarding || self.len == 0 {
                // End of skipped bytes, or an idle/sync zero.
                self.discarding = false;
                self.len = 0;
                continue;
            }
            let len = core::mem::take(&mut self.len);
            let stats = &mut self.stats;
            stats.bytes += i as u64 + 1;
            let result = match cobs::decode_in_place(&mut self.buf[..len]) {
                Ok(n) => decode_packet(&self.buf[..n]),
                Err(_) => Err(PacketError::Cobs),
            };
            match &result {
                Ok(_) => stats.packets += 1,
                Err(e) => stats.count(*e),
            }
            return (i + 1, Some(result));
        }
        self.stats.bytes += input.len() as u64;
        (input.len(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    #[test]
    fn bytes_counter_counts_every_byte_once() {
        let mut dec = FrameDecoder::<64>::new();
        let mut pkt = [0u8; 64];
        let mut scratch = [0u8; 64];
        let n = encode_packet(&Message::Heartbeat(Heartbeat { uptime_ms: 7 }), &mut scratch, &mut pkt).unwrap();
        let mut stream = [0u8; 200];
        stream[1..1 + n].copy_from_slice(&pkt[..n]);
        let mut rest = &stream[..];
        let mut got = 0;
        while !rest.is_empty() {
            let (used, ev) = dec.feed(rest);
            if let Some(Ok(Message::Heartbeat(h))) = ev {
                assert_eq!(h.uptime_ms, 7);
                got += 1;
            }
            rest = &rest[used..];
        }
        assert_eq!(got, 1);
        assert_eq!(dec.stats().bytes, 200);
    }
}
