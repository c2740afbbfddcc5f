"""One trainer for every task: `train_and_evaluate(config, workdir)`.

Launch a config file from the command line, as with big_vision:

  python -m big_vision_like.train --config configs/vit_digits.py \
      --workdir /tmp/vit_digits [--config.lr=3e-3]

Rerunning the same command with the same workdir resumes from the latest
complete checkpoint (params, optimizer state, step, RNG and data position).
Pass `--distributed` to call `jax.distributed.initialize` (multi-host); it is
never called otherwise.
"""

if __name__ == "__main__":  # The CLI: TensorFlow's start-up lines hidden.
  from big_vision_like import console
  console.import_tensorflow_quietly()

# pylint: disable=g-import-not-at-top,wrong-import-position
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from big_vision_like import accumulation
from big_vision_like import checkpoint as ckpt_lib
from big_vision_like import config as config_lib
from big_vision_like import cpu_devices
from big_vision_like import distill as distill_lib
from big_vision_like import fs
from big_vision_like import host_memory
from big_vision_like import input_pipeline
from big_vision_like import metrics as metrics_lib
from big_vision_like import optim
from big_vision_like import preemption as preemption_lib
from big_vision_like import sharding
from big_vision_like import step as step_lib
from big_vision_like import visibility
from big_vision_like.datasets import core as datasets_core
from big_vision_like.evaluators import common as evaluators
from big_vision_like.models import common as models_common
from big_vision_like.pp import builder as pp_builder

REQUIRED, OPEN = config_lib.REQUIRED, config_lib.OPEN

# Every top-level key the trainer reads; anything else in a config is an error.
DEFAULTS = {
    "seed": 0,
    "total_steps": None, "total_epochs": None, "total_examples": None,
    "input": {
        # dict(name=, split=, data_dir=None, **source options), or None
        # with `mixture`: a list of such dicts with `weight` (and `pp`).
        "data": OPEN,
        "mixture": None,
        "batch_size": REQUIRED,
        "pp": REQUIRED,
        "shuffle_buffer_size": 10_000,
        # Examples per block, the unit read from storage and permuted each
        # epoch; windows of shuffle_buffer_size // block_size blocks are
        # shuffled uniformly (see input_pipeline's docstring).
        "block_size": 256,
        "cache_raw": False,
        "pp_cached": "",  # Deterministic pp run once and cached, before pp.
        "pp_cached_batched": "",  # Same, on chunks of examples (tokenize).
        "prefetch": 2,
    },
    "model_name": REQUIRED,
    "model": OPEN,
    # A `load_params` path to start from (e.g. "x.npz"), or a dict of them
    # per top-level subtree (e.g. {"img": "vit.npz"}: LiT).
    "model_init": None,
    "model_load": OPEN,  # `models.common.load_into` kwargs, e.g. dont_load.
    "model_inputs": ("image",),  # Batch keys fed to `model.apply`, in order.
    # Storage dtype of the trained params ("float32" or "bfloat16"): halves
    # params, gradients and (unless config.optax sets its dtype) the
    # optimizer state; the matmul dtype is the model's `dtype_mm`.
    "param_dtype": "float32",
    "loss": "softmax_xent",
    "loss_kw": OPEN,
    # K > 1: each step's gradient from K micro-batches (exact; see
    # big_vision_like/accumulation.py); activations of one micro-batch.
    "grad_accum_steps": 1,
    # E.g. dict(decay=0.9999, every=1, warmup=False): an exponential moving
    # average of the params, state["ema"]; evaluators with pred_params="ema".
    "ema": None,
    # dict(teacher=dict(model_name=, model=, init=), loss=, loss_kw=,
    # weight=, task_weight=): distill from a frozen teacher (distill.py).
    "distill": None,
    "mixup": None,  # E.g. dict(p=0.2): mixup on device in the train step.
    "cutmix": None,  # E.g. dict(alpha=1.0); with mixup, one per step.
    "mesh": (("data", -1),),
    # CPU-only runs: JAX devices the host is split into, N or None ("auto":
    # one per core, up to 8, dividing the batch sizes; see cpu_devices.py).
    "cpu_devices": None,
    "sharding_rules": ((".*", "replicate"),),
    "log_training_steps": 50,
    "log_eval_steps": None,  # Default schedule of evaluators without one.
    "ckpt_steps": None,  # Also on SIGTERM/SIGINT, and at the end.
    # With several processes: agree every N steps whether one was signalled
    # (a host barrier through the jax.distributed key-value store).
    "preemption_sync_steps": 1,
    "keep_ckpt": 2,  # Keep the last K checkpoints ...
    "keep_ckpt_steps": None,  # ... plus every M-th step.
    # Per-device peak FLOP/s for the logged MFU: None (the chip table,
    # visibility.PEAK_FLOPS; no MFU on other chips), a number, or "measure".
    "peak_flops": None,
    # dict(first_step=, num_steps=): a jax.profiler trace in workdir/profile.
    "profile": None,
    "evals": OPEN,
    **optim.DEFAULTS,
}


