"""timm MLP-Mixer state dicts (`mixer_*`) -> `models/mlp_mixer.py` params.

timm's `MlpMixer` with its plain `MixerBlock`s maps one-to-one onto
big_vision's names:

  stem.proj.{weight,bias}           -> stem/{kernel,bias} (OIHW -> HWIO)
  blocks.{i}.norm1.*                -> MixerBlock_{i}/LayerNorm_0/*
  blocks.{i}.mlp_tokens.fc{1,2}.*   -> MixerBlock_{i}/token_mixing/Dense_{0,1}/*
  blocks.{i}.norm2.*                -> MixerBlock_{i}/LayerNorm_1/*
  blocks.{i}.mlp_channels.fc{1,2}.* -> MixerBlock_{i}/channel_mixing/Dense_{0,1}
  norm.*                            -> pre_head_layer_norm/*
  head.*                            -> head/* (absent without a head)

Linear weights [O, I] become Dense kernels [I, O]; LayerNorm weight/bias
become scale/bias. What the weights do not store is a model kwarg:
timm's activation is exact (erf) GELU, big_vision's the tanh
approximation, so the kwargs returned say `gelu="erf"` (both use
LayerNorm eps 1e-6). The token MLP's size fixes the number of patches, so
the converted model takes images of one size (224 for `mixer_*_224`).
timm's other models on the same class (ResMLP, gMLP, gMixer, a stem norm)
are refused with the keys that give them away.
"""

import math

from big_vision_like.models import mlp_mixer
from big_vision_like.tools import convert_torch as ct

WHAT = "timm MLP-Mixer"


def _refuse_other_models(sd, where):
  ct.refuse(sd, ("stem.norm.",), where,
            "a normalised stem (timm stem_norm=True)")
  ct.refuse(sd, ("blocks.0.linear_tokens.", "blocks.0.norm1.alpha",
                 "blocks.0.ls1"), where,
            "ResMLP blocks (affine norms, linear token mixing, layer scale)")
  ct.refuse(sd, ("blocks.0.mlp_channels.gate.",), where,
            "gMLP blocks (spatial gating units)")


def timm_mixer_model_kwargs(state_dict, *, variant=None, gelu="erf",
                            where="state dict"):
  """`mlp_mixer.Model` kwargs read off a timm Mixer state dict.

  Args:
    state_dict: {name: array or torch tensor} of a timm `mixer_*` model.
    variant: optional "B/16"-style variant the weights must have.
    gelu: the activation to compute with ("erf": timm's; see vit.GELUS).
    where: the file, for error messages.

  Returns:
    A dict of patch_size, num_blocks, hidden_dim, tokens_mlp_dim,
    channels_mlp_dim, gelu and num_classes (None without a head), for
    `mlp_mixer.Model(variant=None, **kwargs)`.
  """
  sd = ct.numpy_state_dict(state_dict, where)
  _refuse_other_models(sd, where)
  stem = ct.require(sd, "stem.proj.weight", where, WHAT)  # [D, C, ph, pw]
  tok = ct.require(sd, "blocks.0.mlp_tokens.fc1.weight", where, WHAT)
  chan = ct.require(sd, "blocks.0.mlp_channels.fc1.weight", where, WHAT)
  head = sd.get("head.weight")
  kw = {
      "patch_size": tuple(int(s) for s in stem.shape[2:]),
      "num_blocks": ct.depth(sd, "blocks."),
      "hidden_dim": int(stem.shape[0]),
      "tokens_mlp_dim": int(tok.shape[0]),
      "channels_mlp_dim": int(chan.shape[0]),
      "gelu": ct.check_gelu(gelu),
      "num_classes": None if head is None else int(head.shape[0]),
  }
  if variant is not None:
    ct.check_variant(kw, mlp_mixer.decode_variant(variant), where,
                     f"Mixer-{variant}")
  return kw


