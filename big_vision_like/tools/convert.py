r"""Converts checkpoints between formats and from timm / open_clip weights.

  python -m big_vision_like.tools.convert --from npz --to orbax IN.npz OUT_DIR
  python -m big_vision_like.tools.convert --from orbax --to npz WORKDIR OUT.npz
  python -m big_vision_like.tools.convert --from npz --to npz --layout scanned \
      IN.npz OUT.npz
  python -m big_vision_like.tools.convert --from timm_vit --to npz \
      model.safetensors OUT.npz --variant B/16   # or --num_heads 12
  python -m big_vision_like.tools.convert --from timm_vit --to npz \
      deit_small_distilled_patch16_224.safetensors OUT.npz --variant S/16
      # DeiT (deit_*, deit3_*; distilled: dist_token=True, head_dist)
  python -m big_vision_like.tools.convert --from open_clip --to orbax \
      open_clip_model.bin OUT_DIR   # OpenAI-pretrained weights: --gelu quick
  python -m big_vision_like.tools.convert --from open_clip --to npz \
      siglip.bin OUT.npz --variant B/16 --no-text_causal --text_pool last
  python -m big_vision_like.tools.convert --from timm_nfnet --to npz \
      nfnet.safetensors OUT.npz [--variant F0]
  python -m big_vision_like.tools.convert --from timm_mixer --to npz \
      mixer_b16_224.safetensors OUT.npz [--variant B/16]  # -> mlp_mixer
  python -m big_vision_like.tools.convert --from timm_convnext --to npz \
      convnext_tiny.safetensors OUT.npz [--variant T]  # or V2-T -> convnext
  python -m big_vision_like.tools.convert --from timm_resnetv2 --to npz \
      resnetv2_50x1_bit.safetensors OUT.npz   # BiT weights -> bit_paper

`npz` is big_vision's flat file (`/`-joined names, bfloat16 as 2-byte void);
`orbax` is a step directory like the trainer's (`OUT/state` holding
`{"params": ...}`, `OUT/meta`); both are read with `checkpoint.load_params`
(so IN may be a workdir, a `:subtree` suffix works) and both load through
`config.model_init`. `--layout` re-lays every encoder out scanned
(`encoderblock` with a leading depth axis) or unscanned (`encoderblock_{i}`).

The torch formats (`convert_torch`, `convert_open_clip`; torch is imported
only by them) read a `.safetensors` file or a torch state dict
(`.pt/.pth/.bin`, optionally wrapped in `state_dict`/`model`, `module.`
prefixes stripped) and print the model kwargs (`vit` / `two_towers`) that
compute what timm / open_clip compute. What cannot be represented exactly
raises an error naming the keys. What the weights do not store (heads,
GELU flavour, LayerNorm eps, causal text) comes from flags whose defaults
are timm's / open_clip's, and is printed as notes.
"""

import argparse
import io
import json
import sys

import jax
import numpy as np

from big_vision_like import checkpoint, checksums, fs, tree_util
from big_vision_like.models import vit
from big_vision_like.tools import convert_open_clip, convert_torch

FORMATS_IN = ("npz", "orbax", "timm_vit", "open_clip", "timm_nfnet")
FORMATS_IN += ("timm_mixer", "timm_convnext")  # -> mlp_mixer, convnext.
FORMATS_IN += ("timm_resnetv2",)  # timm BiT ResNetV2 -> bit_paper.
FORMATS_OUT = ("npz", "orbax")

# ---------------------------------------------------------------- npz/orbax


def flatten(params):
  """A nested dict of arrays -> {"a/b/c": array}."""
  return tree_util.flatten(params)


def _npz_value(x):
  x = np.asarray(x)
  if x.dtype == jax.numpy.bfloat16:  # big_vision stores bfloat16 as void.
    return x.view(np.dtype("V2"))
  return x


def save_npz(params, path, *, overwrite=False):
  """Writes `params` as a big_vision `.npz` (keys `/`-joined), atomically."""
  if not path.endswith(".npz"):
    raise ValueError(f"save_npz: {path} must end in .npz (load_params tells "
                     "the formats apart by the suffix).")
  if fs.exists(path) and not overwrite:
    raise FileExistsError(f"save_npz: {path} exists (pass overwrite=True / "
                          "--overwrite).")
  flat = {k: _npz_value(v) for k, v in flatten(params).items()}
  buf = io.BytesIO()
  np.savez(buf, **flat)
  fs.write_atomic(path, buf.getvalue())
  return path