def _log(msg):
  if jax.process_index() == 0:
    print(msg, flush=True)


def _log_error(msg):
  if jax.process_index() == 0:
    print(msg, file=sys.stderr, flush=True)


def _train_source(input_config):
  """(source, split) of `config.input`: one dataset, or a mixture and None."""
  data, mixture = dict(input_config.data), input_config.mixture
  if mixture:
    if data:
      raise KeyError("Set config.input.data or config.input.mixture, not "
                     "both.")
    return input_pipeline.as_components([dict(c) for c in mixture]), None
  for key in ("name", "split"):
    if key not in data:
      raise KeyError(f"config.input.data needs `{key}` (or use "
                     "config.input.mixture).")
  name, split = data.pop("name"), data.pop("split")
  try:
    return datasets_core.get_source(name, **data), split
  except TypeError as e:
    raise KeyError(f"config.input.data options {sorted(data)} for {name!r}: "
                   f"{e}") from None


def _check_batch_size(batch_size):
  """The global batch size, if each device of each process gets a share."""
  devices, processes = jax.device_count(), jax.process_count()
  if not config_lib.is_integer(batch_size) or batch_size <= 0:
    raise ValueError(f"config.input.batch_size={batch_size!r}: the global "
                     "batch size must be a positive integer.")
  if batch_size % devices:
    raise ValueError(
        f"config.input.batch_size={batch_size} does not divide over the "
        f"{devices} devices ({processes} processes): use a multiple of "
        f"{devices}, e.g. {max(devices, batch_size // devices * devices)}.")
  return batch_size


def _configure_cpu_devices(config):
  """Splits a CPU-only host into `config.cpu_devices` devices before JAX
  starts (cpu_devices.py); sizes that are not valid are reported later."""
  is_size = lambda v: config_lib.is_integer(v) and v > 0
  sizes = [config.input.batch_size] + [
      e["batch_size"] for e in (config.evals or {}).values()
      if "batch_size" in e]
  accum = config.grad_accum_steps
  requested = "auto" if config.cpu_devices is None else config.cpu_devices
  cpu_devices.configure(
      requested, batch_sizes=[int(b) for b in sizes if is_size(b)],
      grad_accum_steps=int(accum) if is_size(accum) else 1,
      mesh_config=config.mesh)


def _check_numbers(config):
  """Finite non-negative lr and wd; cadences that are counts of steps."""
  for key in ("lr", "wd"):
    value = config[key]
    if not config_lib.is_finite_number(value) or value < 0:
      raise ValueError(f"config.{key}={value!r}: must be a finite number "
                       ">= 0.")
  for key, least, optional in (("log_training_steps", 1, False),
                               ("preemption_sync_steps", 1, False),
                               ("keep_ckpt", 1, False),
                               ("ckpt_steps", 0, True),  # 0: none periodic.
                               ("keep_ckpt_steps", 1, True)):
    value = config[key]
    if optional and value is None:
      continue
    if not config_lib.is_integer(value) or value < least:
      raise ValueError(f"config.{key}={value!r}: must be an integer >= "
                       f"{least}{' (or None)' if optional else ''}.")


