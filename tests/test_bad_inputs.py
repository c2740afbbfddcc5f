"""Every bad input a user can give fails at once, naming the problem.

One table, `CASES`: each row is (id, trigger, exception type, regex). The
trigger makes one mistake a user can make (a config key or value, a
command-line flag, a pp string, an own-data file, a TFDS name or split, a
checkpoint or `.npz` file, a converter input, a workdir); the error must be of
that type and its message must match the regex (`re.search`): it names the
config key, the pp op and argument, the file and JSONL line, the checkpoint
path or the parameters. Command-line cases run a subprocess (or argparse in
process) and must exit non-zero; their message is the captured stderr.

Every case fails before the first train step. Files a case points at (a
trained workdir, an existing output, a file in the way) are fingerprinted
before the trigger and compared after: a failure loses nothing already
written, and creates no output where it fails.
"""

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like import checkpoint
from big_vision_like import train
from big_vision_like.tools import convert
from tests.test_train import _env
from tests.test_train import CONFIG
from tests.test_train import ROOT
from tests.test_train import tiny_config

DELETE = object()  # A config change that removes the key.


class ExitError(Exception):
  """A command that exited non-zero; the message is what it printed."""

  def __init__(self, code, output):
    super().__init__(f"exit status {code}:\n{output}")
    self.code = code


# ---------------------------------------------------------------- context


def _digest(path):
  """The SHA-256 of a file's bytes."""
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _snapshot(path):
  """{relative path: SHA-256 (files) or None (dirs)}; None if no `path`."""
  if not os.path.lexists(path):
    return None
  if not os.path.isdir(path):
    return {"": _digest(path) if os.path.exists(path) else "dangling"}
  out = {}
  for root, dirs, files in os.walk(path):
    rel = os.path.relpath(root, path)
    out.update({os.path.join(rel, d) + "/": None for d in dirs})
    out.update({os.path.join(rel, f): _digest(os.path.join(root, f))
                for f in files})
  return out


class Ctx:
  """What a trigger may use: a fresh temp dir, a trained workdir, guards."""

  def __init__(self, tmp_path, trained_fn):
    self.tmp = str(tmp_path)
    self._trained_fn = trained_fn
    self._guarded = {}
    self._count = 0

  def path(self, name=None):
    """A new path under the temp dir (nothing is created)."""
    self._count += 1
    return os.path.join(self.tmp, name or f"p{self._count}")

  def guard(self, path):
    """Records `path` (file, dir or nothing) to compare after the error."""
    self._guarded[path] = _snapshot(path)
    return path

  def write(self, name, data):
    """A guarded file `name` holding `data` (str or bytes)."""
    path = self.path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data.encode() if isinstance(data, str) else data)
    return self.guard(path)

  def trained(self, copy=True):
    """A guarded workdir with checkpoints at steps 1 and 2 (width 16).

    A copy by default; `copy=False` is the shared one (for readers only).
    """
    src = self._trained_fn()
    if not copy:
      return self.guard(src)
    dst = self.path("trained")
    shutil.copytree(src, dst, symlinks=True)
    return self.guard(dst)

  def assert_nothing_lost(self):
    """Every guarded path is as it was (or still absent)."""
    for path, before in self._guarded.items():
      assert _snapshot(path) == before, f"{path} changed"


@pytest.fixture(scope="module")
def trained_fn(tmp_path_factory):
  """Trains the shared workdir on first use (2 steps, checkpoints 1 and 2)."""
  made = []

  def get():
    if not made:
      workdir = str(tmp_path_factory.mktemp("trained"))
      cfg = tiny_config(total_steps=2, ckpt_steps=1, log_training_steps=1,
                        evals={})
      train.train_and_evaluate(cfg, workdir)
      made.append(workdir)
    return made[0]

  return get


@pytest.fixture
def ctx(tmp_path, trained_fn):
  """The case's `Ctx`."""
  return Ctx(tmp_path, trained_fn)


