"""Config helpers: `get_config(arg)` parsing, durations, strict key checks.

Nothing here reads a key with a silent default: a key the trainer does not know
is an error that names it (with close matches), and so is a duration given in
two units at once.
"""

import difflib
import importlib.util
import math
import os

import ml_collections

REQUIRED = object()  # A default that must be overridden by the config.
OPEN = object()  # A sub-dict whose keys its consumer validates (e.g. kwargs).
_DURATION_UNITS = ("steps", "epochs", "examples", "percent")


# The repository's configs/ (next to the package in a source checkout).
CONFIGS_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load(config, arg=None):
  """The ConfigDict of a config file, as `--config FILE.py:ARG` builds it.

  Args:
    config: a path ("configs/vit_digits.py", "my.py:short"), or the name of
      one of the repository's configs ("vit_digits", "siglip_shapes:short").
    arg: the `get_config` argument (instead of a ":ARG" suffix).
  """
  path, _, suffix = config.partition(":")
  if suffix and arg is not None:
    raise ValueError(f"config {config!r}: give the argument once, either "
                     f"after ':' or as arg={arg!r}.")
  if not path.endswith(".py"):
    path = os.path.join(CONFIGS_DIR, f"{path}.py")
  if not os.path.exists(path):
    known = sorted(f[:-3] for f in os.listdir(CONFIGS_DIR)
                   if f.endswith(".py")) if os.path.isdir(CONFIGS_DIR) else []
    raise FileNotFoundError(f"config {config!r}: no file {path}"
                            + (f"; repository configs: {known}" if known
                               else ""))
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"_bvl_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(suffix or arg)