class _Setup:
  """Everything a run builds from its config before the first step."""

  def __init__(self, config, workdir):
    self.config = config
    self.mesh = sharding.make_mesh(config.mesh)
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    self.source, self.split = _train_source(config.input)
    self.data_size = input_pipeline.num_train_examples(self.source, self.split)
    self.batch_size = _check_batch_size(config.input.batch_size)
    _check_numbers(config)
    accumulation.check_steps(
        config.grad_accum_steps,
        self.batch_size // accumulation.num_batch_shards(self.batch_sharding))
    self.ema = step_lib.check_ema(config.ema)
    self.total_steps = config_lib.to_steps(
        config, "total", batch_size=self.batch_size, data_size=self.data_size)
    if self.total_steps <= 0:
      raise ValueError(f"Training has {self.total_steps} steps; set "
                       "config.total_steps (or _epochs/_examples) above 0.")
    self.model = step_lib.build_model(config.model_name, config.model)
    config_lib.check_kwargs(models_common.load_into, config.model_load,
                            "config.model_load",
                            skip=("init_params", "path_or_tree"))
    self.loss_fn = step_lib.build_loss(config.loss, config.loss_kw, self.mesh)
    self.distill = distill_lib.from_config(config.distill, config.model_inputs)
    self.pp_fn = pp_builder.get_preprocess_fn(config.input.pp)
    self.profiler = visibility.Profiler.from_config(workdir, config.profile)
    self.peak_flops = visibility.peak_flops_per_device(
        jax.devices()[0], visibility.matmul_dtype(config.model),
        config.peak_flops)
    self.ckpt = ckpt_lib.Checkpointer(
        workdir, keep_last=config.keep_ckpt,
        keep_every=config.keep_ckpt_steps)

  def train_dataset(self, start_step, **overrides):
    """The train batches from `start_step`; `overrides` of its kwargs."""
    kwargs = dict(
        global_batch_size=self.batch_size, seed=self.config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(), start_step=start_step,
        shuffle_buffer_size=self.config.input.shuffle_buffer_size,
        block_size=self.config.input.block_size,
        cache_raw=self.config.input.cache_raw,
        pp_cached=self.config.input.pp_cached or None,
        pp_cached_batched=self.config.input.pp_cached_batched or None,
        prefetch=self.config.input.prefetch)
    return input_pipeline.make_train_dataset(
        self.source, self.split, pp=self.pp_fn, **{**kwargs, **overrides})

  def example_inputs(self):
    """One example of each model input (batch of 1), for initialisation."""
    spec = self.train_dataset(start_step=0).element_spec
    missing = [k for k in self.config.model_inputs if k not in spec]
    if missing:
      raise KeyError(f"config.model_inputs {missing} are not in the batch "
                     f"(keys {sorted(spec)}); check config.input.pp.")
    shapes = {k: spec[k].shape[1:] for k in self.config.model_inputs}
    if not all(s.is_fully_defined() for s in shapes.values()):
      # Shapes known only at run time: preprocess one (unshuffled) batch,
      # without reading the share into memory for the cached pps first.
      ds = self.train_dataset(start_step=0, shuffle_buffer_size=1,
                              cache_raw=False, materialize=False)
      batch = next(ds.take(1).as_numpy_iterator())
      shapes = {k: batch[k].shape[1:] for k in self.config.model_inputs}
    return [jnp.zeros((1, *shapes[k]), spec[k].dtype.as_numpy_dtype)
            for k in self.config.model_inputs]

  def abstract_state(self):
    """Shapes and shardings of the train state, and the optimizer."""
    inputs = self.example_inputs()

    def init_params(rng):
      return cast_params(self.model.init({"params": rng, "dropout": rng},
                                         *inputs, train=False)["params"],
                         self.config.param_dtype)

    params = jax.eval_shape(init_params, jax.random.key(self.config.seed))
    tx, sched_fns = optim.make_optimizer(
        self.config, params, total_steps=self.total_steps,
        batch_size=self.batch_size, data_size=self.data_size)
    def make_state(p):
      state = {"params": p, "opt": tx.init(p),
               "step": jnp.zeros([], jnp.int32)}
      if self.ema is not None:
        state["ema"] = _ema_init(p)
      return state

    abstract = jax.eval_shape(make_state, params)
    abstract = distill_lib.add_abstract(  # The teacher, not checkpointed.
        self.distill, abstract, dict(zip(self.config.model_inputs, inputs)))
    shardings = sharding.infer_shardings(abstract, self.config.sharding_rules,
                                         self.mesh)
    init = jax.jit(lambda rng: make_state(init_params(rng)),
                   out_shardings=distill_lib.without_teacher(shardings))
    self.frozen = optim.frozen_mask(self.config, params)
    optim.check_locked_are_loaded(self.config, self.frozen)
    return abstract, shardings, init, tx, sched_fns[0][1]


PARAM_DTYPES = ("float32", "bfloat16")


def cast_params(params, dtype):
  """The floating-point params stored in `dtype` (`config.param_dtype`)."""
  if dtype not in PARAM_DTYPES:
    raise ValueError(f"config.param_dtype={dtype!r}; expected one of "
                     f"{PARAM_DTYPES}.")
  return jax.tree.map(
      lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating)
      else p, params)


