"""The wire protocol the server decodes with, and a guard against a decoder that can be frozen.

pulsegate installs thriftpy2 rebuilt with a guarded skip (deploy/patch_thriftpy2.py). If the
compiled decoder in use is the unguarded one, the server falls back to thriftpy2's pure-Python
binary protocol with the same guard: slower, but 30 hostile bytes can no longer stop every
thread of the scheduler."""

from __future__ import annotations

from typing import Any

import structlog
import thriftpy2.protocol.binary as pure
from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.protocol.exc import TProtocolException
from thriftpy2.thrift import TType

log = structlog.get_logger(__name__)

KNOWN_TYPES = frozenset(
    {
        TType.BOOL,
        TType.BYTE,
        TType.DOUBLE,
        TType.I16,
        TType.I32,
        TType.I64,
        TType.STRING,
        TType.STRUCT,
        TType.MAP,
        TType.SET,
        TType.LIST,
    }
)
_unguarded_skip = pure.skip


def _guarded_skip(inbuf: Any, ftype: int, budget: int = pure.DEFAULT_MAX_DEPTH) -> None:
    if ftype not in KNOWN_TYPES:
        raise TProtocolException(
            TProtocolException.INVALID_DATA, f"unexpected type {ftype} to skip"
        )
    _unguarded_skip(inbuf, ftype, budget)


def compiled_decoder_is_guarded() -> bool:
    """Does the compiled decoder refuse to skip an unknown type?"""
    try:
        from thriftpy2.protocol.cybin import cybin
        from thriftpy2.transport.memory import TCyMemoryBuffer
    except ImportError:
        return False
    try:
        cybin.skip(TCyMemoryBuffer(bytes(8)), 1)  # type 1 (VOID) has no encoding
    except Exception:
        return True
    return False


def protocol_factory() -> Any:
    """The fast compiled protocol when it is guarded; otherwise the guarded pure-Python one."""
    if compiled_decoder_is_guarded():
        return TBinaryProtocolFactory()
    log.error(
        "thrift_decoder_unguarded",
        fix="run deploy/bootstrap.sh (it rebuilds thriftpy2 with a guarded skip)",
        fallback="pure-Python protocol: safe, slower",
    )
    pure.skip = _guarded_skip  # read_val and read_struct look the name up at call time
    return pure.TBinaryProtocolFactory()
