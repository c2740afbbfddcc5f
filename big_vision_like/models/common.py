"""Small helpers shared by the model modules."""

from collections.abc import Mapping
import dataclasses
import functools
import inspect
import math
import os
import re

import flax.linen as nn
import jax
from jax import ad_checkpoint
import jax.numpy as jnp
import numpy as np

from big_vision_like import tree_util


def to_dtype(name):
  """Returns the numpy dtype for a name like "bfloat16" (None: float32)."""
  return jnp.dtype("float32" if name is None else name)


def _materialized_transpose(x, perm):
  """`jnp.transpose(x, perm)` as a copy in memory: XLA folds a plain
  transpose into the dimension numbers of the dot that reads it, and
  XLA:CPU runs such dots in bfloat16 on its slow generic path."""
  perm = tuple(perm)
  if perm == tuple(range(x.ndim)):
    return x
  y = jnp.transpose(x.reshape(x.shape + (1,)), perm + (x.ndim,))
  return y.reshape(y.shape[:-1])


def _matmul_dims(ndim, nt):
  """dot_general's dimension numbers of [b?, m, k] x [b?, k, n] (`nt`:
  [b?, n, k]); the batch axis b is there when ndim == 3."""
  contract = ((ndim - 1,), (ndim - 1 if nt else ndim - 2,))
  return contract, ((0,), (0,)) if ndim == 3 else ((), ())


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _batched_matmul(a, c, nt):
  """a [b?, m, k] @ c [b?, k, n] (`nt`: c [b?, n, k], c^T), accumulated in
  float32; bfloat16 operands are multiplied in bfloat16."""
  return jax.lax.dot_general(a, c, _matmul_dims(a.ndim, nt),
                             preferred_element_type=jnp.float32)


def _batched_matmul_fwd(a, c, nt):
  return _batched_matmul(a, c, nt), (a, c)


def _batched_matmul_bwd(nt, residuals, g):
  """da = g c^T, dc = a^T g (c [b?, k, n]) or g^T a (`nt`), as dots whose
  left operand is read along its last axis (the form XLA:CPU gives
  YNNPACK): a left operand that needs transposing is copied transposed, or,
  where that copies less, the other one and the product (gradient =
  (product)^T). bfloat16 (never `nt`) reads the right operand as [b?, k, n]
  too, its kernels' only layout."""
  a, c = residuals
  g = g.astype(a.dtype)
  r = a.ndim
  t = lambda x: _materialized_transpose(x, (*range(r - 2), r - 1, r - 2))
  dot = lambda x, y, y_nt=False: jax.lax.dot_general(
      x, y, _matmul_dims(r, y_nt), preferred_element_type=jnp.float32)
  m, k = a.shape[-2:]
  n = c.shape[-2] if nt else c.shape[-1]
  if nt:  # g [b?, m, n] @ c [b?, n, k]; dc [b?, n, k] = g^T a.
    da = dot(g, c)
    dc = dot(t(g), a) if m * n <= k * (m + n) else t(dot(t(a), g))
  else:
    if a.dtype == jnp.bfloat16:
      da = dot(g, t(c)) if k * n <= m * (n + k) else t(dot(c, t(g)))
    else:  # float32 kernels read c [b?, k, n] as c^T directly.
      da = dot(g, c, y_nt=True)
    dc = dot(t(a), g) if m * k <= n * (m + k) else t(dot(t(g), a))
  return da.astype(a.dtype), dc.astype(c.dtype)


_batched_matmul.defvjp(_batched_matmul_fwd, _batched_matmul_bwd)


def _cpu_route(*operands):
  """"bfloat16" / "float32" where `dot_general` takes its CPU path, else
  None (other dtypes, other backends)."""
  dtype = jnp.result_type(*operands)
  if jax.default_backend() != "cpu" or dtype not in (jnp.bfloat16,
                                                     jnp.float32):
    return None
  return jnp.dtype(dtype).name


