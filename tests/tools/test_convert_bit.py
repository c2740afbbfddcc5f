"""Tests of tools/convert_bit: timm BiT ResNetV2 -> bit_paper, logits parity.

torch never runs in the test process (timm, via torchvision/triton, can
crash when imported after TensorFlow, which conftest imports): this file,
run as a script in a subprocess, builds the timm models and writes their
state dicts, inputs and logits (`_make_refs`); the tests convert them.

- "tiny": timm's BiT ResNetV2 (the `_create_resnetv2_bit` settings:
  "fixed" stem, StdConv2d eps 1e-8) with units [1, 2, 1, 1] at half
  width, random weights everywhere, one conv kernel shrunk so its
  variance (~1e-9) is of the order of timm's eps and the eps matters;
  odd 35x35 inputs, so every padding convention shows.
- "published": the real `resnetv2_{50x1,101x3,152x4}_bit` built on the
  meta device (no memory, nothing downloaded): their key names, shapes,
  parameter counts and the settings the converter assumes.
"""

import functools
import importlib.util
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import checkpoint, tree_util
from big_vision_like.models import bit, bit_paper
from big_vision_like.tools import convert, convert_bit
from tests import torch_refs

HAVE_TIMM = all(importlib.util.find_spec(m) is not None
                for m in ("torch", "timm"))
TINY = {"layers": [1, 2, 1, 1], "width_factor": 0.5, "num_classes": 7}
SHRUNK = "stages.1.blocks.0.conv2.weight"  # Kernel variance ~1e-9.
PUBLISHED = {"R50x1": "resnetv2_50x1_bit", "R101x3": "resnetv2_101x3_bit",
             "R152x4": "resnetv2_152x4_bit"}
# timm's model cards (ImageNet-1k heads), millions of parameters.
PUBLISHED_PARAMS_M = {"R50x1": 25.55, "R101x3": 387.93, "R152x4": 936.53}


# ---------------------------------------------------- torch side (subprocess)


def _tiny_timm_model():
  import functools  # pylint: disable=C0415

  import torch  # pylint: disable=C0415
  from timm.layers import StdConv2d  # pylint: disable=C0415
  from timm.models.resnetv2 import ResNetV2  # pylint: disable=C0415
  torch.manual_seed(0)
  model = ResNetV2(**TINY, stem_type="fixed",
                   conv_layer=functools.partial(StdConv2d, eps=1e-8))
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.add_(0.2 * torch.randn_like(p))  # timm inits GN to 1/0, head to 0.
    model.get_parameter(SHRUNK).mul_(1e-3)
  return model.eval()


def _make_refs(out):
  """Writes tiny.npz (state dict, x, logits), tiny.pth, published.json."""
  import timm  # pylint: disable=C0415
  import torch  # pylint: disable=C0415
  model = _tiny_timm_model()
  x = np.random.default_rng(0).standard_normal((2, 3, 35, 35), np.float32)
  with torch.no_grad():
    logits = model(torch.from_numpy(x)).numpy()
  np.savez(os.path.join(out, "tiny.npz"), x=x, logits=logits,
           **{f"sd/{k}": v.numpy() for k, v in model.state_dict().items()})
  torch.save(model.state_dict(), os.path.join(out, "tiny.pth"))
  published = {}
  for variant, name in PUBLISHED.items():
    with torch.device("meta"):
      m = timm.create_model(name, pretrained=False)
    published[variant] = {
        "shapes": {k: list(v.shape) for k, v in m.state_dict().items()},
        "count": sum(p.numel() for p in m.parameters()),
        "conv_eps": m.stem.conv.eps,
        "stem_pad": [type(m.stem.pad).__name__, m.stem.pad.padding,
                     m.stem.pad.value],
    }
  with open(os.path.join(out, "published.json"), "w") as f:
    json.dump(published, f)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
  """(tiny arrays, published dict, tiny.pth path), built in a subprocess."""
  if not HAVE_TIMM:
    pytest.skip("needs torch and timm")
  out = torch_refs.build(__file__, str(tmp_path_factory.mktemp("bit")))
  with np.load(os.path.join(out, "tiny.npz")) as data:
    tiny = {k: data[k] for k in data.files}
  with open(os.path.join(out, "published.json")) as f:
    return tiny, json.load(f), os.path.join(out, "tiny.pth")


def _state_dict(arrays):
  return {k[3:]: v for k, v in arrays.items() if k.startswith("sd/")}


@functools.lru_cache
def _jitted_apply(kw_json):
  return jax.jit(bit_paper.Model(**json.loads(kw_json)).apply)


def _logits(params, kw, x_nchw):
  """bit_paper(**kw) logits on NCHW inputs (one compile per kw)."""
  apply = _jitted_apply(json.dumps(kw, sort_keys=True))
  out, _ = apply({"params": params}, x_nchw.transpose(0, 2, 3, 1))
  return np.asarray(out)


# ---------------------------------------------------------------- parity


