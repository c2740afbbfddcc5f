"""Helpers for writing pp ops: per-key application and per-op random seeds.

Op factories are registered in `registry.PP_OPS` and return `fn(data) ->
data` on a dict of tensors. Most ops transform one tensor; `keyed` turns a
factory of `fn(tensor) -> tensor` into a dict op that accepts `key=` (in
place), or `inkey=` / `outkey=` (read one key, write another).

Random ops take the op's stateless seed from `data["_rng"]` (set by the pp
builder for every op, from the example's `_seed`), so their draws are
reproducible: `keyed(..., random=True)` passes it as a second argument.
"""

import functools
import inspect

import tensorflow as tf

RNG_KEY = "_rng"
SEED_KEY = "_seed"


def fallback_seed():
  """A fresh stateless seed, for examples that carry no `_seed`."""
  return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)


def get_rng(data):
  """Returns the op's stateless seed (shape [2]) from `data`, or a fresh one."""
  rng = data.get(RNG_KEY)
  return fallback_seed() if rng is None else rng


def maybe_repeat(x, n):
  """Returns `x` as an n-tuple: an int `x` is repeated, a sequence kept."""
  if isinstance(x, int):
    return (x,) * n
  x = tuple(x)
  if len(x) != n:
    raise ValueError(f"Expected an int or {n} values, got {x!r}.")
  return x


def keyed(default_key="image", random=False):
  """Decorates a factory of tensor functions into a factory of dict ops.

  The decorated factory takes the original arguments plus keyword-only `key`
  (default `default_key`), `inkey` and `outkey` (both default to `key`).

  Args:
    default_key: the feature the op reads and writes by default.
    random: if True, the tensor function is called as `fn(tensor, seed)` with
      the op's stateless seed.

  Returns:
    A decorator.
  """

  def decorator(get_tensor_fn):

    @functools.wraps(get_tensor_fn)
    def factory(*args, key=default_key, inkey=None, outkey=None, **kwargs):
      tensor_fn = get_tensor_fn(*args, **kwargs)
      src = key if inkey is None else inkey
      dst = key if outkey is None else outkey

      def op(data):
        data = dict(data)
        x = tf.convert_to_tensor(data[src])  # Eager use may pass numpy.
        data[dst] = tensor_fn(x, get_rng(data)) if random else tensor_fn(x)
        return data

      return op

    factory.__signature__ = _with_key_params(get_tensor_fn, default_key)
    return factory

  return decorator


def _with_key_params(fn, default_key):
  """The signature of `fn` plus keyword-only key/inkey/outkey parameters."""
  sig = inspect.signature(fn)
  params = [p for p in sig.parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD]
  var_kw = [p for p in sig.parameters.values()
            if p.kind is inspect.Parameter.VAR_KEYWORD]
  kw_only = inspect.Parameter.KEYWORD_ONLY
  extra = [inspect.Parameter("key", kw_only, default=default_key),
           inspect.Parameter("inkey", kw_only, default=None),
           inspect.Parameter("outkey", kw_only, default=None)]
  return sig.replace(parameters=params + extra + var_kw)


def cast_like(x, dtype):
  """Casts float `x` to `dtype`; integers are rounded and saturated first."""
  if x.dtype == dtype:
    return x
  if dtype.is_integer:
    x = tf.round(x)
  return tf.saturate_cast(x, dtype)
