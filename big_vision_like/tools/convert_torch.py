"""torch state dicts -> this project's params: loading, blocks, timm ViT.

Reads a `.safetensors` file or a torch state dict into numpy arrays (bfloat16
kept), checks it against the layout a converter expects (one error naming
every missing, unexpected and mis-shaped key) and maps timm
`VisionTransformer` weights (DeiT's `deit_*`, `deit3_*` and distilled
`deit_*_distilled_*` too) to `vit` params. The pre-LN transformer block
mapping (`block`) is shared with `convert_open_clip`. torch is imported only
inside the functions that need it.

What the weights do not store is a model kwarg the caller chooses: the
number of heads, the GELU flavour (timm's default is exact erf GELU, its
OpenAI CLIP ports use QuickGELU) and the LayerNorm eps (timm's default
1e-6; its CLIP models, the ones with `norm_pre`, use 1e-5).
"""

import io
import math
import re

import jax
import numpy as np

from big_vision_like import fs
from big_vision_like import tree_util
from big_vision_like.models import vit

# ---------------------------------------------------------------- loading

_INSTALL_HINT = ("the torch converters need the `torch` extra: "
                 "pip install -e '.[torch]' (PyTorch, safetensors, timm, "
                 "open_clip)")


def _import_torch():
  """The torch module, or an error saying how to install it."""
  try:
    import torch  # pylint: disable=C0415
  except ModuleNotFoundError as e:
    raise ModuleNotFoundError(f"No module named {e.name!r}: {_INSTALL_HINT}.",
                              name=e.name) from None
  return torch


def _safetensors_torch():
  """`safetensors.torch`, or an error saying how to install it."""
  _import_torch()
  try:
    from safetensors import torch as st  # pylint: disable=C0415
  except ModuleNotFoundError as e:
    raise ModuleNotFoundError(f"No module named {e.name!r}: {_INSTALL_HINT}.",
                              name=e.name) from None
  return st


def _to_numpy(t):
  torch = _import_torch()
  t = t.detach().cpu()
  if t.dtype == torch.bfloat16:
    return t.view(torch.int16).numpy().view(jax.numpy.bfloat16)
  return t.numpy()


def as_numpy_state_dict(state_dict, where="state dict"):
  """{name: torch tensor or array} -> {name: numpy array} (bf16 kept)."""
  out, bad = {}, []
  for k, v in state_dict.items():
    if hasattr(v, "detach"):
      out[k] = _to_numpy(v)
    elif isinstance(v, np.ndarray) or np.isscalar(v):
      out[k] = np.asarray(v)
    else:
      bad.append(f"{k} ({type(v).__name__})")
  if bad:
    raise ValueError(f"{where}: entries that are not tensors: {bad[:20]}.")
  return out


def numpy_state_dict(state_dict, where="state dict"):
  """`as_numpy_state_dict`, without DataParallel `module.` key prefixes."""
  sd = as_numpy_state_dict(state_dict, where)
  return {k.removeprefix("module."): v for k, v in sd.items()}


def float32_state_dict(state_dict):
  """{name: float32 numpy array} of tensors or arrays, `module.` stripped."""
  def to_numpy(value):
    if hasattr(value, "detach"):  # torch.Tensor
      value = value.detach().cpu().float().numpy()
    return np.asarray(value, np.float32)
  return {k.removeprefix("module."): to_numpy(v)
          for k, v in state_dict.items()}


def _unwrap(obj, where):
  """Descends `state_dict`/`model`/... wrappers; strips `module.` prefixes."""
  while isinstance(obj, dict):
    inner = [k for k in ("state_dict", "model", "model_state_dict", "module")
             if isinstance(obj.get(k), dict)]
    if not inner or any(hasattr(v, "detach") for v in obj.values()):
      break
    obj = obj[inner[0]]
  if not isinstance(obj, dict):
    raise TypeError(f"{where}: expected a state dict, got "
                    f"{type(obj).__name__}.")
  if obj and all(k.startswith("module.") for k in obj):
    obj = {k[len("module."):]: v for k, v in obj.items()}
  return obj