def _ema_init(params):
  """The EMA's start: a float32 copy of the params."""
  return jax.tree.map(lambda p: jnp.array(p, jnp.float32), params)


def _initial_state(setup, abstract, shardings, init):
  """Restores the newest good checkpoint, else initialises (or loads) params.

  A damaged latest checkpoint is logged and skipped for the previous one
  (`Checkpointer.restore_latest`); training starts from scratch only when the
  workdir has no checkpoint at all.
  """
  teacher = distill_lib.load_teacher(setup.distill, abstract, shardings, _log)
  step, state, meta = setup.ckpt.restore_latest(distill_lib.without_teacher(
      sharding.with_shardings(abstract, shardings)), log=_log_error)
  if step is not None:
    distill_lib.check_resume(setup.distill, meta,
                             f"{setup.ckpt.directory}/{step}")
    _log(f"Resumed from {setup.ckpt.directory}/{step} "
         f"({meta['examples_seen']} examples seen).")
    return {**state, **teacher}
  state = init(jax.random.key(setup.config.seed))
  if setup.config.model_init:
    state["params"] = _load_init(setup.config, state["params"],
                                 shardings["params"])
    if "ema" in state:  # The EMA starts from the loaded params.
      state["ema"] = jax.jit(_ema_init, out_shardings=shardings["ema"])(
          state["params"])
  return {**state, **teacher}


def _load_init(config, params, shardings):
  """`params` with `config.model_init` loaded into them (or their subtrees).

  `params` are the freshly initialised sharded arrays: those not loaded stay
  where they are, and each loaded array is put on the devices shard by shard
  (no host copy of the whole init, which FSDP may spread over hosts).
  """
  def put(x, init, s):  # In the dtype of the init (config.param_dtype).
    if isinstance(x, jax.Array):
      return x if x.dtype == init.dtype else x.astype(init.dtype)
    x = np.asarray(x).astype(init.dtype)
    return jax.make_array_from_callback(np.shape(x), s, lambda idx: x[idx])
  return jax.tree.map(put, _load_init_values(config, params), params,
                      shardings)


def _load_init_values(config, params):
  """`params` with the values of `config.model_init` where it has them."""
  inits = config.model_init
  if isinstance(inits, str):
    inits = {None: inits}
    load_kw = {"model": config.model_name, **config.model_load}
  else:
    load_kw = dict(config.model_load)
  params = dict(params)
  for key, path in dict(inits).items():
    if key is not None and key not in params:
      raise KeyError(f"config.model_init has {key!r}, but the model's params "
                     f"have {sorted(params)}.")
    sub = params if key is None else params[key]
    sub = models_common.load_into(sub, path, **load_kw)
    params = sub if key is None else {**params, key: sub}
    _log(f"Loaded {'params' if key is None else key} from {path}.")
  return params