def _expected(kw, tokens):
  """{timm key: shape} of the layout `kw` describes."""
  d, t, c = kw["hidden_dim"], kw["tokens_mlp_dim"], kw["channels_mlp_dim"]
  ph, pw = kw["patch_size"]
  keys = {"stem.proj.weight": (d, 3, ph, pw), "stem.proj.bias": (d,),
          "norm.weight": (d,), "norm.bias": (d,)}
  for i in range(kw["num_blocks"]):
    p = f"blocks.{i}."
    for name, n_in, n_hidden in (("mlp_tokens", tokens, t),
                                 ("mlp_channels", d, c)):
      keys.update({f"{p}{name}.fc1.weight": (n_hidden, n_in),
                   f"{p}{name}.fc1.bias": (n_hidden,),
                   f"{p}{name}.fc2.weight": (n_in, n_hidden),
                   f"{p}{name}.fc2.bias": (n_in,)})
    for norm in ("norm1", "norm2"):
      keys.update({f"{p}{norm}.weight": (d,), f"{p}{norm}.bias": (d,)})
  if kw["num_classes"] is not None:
    keys.update({"head.weight": (kw["num_classes"], d),
                 "head.bias": (kw["num_classes"],)})
  return keys


def _mlp(sd, p):
  return {"Dense_0": ct.dense(sd[f"{p}.fc1.weight"], sd[f"{p}.fc1.bias"]),
          "Dense_1": ct.dense(sd[f"{p}.fc2.weight"], sd[f"{p}.fc2.bias"])}


def timm_mixer_to_params(state_dict, *, variant=None, gelu="erf",
                         where="state dict"):
  """Converts a timm `mixer_*` state dict to `mlp_mixer` params.

  Args:
    state_dict: {name: numpy array or torch tensor} (bfloat16 kept).
    variant: optional variant ("B/16") the weights must be.
    gelu: activation of the returned kwargs; "erf" computes what timm does.
    where: the file, for error messages.

  Returns:
    (params, kwargs): a nested dict of numpy arrays with big_vision's names
    and the `mlp_mixer.Model(variant=None, **kwargs)` arguments that give
    timm's outputs (`timm_mixer_model_kwargs`).

  Raises:
    ValueError: naming every missing, unexpected or mis-shaped key in one
      message, the parts of other timm models that cannot be represented,
      or how the weights differ from `variant`.
  """
  sd = ct.numpy_state_dict(state_dict, where)
  kw = timm_mixer_model_kwargs(sd, variant=variant, gelu=gelu, where=where)
  tokens = int(sd["blocks.0.mlp_tokens.fc1.weight"].shape[1])
  ct.check_keys(sd, _expected(kw, tokens), where, WHAT)
  params = {"stem": ct.patch_embedding(sd["stem.proj.weight"],
                                       sd["stem.proj.bias"])}
  for i in range(kw["num_blocks"]):
    p = f"blocks.{i}"
    params[f"MixerBlock_{i}"] = {
        "LayerNorm_0": ct.ln(sd, f"{p}.norm1"),
        "token_mixing": _mlp(sd, f"{p}.mlp_tokens"),
        "LayerNorm_1": ct.ln(sd, f"{p}.norm2"),
        "channel_mixing": _mlp(sd, f"{p}.mlp_channels"),
    }
  params["pre_head_layer_norm"] = ct.ln(sd, "norm")
  if kw["num_classes"] is not None:
    params["head"] = ct.dense(sd["head.weight"], sd["head.bias"])
  return params, kw


def image_size(kw, tokens):
  """The square image side the converted token MLP expects, or None."""
  side = math.isqrt(tokens)
  if side * side != tokens or kw["patch_size"][0] != kw["patch_size"][1]:
    return None
  return side * kw["patch_size"][0]


def notes(params, kw):
  """Lines for the convert CLI: what the weights fix and what they do not."""
  tokens = params["MixerBlock_0"]["token_mixing"]["Dense_0"]["kernel"].shape[0]
  side = image_size(kw, tokens)
  size = f"{tokens} patches of {kw['patch_size']}"
  if side:
    size = f"{side}x{side} images ({size})"
  gelu = (f"gelu={kw['gelu']!r}: not stored in the weights; timm's Mixer "
          "uses exact erf GELU (big_vision's own Mixer weights: tanh).")
  return [gelu, f"the token MLP fixes the input to {size}."]

