"""Preemption: SIGTERM/SIGINT become "checkpoint this step and stop".

A TPU or cluster scheduler sends SIGTERM, then SIGKILL after a grace period.
`Preemption` catches the signal and the train loop asks `stop_now(step)`
after each step; when it says yes, the trainer saves a checkpoint of that
step, waits for it to be complete, and exits. A second signal of the same
kind gets its usual effect (kill, or KeyboardInterrupt), for impatience.

With several processes the signal may reach them at different steps, or only
some of them. Every `every` steps each process publishes whether it was
signalled in the `jax.distributed` key-value store and waits for the others'
answers at that same step (a host barrier; no device work): all stop at the
first such step where any of them was signalled. In a single process the
check is a flag read, every step.
"""

import signal
import threading

import jax


class Preempted(Exception):
  """Raised by `train_and_evaluate` after saving the checkpoint of a stop."""

  def __init__(self, step, signum, path):
    self.step, self.signum, self.path = step, signum, path
    super().__init__(f"Stopped by {signal.Signals(signum).name} after step "
                     f"{step}; checkpoint saved at {path}. Rerun the same "
                     "command to resume.")


class Preemption:  # pylint: disable=too-many-instance-attributes
  """Catches `signals` while active (a context manager).

  Args:
    signals: the signals that request a stop.
    every: with several processes, agree on stopping every `every` steps.
    timeout_s: how long a process waits for the others at an agreement step.
  """

  _instances = 0

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT), *, every=1,
               timeout_s=600):
    self.signals = tuple(signals)
    self.every = max(1, int(every))
    self.timeout_ms = int(timeout_s * 1000)
    self.signum = None
    self._previous = {}
    self._client = None
    Preemption._instances += 1  # Same order on every process: unique keys.
    self._prefix = f"bvl_preempt/{Preemption._instances}"

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in self.signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    if jax.process_count() > 1:
      from jax._src import distributed  # pylint: disable=C0415
      self._client = distributed.global_state.client
    return self

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum is None:
      self.signum = signum
      # A second signal of this kind acts as it would without us.
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def stop_now(self, step):
    """Whether to checkpoint `step` and stop; the same on every process."""
    if self._client is None:
      return self.signum is not None
    if step % self.every:
      return False
    return self._agree(step)

  def _agree(self, step):
    """True on every process if any process has been signalled."""
    key = f"{self._prefix}/{step}"
    self._client.key_value_set(f"{key}/{jax.process_index()}",
                               str(self.signum or 0))
    self._client.wait_at_barrier(f"{key}/barrier", self.timeout_ms)
    answers = [int(v) for _, v in self._client.key_value_dir_get(f"{key}/")]
    if step - self.every >= 0:  # Everyone has read those: keep the store small.
      self._client.key_value_delete(
          f"{self._prefix}/{step - self.every}/{jax.process_index()}")
    stop = [a for a in answers if a]
    if stop and self.signum is None:
      self.signum = stop[0]
    return bool(stop)
