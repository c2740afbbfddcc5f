"""Tests of checkpoint conversion: npz <-> orbax, layouts, timm, open_clip.

The torch tests compare this project's models on converted params with
tiny randomly initialised timm / open_clip models (nothing is downloaded).
Importing timm or open_clip after TensorFlow (which conftest imports) can
crash the process (triton, pulled in by torchvision / torch._dynamo,
segfaults when loaded after TF), so one subprocess without TF runs this file
as a script to build the torch models and write their state dicts, inputs
and outputs (`_make_refs`); the tests convert those state dicts in-process.
The torch models keep their defaults (exact erf GELU; open_clip: ln_pre,
causal text, LayerNorm eps 1e-5) unless a case says otherwise, and the
model kwargs the converters return must reproduce them.
"""

import importlib.util
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import checkpoint, tools
from big_vision_like.models import common, two_towers, vit
from big_vision_like.tools import convert, convert_open_clip, convert_torch
from tests import torch_refs

TOL = 2e-5  # timm logits (of order one; measured <= 6e-6).
CLIP_TOL = 1e-5  # open_clip embeddings (of order one; measured <= 3e-6).
HAVE = {m: importlib.util.find_spec(m) is not None
        for m in ("torch", "timm", "open_clip", "safetensors")}
needs_timm = pytest.mark.skipif(not (HAVE["torch"] and HAVE["timm"]),
                                reason="needs torch and timm")
needs_open_clip = pytest.mark.skipif(
    not (HAVE["torch"] and HAVE["open_clip"]), reason="needs open_clip")

# timm `vit_tiny_patch16_224` kwargs of each case (patch 8, 32x32 images).
TIMM_CASES = {
    "tok": {},
    "gap": {"global_pool": "avg", "class_token": False, "fc_norm": False},
    "map": {"global_pool": "map", "class_token": False},
    "ls": {"init_values": 0.1, "no_embed_class": True, "qkv_bias": False},
    # timm's CLIP ports: norm_pre, LayerNorm eps 1e-5 (set in _make_refs).
    "pre": {"pre_norm": True, "act_layer": "quick_gelu"},
    "mu": {"embed_dim": 32, "depth": 1, "num_heads": 2},  # Variant "mu/8".
    # Layouts that must be refused (state dicts only).
    "fc_norm": {"global_pool": "avg", "class_token": False},
    "avg_cls": {"global_pool": "avg", "fc_norm": False},
    "reg": {"reg_tokens": 2},
}
_VISION = {"layers": 2, "width": 64, "head_width": 32, "patch_size": 8,
           "image_size": 32, "mlp_ratio": 2}
_TEXT = {"context_length": 8, "vocab_size": 50, "width": 64, "heads": 2,
         "layers": 2}
# EOT = 49, the largest id; padding 0; one text without padding.
TOKENS = np.array([[3, 7, 9, 49, 0, 0, 0, 0], [5, 6, 12, 13, 20, 49, 0, 0],
                   [4, 8, 15, 16, 23, 42, 2, 49]])
# SigLIP-like towers as open_clip's SigLIP2 configs: eps 1e-6, tanh GELU.
_SIGLIP = {"norm_kwargs": {"eps": 1e-6}, "act_kwargs": {"approximate": "tanh"}}
# open_clip.CLIP (vision_cfg, text_cfg, kwargs) overrides of each case.
CLIP_CASES = {
    "default": ({}, {}, {}),  # ln_pre, causal text, erf GELU, eps 1e-5.
    "quickgelu": ({}, {}, {"quick_gelu": True}),  # OpenAI CLIP's models.
    "siglip_style": (_SIGLIP, {"no_causal_mask": True, "pool_type": "last",
                               "proj_bias": True, **_SIGLIP},
                     {"init_logit_bias": -10.0}),
    "trunk": ({"timm_model_name": "test_vit", "timm_pool": "",
               "timm_proj": "linear", "image_size": 160}, {}, {}),
}


# ---------------------------------------------------- torch side (subprocess)


def _perturbed(model, seed):
  """Random non-trivial values everywhere (timm zero-inits heads, biases)."""
  import torch  # pylint: disable=C0415
  torch.manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model.eval()


def _images(b=2, size=32):
  return np.random.RandomState(0).randn(b, 3, size, size).astype(np.float32)


def _save_case(out, name, model, **arrays):
  sd = {f"sd/{k}": v.detach().numpy() for k, v in model.state_dict().items()}
  np.savez(os.path.join(out, f"{name}.npz"), **sd, **arrays)


