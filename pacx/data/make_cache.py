"""Command line of the preprocessing cache (`pacx.data.cache`): decode every image once, store it at a fixed size.

    python -m pacx.data.make_cache --data train.csv --image_column Path --out cache/chexpert_256 --size 256
    python -m pacx.data.make_cache --data images.csv --image_column path --split_column split --out cache/train_256
    python train_mae.py --data cache/chexpert_256 ...
"""
from dataclasses import dataclass

from pacx.config import opt, parse_config
from pacx.data.cache import CacheError, build_cache
from pacx.data.stage1 import image_dataset
from pacx.errors import exit_on_error
from pacx.loader import cap_workers


@dataclass
class Config:
    data: str = opt("", "a folder of images or a CSV with an image-path column")
    image_column: str = opt("Path", "image-path column of a CSV (CheXpert: Path)")
    image_root: str = opt("", "folder that relative CSV paths start from (default: the CSV's folder)")
    split_column: str = opt("", "CSV column naming each row's split ('' = cache every row)")
    split: str = opt("train", "rows cached when --split_column is given")
    out: str = opt("cache/images_256", "cache folder to write (images.npy + index.json)")
    size: int = opt(256, "stored side: shorter side resized to it, then centre-cropped (256 for 224 training)")
    workers: int = opt(8, "decoding processes (0: decode in this process)")
    progress_every: int = opt(1000, "images between progress lines")


@exit_on_error
def main(argv=None):
    cfg = parse_config(Config, argv, __doc__)
    if not cfg.data:
        raise CacheError("--data is required (a folder of images or a CSV with an image-path column)")
    images = image_dataset(cfg.data, cfg.image_column, cfg.image_root, cfg.split_column, cfg.split)
    build_cache(images, cfg.out, cfg.size, cap_workers(cfg.workers), cfg.progress_every)


if __name__ == "__main__":
    main()