# Checkpoint names of `dot_general`'s products on CPU (a custom VJP),
# without and with batch dimensions.
DOT_NAMES = ("common.dot_general", "common.dot_general_batched")


def dot_general(lhs, rhs, dimension_numbers, precision=None,
                preferred_element_type=None, **kwargs):
  """`jax.lax.dot_general`, with gradients in the layouts XLA:CPU runs fast.

  On CPU, XLA gives a dot to YNNPACK's kernels only when the left operand
  is read along its last (contracting) axis, and, in bfloat16 (AMX or
  AVX512-BF16: 4-5x its float32 matmul on the AMX Xeon of the README), only
  when it accumulates in float32 and reads the right operand as [b, k, n];
  other dots run on XLA's generic (Eigen) dot: in bfloat16 slower than
  float32 throughout, in float32 about half YNNPACK's speed. A gradient
  matmul often has that other form (a weight's gradient contracts over the
  batch and token axes, its leading ones), and XLA, left to itself, copies
  the larger operand transposed and returns the gradient transposed, so
  that the optimizer's update reads it transposed too. On CPU, a float32 or
  bfloat16 dot is therefore computed as a batched matmul of those forms,
  forward and backward (a custom VJP whose gradient matmuls read
  materialised transposes of the cheaper operands, and return every
  gradient in its operand's layout). The value is the same dot
  accumulated in float32, as a GPU's or TPU's bfloat16 matmul computes it,
  returned in float32 unless `preferred_element_type` says otherwise:
  XLA:CPU's bfloat16 elementwise ops and reductions (a bias add's
  gradient, GELU) are slower than its float32 ones, so on CPU
  `dtype_mm="bfloat16"` rounds the matmuls' operands, not the activations
  between them. Callers cast the operands of the next matmul. `precision`
  has no effect on that path (XLA:CPU multiplies float32 in float32, and
  products of bfloat16 numbers are exact in float32). Other dtypes and
  backends call `jax.lax.dot_general` unchanged. Use as flax's
  `nn.Dense(dot_general=...)`, or through `einsum`.
  """
  route = _cpu_route(lhs, rhs)
  if route is None:
    return jax.lax.dot_general(lhs, rhs, dimension_numbers,
                               precision=precision,
                               preferred_element_type=preferred_element_type,
                               **kwargs)
  (lc, rc), (lb, rb) = (tuple(map(tuple, d)) for d in dimension_numbers)
  lf = tuple(i for i in range(lhs.ndim) if i not in lc + lb)
  rf = tuple(i for i in range(rhs.ndim) if i not in rc + rb)
  # [b, m, k] with batch dims, [m, k] without (XLA:CPU drops a unit batch
  # axis from a dot, and the op's name with it).
  size = lambda x, dims: math.prod(x.shape[i] for i in dims)
  batch = (size(lhs, lb),) if lb else ()
  a = _materialized_transpose(lhs, lb + lf + lc).reshape(
      *batch, size(lhs, lf), size(lhs, lc))
  # float32 kernels also read the right operand as [b, n, k]: no copy
  # where it is already in that order (and not in [b, k, n]).
  identity = tuple(range(rhs.ndim))
  nt = (route == "float32" and rb + rc + rf != identity
        and rb + rf + rc == identity)
  order = rb + rf + rc if nt else rb + rc + rf
  c = _materialized_transpose(rhs, order).reshape(
      *batch, *((size(rhs, rf), size(rhs, rc)) if nt
                else (size(rhs, rc), size(rhs, rf))))
  if route == "bfloat16":
    a, c = a.astype(jnp.bfloat16), c.astype(jnp.bfloat16)
  y = _batched_matmul(a, c, nt)
  shape = [lhs.shape[i] for i in lb + lf] + [rhs.shape[i] for i in rf]
  # A remat policy sees a custom VJP, not a dot: the name lets the policies
  # that save dots save this one too (`remat_policy`).
  y = ad_checkpoint.checkpoint_name(y, DOT_NAMES[1] if lb else DOT_NAMES[0])
  return y.reshape(shape).astype(preferred_element_type or jnp.float32)