# ---------------------------------------------------------------- triggers


def _set(tree, dotted, value):
  """Sets (or with DELETE removes) the key `a.b.c` of a nested dict."""
  *parents, leaf = dotted.split(".")
  for key in parents:
    tree = tree[key]
  if value is DELETE:
    del tree[leaf]
  else:
    tree[leaf] = value


def _train(ctx, changes=None, workdir=None):
  """Runs the tiny digits config with `changes` {dotted key: value}."""
  cfg = tiny_config().to_dict()
  for dotted, value in (changes or {}).items():
    value = value(ctx) if callable(value) else value
    _set(cfg, dotted, value)
  train.train_and_evaluate(cfg, workdir or ctx.path("workdir"))


def _config(**changes):
  """A trigger: the tiny config with `changes`; `__` stands for `.`."""
  changes = {k.replace("__", "."): v for k, v in changes.items()}
  return lambda ctx: _train(ctx, changes)


def _cli(module, *args):
  """A trigger: `python -m module args`; raises ExitError if it fails."""

  def run(ctx):
    out = subprocess.run(
        [sys.executable, "-m", module, *(a.format(tmp=ctx.tmp) for a in args)],
        env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=180)
    if out.returncode:
      raise ExitError(out.returncode, out.stderr)

  return run


def _exits(fn, *args):
  """Calls `fn(*args)`; a SystemExit != 0 becomes an ExitError."""
  err = io.StringIO()
  try:
    with contextlib.redirect_stderr(err):
      fn(*args)
  except SystemExit as e:
    if e.code not in (None, 0):
      text = e.code if isinstance(e.code, str) else ""
      raise ExitError(e.code, err.getvalue() + text) from None


def _convert(*args):
  """A trigger: `tools.convert` with args ({tmp} is the case's temp dir)."""
  return lambda ctx: _exits(convert.main,
                            [a.format(tmp=ctx.tmp) for a in args])


# ---------------------------------------------------------------- files


def _png(value=0):
  """The bytes of an 8x8 grey PNG."""
  return tf.io.encode_png(np.full((8, 8, 1), value, np.uint8)).numpy()


def _good_npz(ctx):
  """A guarded `.npz` of two arrays, `a/b` and `c`."""
  buf = io.BytesIO()
  np.savez(buf, **{"a/b": np.arange(1000, dtype=np.float32),
                   "c": np.zeros(2, np.float32)})
  return ctx.write("good.npz", buf.getvalue())


