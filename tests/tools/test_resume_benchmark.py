"""Smoke test of the resume benchmark on a few thousand records."""

from big_vision_like.tools import resume_benchmark


def test_main_times_first_batches_and_shuffle(tmp_path, capsys):
  results = resume_benchmark.main(
      [f"--data_dir={tmp_path}", "--num_records=3000", "--num_shards=3",
       "--batch_size=100", "--shuffle_buffer_size=500", "--block_sizes=50",
       "--repeats=1", "--quality_examples=1000"])
  assert set(results[50]) == {0.0, 0.5, 0.95}
  out = capsys.readouterr().out
  assert "first batch at 95% (step 28)" in out
  assert "corr(epoch position, disk position)" in out


def test_shuffle_quality_of_orders():
  trend, lag1 = resume_benchmark.shuffle_quality(list(range(100)))
  assert trend > 0.99 and lag1 > 0.99