class _LossWatch:
  """Keeps per-step losses on device; checks them only when fetched."""

  def __init__(self):
    self._pending = []

  def add(self, step, loss):
    self._pending.append((step, loss))

  def check(self):
    """Raises FloatingPointError naming the first step with a bad loss."""
    for step, loss in jax.device_get(self._pending):
      metrics_lib.check_finite(step, {"loss": float(loss)})
    self._pending = []


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir`, resuming if possible; returns last metrics.

  Args:
    config: a ConfigDict (see DEFAULTS for the keys the trainer reads).
    workdir: where checkpoints, metrics.jsonl and TensorBoard logs go.

  Returns:
    (state, metrics): the final train state (params, opt, step) and a dict of
    the last training metrics and every evaluator's last results.

  Raises:
    preemption.Preempted: after SIGTERM or SIGINT, once the checkpoint of the
      step in flight is saved and complete.
  """
  config = config_lib.check_and_fill(config, DEFAULTS)
  _configure_cpu_devices(config)
  if fs.exists(workdir) and not fs.isdir(workdir):
    raise NotADirectoryError(f"The workdir {workdir} is a file, not a "
                             "directory.")
  fs.makedirs(workdir)
  setup = _Setup(config, workdir)
  try:  # Pending checkpoints are completed whatever happens.
    return _train_and_evaluate(setup, workdir)
  finally:
    setup.ckpt.close()


def _train_and_evaluate(setup, workdir):
  config, total = setup.config, setup.total_steps
  abstract, shardings, init, tx, sched_fn = setup.abstract_state()
  state = _initial_state(setup, abstract, shardings, init)
  start = int(jax.device_get(state["step"]))
  if jax.process_index() == 0:  # The summary; every parameter in the file.
    table = visibility.write_param_table(workdir, abstract["params"],
                                         shardings["params"])
    _log(table[table.index("Per module:"):] +
         f"\nEvery parameter: {workdir}/{visibility.PARAMS_FILE}")
  step_fn = jax.jit(
      step_lib.make_train_step(
          setup.model, setup.loss_fn, tx, sched_fn,
          model_inputs=config.model_inputs, seed=config.seed,
          mixup=config.mixup, cutmix=config.cutmix, frozen=setup.frozen,
          grad_accum_steps=config.grad_accum_steps,
          batch_sharding=setup.batch_sharding, ema=setup.ema,
          distill=setup.distill),
      in_shardings=(shardings, setup.batch_sharding),
      out_shardings=(shardings, sharding.replicated(setup.mesh)),
      donate_argnums=0)
  evals = evaluators.build_evaluators(
      config.evals, step_lib.make_predict_fns(setup.model, config.model_inputs,
                                              setup.distill),
      mesh=setup.mesh, batch_size=setup.batch_size, total_steps=total,
      data_size=setup.data_size, default_log_steps=config.log_eval_steps,
      workdir=workdir)
  # Each evaluator's batches must fit the model: fail now, not after training.
  evaluators.check_inputs(evals, abstract)
  # Records past `start` are from a run that died before checkpointing them.
  with metrics_lib.MetricWriter(workdir, total_steps=total,
                                is_main=jax.process_index() == 0,
                                resume_step=start) as writer:
    if start >= total:
      _log(f"Training already complete at step {start}/{total}.")
      return state, _run_evals(evals, state, total, total, writer, force=True)
    with preemption_lib.Preemption(
        every=config.preemption_sync_steps) as preempt:
      return _train_loop(setup, state, step_fn, evals, writer, start,
                         preempt)


def _train_loop(setup, state, step_fn, evals, writer, start, preempt):
  """Runs steps start+1..total with logging, evals and checkpoints."""
  config, total = setup.config, setup.total_steps
  progress = metrics_lib.Progress(
      total, start_step=start, batch_size=setup.batch_size,
      num_devices=jax.device_count())
  watch, results = _LossWatch(), {}
  it = input_pipeline.start_global_iterator(
      setup.train_dataset(start_step=start), setup.batch_sharding)
  try:
    for step in range(start + 1, total + 1):
      batch = next(it)
      if step == start + 1:
        t0 = time.perf_counter()
        lowered = step_fn.lower(state, batch)
        step_fn = lowered.compile()
        compile_sec = time.perf_counter() - t0
        setup.profiler.save_hlo(step_fn, step)
        flops = visibility.step_flops(lowered)
        memory = visibility.step_memory(step_fn)
        writer.write(step, {"compile_sec": compile_sec, **memory,
                            **({"step_flops": flops} if flops else {})})
        _log(f"Compiled the train step in {compile_sec:.1f}s.")
        _log(f"Devices: {jax.device_count()} x "
             f"{jax.devices()[0].device_kind}"
             + (f" (cpu_devices: {cpu_devices.STATE})"
                if jax.default_backend() == "cpu" else ""))
        _log(visibility.describe_step(flops, memory, setup.peak_flops))
        hint = host_memory.advice(memory.get("memory/step_temp_bytes"))
        if hint and jax.default_backend() == "cpu":
          _log(hint)
      with setup.profiler.step(step):
        state, metrics = step_fn(state, batch)
      setup.profiler.after(step, wait_for=metrics)
      watch.add(step, metrics["loss"])
      log_now = step % config.log_training_steps == 0 or step == total
      if log_now or step == start + 1:
        watch.check()  # Waits for the step, so that its tick is exact.
      progress.tick(step)
      if log_now:
        measured = {f"train/{k}": float(v)
                    for k, v in jax.device_get(metrics).items()}
        measured.update(progress.measure())
        measured.update(visibility.memory_stats())
        measured.update(visibility.utilisation(
            flops, measured.get("steps_per_sec"), jax.device_count(),
            setup.peak_flops))
        writer.write(step, measured)
        _log(metrics_lib.format_line(step, total, measured))
        results.update(measured)
      stop = step < total and preempt.stop_now(step)
      if (stop or step == total
          or (config.ckpt_steps and step % config.ckpt_steps == 0)):
        watch.check()
        setup.ckpt.save(step, distill_lib.without_teacher(state), {
            "step": step, "examples_seen": step * setup.batch_size,
            "config": config.to_json(),
            **distill_lib.checkpoint_meta(setup.distill)})
      if stop:
        setup.ckpt.wait()
        e = preemption_lib.Preempted(step, preempt.signum,
                                     fs.join(setup.ckpt.directory,
                                             str(step)))
        _log(str(e))
        raise e
      # Evaluators run after the checkpoint: one that fails loses nothing.
      results.update(_run_evals(evals, state, step, total, writer))
  finally:
    setup.profiler.close()  # E.g. the run ended inside the window.
    it.close()  # Stops and joins the input thread.
  setup.ckpt.wait()
  return state, results


def _run_evals(evals, state, step, total, writer, force=False):
  """Runs the evaluators due at `step` (all of them if `force`)."""
  results = {}
  for ev in evals:
    if not (force or ev.due(step, total)):
      continue
    t0 = time.perf_counter()
    values = {f"{ev.name}/{k}": v for k, v in ev.evaluator.run(state)}
    values[f"{ev.name}/walltime_sec"] = time.perf_counter() - t0
    writer.write(step, values)
    _log(f"[{step}] " + ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
    results.update(values)
  return results


# `--config.KEY=VALUE` may also set a key the file leaves to the trainer's
# DEFAULTS (e.g. --config.param_dtype=bfloat16, --config.grad_accum_steps=4):
# ml-collections takes it as a Python literal (or a string), and
# `config.check_and_fill` then rejects unknown keys with a close match.
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally `FILE.py:arg`.",
    lock_config=False, accept_new_attributes=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and logs go here.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize (multi-host).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (with --distributed;"
    " auto-detected on TPU pods, SLURM, and other managed clusters).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "With --distributed.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --distributed.")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Libraries' INFO logs are noisy.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")  # tf.data must not take GPU memory.
  if _DISTRIBUTED.value:
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required.")
  try:
    _, results = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except preemption_lib.Preempted as e:
    # Not finished: exit as a shell reports a process the signal killed, so
    # that schedulers and scripts rerun it (the rerun resumes at e.step).
    sys.exit(128 + e.signum)
  workdir = fs.abspath(_WORKDIR.value)
  _log("Final metrics:\n" + "\n".join(
      f"  {k} = {v:.4f}" for k, v in sorted(results.items())))
  _log(f"Checkpoints: {workdir}/checkpoints\n"
       f"Metrics: {workdir}/metrics.jsonl, TensorBoard: {workdir}/tensorboard")


def run_main():
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)


if __name__ == "__main__":
  run_main()
