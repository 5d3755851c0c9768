"""The wire protocol the server decodes with, and a guard against a decoder that can be frozen.

pulsegate installs thriftpy2 rebuilt with a guarded skip (deploy/patch_thriftpy2.py). If the
compiled decoder in use is the unguarded one (the stock wheel, as `pip install` gets it), the
server falls back to thriftpy2's pure-Python binary protocol with the same guard, over the
pure-Python transports: slower, but 30 hostile bytes can no longer stop every thread of the
scheduler. The pair must match: the pure protocol writes memoryviews, which the compiled
transports refuse (they take bytes only), so a mixed pair fails every reply with a string."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
import thriftpy2.protocol.binary as pure
from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.protocol.exc import TProtocolException
from thriftpy2.thrift import TType
from thriftpy2.transport import TBufferedTransportFactory, TFramedTransportFactory
from thriftpy2.transport import buffered as pure_buffered
from thriftpy2.transport import framed as pure_framed

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
_unguarded_skip: Callable[..., None] = pure.skip


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
        from thriftpy2.transport.memory import TCyMemoryBuffer  # type: ignore[attr-defined]
    except ImportError:
        return False
    try:
        cybin.skip(TCyMemoryBuffer(bytes(8)), 1)  # type 1 (VOID) has no encoding
    except Exception:
        return True
    return False


def transport_factory(name: str) -> Any:
    """The compiled transport `name` ("buffered" or "framed"), as clients and forwarders use."""
    return TFramedTransportFactory() if name == "framed" else TBufferedTransportFactory()


def server_codec(transport: str, force_pure: bool = False) -> tuple[Any, Any]:
    """(protocol factory, transport factory) for the server: the fast compiled pair when the
    compiled decoder is guarded, otherwise (or with `force_pure`, for tests) the guarded
    pure-Python protocol over the pure-Python transport."""
    if not force_pure and compiled_decoder_is_guarded():
        return TBinaryProtocolFactory(), transport_factory(transport)
    log.error(
        "thrift_decoder_unguarded",
        fix="run deploy/bootstrap.sh (it rebuilds thriftpy2 with a guarded skip)",
        fallback="pure-Python protocol and transport: safe, slower",
        forced=force_pure,
    )
    pure.skip = _guarded_skip  # read_val and read_struct look the name up at call time
    factory = (
        pure_framed.TFramedTransportFactory()
        if transport == "framed"
        else pure_buffered.TBufferedTransportFactory()
    )
    return pure.TBinaryProtocolFactory(), factory
