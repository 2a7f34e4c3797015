"""Input pipelines: tfds datasets and local real data behind one interface.

    ds = get_dataset(config.data, "train")          # an ImageDataset
    it = train_batches(ds, batch_size=128, seed=0)   # endless, per-process batches
    for batch in eval_batches(get_dataset(config.data, "test"), batch_size=256): ...

Dataset sources (`DATASETS.names()`): cifar10_sample (packaged, the default),
cifar10_jpeg75, fashion_mnist_idx, image_folder, idx (`local`), the prefix
"tfds:<name>" (`tfds_source`), the derived sources "compressed:<source>:<codec spec>"
(`compressed`), "corrupted:<source>:<corruption>:<level>" (`corrupted`), their
"_train:" variants, "subset:<n>:<source>" and "union:<a>|<b>" (`derived`);
augmentations: `AUGMENTATIONS.names()`. Images stay uint8 in [0, 255]; normalise on the
device with `normalize(batch["image"], ds.mean, ds.std)`.
"""

from jaxcomp.data import local, tfds_source  # noqa: F401  (register the datasets)
from jaxcomp.data import compressed, corrupted, derived  # noqa: F401  (derived sources)
from jaxcomp.data.dataset import DATASETS, ImageDataset, get_dataset, open_dataset, subset
from jaxcomp.data.local import kodak_dir, sample_kodak_dir
from jaxcomp.data.pipeline import AUGMENTATIONS, eval_batches, train_batches
from jaxcomp.data.readers import load_images, read_idx
from jaxcomp.data.transforms import normalize

__all__ = ["AUGMENTATIONS", "DATASETS", "ImageDataset", "open_dataset", "eval_batches", "get_dataset", "kodak_dir",
           "load_images", "normalize", "read_idx", "sample_kodak_dir", "subset", "train_batches"]
