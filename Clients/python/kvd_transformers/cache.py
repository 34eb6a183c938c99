"""``KvdCache``: a transformers ``Cache`` whose keys and values live in a kvd sequence.

Per layer the cache keeps a persistent torch buffer (:mod:`kvd_transformers.buffers`) mirroring
kvd: the layer's retained tokens, every KV head padded to the longest head of the layer, and a bias
(each token's log-weight, −inf on padding). Per forward pass (batch size 1):

* layer 0's ``update`` first refreshes the buffers from kvd with one ``Query`` — only when they no
  longer mirror the sequence: the sequence's ``generation`` changed (a compaction — this cache's,
  or one the daemon's memory manager ran, seen in the generation every Append reply carries — or an
  alias change), or tokens were adopted or appended behind the cache's back;
* every layer's ``update`` writes the new tokens into its buffer (O(new tokens)) and returns views
  of it; the layer's :class:`~kvd_transformers.attention.LayerContext` (bias, whether a mask is
  needed) goes to the attention function in the attention kwargs (see
  :mod:`kvd_transformers.attention`);
* once the last layer has updated, the new tokens of all layers go to kvd in one ``Append`` (keys
  post-RoPE; :meth:`KvdCache._send_append`);
* after the first forward (the prefill), when a method or policy is set (or
  ``compact_after_prefill="auto"``: the daemon's rules decide), the cache sends ``Compact``, with
  the last ``window`` post-RoPE query vectors of every layer (``[layers, q_heads, w, head_dim]``)
  the attention function captured when the method needs them (:mod:`kvd_transformers.queries`).

``get_seq_length`` is the logical length (tokens ever appended), so positions (RoPE) of new tokens
stay right after compaction. KVSharer-aliased layers read their owner layer's buffer, old and new
tokens. When kvd's layout dtype differs from the model's (an f16 layout under an f32 model), tokens
are rounded through it as they are written, so the buffer holds exactly what kvd holds.

Prefix reuse (``reuse_prefix=True``, docs/PREFIX.md): every ``Append`` carries the token ids of the
tokens it adds — the ``input_ids`` of the forward pass, recorded by a forward pre-hook on the model —
so kvd indexes the sequence's full pages; with ``prompt_ids`` the sequence is created adopting the
longest cached prefix of the prompt (at most all but its last token, which the model needs to
produce logits), and ``get_seq_length`` starts at the adopted length, so ``model.generate`` with the
whole prompt prefills only the rest (generate slices ``input_ids`` by the cache's length).
"""

from __future__ import annotations

import sys
import threading
import warnings
import weakref
from typing import Optional, Union

import numpy as np
import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from kvd import dtypes
from kvd_transformers.attention import ATTN_NAME, CTX_KWARG, LayerContext
from kvd_transformers.buffers import LayerBuffer, read_layer, to_torch
from kvd_transformers.layout import check_layout, check_windows, layer_windows_of
from kvd_transformers.queries import needs_queries

NEEDS_KVD_ATTENTION = (
    "load the model with attn_implementation='kvd' after kvd_transformers.register_attention() "
    "(or call model.set_attn_implementation('kvd'))")
INLINE_SLACK = 64 * 1024  # room for the Append's envelope next to the K/V bytes
# A sliding layer's buffer is trimmed once it holds window + window / TRIM_SLACK tokens: each trim
# copies about a window, so trims every window/4 tokens keep the cost per token small.
TRIM_SLACK = 4
_TORCH_DTYPES = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}


class KvdLayer(CacheLayerMixin):
    """One layer of a KvdCache: forwards to the cache, which holds the layer's buffer."""

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, cache: "KvdCache", layer_idx: int, window: int = 0):
        super().__init__()
        self._cache = cache
        self.layer_idx = layer_idx
        # transformers sizes its sliding-window mask on a layer that says it slides; the kvd
        # attention function applies the window itself, by token position.
        self.is_sliding = bool(window)
        self.sliding_window = int(window) or None

    def lazy_initialization(self, key_states, value_states) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        # transformers' attention modules pass ``kwargs=<the dict they unpack into the attention
        # function>``: the cache puts the layer's context there.
        attn_kwargs = kwargs.get("kwargs")
        self.keys, self.values = self._cache._update_layer(
            key_states, value_states, self.layer_idx,
            attn_kwargs if isinstance(attn_kwargs, dict) else None)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self._cache.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        return self._cache.get_seq_length()

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        raise NotImplementedError("KvdCache cannot be reset in place; create a new KvdCache")

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("KvdCache does not support crop (kvd sequences only grow)")

    def reorder_cache(self, beam_idx) -> None:
        raise NotImplementedError("KvdCache does not support beam search (batch size 1 only)")


