r"""Frozen-feature evaluators on the digits: random, trained and raw pixels.

  .venv/bin/python experiments/evaluators_digits/run.py \
      [--workdir workdirs/experiments/evaluators_digits] [--steps 500]

Trains `configs/vit_digits.py:tune` (train split only) for `--steps` steps in
`--workdir` (or resumes / reuses the checkpoint there), then runs the
`fewshot`, `knn` and `linear_probe` evaluators (train split as the few-shot
pool / kNN memory / probe training set, validation to choose the probe's L2,
test to report) on three feature extractors:

  - random: the same ViT at initialisation (`pre_logits`),
  - trained: the trained ViT (`pre_logits`),
  - pixels: an identity "model" returning the preprocessed 16x16 pixels,

and fits scikit-learn's `LogisticRegression` (default C=1, standardised
features) on the same train/test features. Prints a markdown table.
"""

import argparse
import importlib.util
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import linear_model
from sklearn import preprocessing

from big_vision_like import config as config_lib
from big_vision_like import sharding
from big_vision_like import step as step_lib
from big_vision_like import train
from big_vision_like.evaluators import common
from big_vision_like.pp import builder as pp_builder
from big_vision_like.tools import eval_only

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
PP = ("decode(channels=1)|resize(16)|value_range(-1, 1)|"
      'keep("image", "label")')
SHOTS, KS = (1, 5, 10, 25), (1, 10, 20)


def load_config(steps):
  spec = importlib.util.spec_from_file_location(
      "vit_digits", os.path.join(ROOT, "configs", "vit_digits.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("tune")
  config.total_steps = steps
  config.ckpt_steps = steps
  return config


def evals_config():
  digits = lambda split: dict(name="bvl_digits", split=split)  # noqa: E731
  return {
      "fewshot": dict(type="fewshot", pp_fn=PP, shots=SHOTS,
                      seeds=(0, 1, 2, 3, 4),
                      datasets={"digits": ("bvl_digits", "train", "test")}),
      "knn": dict(type="knn", data=digits("test"), memory=digits("train"),
                  pp_fn=PP, k=KS),
      "linear": dict(type="linear_probe", data=digits("test"),
                     train_data=digits("train"),
                     val_data=digits("validation"), pp_fn=PP),
  }


def identity_predict(train_state, batch):
  """A "model" whose features are the pixels."""
  del train_state
  x = batch["image"].reshape(batch["image"].shape[0], -1)
  return x, {"pre_logits": x}


def sklearn_accuracy(predict_fn, state, mesh):
  """LogisticRegression (standardised features) trained on train, on test."""
  gather = common.Gatherer(common.select_fn(
      predict_fn, {"x": "pre_logits"}, inputs=("image",), keep=("label",)),
      mesh)
  pp = pp_builder.get_preprocess_fn(PP)
  feats = {}
  for split in ("train", "test"):
    out = gather(state, common.EvalData(
        dict(name="bvl_digits", split=split), pp, 128, mesh))
    feats[split] = out["x"].astype(np.float64), out["label"]
  scaler = preprocessing.StandardScaler().fit(feats["train"][0])
  model = linear_model.LogisticRegression(max_iter=5000).fit(
      scaler.transform(feats["train"][0]), feats["train"][1])
  return model.score(scaler.transform(feats["test"][0]), feats["test"][1])


def run_evaluators(predict_fn, state, mesh, batch_size):
  built = common.build_evaluators(
      evals_config(), {"predict": predict_fn}, mesh=mesh,
      batch_size=batch_size, total_steps=None)
  results = {}
  for ev in built:
    results.update({f"{ev.name}/{k}": v for k, v in ev.evaluator.run(state)})
  results["sklearn"] = sklearn_accuracy(predict_fn, state, mesh)
  return results


def extractors(config, workdir, mesh):
  """{name: (predict_fn, train_state)} of the three feature extractors."""
  config = config_lib.check_and_fill(config, train.DEFAULTS)
  model = eval_only.build_model(config)
  predict = step_lib.make_predict_fns(model, config.model_inputs)["predict"]
  init = model.init(jax.random.key(config.seed),
                    jnp.zeros((1, 16, 16, 1)), train=False)["params"]
  trained = eval_only.load_state(workdir, None, config, mesh)
  return {"random": (predict, {"params": init}),
          "trained": (predict, trained),
          "pixels": (identity_predict, {})}


def table(rows):
  head = (["features"] + [f"{s}-shot" for s in SHOTS] +
          [f"kNN k={k}" for k in KS] + ["linear probe", "sklearn LR"])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, r in rows.items():
    vals = ([r[f"fewshot/digits_{s}shot"] for s in SHOTS] +
            [r[f"knn/prec@1_k{k}"] for k in KS] +
            [r["linear/prec@1"], r["sklearn"]])
    lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}%" for v in vals)
                 + " |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir",
                      default="workdirs/experiments/evaluators_digits")
  parser.add_argument("--steps", type=int, default=500)
  args = parser.parse_args()
  config = load_config(args.steps)
  t0 = time.perf_counter()
  _, res = train.train_and_evaluate(config, args.workdir)
  print(f"Trained {args.steps} steps in {time.perf_counter() - t0:.0f}s: "
        f"validation prec@1 {res['validation/prec@1']:.4f}")
  mesh = sharding.make_mesh()
  rows = {}
  for name, (predict_fn, state) in extractors(
      config, args.workdir, mesh).items():
    t0 = time.perf_counter()
    rows[name] = run_evaluators(predict_fn, state, mesh, batch_size=128)
    print(f"{name}: {time.perf_counter() - t0:.0f}s", flush=True)
  print(table(rows))


if __name__ == "__main__":
  main()
