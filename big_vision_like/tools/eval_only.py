r"""Runs a config's evaluators on saved params, without training.

  python -m big_vision_like.tools.eval_only --config configs/vit_digits.py \
      --workdir workdirs/vit_digits [--params PATH] [--config.evals...]

Evaluates the latest checkpoint of `--workdir`, or `--params` (anything
`checkpoint.load_params` reads: a big_vision `.npz`, optionally `:subtree`,
or an orbax workdir / checkpoint), with every evaluator of `config.evals`
(their `log_*` schedules are ignored). Prints the results and appends them
as one JSON line `{"step": ..., "params": ..., "<eval>/<metric>": ...}` to
`<workdir>/eval_only.jsonl`.
"""

import json
import time

from absl import app
from absl import flags
from absl import logging
import jax

from big_vision_like import checkpoint as ckpt_lib
from big_vision_like import config as config_lib
from big_vision_like import fs
from big_vision_like import sharding
from big_vision_like import step as step_lib
from big_vision_like import train
from big_vision_like.evaluators import common as evaluators

RESULTS_FILE = "eval_only.jsonl"


def load_state(workdir, params_path, config, mesh):
  """{"params", "step"} from `params_path`, else the workdir's latest step."""
  if params_path:
    params, step = ckpt_lib.load_params(params_path), 0
  else:
    ckpt = ckpt_lib.Checkpointer(workdir)
    step = ckpt.latest_step()
    ckpt.close()
    if step is None:
      raise FileNotFoundError(f"No checkpoint in "
                              f"{fs.join(workdir, 'checkpoints')}; pass "
                              "--params.")
    params = ckpt_lib.load_params(workdir)
  state = {"params": params}
  if config.ema is not None:  # Evaluators with pred_params="ema" read it.
    state["ema"] = ckpt_lib.load_params(params_path or workdir, item="ema")
  shardings = sharding.infer_shardings(state, config.sharding_rules, mesh)
  state = jax.device_put(state, shardings)
  state["step"] = jax.numpy.asarray(step, jax.numpy.int32)
  return state


def _unscheduled(evals):
  """The eval configs without their `log_*` schedules."""
  return {name: {k: v for k, v in dict(cfg).items()
                 if not k.startswith("log_")}
          for name, cfg in dict(evals or {}).items()}


def evaluate(config, workdir, params_path=None):
  """Runs every evaluator of `config` once; returns (step, results).

  Args:
    config: a training config (see `train.DEFAULTS`).
    workdir: the run directory: its latest checkpoint is evaluated unless
      `params_path` is given; results are appended to `eval_only.jsonl`.
    params_path: optional `checkpoint.load_params` path.

  Returns:
    (step, {"<eval>/<metric>": value}).
  """
  config = config_lib.check_and_fill(config, train.DEFAULTS)
  mesh = sharding.make_mesh(config.mesh)
  model = step_lib.build_model(config.model_name, config.model)
  with mesh:
    state = load_state(workdir, params_path, config, mesh)
  step = int(state["step"])
  evals = evaluators.build_evaluators(
      _unscheduled(config.evals),
      step_lib.make_predict_fns(model, config.model_inputs), mesh=mesh,
      batch_size=config.input.batch_size, total_steps=None, workdir=workdir)
  evaluators.check_inputs(evals, state)
  results = {}
  for ev in evals:
    t0 = time.perf_counter()
    results.update({f"{ev.name}/{k}": float(v)
                    for k, v in ev.evaluator.run(state)})
    results[f"{ev.name}/walltime_sec"] = time.perf_counter() - t0
  if jax.process_index() == 0:
    fs.makedirs(workdir)
    with fs.AppendFile(fs.join(workdir, RESULTS_FILE)) as f:
      f.write(json.dumps({"step": step, "params": params_path or workdir,
                          **results}) + "\n")
  return step, results


# `--config`, `--workdir`, `--distributed` (and its coordinator flags) are
# defined by `big_vision_like.train`, imported above; only `--params` is new.
_PARAMS = flags.DEFINE_string("params", None,
                              "Params to evaluate instead of the latest "
                              "checkpoint (`.npz`, orbax dir, `:subtree`).")


def main(argv):
  del argv
  fl = flags.FLAGS
  if not fl["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  if fl.distributed:
    jax.distributed.initialize(
        coordinator_address=fl.coordinator_address,
        num_processes=fl.num_processes, process_id=fl.process_id)
  step, results = evaluate(fl.config, fl.workdir, _PARAMS.value)
  if jax.process_index() == 0:
    print(f"Step {step}:\n" + "\n".join(
        f"  {k} = {v:.4f}" for k, v in sorted(results.items())), flush=True)
    path = fs.join(fs.abspath(fl.workdir), RESULTS_FILE)
    print(f"Results: {path}", flush=True)


def run_main():
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)


if __name__ == "__main__":
  run_main()