def _make_timm_refs(out):
  import functools  # pylint: disable=C0415

  import timm  # pylint: disable=C0415
  import torch  # pylint: disable=C0415
  from safetensors.torch import save_file  # pylint: disable=C0415
  x = _images()
  for name, kw in TIMM_CASES.items():
    if name == "pre":
      kw = {**kw, "norm_layer": functools.partial(torch.nn.LayerNorm,
                                                  eps=1e-5)}
    model = _perturbed(timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=10,
        img_size=32, patch_size=8, **{"depth": 2, **kw}), seed=0)
    with torch.no_grad():
      refs = {"x": x, "logits": model(torch.from_numpy(x)).numpy()}
      if name == "mu":  # The same weights with tanh-approximate GELU.
        for block in model.blocks:
          block.mlp.act = torch.nn.GELU(approximate="tanh")
        refs["logits_tanh"] = model(torch.from_numpy(x)).numpy()
    _save_case(out, f"timm_{name}", model, **refs)
    if name == "tok":
      sd = model.state_dict()
      save_file({k: v.contiguous() for k, v in sd.items()},
                os.path.join(out, "tok.safetensors"))
      torch.save({"epoch": 3, "state_dict": {f"module.{k}": v
                                             for k, v in sd.items()}},
                 os.path.join(out, "tok.pth"))


def _make_open_clip_refs(out):
  import open_clip  # pylint: disable=C0415
  import torch  # pylint: disable=C0415
  for name, (vision, text, kw) in CLIP_CASES.items():
    model = _perturbed(open_clip.CLIP(
        embed_dim=16, vision_cfg={**_VISION, **vision},
        text_cfg={**_TEXT, **text}, **kw), seed=1)
    x = _images(b=1, size=160) if name == "trunk" else _images()
    with torch.no_grad():
      refs = {"x": x, "zimg": model.encode_image(torch.from_numpy(x)).numpy(),
              "ztxt": model.encode_text(torch.from_numpy(TOKENS)).numpy()}
    _save_case(out, f"clip_{name}", model, **refs)
    if name == "default":
      torch.save(model.state_dict(), os.path.join(out, "clip.bin"))


def _make_refs(out):
  """Builds the torch models and writes their state dicts and outputs."""
  if HAVE["timm"]:
    _make_timm_refs(out)
  if HAVE["open_clip"]:
    _make_open_clip_refs(out)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
  """Directory of the torch references (built once, in a subprocess)."""
  if not HAVE["torch"] or not (HAVE["timm"] or HAVE["open_clip"]):
    pytest.skip("needs torch and timm or open_clip")
  return torch_refs.build(__file__, str(tmp_path_factory.mktemp("torch")),
                          "torch references")


def _case(refs_dir, name):
  """(state dict, other arrays) of a case written by `_make_refs`."""
  return torch_refs.load_case(refs_dir, name)


# ---------------------------------------------------------------- helpers


def _tiny_vit(**kw):
  return vit.Model(num_classes=5, width=16, depth=2, num_heads=2, mlp_dim=32,
                   patch_size=4, **kw)


@pytest.fixture(scope="module")
def tiny_params():
  """Initialised params of `_tiny_vit()` (numpy)."""
  params = jax.jit(_tiny_vit().init)(jax.random.PRNGKey(0),
                                     jnp.zeros((1, 8, 8, 3)))["params"]
  return jax.tree.map(np.asarray, params)


def _assert_trees_equal(a, b):
  assert convert.flatten(a).keys() == convert.flatten(b).keys()
  for (name, x), y in zip(convert.flatten(a).items(),
                          convert.flatten(b).values()):
    assert np.asarray(x).dtype == np.asarray(y).dtype, name
    np.testing.assert_array_equal(np.asarray(x, np.float32),
                                  np.asarray(y, np.float32), err_msg=name)


def _vit_logits(params, cfg, x, **kw):
  apply = jax.jit(vit.Model(**{**cfg, **kw}).apply)
  out, _ = apply({"params": params}, x.transpose(0, 2, 3, 1))
  return np.asarray(out)


def _our_embeddings(params, kw, x):
  apply = jax.jit(two_towers.Model(**kw).apply)
  _, _, aux = apply({"params": params}, x.transpose(0, 2, 3, 1), TOKENS)
  return np.asarray(aux["img/logits"]), np.asarray(aux["txt/logits"]), aux


# ---------------------------------------------------------------- npz/orbax


