"""Llama-style decoder in Flax NNX: RMSNorm, RoPE, causal + segment attention, SwiGLU, untied head.

Packed rows: attention is causal and restricted to the same segment (segment 0 = padding),
rotary positions come from the packer and restart at 0 in every segment. Every parameter carries
logical axis names (`out_sharding` metadata); activations are constrained with
`sharding.constrain`, a no-op outside a mesh context.
"""
import dataclasses
import functools
import math
import numbers

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mixlaw import sharding
from mixlaw.errors import MixlawError


class ModelError(MixlawError, ValueError):
  """A bad model size or ModelConfig value (e.g. a gin binding of get_config)."""


# ModelConfig.remat -> what a block saves for the backward pass ('none': everything, no remat).
REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,  # recompute the whole block
    'dots': jax.checkpoint_policies.dots_saveable,  # keep matmul outputs, recompute the rest
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # not attention's
}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Decoder hyper-parameters. vocab_size=0 means "not set yet" (taken from the data)."""
  d_model: int
  n_layers: int
  n_heads: int
  d_ff: int
  vocab_size: int = 0
  rope_theta: float = 10000.0
  norm_eps: float = 1e-5
  init_std: float = 0.02
  dtype: str = 'float32'  # activations / matmul inputs
  param_dtype: str = 'float32'
  remat: str = 'none'  # REMAT_POLICIES: what each block keeps for the backward pass
  attn_chunk: int = 64  # causal attention in query blocks of this length (0: one block)
  scan_layers: bool = False  # one compiled block body run by lax.scan (compile time ~ 1 layer)
  loss_chunk: int = 0  # cross-entropy over this many positions at a time (0: whole rows)

  def __post_init__(self):
    def check(ok, message):
      if not ok:
        raise ModelError(message)

    def count(x, lo):
      return isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= lo

    for name in ('d_model', 'n_layers', 'n_heads', 'd_ff'):
      check(count(getattr(self, name), 1),
            f'ModelConfig.{name} must be an integer > 0, got {getattr(self, name)!r}')
    check(count(self.vocab_size, 0),
          f'ModelConfig.vocab_size must be >= 0, got {self.vocab_size!r}')
    check(self.d_model % self.n_heads == 0,
          f'd_model={self.d_model} is not divisible by n_heads={self.n_heads}')
    check((self.d_model // self.n_heads) % 2 == 0,
          f'head dim {self.d_model // self.n_heads} must be even for RoPE')
    check(count(self.attn_chunk, 0), f'attn_chunk must be an integer >= 0, got {self.attn_chunk!r}')
    for name in ('rope_theta', 'norm_eps', 'init_std'):
      v = getattr(self, name)
      check(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0,
            f'ModelConfig.{name} must be a positive number, got {v!r}')
    for name in ('dtype', 'param_dtype'):
      v = getattr(self, name)
      check(v in ('float32', 'bfloat16', 'float16'),
            f"ModelConfig.{name} must be 'float32', 'bfloat16' or 'float16', got {v!r}")
    if isinstance(self.remat, bool):  # Older configs: True = 'full', False = 'none'.
      object.__setattr__(self, 'remat', 'full' if self.remat else 'none')
    check(self.remat in REMAT_POLICIES,
          f'ModelConfig.remat must be one of {sorted(REMAT_POLICIES)}, got {self.remat!r}')
    check(isinstance(self.scan_layers, bool),
          f'ModelConfig.scan_layers must be True or False, got {self.scan_layers!r}')
    check(count(self.loss_chunk, 0), f'loss_chunk must be an integer >= 0, got '
                                     f'{self.loss_chunk!r}')

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_heads


def _cpu(d, layers):
  # Head dim 64 everywhere (fewer, larger attention matmuls are faster on CPU); ffn = 4 d.
  return ModelConfig(d_model=d, n_layers=layers, n_heads=max(1, d // 64), d_ff=4 * d)


def _paper(d, layers, ffn):
  return ModelConfig(d_model=d, n_layers=layers, n_heads=32, d_ff=ffn, vocab_size=65632,
                     attn_chunk=512)


SIZES: dict[str, ModelConfig] = {
    # The paper's sizes (untied embeddings, Llama tokenizer-sized vocab).
    'paper_460m': _paper(1024, 24, 3072),
    'paper_940m': _paper(1536, 24, 4608),
    'paper_1.6b': _paper(2048, 24, 6144),
    'paper_3.1b': _paper(2560, 32, 7680),
    # CPU ladder (~0.04M .. 4.2M non-embedding parameters); vocab comes from the data.
    'cpu_2xs': _cpu(48, 1),
    'cpu_xs': _cpu(64, 2),
    'cpu_s': _cpu(128, 2),
    'cpu_m': _cpu(128, 4),
    'cpu_l': _cpu(192, 4),
    'cpu_xl': _cpu(256, 4),
}


@gin.configurable
def get_config(size: str = 'cpu_m', vocab_size: int | None = None, **overrides) -> ModelConfig:
  """The named size, with vocab_size (required when the size has none) and field overrides."""
  if size not in SIZES:
    raise ModelError(f'unknown model size {size!r}; known sizes: {sorted(SIZES)}')
  cfg = SIZES[size]
  if vocab_size is not None:
    overrides['vocab_size'] = vocab_size
  unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)})
  if unknown:
    raise ModelError(f'get_config: unknown ModelConfig field(s) {unknown}; known: '
                     f'{[f.name for f in dataclasses.fields(ModelConfig)]}')
  cfg = dataclasses.replace(cfg, **overrides)
  if cfg.vocab_size <= 0:
    raise ModelError(f'model size {size!r} has no vocabulary size: pass vocab_size= (the data\'s)')
  return cfg


def count_params(cfg: ModelConfig) -> dict[str, int]:
  """Total and non-embedding parameters (non-embedding excludes the embedding and the head)."""
  d, f = cfg.d_model, cfg.d_ff
  per_layer = 4 * d * d + 3 * d * f + 2 * d  # wqkv + wo, gate/up + down, two norms
  non_embedding = cfg.n_layers * per_layer + d  # + final norm
  return {'total': non_embedding + 2 * cfg.vocab_size * d, 'non_embedding': non_embedding}


def _param(rngs, shape, std, names, dtype):
  value = std * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape, jnp.dtype(dtype))
  return nnx.Param(value, out_sharding=names, eager_sharding=False)


class RMSNorm(nnx.Module):

  def __init__(self, cfg: ModelConfig):
    self.eps = cfg.norm_eps
    self.scale = nnx.Param(jnp.ones((cfg.d_model,), jnp.dtype(cfg.param_dtype)),
                           out_sharding=('norm',), eager_sharding=False)

  def __call__(self, x_BxLxD):
    x = x_BxLxD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
    return (x * self.scale[...].astype(jnp.float32)).astype(x_BxLxD.dtype)


def dense(spec: str, x, w):
  """einsum(spec, x, w) whose backward keeps every matmul in a fast CPU layout.

  spec is 'X,W->Y' with W = contracted letters then output letters. Plain autodiff lets XLA pick
  the operand to transpose for the weight gradient and often picks the big one; here dx uses a
  materialised transposed weight (a plain NN matmul) and dW transposes the smaller activation.
  """
  return _dense(spec)(x, w)


@functools.lru_cache(maxsize=None)
def _dense(spec: str):
  ins, y = spec.split('->')
  xs, ws = ins.split(',')
  contracted = ''.join(c for c in ws if c not in y)
  out = ''.join(c for c in ws if c in y)
  if ws != contracted + out:
    raise ValueError(f'dense spec {spec!r}: weight letters must be contracted then output ones')
  wt = out + contracted
  to_w = [wt.index(c) for c in ws]  # transpose of a [out, contracted] array back to W order
  dx_spec, dw_spec, dwt_spec = f'{y},{wt}->{xs}', f'{xs},{y}->{ws}', f'{y},{xs}->{wt}'

  @jax.custom_vjp
  def f(x, w):
    return jnp.einsum(spec, x, w)

  def fwd(x, w):
    return jnp.einsum(spec, x, w), (x, w)

  def bwd(res, g):
    x, w = res
    w_t = jax.lax.optimization_barrier(jnp.transpose(w, [ws.index(c) for c in wt]))
    dx = jnp.einsum(dx_spec, g, w_t)
    n_contracted = math.prod(x.shape[xs.index(c)] for c in contracted)
    n_out = math.prod(g.shape[y.index(c)] for c in out)
    if n_contracted <= n_out:
      dw = jnp.einsum(dw_spec, x, g)
    else:
      dw = jnp.transpose(jnp.einsum(dwt_spec, g, x), to_w)
    return dx.astype(x.dtype), dw.astype(w.dtype)

  f.defvjp(fwd, bwd)
  return f


@jax.custom_vjp
def swiglu(h_Nx2xF):
  """silu(gate) * up for h = [..., 2, F] (gate, up); one fused pass forward and backward."""
  gate, up = h_Nx2xF[..., 0, :], h_Nx2xF[..., 1, :]
  return jax.nn.silu(gate) * up


def _swiglu_fwd(h_Nx2xF):
  return swiglu(h_Nx2xF), h_Nx2xF


def _swiglu_bwd(h_Nx2xF, g_NxF):
  gate, up = h_Nx2xF[..., 0, :], h_Nx2xF[..., 1, :]
  sig = jax.nn.sigmoid(gate)
  d_gate = g_NxF * up * sig * (1 + gate * (1 - sig))
  # The barrier stops XLA from recomputing this in each of its two consumers (dx and dW).
  return (jax.lax.optimization_barrier(jnp.stack([d_gate, g_NxF * gate * sig], axis=-2)),)


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def unstack(x, axis: int):
  """Slices of x along axis; the backward is one concatenation (autodiff: pads and adds)."""
  return tuple(jnp.moveaxis(x, axis, 0))


def _unstack_fwd(x, axis):
  return unstack(x, axis), None


def _unstack_bwd(axis, _, grads):
  return (jnp.stack(grads, axis=axis),)


unstack.defvjp(_unstack_fwd, _unstack_bwd)


def rope_tables(positions_BxL, head_dim: int, max_len: int, theta: float):
  """(sin, cos) [B, L, 1, K/2] looked up from constant tables (XLA's CPU sin/cos are slow)."""
  freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  angle = np.arange(max_len, dtype=np.float64)[:, None] * freq
  sin_LxK2 = jnp.asarray(np.sin(angle), jnp.float32)
  cos_LxK2 = jnp.asarray(np.cos(angle), jnp.float32)
  pos = jnp.clip(positions_BxL, 0, max_len - 1)
  return sin_LxK2[pos][:, :, None, :], cos_LxK2[pos][:, :, None, :]


def rope(x_BxLxHxK, sin_BxLx1xK2, cos_BxLx1xK2):
  """Rotary embedding (half-split convention)."""
  x1, x2 = jnp.split(x_BxLxHxK.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos_BxLx1xK2 - x2 * sin_BxLx1xK2,
                         x2 * cos_BxLx1xK2 + x1 * sin_BxLx1xK2], axis=-1)
  return out.astype(x_BxLxHxK.dtype)