def _damaged_npz(ctx):
  """A `.npz` with one byte of its array data flipped."""
  with open(_good_npz(ctx), "rb") as f:
    data = bytearray(f.read())
  data[len(data) // 2] ^= 0xFF  # Inside the array bytes: a CRC mismatch.
  return ctx.write("damaged.npz", bytes(data))


def _imagefolder(ctx, images=0):
  """ROOT/train/cat/ holding `images` PNGs; returns ROOT."""
  root = ctx.path("imagefolder")
  os.makedirs(os.path.join(root, "train", "cat"))
  for i in range(images):
    with open(os.path.join(root, "train", "cat", f"{i}.png"), "wb") as f:
      f.write(_png(i))
  return root


def _jsonl(ctx, *lines):
  """A `jsonl:ROOT` name: ROOT/train.jsonl holding `lines`, and ROOT/a.png."""
  root = ctx.path("jsonl")
  os.makedirs(root)
  with open(os.path.join(root, "a.png"), "wb") as f:
    f.write(_png())
  with open(os.path.join(root, "train.jsonl"), "w") as f:
    f.write("".join(line + "\n" for line in lines))
  return f"jsonl:{root}"


def _empty_dir(ctx):
  """A new empty directory."""
  path = ctx.path("empty")
  os.makedirs(path)
  return path


def _truncated_npz(ctx):
  """The first 100 bytes of a `.npz`."""
  with open(_good_npz(ctx), "rb") as f:
    return ctx.write("cut.npz", f.read()[:100])


def _own_data(source_fn):
  """A trigger: train on `source_fn(ctx)` (an own-data name), split train."""
  return lambda ctx: _train(ctx, {"input.data": {"name": source_fn(ctx),
                                                 "split": "train"}})


def _wider(**extra):
  """Config changes: the model of the trained workdir, width 24 (not 16)."""
  return {"model.width": 24, "evals": {}, "total_steps": 4, **extra}


def _pp_with_depth(depth):
  """The digits pp string with `onehot(depth)` (the labels have 10 classes)."""
  return tiny_config().input.pp.replace("onehot(10", f"onehot({depth}")


# ---------------------------------------------------------------- triggers of
# more than one line


def _resume_wider(ctx):
  """Reruns a trained workdir with a wider model."""
  _train(ctx, _wider(), workdir=ctx.trained())


def _resume_bad_batch(ctx):
  """Reruns a trained workdir with a batch that does not divide."""
  _train(ctx, {"input.batch_size": 12}, workdir=ctx.trained())


def _model_init_wider(ctx):
  """Starts a wider model from the trained workdir's params."""
  _train(ctx, _wider(model_init=ctx.trained(copy=False)))


def _model_init_text_npz(ctx):
  """Starts from a text file called x.npz."""
  _train(ctx, {"model_init": ctx.write("x.npz", "not an archive\n")})


def _model_init_bad_checksum(ctx):
  """Starts from a workdir whose latest checkpoint fails its checksums."""
  workdir = ctx.trained()
  record = os.path.join(workdir, "checkpoints", "2", "checksums", "metadata")
  with open(record) as f:
    checksums = json.load(f)
  checksums["arrays"]["params/embedding/kernel"]["fingerprint"][0] ^= 1
  with open(record, "w") as f:
    json.dump(checksums, f)
  _train(ctx, {"model_init": ctx.guard(workdir)})


def _load_subtree(ctx):
  """Loads a subtree the `.npz` does not have."""
  checkpoint.load_params(_good_npz(ctx) + ":img")


def _load_empty_dir(ctx):
  """Starts from a directory holding no checkpoint."""
  _train(ctx, {"model_init": _empty_dir(ctx)})


def _workdir_is_file(ctx):
  """Trains in a workdir that is a regular file."""
  _train(ctx, workdir=ctx.write("afile", "keep me"))


def _workdir_under_file(ctx):
  """Trains in a workdir below a regular file."""
  _train(ctx, workdir=os.path.join(ctx.write("afile", "keep me"), "sub"))


def _checkpoints_is_file(ctx):
  """Trains in a workdir whose `checkpoints` is a regular file."""
  workdir = ctx.path("wd")
  os.makedirs(workdir)
  ctx.write("wd/checkpoints", "keep me")
  _train(ctx, workdir=workdir)


def _checkpoints_link_under_file(ctx):
  """Trains where `checkpoints` links to a path below a regular file.

  (Tests run as root, for whom permission bits deny nothing: a path below
  a regular file is what cannot be written whoever you are.)
  """
  workdir = ctx.path("wd")
  os.makedirs(workdir)
  blocker = ctx.write("afile", "keep me")
  os.symlink(os.path.join(blocker, "ckpts"),
             os.path.join(workdir, "checkpoints"))
  _train(ctx, workdir=workdir)


def _convert_missing_file(ctx):
  """`python -m ...tools.convert` of a file that does not exist."""
  _cli("big_vision_like.tools.convert", "--from", "npz", "--to", "orbax",
       "{tmp}/nope.npz", ctx.guard(ctx.path("out")))(ctx)


def _convert_npz_from_orbax(ctx):
  """`--from npz` of an orbax workdir."""
  out = ctx.guard(ctx.path("out.npz"))
  convert.main(["--from", "npz", "--to", "npz", ctx.trained(copy=False), out])


def _convert_orbax_from_npz(ctx):
  """`--from orbax` of a `.npz` file."""
  out = ctx.guard(ctx.path("out.npz"))
  convert.main(["--from", "orbax", "--to", "npz", _good_npz(ctx), out])


def _convert_existing_output(ctx):
  """Converts onto an existing output, without --overwrite."""
  out = ctx.write("out.npz", "an earlier result")
  convert.main(["--from", "npz", "--to", "npz", _good_npz(ctx), out])


def _convert_without_torch(ctx):
  """`--from timm_vit` where `import torch` fails."""
  src = ctx.write("model.pth", b"\0" * 16)
  out = ctx.guard(ctx.path("out.npz"))
  with mock.patch.dict(sys.modules, {"torch": None}):
    convert.main(["--from", "timm_vit", "--to", "npz", src, out,
                  "--variant", "Ti/16"])


def _jsonl_bad_image(ctx):
  """Trains on a JSONL index whose second image is cut after 30 bytes."""
  name = _jsonl(ctx, '{"image": "a.png", "label": 1}',
                '{"image": "b.png", "label": 2}')
  with open(os.path.join(name.split(":", 1)[1], "b.png"), "wb") as f:
    f.write(_png()[:30])  # A PNG header, then nothing.
  _train(ctx, {"input.data": {"name": name, "split": "train"}})


_TRAIN = "big_vision_like.train"
_DIGITS = f"--config={CONFIG}:short,tune"

# ---------------------------------------------------------------- the table

CASES = [
    # Config keys: unknown or misspelled, at several levels.
    ("config_top_level_typo", _config(lrr=0.1), KeyError,
     r"Unknown config key config\.lrr\. Did you mean config\.lr\b"),
    ("config_input_typo", _config(input__batchsize=32), KeyError,
     r"config\.input\.batchsize\. Did you mean config\.input\.batch_size"),
    ("config_agc_typo", _config(agc={"clipp": 0.1}), KeyError,
     r"config\.agc\.clipp\. Did you mean config\.agc\.clip\b"),
    ("config_data_split_typo",
     _config(input__data={"name": "bvl_digits", "splt": "train"}), KeyError,
     r"config\.input\.data needs `split`"),
    ("config_model_typo_suggestion", _config(model__widht=16), KeyError,
     r"'widht'.*Did you mean \['width'\]"),
    ("config_loss_kw_typo", _config(loss_kw={"label_smothing": 0.1}),
     KeyError, r"\['label_smothing'\] in config\.loss_kw.*'label_smoothing'"),
    ("config_optax_typo", _config(optax={"b3": 0.9}), ValueError,
     r"Unknown key config\.optax\.b3 for optax_name='adamw'"),
    ("config_eval_typo", _config(evals__validation__top_kk=3), KeyError,
     r"\['top_kk'\] in config\.evals\.validation.*Did you mean \['top_k'\]"),
    ("config_eval_schedule_typo", _config(evals__validation__log_step=3),
     KeyError, r"Known: \[(?=[^\]]*'log_steps')(?=[^\]]*'type')"),
    ("config_model_load_typo", _config(model_load={"dont_laod": ["head/.*"]}),
     KeyError, r"\['dont_laod'\] in config\.model_load\. Did you mean "
     r"\['dont_load'\]"),
    ("config_missing_model_name", _config(model_name=DELETE), KeyError,
     r"Missing required config key config\.model_name"),
    ("config_input_not_a_dict", _config(input="bvl_digits"), TypeError,
     r"config\.input must be a dict"),
    # Config values: sizes, numbers, types.
    ("batch_size_negative", _config(input__batch_size=-8), ValueError,
     r"config\.input\.batch_size=-8: .*positive integer"),
    ("batch_size_zero", _config(input__batch_size=0), ValueError,
     r"config\.input\.batch_size=0: .*positive integer"),
    ("batch_size_indivisible", _config(input__batch_size=12), ValueError,
     r"config\.input\.batch_size=12 does not divide over the 8 devices"),
    ("batch_size_str", _config(input__batch_size="32"), ValueError,
     r"config\.input\.batch_size='32'"),
    ("batch_size_float", _config(input__batch_size=32.0), ValueError,
     r"config\.input\.batch_size=32\.0"),
    ("cpu_devices_zero", _config(cpu_devices=0), ValueError,
     r"config\.cpu_devices=0: expected 'auto' or an integer >= 1"),
    ("lr_nan", _config(lr=float("nan")), ValueError,
     r"config\.lr=nan: must be a finite number"),
    ("lr_negative", _config(lr=-0.1), ValueError, r"config\.lr=-0\.1"),
    ("lr_str", _config(lr="1e-3"), TypeError,
     r"config\.lr='1e-3' must be a number"),
    ("wd_negative", _config(wd=-1.0), ValueError, r"config\.wd=-1\.0"),
    ("seed_str", _config(seed="0"), TypeError,
     r"config\.seed='0' must be a number"),
    ("cache_raw_str", _config(input__cache_raw="False"), TypeError,
     r"config\.input\.cache_raw='False' must be a bool"),
    ("total_steps_zero", _config(total_steps=0), ValueError,
     r"Training has 0 steps; set config\.total_steps"),
    ("total_steps_negative", _config(total_steps=-5), ValueError,
     r"total_steps=-5 is negative"),
    ("total_steps_str", _config(total_steps="12"), ValueError,
     r"total_steps='12' must be a finite number"),
    ("total_two_units", _config(total_epochs=2), ValueError,
     r"'total' is given more than once: total_steps, total_epochs"),
    ("grad_clip_str", _config(grad_clip_norm="1"), ValueError,
     r"config\.grad_clip_norm='1' must be"),
    ("grad_clip_negative", _config(grad_clip_norm=-1.0), ValueError,
     r"config\.grad_clip_norm=-1\.0 must be"),
    ("log_training_steps_zero",
     _config(log_training_steps=0, total_steps=2, evals={}), ValueError,
     r"config\.log_training_steps=0"),
    ("model_width_str", _config(model__width="16"), (TypeError, ValueError),
     r"config\.model.*width='16'"),
    ("mesh_too_big", _config(mesh=[("data", 3)]), ValueError,
     r"config\.mesh \[\('data', 3\)\] needs 3 devices, but there are 8"),
    ("sharding_rule_bad_regex", _config(sharding_rules=[("(", "replicate")]),
     Exception, r"config\.sharding_rules.*'\('"),
    ("model_inputs_not_in_batch", _config(model_inputs=("img",)), KeyError,
     r"config\.model_inputs \['img'\] are not in the batch"),
    # Names of registered components.
    ("unknown_model", _config(model_name="vitt"), KeyError,
     r"Unknown model 'vitt'\. Did you mean \['vit'\]"),
    ("unknown_loss", _config(loss="softmax_xnet"), KeyError,
     r"Unknown loss 'softmax_xnet'\. Did you mean \['softmax_xent'"),
    ("unknown_optimizer", _config(optax_name="adamww"), ValueError,
     r"Unknown config\.optax_name='adamww'"),
    ("unknown_evaluator", _config(evals__validation__type="clasification"),
     KeyError, r"Unknown evaluator 'clasification'\. Did you mean "
     r"\['classification'\]"),
    ("evaluator_without_type", _config(evals__validation__type=DELETE),
     KeyError, r"config\.evals\.validation needs a `type`"),
    # Schedules.
    ("schedule_unknown_key",
     _config(schedule={"decay_type": "cosine", "warmup_step": 5}),
     ValueError, r"Unknown schedule key config\.schedule\.warmup_step "),
    ("schedule_unknown_decay", _config(schedule={"decay_type": "cosin"}),
     ValueError, r"Unknown config\.schedule\.decay_type='cosin'"),
    ("schedule_bad_percent", _config(schedule={"warmup_percent": 1.5}),
     ValueError, r"config\.schedule: warmup_percent=1\.5 must be a fraction"),
    ("schedule_regex_misses_params",
     _config(schedule=[("head/.*", {"decay_type": "cosine"})]), ValueError,
     r"Parameter 'Transformer/.*' is matched by no config\.schedule regex"),
    # Command-line flags (subprocesses).
    ("cli_unknown_override",
     _cli(_TRAIN, _DIGITS, "--workdir={tmp}/w", "--config.lrr=0.1"),
     ExitError, r"Unknown config key config\.lrr\. Did you mean config\.lr\?"),
    ("cli_missing_workdir", _cli(_TRAIN, _DIGITS), ExitError,
     r"--workdir must have a value"),
    ("cli_config_file_missing",
     _cli(_TRAIN, "--config=configs/vit_digitz.py", "--workdir={tmp}/w"),
     ExitError, r"configs/vit_digitz\.py\s+\[Errno 2\] No such file"),
    ("cli_bad_config_arg",
     _cli(_TRAIN, f"--config={CONFIG}:shrt", "--workdir={tmp}/w"), ExitError,
     r"Unknown config argument 'shrt' in 'shrt'; known: \['bf16', 'ema', 'grad_accum', 'short', 'tune'\]"),
    # pp strings (the full table of arguments: tests/pp/test_bad_arguments).
    ("pp_unknown_op", _config(input__pp="decode|resize_tiny(16)"), ValueError,
     r"Unknown pp op 'resize_tiny' in pp string 'decode\|resize_tiny\(16\)'\. "
     r"Did you mean \[.*'resize'"),
    ("pp_bad_argument", _config(input__pp="decode|resize(0)"), ValueError,
     r"pp op 'resize': size=0 must be a positive int"),
    ("pp_size_given_twice", _config(input__pp="decode|resize(16, 16)"),
     ValueError, r"pp op 'resize': method=16 is not one of"),
    ("pp_unknown_keyword",
     _config(input__pp="decode|value_range(-1, 1, clip=True)"), ValueError,
     r"pp op 'value_range': bad arguments .*unexpected keyword argument "
     r"'clip'"),
    ("pp_syntax_error", _config(input__pp="decode|resize(16"), ValueError,
     r"pp op 'resize\(16': syntax error"),
    ("eval_pp_bad_argument",
     _config(evals__validation__pp_fn="decode(channels=2)"), ValueError,
     r"pp op 'decode': channels=2"),
    ("onehot_depth_below_labels", _config(input__pp=_pp_with_depth(2)),
     tf.errors.InvalidArgumentError,
     r"pp op onehot\(2\): a label of `label` is >= depth=2"),
    # Own data.
    ("imagefolder_missing_dir",
     _own_data(lambda ctx: "imagefolder:" + ctx.path("nodir")),
     FileNotFoundError, r"Data directory '\S*nodir' does not exist"),
    ("imagefolder_empty_split",
     _own_data(lambda ctx: "imagefolder:" + _imagefolder(ctx)), ValueError,
     r"Split 'train' of ImageFolderSource\('\S+'\) gives process 0 of 1 no "
     r"training examples"),
    ("imagefolder_no_splits",
     _own_data(lambda ctx: "imagefolder:" + _empty_dir(ctx)), ValueError,
     r"has no split directories \(expected ROOT/SPLIT/CLASS/image files\)"),
    ("imagefolder_unknown_split",
     lambda ctx: _train(ctx, {"input.data": {
         "name": "imagefolder:" + _imagefolder(ctx, images=2),
         "split": "tran"}}), ValueError,
     r"Bad split 'tran' .*splits: \['train'\]"),
    ("jsonl_malformed_line",
     _own_data(lambda ctx: _jsonl(ctx, '{"image": "a.png", "label": 1}',
                                  '{"image": "a.png", "label": 2,')),
     ValueError, r"/train\.jsonl:2: invalid JSON"),
    ("jsonl_line_without_image",
     _own_data(lambda ctx: _jsonl(ctx, '{"image": "a.png", "label": 1}',
                                  '{"img": "a.png", "label": 2}')),
     ValueError, r"/train\.jsonl:2: `image` must be a non-empty path"),
    ("jsonl_image_missing",
     _own_data(lambda ctx: _jsonl(ctx, '{"image": "a.png", "label": 1}', "",
                                  '{"image": "b.png", "label": 2}')),
     FileNotFoundError, r"/train\.jsonl:3: image 'b\.png' not found"),
    ("jsonl_bad_label",
     _own_data(lambda ctx: _jsonl(ctx, '{"image": "a.png", "label": "3"}')),
     ValueError, r"/train\.jsonl:1: `label` must be an int >= 0, got '3'"),
    ("jsonl_empty_split", _own_data(lambda ctx: _jsonl(ctx)), ValueError,
     r"Split 'train' of JsonlSource\('\S+'\) gives process 0 of 1 no "
     r"training examples"),
    ("jsonl_undecodable_image", _jsonl_bad_image, ValueError,
     r"cannot be decoded.*b\.png' \(\S+/train\.jsonl:2, split 'train'"),
    # TFDS names and splits.
    ("tfds_unknown_name", _config(input__data__name="bvl_digit"), ValueError,
     r"^(?=.{0,300}$)Unknown dataset 'bvl_digit'.*Did you mean "
     r"'bvl_digits'\?"),
    ("tfds_unknown_name_far", _config(input__data__name="qqqzzz"), ValueError,
     r"^(?=.{0,300}$)Unknown dataset 'qqqzzz'.*tfds\.list_builders"),
    ("tfds_unknown_split", _config(input__data__split="trian"), ValueError,
     r"TFDS dataset 'bvl_digits' has no split 'trian'; its splits: .*"
     r"Did you mean 'train'\?"),
    ("tfds_bad_slice", _config(input__data__split="train[:200%]"),
     ValueError, r"Bad split 'train\[:200%\]' of TFDS dataset 'bvl_digits'"),
    ("tfds_eval_unknown_split",
     _config(evals__validation__data__split="valdation"), ValueError,
     r"'bvl_digits' has no split 'valdation'.*Did you mean 'validation'\?"),
    ("tfds_options", _config(input__data__skip_bad=True), KeyError,
     r"config\.input\.data options \['skip_bad'\] for 'bvl_digits'"),
    # Checkpoints and .npz files.
    ("npz_text_file", _model_init_text_npz, checkpoint.CheckpointError,
     r"load_params: \S+/x\.npz is not a \.npz file"),
    ("npz_damaged", lambda ctx: checkpoint.load_params(_damaged_npz(ctx)),
     checkpoint.CheckpointError,
     r"\S+/damaged\.npz is not a readable \.npz .*CRC"),
    ("npz_truncated", lambda ctx: checkpoint.load_params(_truncated_npz(ctx)),
     checkpoint.CheckpointError, r"\S+/cut\.npz is not a readable \.npz"),
    ("npz_missing_path", _config(model_init=lambda ctx: ctx.path("nope.npz")),
     FileNotFoundError, r"load_params: \S+/nope\.npz does not exist"),
    ("orbax_checksum_mismatch", _model_init_bad_checksum,
     checkpoint.CheckpointError,
     r"Checkpoint \S+/checkpoints/2 is damaged: params/embedding/kernel "
     r"differs from what was saved"),
    ("npz_missing_subtree", _load_subtree, KeyError,
     r"good\.npz has no subtree 'img' \(top-level keys: \['a', 'c'\]\)"),
    ("orbax_dir_without_checkpoint", _load_empty_dir, FileNotFoundError,
     r"load_params: no complete checkpoint in \S+/empty"),
    ("model_init_other_shapes", _model_init_wider, ValueError,
     r"(?s)do not match the model's params.*shapes differ \(21\).*"
     r"embedding/kernel: checkpoint \(4, 4, 1, 16\) vs model \(4, 4, 1, 24\)"),
    ("model_init_unknown_tower", _config(model_init={"img": "x.npz"}),
     KeyError, r"config\.model_init has 'img', but the model's params have"),
    ("resume_other_width", _resume_wider, checkpoint.CheckpointMismatchError,
     r"(?s)checkpoints/2 does not match the state this config builds.*"
     r"embedding/kernel: checkpoint \(4, 4, 1, 16\) float32, config "
     r"\(4, 4, 1, 24\)"),
    ("resume_other_width_names_params_once", _resume_wider,
     checkpoint.CheckpointMismatchError,
     r"(?s)^(?!.*mu/embedding/kernel).*params/embedding/kernel: checkpoint"),
    ("resume_bad_batch_size", _resume_bad_batch, ValueError,
     r"config\.input\.batch_size=12 does not divide"),
    # Converter inputs.
    ("convert_missing_file", _convert_missing_file, ExitError,
     r"(?s)^(?!.*Traceback).*convert: error: load_params: \S+/nope\.npz "
     r"does not exist"),
    ("convert_wrong_from",
     _convert("--from", "npx", "--to", "orbax", "{tmp}/a.npz", "{tmp}/o"),
     ExitError, r"argument --from: invalid choice: 'npx'"),
    ("convert_unknown_args",
     _convert("--from", "npz", "--to", "orbax", "{tmp}/a.npz", "{tmp}/o",
              "--heads", "3"),
     ExitError, r"unrecognized arguments: --heads 3"),
    ("convert_flag_of_other_format",
     _convert("--from", "npz", "--to", "orbax", "{tmp}/a.npz", "{tmp}/o",
              "--no-text_causal"),
     ExitError, r"--text_causal does not apply to --from npz"),
    ("convert_npz_from_orbax_dir", _convert_npz_from_orbax, ValueError,
     r"--from npz: \S+ is a directory \(an orbax checkpoint\? use --from "
     r"orbax\)"),
    ("convert_orbax_from_npz_file", _convert_orbax_from_npz, ValueError,
     r"--from orbax: \S+/good\.npz is a file.*\(use --from npz\)"),
    ("convert_existing_output", _convert_existing_output, FileExistsError,
     r"save_npz: \S+/out\.npz exists \(pass overwrite=True / --overwrite\)"),
    ("convert_output_not_npz",
     lambda ctx: convert.main(["--from", "npz", "--to", "npz",
                               _good_npz(ctx), ctx.path("out.bin")]),
     ValueError, r"save_npz: \S+/out\.bin must end in \.npz"),
    ("convert_without_torch", _convert_without_torch, ModuleNotFoundError,
     r"No module named 'torch': .*pip install -e '?\.\[torch\]"),
    # Workdirs.
    ("workdir_is_a_file", _workdir_is_file, OSError,
     r"\S+/afile\b.*not a directory"),
    ("workdir_under_a_file", _workdir_under_file, NotADirectoryError,
     r"Not a directory: '\S+/afile/sub'"),
    ("checkpoints_is_a_file", _checkpoints_is_file, NotADirectoryError,
     r"Checkpoints go to \S+/wd/checkpoints, but \S+/wd/checkpoints is not "
     r"a directory"),
    ("checkpoints_link_under_a_file", _checkpoints_link_under_file, OSError,
     r"Checkpoints go to \S+/wd/checkpoints, but \S+ is not"),
]

def _params():
  ids = [case[0] for case in CASES]
  assert len(ids) == len(set(ids)), "case ids must be distinct"
  return [pytest.param(trigger, error, match, id=case_id)
          for case_id, trigger, error, match in CASES]


@pytest.mark.parametrize("trigger,error,match", _params())
def test_bad_input_names_the_problem(ctx, trigger, error, match):
  with pytest.raises(error, match=match):
    trigger(ctx)
  ctx.assert_nothing_lost()


def test_the_table_is_large_and_distinct():
  assert len(CASES) >= 45
  assert len({case[3] for case in CASES}) >= 45
