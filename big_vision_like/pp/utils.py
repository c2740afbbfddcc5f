"""Helpers for writing pp ops: per-key application and per-op random seeds.

Op factories are registered in `registry.PP_OPS` and return `fn(data) ->
data` on a dict of tensors. Most ops transform one tensor; `keyed` turns a
factory of `fn(tensor) -> tensor` into a dict op that accepts `key=` (in
place), or `inkey=` / `outkey=` (read one key, write another).

Random ops take the op's stateless seed from `data["_rng"]` (set by the pp
builder for every op, from the example's `_seed`), so their draws are
reproducible: `keyed(..., random=True)` passes it as a second argument.

Factories check their arguments with the `check_*` helpers, which raise
`ArgumentError`, so a bad pp string fails when it is built, before any data
flows, with a message naming the op and the argument.
"""

import functools
import inspect
import numbers

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


class ArgumentError(ValueError):
  """A bad argument of a pp op, found when the op is built.

  `str(error)` is "op: detail"; the pp builder puts `detail` in its own
  message, next to the op's name and the pp string.
  """

  def __init__(self, op, name, value, must):
    self.op = op
    self.detail = f"{name}={value!r} {must}"
    super().__init__(f"{op}: {self.detail}")


def _is_int(x):
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_number(x):
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_positive_int(op, name, value):
  """Returns `value` if it is an int > 0, else raises `ArgumentError`."""
  if not _is_int(value) or value <= 0:
    raise ArgumentError(op, name, value, "must be a positive int")
  return int(value)


def check_size(op, name, value):
  """Returns an int or (h, w) size as an (h, w) tuple of ints > 0."""
  hw = (value, value) if _is_int(value) else value
  if not (isinstance(hw, (tuple, list)) and len(hw) == 2
          and all(_is_int(v) and v > 0 for v in hw)):
    raise ArgumentError(op, name, value, "must be a positive int or an (h, w) "
                        "pair of positive ints")
  return tuple(int(v) for v in hw)


def check_number(op, name, value, low=None, high=None):
  """Returns `value` if it is a real number (not a bool) in [low, high]."""
  if not _is_number(value):
    raise ArgumentError(op, name, value, "must be a number")
  if low is not None and value < low:
    raise ArgumentError(op, name, value, f"must be >= {low}")
  if high is not None and value > high:
    raise ArgumentError(op, name, value, f"must be <= {high}")
  return value


def check_numbers(op, name, value):
  """Returns a number or a non-empty sequence of numbers, else raises."""
  values = value if isinstance(value, (tuple, list)) else [value]
  if not values or not all(_is_number(v) for v in values):
    raise ArgumentError(op, name, value,
                        "must be a number or a sequence of numbers")
  return value


def check_bool(op, name, value):
  """Returns `value` if it is True or False, else raises `ArgumentError`."""
  if not isinstance(value, bool):
    raise ArgumentError(op, name, value, "must be True or False")
  return value


def check_str(op, name, value, allow_none=False):
  """Returns `value` if it is a str (or None when allowed), else raises."""
  if not (isinstance(value, str) or (allow_none and value is None)):
    must = "a str or None" if allow_none else "a str"
    raise ArgumentError(op, name, value, f"must be {must}")
  return value


def check_choice(op, name, value, choices, hint=""):
  """Returns `value` if it is one of `choices`, else raises `ArgumentError`.

  Args:
    op: the op's name, for the message.
    name: the argument's name.
    value: the value given.
    choices: the allowed values.
    hint: appended to the message (e.g. the likely mistake).

  Returns:
    `value`.
  """
  # `True == 1`: a bool only matches a bool.
  if not any(c == value and isinstance(c, bool) == isinstance(value, bool)
             for c in choices):
    listed = ", ".join(repr(c) for c in choices)
    raise ArgumentError(op, name, value, f"is not one of {listed}{hint}")
  return value


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
      op_name = get_tensor_fn.__name__.removeprefix("get_")
      check_str(op_name, "key", key)
      check_str(op_name, "inkey", inkey, allow_none=True)
      check_str(op_name, "outkey", outkey, allow_none=True)
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
  """Casts float `x` to `dtype`; integers are rounded and saturated first.

  This is AutoAugment's rule (`autoaugment.py`); resampling ops use
  `cast_back`, big_vision's rule.
  """
  if x.dtype == dtype:
    return x
  if dtype.is_integer:
    x = tf.round(x)
  return tf.saturate_cast(x, dtype)


def cast_back(x, dtype, rounding=False):
  """Casts a resampled image `x` back to its input's `dtype`, as big_vision.

  big_vision clips to the range of `dtype`, then `tf.cast`s: a float to an
  integer dtype truncates toward zero (uint8: 4.9 -> 4, 255.7 -> 255,
  -0.3 -> 0); float dtypes keep the values (float32: bit-identical, bar
  infinities, which become the largest finite float32).

  Args:
    x: the resampled tensor (float32 from `tf.image.resize`, or already of
      `dtype` for `nearest`).
    dtype: the input's dtype.
    rounding: round to nearest (`tf.round`: halves to even) before clipping,
      when casting floats to an integer dtype; not big_vision's rule.

  Returns:
    `x` as `dtype`.
  """
  dtype = tf.as_dtype(dtype)
  if rounding and x.dtype.is_floating and dtype.is_integer:
    x = tf.round(x)
  # A wider float range than x's own would overflow: clipping is a no-op.
  wider = dtype.is_floating and x.dtype.is_floating and dtype.max > x.dtype.max
  if not wider:
    x = tf.clip_by_value(x, dtype.min, dtype.max)
  return tf.cast(x, dtype)