def einsum(subscripts, *operands, **kwargs):
  """`jnp.einsum` whose matmuls are `dot_general`'s (float32 out on CPU)."""
  if ("preferred_element_type" not in kwargs
      and _cpu_route(*operands) == "bfloat16"):
    kwargs["preferred_element_type"] = jnp.float32
  return jnp.einsum(subscripts, *operands, _dot_general=dot_general, **kwargs)


# Argument-free policies of `jax.checkpoint_policies` a `remat_policy` can
# name (the others are factories that need arguments).
REMAT_POLICIES = tuple(n for n in (
    "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable",
    "everything_saveable", "checkpoint_dots",
    "checkpoint_dots_with_no_batch_dims",
) if hasattr(jax.checkpoint_policies, n))


# The policies that save dots -> the `DOT_NAMES` they save as well.
_SAVED_DOT_NAMES = {
    "dots_saveable": DOT_NAMES,
    "checkpoint_dots": DOT_NAMES,
    "dots_with_no_batch_dims_saveable": DOT_NAMES[:1],
    "checkpoint_dots_with_no_batch_dims": DOT_NAMES[:1],
}


def remat_policy(name):
  """The `jax.checkpoint_policies` policy called `name` (`REMAT_POLICIES`).

  The policies that save dots also save `dot_general`'s bfloat16 products
  on CPU, which they would not see as dots (a custom VJP) and so recompute.
  """
  if name not in REMAT_POLICIES:
    raise ValueError(f"Unknown remat_policy {name!r}; known: "
                     f"{list(REMAT_POLICIES)} (names in "
                     "jax.checkpoint_policies).")
  policy = getattr(jax.checkpoint_policies, name)
  if name in _SAVED_DOT_NAMES:
    policy = jax.checkpoint_policies.save_from_both_policies(
        policy, jax.checkpoint_policies.save_only_these_names(
            *_SAVED_DOT_NAMES[name]))
  return policy


def maybe_remat(module_cls, remat, policy, static_argnums, prevent_cse=True):
  """`module_cls`, rematerialised with `policy` when `remat` is true.

  Checkpointing (`nn.remat`) keeps the module's param names and shapes and
  its outputs and gradients; the backward pass recomputes what `policy` (a
  `REMAT_POLICIES` name, checked even when `remat` is false) does not save.

  Args:
    module_cls: a flax module class.
    remat: whether to checkpoint it.
    policy: name of a `jax.checkpoint_policies` policy.
    static_argnums: positions of the Python (non-array) arguments of its
      `__call__`, counting `self` as 0, e.g. a `train` / `deterministic`
      bool; traced, they would fail Python `if`s.
    prevent_cse: keep XLA from merging the recomputation with the forward
      pass; needed outside `nn.scan` (which prevents that by itself).

  Returns:
    A module class taking the same attributes and call arguments.
  """
  policy_fn = remat_policy(policy)
  if not remat:
    return module_cls
  return nn.remat(module_cls, policy=policy_fn, prevent_cse=prevent_cse,
                  static_argnums=tuple(static_argnums))


def posemb_sincos_2d(h, w, width, temperature=10_000., dtype=jnp.float32):
  """Fixed 2-D sin-cos position embedding ("Better plain ViT baselines").

  Args:
    h: grid height (patches).
    w: grid width (patches).
    width: embedding size D; must be a multiple of 4.
    temperature: the base of the geometric frequency progression.
    dtype: dtype of the result.

  Returns:
    An array [1, h*w, D]: sin(x), cos(x), sin(y), cos(y) blocks of D/4 each.
  """
  if width % 4:
    raise ValueError(f"sincos2d needs a width divisible by 4, got {width}.")
  quarter = width // 4
  ys, xs = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")  # [h, w]
  omega = jnp.arange(quarter) / max(quarter - 1, 1)
  omega = 1.0 / (temperature ** omega)  # [D/4]
  y = ys.reshape(-1)[:, None] * omega[None, :]  # [h*w, D/4]
  x = xs.reshape(-1)[:, None] * omega[None, :]  # [h*w, D/4]
  pe = jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], 1)
  return jnp.asarray(pe, dtype)[None]  # [1, h*w, D]


