"""Tests for big_vision_like.metrics."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like import metrics


class FakeClock:
  """A clock advanced by hand."""

  def __init__(self, now=100.0):
    self.now = now

  def __call__(self):
    return self.now


def _read_tb_scalars(logdir):
  """Returns {(tag, step): value} from every event file under `logdir`."""
  out = {}
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        out[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  return out


def test_progress_throughput_eta_and_compile():
  clock = FakeClock()
  progress = metrics.Progress(1000, start_step=0, batch_size=64,
                              num_devices=4, clock=clock)
  clock.now += 30.0  # First step: compile.
  progress.tick(1)
  for step in range(2, 11):  # 9 steps in 4.5 s.
    clock.now += 0.5
    progress.tick(step)
  out = progress.measure()
  assert out["first_step_sec"] == pytest.approx(30.0)
  assert out["elapsed_sec"] == pytest.approx(34.5)
  assert out["steps_per_sec"] == pytest.approx(2.0)
  assert out["examples_per_sec"] == pytest.approx(128.0)
  assert out["examples_per_sec_per_device"] == pytest.approx(32.0)
  assert out["eta_sec"] == pytest.approx(990 / 2.0)

  for step in range(11, 21):  # Next window: 10 steps in 10 s.
    clock.now += 1.0
    progress.tick(step)
  out = progress.measure()
  assert "first_step_sec" not in out
  assert out["steps_per_sec"] == pytest.approx(1.0)
  assert out["eta_sec"] == pytest.approx(980.0)


def test_progress_resume_and_empty_window():
  clock = FakeClock()
  progress = metrics.Progress(200, start_step=100, batch_size=8,
                              num_devices=1, clock=clock)
  assert progress.measure() == {"elapsed_sec": 0.0}
  clock.now += 5.0
  progress.tick(101)
  out = progress.measure()
  assert out == {"elapsed_sec": 5.0, "first_step_sec": 5.0}
  clock.now += 2.0
  progress.tick(105)
  out = progress.measure()
  assert out["steps_per_sec"] == pytest.approx(2.0)
  assert out["eta_sec"] == pytest.approx(95 / 2.0)


def test_format_line():
  line = metrics.format_line(
      100, 1000, {"loss": 2.30258, "lr": 1e-3,
                  "examples_per_sec_per_device": 512.04, "eta_sec": 3723.4})
  assert line == ("[ 100/1000] loss=2.3026 lr=1.00e-03 ex/s/dev=512.0 "
                  "eta=1:02:03")
  assert metrics.format_line(5, 10, {}) == "[ 5/10]"
  assert metrics.format_line(5, 10, {"train/loss": 1.0, "train/lr": 0.5}) == (
      "[ 5/10] loss=1.0000 lr=5.00e-01")
  assert metrics.format_line(5, 10, {
      "mfu": 0.4123, "memory/peak_bytes_in_use_max": 12.3 * 2**30,
      "memory/bytes_limit_min": 80 * 2**30}) == (
          "[ 5/10] mfu=41.2% mem=12.3/80GiB")


def test_jsonl_round_trip_and_append(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path), total_steps=10,
                                tensorboard=False)
  writer.write(1, {"loss": np.float32(0.5), "lr": 0.1})
  # Flushed: readable before close (as after a kill).
  assert metrics.read_jsonl(tmp_path / "metrics.jsonl") == [
      {"step": 1, "loss": 0.5, "lr": 0.1}]
  writer.close()
  writer = metrics.MetricWriter(str(tmp_path), total_steps=10,
                                tensorboard=False)
  writer.write(np.int64(2), {"loss": 0.25, "count": np.int32(3)})
  writer.close()
  assert metrics.read_jsonl(tmp_path / "metrics.jsonl") == [
      {"step": 1, "loss": 0.5, "lr": 0.1},
      {"step": 2, "loss": 0.25, "count": 3}]


def test_tensorboard_scalars(tmp_path):
  with metrics.MetricWriter(str(tmp_path), total_steps=10) as writer:
    writer.write(3, {"loss": 1.5, "lr": 0.25})
    writer.write(4, {"loss": 1.25})
  scalars = _read_tb_scalars(str(tmp_path / "tensorboard"))
  assert scalars == {("loss", 3): 1.5, ("lr", 3): 0.25, ("loss", 4): 1.25}


def test_non_main_writes_nothing(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path / "w"), total_steps=10,
                                is_main=False)
  writer.write(1, {"loss": 1.0})
  writer.close()
  assert not os.path.exists(tmp_path / "w")


def test_check_finite():
  metrics.check_finite(3, {"loss": 1.0, "lr": np.float32(0.1)})
  with pytest.raises(FloatingPointError) as e:
    metrics.check_finite(37, {"loss": float("nan"), "lr": 0.1})
  assert str(e.value) == "Non-finite training loss at step 37: loss=nan"
  with pytest.raises(FloatingPointError, match=r"at step 5: .*gnorm=inf"):
    metrics.check_finite(5, {"loss": np.nan, "gnorm": np.inf})
