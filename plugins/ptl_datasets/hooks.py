"""Registration of the built-in datasets. Factories live in modules imported only on use."""

from __future__ import annotations

from ptl_cli import hookimpl

# name -> (torchvision class, one-line description)
FIXED_SIZE = {
    "mnist": ("MNIST", "MNIST digits, 28×28 grey, 10 classes"),
    "cifar10": ("CIFAR10", "CIFAR-10, 32×32 RGB, 10 classes"),
    "cifar100": ("CIFAR100", "CIFAR-100, 32×32 RGB, 100 classes"),
    "svhn": ("SVHN", "Street View House Numbers, 32×32 RGB, 10 classes"),
    "stl10": ("STL10", "STL-10 labeled split, 96×96 RGB, 10 classes"),
}
PHOTOS = {
    "stanford-cars": ("StanfordCars", "Stanford Cars, 196 classes"),
    "fgvc-aircraft": ("FGVCAircraft", "FGVC Aircraft variants, 100 classes (train = official train+val)"),
    "oxford-pets": ("OxfordIIITPet", "Oxford-IIIT Pets, 37 classes (train = official trainval)"),
    "flowers102": ("Flowers102", "Oxford Flowers-102, 102 classes"),
    "dtd": ("DTD", "Describable Textures, 47 classes"),
    "food101": ("Food101", "Food-101, 101 classes"),
    "caltech101": ("Caltech101", "Caltech-101 (no test split: 'test' is a seeded 20% hold-out)"),
}


#: Class counts and image sizes known without the files (see ptl_datasets.facts), for plans.
FACTS = "ptl_datasets.facts:of"
#: Whether the files of a dataset placed by hand are there (see ptl_datasets.facts.files).
FILES = "ptl_datasets.facts:files"


@hookimpl
def ptl_register_datasets(register) -> None:
    # Schemas import pydantic: only pay for it when components are listed or built.
    from ptl_datasets.params import FashionPackParams, FashionParams, FolderParams, NoParams, ResizedParams

    register(
        "fashion-pack",
        "ptl_datasets.fashion:load_pack",
        description="bundled real subset of Fashion-MNIST (500/class of train half B, 100/class test; "
        "val/fit splits); offline",
        params=FashionPackParams,
        aliases=("bundled",),
        facts=FACTS,
    )
    register(
        "fashion-mnist",
        "ptl_datasets.fashion:load_full",
        description="Fashion-MNIST, 28×28 grey, 10 classes (Debian dataset-fashion-mnist or torchvision); "
        "half A/B, coarse labels",
        params=FashionParams,
        facts=FACTS,
    )
    for name, (cls, text) in FIXED_SIZE.items():
        register(name, f"ptl_datasets.torchvision_sets:{cls}", description=text, params=NoParams, facts=FACTS)
    for name, (cls, text) in PHOTOS.items():
        register(
            name,
            f"ptl_datasets.torchvision_sets:{cls}",
            description=text,
            params=ResizedParams,
            facts=FACTS,
            files=FILES,
        )
    register(
        "imagenet",
        "ptl_datasets.folder:imagenet",
        description="ImageNet-1k from a folder (root/train/<wnid>/*.JPEG, root/val/<wnid>/*.JPEG)",
        params=ResizedParams,
    )
    register(
        "cub200",
        "ptl_datasets.folder:cub200",
        description="CUB-200-2011 as an image folder (root/train/<class>/, root/test/<class>/)",
        params=ResizedParams,
    )
    register(
        "imagefolder",
        "ptl_datasets.folder:imagefolder",
        description="your own images: path/<split>/<class>/*.jpg, or path/<class>/ (seeded 80/20 split)",
        params=FolderParams,
        facts=FACTS,
    )