def resample_posemb(old, new_hw):
  """Bilinearly resizes a learned position embedding to another grid.

  Used to transfer a ViT to another resolution (or patch size). The old grid
  must be square. If the old embedding has one extra leading entry (a class
  token in the original ViT layout), that entry is kept unchanged.

  Args:
    old: [1, h*w, D] (or [1, 1 + h*w, D]) position embedding.
    new_hw: new grid size, an int or (h2, w2).

  Returns:
    [1, h2*w2, D] (or [1, 1 + h2*w2, D]), same dtype and array type as `old`.
  """
  h2, w2 = (new_hw, new_hw) if isinstance(new_hw, int) else tuple(new_hw)
  n, d = old.shape[1], old.shape[2]
  extra = 0
  side = math.isqrt(n)
  if side * side != n:
    extra, side = 1, math.isqrt(n - 1)
    if side * side != n - 1:
      raise ValueError(f"Position embedding of length {n} is not a square "
                       "grid (with or without one class token).")
  head, grid = old[:, :extra], old[:, extra:]
  grid = jnp.reshape(jnp.asarray(grid, jnp.float32), (side, side, d))
  grid = jax.image.resize(grid, (h2, w2, d), method="bilinear")  # [h2, w2, D]
  grid = jnp.reshape(grid, (1, h2 * w2, d)).astype(old.dtype)
  new = jnp.concatenate([jnp.asarray(head), grid], axis=1)
  return np.asarray(new) if isinstance(old, np.ndarray) else new


def head(num_classes, zeroinit):
  """The classifier/projection `head` Dense of big_vision's models.

  Call inside a module's compact method; `zeroinit` zero-initialises the
  kernel (classifiers start at uniform predictions).
  """
  init = nn.initializers.zeros if zeroinit else nn.linear.default_kernel_init
  return nn.Dense(num_classes, name="head", kernel_init=init,
                  dot_general=dot_general)


def _shape(x):
  return tuple(getattr(x, "shape", np.shape(x)))


def _mismatch_message(where, dont_load, sections, limit=40):
  """One error message listing the names of each non-empty section."""
  src = f" from {where}" if where else ""
  lines = [f"merge_params: the loaded params{src} do not match the model's "
           "params."]
  for title, names in sections:
    if not names:
      continue
    lines.append(f"  {title} ({len(names)}):")
    lines += [f"    {n}" for n in sorted(names)[:limit]]
    if len(names) > limit:
      lines.append(f"    ... and {len(names) - limit} more")
  lines.append("  (names matching `dont_load` keep their init value and are "
               f"not checked; dont_load={list(dont_load)!r})")
  return "\n".join(lines)