def test_timm_logits_parity(refs):
  arrays = refs[0]
  sd = _state_dict(arrays)
  kw = convert_bit.timm_resnetv2_model_kwargs(sd)
  assert kw == {"num_classes": 7, "depth": [1, 2, 1, 1], "width": 0.5,
                "root_pool_pad": "zero"}
  want, scale = arrays["logits"], np.abs(arrays["logits"]).max()
  diff = np.abs(_logits(convert_bit.timm_resnetv2_to_params(sd), kw,
                        arrays["x"]) - want).max()
  print(f"timm BiT tiny: max |logits diff| {diff:.2e}, max |logit| "
        f"{scale:.2f}")
  assert diff < 1e-5 * max(1.0, scale)
  # Each convention the converter handles is needed: without the eps fold
  # (the shrunk kernel) or with big_vision's -inf stem padding, the
  # converted model no longer computes timm's function.
  no_fold = np.abs(_logits(convert_bit.timm_resnetv2_to_params(
      sd, timm_eps=None), kw, arrays["x"]) - want).max()
  inf_pad = np.abs(_logits(convert_bit.timm_resnetv2_to_params(sd),
                           {**kw, "root_pool_pad": "-inf"},
                           arrays["x"]) - want).max()
  print(f"  without the eps fold {no_fold:.2e}, with -inf stem padding "
        f"{inf_pad:.2e}")
  assert no_fold > 100 * diff and inf_pad > 100 * diff, (no_fold, inf_pad)


@pytest.mark.parametrize("variant", list(PUBLISHED))
def test_published_timm_layouts_convert_to_the_variant(refs, variant):
  """timm's real BiT models: every key maps onto the variant's params."""
  pub = refs[1][variant]
  assert pub["conv_eps"] == convert_bit.TIMM_WS_EPS
  assert pub["stem_pad"] == ["ConstantPad2d", [1, 1, 1, 1], 0.0]  # "zero"
  # Zero-stride stand-ins: shapes without memory.
  sd = {k: np.broadcast_to(np.float32(0), s) for k, s in pub["shapes"].items()}
  kw = convert_bit.timm_resnetv2_model_kwargs(sd)
  want = {**bit.decode_variant(variant), "num_classes": 1000}
  assert {k: kw[k] for k in want} == want
  img = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  params = jax.eval_shape(bit_paper.Model(variant=variant, num_classes=1000)
                          .init, jax.random.key(0), img)["params"]
  shapes = dict(zip(tree_util.tree_names(params),
                    (p.shape for p in jax.tree.leaves(params))))
  mapped = {}
  for key, value in sd.items():
    path, v = convert_bit.map_key(key, value)
    mapped["/".join(path)] = v.shape
  assert mapped == shapes
  count = sum(int(np.prod(s)) for s in shapes.values())
  assert count == pub["count"]
  assert abs(count / 1e6 - PUBLISHED_PARAMS_M[variant]) < 0.01


# ---------------------------------------------------------------- errors


def test_bad_state_dicts_name_the_problem(refs):
  sd = _state_dict(refs[0])
  bad = dict(sd)
  del bad["stages.1.blocks.1.norm2.bias"]
  bad["stages.1.blocks.0.extra.weight"] = np.zeros(3, np.float32)
  bad["stages.2.blocks.0.conv1.weight"] = np.zeros((64, 256, 3, 3),
                                                   np.float32)
  with pytest.raises(ValueError) as e:
    convert_bit.timm_resnetv2_to_params(bad)
  msg = str(e.value)
  assert "stages.1.blocks.0.extra.weight" in msg
  assert "block2/unit02/gn2/bias" in msg
  assert "block3/unit01/conv1/kernel: got (3, 3, 256, 64)" in msg
  with pytest.raises(ValueError, match="no 'stem.conv.weight'"):
    convert_bit.timm_resnetv2_to_params(
        {k: v for k, v in sd.items() if not k.startswith("stem.")})
  with pytest.raises(ValueError, match="BatchNorm"):
    convert_bit.timm_resnetv2_to_params(
        {**sd, "norm.running_mean": np.zeros(1024, np.float32)})
  headless = {k: v for k, v in sd.items() if not k.startswith("head.")}
  assert "head" not in convert_bit.timm_resnetv2_to_params(headless)


def test_convert_cli_from_timm_resnetv2(refs, tmp_path, capsys):
  arrays, _, pth = refs
  out = str(tmp_path / "bit.npz")
  convert.main(["--from", "timm_resnetv2", "--to", "npz", pth, out])
  printed = capsys.readouterr().out
  kw = json.loads(printed.split("model kwargs: ")[1].splitlines()[0])
  got = _logits(checkpoint.load_params(out), kw, arrays["x"])
  np.testing.assert_allclose(got, arrays["logits"], rtol=0, atol=1e-5 * max(
      1.0, np.abs(arrays["logits"]).max()))
  import torch  # pylint: disable=C0415  (torch alone is safe after TF)
  bad = str(tmp_path / "headless_stemless.pth")
  torch.save({k: torch.from_numpy(v) for k, v in _state_dict(arrays).items()
              if not k.startswith("stem.")}, bad)
  with pytest.raises(ValueError, match=r"stemless\.pth: .*'stem.conv.weight'"):
    convert.convert(bad, "timm_resnetv2")


if __name__ == "__main__":  # The `refs` fixture's subprocess.
  _make_refs(sys.argv[1])