def test_npz_orbax_npz_round_trip(tmp_path):
  params = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
                  "bias": np.array([1.5, -2.25], jnp.bfloat16)},
            "t": np.array([2.3], np.float32), "n": np.arange(3, dtype=np.int32)}
  npz, ckpt, back = (str(tmp_path / "in.npz"), str(tmp_path / "ckpt"),
                     str(tmp_path / "back.npz"))
  convert.save_npz(params, npz)
  with np.load(npz) as raw:  # big_vision's convention for bfloat16.
    assert raw["a/bias"].dtype == np.dtype("V2")
  convert.main(["--from", "npz", "--to", "orbax", npz, ckpt])
  convert.main(["--from", "orbax", "--to", "npz", ckpt, back])
  for path in (npz, ckpt, back):
    _assert_trees_equal(checkpoint.load_params(path), params)
  with np.load(npz) as first, np.load(back) as second:
    assert sorted(first.files) == sorted(second.files)
    for k in first.files:
      assert first[k].tobytes() == second[k].tobytes(), k


def test_orbax_output_loads_like_model_init(tmp_path, tiny_params):
  init = tiny_params
  convert.save_orbax(init, str(tmp_path / "ckpt"))
  # What the trainer does with `config.model_init = <dir>`.
  _assert_trees_equal(common.load_into(init, str(tmp_path / "ckpt"),
                                       model="vit"), init)
  _assert_trees_equal(checkpoint.load_params(f"{tmp_path}/ckpt:Transformer"),
                      init["Transformer"])


def test_existing_output_needs_overwrite(tmp_path):
  params = {"w": np.ones(2, np.float32)}
  convert.save_npz(params, str(tmp_path / "a.npz"))
  with pytest.raises(FileExistsError, match="a.npz"):
    convert.save_npz(params, str(tmp_path / "a.npz"))
  convert.save_npz(params, str(tmp_path / "a.npz"), overwrite=True)
  with pytest.raises(ValueError, match="must end in .npz"):
    convert.save_npz(params, str(tmp_path / "a.bin"))
  convert.save_orbax(params, str(tmp_path / "c"))
  with pytest.raises(FileExistsError, match="overwrite"):
    convert.save_orbax(params, str(tmp_path / "c"))
  convert.save_orbax({"w": np.zeros(2, np.float32)}, str(tmp_path / "c"),
                     overwrite=True)
  np.testing.assert_array_equal(
      checkpoint.load_params(str(tmp_path / "c"))["w"], [0, 0])


def test_layout_scanned_unscanned_round_trip(tmp_path, tiny_params):
  unscanned = tiny_params
  scanned = convert.relayout(unscanned, scanned=True)
  want = jax.eval_shape(_tiny_vit(scan=True).init, jax.random.PRNGKey(0),
                        jnp.zeros((1, 8, 8, 3)))["params"]
  assert (jax.tree.map(np.shape, scanned)
          == jax.tree.map(lambda s: s.shape, want))
  _assert_trees_equal(convert.relayout(scanned, scanned=False), unscanned)
  # The CLI, on a two-tower-like tree (ViT + text encoder).
  tree = {"img": unscanned, "txt": {"Encoder_0": unscanned["Transformer"]}}
  convert.save_npz(tree, str(tmp_path / "u.npz"))
  convert.main(["--from", "npz", "--to", "npz", "--layout", "scanned",
                str(tmp_path / "u.npz"), str(tmp_path / "s.npz")])
  out = checkpoint.load_params(str(tmp_path / "s.npz"))
  assert set(out["img"]["Transformer"]) == {"encoderblock", "encoder_norm"}
  assert set(out["txt"]["Encoder_0"]) == {"encoderblock", "encoder_norm"}
  _assert_trees_equal(convert.relayout(out, scanned=False), tree)


def test_cli_errors_name_the_file(tmp_path, capsys):
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    convert.main(["--from", "npz", "--to", "orbax",
                  str(tmp_path / "nope.npz"), str(tmp_path / "o")])
  with pytest.raises(FileNotFoundError, match="nope.safetensors"):
    convert.main(["--from", "timm_vit", "--to", "npz",
                  str(tmp_path / "nope.safetensors"), str(tmp_path / "o.npz")])
  with pytest.raises(SystemExit):  # A torch-only flag on npz input.
    convert.main(["--from", "npz", "--to", "orbax", "a.npz", "o",
                  "--no-text_causal"])
  assert "--text_causal does not apply to --from npz" in capsys.readouterr(
      ).err


