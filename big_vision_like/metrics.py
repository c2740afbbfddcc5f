"""Training metrics: JSONL + TensorBoard writer, throughput/ETA, console line.

`MetricWriter` appends `{"step": s, **metrics}` to `workdir/metrics.jsonl`
(flushed per write, so a killed run keeps what it logged) and writes the same
scalars to `workdir/tensorboard/`; `workdir` may be local or a bucket URL
(`fs`). TensorBoard events are written with the
core `tf.summary.write` op and the "scalars" plugin tag, so the `tensorboard`
package is needed only to view them, not to write them.
"""

import json
import logging
import math
import time

import numpy as np

from big_vision_like import fs

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _to_python(value):
  """Converts numpy/jax scalars to int or float for JSON."""
  value = np.asarray(value)
  if value.size != 1:
    raise ValueError(f"Metrics must be scalars, got shape {value.shape}.")
  value = value.item()
  if isinstance(value, bool):
    return int(value)
  return value if isinstance(value, int) else float(value)


def read_jsonl(path):
  """Returns the list of JSON objects in a JSONL file (one per line)."""
  return [json.loads(line) for line in fs.read_text(path).splitlines()
          if line.strip()]


def read_runs(workdirs):
  """{run name: its metrics.jsonl records} of several workdirs.

  Args:
    workdirs: {name: workdir} or a list of workdirs (named by their last
      path component).
  """
  if not isinstance(workdirs, dict):
    workdirs = {str(w).rstrip("/").rsplit("/", 1)[-1]: w for w in workdirs}
  runs = {}
  for name, workdir in workdirs.items():
    path = fs.join(workdir, METRICS_FILE)
    if not fs.exists(path):
      raise FileNotFoundError(f"run {name!r}: no {path}")
    runs[name] = read_jsonl(path)
  return runs


def series(records, key, x="step"):
  """(x [N], values [N]) of `key` over a run's records, in step order.

  `x` is "step" or "elapsed_sec" (training wall time; for records that do
  not log it, e.g. evaluators', interpolated from the training records'
  step -> elapsed_sec). Empty arrays when the run never logged `key`.
  """
  rows = sorted((r["step"], r[key]) for r in records if key in r)
  steps = np.array([s for s, _ in rows], np.float64)
  values = np.array([v for _, v in rows], np.float64)
  if x == "step":
    return steps, values
  if x != "elapsed_sec":
    raise ValueError(f"x={x!r}: use 'step' or 'elapsed_sec'.")
  clock = sorted((r["step"], r["elapsed_sec"]) for r in records
                 if "elapsed_sec" in r)
  if not clock:
    raise ValueError(f"x='elapsed_sec': the run logged no elapsed_sec "
                     f"(to plot {key!r}).")
  return (np.interp(steps, [s for s, _ in clock], [t for _, t in clock]),
          values)


def drop_records_after(path, step):
  """Rewrites the JSONL at `path` without its records of steps > `step`.

  Atomic (`fs.write_atomic`); a torn last line (a run killed mid-write) is
  dropped too. No-op if `path` does not exist.
  """
  if not fs.exists(path):
    return
  kept, changed = [], False
  for line in fs.read_text(path).splitlines(keepends=True):
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      changed = True
      continue
    if record.get("step", 0) > step:
      changed = True
    else:
      kept.append(json.dumps(record) + "\n")
  if changed:
    fs.write_atomic(path, "".join(kept))


class _TensorBoard:
  """Minimal scalar writer on tf.summary (no tensorboard package needed)."""

  def __init__(self, logdir):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    # TensorFlow writes local files; `fs` uploads them to a remote logdir.
    self._mirror = fs.LocalMirror(logdir)
    self._writer = tf.summary.create_file_writer(self._mirror.local)
    self._metadata = tf.compat.v1.SummaryMetadata()
    self._metadata.plugin_data.plugin_name = "scalars"

  def write(self, step, metrics):
    tf = self._tf
    with self._writer.as_default():
      for name, value in metrics.items():
        tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                         metadata=self._metadata)
    self._writer.flush()
    self._mirror.sync()

  def close(self):
    self._writer.close()
    self._mirror.close()


