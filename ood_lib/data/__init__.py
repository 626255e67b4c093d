"""Data: files, folders, preprocessing, where each set lives, and the benchmarks.

- :mod:`.files`: IDX files, image folders, the data root; :mod:`.folders`: which files are data;
- :mod:`.transforms`: preprocessing; :mod:`.embedded`: the offline benchmark's data;
- :mod:`.sources`: each data set under a data root; :mod:`.benchmarks`: the benchmarks as data.

The names of :mod:`.files` are re-exported here (``ood_lib.data.ImageFiles``).
"""

from .files import (  # noqa: F401
    ArrayImages,
    DATA_ROOT_ENV,
    DataNotFoundError,
    IMAGENET_MEAN,
    IMAGENET_STD,
    IMAGE_EXTENSIONS,
    ImageFiles,
    OODInputError,
    SIXTEEN_BIT_MODES,
    Split,
    as_mode,
    check_classes,
    class_folders,
    data_root,
    file_digest,
    first_items,
    first_names,
    image_folder,
    item_paths,
    jpeg_roundtrip,
    list_images,
    missing,
    read_idx,
    stack_images,
    subsample,
)

__all__ = [
    "ArrayImages",
    "DATA_ROOT_ENV",
    "DataNotFoundError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ImageFiles",
    "OODInputError",
    "SIXTEEN_BIT_MODES",
    "Split",
    "as_mode",
    "check_classes",
    "class_folders",
    "data_root",
    "file_digest",
    "first_items",
    "first_names",
    "image_folder",
    "item_paths",
    "jpeg_roundtrip",
    "list_images",
    "missing",
    "read_idx",
    "stack_images",
    "subsample",
]