def _parse_value(text, like):
  if isinstance(like, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError(f"cannot parse {text!r} as a bool")
  if isinstance(like, (int, float)):
    return type(like)(text)
  return text


def parse_arg(arg, *, lazy=False, **spec):
  """Parses the `FILE.py:k=v,k2=v2` argument of a config file's get_config.

  Args:
    arg: the string after the colon (may be None or empty).
    lazy: if True, keys not in `spec` are kept as strings; otherwise an error.
    **spec: known keys and their defaults; a default's type is the key's type.

  Returns:
    A ConfigDict with every key of `spec`, overridden by `arg`.
  """
  out = ml_collections.ConfigDict(dict(spec))
  for item in (arg or "").split(","):
    if not item.strip():
      continue
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep:  # Bare `flag` means flag=True.
      value = "true"
    if key not in spec:
      if not lazy:
        raise ValueError(f"Unknown config argument {key!r} in {arg!r}; "
                         f"known: {sorted(spec)}.")
      out[key] = value
      continue
    try:
      out[key] = _parse_value(value, spec[key])
    except ValueError as e:
      raise ValueError(f"Config argument {key}={value!r}: {e}") from None
  return out


def to_steps(kw, name, *, batch_size=None, data_size=None, total_steps=None,
             default=REQUIRED):
  """Reads a duration given as `{name}_{steps,epochs,examples,percent}`.

  Exactly one unit may be set (to a non-None value). `percent` is a fraction
  of `total_steps` in [0, 1], as in big_vision.

  Args:
    kw: a mapping (dict or ConfigDict) holding the duration keys.
    name: the duration's name, e.g. "warmup", "total", "log_training".
    batch_size: global batch size, needed for epochs and examples.
    data_size: number of training examples, needed for epochs.
    total_steps: needed for percent.
    default: returned when no unit is set; REQUIRED makes that an error.

  Returns:
    The duration in whole steps.
  """
  given = {u: kw.get(f"{name}_{u}") for u in _DURATION_UNITS}
  given = {u: v for u, v in given.items() if v is not None}
  if len(given) > 1:
    keys = ", ".join(f"{name}_{u}" for u in given)
    raise ValueError(f"Duration {name!r} is given more than once: {keys}.")
  if not given:
    if default is REQUIRED:
      raise ValueError(f"Duration {name!r} is required: set one of "
                       + ", ".join(f"{name}_{u}" for u in _DURATION_UNITS))
    return default
  (unit, value), = given.items()
  if not is_finite_number(value):
    raise ValueError(f"{name}_{unit}={value!r} must be a finite number.")

  def need(what, v):
    if v is None:
      raise ValueError(f"{name}_{unit} needs the {what}.")
    return v

  if unit == "steps":
    steps = value
  elif unit == "epochs":
    steps = value * need("dataset size", data_size) / need("batch size",
                                                            batch_size)
  elif unit == "examples":
    steps = value / need("batch size", batch_size)
  else:
    if not 0 <= value <= 1:
      raise ValueError(f"{name}_percent={value} must be a fraction in [0, 1].")
    steps = value * need("total steps", total_steps)
  if steps < 0:
    raise ValueError(f"{name}_{unit}={value} is negative.")
  return int(round(steps))


def check_and_fill(config, defaults, path="config"):
  """Returns `defaults` overridden by `config`; unknown keys are errors.

  Args:
    config: the user's ConfigDict (or dict).
    defaults: a nested dict of known keys; a value REQUIRED must be given by
      the config; a value OPEN accepts any sub-dict (its consumer checks it).
    path: the name used in error messages.

  Returns:
    A new ConfigDict with every default key present.
  """
  config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return ml_collections.ConfigDict(_fill(config, defaults, path))


def _fill(config, defaults, path):
  unknown = sorted(set(config) - set(defaults))
  if unknown:
    key = unknown[0]
    close = difflib.get_close_matches(key, list(defaults), n=3)
    hint = f" Did you mean {', '.join(f'{path}.{c}' for c in close)}?" if close else ""
    raise KeyError(f"Unknown config key {path}.{key}.{hint}"
                   + (f" (also unknown: {unknown[1:]})" if unknown[1:] else ""))
  out = {}
  for key, default in defaults.items():
    sub = f"{path}.{key}"
    if key not in config:
      if default is REQUIRED:
        raise KeyError(f"Missing required config key {sub}.")
      if default is OPEN:
        out[key] = {}
      elif isinstance(default, dict):
        out[key] = _fill({}, default, sub)
      else:
        out[key] = default
      continue
    value = config[key]
    _check_type(sub, value, default)
    if isinstance(default, dict) and default and value is not None:
      if not isinstance(value, dict):
        raise TypeError(f"Config key {sub} must be a dict, got {value!r}.")
      out[key] = _fill(value, default, sub)
    else:
      out[key] = value
  return out


def is_integer(value):
  """An int that is not a bool (`True` is an int in Python)."""
  return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value):
  """A finite int or float that is not a bool (no nan, no inf, no str)."""
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _kind(value):
  """"bool", "number" or "str" for scalars of those types, else None."""
  if isinstance(value, bool):
    return "bool"
  if isinstance(value, (int, float)):
    return "number"
  if isinstance(value, str):
    return "str"
  return None


def _check_type(path, value, default):
  """Rejects a scalar of another kind than its default (None is allowed).

  E.g. `seed="0"` or `input.cache_raw="False"` (a non-empty string is true)
  would otherwise fail deep inside the trainer, or silently do the opposite.
  """
  kind = _kind(default)
  if kind is None or value is None or _kind(value) == kind:
    return
  raise TypeError(f"Config key {path}={value!r} must be a {kind} "
                  f"(like its default {default!r}), not "
                  f"{type(value).__name__}.")


def check_kwargs(fn, kwargs, where, *, skip=(), also=()):
  """Raises an error naming `where` if `fn` does not accept every kwarg.

  Args:
    fn: a function or class whose signature is checked.
    kwargs: the keyword arguments a config section will pass to `fn`.
    where: the config path for the message, e.g. "config.model".
    skip: parameter names the caller passes itself (not from the config).
    also: keys of the config section that the caller reads (and removes)
      before calling `fn`, e.g. an evaluator's `type` and `log_steps`: they
      are listed as known and offered as close matches.
  """
  import inspect  # pylint: disable=g-import-not-at-top
  params = inspect.signature(fn).parameters
  if any(p.kind == p.VAR_KEYWORD for p in params.values()):
    return
  named = {n for n, p in params.items()
           if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
  unknown = sorted(set(kwargs) - named - set(also))
  if unknown:
    known = sorted((named - set(skip)) | set(also))
    close = difflib.get_close_matches(unknown[0], known, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise KeyError(f"Unknown key(s) {unknown} in {where}.{hint} "
                   f"Known: {known}.")
