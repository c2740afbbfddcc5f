"""timm MLP-Mixer and ConvNeXt(-V2) -> mlp_mixer / convnext conversion.

Small randomly initialised timm models (nothing is downloaded; every
parameter perturbed so that zero-initialised heads, LayerScale and GRN
matter) give the reference logits. As in test_convert.py, timm is imported
only in a subprocess that runs this file as a script (timm imported after
TensorFlow, which conftest imports, can crash the process); the tests
convert the state dicts it writes in-process.
"""

import importlib.util
import json
import os
import sys

import jax
import numpy as np
import pytest

from big_vision_like import checkpoint
from big_vision_like.models import convnext, mlp_mixer
from big_vision_like.tools import convert, convert_convnext, convert_mixer
from tests import torch_refs

HAVE_TIMM = all(importlib.util.find_spec(m) is not None
                for m in ("torch", "timm", "safetensors"))
TOL = 1e-5  # Relative to max(1, max |logit|).
# timm MlpMixer / ConvNeXt kwargs of each case.
MIXER = dict(num_classes=7, img_size=32, patch_size=8, embed_dim=32,
             num_blocks=2)
CONVNEXT = {
    # V1: LayerScale, Linear MLP; 36 px: odd sizes after the stem (9 -> 4).
    "v1": (dict(depths=(1, 2, 1, 1), dims=(16, 24, 32, 40)), 36),
    # V2: GRN, no LayerScale, 1x1-conv MLP (timm's conv_mlp, as V2-atto).
    "v2": (dict(depths=(1, 1, 1, 1), dims=(16, 24, 32, 40), use_grn=True,
                ls_init_value=None, conv_mlp=True), 32),
}


# ---------------------------------------------------- torch side (subprocess)


def _perturbed(model, seed=0):
  import torch  # pylint: disable=C0415
  torch.manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.2 * torch.randn_like(p))
  return model.eval()


def _save(out, name, model, x, **arrays):
  import torch  # pylint: disable=C0415
  from safetensors.torch import save_file  # pylint: disable=C0415
  with torch.no_grad():
    logits = model(torch.from_numpy(x)).numpy()
  sd = model.state_dict()
  np.savez(os.path.join(out, f"{name}.npz"), x=x, logits=logits, **arrays,
           **{f"sd/{k}": v.numpy() for k, v in sd.items()})
  save_file({k: v.contiguous() for k, v in sd.items()},
            os.path.join(out, f"{name}.safetensors"))


def _make_refs(out):
  import torch  # pylint: disable=C0415
  from timm.models import convnext as timm_convnext  # pylint: disable=C0415
  from timm.models import mlp_mixer as timm_mixer  # pylint: disable=C0415
  rng = np.random.default_rng(0)
  model = _perturbed(timm_mixer.MlpMixer(**MIXER))
  x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():  # The same weights with tanh-approximate GELU.
    tanh = torch.nn.GELU(approximate="tanh")
    for block in model.blocks:
      block.mlp_tokens.act, block.mlp_channels.act = tanh, tanh
    logits_tanh = model(torch.from_numpy(x)).numpy()
    for block in model.blocks:
      block.mlp_tokens.act = block.mlp_channels.act = torch.nn.GELU()
  _save(out, "mixer", model, x, logits_tanh=logits_tanh)
  for name, (kw, res) in CONVNEXT.items():
    model = _perturbed(timm_convnext.ConvNeXt(num_classes=7, **kw))
    x = rng.standard_normal((2, 3, res, res)).astype(np.float32)
    _save(out, f"convnext_{name}", model, x)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
  """Directory of the timm references (built once, in a subprocess)."""
  if not HAVE_TIMM:
    pytest.skip("needs torch, timm and safetensors")
  return torch_refs.build(__file__,
                          str(tmp_path_factory.mktemp("mixer_convnext")))


def _case(refs_dir, name):
  """(state dict, other arrays) of a case written by `_make_refs`."""
  return torch_refs.load_case(refs_dir, name)


def _logits(model, params, x_nchw):
  out, _ = jax.jit(model.apply)({"params": params}, x_nchw.transpose(0, 2, 3, 1))
  return np.asarray(out)


def _diff(ours, theirs):
  """Max |difference|, relative to max(1, max |logit|)."""
  return float(np.abs(ours - theirs).max() / max(1.0, np.abs(theirs).max()))


# ---------------------------------------------------------------- Mixer


def test_timm_mixer_matches_timm_logits(refs):
  sd, ref = _case(refs, "mixer")
  params, kw = convert_mixer.timm_mixer_to_params(sd)
  assert kw == {"patch_size": (8, 8), "num_blocks": 2, "hidden_dim": 32,
                "tokens_mlp_dim": 16, "channels_mlp_dim": 128, "gelu": "erf",
                "num_classes": 7}
  diff = _diff(_logits(mlp_mixer.Model(variant=None, **kw), params, ref["x"]),
               ref["logits"])
  print(f"timm Mixer max |logits diff| {diff:.1e}")
  assert diff < TOL
  # The GELU flavour matters: big_vision's tanh GELU is timm's tanh model
  # (the two flavours' logits differ by ~7e-5 here).
  tanh = _logits(mlp_mixer.Model(variant=None, **{**kw, "gelu": "tanh"}),
                 params, ref["x"])
  assert _diff(tanh, ref["logits_tanh"]) < TOL
  assert _diff(tanh, ref["logits"]) > 3 * TOL