def attention_mask(segment_ids_BxL):
  """True where query i may attend key j: j <= i and same segment."""
  length = segment_ids_BxL.shape[1]
  causal_LxL = jnp.tril(jnp.ones((length, length), jnp.bool_))
  same_BxLxL = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
  return same_BxLxL & causal_LxL


def causal_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask_BxLxL, chunk: int):
  """softmax(q k^T + mask) v, skipping keys after each query block (causality)."""
  length = q_BxLxHxK.shape[1]
  chunk = chunk if 0 < chunk < length else length
  outs = []
  for start in range(0, length, chunk):
    end = min(start + chunk, length)
    q_BxCxHxK = q_BxLxHxK[:, start:end]
    s_BxHxCxS = jnp.einsum('bqhk,bshk->bhqs', q_BxCxHxK, k_BxLxHxK[:, :end])
    s_BxHxCxS = jnp.where(mask_BxLxL[:, None, start:end, :end], s_BxHxCxS.astype(jnp.float32),
                          -1e30)
    p_BxHxCxS = jax.nn.softmax(s_BxHxCxS, axis=-1).astype(v_BxLxHxK.dtype)
    outs.append(jnp.einsum('bhqs,bshk->bqhk', p_BxHxCxS, v_BxLxHxK[:, :end]))
  return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


