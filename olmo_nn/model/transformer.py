"""OLMo's decoder-only transformer as a plain ``nn.Module``.

No parallelism or precision logic lives here: FSDP, activation checkpointing and
``torch.compile`` are applied from outside. Norms and RoPE run in fp32 whatever the autocast
dtype; attention goes through ``scaled_dot_product_attention`` with q, k, v in the compute
dtype (flash or cuDNN kernels on GPU in bf16). RoPE's cos/sin are computed once per device
and looked up once per forward by the model, then handed to every block.

Parameter names (OLMo's own): ``embeddings.weight``, ``blocks.{i}.att_proj.weight`` (fused
QKV), ``blocks.{i}.attn_out.weight``, ``blocks.{i}.ff_proj.weight`` (fused SwiGLU input: the
first half is the value, **the second half is the gate**), ``blocks.{i}.ff_out.weight``,
``lm_head.weight`` (absent when tied), and norm weights where the config has them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from olmo_nn.model.config import TransformerConfig
from olmo_nn.model.init import init_weights
from olmo_nn.model.loss import DEFAULT_CHUNK_TOKENS, LMLoss, lm_loss

__all__ = ["Block", "KVCache", "Norm", "OLMo", "RotaryEmbedding"]


def _no_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


class Norm(nn.Module):
    """LayerNorm without affine parameters (OLMo 1) or RMSNorm with a weight (OLMo 2), in fp32."""

    def __init__(self, size: int, *, norm_type: str, affine: bool, eps: float) -> None:
        super().__init__()
        self.size = size
        self.norm_type = norm_type
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _no_autocast(x.device):
            h = x.float()
            if self.norm_type == "layernorm":
                weight = self.weight.float() if self.weight is not None else None
                h = F.layer_norm(h, (self.size,), weight=weight, eps=self.eps)
            else:
                h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
                if self.weight is not None:
                    h = self.weight.float() * h
            return h.to(x.dtype)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def extra_repr(self) -> str:
        return (
            f"{self.size}, type={self.norm_type}, affine={self.weight is not None}, eps={self.eps}"
        )


class RotaryEmbedding(nn.Module):
    """Rotary position embedding, rotate-half convention, computed in fp32.

    The cos/sin of the angles are computed once per device for positions ``0..n-1`` and
    kept (grown when a longer sequence or a larger position comes), not recomputed per block
    and per forward: :meth:`rotation` looks them up, :meth:`forward` applies them. The table
    lives outside any compiled graph (the model calls :meth:`rotation` and hands the tensors
    to its blocks), and its values are those of the formula for each position, bit for bit.
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        # Not buffers: not in the state dict, not sharded, not moved; rebuilt on first use.
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of the rotation angles at ``positions`` (T,) or (B, T): (..., head_dim)."""
        with _no_autocast(positions.device):
            exponent = torch.arange(
                0, self.head_dim, 2, device=positions.device, dtype=torch.float32
            )
            inv_freq = 1.0 / (self.theta ** (exponent / self.head_dim))
            freqs = positions.float()[..., None] * inv_freq  # (..., T, head_dim / 2)
            angles = torch.cat((freqs, freqs), dim=-1)  # (..., T, head_dim)
            return angles.cos(), angles.sin()

    def _table(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for positions 0..length-1 at least: each (n >= length, head_dim), fp32."""
        table = self._tables.get(device)
        if table is None or table[0].shape[0] < length:
            table = self._cos_sin(torch.arange(length, device=device))
            self._tables[device] = table
        return table

    def rotation(
        self, seq_len: int, device: torch.device, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin, fp32, for ``seq_len`` tokens at ``positions`` (B, T) (default
        0..seq_len-1), shaped to broadcast over q and k: (1 or B, 1, T, head_dim) each."""
        if positions is None:
            cos, sin = self._table(seq_len, device)
            return cos[None, None, :seq_len], sin[None, None, :seq_len]
        low, high = (int(value) for value in torch.stack([positions.min(), positions.max()]))
        if low < 0:
            raise ValueError(f"position_ids must be >= 0, got {low}")
        cos, sin = self._table(max(seq_len, high + 1), device)
        return cos[positions][:, None], sin[positions][:, None]  # (B, 1, T, head_dim)

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=-1)
        return torch.cat((-second, first), dim=-1)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        rotation: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate q, k of shape (B, n_heads, T, head_dim) by ``rotation`` (cos, sin from
        :meth:`rotation`; default: positions 0..T-1). The result has q's and k's dtype."""
        cos, sin = rotation if rotation is not None else self.rotation(q.shape[-2], q.device)
        with _no_autocast(q.device):
            q32, k32 = q.float(), k.float()
            q_rot = q32 * cos + self._rotate_half(q32) * sin
            k_rot = k32 * cos + self._rotate_half(k32) * sin
        return q_rot.to(q.dtype), k_rot.to(k.dtype)


class KVCache:
    """The keys and values of the tokens seen so far, per block, for incremental decoding.

    Preallocated for ``max_length`` tokens (B, n_heads, max_length, head_dim) per block on
    first use, with the batch size, dtype and device of the first keys; :meth:`OLMo.forward`
    with ``kv_cache=`` writes each new token's keys and values at :attr:`length` and attends
    over everything before it, then advances :attr:`length`. Rows can be dropped from the
    batch (:meth:`keep`) once their sequences are finished.
    """

    def __init__(self, num_layers: int, max_length: int) -> None:
        self.max_length = max_length
        self.length = 0
        """Tokens written so far (the same for every row: a batch is left-padded)."""
        self._keys: list[torch.Tensor | None] = [None] * num_layers
        self._values: list[torch.Tensor | None] = [None] * num_layers

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_heads, T, head_dim) after the cached tokens; all keys and values
        so far, (B, n_heads, length + T, head_dim) each (views of the cache)."""
        end = self.length + k.shape[-2]
        if end > self.max_length:
            raise ValueError(
                f"KVCache holds at most {self.max_length} tokens, asked for {end}: make the "
                "cache as long as the prompt plus the new tokens"
            )
        keys, values = self._keys[layer], self._values[layer]
        if keys is None or values is None:
            shape = (*k.shape[:-2], self.max_length, k.shape[-1])
            keys = self._keys[layer] = k.new_empty(shape)
            values = self._values[layer] = v.new_empty(shape)
        keys[:, :, self.length : end] = k
        values[:, :, self.length : end] = v
        return keys[:, :, :end], values[:, :, :end]

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows ``rows`` (indices, in the order given)."""
        for store in (self._keys, self._values):
            for layer, tensor in enumerate(store):
                if tensor is not None:
                    store[layer] = tensor[rows]