class KvdCache(Cache):
    """A transformers ``Cache`` backed by one kvd sequence of ``model_name``.

    ``client``: a :class:`kvd.Client` (Hello is called if it has not been). ``policy`` / ``method``
    and ``params``: what ``Compact`` runs after the prefill (nothing when both are empty, unless
    ``compact_after_prefill="auto"``: then ``Compact`` names neither and the daemon's rules — or
    the model's default policy or method — decide, docs/POLICIES.md). ``window``: how many of the
    last prefill queries of every query head are sent as observation queries (only to methods that
    need them). ``config``: the model (or its config) — checked against kvd's layout at once (the
    shapes are also checked at the first update). ``zero_copy``: append through Reserve/Commit
    instead of inline bytes. ``query_mode``: how the buffers are (re)filled from kvd ("pages",
    "gather", or "auto": gather when the sequence fits in half the staging area, else pages). Use with a model whose ``attn_implementation`` is ``"kvd"``
    (:func:`kvd_transformers.register_attention`); a cache that will be compacted refuses any other
    before sending anything.

    Prefix reuse: ``reuse_prefix=True`` needs ``model`` (the transformers model this cache is used
    with; its config is then checked as ``config`` is). Every forward pass's ``input_ids`` are
    recorded and sent with its Append, so kvd indexes this sequence's full pages (prompt and
    generated tokens alike: a later turn of the chat reuses earlier answers). ``prompt_ids`` (the
    whole prompt, 1-D or ``[1, T]``): create the sequence adopting the longest cached prefix of
    ``prompt_ids[:-1]``; :attr:`adopted_tokens` says how many tokens (whole pages) that was, and
    ``model.generate(prompt_ids, cache=cache)`` then prefills only the rest. A forward pass whose
    ids are unknown (``inputs_embeds``, or a module other than ``model`` called) is appended
    without ids, which stops kvd indexing this sequence for good (a warning says so); so does a
    compaction.

    Lifetime: :meth:`release` (or ``with KvdCache(...) as cache``) frees the sequence; a cache
    dropped without it releases its sequence when garbage-collected, if its client is still open.
    """

    def __init__(self, client, model_name: str, policy: str = "", method: str = "",
                 params: Optional[dict] = None, window: int = 32,
                 compact_after_prefill: Union[bool, str] = True, *, config=None, tenant: str = "",
                 zero_copy: bool = False, queries_in_shm: bool = False, model=None,
                 reuse_prefix: bool = False, prompt_ids=None, query_mode: str = "auto"):
        models = client.models  # Hello on first use
        if model_name not in models:
            raise ValueError(f"kvd_transformers: kvd serves no model {model_name!r} "
                             f"(it serves {sorted(models)})")
        self.layout = models[model_name]
        if config is None and model is not None:
            config = model.config
        if config is not None:
            check_layout(config, self.layout)
        if reuse_prefix and model is None:
            raise ValueError("kvd_transformers: reuse_prefix=True needs model= (the cache records "
                             "each forward pass's input_ids from it, to send them with the Append)")
        if prompt_ids is not None and not reuse_prefix:
            raise ValueError("kvd_transformers: prompt_ids is only used with reuse_prefix=True")
        if window < 1:
            raise ValueError(f"kvd_transformers: window must be >= 1, got {window}")
        if compact_after_prefill not in (True, False, "auto"):
            raise ValueError("kvd_transformers: compact_after_prefill must be True, False or "
                             f"'auto' (the daemon's rules pick the policy); got {compact_after_prefill!r}")
        if query_mode not in ("auto", "pages", "gather"):
            raise ValueError("kvd_transformers: query_mode must be 'auto', 'pages' or 'gather', "
                             f"got {query_mode!r}")
        self.client = client
        self.model_name = model_name
        self.policy = policy
        self.method = method
        self.params = dict(params or {})
        self.window = int(window)
        self.compact_after_prefill = compact_after_prefill
        self.zero_copy = zero_copy
        self.queries_in_shm = queries_in_shm
        self.query_mode = query_mode
        self.num_layers = int(self.layout.layers)
        self.kv_heads = int(self.layout.kv_heads)
        self.q_heads = int(self.layout.q_heads)
        self.head_dim = int(self.layout.head_dim)
        self.kvd_dtype = dtypes.to_numpy(self.layout.dtype)
        self._config = getattr(config, "config", config)
        # Each layer's attention window (0 = full) from the model's config; without a config they
        # are learnt from the attention function's `sliding_window` in the first forward pass.
        self.windows = layer_windows_of(config) if config is not None else [0] * self.num_layers
        if config is not None:
            check_windows(self.windows, self.layout)
        super().__init__(layers=[KvdLayer(self, i, self.windows[i])
                                 for i in range(self.num_layers)])

        self.reuse_prefix = reuse_prefix
        prompt = None if prompt_ids is None else _ids_list(prompt_ids, "prompt_ids")
        if prompt:
            # The last prompt token is always fed to the model: its logits pick the first new token.
            resp = client.create_sequence_ex(model_name, tenant=tenant,
                                             adopt_token_ids=prompt[:-1])
            self.sequence_id, self.adopted_tokens = resp.sequence_id, int(resp.adopted_tokens)
        else:
            self.sequence_id, self.adopted_tokens = client.create_sequence(model_name, tenant=tenant), 0
        self.released = False
        self.compactions = []            # CompactResponse of every compaction, in order
        self.aliases: dict = {}          # layer -> owner in force (KVSharer)
        self.refreshes = 0               # Queries that (re)filled the buffers
        self._length = self.adopted_tokens  # logical length: tokens adopted or ever appended
        self._forwards = 0               # completed forward passes (appends)
        self._compact_due = False
        self._saw_kvd_attention = False
        self._prefilling = False
        # The buffers mirror generation `_generation` of the sequence at logical length `_synced`
        # (None: not known yet — the first Append reply tells); `_stale`: a reply showed kvd moved on.
        self._generation: Optional[int] = None
        self._synced = 0
        self._stale = False
        self._buffers: list = [None] * self.num_layers  # LayerBuffer per layer, made at first use
        self._query = None               # the Query a refresh is reading
        self._contexts = [LayerContext(self, i, None, True) for i in range(self.num_layers)]
        self._new = [None] * self.num_layers   # this forward's new (K, V) per layer
        self._queries = [None] * self.num_layers  # captured window queries [q_heads, w, D]
        self.queries_sent = False        # whether the last Compact carried them
        # Prefix reuse: ids of every token the sequence holds (while indexing), the prompt (to check
        # the first forward continues it), the ids the model hook saw for the next / this forward.
        self.indexing = reuse_prefix     # every Append so far carried ids: kvd indexes the pages
        self._token_ids: list = prompt[:self.adopted_tokens] if prompt else []
        self._prompt = prompt
        self._next_ids = None
        self._forward_ids = None
        self._hook = None
        if reuse_prefix:
            self._hook = model.register_forward_pre_hook(_record_input_ids(self), with_kwargs=True)
        # A cache dropped without release(): free its sequence (and the hook) when collected. The
        # finalizer holds neither the cache nor the client (weak), never runs at interpreter exit
        # and never raises.
        self._finalizer = weakref.finalize(self, _release_dropped, weakref.ref(client),
                                           self.sequence_id, self._hook)
        self._finalizer.atexit = False

    # ------------------------------------------------------------------------------------
    # transformers Cache API

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._length

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self._length + query_length, 0

    def get_max_length(self, layer_idx=None) -> int:
        return -1

    # ------------------------------------------------------------------------------------
    # per-layer update

    def _check_states(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int) -> None:
        if self.released:
            raise RuntimeError(f"kvd_transformers: sequence {self.sequence_id} was released")
        want = (1, self.kv_heads, self.head_dim)
        for name, t in (("key", k), ("value", v)):
            got = (t.shape[0], t.shape[1], t.shape[3])
            if t.dim() != 4 or got != want:
                raise ValueError(
                    f"kvd_transformers: layer {layer_idx} {name} states have shape "
                    f"{list(t.shape)}; kvd model {self.model_name!r} needs [1, {self.kv_heads}, "
                    f"tokens, {self.head_dim}] (batch size 1)")
        if not 0 <= layer_idx < self.num_layers:
            raise ValueError(f"kvd_transformers: layer {layer_idx} out of range; kvd model "
                             f"{self.model_name!r} has {self.num_layers} layers")

    @property
    def compacts_after_prefill(self) -> bool:
        """Whether the prefill is followed by a Compact (a method or policy, or "auto")."""
        if self.compact_after_prefill == "auto":
            return True
        return bool(self.compact_after_prefill) and bool(self.method or self.policy)

    def _needs_kvd_attention(self, why: str) -> RuntimeError:
        return RuntimeError(f"kvd_transformers: {why}, which needs the 'kvd' attention function "
                            f"(per-head lengths, log-weights): {NEEDS_KVD_ATTENTION}")

    def _check_attention(self) -> None:
        """Before the first request of a forward pass: a cache that is (or will be) compacted
        needs the kvd attention function; refuse any other with the fix, not a protocol error."""
        attn = getattr(self._config, "_attn_implementation", None)
        known_other = attn is not None and attn != ATTN_NAME
        if self._forwards == 0 and self.compacts_after_prefill and known_other:
            raise self._needs_kvd_attention(
                f"this cache compacts after the prefill, but the model's attention is {attn!r}")
        if self._compact_due:
            # The prefill ran without the kvd attention function (it compacts at its end).
            raise self._needs_kvd_attention("this cache compacts after the prefill")
        # Fewer tokens than the logical length, padding or log-weights: only kvd attention copes.
        compacted = bool(self.compactions) or any(
            b is not None and (not b.plain or b.n != self._synced) for b in self._buffers)
        if compacted and (known_other or (self._forwards > 0 and not self._saw_kvd_attention)):
            raise self._needs_kvd_attention("this cache was compacted")

    def _begin_forward(self, dtype, device) -> None:
        self._check_attention()
        if self._buffers[0] is None:
            self._buffers = [LayerBuffer(self.kv_heads, self.head_dim, dtype, device)
                             for _ in range(self.num_layers)]
        if self._stale or self._synced != self._length:
            self._refresh(dtype, device)
            self._check_attention()
        self._new = [None] * self.num_layers
        self._prefilling = self._forwards == 0
        self._forward_ids, self._next_ids = self._next_ids, None

    def _refresh(self, dtype, device) -> None:
        """Refill every buffer from one Query of the sequence (its generation changed, or tokens
        were adopted or appended behind the cache's back)."""
        self._query = self.client.query(self.sequence_id, mode=self._refresh_mode())
        try:
            aliases = {}
            for layer in range(self.num_layers):
                head = self._query[layer, 0]
                if head.aliased:
                    aliases[layer] = head.owner_layer
                    continue  # reads the owner's buffer
                k, v, bias, pos, _ = self._prefix(layer, dtype, device)
                self._buffers[layer].load(k, v, bias, pos)
            self.aliases = aliases
            self._generation = int(self._query.generation)
            self._synced = self._length = int(self._query.length)
            self._stale = False
            self.refreshes += 1
        finally:
            self._query = None  # views into shared memory: do not keep them

    def _refresh_mode(self) -> str:
        """``query_mode``, or for "auto": GATHER (one contiguous run per head, measured ~6x faster
        to read than page lists when heads differ in length) when the whole sequence's K/V fit in
        half the daemon's staging area (a gather that does not fit is refused), else PAGES."""
        if self.query_mode != "auto":
            return self.query_mode
        kv_bytes = 2 * self.num_layers * self.kv_heads * self._length * self.head_dim * self.kvd_dtype.itemsize
        staging = int(self._hello().shm.staging_bytes)
        return "gather" if kv_bytes <= staging // 2 else "pages"

    def _prefix(self, layer_idx: int, dtype, device):
        """From the Query being read: the layer's retained tokens ``[1, H, P, D]`` K and V (heads
        padded to the longest), the bias ``[H, P]`` (log-weights, −inf on padding) and positions
        ``[H, P]``; also the owner layer (aliases)."""
        k, v, bias, pos = read_layer(self._query, layer_idx, self.kv_heads, self.head_dim)
        head = self._query[layer_idx, 0]
        owner = head.owner_layer if head.aliased else layer_idx
        to = lambda a: to_torch(a).to(dtype=dtype, device=device)[None]
        return (to(k), to(v), torch.from_numpy(bias).to(device), torch.from_numpy(pos).to(device),
                owner)

    def _mirror(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` as kvd will hold it: rounded through the layout's dtype when it is narrower."""
        kvd = _TORCH_DTYPES.get(self.kvd_dtype, torch.bfloat16)
        if kvd == t.dtype or (t.dtype != torch.float32 and kvd == torch.float32):
            return t
        return t.to(kvd).to(t.dtype)

    def _update_layer(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
                      attn_kwargs: Optional[dict] = None):
        self._check_states(key_states, value_states, layer_idx)
        t = key_states.shape[2]
        if layer_idx == 0:
            self._begin_forward(key_states.dtype, key_states.device)
            if self.reuse_prefix:
                self._check_forward_ids(t)
        elif self._new[0] is None:
            raise RuntimeError(f"kvd_transformers: layer {layer_idx} updated before layer 0 in "
                               "this forward pass")
        k, v = key_states.detach(), value_states.detach()
        self._new[layer_idx] = (k, v)
        owner = self.aliases.get(layer_idx, layer_idx)
        if owner != layer_idx:
            if self._new[owner] is None:
                raise RuntimeError(f"kvd_transformers: layer {layer_idx} aliases layer {owner}, "
                                   "which has not run in this forward pass")
        else:
            self._trim(layer_idx)
            self._buffers[layer_idx].write(self._mirror(k), self._mirror(v), self._length)
        buf = self._buffers[owner]
        ctx = self._contexts[layer_idx]
        ctx.bias, ctx.plain, ctx.pos, ctx.q_start = buf.bias, buf.plain, buf.pos, self._length
        if attn_kwargs is not None:
            attn_kwargs[CTX_KWARG] = ctx
        keys, values = buf.keys(), buf.values()
        if attn_kwargs is None:
            keys._kvd_ctx = ctx  # a caller that does not pass transformers' attention kwargs
        if layer_idx == self.num_layers - 1:
            self._end_forward(t)
        return keys, values

    def _trim(self, layer_idx: int) -> None:
        """On a sliding layer, before this forward's tokens are written: drop the buffer's tokens
        no query from here on can see (position ≤ length − window) once they are ``TRIM_SLACK``
        of the window, so the buffer stays about window-long however long the sequence grows.
        Only under the kvd attention function (which masks by position; another would need the
        whole length)."""
        w = self.windows[layer_idx]
        buf = self._buffers[layer_idx]
        if w and self._saw_kvd_attention and buf.n > w + max(w // TRIM_SLACK, 1):
            buf.trim(self._length - w + 1)

    def _learn_window(self, layer_idx: int, window) -> None:
        """The attention function's ``sliding_window`` (what masks) for a layer whose window the
        config did not say (no ``layer_types``, or no config given)."""
        if window and self.windows[layer_idx] != int(window):
            self.windows[layer_idx] = int(window)
            check_windows(self.windows, self.layout)

    def _end_forward(self, t: int) -> None:
        missing = [i for i, kv in enumerate(self._new) if kv is None or kv[0].shape[2] != t]
        if missing:
            raise RuntimeError(f"kvd_transformers: layers {missing} did not update with {t} "
                               "tokens in this forward pass")
        if self._forwards == 0 and self.compacts_after_prefill and not self._saw_kvd_attention:
            raise self._needs_kvd_attention("this cache compacts after the prefill")
        ids = self._ids_for_append(t)
        resp = self._send_append(torch.cat([kv[0] for kv in self._new]),
                                 torch.cat([kv[1] for kv in self._new]), ids)
        self._new = [None] * self.num_layers
        if ids is not None:
            self._token_ids.extend(ids)
        self._length += t
        self._synced += t
        generation = getattr(resp, "generation", None)
        if generation is not None:
            if self._generation is None:
                self._generation = int(generation)
            elif int(generation) != self._generation:
                self._stale = True  # compacted (e.g. by the memory manager): refresh lazily
        self._forwards += 1
        if self._forwards == 1 and self.compacts_after_prefill:
            self._compact_due = True

    def _send_append(self, keys: torch.Tensor, values: torch.Tensor, ids: Optional[list]):
        """Append ``keys``/``values`` ``[layers, kv_heads, tokens, head_dim]`` (torch, the model's
        dtype) and ``ids`` to kvd in one request; returns the Append (or Commit) reply. The one
        place a forward pass's K/V leave for kvd."""
        k, v = self._wire(keys), self._wire(values)
        # An inline Append larger than the daemon takes (a long prefill) goes through
        # Reserve/Commit instead, which has no message-size limit.
        limit = int(self._hello().limits.max_message_bytes) or (1 << 62)
        zero_copy = self.zero_copy or k.nbytes + v.nbytes + 4 * len(ids or ()) + INLINE_SLACK > limit
        return self.client.append(self.sequence_id, k, v, zero_copy=zero_copy, token_ids=ids)

    def _wire(self, t: torch.Tensor) -> np.ndarray:
        """``t`` as a numpy array in kvd's dtype: one conversion at most, none when the dtypes
        match."""
        t = t.detach().cpu()
        kvd = self.kvd_dtype
        if kvd.name == "bfloat16":
            return t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(kvd)
        return t.to(_TORCH_DTYPES[kvd]).contiguous().numpy()

    # ------------------------------------------------------------------------------------
    # prefix reuse: the token ids of each forward pass

    def _check_forward_ids(self, t: int) -> None:
        """Layer 0 of a forward pass with ``t`` new tokens: the ids the model hook recorded must be
        exactly those tokens, and the first forward after an adoption must continue the prompt
        (else the adopted K/V would belong to another text)."""
        ids = self._forward_ids
        if ids is None:
            return  # unknown: appended without ids (_ids_for_append)
        if len(ids) != t:
            raise RuntimeError(
                f"kvd_transformers: the forward pass appends {t} tokens but the model's input_ids "
                f"had {len(ids)}; token ids must match the appended K/V one for one")
        if self._forwards == 0 and self.adopted_tokens and self._prompt is not None:
            want = self._prompt[self.adopted_tokens:self.adopted_tokens + t]
            if ids[:len(want)] != want:
                raise RuntimeError(
                    f"kvd_transformers: the cache adopted the first {self.adopted_tokens} tokens of "
                    "prompt_ids, but the first forward pass does not continue prompt_ids from "
                    "there: pass the same ids to generate (or the model) as to KvdCache")

    def _ids_for_append(self, t: int) -> Optional[list]:
        """The ids to send with this forward's Append, or None (not indexing, or unknown)."""
        ids, self._forward_ids = self._forward_ids, None
        if not self.indexing:
            return None
        if ids is None:
            self.indexing = False
            warnings.warn(
                f"kvd_transformers: forward pass {self._forwards} of sequence {self.sequence_id} "
                "came without input_ids (inputs_embeds, or the hooked model was not called); it is "
                "appended without token ids, so kvd stops indexing this sequence for good",
                RuntimeWarning, stacklevel=4)
            return None
        assert len(ids) == t, (len(ids), t)  # _check_forward_ids raised otherwise
        return ids

    @property
    def token_ids(self) -> Optional[list]:
        """Ids of every token the sequence holds (adopted prefix, then each forward's), or None
        when not known (no ``reuse_prefix``, or a forward without ids)."""
        return list(self._token_ids) if self.indexing else None

    # ------------------------------------------------------------------------------------
    # hooks from the attention function

    def _record_queries(self, layer_idx: int, query: torch.Tensor) -> None:
        """Keep the last ``window`` post-RoPE query vectors of the prefill, ``[q_heads, w, D]``."""
        self._saw_kvd_attention = True
        if not self._prefilling or query.shape[1] != self.q_heads:
            return  # only the prefill's
        self._queries[layer_idx] = query[0, :, -self.window:, :].detach().to(torch.float32).cpu()

    def _attention_done(self, layer_idx: int) -> None:
        self._learn_window(layer_idx, self._contexts[layer_idx].window)
        if layer_idx == self.num_layers - 1 and self._compact_due:
            self.compact()

    # ------------------------------------------------------------------------------------
    # kvd operations

    def window_queries(self) -> Optional[np.ndarray]:
        """The captured observation queries ``[layers, q_heads, w, head_dim]`` float32, or None."""
        if any(q is None for q in self._queries):
            return None
        return np.ascontiguousarray(torch.stack(self._queries).numpy())

    def compact(self, method: Optional[str] = None, policy: Optional[str] = None, **params):
        """Send ``Compact`` now (defaults: this cache's method, policy and params, plus the captured
        window queries when the method needs them); returns the CompactResponse (also appended to
        ``compactions``). The buffers are refilled from kvd before the next forward pass."""
        self._compact_due = False
        method = self.method if method is None else method
        policy = self.policy if policy is None else policy
        merged = {**self.params, **params}
        queries = None
        if needs_queries(self._hello(), method, policy):
            queries = self.window_queries()
        resp = self.client.compact(self.sequence_id, method, policy=policy, queries=queries,
                                   queries_in_shm=self.queries_in_shm, **merged)
        self.compactions.append(resp)
        self.queries_sent = queries is not None
        self.indexing = False  # kvd never indexes a compacted sequence again: stop sending ids
        self.aliases = {a.layer: a.owner for a in resp.aliases}
        self._stale = True
        return resp

    def _hello(self):
        """The client's last HelloResponse (methods and policies it lists)."""
        hello = getattr(self.client, "_hello", None)
        return hello if hello is not None else self.client.hello()

    def stats(self):
        """kvd's ``SequenceStats`` of this cache's sequence."""
        return self.client.stats(self.sequence_id).sequence

    def release(self) -> None:
        """Free the kvd sequence (idempotent)."""
        self._finalizer.detach()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if not self.released:
            self.released = True
            self._buffers = [None] * self.num_layers
            self.client.release(self.sequence_id)

    def __enter__(self) -> "KvdCache":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return (f"KvdCache(model={self.model_name!r}, sequence={self.sequence_id}, "
                f"length={self._length}, compactions={len(self.compactions)}, "
                f"adopted={self.adopted_tokens})")


def _release_dropped(client_ref, sequence_id: int, hook) -> None:
    """Finalizer of a KvdCache collected without release(): free its sequence if its client is
    still open; never raises (it runs from the garbage collector)."""
    if hook is not None:
        hook.remove()
    client = client_ref()
    if client is None or sys.is_finalizing() or getattr(client, "_sock", None) is None:
        return  # the client is gone or closed: kvd frees the sequence with its lease
    io = getattr(client, "_io", None)
    if io is not None and not io.acquire(blocking=False):
        # The garbage collector can run this while this very thread is inside one of the client's
        # requests (holding its non-reentrant lock): releasing here would deadlock. Another thread
        # waits for the lock instead.
        threading.Thread(target=_release_quietly, args=(client, sequence_id), daemon=True,
                         name="kvd-release-dropped-cache").start()
        return
    if io is not None:
        io.release()
    _release_quietly(client, sequence_id)


def _release_quietly(client, sequence_id: int) -> None:
    try:
        client.release(sequence_id)
    except Exception:  # noqa: BLE001 - a finalizer must not raise; the lease frees it anyway
        pass


def _ids_list(ids, what: str) -> list:
    """Token ids (list, 1-D array, or ``[1, T]`` tensor/array: batch size 1) as a list of ints."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    a = np.asarray(ids)
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"kvd_transformers: {what} must be integer token ids, 1-D or [1, T] "
                         f"(batch size 1); got shape {list(a.shape)} dtype {a.dtype}")
    return a.tolist()


def _record_input_ids(cache: "KvdCache"):
    """A forward pre-hook (``with_kwargs``) for the model: when a forward pass is given ``cache``
    (under whatever argument name this transformers version uses), remember its ``input_ids``
    (None if it has none, e.g. ``inputs_embeds``) for the cache's next Append."""
    ref = weakref.ref(cache)

    def hook(module, args, kwargs):
        c = ref()
        if c is None or not any(v is c for v in (*args, *kwargs.values())):
            return None  # another cache's (or no cache's) forward pass
        ids = kwargs.get("input_ids", args[0] if args else None)
        ok = isinstance(ids, torch.Tensor) and not ids.is_floating_point()
        c._next_ids = _ids_list(ids, "input_ids") if ok else None
        return None

    return hook
