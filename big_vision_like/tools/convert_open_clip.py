"""open_clip CLIP / SigLIP state dicts -> `two_towers` params.

Image tower (`img`, a `vit`): open_clip's own `VisionTransformer` (conv1 ->
embedding with zero bias, class_embedding + positional_embedding[0] -> cls,
positional_embedding[1:] -> pos_embedding, ln_pre -> norm_pre, resblocks ->
Transformer/encoderblock_{i}, ln_post -> Transformer/encoder_norm, proj ->
head with zero bias; pooling "tok") or a timm trunk (`visual.trunk.*`, e.g.
SigLIP; see `convert_torch.timm_vit_to_params`; `visual.head.proj` -> head).
Text tower (`txt`, a `text_transformer`): token_embedding -> Embed_0,
positional_embedding -> pos_embedding, resblocks -> Encoder_0/encoderblock_{i},
ln_final -> Encoder_0/encoder_norm, text_projection -> head (zero bias when
it has none). logit_scale -> t, logit_bias -> b.

What the weights do not store becomes model kwargs the caller chooses:
heads (default width / 64, open_clip's head width), whether the text tower
is causal (open_clip's default; `causal=True`), its pooling (open_clip's
"argmax" = the EOT token, the largest id of the CLIP tokenizer -> "last"
with `pad_id`, the last non-padding token), the GELU flavour (open_clip's
`nn.GELU()` = "erf"; OpenAI-pretrained weights and "-quickgelu" models need
"quick"; SigLIP2 text towers use "tanh") and the LayerNorm eps (open_clip's
default 1e-5; its SigLIP text towers 1e-6; a timm trunk follows timm).
"""

import numpy as np

from big_vision_like.tools import convert_torch as ct


def _heads(width, num_heads, where, tower):
  """num_heads, else width / 64 (open_clip's default head width)."""
  if num_heads:
    return ct.divides(width, int(num_heads), where)
  if width % 64:
    raise ValueError(f"{where}: {tower} width {width} is not a multiple of "
                     "open_clip's default head width 64; pass the number of "
                     f"{tower} heads.")
  return width // 64


def _blocks(sd, p, d):
  """(depth, mlp_dim, {key: shape}) of open_clip resblocks under `p`."""
  n = ct.depth(sd, p)
  fc = sd.get(f"{p}0.mlp.c_fc.weight")
  mlp = 4 * d if fc is None else int(fc.shape[0])
  keys = {}
  for i in range(n):
    keys.update(ct.block_keys(f"{p}{i}.", ct.CLIP_BLOCK, d, mlp,
                              qkv_bias=True,
                              layerscale=f"{p}0.ls_1.gamma" in sd))
  return n, mlp, keys


def _proj(sd, name, d):
  """({key: shape}, out_dim, head params or None) of a projection.

  A bare parameter `name` [D, E] is `x @ proj` (zero bias here); an
  `nn.Linear` `name.weight` [E, D] (and optional bias) a Dense layer.
  """
  if name in sd:
    w = sd[name]
    e = int(w.shape[1])
    return {name: (d, e)}, e, {"kernel": w,
                               "bias": np.zeros(w.shape[1:], w.dtype)}
  if f"{name}.weight" in sd:
    w = sd[f"{name}.weight"]
    e = int(w.shape[0])
    keys = {f"{name}.weight": (e, d)}
    if f"{name}.bias" in sd:
      keys[f"{name}.bias"] = (e,)
    return keys, e, ct.dense(w, sd.get(f"{name}.bias"))
  return {}, None, None


