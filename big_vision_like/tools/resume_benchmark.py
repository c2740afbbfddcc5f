r"""Time to the first training batch when resuming at 0%, 50%, 95% of an epoch.

  python -m big_vision_like.tools.resume_benchmark --num_records 1000000 \
      --data_dir /tmp/bvl_resume_bench

Prepares (once, in `--data_dir`) `bvl_resume_bench`, a TFDS dataset of
`--num_records` small records (`id`, `label`, 64 random bytes) in
`--num_shards` TFRecord shards, stored in id order (so an id is its position
on disk). Then, for each `--fractions` f, builds the training pipeline
(`input_pipeline.make_train_dataset`, one process) at
`start_step = f * records // batch_size` and times it up to its first
batch; `--block_sizes` compares block sizes (`0` means one block holding the
whole split: a sequential read behind a shuffle buffer, whose resume reads
everything before the position). It also prints the shuffle quality of the
first `--quality_examples` examples of an epoch: the correlation between
epoch position and position on disk, and between consecutive examples'
positions on disk (both ~0 for a uniform shuffle).
"""

import argparse
import dataclasses
import os
import time

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from big_vision_like import input_pipeline
from big_vision_like.datasets import core

NAME = "bvl_resume_bench"
PAYLOAD_BYTES = 64


@dataclasses.dataclass
class ResumeBenchConfig(tfds.core.BuilderConfig):
  num_records: int = 1_000_000


class BvlResumeBench(tfds.core.GeneratorBasedBuilder):
  """Small records (id, label, random bytes), stored in id order."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):  # As in datasets/shapes.py (TFDS 4.9's lookup fails).
    return epath.Path(__file__)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, disable_shuffling=True,  # On disk in id order.
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(dtype=np.int64),
            "label": tfds.features.ClassLabel(num_classes=10),
            "data": tfds.features.Tensor(shape=(PAYLOAD_BYTES,),
                                         dtype=np.uint8),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(self.builder_config.num_records)}

  def _generate_examples(self, num):
    rng = np.random.default_rng(0)
    chunk = 10_000
    for lo in range(0, num, chunk):
      data = rng.integers(0, 256, [min(chunk, num - lo), PAYLOAD_BYTES],
                          dtype=np.uint8)
      for i, row in enumerate(data):
        yield lo + i, {"id": lo + i, "label": (lo + i) % 10, "data": row}


def prepare(data_dir, num_records, num_shards):
  """Writes the dataset (if not there yet); returns its `TfdsSource`."""
  config = ResumeBenchConfig(name=f"n{num_records}_s{num_shards}",
                             num_records=num_records)
  builder = BvlResumeBench(config=config, data_dir=data_dir)
  if not builder.is_prepared():
    t0 = time.perf_counter()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        num_shards=num_shards, try_download_gcs=False))
    print(f"wrote {num_records} records in {num_shards} shards to "
          f"{builder.data_dir} in {time.perf_counter() - t0:.0f}s", flush=True)
  return core.TfdsSource.from_builder(builder)


def first_batch_seconds(source, *, start_step, batch_size, **kw):
  """Seconds to build the pipeline at `start_step` and get its first batch."""
  t0 = time.perf_counter()
  ds = input_pipeline.make_train_dataset(
      source, "train", pp="keep('id')", global_batch_size=batch_size,
      seed=0, process_index=0, process_count=1, start_step=start_step, **kw)
  next(ds.as_numpy_iterator())
  return time.perf_counter() - t0


def shuffle_quality(ids):
  """(corr(epoch position, disk position), corr of consecutive positions)."""
  ids = np.asarray(ids, np.float64)
  places = np.arange(len(ids), dtype=np.float64)
  return (float(np.corrcoef(places, ids)[0, 1]),
          float(np.corrcoef(ids[:-1], ids[1:])[0, 1]))


def epoch_ids(source, num, *, batch_size, **kw):
  """The ids of the first `num` examples of epoch 0."""
  ds = input_pipeline.make_train_dataset(
      source, "train", pp="keep('id')", global_batch_size=batch_size,
      seed=0, process_index=0, process_count=1, **kw)
  ids = []
  for batch in ds.as_numpy_iterator():
    ids.append(batch["id"])
    if sum(map(len, ids)) >= num:
      break
  return np.concatenate(ids)[:num]


def parse_args(argv=None):
  """The command-line options."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", default="/tmp/bvl_resume_bench")
  parser.add_argument("--num_records", type=int, default=1_000_000)
  parser.add_argument("--num_shards", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--shuffle_buffer_size", type=int, default=10_000)
  parser.add_argument("--block_sizes", default="256",
                      help="Comma-separated; 0 = one block (sequential).")
  parser.add_argument("--fractions", default="0,0.5,0.95")
  parser.add_argument("--repeats", type=int, default=3,
                      help="Timings per fraction (the median is printed).")
  parser.add_argument("--quality_examples", type=int, default=50_000)
  return parser.parse_args(argv)


def main(argv=None):
  """Runs the benchmark; returns {block_size: {fraction: seconds}}."""
  args = parse_args(argv)
  source = prepare(args.data_dir, args.num_records, args.num_shards)
  n = source.num_examples("train")
  print(f"{n} records, {args.num_shards} shards, batch {args.batch_size}, "
        f"shuffle_buffer_size {args.shuffle_buffer_size}, "
        f"{os.cpu_count()} CPUs")
  first_batch_seconds(source, start_step=0, batch_size=args.batch_size)
  results = {}  # (The untimed run above warms up TF's one-time costs.)
  for block_size in (int(b) for b in args.block_sizes.split(",")):
    kw = dict(batch_size=args.batch_size, block_size=block_size or n,
              shuffle_buffer_size=args.shuffle_buffer_size)
    times = {}
    for fraction in (float(f) for f in args.fractions.split(",")):
      step = int(fraction * n) // args.batch_size
      times[fraction] = float(np.median([
          first_batch_seconds(source, start_step=step, **kw)
          for _ in range(args.repeats)]))
      print(f"block_size {block_size or 'all'}: first batch at "
            f"{fraction:.0%} (step {step}): {times[fraction]:.2f}s",
            flush=True)
    if args.quality_examples:
      ids = epoch_ids(source, min(args.quality_examples, n), **kw)
      trend, lag1 = shuffle_quality(ids)
      print(f"block_size {block_size or 'all'}: first {len(ids)} examples: "
            f"corr(epoch position, disk position) {trend:+.3f}, "
            f"corr(consecutive disk positions) {lag1:+.3f}", flush=True)
    results[block_size] = times
  return results


if __name__ == "__main__":
  main()