def load_torch_state_dict(path):
  """Reads a `.safetensors` file or torch state dict into numpy arrays.

  `path` is local or a bucket URL (read whole through `fs`).
  """
  if not fs.exists(path):
    raise FileNotFoundError(f"{path} does not exist.")
  if path.endswith(".safetensors"):
    st = _safetensors_torch()
    sd = (st.load(fs.read_bytes(path)) if fs.is_remote(path)
          else st.load_file(path))
  else:
    torch = _import_torch()
    source = io.BytesIO(fs.read_bytes(path)) if fs.is_remote(path) else path
    try:
      sd = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # Pickled modules, other formats.
      raise ValueError(f"{path}: cannot be read as a torch state dict "
                       f"(torch.load(weights_only=True): {e})") from e
  return as_numpy_state_dict(_unwrap(sd, path), where=path)


# ---------------------------------------------------------------- checks


def check_keys(sd, expected, where, what):
  """Raises one error listing missing, unexpected and mis-shaped keys.

  Args:
    sd: {name: array}, the state dict.
    expected: {name: shape} of every key the layout needs.
    where: the file (or "state dict"), for the message.
    what: what the state dict should be, e.g. "timm ViT".
  """
  missing = sorted(k for k in expected if k not in sd)
  unexpected = sorted(k for k in sd if k not in expected)
  misshaped = sorted(
      f"{k}: got {tuple(sd[k].shape)}, expected {tuple(s)}"
      for k, s in expected.items() if k in sd and tuple(sd[k].shape) != s)
  if not (missing or unexpected or misshaped):
    return
  lines = [f"{where}: does not match the {what} layout this converter maps:"]
  for title, keys in (("missing", missing), ("unexpected", unexpected),
                      ("shapes differ", misshaped)):
    if keys:
      lines.append(f"  {title} ({len(keys)}): " + ", ".join(keys[:20])
                   + (" ..." if len(keys) > 20 else ""))
  raise ValueError("\n".join(lines))


def set_path(tree, path, value):
  """tree[path[0]]...[path[-1]] = value, creating the nested dicts."""
  node = tree
  for k in path[:-1]:
    node = node.setdefault(k, {})
  node[path[-1]] = value


def param_shapes(model, *inputs):
  """{name: shape} of `model`'s params for abstract `inputs` (no FLOPs)."""
  params = jax.eval_shape(model.init, jax.random.key(0), *inputs)["params"]
  return {n: p.shape for n, p in tree_util.flatten(params).items()}


def param_problems(params, unmapped, expected, model_name):
  """Lines listing unmapped keys, missing/extra params and bad shapes.

  Args:
    params: the converted nested params.
    unmapped: state-dict keys that map to no param.
    expected: {name: shape} of the model's params (`param_shapes`).
    model_name: the registered model, for the titles.

  Returns:
    Message lines, empty when the params are exactly the model's.
  """
  names = tree_util.flatten(params)
  missing = sorted(set(expected) - set(names))
  extra = sorted(set(names) - set(expected))
  misshaped = sorted(f"{n}: got {names[n].shape}, expected {expected[n]}"
                     for n in set(names) & set(expected)
                     if tuple(names[n].shape) != tuple(expected[n]))
  lines = []
  for title, items in (
      (f"timm keys with no {model_name} param", unmapped),
      (f"{model_name} params missing from the state dict", missing),
      ("converted params the model does not have", extra),
      ("shapes differ", misshaped)):
    if items:
      lines.append(f"  {title} ({len(items)}):")
      lines += [f"    {x}" for x in items[:40]]
      if len(items) > 40:
        lines.append(f"    ... and {len(items) - 40} more")
  return lines


def check_variant(kw, variant_kw, where, what):
  """Raises unless `kw` has the values `variant_kw` decodes to.

  Args:
    kw: the model kwargs read from the state dict.
    variant_kw: the kwargs the requested variant decodes to.
    where: the file (or "state dict"), for the message.
    what: the variant's full name, e.g. "Mixer-B/16".
  """
  got = {k: kw[k] for k in variant_kw}
  if got != variant_kw:
    raise ValueError(f"{where}: the weights are not {what}: they have {got}, "
                     f"{what} has {variant_kw}.")


def require(sd, key, where, what):
  """sd[key], or an error saying the state dict is not a `what`."""
  if key not in sd:
    some = ", ".join(sorted(sd)[:8])
    raise ValueError(f"{where}: {what} state dicts have {key}; this one has "
                     f"not (its keys: {some}{', ...' if len(sd) > 8 else ''})"
                     ".")
  return sd[key]