def _visual(sd, num_heads, gelu, norm_eps, where):
  """open_clip `VisionTransformer` -> ({key: shape}, vit kwargs, params)."""
  ct.refuse(sd, ("visual.attn_pool",), where, "attentional pooling (CoCa)")
  w = sd["visual.conv1.weight"]  # [D, C, p, p], no bias.
  d = int(w.shape[0])
  n, mlp, keys = _blocks(sd, "visual.transformer.resblocks.", d)
  pos = sd.get("visual.positional_embedding")  # [1 + h*w, D]
  keys.update({"visual.conv1.weight": tuple(w.shape),
               "visual.class_embedding": (d,),
               "visual.positional_embedding": (
                   "N" if pos is None else pos.shape[0], d),
               "visual.ln_post.weight": (d,), "visual.ln_post.bias": (d,)})
  norm_pre = "visual.ln_pre.weight" in sd
  if norm_pre:
    keys.update({"visual.ln_pre.weight": (d,), "visual.ln_pre.bias": (d,)})
  proj_keys, out_dim, head = _proj(sd, "visual.proj", d)
  keys.update(proj_keys)
  kw = {"width": d, "depth": n, "mlp_dim": mlp,
        "num_heads": _heads(d, num_heads, where, "image"),
        "patch_size": tuple(int(s) for s in w.shape[2:]), "pool_type": "tok",
        "posemb": "learn"}
  if "visual.transformer.resblocks.0.ls_1.gamma" in sd:
    kw["layerscale"] = 1e-5  # Init value only; the weights are loaded.
  if norm_pre:
    kw["norm_pre"] = True
  kw.update(gelu=gelu, norm_eps=float(1e-5 if norm_eps is None else norm_eps))

  def params():  # After check_keys.
    p = {"embedding": ct.patch_embedding(w),
         "pos_embedding": pos[None, 1:],
         # The class token's position is folded into `cls` (exact).
         "cls": (sd["visual.class_embedding"] + pos[0])[None, None]}
    if norm_pre:
      p["norm_pre"] = ct.ln(sd, "visual.ln_pre")
    p["Transformer"] = ct.encoder(sd, "visual.transformer.resblocks.",
                                  ct.CLIP_BLOCK, kw["num_heads"], n,
                                  "visual.ln_post")
    if head is not None:
      p["head"] = head
    return p
  return keys, kw, out_dim, params


def _trunk(sd, num_heads, variant, gelu, norm_eps, where):
  """open_clip `TimmModel` (visual.trunk + visual.head) -> as `_visual`."""
  trunk = {k[len("visual.trunk."):]: v for k, v in sd.items()
           if k.startswith("visual.trunk.")}
  where_trunk = f"{where} (visual.trunk)"
  kw = ct.timm_vit_config(trunk, num_heads=num_heads, variant=variant,
                          gelu=gelu, norm_eps=norm_eps, where=where_trunk)
  if kw.pop("num_classes"):
    raise ValueError(f"{where}: visual.trunk has a classifier head.")
  keys = {f"visual.trunk.{k}": tuple(v.shape) for k, v in trunk.items()}
  proj_keys, out_dim, head = _proj(sd, "visual.head.proj", kw["width"])
  keys.update(proj_keys)

  def params():
    p = ct.timm_vit_to_params(trunk, num_heads=kw["num_heads"],
                              where=where_trunk)
    if head is not None:
      p["head"] = head
    return p
  return keys, kw, out_dim, params


def _text_pooling(causal, pool, pad_id):
  """This project's text pooling for open_clip's, and what differs."""
  if pool == "argmax":
    notes = [(f"text: open_clip pools at the argmax (EOT) token; here "
             f"pool_type='last' with pad_id={pad_id} pools at the last token "
             "that is not padding, the same one for the CLIP tokenizer (pad "
             "0, EOT the largest id). Tokens equal to pad_id are also masked "
             "as attention keys, which a causal EOT token never sees anyway "
             "(CLIP's id 0, '!' inside a punctuation run, is the one "
             "exception).")]
    if not causal:
      notes.append("text: not exact: open_clip's bidirectional text tower "
                   "attends to padding, this project masks it (pad_id).")
    return {"pool_type": "last", "pad_id": pad_id}, notes
  if pool in ("last", "first"):
    return {"pool_type": pool}, []
  raise ValueError(f"open_clip text pool_type {pool!r} has no exact "
                   "counterpart here (mapped: argmax, last, first).")


def _text(sd, num_heads, where):
  """open_clip text tower -> ({key: shape}, kwargs, out_dim, params)."""
  p = "text." if "text.token_embedding.weight" in sd else ""  # CustomTextCLIP
  ct.refuse(sd, (f"{p}cls_emb",), where, "a text class token (CoCa)")
  ct.refuse(sd, (f"{p}transformer.resblocks.0.ls_1",), where,
            "layer scale in the text tower")
  emb = ct.require(sd, f"{p}token_embedding.weight", where, "open_clip CLIP")
  v, d = (int(s) for s in emb.shape)
  n, mlp, keys = _blocks(sd, f"{p}transformer.resblocks.", d)
  pos = sd.get(f"{p}positional_embedding")
  keys.update({f"{p}token_embedding.weight": (v, d),
               f"{p}positional_embedding": (
                   "L" if pos is None else pos.shape[0], d),
               f"{p}ln_final.weight": (d,), f"{p}ln_final.bias": (d,)})
  proj_keys, out_dim, head = _proj(sd, f"{p}text_projection", d)
  keys.update(proj_keys)
  kw = {"width": d, "depth": n, "mlp_dim": mlp,
        "num_heads": _heads(d, num_heads, where, "text"), "vocab_size": v}

  def params():
    out = {"Embed_0": {"embedding": emb}, "pos_embedding": pos[None],
           "Encoder_0": ct.encoder(sd, f"{p}transformer.resblocks.",
                                   ct.CLIP_BLOCK, kw["num_heads"], n,
                                   f"{p}ln_final")}
    if head is not None:
      out["head"] = head
    return out
  return keys, kw, out_dim, params