def merge_params(loaded, init, *, dont_load=(), where=""):
  """Returns `init`'s tree with the values of `loaded` (for transfer).

  Every leaf of `init` whose '/'-joined name fully matches a `dont_load`
  regex keeps its init value; every other leaf takes the value of the same
  name in `loaded`, cast to the init leaf's dtype. Names that match
  `dont_load` are not checked at all, so `dont_load` also drops checkpoint
  entries the model does not have (e.g. `dont_load=("head/.*",)` loads a
  classifier into a model without a head, or re-initialises the head of one
  with a head).

  Args:
    loaded: nested dict of arrays, e.g. from `checkpoint.load_params`.
    init: the model's freshly initialised params (nested dict of arrays).
    dont_load: regexes over '/'-joined names (e.g. "head/.*", ".*/bias").
    where: where `loaded` comes from (a path), for the error message.

  Returns:
    A tree with `init`'s structure.

  Raises:
    ValueError: naming, in one message, every init name missing from
      `loaded`, every `loaded` name the model does not have, and every name
      whose shapes differ (with both shapes).
  """
  if isinstance(dont_load, str):
    dont_load = (dont_load,)
  patterns = [re.compile(p) for p in dont_load]
  skip = lambda name: any(p.fullmatch(name) for p in patterns)  # noqa: E731
  flat_loaded = tree_util.flatten(loaded)
  flat_init = tree_util.flatten(init)

  missing = [n for n in flat_init if n not in flat_loaded and not skip(n)]
  unexpected = [n for n in flat_loaded if n not in flat_init and not skip(n)]
  misshaped = [
      f"{n}: checkpoint {_shape(flat_loaded[n])} vs model {_shape(v)}"
      for n, v in flat_init.items()
      if n in flat_loaded and not skip(n)
      and _shape(flat_loaded[n]) != _shape(v)]
  if missing or unexpected or misshaped:
    raise ValueError(_mismatch_message(where, dont_load, [
        ("in the model, not in the checkpoint", missing),
        ("in the checkpoint, not in the model", unexpected),
        ("shapes differ", misshaped)]))

  def pick(name, init_leaf):
    if skip(name):
      return init_leaf
    value = flat_loaded[name]
    if not hasattr(value, "dtype"):
      value = np.asarray(value)
    dtype = getattr(init_leaf, "dtype", None)
    if dtype is not None and value.dtype != dtype:
      value = value.astype(dtype)
    return value

  return tree_util.tree_map_with_names(pick, init)


def _is_vit_tree(node):
  """Whether a param subtree looks like a ViT with a learned posemb."""
  emb = node.get("embedding") if isinstance(node, Mapping) else None
  return (isinstance(emb, Mapping) and "pos_embedding" in node
          and len(_shape(emb.get("kernel", ()))) == 4)


def _vit_paths(init, model):
  """Paths (tuples of keys) of the ViT subtrees of `init`."""
  if model == "vit":
    return [()] if _is_vit_tree(init) else []
  if model == "two_towers":
    return [("img",)] if _is_vit_tree(init.get("img")) else []
  if model is not None:
    return []
  found = []

  def walk(node, path):
    if _is_vit_tree(node):
      found.append(path)
    elif isinstance(node, Mapping):
      for k, v in node.items():
        walk(v, path + (k,))

  walk(init, ())
  return found


def _convert_layouts(loaded, init):
  """Re-lays `loaded`'s encoders out as scanned/unscanned like `init`'s."""
  # Imported here: vit imports this module.
  from big_vision_like.models import vit  # pylint: disable=C0415
  if not (isinstance(loaded, Mapping) and isinstance(init, Mapping)):
    return loaded
  loaded = dict(loaded)
  if ("encoderblock" in init and "encoderblock_0" in loaded
      and "encoderblock" not in loaded):
    loaded = vit.unscanned_to_scan(loaded)
  elif ("encoderblock_0" in init and "encoderblock" in loaded
        and "encoderblock_0" not in loaded):
    loaded = vit.scan_to_unscanned(loaded)
  return {k: _convert_layouts(v, init[k]) if k in init else v
          for k, v in loaded.items()}


def _resample_posembs(loaded, init, paths):
  """Resamples each ViT `pos_embedding` of `loaded` to init's (square) grid."""
  for path in paths:
    node_l, node_i = _get_path(loaded, path), _get_path(init, path)
    if not isinstance(node_l, Mapping) or "pos_embedding" not in node_l:
      continue
    old, new = _shape(node_l["pos_embedding"]), _shape(node_i["pos_embedding"])
    side = math.isqrt(new[1])
    if (old == new or len(old) != 3 or old[2] != new[2]
        or side * side != new[1]):
      continue  # merge_params reports what cannot be resampled.
    node = dict(node_l)
    node["pos_embedding"] = resample_posemb(node_l["pos_embedding"], side)
    loaded = _set_path(loaded, path, node)
  return loaded


