"""Wire <-> numpy: the v2 JSON and binary-tensor bodies, v1 ``:predict`` bodies, and content encodings.

Every function checks what it reads against the version's signature and raises a ``SluiceError`` (4xx)
for anything a client got wrong; nothing here knows about HTTP, routing or models beyond their signature.
"""

from sluice.server.codecs.binary import decompress
from sluice.server.codecs.fields import RequestedOutput
from sluice.server.codecs.v1 import decode_v1, encode_v1
from sluice.server.codecs.v2 import InferRequest, decode_v2, encode_v2

__all__ = [
    "InferRequest",
    "RequestedOutput",
    "decode_v1",
    "decode_v2",
    "decompress",
    "encode_v1",
    "encode_v2",
]