def open_clip_to_params(state_dict, *, num_heads=None, text_num_heads=None,
                        variant=None, text_causal=True, text_pool="argmax",
                        text_pad_id=0, gelu="erf", text_gelu=None,
                        norm_eps=None, text_norm_eps=None,
                        where="state dict"):
  """Converts an open_clip ViT CLIP/SigLIP state dict to `two_towers` params.

  Args:
    state_dict: {name: torch tensor or numpy array} of an open_clip model.
    num_heads: image heads (default: width / 64, open_clip's head width;
      required for a timm trunk unless `variant` is given).
    text_num_heads: text heads (default: width / 64).
    variant: image ViT variant of a timm trunk, e.g. "B/16".
    text_causal: whether the text tower is causal (open_clip's default;
      False for SigLIP's, `no_causal_mask=True`).
    text_pool: open_clip's text pool_type ("argmax", "last" or "first").
    text_pad_id: the tokenizer's pad id, for "argmax" pooling (CLIP's: 0).
    gelu: "erf" (open_clip's and timm's nn.GELU), "quick" (OpenAI weights,
      "-quickgelu" models) or "tanh".
    text_gelu: the text tower's; None: `gelu`.
    norm_eps: image LayerNorm eps; None: open_clip's 1e-5 (a timm trunk:
      see `convert_torch.timm_vit_config`).
    text_norm_eps: text LayerNorm eps; None: 1e-6 when the model has a
      `logit_bias` (open_clip's SigLIP configs set it), else 1e-5.
    where: the source file, for error messages.

  Returns:
    (params, model_kwargs, notes): numpy params (unscanned), the
    `two_towers` kwargs they belong to, and what the weights do not say.
  """
  sd = ct.as_numpy_state_dict(state_dict, where)
  ct.check_gelu(gelu)
  text_gelu = ct.check_gelu(text_gelu or gelu)
  if "visual.trunk.patch_embed.proj.weight" in sd:
    keys, img_kw, img_dim, img_params = _trunk(sd, num_heads, variant, gelu,
                                               norm_eps, where)
  elif "visual.conv1.weight" in sd:
    keys, img_kw, img_dim, img_params = _visual(sd, num_heads, gelu,
                                                norm_eps, where)
  else:
    raise ValueError(f"{where}: no open_clip ViT image tower (neither "
                     "visual.conv1.weight nor visual.trunk.*).")
  txt_keys, txt_kw, txt_dim, txt_params = _text(sd, text_num_heads, where)
  keys.update(txt_keys)
  keys["logit_scale"] = ()
  if "logit_bias" in sd:
    keys["logit_bias"] = ()
  ct.check_keys(sd, keys, where, "open_clip ViT CLIP")
  pool_kw, notes = _text_pooling(text_causal, text_pool, text_pad_id)
  if text_norm_eps is None:
    text_norm_eps = 1e-6 if "logit_bias" in sd else 1e-5
  txt_kw.update(causal=bool(text_causal), **pool_kw, gelu=text_gelu,
                norm_eps=float(text_norm_eps))
  params = {"img": img_params(), "txt": txt_params(),
            "t": np.asarray(sd["logit_scale"], np.float32).reshape(1)}
  kw = {"image": img_kw, "text": txt_kw, "out_dim": (img_dim, txt_dim),
        "temperature_init": float(np.exp(params["t"][0])), "bias_init": None}
  if "logit_bias" in sd:
    params["b"] = np.asarray(sd["logit_bias"], np.float32).reshape(1)
    kw["bias_init"] = float(params["b"][0])
  length = params["txt"]["pos_embedding"].shape[1]
  notes += [
      (f"gelu: image {gelu!r}, text {text_gelu!r}; norm_eps: image "
      f"{img_kw['norm_eps']}, text {txt_kw['norm_eps']}; text causal: "
      f"{bool(text_causal)}. None of these is stored in the weights: "
      "open_clip's defaults are erf GELU, eps 1e-5 and a causal text tower. "
      "OpenAI-pretrained weights and '-quickgelu' models need --gelu quick; "
      "SigLIP configs have a bidirectional text tower (--no-text_causal "
      "--text_pool last), SigLIP2 text towers tanh GELU (--text_gelu tanh)."),
      f"text: feed token sequences of length {length}."]
  return params, kw, notes
