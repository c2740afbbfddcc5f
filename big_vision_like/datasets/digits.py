"""`bvl_digits`: sklearn's 8x8 handwritten digits as an offline TFDS dataset.

The 1,797 real images of `sklearn.datasets.load_digits()` (pixel values 0..16)
are stored as 8x8x1 uint8 PNGs (value v -> round(v * 255 / 16)), so pipelines
decode them with the `decode` pp op exactly as they would a real dataset.

Splits are fixed and stratified by label (sklearn `train_test_split`,
`random_state=0`): first 20% is held out as `test`, then 180 examples of the
rest as `validation`.

| split      | examples |
|------------|----------|
| train      | 1257     |
| validation | 180      |
| test       | 360      |

Features: `image` (8, 8, 1) uint8 PNG, `label` ClassLabel "0".."9", `id`
int64 (the row index in `load_digits()`).

Preparing reads sklearn's bundled copy: no network, a few seconds.
"""

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

TEST_SIZE = 360
VALIDATION_SIZE = 180
SPLIT_SEED = 0


def _load_digits():
  # Imported lazily: sklearn is only needed to prepare the data.
  import sklearn.datasets  # pylint: disable=g-import-not-at-top
  return sklearn.datasets.load_digits()


def split_indices():
  """Returns {split: sorted row indices of load_digits()} for the splits."""
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  labels = _load_digits().target
  idx = np.arange(len(labels))
  rest, test = model_selection.train_test_split(
      idx, test_size=TEST_SIZE, stratify=labels, random_state=SPLIT_SEED)
  train, val = model_selection.train_test_split(
      rest, test_size=VALIDATION_SIZE, stratify=labels[rest],
      random_state=SPLIT_SEED)
  return {"train": np.sort(train), "validation": np.sort(val),
          "test": np.sort(test)}


class BvlDigits(tfds.core.GeneratorBasedBuilder):
  """sklearn digits (8x8 grey handwritten digits, 10 classes)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  # TFDS 4.9's default `code_path` lookup imports `importlib_resources`, which
  # it only requires on Python < 3.9; name the file directly instead.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(__file__)

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(
                names=[str(i) for i in range(10)]),
            "id": tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: sklearn ships the data.
    return {name: self._generate_examples(rows)
            for name, rows in split_indices().items()}

  def _generate_examples(self, rows):
    digits = _load_digits()
    images = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)
    for i in rows:
      yield int(i), {"image": images[i][..., None],
                     "label": int(digits.target[i]), "id": int(i)}