def save_orbax(params, directory, *, meta=None, overwrite=False):
  """Writes `params` as a step directory `load_params(directory)` reads.

  The layout is the trainer's step directory: item `state` = {"params": ...}
  and item `meta` (JSON), so `config.model_init = directory` works too.
  """
  import orbax.checkpoint as ocp  # pylint: disable=C0415
  directory = fs.abspath(directory)
  if fs.exists(directory) and not overwrite:
    raise FileExistsError(f"save_orbax: {directory} exists (pass "
                          "overwrite=True / --overwrite).")
  state = {"params": jax.tree.map(np.asarray, params)}
  meta = dict(meta or {"step": 0})
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckpt:
    ckpt.save(directory, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave(meta),
        checksums=ocp.args.JsonSave(
            checksums.make_record(state, meta))), force=overwrite)
  return directory


def relayout(params, scanned):
  """Re-lays every encoder of `params` out scanned or unscanned.

  Any dict holding `encoderblock_{i}` entries (ViT `Transformer`, text
  `Encoder_0`) is stacked into `encoderblock` (scanned=True); any dict
  holding `encoderblock` is split (scanned=False). Other entries are kept.
  """
  if not isinstance(params, dict):
    return params
  if scanned and "encoderblock_0" in params:
    params = jax.tree.map(np.asarray, vit.unscanned_to_scan(params))
  elif not scanned and "encoderblock" in params:
    params = vit.scan_to_unscanned(params)
  return {k: relayout(v, scanned) for k, v in params.items()}


# ---------------------------------------------------------------- CLI


def _from_timm_nfnet(src, variant):
  """(params, model kwargs or None) via `convert_nfnet` (imported lazily)."""
  try:
    from big_vision_like.tools import convert_nfnet  # pylint: disable=C0415
  except ModuleNotFoundError as e:
    if e.name != "big_vision_like.tools.convert_nfnet":
      raise
    raise ModuleNotFoundError(
        "--from timm_nfnet needs big_vision_like/tools/convert_nfnet.py "
        "(timm_nfnet_to_params), which is not installed.") from e
  sd = convert_torch.load_torch_state_dict(src)
  try:
    params = convert_nfnet.timm_nfnet_to_params(sd, variant=variant)
    kw_fn = getattr(convert_nfnet, "timm_nfnet_model_kwargs", None)
    return params, (kw_fn(sd) if kw_fn else None)
  except ValueError as e:  # Name the file.
    raise ValueError(f"{src}: {e}") from e


def _from_timm_resnetv2(src):
  """(params, bit_paper kwargs, notes) via `convert_bit` (lazily imported)."""
  from big_vision_like.tools import convert_bit  # pylint: disable=C0415
  sd = convert_torch.load_torch_state_dict(src)
  try:
    params = convert_bit.timm_resnetv2_to_params(sd)
    kw = convert_bit.timm_resnetv2_model_kwargs(sd)
  except ValueError as e:  # Name the file.
    raise ValueError(f"{src}: {e}") from e
  notes = [("model_name bit_paper. Kernels scaled by 0.1: timm's weight "
            "standardisation eps 1e-8 as bit_paper's 1e-10 (exact); "
            "root_pool_pad='zero': timm's and the original BiT stem pool "
            "(big_vision's default pads with -inf).")]
  return params, kw, notes


def _from_timm_mixer(src, variant=None, gelu="erf"):
  """(params, mlp_mixer kwargs, notes) via `convert_mixer`."""
  from big_vision_like.tools import convert_mixer  # pylint: disable=C0415
  sd = convert_torch.load_torch_state_dict(src)
  params, kw = convert_mixer.timm_mixer_to_params(
      sd, variant=variant, gelu=gelu, where=src)
  note = "model_name mlp_mixer (variant=None with these kwargs)."
  return params, kw, [note, *convert_mixer.notes(params, kw)]


def _from_timm_convnext(src, variant=None, gelu="erf", norm_eps=1e-6):
  """(params, convnext kwargs, notes) via `convert_convnext`."""
  from big_vision_like.tools import convert_convnext  # pylint: disable=C0415
  sd = convert_torch.load_torch_state_dict(src)
  params, kw = convert_convnext.timm_convnext_to_params(
      sd, variant=variant, gelu=gelu, norm_eps=norm_eps, where=src)
  note = ("model_name convnext (variant=None with these kwargs); "
          f"gelu={kw['gelu']!r}, norm_eps={kw['norm_eps']}: not stored in "
          "the weights (timm: exact erf GELU, eps 1e-6).")
  return params, kw, [note]


def _from_timm_vit(src, *, num_heads, variant, pool_type, pos_includes_cls,
                   gelu, norm_eps):
  ct = convert_torch
  sd = ct.load_torch_state_dict(src)
  params = ct.timm_vit_to_params(sd, num_heads=num_heads, variant=variant,
                                 pool_type=pool_type,
                                 pos_includes_cls=pos_includes_cls, where=src)
  kw = ct.timm_vit_config(sd, num_heads=num_heads, variant=variant,
                          pool_type=pool_type, gelu=gelu, norm_eps=norm_eps,
                          where=src)
  notes = [(f"gelu={kw['gelu']!r}, norm_eps={kw['norm_eps']}: not stored in "
            "the weights. timm's ViTs use exact erf GELU and eps 1e-6, its "
            "CLIP ports (norm_pre) eps 1e-5 and, for OpenAI-pretrained "
            "'*_clip_quickgelu_*' weights, QuickGELU (--gelu quick).")]
  return params, kw, notes