class Block(nn.Module):
    """One transformer block: causal self-attention and a SwiGLU MLP, each with a residual."""

    def __init__(self, layer_id: int, config: TransformerConfig) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.config = config
        d, hidden = config.d_model, config.hidden_size

        def norm(size: int) -> Norm:
            return Norm(
                size, norm_type=config.norm_type, affine=config.norm_affine, eps=config.norm_eps
            )

        self.attn_norm = norm(d)
        self.att_proj = nn.Linear(d, 3 * d, bias=False)
        self.q_norm = norm(d) if config.qk_norm else None
        self.k_norm = norm(d) if config.qk_norm else None
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = norm(d)
        self.ff_proj = nn.Linear(d, 2 * hidden, bias=False)
        self.ff_out = nn.Linear(hidden, d, bias=False)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)

    def attention(
        self,
        x: torch.Tensor,
        rotation: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Self-attention; causal unless ``attention_mask`` (see :meth:`OLMo.forward`) is given.

        With ``kv_cache`` the keys and values of the new tokens join the cached ones and the
        queries attend over all of them (``attention_mask`` then covers every key).

        q, k and v reach ``scaled_dot_product_attention`` in the compute dtype (bf16 under
        bf16 autocast or FSDP's bf16 parameters: RoPE computes in fp32 and casts back), which
        lets it choose its flash or cuDNN kernel on a GPU.
        """
        batch, seq, d = x.shape
        n_heads, head_dim = self.config.n_heads, self.config.head_dim
        qkv = self.att_proj(x)  # (B, T, 3 * d)
        if self.config.clip_qkv is not None:
            qkv = qkv.clamp(min=-self.config.clip_qkv, max=self.config.clip_qkv)
        q, k, v = qkv.split(d, dim=-1)  # each (B, T, d)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(batch, seq, n_heads, head_dim).transpose(1, 2)  # (B, n_heads, T, head_dim)
        k = k.view(batch, seq, n_heads, head_dim).transpose(1, 2)
        v = v.view(batch, seq, n_heads, head_dim).transpose(1, 2)
        q, k = self.rotary(q, k, rotation)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_id, k, v)  # (B, n_heads, past + T, head_dim)
        if attention_mask is None and kv_cache is not None:
            # The first tokens (causal), or one new token that sees every key; OLMo.forward
            # passes a mask for several tokens after cached ones.
            assert seq == 1 or k.shape[-2] == seq, "several new tokens need an attention mask"
            out = F.scaled_dot_product_attention(q, k, v, is_causal=k.shape[-2] == seq)
        elif attention_mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        # out: (B, n_heads, T, head_dim)
        out = out.transpose(1, 2).reshape(batch, seq, d)
        return self.attn_out(out)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.ff_proj(x).chunk(2, dim=-1)  # each (B, T, hidden)
        return self.ff_out(F.silu(gate) * value)

    def forward(
        self,
        x: torch.Tensor,
        rotation: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x (B, T, d_model); ``rotation``: RoPE's (cos, sin) from
        :meth:`RotaryEmbedding.rotation` (default: positions 0..T-1, looked up here)."""
        if self.config.norm_placement == "pre":
            h = x + self.attention(self.attn_norm(x), rotation, attention_mask, kv_cache)
            return h + self.mlp(self.ff_norm(h))
        h = x + self.attn_norm(self.attention(x, rotation, attention_mask, kv_cache))
        return h + self.ff_norm(self.mlp(h))


class OLMo(nn.Module):
    """The language model: token ids (B, T) -> logits (B, T, padded vocabulary)."""

    def __init__(
        self, config: TransformerConfig, *, init_device: str | torch.device = "cpu"
    ) -> None:
        super().__init__()
        self.config = config
        meta = torch.device(init_device).type == "meta"
        with torch.device(init_device):
            # On the meta device (a checkpoint's weights replace these) the embedding is left
            # uninitialized: nn.Embedding's own normal_ on a meta tensor imports torch._dynamo,
            # seconds of CPU in every process that loads a model.
            weight = torch.empty(config.padded_vocab_size, config.d_model) if meta else None
            self.embeddings = nn.Embedding(config.padded_vocab_size, config.d_model, _weight=weight)
            self.blocks = nn.ModuleList(Block(i, config) for i in range(config.n_layers))
            # RoPE's cos/sin for all blocks, looked up once per forward (no parameters).
            self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)
            self.final_norm = Norm(
                config.d_model,
                norm_type=config.norm_type,
                affine=config.norm_affine,
                eps=config.norm_eps,
            )
            self.lm_head = (
                None
                if config.weight_tying
                else nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
            )
        if not meta:
            self.init_weights()

    def init_weights(self, *, seed: int | None = None) -> None:
        """(Re)initialize every parameter with the config's scheme; ``seed`` makes it repeatable."""
        generator = None
        if seed is not None:
            device = self.embeddings.weight.device
            generator = torch.Generator(device=device if device.type != "meta" else "cpu")
            generator.manual_seed(seed)
        init_weights(self, generator=generator)

    def output_weight(self) -> torch.Tensor:
        return self.embeddings.weight if self.lm_head is None else self.lm_head.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        logits_at: tuple[torch.Tensor, torch.Tensor] | None = None,
        targets: torch.Tensor | None = None,
        z_loss_coef: float | None = None,
        loss_chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor | LMLoss:
        """Logits (B, T, padded vocab) for token ids (B, T); or, given ``targets``, the loss.

        The keywords serve evaluation (several sequences packed in one row); by default the
        attention is causal and token ``t`` sits at position ``t``.

        * ``position_ids`` (B, T): each token's position for RoPE.
        * ``attention_mask`` (B, 1, T, T) bool, True where query ``t`` may attend to key ``s``;
          it replaces the causal mask (every row must allow at least one key).
        * ``logits_at`` (rows, positions), each (N,): return only those N logits, (N, padded
          vocab); the output layer then runs on N hidden states instead of B x T.
        * ``kv_cache`` (:class:`KVCache`, decoding): ``input_ids`` are the tokens after the
          :attr:`KVCache.length` cached ones; their keys and values are added to the cache
          and they attend to the cached tokens too. ``position_ids`` then default to
          ``length..length + T - 1`` and an ``attention_mask`` is (B, 1, T, length + T).

        Training passes ``targets`` (B, T), the next token at each position, and gets an
        :class:`~olmo_nn.model.loss.LMLoss` instead of logits: the mean cross-entropy, the
        z-loss when ``z_loss_coef`` is given, and ``loss = ce + z_loss_coef * z_loss`` to
        differentiate, computed ``loss_chunk_tokens`` tokens at a time so the (B, T, vocab)
        logits never exist (:func:`~olmo_nn.model.loss.lm_loss`). It runs here, inside the
        forward, because FSDP2 gathers the output weight only for the root's forward.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        h = self.embeddings(input_ids)  # (B, T, d_model)
        if kv_cache is not None:
            past, seq = kv_cache.length, input_ids.shape[1]
            if position_ids is None and past:
                position_ids = torch.arange(past, past + seq, device=input_ids.device)[None]
            if attention_mask is None and past and seq > 1:
                attention_mask = torch.ones(
                    seq, past + seq, dtype=torch.bool, device=input_ids.device
                ).tril(past)[None, None]
        # (1 or B, 1, T, head_dim) each, fp32; outside the (possibly compiled) blocks.
        rotation = self.rotary.rotation(input_ids.shape[1], input_ids.device, position_ids)
        for block in self.blocks:
            if kv_cache is None:
                h = block(h, rotation, attention_mask)
            else:
                h = block(h, rotation, attention_mask, kv_cache)
        if kv_cache is not None:
            kv_cache.length += input_ids.shape[1]
        if logits_at is not None:
            if targets is not None:
                raise ValueError("pass logits_at or targets, not both: targets asks for the loss")
            h = h[logits_at]  # (N, d_model)
        h = self.final_norm(h)
        if targets is not None:
            return lm_loss(
                h,
                self.output_weight(),
                targets,
                z_loss_coef=z_loss_coef,
                chunk_tokens=loss_chunk_tokens,
            )
        if self.lm_head is None:
            return F.linear(h, self.embeddings.weight)  # (B, T, padded vocab) or (N, ...)
        return self.lm_head(h)

    def num_params(self, *, include_embedding: bool = True) -> int:
        """Counted from the actual tensors (tied weights once)."""
        total = sum(p.numel() for p in self.parameters())
        if not include_embedding:
            total -= self.embeddings.weight.numel()
        return total
