"""Python client for kvd, the shared-memory KV-cache daemon.

    from kvd import Client
    with Client("ipc:///tmp/kvd-default.sock") as c:
        c.hello()
        seq = c.create_sequence("smollm2-135m")
        c.append(seq, keys, values)          # [layers, kv_heads, tokens, head_dim]
        k, v = c.query(seq).stacked()
"""

from kvd.attention import attention, attention_arrays
from kvd.client import Client
from kvd.curve import CurveKeyPair, load_curve_key, load_curve_keypair
from kvd.errors import ErrorCode, EvictedError, KvdError
from kvd.events import Events
from kvd.keepalive import KeepAliveResult
from kvd.pipeline import AppendPipeline, PipelineError
from kvd.results import (AppendResult, CompactResult, CreateResult, ReserveResult, SequenceStats,
                         Stats)
from kvd.views import HeadData, QueryResult

__all__ = ["Client", "ErrorCode", "KvdError", "EvictedError", "Events", "KeepAliveResult", "HeadData",
           "QueryResult", "AppendPipeline", "PipelineError", "attention", "attention_arrays",
           "CurveKeyPair", "load_curve_key", "load_curve_keypair", "AppendResult", "CompactResult",
           "CreateResult", "ReserveResult", "SequenceStats", "Stats"]
__version__ = "0.1.0"