def _from_legacy_vits(loaded, paths):
  """Renames vision_transformer-layout ViTs at `paths` (vit.py)."""
  from big_vision_like.models import vit  # pylint: disable=C0415
  for path in paths:
    node = _get_path(loaded, path)
    if isinstance(node, Mapping) and vit.is_legacy_layout(node):
      loaded = _set_path(loaded, path, vit.from_legacy_layout(node))
  return loaded


def _get_path(tree, path):
  """The subtree at `path`, or None where a key is missing."""
  for k in path:
    tree = tree.get(k) if isinstance(tree, Mapping) else None
  return tree


def _set_path(tree, path, value):
  if not path:
    return value
  return {**tree, path[0]: _set_path(tree[path[0]], path[1:], value)}


def load_into(init_params, path_or_tree, *, dont_load=(), model=None,
              item="params"):
  """Loads a checkpoint into a model's params, adapting it where it can.

  On top of `merge_params`: encoders stored scanned (`encoderblock` with a
  leading depth axis) are split into `encoderblock_{i}` when the model is
  unscanned, and the other way around; a ViT `pos_embedding` of another
  grid size (another resolution or patch size) is resampled bilinearly to
  the model's square grid (`resample_posemb`); a ViT in the older
  google-research/vision_transformer layout (AugReg's `.npz` files) is
  renamed to big_vision's (`vit.from_legacy_layout`).

  Args:
    init_params: the model's freshly initialised params.
    path_or_tree: a `checkpoint.load_params` path (`.npz`, orbax dir,
      optional `:subtree` suffix) or an already loaded params tree.
    dont_load: regexes of names that keep their init value (`merge_params`).
    model: optional registered model name saying where its ViT lives:
      "vit" (the root), "two_towers" ("img"), another name (no ViT);
      "bit_paper" also renames the BiT paper's release files. None:
      every subtree shaped like a ViT (`embedding/kernel` of rank 4 next to
      a `pos_embedding`) has its `pos_embedding` resampled.
    item: "params", or "ema" to load the weight EMA of an orbax checkpoint
      (`checkpoint.load_params`); e.g. `config.model_load.item = "ema"`.

  Returns:
    A tree with `init_params`' structure.
  """
  where = ""
  loaded = path_or_tree
  if isinstance(path_or_tree, (str, os.PathLike)):
    # Imported here: checkpoint pulls in orbax, which models don't need.
    from big_vision_like import checkpoint  # pylint: disable=C0415
    where = os.fspath(path_or_tree)
    loaded = checkpoint.load_params(where, item=item)
  if model == "bit_paper":  # The BiT paper's release files (`resnet/...`).
    from big_vision_like.models import bit_paper  # pylint: disable=C0415
    loaded = bit_paper.from_big_transfer(loaded)
  vit_paths = _vit_paths(init_params, model)
  loaded = _from_legacy_vits(loaded, vit_paths)
  loaded = _convert_layouts(loaded, init_params)
  loaded = _resample_posembs(loaded, init_params, vit_paths)
  return merge_params(loaded, init_params, dont_load=dont_load, where=where)


def factory_signature(module_cls, **keyword_only):
  """The signature of `Model(num_classes=None, *, <keyword_only>, **fields)`.

  Factories pass `**kw` on to their flax module; with this as their
  `__signature__`, the trainer's key check sees the module's fields and
  suggests close matches for a misspelled `config.model` key.
  """
  kw_only = inspect.Parameter.KEYWORD_ONLY
  params = [inspect.Parameter("num_classes",
                              inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              default=None)]
  params += [inspect.Parameter(k, kw_only, default=v)
             for k, v in keyword_only.items()]
  params += [inspect.Parameter(f.name, kw_only, default=None)
             for f in dataclasses.fields(module_cls)
             if f.name not in ("parent", "name", "num_classes", *keyword_only)]
  return inspect.Signature(params)