# ---------------------------------------------------------------- timm ViT


def _timm_diff(refs, name, gelu="erf", ref_key="logits", **kw):
  """(max |ours - timm|, vit kwargs) of case `name`."""
  sd, ref = _case(refs, f"timm_{name}")
  params = convert_torch.timm_vit_to_params(sd, **kw)
  cfg = convert_torch.timm_vit_config(sd, gelu=gelu, **kw)
  assert np.abs(ref[ref_key]).max() > 0.5  # Logits of order one.
  return np.abs(_vit_logits(params, cfg, ref["x"]) - ref[ref_key]).max(), cfg


@needs_timm
@pytest.mark.parametrize("name,pool,gelu", [
    ("tok", "tok", "erf"), ("gap", "gap", "erf"), ("map", "map", "erf"),
    ("ls", "tok", "erf"), ("pre", "tok", "quick")])
def test_timm_vit_matches_timm_logits(refs, name, pool, gelu):
  diff, cfg = _timm_diff(refs, name, gelu=gelu, num_heads=3)
  assert cfg["pool_type"] == pool and cfg["gelu"] == gelu
  assert (cfg["width"], cfg["depth"], cfg["mlp_dim"], cfg["patch_size"]) == (
      192, 2, 768, (8, 8))
  # norm_pre: timm's CLIP layout, whose LayerNorms use eps 1e-5.
  assert cfg.get("norm_pre", False) == (name == "pre")
  assert cfg["norm_eps"] == (1e-5 if name == "pre" else 1e-6)
  assert diff < TOL, diff


@needs_timm
def test_timm_vit_scanned_layout_gives_the_same_logits(refs):
  sd, ref = _case(refs, "timm_pre")
  params = convert.relayout(
      convert_torch.timm_vit_to_params(sd, num_heads=3), True)
  cfg = convert_torch.timm_vit_config(sd, num_heads=3, gelu="quick")
  diff = np.abs(_vit_logits(params, cfg, ref["x"], scan=True)
                - ref["logits"]).max()
  assert diff < TOL, diff


@needs_timm
def test_timm_variant_and_gelu_flavours(refs):
  diff, cfg = _timm_diff(refs, "mu", variant="mu/8")
  assert cfg["num_heads"] == 2 and diff < TOL, diff
  diff, _ = _timm_diff(refs, "mu", gelu="tanh", ref_key="logits_tanh",
                       variant="mu/8")
  assert diff < TOL, diff
  # The flavour matters: erf weights run with tanh GELU differ (~2e-4).
  wrong, _ = _timm_diff(refs, "mu", gelu="tanh", variant="mu/8")
  assert wrong > 5 * TOL, wrong
  with pytest.raises(ValueError, match="Unknown gelu 'relu'"):
    _timm_diff(refs, "mu", gelu="relu", variant="mu/8")


@needs_timm
def test_timm_cli_reads_safetensors_and_wrapped_torch_files(refs, tmp_path,
                                                             capsys):
  sd, _ = _case(refs, "timm_tok")
  want = convert_torch.timm_vit_to_params(sd, num_heads=3)
  for src in ("tok.safetensors", "tok.pth"):
    out = str(tmp_path / f"{src}.npz")
    convert.main(["--from", "timm_vit", "--to", "npz",
                  os.path.join(refs, src), out, "--num_heads", "3"])
    _assert_trees_equal(checkpoint.load_params(out), want)
  printed = capsys.readouterr().out
  assert '"pool_type": "tok"' in printed and '"gelu": "erf"' in printed
  assert "note: gelu='erf', norm_eps=1e-06: not stored" in printed


@needs_timm
def test_timm_vit_bf16_weights_stay_bf16(refs):
  import torch  # pylint: disable=C0415
  sd, _ = _case(refs, "timm_tok")
  sd = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in sd.items()}
  params = convert_torch.timm_vit_to_params(sd, num_heads=3)
  dense = params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]
  assert dense["kernel"].dtype == jnp.bfloat16
  assert params["cls"].dtype == jnp.bfloat16


@needs_timm
def test_timm_vit_unrepresentable_layouts_are_refused(refs):
  to_params = convert_torch.timm_vit_to_params
  with pytest.raises(ValueError, match="fc_norm"):  # timm's avg default.
    to_params(_case(refs, "timm_fc_norm")[0], num_heads=3)
  with pytest.raises(ValueError, match="cannot be computed exactly"):
    to_params(_case(refs, "timm_avg_cls")[0], num_heads=3, pool_type="avg")
  with pytest.raises(ValueError, match="register tokens"):
    to_params(_case(refs, "timm_reg")[0], num_heads=3)