def refuse(sd, prefixes, where, why):
  """Raises if any key starts with one of `prefixes` (an unmappable part)."""
  found = sorted(k for k in sd if k.startswith(tuple(prefixes)))
  if found:
    raise ValueError(f"{where}: cannot be represented exactly by this "
                     f"project's models: {why} (keys: {found[:6]}).")


def divides(width, heads, where):
  """`heads`, checked to divide `width`."""
  if heads <= 0 or width % heads:
    raise ValueError(f"{where}: width {width} is not divisible by "
                     f"num_heads={heads}.")
  return heads


def depth(sd, prefix):
  """Number of `{prefix}{i}.` blocks in `sd`."""
  ids = {int(m.group(1)) for k in sd
         if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
  return max(ids) + 1 if ids else 0


# ------------------------------------------------- transformer blocks (torch)

# Roles -> names inside one torch block, for timm and open_clip.
TIMM_BLOCK = {"ln0": "norm1", "qkv_w": "attn.qkv.weight",
              "qkv_b": "attn.qkv.bias", "out": "attn.proj", "ln1": "norm2",
              "fc1": "mlp.fc1", "fc2": "mlp.fc2", "ls0": "ls1.gamma",
              "ls1": "ls2.gamma"}
CLIP_BLOCK = {"ln0": "ln_1", "qkv_w": "attn.in_proj_weight",
              "qkv_b": "attn.in_proj_bias", "out": "attn.out_proj",
              "ln1": "ln_2", "fc1": "mlp.c_fc", "fc2": "mlp.c_proj",
              "ls0": "ls_1.gamma", "ls1": "ls_2.gamma"}


def block_keys(p, names, d, mlp, *, qkv_bias, layerscale):
  """{key: shape} of one torch block with prefix `p`."""
  n = names
  keys = {f"{p}{n['qkv_w']}": (3 * d, d), f"{p}{n['out']}.weight": (d, d),
          f"{p}{n['out']}.bias": (d,), f"{p}{n['fc1']}.weight": (mlp, d),
          f"{p}{n['fc1']}.bias": (mlp,), f"{p}{n['fc2']}.weight": (d, mlp),
          f"{p}{n['fc2']}.bias": (d,)}
  for ln in (n["ln0"], n["ln1"]):
    keys.update({f"{p}{ln}.weight": (d,), f"{p}{ln}.bias": (d,)})
  if qkv_bias:
    keys[f"{p}{n['qkv_b']}"] = (3 * d,)
  if layerscale:
    keys.update({f"{p}{n['ls0']}": (d,), f"{p}{n['ls1']}": (d,)})
  return keys


def dense(w, b=None):
  """torch Linear weight [O, I] (bias [O] or None: zeros) -> flax Dense."""
  b = np.zeros(w.shape[:1], w.dtype) if b is None else np.asarray(b)
  return {"kernel": np.ascontiguousarray(w.T), "bias": b}


def ln(sd, p):
  """torch LayerNorm `p` -> flax LayerNorm params."""
  return {"scale": sd[f"{p}.weight"], "bias": sd[f"{p}.bias"]}


def patch_embedding(w, b=None):
  """torch patch conv [D, C, ph, pw] -> flax Conv `embedding` params."""
  return {"kernel": np.ascontiguousarray(w.transpose(2, 3, 1, 0)),
          "bias": np.zeros(w.shape[:1], w.dtype) if b is None else b}


def _attention(wq, bq, wkv, bkv, wo, bo, num_heads):
  """torch q [D, D], kv [2D, D] (fused), out [D, D] -> flax MHDPA params."""
  d = wq.shape[0]
  hd = d // num_heads
  out = {}
  for name, w, b in (("query", wq, bq), ("key", wkv[:d], bkv[:d]),
                     ("value", wkv[d:], bkv[d:])):
    out[name] = {"kernel": np.ascontiguousarray(w.T).reshape(d, num_heads, hd),
                 "bias": np.asarray(b).reshape(num_heads, hd)}
  out["out"] = {"kernel": np.ascontiguousarray(wo.T).reshape(num_heads, hd, d),
                "bias": np.asarray(bo)}
  return out


def _mlp(sd, fc1, fc2):
  return {"Dense_0": dense(sd[f"{fc1}.weight"], sd[f"{fc1}.bias"]),
          "Dense_1": dense(sd[f"{fc2}.weight"], sd[f"{fc2}.bias"])}


def block(sd, p, names, num_heads):
  """One torch pre-LN block -> this project's `Encoder1DBlock` params."""
  n = names
  wqkv = sd[f"{p}{n['qkv_w']}"]  # [3D, D], rows: q, k, v; heads major.
  d = wqkv.shape[1]
  bqkv = sd.get(f"{p}{n['qkv_b']}", np.zeros((3 * d,), wqkv.dtype))
  blk = {
      "LayerNorm_0": ln(sd, f"{p}{n['ln0']}"),
      "MultiHeadDotProductAttention_0": _attention(
          wqkv[:d], bqkv[:d], wqkv[d:], bqkv[d:], sd[f"{p}{n['out']}.weight"],
          sd[f"{p}{n['out']}.bias"], num_heads),
      "LayerNorm_1": ln(sd, f"{p}{n['ln1']}"),
      "MlpBlock_0": _mlp(sd, f"{p}{n['fc1']}", f"{p}{n['fc2']}"),
  }
  if f"{p}{n['ls0']}" in sd:
    blk["LayerScale_0"] = {"scale": sd[f"{p}{n['ls0']}"]}
    blk["LayerScale_1"] = {"scale": sd[f"{p}{n['ls1']}"]}
  return blk


def encoder(sd, prefix, names, num_heads, n_blocks, norm):
  """Blocks `{prefix}{i}.` and final LayerNorm `norm` -> `Encoder` params."""
  enc = {f"encoderblock_{i}": block(sd, f"{prefix}{i}.", names, num_heads)
         for i in range(n_blocks)}
  enc["encoder_norm"] = ln(sd, norm)
  return enc


# ---------------------------------------------------------------- timm ViT

TIMM_POOL = {"token": "tok", "avg": "gap"}  # timm global_pool -> pool_type.
GELUS = vit.GELUS


def check_gelu(gelu):
  if gelu not in GELUS:
    raise ValueError(f"Unknown gelu {gelu!r}; known: {GELUS}.")
  return gelu


def _timm_heads(width, num_heads, variant, where):
  """num_heads from the argument, else from the variant string."""
  if num_heads:
    return divides(width, int(num_heads), where)
  if variant:
    return divides(width, vit.decode_variant(variant)["num_heads"], where)
  raise ValueError(f"{where}: the number of attention heads is not stored in "
                   f"the weights (width {width}); pass num_heads "
                   "(--num_heads) or a variant such as 'B/16' (--variant).")


def _timm_pos_has_cls(n, num_prefix, pos_includes_cls, where):
  """Whether timm's pos_embed (length n) has entries for the `num_prefix`
  class (and DeiT distillation) tokens."""
  if not num_prefix:
    return False
  if pos_includes_cls is not None:
    return bool(pos_includes_cls)
  square = lambda m: m > 0 and math.isqrt(m) ** 2 == m
  if square(n - num_prefix) and not square(n):
    return True
  if square(n) and not square(n - num_prefix):
    return False
  raise ValueError(f"{where}: cannot tell whether pos_embed (length {n}) "
                   "includes the class token; pass pos_includes_cls "
                   "(--[no-]pos_includes_cls).")


def _timm_pool(sd, pool_type, where):
  default = ("map" if "attn_pool.latent" in sd
             else "tok" if "cls_token" in sd else "gap")
  pool = TIMM_POOL.get(pool_type, pool_type) or default
  if pool != default:
    hint = (" timm's avg pooling skips the class token; this project's gap "
            "has none to skip" if pool == "gap" else "")
    raise ValueError(f"{where}: pool_type {pool!r} cannot be computed "
                     "exactly from these weights, whose layout says "
                     f"{default!r}.{hint}")
  return pool


def timm_vit_config(state_dict, *, num_heads=None, variant=None,
                    pool_type=None, gelu="erf", norm_eps=None,
                    where="state dict"):
  """Infers this project's `vit` kwargs from a timm ViT state dict.

  Width, depth, MLP size, patch size, class count, layer scale, `norm_pre`,
  DeiT's distillation token (`dist_token` -> `dist_token=True`) and pooling
  come from the weights: `attn_pool.*` -> "map", a `cls_token` -> "tok",
  else "gap" (`pool_type` overrides). Not stored, so passed in:
  the number of heads (`num_heads`, or `variant` such as "Ti/16", whose
  sizes are cross-checked), `gelu` ("erf": timm's default; "quick" for its
  `*_clip_quickgelu_*` models) and `norm_eps` (None: 1e-5 with `norm_pre`,
  as every timm CLIP model, else timm's default 1e-6).

  Raises:
    ValueError: for layouts this project's ViT cannot compute exactly:
      `fc_norm` (LayerNorm after pooling), register tokens, QK norm,
      average pooling next to a class token, ...
  """
  sd = state_dict
  refuse(sd, ("fc_norm.",), where, "timm's fc_norm normalises after "
         "pooling; here encoder_norm is applied to the tokens before it "
         "(timm models with fc_norm=False map)")
  refuse(sd, ("reg_token",), where, "register tokens are not supported")
  d, _, ph, pw = require(sd, "patch_embed.proj.weight", where,
                         "timm ViT").shape
  fc1 = sd.get("blocks.0.mlp.fc1.weight")
  norm_pre = "norm_pre.weight" in sd
  cfg = {"width": int(d), "depth": depth(sd, "blocks."),
         "mlp_dim": int(d) * 4 if fc1 is None else int(fc1.shape[0]),
         "num_heads": _timm_heads(d, num_heads, variant, where),
         "patch_size": (int(ph), int(pw)), "posemb": "learn"}
  if variant:
    want = vit.decode_variant(variant)
    diff = {k: (v, cfg[k]) for k, v in want.items()
            if k in cfg and tuple(np.atleast_1d(v)) != tuple(
                np.atleast_1d(cfg[k]))}
    if diff:
      raise ValueError(f"{where}: variant {variant!r} does not match the "
                       f"weights ((variant, weights): {diff}).")
  cfg["pool_type"] = _timm_pool(sd, pool_type, where)
  cfg["num_classes"] = int(sd["head.weight"].shape[0]) if (
      "head.weight" in sd) else None
  if "blocks.0.ls1.gamma" in sd:
    cfg["layerscale"] = 1e-5  # Init value only; the weights are loaded.
  if norm_pre:
    cfg["norm_pre"] = True
  if "dist_token" in sd:  # DeiT distilled (timm VisionTransformerDistilled).
    if cfg["pool_type"] != "tok":
      raise ValueError(f"{where}: a dist_token needs pool_type 'tok' (a "
                       f"cls_token), got {cfg['pool_type']!r}.")
    cfg["dist_token"] = True
  cfg["gelu"] = check_gelu(gelu)
  if norm_eps is None:
    norm_eps = 1e-5 if norm_pre else 1e-6
  cfg["norm_eps"] = float(norm_eps)
  return cfg


def _timm_expected(sd, cfg, num_pos_prefix):
  d, mlp = cfg["width"], cfg["mlp_dim"]
  ph, pw = cfg["patch_size"]
  c = sd["patch_embed.proj.weight"].shape[1]
  keys = {"patch_embed.proj.weight": (d, c, ph, pw),
          "patch_embed.proj.bias": (d,), "norm.weight": (d,),
          "norm.bias": (d,)}
  if "pos_embed" in sd:
    keys["pos_embed"] = (1, max(sd["pos_embed"].shape[1],
                                1 + num_pos_prefix), d)
  else:
    keys["pos_embed"] = (1, "N", d)  # Reported missing.
  if cfg["pool_type"] == "tok":
    keys["cls_token"] = (1, 1, d)
  if cfg.get("dist_token"):
    keys["dist_token"] = (1, 1, d)
  if cfg.get("norm_pre"):
    keys.update({"norm_pre.weight": (d,), "norm_pre.bias": (d,)})
  for i in range(cfg["depth"]):
    keys.update(block_keys(f"blocks.{i}.", TIMM_BLOCK, d, mlp,
                           qkv_bias="blocks.0.attn.qkv.bias" in sd,
                           layerscale="layerscale" in cfg))
  if cfg["pool_type"] == "map":
    a = "attn_pool."
    keys.update({f"{a}latent": (1, 1, d), f"{a}q.weight": (d, d),
                 f"{a}q.bias": (d,), f"{a}kv.weight": (2 * d, d),
                 f"{a}kv.bias": (2 * d,), f"{a}proj.weight": (d, d),
                 f"{a}proj.bias": (d,), f"{a}norm.weight": (d,),
                 f"{a}norm.bias": (d,), f"{a}mlp.fc1.weight": (mlp, d),
                 f"{a}mlp.fc1.bias": (mlp,), f"{a}mlp.fc2.weight": (d, mlp),
                 f"{a}mlp.fc2.bias": (d,)})
  heads = ("head", "head_dist") if cfg.get("dist_token") else ("head",)
  for head in heads if cfg["num_classes"] else ():
    keys.update({f"{head}.weight": (cfg["num_classes"], d),
                 f"{head}.bias": (cfg["num_classes"],)})
  if "patch_embed.proj.bias" not in sd:  # timm omits it with pre_norm.
    del keys["patch_embed.proj.bias"]
  return keys


def _timm_map_head(sd, num_heads):
  a = "attn_pool."
  return {
      "probe": sd[f"{a}latent"],
      "MultiHeadDotProductAttention_0": _attention(
          sd[f"{a}q.weight"], sd[f"{a}q.bias"], sd[f"{a}kv.weight"],
          sd[f"{a}kv.bias"], sd[f"{a}proj.weight"], sd[f"{a}proj.bias"],
          num_heads),
      "LayerNorm_0": ln(sd, f"{a}norm"),
      "MlpBlock_0": _mlp(sd, f"{a}mlp.fc1", f"{a}mlp.fc2"),
  }


def timm_vit_to_params(state_dict, *, num_heads=None, variant=None,
                       pool_type=None, pos_includes_cls=None,
                       where="state dict"):
  """Converts a timm `VisionTransformer` state dict to `vit` params.

  Names follow big_vision: patch_embed.proj -> embedding (OIHW -> HWIO),
  norm_pre -> norm_pre, blocks.{i} -> Transformer/encoderblock_{i} (qkv
  split into query/key/value [D, H, D/H]), norm -> Transformer/encoder_norm,
  attn_pool -> MAPHead_0, head -> head; DeiT's distilled models
  (`deit_*_distilled_*`) also dist_token -> dist, head_dist -> head_dist.
  timm adds pos_embed after prepending the class (and distillation) token
  (its first entries are their positions); here they are prepended after
  `pos_embedding`, so those entries are folded into `cls` and `dist`
  (exact). The model kwargs are `timm_vit_config(...)`.

  Args:
    state_dict: {name: torch tensor or numpy array}.
    num_heads: attention heads (not stored in the weights); or `variant`.
    variant: a ViT variant such as "Ti/16" (sizes are cross-checked).
    pool_type: override the pooling inferred from the weights.
    pos_includes_cls: whether pos_embed has a class-token entry (timm's
      `no_embed_class=False`); None: inferred from its length.
    where: the source file, for error messages.

  Returns:
    A nested dict of numpy arrays (unscanned layout).
  """
  sd = as_numpy_state_dict(state_dict, where)
  cfg = timm_vit_config(sd, num_heads=num_heads, variant=variant,
                        pool_type=pool_type, where=where)
  # Tokens before the patches: cls (pool "tok"), then DeiT's dist token.
  prefix = [("cls_token", "cls")] if cfg["pool_type"] == "tok" else []
  prefix += [("dist_token", "dist")] if cfg.get("dist_token") else []
  n = sd["pos_embed"].shape[1] if "pos_embed" in sd else 0
  pos_has_cls = n and _timm_pos_has_cls(n, len(prefix), pos_includes_cls,
                                        where)
  skip = len(prefix) if pos_has_cls else 0  # pos_embed entries of prefix
  check_keys(sd, _timm_expected(sd, cfg, skip), where, "timm ViT")
  pos = sd["pos_embed"]  # [1, (prefix +) h*w, D]
  params = {"embedding": patch_embedding(sd["patch_embed.proj.weight"],
                                         sd.get("patch_embed.proj.bias")),
            "pos_embedding": pos[:, skip:]}
  for i, (key, name) in enumerate(prefix):
    tok = sd[key]
    params[name] = (tok + pos[:, i:i + 1]).astype(tok.dtype) if skip else tok
  if cfg.get("norm_pre"):
    params["norm_pre"] = ln(sd, "norm_pre")
  params["Transformer"] = encoder(sd, "blocks.", TIMM_BLOCK,
                                  cfg["num_heads"], cfg["depth"], "norm")
  if cfg["pool_type"] == "map":
    params["MAPHead_0"] = _timm_map_head(sd, cfg["num_heads"])
  if cfg["num_classes"]:
    params["head"] = dense(sd["head.weight"], sd["head.bias"])
    if cfg.get("dist_token"):
      params["head_dist"] = dense(sd["head_dist.weight"], sd["head_dist.bias"])
  return params
