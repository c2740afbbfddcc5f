r"""A timm model's train step, timed one step per request (the `torch` extra).

  python -m big_vision_like.tools.torch_step --model vit_small_patch16_224 \
      --batch_size 16 --res 224 --dtype_mm float32

`tools/benchmark.py --compare timm` runs this as a subprocess: it prints
`ready` once the model is built and one step has run, then reads lines
from stdin and answers each with the seconds of one more train step
(forward, softmax cross-entropy, backward, AdamW update, synchronised).
Interleaving these requests with the JAX steps measures both in the same
minutes of the same machine. The step is the one a timm user writes:
eager PyTorch (timm's fused `scaled_dot_product_attention`), AdamW with
the benchmark's lr and weight decay, cuDNN's autotuning (`cudnn.benchmark`,
as timm's train.py sets it), `torch.autocast` to bfloat16 when `--dtype_mm
bfloat16`, on CUDA when available.

With `--matmul_size N` the `ready` line also says torch's own peak here:
`ready matmul peak 412.3 GFLOP/s`, the FLOP/s of an N x N x N matmul in the
step's matmul dtype (torch's BLAS / oneDNN kernels, all of its threads),
which the benchmark sets beside the peak of XLA's matmul.
"""

import argparse
import sys
import time


def _import_torch():
  try:
    import timm  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise SystemExit(f"--compare timm needs the torch extra (pip install -e "
                     f"'.[torch]'): {e}") from None
  return torch, timm


def build_step(model_name, batch_size, res, dtype_mm, device=None):
  """Returns `step()`, which runs one synchronised train step of timm's model."""
  torch, timm = _import_torch()
  device = device or ("cuda" if torch.cuda.is_available() else "cpu")
  # As timm's train.py: cuDNN picks its fastest convolution per shape.
  torch.backends.cudnn.benchmark = True
  torch.manual_seed(0)
  kw = {"img_size": res} if "vit" in model_name or "mixer" in model_name else {}
  model = timm.create_model(model_name, pretrained=False, num_classes=1000,
                            **kw).to(device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
  images = torch.zeros(batch_size, 3, res, res, device=device)
  labels = torch.arange(batch_size, device=device) % 1000
  autocast = torch.autocast(device, dtype=torch.bfloat16,
                            enabled=dtype_mm == "bfloat16")
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def step():
    opt.zero_grad(set_to_none=True)
    with autocast:
      loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    opt.step()
    sync()

  return step


def matmul_peak(n, dtype_mm, device=None, steps=5):
  """FLOP/s of torch's n x n x n matmul in `dtype_mm` (median of `steps`)."""
  torch, _ = _import_torch()
  device = device or ("cuda" if torch.cuda.is_available() else "cpu")
  dtype = torch.bfloat16 if dtype_mm == "bfloat16" else torch.float32
  # Random operands, as in `visibility.matmul_peak` (constant ones or zeros
  # run faster on a GPU).
  a = torch.randn(n, n, generator=torch.Generator().manual_seed(0)).to(
      device=device, dtype=dtype)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  times = []
  for i in range(steps + 2):  # The first two warm up.
    sync()
    t0 = time.perf_counter()
    torch.matmul(a, a)
    sync()
    if i >= 2:
      times.append(time.perf_counter() - t0)
  return 2.0 * n**3 / sorted(times)[len(times) // 2]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", required=True, help="A timm model name.")
  parser.add_argument("--batch_size", type=int, required=True)
  parser.add_argument("--res", type=int, default=224)
  parser.add_argument("--dtype_mm", choices=("float32", "bfloat16"),
                      default="float32")
  parser.add_argument("--matmul_size", type=int, default=0,
                      help="Also measure torch's matmul peak at this size.")
  args = parser.parse_args(argv)
  step = build_step(args.model, args.batch_size, args.res, args.dtype_mm)
  step()  # Warm-up.
  note = ""
  if args.matmul_size:
    peak = matmul_peak(args.matmul_size, args.dtype_mm)
    note = f" matmul peak {peak / 1e9:.1f} GFLOP/s"
  print("ready" + note, flush=True)
  for _ in sys.stdin:
    t0 = time.perf_counter()
    step()
    print(time.perf_counter() - t0, flush=True)


if __name__ == "__main__":
  main()
