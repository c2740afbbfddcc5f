"""The chunked sigmoid loss needs a fraction of all_gather's memory (8 devices)."""

from big_vision_like.tools import loss_benchmark


def test_chunked_peak_memory_is_below_a_quarter_of_all_gather():
  kw = dict(batch=2048, dim=16, steps=1)
  chunked, _ = loss_benchmark.measure("sigmoid", "chunked", **kw)
  gathered, _ = loss_benchmark.measure("sigmoid", "all_gather", **kw)
  softmax, _ = loss_benchmark.measure("softmax", "all_gather", **kw)
  # all_gather holds [256, 2048] logits per device (2 MiB), chunked [256, 256].
  assert gathered >= 2 * 2**20 and softmax >= 2 * 2**20
  assert chunked * 4 <= gathered