def convert(src, fmt_in, *, layout="keep", **kw):
  """Reads `src` in `fmt_in`; returns (params, model_kwargs or None, notes).

  Args:
    src: the input file or directory.
    fmt_in: one of `FORMATS_IN`.
    layout: "keep", "scanned" or "unscanned".
    **kw: for "timm_vit": num_heads, variant, pool_type, pos_includes_cls,
      gelu (default "erf"), norm_eps (see `convert_torch.timm_vit_config`);
      for "open_clip": the keyword arguments of
      `convert_open_clip.open_clip_to_params`; for "timm_nfnet": variant;
      for "timm_mixer": variant, gelu; for "timm_convnext": variant, gelu,
      norm_eps.
      None values are dropped (the converters' defaults apply).
  """
  kw = {k: v for k, v in kw.items() if v is not None}
  model_kw, notes = None, []
  check_input_format(src, fmt_in)
  if fmt_in in ("npz", "orbax"):
    if kw:
      raise ValueError(f"--from {fmt_in} takes no conversion options, got "
                       f"{sorted(kw)}.")
    params = checkpoint.load_params(src)
  elif fmt_in == "timm_vit":
    args = {"num_heads": None, "variant": None, "pool_type": None,
            "pos_includes_cls": None, "gelu": "erf", "norm_eps": None}
    params, model_kw, notes = _from_timm_vit(src, **{**args, **kw})
  elif fmt_in == "open_clip":
    params, model_kw, notes = convert_open_clip.open_clip_to_params(
        convert_torch.load_torch_state_dict(src), where=src, **kw)
  elif fmt_in == "timm_nfnet":
    params, model_kw = _from_timm_nfnet(src, kw.get("variant"))
  elif fmt_in == "timm_mixer":
    params, model_kw, notes = _from_timm_mixer(src, **kw)
  elif fmt_in == "timm_convnext":
    params, model_kw, notes = _from_timm_convnext(src, **kw)
  elif fmt_in == "timm_resnetv2":
    params, model_kw, notes = _from_timm_resnetv2(src)
  else:
    raise ValueError(f"Unknown input format {fmt_in!r}; known: {FORMATS_IN}.")
  if layout != "keep":
    params = relayout(params, scanned=layout == "scanned")
  return params, model_kw, notes


def _strip_subtree(src):
  """`src` without a `:a/b` subtree suffix (as `load_params` reads it)."""
  if ":" in fs.basename(src):
    return src.rsplit(":", 1)[0]
  return src


def check_input_format(src, fmt_in):
  """Raises a ValueError when `src` is plainly not in format `fmt_in`.

  `load_params` tells `.npz` files from orbax directories by themselves, so
  without this check `--from npz` would read an orbax directory (and the
  other way around) and the flag would mean nothing.
  """
  path = _strip_subtree(src) if fmt_in in ("npz", "orbax") else src
  if not fs.exists(path):
    return  # The reader names the missing file.
  is_dir, is_npz = fs.isdir(path), path.endswith(".npz")
  if fmt_in == "npz" and (is_dir or not is_npz):
    what = "a directory" if is_dir else "not a `.npz` file"
    hint = " (an orbax checkpoint? use --from orbax)" if is_dir else ""
    raise ValueError(f"--from npz: {path} is {what}{hint}.")
  if fmt_in == "orbax" and not is_dir:
    hint = " (use --from npz)" if is_npz else ""
    raise ValueError(f"--from orbax: {path} is a file, not an orbax "
                     f"checkpoint directory or workdir{hint}.")
  if fmt_in not in ("npz", "orbax") and is_dir:
    raise ValueError(f"--from {fmt_in}: {path} is a directory, not a "
                     "`.safetensors` or torch state-dict file.")