class Attention(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    d, h, k = cfg.d_model, cfg.n_heads, cfg.head_dim
    self.wqkv = _param(rngs, (d, 3, h, k), cfg.init_std, ('embed', None, 'heads', 'kv'),
                       cfg.param_dtype)
    out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    self.wo = _param(rngs, (h, k, d), out_std, ('heads', 'kv', 'embed'), cfg.param_dtype)

  def __call__(self, x_BxLxD, mask_BxLxL, rope_BxLx1xK2):
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    qkv_BxLx3xHxK = dense('bld,dthk->blthk', x_BxLxD, self.wqkv[...].astype(dt))
    sin, cos = rope_BxLx1xK2
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = unstack(qkv_BxLx3xHxK, 2)
    q_BxLxHxK = rope(q_BxLxHxK, sin, cos) * (1.0 / math.sqrt(cfg.head_dim))
    k_BxLxHxK = rope(k_BxLxHxK, sin, cos)
    q_BxLxHxK = sharding.constrain(q_BxLxHxK, ('batch', 'length', 'heads', 'kv'))
    y_BxLxHxK = causal_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask_BxLxL, cfg.attn_chunk)
    out_BxLxD = dense('blhk,hkd->bld', y_BxLxHxK, self.wo[...].astype(dt))
    return sharding.constrain(out_BxLxD, ('batch', 'length', 'embed'))


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate x) * up x); gate and up share one matmul."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    d, f = cfg.d_model, cfg.d_ff
    self.w_gate_up = _param(rngs, (d, 2, f), cfg.init_std, ('embed', None, 'mlp'),
                            cfg.param_dtype)
    out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
    self.w_down = _param(rngs, (f, d), out_std, ('mlp', 'embed'), cfg.param_dtype)

  def __call__(self, x_BxLxD):
    dt = jnp.dtype(self.cfg.dtype)
    h_BxLx2xF = dense('bld,dtf->bltf', x_BxLxD, self.w_gate_up[...].astype(dt))
    h_BxLxF = swiglu(h_BxLx2xF)
    h_BxLxF = sharding.constrain(h_BxLxF, ('batch', 'length', 'mlp'))
    out_BxLxD = dense('blf,fd->bld', h_BxLxF, self.w_down[...].astype(dt))
    return sharding.constrain(out_BxLxD, ('batch', 'length', 'embed'))


