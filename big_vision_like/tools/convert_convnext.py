"""timm ConvNeXt state dicts (`convnext_*`, `convnextv2_*`) -> `convnext`.

timm's `ConvNeXt` with the patch stem and LayerNorm head maps one-to-one
onto `models/convnext.py`:

  stem.0.{weight,bias}                     -> stem/conv/{kernel,bias}
  stem.1.{weight,bias}                     -> stem/norm/{scale,bias}
  stages.{i}.downsample.0.*                -> stage{i}/downsample/norm/*
  stages.{i}.downsample.1.*                -> stage{i}/downsample/conv/*
  stages.{i}.blocks.{j}.conv_dw.*          -> stage{i}/block{j}/dwconv/*
  stages.{i}.blocks.{j}.norm.*             -> stage{i}/block{j}/norm/*
  stages.{i}.blocks.{j}.mlp.fc{1,2}.*      -> stage{i}/block{j}/fc{1,2}/*
  stages.{i}.blocks.{j}.mlp.grn.{weight,bias}
                                           -> stage{i}/block{j}/grn/{gamma,beta}
  stages.{i}.blocks.{j}.gamma              -> stage{i}/block{j}/layerscale
  head.norm.*, head.fc.*                   -> head_norm/*, head/*

Conv weights OIHW -> HWIO (the depthwise [C, 1, k, k] -> [k, k, 1, C]);
Linear weights [O, I] (or 1x1 conv weights [O, I, 1, 1], timm's
`conv_mlp=True` models such as atto..nano) -> Dense kernels [I, O].
Not stored in the weights, so model kwargs: exact (erf) GELU and LayerNorm
eps 1e-6, timm's defaults. timm's other options (overlapping stems,
`head_norm_first`, an MLP head, RMS/simple norms, bias-free convs) cannot be
represented and are refused with the keys that show them.
"""

from big_vision_like.models import convnext
from big_vision_like.tools import convert_torch as ct

WHAT = "timm ConvNeXt"


def _depths(sd):
  depths = []
  while any(k.startswith(f"stages.{len(depths)}.") for k in sd):
    depths.append(ct.depth(sd, f"stages.{len(depths)}.blocks."))
  return tuple(depths)


def _refuse_other_layouts(sd, where):
  ct.refuse(sd, ("norm_pre.",), where,
            "norm before pooling (timm head_norm_first=True)")
  ct.refuse(sd, ("head.pre_logits.",), where,
            "an MLP head (timm head_hidden_size)")
  ct.refuse(sd, ("stem.2.", "stem.3."), where,
            "an overlapping stem (timm stem_type='overlap*')")
  ct.refuse(sd, ("stages.0.downsample.",), where,
            "a downsampling first stage (stem stride < 4 or in_chs != dims[0])")


def timm_convnext_model_kwargs(state_dict, *, variant=None, gelu="erf",
                               norm_eps=1e-6, where="state dict"):
  """`convnext.Model` kwargs read off a timm ConvNeXt(-V2) state dict.

  Args:
    state_dict: {name: array or torch tensor}.
    variant: optional variant ("T", "V2-T", ...) the weights must be.
    gelu: activation ("erf": timm's; see vit.GELUS).
    norm_eps: LayerNorm eps (timm's default 1e-6).
    where: the file, for error messages.

  Returns:
    A dict of depths, dims, patch_size, kernel_size, mlp_ratio, grn,
    layerscale, norm_eps, gelu and num_classes (None without a head), for
    `convnext.Model(variant=None, **kwargs)`.
  """
  sd = ct.numpy_state_dict(state_dict, where)
  _refuse_other_layouts(sd, where)
  stem = ct.require(sd, "stem.0.weight", where, WHAT)  # [C0, 3, p, p]
  depths = _depths(sd)
  if not depths or 0 in depths:
    raise ValueError(f"{where}: {WHAT} state dicts have stages.{{i}}.blocks."
                     f"{{j}}.*; this one has blocks per stage {depths}.")
  dw = [ct.require(sd, f"stages.{i}.blocks.0.conv_dw.weight", where, WHAT)
        for i in range(len(depths))]  # [C_i, 1, k, k]
  fc1 = ct.require(sd, "stages.0.blocks.0.mlp.fc1.weight", where, WHAT)
  head = sd.get("head.fc.weight")
  kw = {
      "depths": depths,
      "dims": tuple(int(w.shape[0]) for w in dw),
      "patch_size": int(stem.shape[2]),
      "kernel_size": int(dw[0].shape[2]),
      "mlp_ratio": fc1.shape[0] / dw[0].shape[0],
      "grn": "stages.0.blocks.0.mlp.grn.weight" in sd,
      "layerscale": (convnext.LAYERSCALE_INIT
                     if "stages.0.blocks.0.gamma" in sd else None),
      "norm_eps": float(norm_eps),
      "gelu": ct.check_gelu(gelu),
      "num_classes": None if head is None else int(head.shape[0]),
  }
  if variant is not None:
    ct.check_variant(kw, convnext.decode_variant(variant), where,
                     f"ConvNeXt {variant}")
  return kw