class MetricWriter:
  """Writes metrics of the main process to JSONL and TensorBoard.

  Args:
    workdir: the run's directory (created if needed).
    total_steps: training length, for the console line.
    is_main: only the main process writes; others ignore every call.
    tensorboard: also write TensorBoard event files.
    log_lines: also log a one-line summary per write (`format_line`).
    resume_step: the step a run (re)starts from: records of later steps in
      an existing `metrics.jsonl` (logged by a run that died before
      checkpointing them) are dropped, so they are not logged twice.
  """

  def __init__(self, workdir, *, total_steps, is_main=True, tensorboard=True,
               log_lines=False, resume_step=None):
    self.total_steps = total_steps
    self.is_main = is_main
    self._log_lines = log_lines
    self._file = self._tb = None
    if not is_main:
      return
    fs.makedirs(workdir)
    self.path = fs.join(workdir, METRICS_FILE)
    if resume_step is not None:
      drop_records_after(self.path, resume_step)
    self._file = fs.AppendFile(self.path)
    if tensorboard:
      self._tb = _TensorBoard(fs.join(workdir, TENSORBOARD_DIR))

  def write(self, step, metrics):
    """Appends `{"step": step, **metrics}`; metrics are scalar numbers."""
    if not self.is_main:
      return
    step = int(step)
    metrics = {k: _to_python(v) for k, v in metrics.items()}
    self._file.write(json.dumps({"step": step, **metrics}) + "\n")
    self._file.flush()
    if self._tb is not None:
      self._tb.write(step, metrics)
    if self._log_lines:
      logging.info("%s", format_line(step, self.total_steps, metrics))

  def close(self):
    """Closes the files; later writes are errors."""
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()
    self._file = self._tb = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class Progress:
  """Throughput, ETA and the first step's time from per-step ticks.

  Call `tick(step)` after each train step (with `step` the number of steps
  done). The first tick after construction ends the first step (tracing and
  compilation included): its time is
  reported once as `first_step_sec` and excluded from throughput. For exact
  numbers under JAX's asynchronous dispatch, block on the step's outputs
  (e.g. fetch its metrics) before the ticks that precede `measure()`.

  Args:
    total_steps: training length in steps.
    start_step: the step training starts (or resumes) from.
    batch_size: global batch size.
    num_devices: number of devices sharing the batch.
    clock: time source in seconds.
  """

  def __init__(self, total_steps, *, start_step, batch_size, num_devices,
               clock=time.perf_counter):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.num_devices = num_devices
    self._clock = clock
    self._start_time = clock()
    self._step, self._time = start_step, self._start_time
    self._window = None  # (step, time) where the current window starts.
    self.first_step_sec = None
    self._first_step_reported = False

  def tick(self, step):
    """Records that `step` steps are done now."""
    self._step, self._time = step, self._clock()
    if self._window is None:
      self.first_step_sec = self._time - self._start_time
      self._window = (self._step, self._time)

  def measure(self):
    """Returns timings over the steps since the last measure (or compile).

    Returns:
      A dict with `elapsed_sec` (since construction) and, once steps past the
      compile step were ticked, `steps_per_sec`, `examples_per_sec`,
      `examples_per_sec_per_device` and `eta_sec`; plus `first_step_sec` the
      first time it is known.
    """
    out = {"elapsed_sec": self._time - self._start_time}
    if self.first_step_sec is not None and not self._first_step_reported:
      out["first_step_sec"] = self.first_step_sec
      self._first_step_reported = True
    if self._window is None:
      return out
    steps = self._step - self._window[0]
    seconds = self._time - self._window[1]
    if steps > 0 and seconds > 0:
      steps_per_sec = steps / seconds
      out["steps_per_sec"] = steps_per_sec
      out["examples_per_sec"] = steps_per_sec * self.batch_size
      out["examples_per_sec_per_device"] = (
          out["examples_per_sec"] / self.num_devices)
      out["eta_sec"] = max(self.total_steps - self._step, 0) / steps_per_sec
    self._window = (self._step, self._time)
    return out


def format_duration(seconds):
  """Formats seconds as h:mm:ss."""
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _first_of(metrics, keys):
  return next((metrics[k] for k in keys if k in metrics), None)


def format_line(step, total_steps, metrics):
  """One console line: step/total, loss, lr, examples/s/device, MFU, memory
  and ETA.

  Args:
    step: the current step.
    total_steps: training length.
    metrics: a dict; the keys `loss` (or `train/loss`, `training_loss`), `lr`
      (or `train/lr`), `examples_per_sec_per_device`, `mfu`,
      `memory/peak_bytes_in_use_max` (with `memory/bytes_limit_min`) and
      `eta_sec` are shown when present.

  Returns:
    E.g. "[  100/1000] loss=2.3026 lr=1.00e-03 ex/s/dev=512.0 mfu=41.2%
    mem=12.3/80GiB eta=0:01:23".
  """
  width = len(str(total_steps))
  parts = [f"[{step:>{width}}/{total_steps}]"]
  loss = _first_of(metrics, ("loss", "train/loss", "training_loss"))
  if loss is not None:
    parts.append(f"loss={float(loss):.4f}")
  lr = _first_of(metrics, ("lr", "train/lr"))
  if lr is not None:
    parts.append(f"lr={float(lr):.2e}")
  speed = metrics.get("examples_per_sec_per_device")
  if speed is not None:
    parts.append(f"ex/s/dev={float(speed):.1f}")
  if metrics.get("mfu") is not None:
    parts.append(f"mfu={100 * float(metrics['mfu']):.1f}%")
  peak = metrics.get("memory/peak_bytes_in_use_max")
  if peak is not None:
    limit = metrics.get("memory/bytes_limit_min")
    parts.append(f"mem={peak / 2**30:.1f}" +
                 (f"/{limit / 2**30:.0f}" if limit else "") + "GiB")
  if "eta_sec" in metrics:
    parts.append(f"eta={format_duration(metrics['eta_sec'])}")
  return " ".join(parts)


def check_finite(step, metrics):
  """Raises FloatingPointError if any metric is NaN or infinite.

  Args:
    step: the step, named in the message.
    metrics: a dict of scalar metrics.

  Raises:
    FloatingPointError: e.g. "Non-finite training loss at step 37: loss=nan".
  """
  bad = {}
  for name, value in metrics.items():
    value = float(np.asarray(value))
    if not math.isfinite(value):
      bad[name] = value
  if bad:
    raise FloatingPointError(
        f"Non-finite training {', '.join(bad)} at step {step}: "
        + ", ".join(f"{k}={v}" for k, v in bad.items()))
