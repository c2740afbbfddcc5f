r"""Input-pipeline throughput on synthetic JPEGs, ImageNet-style pp.

  python -m big_vision_like.tools.pipeline_benchmark --num_images 512 \
      --batch_size 64 --batches 20

Writes `num_images` JPEGs (500x375 by default, smooth random content, quality
90) as an `imagefolder` tree in a temporary directory (or reads `--root`, an
existing `ROOT/train/CLASS/*.jpg` tree), runs the training pipeline
(`input_pipeline.make_train_dataset`, one process) with the pp chosen by
`default_pp` and prints examples/s over `--batches` batches after
`--warmup` batches.
"""

import argparse
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from big_vision_like import cpu_devices
from big_vision_like import input_pipeline
from big_vision_like.registry import PP_OPS


def default_pp(size=224):
  """The fastest available ImageNet-style training pp string for `size`."""
  tail = "flip_lr|value_range(-1, 1)|keep('image', 'label')"
  if "decode_jpeg_and_inception_crop" in PP_OPS:
    return f"decode_jpeg_and_inception_crop({size})|{tail}"
  if "inception_crop" in PP_OPS:
    return f"decode|inception_crop({size})|{tail}"
  return f"decode|resize({size})|{tail}"


def write_images(root, num_images, height, width, *, num_classes=4, seed=0):
  """Writes `root/train/class_<i>/<n>.jpg` synthetic JPEGs; returns root."""
  rng = np.random.default_rng(seed)
  for n in range(num_images):
    directory = os.path.join(root, "train", f"class_{n % num_classes}")
    os.makedirs(directory, exist_ok=True)
    coarse = rng.uniform(0, 255, [1, 6, 8, 3]).astype(np.float32)
    image = tf.image.resize(coarse, [height, width], method="bicubic")[0]
    image += rng.normal(0, 8, [height, width, 3]).astype(np.float32)
    image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
    tf.io.write_file(os.path.join(directory, f"{n}.jpg"),
                     tf.io.encode_jpeg(image, quality=90))
  return root


def measure(source, pp, *, batch_size, warmup, batches, split="train"):
  """Examples/s of the training pipeline over `batches` timed batches.

  Args:
    source: a `DataSource` or a name (e.g. "imagefolder:/tmp/x").
    pp: the pp string.
    batch_size: the batch size (one process).
    warmup: batches consumed before timing.
    batches: batches timed.
    split: the split.

  Returns:
    (examples per second, the first batch's element shapes).
  """
  ds = input_pipeline.make_train_dataset(
      source, split, pp=pp, global_batch_size=batch_size, seed=0,
      process_index=0, process_count=1)
  it = ds.as_numpy_iterator()
  first = next(it)
  for _ in range(max(0, warmup - 1)):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  seconds = time.perf_counter() - t0
  return batches * batch_size / seconds, {k: v.shape for k, v in first.items()}


def parse_args(argv=None):
  """The command-line options (argparse: no global absl flags to clash)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--num_images", type=int, default=512,
                      help="Synthetic images to write.")
  parser.add_argument("--height", type=int, default=375)
  parser.add_argument("--width", type=int, default=500)
  parser.add_argument("--root", default=None,
                      help="An existing imagefolder root to read instead.")
  parser.add_argument("--size", type=int, default=224,
                      help="Output resolution of the pp.")
  parser.add_argument("--pp", default=None,
                      help="pp string (default: `default_pp(size)`).")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--warmup", type=int, default=3,
                      help="Untimed batches first.")
  parser.add_argument("--batches", type=int, default=20,
                      help="Timed batches.")
  return parser.parse_args(argv)


def main(argv=None):
  """Runs the benchmark; returns examples/s."""
  args = parse_args(argv)
  pp = args.pp or default_pp(args.size)
  print(f"pp: {pp}")
  with tempfile.TemporaryDirectory() as tmp:
    root = args.root
    if root is None:
      t0 = time.perf_counter()
      root = write_images(tmp, args.num_images, args.height, args.width)
      print(f"wrote {args.num_images} {args.width}x{args.height} JPEGs in "
            f"{time.perf_counter() - t0:.1f}s")
    rate, shapes = measure(f"imagefolder:{root}", pp,
                           batch_size=args.batch_size, warmup=args.warmup,
                           batches=args.batches)
  print(f"batch {args.batch_size}: {shapes}")
  print(f"{rate:.1f} examples/s ({cpu_devices.usable_cores()} of "
        f"{os.cpu_count()} CPUs usable)")
  return rate


if __name__ == "__main__":
  main()