@needs_timm
def test_timm_vit_bad_state_dicts_name_file_and_keys(refs):
  to_params = convert_torch.timm_vit_to_params
  sd, _ = _case(refs, "timm_tok")
  with pytest.raises(ValueError, match="num_heads"):
    to_params(sd)
  with pytest.raises(ValueError, match="does not match the weights"):
    to_params(sd, variant="S/8")
  bad = dict(sd)
  del bad["blocks.1.norm2.bias"]
  bad["blocks.0.attn.q_norm.weight"] = np.ones(64, np.float32)
  bad["blocks.1.mlp.fc2.weight"] = np.ones((192, 7), np.float32)
  with pytest.raises(ValueError) as e:
    to_params(bad, num_heads=3, where="m.safetensors")
  msg = str(e.value)
  assert msg.startswith("m.safetensors:")
  assert "missing (1): blocks.1.norm2.bias" in msg
  assert "unexpected (1): blocks.0.attn.q_norm.weight" in msg
  assert "blocks.1.mlp.fc2.weight: got (192, 7), expected (192, 768)" in msg
  with pytest.raises(ValueError, match="timm ViT state dicts have patch_emb"):
    to_params({"head.weight": np.ones((2, 2))}, num_heads=1)


# ---------------------------------------------------------------- open_clip


def _clip_diffs(refs, name, **kw):
  """(max |zimg diff|, max |ztxt diff|, params, kwargs) of case `name`."""
  sd, ref = _case(refs, f"clip_{name}")
  params, model_kw, _ = convert_open_clip.open_clip_to_params(
      sd, num_heads=2, text_num_heads=2, **kw)
  zimg, ztxt, aux = _our_embeddings(params, model_kw, ref["x"])
  assert np.abs(ref["ztxt"]).max() > 0.1  # Embeddings of order one.
  np.testing.assert_allclose(aux["t"], np.exp(sd["logit_scale"]), rtol=1e-6)
  return (np.abs(zimg - ref["zimg"]).max(), np.abs(ztxt - ref["ztxt"]).max(),
          params, model_kw)


@needs_open_clip
def test_open_clip_default_model_matches_both_towers(refs):
  # open_clip's defaults: ln_pre, causal text pooled at EOT, erf, eps 1e-5.
  dimg, dtxt, params, kw = _clip_diffs(refs, "default")
  assert dimg < CLIP_TOL and dtxt < CLIP_TOL, (dimg, dtxt)
  assert kw["image"]["norm_pre"] and "norm_pre" in params["img"]
  assert {k: kw["image"][k] for k in ("gelu", "norm_eps", "pool_type")} == {
      "gelu": "erf", "norm_eps": 1e-5, "pool_type": "tok"}
  assert {k: kw["text"][k] for k in ("causal", "pool_type", "pad_id", "gelu",
                                     "norm_eps")} == {
      "causal": True, "pool_type": "last", "pad_id": 0, "gelu": "erf",
      "norm_eps": 1e-5}
  assert kw["bias_init"] is None and "b" not in params
  np.testing.assert_array_equal(params["txt"]["head"]["bias"], 0.0)
  np.testing.assert_array_equal(params["img"]["embedding"]["bias"], 0.0)
  # What the flags say matters: a bidirectional text tower is another
  # model (~0.7), flax's default eps 1e-6 is measurably off (~1e-4 .. 1e-3).
  _, dtxt, _, _ = _clip_diffs(refs, "default", text_causal=False)
  assert dtxt > 0.1, dtxt
  dimg, dtxt, _, _ = _clip_diffs(refs, "default", norm_eps=1e-6,
                                 text_norm_eps=1e-6)
  assert dimg > 5 * CLIP_TOL and dtxt > 5 * CLIP_TOL, (dimg, dtxt)


@needs_open_clip
def test_open_clip_quickgelu(refs):
  dimg, dtxt, _, kw = _clip_diffs(refs, "quickgelu", gelu="quick")
  assert kw["text"]["gelu"] == "quick"
  assert dimg < CLIP_TOL and dtxt < CLIP_TOL, (dimg, dtxt)
  dimg, _, _, _ = _clip_diffs(refs, "quickgelu")  # The erf default.
  assert dimg > 1e-3, dimg


