"""accum_benchmark's rows: the step at a batch, and the largest that fits."""

import jax
import pytest

from big_vision_like import sharding
from big_vision_like import visibility
from big_vision_like.tools import accum_benchmark

TINY = dict(image_variant="mu/16", text_variant="mu", res=32, text_len=8)


def test_largest_batch_with_accumulation_fits_and_the_next_does_not():
  one_device = sharding.make_mesh(devices=jax.devices()[:1])
  held = lambda b: visibility.held_bytes(accum_benchmark.compile_row(
      2, one_device, b, **TINY)[1])
  # K=2 on one device: micro-batches of multiples of 8, batches of 16; a
  # budget of exactly the 16's (the search itself: test_visibility.py).
  limit = held(16) / accum_benchmark.FIT_FRACTION + 1.0
  batch, compiled, _, _ = accum_benchmark.compile_row(
      2, one_device, "max", limit, **TINY)
  assert batch == 16 and held(32) > accum_benchmark.FIT_FRACTION * limit
  assert visibility.held_bytes(compiled) == held(16)


@pytest.mark.parametrize("argv, error", [
    (["--batch_size", "0"], "--batch_size 0: expected a positive integer"),
    (["--batch_size", "max"], "this device reports no memory limit"),
    (["--grad_accum", "1,0"], "--grad_accum 1,0: expected positive integers"),
])
def test_bad_command_lines_name_the_flag(argv, error, capsys):
  with pytest.raises(SystemExit):
    accum_benchmark.parse_args(argv)
  assert error in capsys.readouterr().err
  args = accum_benchmark.parse_args(["--batch_size", "max",
                                     "--memory_limit_gib", "0.5",
                                     "--res", "64"])
  assert (args.limit, args.res, args.image_variant) == (2**29, 64, "B/16")
