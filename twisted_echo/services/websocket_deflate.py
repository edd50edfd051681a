# -*- test-case-name: tests.test_websocket_deflate -*-
"""
permessage-deflate (RFC 7692) for the WebSocket service, with the
decompression bounded.

C{wsproto}'s C{PerMessageDeflate} inflates each compressed frame whole
(C{zlib}'s C{decompress} with no C{max_length}): a few KiB of deflate input
can make gigabytes (a "deflate bomb", about 1:1030 at most). L{BoundedDeflate}
inflates at most C{max_message + 1} bytes of one message: once a message
inflates beyond C{max_message} bytes the frame parser fails with close code
1009 (RFC 6455 section 7.4.1, "message too big") and the rest of the input
is never inflated.

Memory: the server asks for C{client_no_context_takeover} (RFC 7692
section 7.1.1.1: a server may ask it even if the client did not offer it),
so the inflate state (a 32 KiB window) lives only while a compressed
message arrives, and is freed after it. In mode L{RECEIVE} (the default)
replies are sent uncompressed (RFC 7692 section 6: the "Per-Message
Compressed" bit is per message; a sender may leave any message
uncompressed), so no deflate state (about 256 KiB of C{zlib} state with 15
window bits) is kept per connection; in mode L{BOTH} replies are compressed
too, with C{server_no_context_takeover} so that state is freed after each
message.
"""

from __future__ import annotations

import zlib

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import (
    CloseReason,
    FrameDecoder,
    FrameProtocol,
    Opcode,
    RsvBits,
)

#: C{--websocket-deflate} modes: decline the extension; accept it and
#: inflate what clients send, replying uncompressed; accept it both ways.
OFF = "off"
RECEIVE = "receive"
BOTH = "both"
DEFLATE_MODES = (RECEIVE, BOTH, OFF)
#: The RFC 7692 section 7.2.2 end of a message's deflate data, appended to
#: a message's last frame before inflating it.
_TAIL = b"\x00\x00\xff\xff"


class BoundedDeflate(PerMessageDeflate):
    """
    wsproto's permessage-deflate, inflating at most C{max_message} bytes of
    one message (see the module docstring).

    @ivar max_message: most bytes one message may inflate to (bytes; 0: no
        limit, as wsproto's own extension).
    @ivar compress_replies: whether replies are compressed (mode L{BOTH}).
    @ivar inflated_too_large: set once a message inflated beyond
        C{max_message} (the frame parser then fails with 1009), so that the
        service can tell this 1009 from one for a long uncompressed message.
    """

    def __init__(self, max_message: int, compress_replies: bool = False) -> None:
        """
        @param max_message: see L{max_message}.
        @param compress_replies: see L{compress_replies}.
        """
        PerMessageDeflate.__init__(
            self,
            client_no_context_takeover=True,
            server_no_context_takeover=compress_replies,
        )
        self.max_message = max_message
        self.compress_replies = compress_replies
        self.inflated_too_large = False
        self._inflated = 0

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        """
        Inflate C{data} (deflate input of the current message), at most to
        one byte over the message's budget.

        @return: the bytes inflated, or C{CloseReason.MESSAGE_TOO_BIG} when
            the message inflates beyond C{max_message} (the rest of C{data}
            is not inflated), or C{CloseReason.INVALID_FRAME_PAYLOAD_DATA}
            for input that is not deflate data.
        """
        decompressor = self._decompressor
        assert decompressor is not None
        limit = self.max_message
        try:
            if not limit:
                return decompressor.decompress(data)
            room = limit - self._inflated
            out = decompressor.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if len(out) > room:
            # Drop the inflate state and its unconsumed input now: nothing
            # more of this connection is read.
            self._decompressor = None
            self.inflated_too_large = True
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        """
        wsproto's hook: a frame starts. A control frame (ping, pong, close)
        may come between two frames of a compressed message (RFC 6455
        section 5.4) and leaves that message's state alone; wsproto's own
        extension forgets there that the message is compressed.
        """
        if opcode.iscontrol():
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
            self._inbound_is_compressible = False
            return RsvBits(True, False, False)
        return PerMessageDeflate.frame_inbound_header(
            self, proto, opcode, rsv, payload_length
        )

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        """
        wsproto's hook: C{data}, a piece of a frame's payload, inflated (see
        L{_inflate}) when the message is compressed.
        """
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        """
        wsproto's hook: a frame ended; at a compressed message's last frame
        inflate its deflate tail (bounded as L{_inflate}), then free the
        inflate state (C{client_no_context_takeover}).
        """
        if not fin or not self._inbound_is_compressible:
            # A message's first frames, or a control frame between them.
            return None
        compressed = self._inbound_compressed
        self._inbound_compressed = None
        if not compressed:
            return None
        out = self._inflate(_TAIL)
        self._decompressor = None
        self._inflated = 0
        return out

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        """
        wsproto's hook: compress a reply in mode L{BOTH}; else send it as
        it is (the "Per-Message Compressed" bit clear).
        """
        if not self.compress_replies:
            return rsv, data
        return PerMessageDeflate.frame_outbound(self, proto, opcode, rsv, data, fin)


def deflate_extensions(mode: str, max_message: int) -> list[BoundedDeflate]:
    """
    @param mode: one of L{DEFLATE_MODES}.
    @param max_message: see L{BoundedDeflate.max_message}.
    @return: the extensions to offer wsproto for a connection's handshake
        (a new one per connection: it holds that connection's state).
    @raise ValueError: for an unknown C{mode}.
    """
    if mode == OFF:
        return []
    if mode not in DEFLATE_MODES:
        modes = ", ".join(DEFLATE_MODES)
        raise ValueError(f"unknown deflate mode {mode!r}; one of {modes}")
    return [BoundedDeflate(max_message, compress_replies=mode == BOTH)]
