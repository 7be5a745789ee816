#!/usr/bin/env python3
"""A reference probe for the CDNet probe protocol, written from docs/protocol.md alone.

Standard library only (zlib for the CRC, termios for the port), so a probe vendor can read it
side by side with the document and port it to C. It greets the edge, streams 8-bit frames from raw
files (width x height bytes each, row-major), waits for each frame's reply (lockstep), and prints
every packet it receives as one JSON line on stdout.

    tools/probe_client.py --port /dev/ttyUSB0 --width 256 --height 256 a.raw b.raw
    tools/probe_client.py --pty-link /tmp/probe --width 256 --height 256 a.raw   # then: cdnet-edge run --port /tmp/probe

Exit status: 0 when every frame got its reply (a Result, an Error or a Skipped), 1 otherwise,
2 on bad arguments or files.
"""

import argparse
import json
import os
import select
import struct
import sys
import termios
import time
import tty
import zlib

VERSION = 0x01
TAG_HELLO, TAG_READY, TAG_FRAME_CHUNK, TAG_RESULT, TAG_HEARTBEAT, TAG_ERROR, TAG_SKIPPED = range(7)
ERROR_CODES = [
    "VersionMismatch", "BadFrameGeometry", "ChunkOutOfOrder", "UnsupportedPixelFormat",
    "InferenceFailed", "NotReady", "PacketTooLarge", "UnknownMessage",
]
MAX_CHUNK_BYTES = 65536
BAUD = {9600: termios.B9600, 115200: termios.B115200, 230400: termios.B230400,
        460800: getattr(termios, "B460800", termios.B230400), 921600: getattr(termios, "B921600", termios.B230400)}


# --- §1 packets: VERSION ‖ BODY ‖ CRC-32 (little-endian), COBS, 0x00 --------------------------------

def cobs_encode(data: bytes) -> bytes:
    out, block = bytearray(), bytearray()
    for byte in data:
        if byte == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
        else:
            block.append(byte)
            if len(block) == 254:
                out += b"\xff" + block
                block = bytearray()
    out += bytes([len(block) + 1]) + block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(data):
        code = data[i]
        if code == 0 or i + code > len(data):
            raise ValueError("invalid COBS")
        out += data[i + 1:i + code]
        i += code
        if code < 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


def packet(body: bytes) -> bytes:
    raw = bytes([VERSION]) + body
    return cobs_encode(raw + struct.pack("<I", zlib.crc32(raw))) + b"\x00"


def unpack(frame: bytes):
    """One received packet (between zeros) → its body, or an error string."""
    try:
        raw = cobs_decode(frame)
    except ValueError as e:
        return None, str(e)
    if len(raw) < 6:
        return None, "too short"
    content, crc = raw[:-4], struct.unpack("<I", raw[-4:])[0]
    if zlib.crc32(content) != crc:
        return None, "CRC mismatch"
    if content[0] != VERSION:
        return None, f"version {content[0]}"
    return content[1:], None


# --- §2 postcard: varints, strings, byte strings, f32 ------------------------------------------------

def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def string(text: bytes) -> bytes:
    return varint(len(text)) + text


class Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise ValueError("body ends early")
        self.at += 1
        return self.data[self.at - 1]

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    def bytes(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise ValueError("body ends early")
        self.at += n
        return self.data[self.at - n:self.at]

    def string(self) -> str:
        return self.bytes(self.varint()).decode("utf-8", "replace")

    def f32(self) -> float:
        return struct.unpack("<f", self.bytes(4))[0]


def hello(probe_id: bytes, width: int, height: int, pixel_format: int, max_chunk: int) -> bytes:
    return (varint(TAG_HELLO) + string(probe_id) + varint(width) + varint(height) + varint(pixel_format)
            + varint(max_chunk))


def frame_chunk(seq: int, timestamp_us: int, width: int, height: int, offset: int, data: bytes) -> bytes:
    return (varint(TAG_FRAME_CHUNK) + varint(seq) + varint(timestamp_us) + varint(width) + varint(height)
            + varint(offset) + string(data))


def parse(body: bytes) -> dict:
    """A received body → a dict; fields after the last known one are ignored (§3.7)."""
    r = Reader(body)
    tag = r.varint()
    if tag == TAG_READY:
        return {"type": "ready", "model": r.string(), "classes": r.byte(), "max_packet": r.varint()}
    if tag == TAG_RESULT:
        seq, class_index = r.varint(), r.byte()
        probabilities = [r.f32() for _ in range(r.varint())]
        uncertain = r.byte() == 1
        zoom_box = [r.varint() for _ in range(4)]
        heatmap_width, heatmap_height = r.byte(), r.byte()
        heatmap = list(r.bytes(r.varint()))
        return {"type": "result", "seq": seq, "class_index": class_index, "probabilities": probabilities,
                "uncertain": uncertain, "zoom_box": zoom_box, "heatmap_width": heatmap_width,
                "heatmap_height": heatmap_height, "heatmap": heatmap, "latency_us": r.varint()}
    if tag == TAG_HEARTBEAT:
        return {"type": "heartbeat", "uptime_ms": r.varint()}
    if tag == TAG_ERROR:
        seq = r.varint() if r.byte() == 1 else None
        code = r.varint()
        name = ERROR_CODES[code] if code < len(ERROR_CODES) else f"code {code}"
        return {"type": "error", "seq": seq, "code": name, "detail": r.string()}
    if tag == TAG_SKIPPED:
        return {"type": "skipped", "seq": r.varint(), "newer": r.varint()}
    return {"type": "unknown", "tag": tag}


# --- the link ------------------------------------------------------------------------------------------

class Link:
    """A serial device or a pty in raw mode (8N1, no flow control: docs/protocol.md §3)."""

    def __init__(self, args):
        self.keep = None
        if args.pty_link:
            self.fd, self.keep = os.openpty()
            tty.setraw(self.keep)  # no echo or line editing before the edge opens its side
            if os.path.lexists(args.pty_link):
                os.unlink(args.pty_link)
            os.symlink(os.ttyname(self.keep), args.pty_link)
        else:
            self.fd = os.open(args.port, os.O_RDWR | os.O_NOCTTY)
            tty.setraw(self.fd)
            attrs = termios.tcgetattr(self.fd)
            speed = BAUD.get(args.baud, termios.B115200)
            attrs[4] = attrs[5] = speed
            attrs[2] = (attrs[2] & ~(termios.PARENB | termios.CSTOPB | termios.CSIZE)) | termios.CS8
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        self.pending = bytearray()

    def send(self, data: bytes):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def packets(self, timeout: float):
        """Received bodies (or error strings) until `timeout` seconds pass with nothing complete."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            self.pending += os.read(self.fd, 65536)
        except OSError:  # EIO: the other side is not open (yet)
            time.sleep(0.05)
            return []
        out = []
        while b"\x00" in self.pending:
            end = self.pending.index(b"\x00")
            frame, self.pending = bytes(self.pending[:end]), self.pending[end + 1:]
            if frame:
                out.append(unpack(frame))
        return out


# --- the session (§3) ----------------------------------------------------------------------------------

class Probe:
    def __init__(self, link: Link, args):
        self.link, self.args, self.decode_errors = link, args, 0

    def emit(self, record: dict):
        print(json.dumps(record), flush=True)

    def receive(self, timeout: float):
        replies = []
        for body, error in self.link.packets(timeout):
            if error:
                self.decode_errors += 1
                continue
            try:
                record = parse(body)
            except ValueError as e:
                self.decode_errors += 1
                record = {"type": "malformed", "detail": str(e)}
            self.emit(record)
            replies.append(record)
        return replies

    def greet(self) -> bool:
        """Hello every 300 ms until Ready or an Error refusing it (§3.1)."""
        message = packet(hello(b"probe_client.py", self.args.width, self.args.height, self.args.pixel_format,
                               self.args.chunk))
        deadline = time.monotonic() + self.args.wait_ready
        while time.monotonic() < deadline:
            self.link.send(b"\x00" + message)
            stop = time.monotonic() + 0.3
            while time.monotonic() < stop:
                for reply in self.receive(0.05):
                    if reply["type"] == "ready":
                        return True
                    if reply["type"] == "error" and reply["seq"] is None:
                        return False
        return False

    def await_edge(self) -> bool:
        """Without a greeting, the only sign of an edge is its heartbeat, about once a second (§3.5)."""
        deadline = time.monotonic() + self.args.wait_ready
        while time.monotonic() < deadline:
            if self.receive(0.1):
                return True
        return False

    def send_frame(self, seq: int, pixels: bytes) -> bool:
        """Sends one frame and waits for its one reply (§3.2, §3.4)."""
        chunks = b"\x00"  # a sync zero before every frame (§3.6)
        timestamp_us = int(time.monotonic() * 1e6)  # every chunk repeats the frame's header (§2.2)
        for offset in range(0, len(pixels), self.args.chunk):
            data = pixels[offset:offset + self.args.chunk]
            chunks += packet(frame_chunk(seq, timestamp_us, self.args.width, self.args.height, offset, data))
        self.link.send(chunks)
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            for reply in self.receive(0.05):
                if reply["type"] in ("result", "error", "skipped") and reply.get("seq") == seq:
                    return True
        self.emit({"type": "timeout", "seq": seq})
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial device of the edge (e.g. /dev/ttyUSB0)")
    where.add_argument("--pty-link", help="create a pseudo-terminal and publish it at this path")
    parser.add_argument("--baud", type=int, default=921600, help="UART baud rate (default 921600, 8N1)")
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--chunk", type=int, default=4096, help="bytes per chunk (max_chunk), 1..65536")
    parser.add_argument("--pixel-format", type=int, default=0, help="0 = Gray8 (the only one defined)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a frame's reply")
    parser.add_argument("--wait-ready", type=float, default=20.0, help="seconds to keep greeting")
    parser.add_argument("--no-hello", action="store_true", help="send frames without greeting (expect NotReady)")
    parser.add_argument("frames", nargs="*", help="raw 8-bit frames, width*height bytes each")
    args = parser.parse_args()
    if not 1 <= args.chunk <= MAX_CHUNK_BYTES:
        parser.error(f"--chunk {args.chunk}: must be 1 to {MAX_CHUNK_BYTES}")
    frames = []
    for path in args.frames:
        try:
            with open(path, "rb") as f:
                pixels = f.read()
        except OSError as e:
            parser.error(f"{path}: {e.strerror}")
        if len(pixels) != args.width * args.height:
            parser.error(f"{path}: {len(pixels)} bytes, expected {args.width}x{args.height} = "
                         f"{args.width * args.height}")
        frames.append(pixels)

    probe = Probe(Link(args), args)
    if args.no_hello:
        if not probe.await_edge():
            probe.emit({"type": "no_edge"})
            return 1
    elif not probe.greet():
        probe.emit({"type": "no_ready"})
        return 1
    answered = sum(probe.send_frame(seq, pixels) for seq, pixels in enumerate(frames))
    probe.emit({"type": "summary", "frames": len(frames), "answered": answered,
                "decode_errors": probe.decode_errors})
    return 0 if answered == len(frames) else 1


if __name__ == "__main__":
    sys.exit(main())