# Options of the torch formats: flag -> (formats, argparse kwargs).
_TORCH_FLAGS = {
    "num_heads": (("timm_vit", "open_clip"), {
        "type": int, "help": "(Image) attention heads; timm_vit needs this "
        "or --variant; open_clip default: width / 64."}),
    "variant": (("timm_vit", "open_clip", "timm_nfnet"), {
        "help": "ViT variant, e.g. Ti/16 (timm_vit, open_clip timm trunk), "
        "or the NFNet variant (timm_nfnet)."}),
    "pool_type": (("timm_vit",), {
        "help": "Override the pooling inferred from the weights."}),
    "pos_includes_cls": (("timm_vit",), {
        "action": argparse.BooleanOptionalAction,
        "help": "Whether pos_embed has a class-token entry (default: "
        "inferred from its length)."}),
    "gelu": (("timm_vit", "open_clip"), {
        "choices": vit.GELUS, "help": "MLP activation (not stored in the "
        "weights); default erf, timm's and open_clip's nn.GELU. "
        "OpenAI-pretrained CLIP weights ('-quickgelu' models) need quick."}),
    "norm_eps": (("timm_vit", "open_clip"), {
        "type": float, "help": "(Image) LayerNorm eps; default: timm 1e-6 "
        "(1e-5 with norm_pre), open_clip 1e-5."}),
    "text_num_heads": (("open_clip",), {
        "type": int, "help": "Text heads (default: width / 64)."}),
    "text_causal": (("open_clip",), {
        "action": argparse.BooleanOptionalAction,
        "help": "Whether the text tower is causal (default: yes, open_clip's "
        "default; SigLIP: --no-text_causal)."}),
    "text_pool": (("open_clip",), {
        "choices": ("argmax", "last", "first"),
        "help": "open_clip's text pool_type (default argmax; SigLIP: last)."}),
    "text_pad_id": (("open_clip",), {
        "type": int, "help": "Pad id of the tokenizer, for argmax pooling "
        "(default 0, the CLIP tokenizer's)."}),
    "text_gelu": (("open_clip",), {
        "choices": vit.GELUS,
        "help": "Text MLP activation (default: --gelu)."}),
    "text_norm_eps": (("open_clip",), {
        "type": float, "help": "Text LayerNorm eps (default 1e-5; 1e-6 with "
        "a logit_bias, as open_clip's SigLIP configs)."}),
}


# timm_mixer and timm_convnext take --variant ("B/16"; "T", "V2-T") and
# --gelu; timm_convnext also --norm_eps.
for _flag, _formats in (("variant", ("timm_mixer", "timm_convnext")),
                        ("gelu", ("timm_mixer", "timm_convnext")),
                        ("norm_eps", ("timm_convnext",))):
  _TORCH_FLAGS[_flag] = (_TORCH_FLAGS[_flag][0] + _formats,
                         _TORCH_FLAGS[_flag][1])


def parse_args(argv=None):
  """The command-line options (argparse: no global absl flags to clash)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--from", dest="fmt_in", required=True,
                      choices=FORMATS_IN)
  parser.add_argument("--to", dest="fmt_out", required=True,
                      choices=FORMATS_OUT)
  parser.add_argument("src", help="Input file or directory (npz/orbax: "
                      "anything load_params reads, `:subtree` too).")
  parser.add_argument("dst", help="Output `.npz` file or orbax directory.")
  parser.add_argument("--layout", default="keep",
                      choices=("keep", "scanned", "unscanned"),
                      help="Re-lay encoders out scanned or unscanned.")
  for name, (formats, kw) in _TORCH_FLAGS.items():
    kw = {**kw, "help": f"[{', '.join(formats)}] {kw['help']}"}
    parser.add_argument(f"--{name}", default=None, **kw)
  parser.add_argument("--overwrite", action="store_true",
                      help="Replace an existing output.")
  args = parser.parse_args(argv)
  for name, (formats, _) in _TORCH_FLAGS.items():
    if getattr(args, name) is not None and args.fmt_in not in formats:
      parser.error(f"--{name} does not apply to --from {args.fmt_in} "
                   f"(only to {', '.join(formats)}).")
  return args


def main(argv=None):
  """Runs the conversion; returns the output path."""
  a = parse_args(argv)
  params, kw, notes = convert(
      a.src, a.fmt_in, layout=a.layout,
      **{name: getattr(a, name) for name in _TORCH_FLAGS})
  if a.fmt_out == "npz":
    out = save_npz(params, a.dst, overwrite=a.overwrite)
  else:
    out = save_orbax(params, a.dst, overwrite=a.overwrite,
                     meta={"step": 0, "converted_from": fs.abspath(
                         a.src), "format": a.fmt_in})
  leaves = jax.tree.leaves(params)
  print(f"wrote {len(leaves)} arrays ({sum(x.size for x in leaves):,} "
        f"values) to {out}")
  if kw is not None:
    print("model kwargs: " + json.dumps(kw))
  for note in notes:
    print(f"note: {note}")
  return out


def run(argv=None):
  """`main` for the command line: a bad input exits 1 with one error line.

  Errors about the inputs (a missing or unreadable file, a wrong format, a
  missing optional package) are printed without a traceback; anything else
  keeps its traceback.
  """
  try:
    return main(argv)
  except (OSError, ValueError, KeyError, ImportError) as e:
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    sys.exit(f"convert: error: {message}")


if __name__ == "__main__":
  run()