@needs_open_clip
def test_open_clip_siglip_style_matches_both_towers(refs):
  sd, _ = _case(refs, "clip_siglip_style")
  dimg, dtxt, _, kw = _clip_diffs(
      refs, "siglip_style", text_causal=False, text_pool="last",
      gelu="tanh", norm_eps=1e-6)
  assert dimg < CLIP_TOL and dtxt < CLIP_TOL, (dimg, dtxt)
  assert kw["text"]["pool_type"] == "last" and "pad_id" not in kw["text"]
  assert not kw["text"]["causal"] and kw["text"]["norm_eps"] == 1e-6
  assert kw["bias_init"] == pytest.approx(float(sd["logit_bias"]))


@needs_open_clip
def test_open_clip_timm_trunk(refs):
  dimg, dtxt, _, kw = _clip_diffs(refs, "trunk")
  assert kw["image"]["pool_type"] == "tok" and kw["out_dim"] == (16, 16)
  assert kw["image"]["norm_eps"] == 1e-6  # timm's, not open_clip's.
  assert dimg < CLIP_TOL and dtxt < CLIP_TOL, (dimg, dtxt)


@needs_open_clip
def test_open_clip_bad_state_dicts_are_refused(refs):
  to_params = convert_open_clip.open_clip_to_params
  sd, _ = _case(refs, "clip_default")
  with pytest.raises(ValueError, match="text pool_type 'eos'"):
    to_params(sd, num_heads=2, text_num_heads=2, text_pool="eos")
  bad = {**sd, "visual.attn_pool.attn.in_proj_weight": np.ones((3, 3))}
  with pytest.raises(ValueError, match="clip.bin: .*attentional pooling"):
    to_params(bad, num_heads=2, text_num_heads=2, where="clip.bin")
  del sd["ln_final.bias"]
  with pytest.raises(ValueError, match="(?s)clip.bin.*missing.*ln_final.bias"):
    to_params(sd, num_heads=2, text_num_heads=2, where="clip.bin")
  with pytest.raises(ValueError, match="clip.bin: no open_clip ViT image"):
    to_params({"logit_scale": np.zeros(())}, where="clip.bin")


@needs_open_clip
def test_open_clip_cli_end_to_end(refs, tmp_path, capsys):
  # The printed model kwargs and the written params give open_clip's output.
  _, ref = _case(refs, "clip_default")
  convert.main(["--from", "open_clip", "--to", "orbax",
                os.path.join(refs, "clip.bin"), str(tmp_path / "ckpt"),
                "--num_heads", "2", "--text_num_heads", "2"])
  out = capsys.readouterr().out
  line, = (x for x in out.splitlines() if x.startswith("model kwargs: "))
  kw = json.loads(line[len("model kwargs: "):])
  params = checkpoint.load_params(str(tmp_path / "ckpt"))
  zimg, ztxt, _ = _our_embeddings(params, kw, ref["x"])
  assert np.abs(zimg - ref["zimg"]).max() < CLIP_TOL
  assert np.abs(ztxt - ref["ztxt"]).max() < CLIP_TOL
  assert "note: gelu: image 'erf', text 'erf'" in out
  assert "--gelu quick" in out


# ---------------------------------------------------------------- NFNet


@pytest.mark.skipif(not HAVE["torch"], reason="needs torch")
def test_timm_nfnet_dispatch(tmp_path, monkeypatch):
  import torch  # pylint: disable=C0415
  src = str(tmp_path / "nf.pth")
  torch.save({"stem.conv.weight": torch.ones(2, 3, 1, 1)}, src)
  seen = {}

  class FakeConvertNfnet:  # Stands in for the module another helper writes.
    @staticmethod
    def timm_nfnet_to_params(sd, variant=None):
      seen.update(keys=sorted(sd), variant=variant)
      return {"stem": {"kernel": np.zeros((1, 1, 3, 2), np.float32)}}

  monkeypatch.setitem(sys.modules, "big_vision_like.tools.convert_nfnet",
                      FakeConvertNfnet)
  monkeypatch.setattr(tools, "convert_nfnet", FakeConvertNfnet, raising=False)
  convert.main(["--from", "timm_nfnet", "--to", "npz", src,
                str(tmp_path / "nf.npz"), "--variant", "F0"])
  assert seen == {"keys": ["stem.conv.weight"], "variant": "F0"}
  kernel = checkpoint.load_params(str(tmp_path / "nf.npz"))["stem"]["kernel"]
  assert kernel.shape == (1, 1, 3, 2)


if __name__ == "__main__":  # The `refs` fixture's subprocess.
  _make_refs(sys.argv[1])
