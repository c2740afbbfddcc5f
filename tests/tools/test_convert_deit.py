"""timm DeiT models (`deit_*`, `deit3_*`, `deit_*_distilled_*`) -> `vit`.

As in test_convert.py, a subprocess without TensorFlow (timm after TF can
crash) runs this file as a script: it builds tiny randomly initialised timm
models (pretrained=False, nothing downloaded), perturbs every weight, and
writes their state dicts, inputs and outputs; the tests convert the state
dicts in-process and compare this project's logits with timm's.
"""

import importlib.util
import json
import os
import sys

import jax
import numpy as np
import pytest

from big_vision_like import checkpoint
from big_vision_like.models import vit
from big_vision_like.tools import convert, convert_torch
from tests import torch_refs

# Found, not imported: importing timm after TensorFlow can crash.
if not all(importlib.util.find_spec(m) for m in ("torch", "timm",
                                                 "safetensors")):
  pytest.skip("needs torch, timm and safetensors", allow_module_level=True)

TOL = 2e-5  # Logits of order one.
# timm model name -> kwargs: patch 8 on 32x32 images (16 patches), depth 2.
CASES = {
    "distilled": ("deit_tiny_distilled_patch16_224", {}),
    "deit": ("deit_tiny_patch16_224", {}),
    # DeiT III: LayerScale, no class-token position (no_embed_class).
    "deit3": ("deit3_small_patch16_224", {"embed_dim": 192, "num_heads": 3}),
}


# ---------------------------------------------------- torch side (subprocess)


def _make_refs(out):
  import timm  # pylint: disable=C0415
  import torch  # pylint: disable=C0415
  from safetensors.torch import save_file  # pylint: disable=C0415
  x = np.random.RandomState(0).randn(2, 3, 32, 32).astype(np.float32)
  for case, (name, kw) in CASES.items():
    model = timm.create_model(name, pretrained=False, num_classes=10,
                              img_size=32, patch_size=8, depth=2, **kw)
    torch.manual_seed(0)
    with torch.no_grad():  # Non-trivial values (heads start at zero).
      for p in model.parameters():
        p.add_(0.1 * torch.randn_like(p))
    model.eval()
    xt = torch.from_numpy(x)
    with torch.no_grad():
      refs = {"x": x, "logits": model(xt).numpy()}
      if case == "distilled":
        feats = model.forward_features(xt)  # [B, 2 + 16, D]
        refs["cls_logits"] = model.head(feats[:, 0]).numpy()
        refs["dist_logits"] = model.head_dist(feats[:, 1]).numpy()
        model.set_distilled_training(True)
        model.train()  # No dropout / drop-path: the same computation.
        cls_tr, dist_tr = model(xt)
        refs["train_cls"], refs["train_dist"] = cls_tr.numpy(), dist_tr.numpy()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  os.path.join(out, "distilled.safetensors"))
    np.savez(os.path.join(out, f"{case}.npz"), **refs, **{
        f"sd/{k}": v.detach().numpy() for k, v in model.state_dict().items()})


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
  return torch_refs.build(__file__, str(tmp_path_factory.mktemp("deit")))


def _case(refs_dir, name):
  return torch_refs.load_case(refs_dir, name)


def _run(params, cfg, x, train=False):
  model = vit.Model(**cfg)
  out, aux = jax.jit(model.apply, static_argnames="train")(
      {"params": params}, x.transpose(0, 2, 3, 1), train=train)
  return np.asarray(out), jax.tree.map(np.asarray, aux)


# ---------------------------------------------------------------- tests


def test_distilled_deit_matches_timm_in_both_modes(refs):
  sd, ref = _case(refs, "distilled")
  params = convert_torch.timm_vit_to_params(sd, num_heads=3)
  cfg = convert_torch.timm_vit_config(sd, num_heads=3)
  assert cfg["dist_token"] and cfg["pool_type"] == "tok"
  assert params["dist"].shape == params["cls"].shape == (1, 1, 192)
  assert params["pos_embedding"].shape == (1, 16, 192)  # 2 prefix entries out.
  assert np.abs(ref["logits"]).max() > 0.5  # Logits of order one.
  out, aux = _run(params, cfg, ref["x"])  # Eval: mean of the two heads.
  diffs = {"eval": np.abs(out - ref["logits"]).max(),
           "cls": np.abs(aux["logits"] - ref["cls_logits"]).max(),
           "dist": np.abs(aux["dist_logits"] - ref["dist_logits"]).max()}
  out, aux = _run(params, cfg, ref["x"], train=True)  # timm's distilled
  diffs["train_cls"] = np.abs(out - ref["train_cls"]).max()  # training.
  diffs["train_dist"] = np.abs(aux["dist_logits"] - ref["train_dist"]).max()
  assert max(diffs.values()) < TOL, diffs
  # The two heads differ, so the averaging is what matches.
  assert np.abs(ref["cls_logits"] - ref["dist_logits"]).max() > 0.1


@pytest.mark.parametrize("case", ["deit", "deit3"])
def test_plain_deit_matches_timm(refs, case):
  sd, ref = _case(refs, case)
  params = convert_torch.timm_vit_to_params(sd, num_heads=3)
  cfg = convert_torch.timm_vit_config(sd, num_heads=3)
  assert "dist_token" not in cfg and "dist" not in params
  assert ("layerscale" in cfg) == (case == "deit3")
  diff = np.abs(_run(params, cfg, ref["x"])[0] - ref["logits"]).max()
  assert np.abs(ref["logits"]).max() > 0.5 and diff < TOL, diff


def test_distilled_deit_cli_and_bad_state_dicts(refs, tmp_path, capsys):
  _, ref = _case(refs, "distilled")
  out = str(tmp_path / "deit.npz")
  convert.main(["--from", "timm_vit", "--to", "npz",
                os.path.join(refs, "distilled.safetensors"), out,
                "--num_heads", "3"])
  printed = capsys.readouterr().out
  line, = (x for x in printed.splitlines() if x.startswith("model kwargs: "))
  kw = json.loads(line[len("model kwargs: "):])
  assert kw["dist_token"] is True and kw["depth"] == 2
  logits, _ = _run(checkpoint.load_params(out), kw, ref["x"])
  assert np.abs(logits - ref["logits"]).max() < TOL
  # A distilled state dict without its second head: one error naming it.
  sd, _ = _case(refs, "distilled")
  del sd["head_dist.weight"], sd["head_dist.bias"]
  with pytest.raises(ValueError, match=r"(?s)d\.pth.*missing \(2\): "
                     r"head_dist\.bias, head_dist\.weight"):
    convert_torch.timm_vit_to_params(sd, num_heads=3, where="d.pth")


if __name__ == "__main__":  # The `refs` fixture's subprocess.
  _make_refs(sys.argv[1])
