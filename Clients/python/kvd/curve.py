"""CURVE keys for kvd's tcp endpoints, in ZeroMQ's Z85 text form (40 characters).

``kvd keygen --name NAME`` writes ``NAME.key`` (secret) and ``NAME.pub`` (public), one key per file.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import NamedTuple, Optional, Tuple, Union

import zmq
import zmq.utils.z85

Key = Union[str, bytes]


class CurveKeyPair(NamedTuple):
    public: bytes
    secret: bytes


def load_curve_key(path: Union[str, Path]) -> bytes:
    """The Z85 key in ``path`` (its first non-empty line), checked."""
    text = Path(path).read_text(encoding="ascii")
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return _z85(line, str(path))


def load_curve_keypair(path_without_ext: Union[str, Path]) -> CurveKeyPair:
    """``<path>.pub`` and ``<path>.key`` as written by ``kvd keygen``; checks they belong together."""
    base = str(path_without_ext)
    pair = CurveKeyPair(load_curve_key(base + ".pub"), load_curve_key(base + ".key"))
    if zmq.curve_public(pair.secret) != pair.public:
        raise ValueError(f"{base}.pub is not the public key of {base}.key")
    return pair


def client_keys(server: Optional[Key], public: Optional[Key],
                secret: Optional[Key]) -> Optional[Tuple[bytes, bytes, bytes]]:
    """(server, public, secret) as Z85 bytes, or None when no CURVE key is given at all."""
    given = [k is not None for k in (server, public, secret)]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("CURVE needs curve_server_key, curve_public_key and curve_secret_key together")
    if not zmq.has("curve"):
        raise ValueError("this pyzmq/libzmq has no CURVE support")
    assert server is not None and public is not None and secret is not None  # all given, above
    return (_z85(server, "curve_server_key"), _z85(public, "curve_public_key"),
            _z85(secret, "curve_secret_key"))


def _z85(key: Key, what: str) -> bytes:
    raw = key.encode("ascii") if isinstance(key, str) else bytes(key)
    try:
        # Canonical Z85 only (re-encoding gives the same text), as the daemon requires.
        ok = len(raw) == 40 and zmq.utils.z85.encode(zmq.utils.z85.decode(raw)) == raw
    except (ValueError, KeyError, IndexError, TypeError, OverflowError, struct.error):
        ok = False
    if not ok:
        raise ValueError(f"{what}: not a Z85 CURVE key (40 characters, as in a `kvd keygen` file)")
    return raw