class Block(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.attn_norm, self.mlp_norm = RMSNorm(cfg), RMSNorm(cfg)
    self.attn, self.mlp = Attention(cfg, rngs), MLP(cfg, rngs)

  def __call__(self, x_BxLxD, mask_BxLxL, rope_BxLx1xK2):
    x_BxLxD = x_BxLxD + self.attn(self.attn_norm(x_BxLxD), mask_BxLxL, rope_BxLx1xK2)
    return x_BxLxD + self.mlp(self.mlp_norm(x_BxLxD))


class Transformer(nnx.Module):
  """Decoder-only LM: (inputs, segment_ids, positions) [B, L] -> float32 logits [B, L, V]."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    if cfg.vocab_size <= 0:
      raise ModelError('ModelConfig.vocab_size is not set (use get_config(size, vocab_size=...))')
    self.cfg = cfg
    d, v = cfg.d_model, cfg.vocab_size
    self.embed = _param(rngs, (v, d), cfg.init_std, ('vocab', 'embed'), cfg.param_dtype)
    self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
    self.final_norm = RMSNorm(cfg)
    self.head = _param(rngs, (d, v), cfg.init_std, ('embed', 'vocab'), cfg.param_dtype)

  def features(self, inputs_BxL, segment_ids_BxL, positions_BxL):
    """The final-normed hidden states [B, L, D] (the head's input), in the compute dtype."""
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    # Gather from a table all-gathered over 'fsdp' (as FSDP does for every weight).
    table_VxD = sharding.constrain(self.embed[...], ('vocab', None))
    x_BxLxD = jnp.take(table_VxD, inputs_BxL, axis=0).astype(dt)
    x_BxLxD = sharding.constrain(x_BxLxD, ('batch', 'length', 'embed'))
    mask_BxLxL = attention_mask(segment_ids_BxL)
    tables = rope_tables(positions_BxL, cfg.head_dim, inputs_BxL.shape[1], cfg.rope_theta)
    policy = REMAT_POLICIES[cfg.remat]
    if cfg.scan_layers:
      x_BxLxD = self._scan_blocks(x_BxLxD, mask_BxLxL, tables, policy)
    else:
      for block in self.blocks:
        if cfg.remat != 'none':
          x_BxLxD = nnx.remat(lambda blk, x: blk(x, mask_BxLxL, tables), policy=policy)(
              block, x_BxLxD)
        else:
          x_BxLxD = block(x_BxLxD, mask_BxLxL, tables)
    return self.final_norm(x_BxLxD)

  def _scan_blocks(self, x_BxLxD, mask_BxLxL, tables, policy):
    """The blocks as one lax.scan over their parameters stacked on a layer axis (same
    parameters and checkpoints as the loop; one block body to compile)."""
    graph, _ = nnx.split(self.blocks[0])
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.state(b) for b in self.blocks])

    def body(x, state):
      return nnx.merge(graph, state)(x, mask_BxLxL, tables), None

    if policy is not None:
      body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    return jax.lax.scan(body, x_BxLxD, stacked)[0]

  def __call__(self, inputs_BxL, segment_ids_BxL, positions_BxL):
    x_BxLxD = self.features(inputs_BxL, segment_ids_BxL, positions_BxL)
    logits_BxLxV = dense('bld,dv->blv', x_BxLxD, self.head[...].astype(x_BxLxD.dtype))
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    return sharding.constrain(logits_BxLxV, ('batch', 'length', 'vocab'))