def _expected(kw, fc_4d):
  """{timm key: shape} of the layout `kw` describes."""
  dims, p, k = kw["dims"], kw["patch_size"], kw["kernel_size"]
  keys = {"stem.0.weight": (dims[0], 3, p, p), "stem.0.bias": (dims[0],),
          "stem.1.weight": (dims[0],), "stem.1.bias": (dims[0],),
          "head.norm.weight": (dims[-1],), "head.norm.bias": (dims[-1],)}
  if kw["num_classes"] is not None:
    keys.update({"head.fc.weight": (kw["num_classes"], dims[-1]),
                 "head.fc.bias": (kw["num_classes"],)})
  one = (1, 1) if fc_4d else ()
  for i, (depth, c) in enumerate(zip(kw["depths"], dims)):
    if i:
      keys.update({
          f"stages.{i}.downsample.0.weight": (dims[i - 1],),
          f"stages.{i}.downsample.0.bias": (dims[i - 1],),
          f"stages.{i}.downsample.1.weight": (c, dims[i - 1], 2, 2),
          f"stages.{i}.downsample.1.bias": (c,)})
    hidden = int(kw["mlp_ratio"] * c)
    for j in range(depth):
      b = f"stages.{i}.blocks.{j}."
      keys.update({
          f"{b}conv_dw.weight": (c, 1, k, k), f"{b}conv_dw.bias": (c,),
          f"{b}norm.weight": (c,), f"{b}norm.bias": (c,),
          f"{b}mlp.fc1.weight": (hidden, c, *one),
          f"{b}mlp.fc1.bias": (hidden,),
          f"{b}mlp.fc2.weight": (c, hidden, *one), f"{b}mlp.fc2.bias": (c,)})
      if kw["grn"]:
        keys.update({f"{b}mlp.grn.weight": (hidden,),
                     f"{b}mlp.grn.bias": (hidden,)})
      if kw["layerscale"] is not None:
        keys[f"{b}gamma"] = (c,)
  return keys


def _conv(sd, p):
  return {"kernel": sd[f"{p}.weight"].transpose(2, 3, 1, 0).copy(),
          "bias": sd[f"{p}.bias"]}


def _dense(sd, p):
  w = sd[f"{p}.weight"]
  return ct.dense(w.reshape(w.shape[:2]), sd[f"{p}.bias"])


def _block(sd, b, kw):
  blk = {"dwconv": _conv(sd, f"{b}conv_dw"), "norm": ct.ln(sd, f"{b}norm"),
         "fc1": _dense(sd, f"{b}mlp.fc1"), "fc2": _dense(sd, f"{b}mlp.fc2")}
  if kw["grn"]:
    blk["grn"] = {"gamma": sd[f"{b}mlp.grn.weight"],
                  "beta": sd[f"{b}mlp.grn.bias"]}
  if kw["layerscale"] is not None:
    blk["layerscale"] = sd[f"{b}gamma"]
  return blk


def timm_convnext_to_params(state_dict, *, variant=None, gelu="erf",
                            norm_eps=1e-6, where="state dict"):
  """Converts a timm `convnext_*` / `convnextv2_*` state dict.

  Args:
    state_dict: {name: numpy array or torch tensor} (bfloat16 kept).
    variant: optional variant ("T", "V2-T", ...) the weights must be.
    gelu: activation of the returned kwargs; "erf" computes what timm does.
    norm_eps: LayerNorm eps of the returned kwargs (timm's 1e-6).
    where: the file, for error messages.

  Returns:
    (params, kwargs): `convnext` params (nested dict of numpy arrays) and
    the `convnext.Model(variant=None, **kwargs)` arguments that compute what
    the timm model computes.

  Raises:
    ValueError: naming every missing, unexpected or mis-shaped key in one
      message, timm layouts that cannot be represented, or how the weights
      differ from `variant`.
  """
  sd = ct.numpy_state_dict(state_dict, where)
  kw = timm_convnext_model_kwargs(sd, variant=variant, gelu=gelu,
                                  norm_eps=norm_eps, where=where)
  fc_4d = sd["stages.0.blocks.0.mlp.fc1.weight"].ndim == 4
  ct.check_keys(sd, _expected(kw, fc_4d), where, WHAT)
  params = {"stem": {"conv": _conv(sd, "stem.0"), "norm": ct.ln(sd, "stem.1")}}
  for i, depth in enumerate(kw["depths"]):
    stage = {}
    if i:
      stage["downsample"] = {"norm": ct.ln(sd, f"stages.{i}.downsample.0"),
                             "conv": _conv(sd, f"stages.{i}.downsample.1")}
    for j in range(depth):
      stage[f"block{j}"] = _block(sd, f"stages.{i}.blocks.{j}.", kw)
    params[f"stage{i}"] = stage
  params["head_norm"] = ct.ln(sd, "head.norm")
  if kw["num_classes"] is not None:
    params["head"] = ct.dense(sd["head.fc.weight"], sd["head.fc.bias"])
  return params, kw