def test_timm_mixer_bad_state_dicts(refs):
  sd, _ = _case(refs, "mixer")
  bad = dict(sd)
  del bad["blocks.1.norm2.bias"]
  bad["blocks.1.mlp_channels.fc3.weight"] = np.zeros((3, 3), np.float32)
  bad["blocks.0.mlp_tokens.fc2.weight"] = np.zeros((16, 15), np.float32)
  with pytest.raises(ValueError) as e:
    convert_mixer.timm_mixer_to_params(bad, where="m.pth")
  msg = str(e.value)
  assert msg.startswith("m.pth: does not match the timm MLP-Mixer layout")
  assert "missing (1): blocks.1.norm2.bias" in msg
  assert "unexpected (1): blocks.1.mlp_channels.fc3.weight" in msg
  assert "blocks.0.mlp_tokens.fc2.weight: got (16, 15), expected (16, 16)" in msg
  with pytest.raises(ValueError, match="ResMLP"):
    convert_mixer.timm_mixer_to_params({**sd, "blocks.0.ls1": sd["norm.bias"]})
  with pytest.raises(ValueError, match=r"not Mixer-B/16.*'hidden_dim': 32"):
    convert_mixer.timm_mixer_to_params(sd, variant="B/16")
  with pytest.raises(ValueError, match="stem.proj.weight"):
    convert_mixer.timm_mixer_to_params({"head.weight": sd["head.weight"]})
  with pytest.raises(ValueError, match="Unknown gelu"):
    convert_mixer.timm_mixer_to_params(sd, gelu="relu")
  headless, kw = convert_mixer.timm_mixer_to_params(
      {k: v for k, v in sd.items() if not k.startswith("head.")})
  assert "head" not in headless and kw["num_classes"] is None


# ---------------------------------------------------------------- ConvNeXt


@pytest.mark.parametrize("case", sorted(CONVNEXT))
def test_timm_convnext_matches_timm_logits(refs, case):
  sd, ref = _case(refs, f"convnext_{case}")
  params, kw = convert_convnext.timm_convnext_to_params(sd)
  timm_kw = CONVNEXT[case][0]
  assert (kw["depths"], kw["dims"]) == (timm_kw["depths"], timm_kw["dims"])
  assert kw["grn"] == (case == "v2")
  assert (kw["layerscale"] is None) == (case == "v2")
  assert (kw["gelu"], kw["norm_eps"], kw["num_classes"]) == ("erf", 1e-6, 7)
  diff = _diff(_logits(convnext.Model(variant=None, **kw), params, ref["x"]),
               ref["logits"])
  print(f"timm ConvNeXt {case} max |logits diff| {diff:.1e}")
  assert diff < TOL


def test_timm_convnext_bad_state_dicts(refs):
  sd, _ = _case(refs, "convnext_v1")
  bad = dict(sd)
  del bad["stages.1.blocks.1.gamma"]
  bad["stages.2.blocks.0.conv_dw.weight"] = np.zeros((32, 1, 5, 5),
                                                     np.float32)
  with pytest.raises(ValueError) as e:
    convert_convnext.timm_convnext_to_params(bad, where="c.pth")
  msg = str(e.value)
  assert "missing (1): stages.1.blocks.1.gamma" in msg
  assert ("stages.2.blocks.0.conv_dw.weight: got (32, 1, 5, 5), expected "
          "(32, 1, 7, 7)") in msg
  for key, what in (("norm_pre.weight", "head_norm_first"),
                    ("head.pre_logits.fc.weight", "MLP head")):
    with pytest.raises(ValueError, match=what):
      convert_convnext.timm_convnext_to_params({**sd, key: sd["stem.1.bias"]})
  with pytest.raises(ValueError, match=r"not ConvNeXt T.*'dims': \(16"):
    convert_convnext.timm_convnext_to_params(sd, variant="T")
  with pytest.raises(ValueError, match="Unknown ConvNeXt variant 'Q'"):
    convert_convnext.timm_convnext_to_params(sd, variant="Q")


# ---------------------------------------------------------------- CLI


def _cli(refs, name, fmt, dst, capsys):
  """Runs the converter CLI on a case's safetensors; (params, kwargs)."""
  convert.main(["--from", fmt, "--to", "npz",
                os.path.join(refs, f"{name}.safetensors"), dst])
  out = capsys.readouterr().out
  assert "note: model_name" in out and "gelu='erf'" in out
  kw = json.loads(out.split("model kwargs: ")[1].splitlines()[0])
  return checkpoint.load_params(dst), kw


def test_cli_end_to_end(refs, tmp_path, capsys):
  params, kw = _cli(refs, "mixer", "timm_mixer", str(tmp_path / "m.npz"),
                    capsys)
  _, ref = _case(refs, "mixer")
  ours = _logits(mlp_mixer.Model(variant=None, **kw), params, ref["x"])
  assert _diff(ours, ref["logits"]) < TOL
  # ConvNeXt: the file holds what the (parity-tested) function returns.
  params, kw = _cli(refs, "convnext_v2", "timm_convnext",
                    str(tmp_path / "c.npz"), capsys)
  want, want_kw = convert_convnext.timm_convnext_to_params(
      _case(refs, "convnext_v2")[0])
  assert kw == json.loads(json.dumps(want_kw))
  jax.tree.map(np.testing.assert_array_equal, params, want)
  with pytest.raises(SystemExit):  # The flag is ConvNeXt's only.
    convert.parse_args(["--from", "timm_mixer", "--to", "npz", "a", "b",
                        "--norm_eps", "1e-5"])
  assert "--norm_eps does not apply to --from timm_mixer" in (
      capsys.readouterr().err)


if __name__ == "__main__":  # The `refs` fixture's subprocess.
  _make_refs(sys.argv[1])
