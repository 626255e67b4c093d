"""Which files of a folder are data: image files listed, class folders checked (chapter *Appendix:
run it on your own model and data* states the rules).

Names starting with '.' are never data (hidden files, Jupyter's ``.ipynb_checkpoints``, macOS
``._*`` copies); links to folders are refused, not followed; a benchmark that knows its classes
gets exactly those class folders, or an error naming the missing and the unexpected ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .._checks import OODInputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def first_names(names: Sequence[object], k: int = 5) -> str:
    """``a, b, c, … (12 in all)``: the first ``k`` of ``names``, for an error message."""
    names = [str(n) for n in names]
    more = f", … ({len(names)} in all)" if len(names) > k else ""
    return ", ".join(names[:k]) + more


def _visible(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder`` whose names do not start with '.': hidden files and folders
    (Jupyter's ``.ipynb_checkpoints``, macOS ``._*`` copies, ``.DS_Store``) are never data, and a
    hidden folder counted as a class would shift every label after it."""
    with os.scandir(folder) as it:
        return [e for e in it if not e.name.startswith(".")]


def _linked_folder(path: str) -> OODInputError:
    return OODInputError(f"{path} is a symbolic link to a folder, which is not followed (a link to '.' or a "
                         "parent would read images twice, or a folder as a class): replace it by the folder itself")


def list_images(root: str | os.PathLike) -> list[Path]:
    """Every image file under ``root`` (recursively), in sorted order. Names starting with '.' are
    left out; a link to a folder is an error (named), never followed."""
    found, todo = [], [Path(root)]
    while todo:
        for e in _visible(todo.pop()):
            if e.is_dir(follow_symlinks=False):
                todo.append(Path(e.path))
            elif e.is_symlink() and e.is_dir():
                raise _linked_folder(e.path)
            elif Path(e.name).suffix.lower() in IMAGE_EXTENSIONS and e.is_file():
                found.append(Path(e.path))
    return sorted(found)


def class_folders(root: Path) -> list[str]:
    """The sorted names of the class folders under ``root``: visible sub-folders, links refused."""
    names = []
    for e in _visible(root):
        if e.is_symlink() and e.is_dir():
            raise _linked_folder(e.path)
        if e.is_dir(follow_symlinks=False):
            names.append(e.name)
    return sorted(names)


def check_classes(root: Path, what: str, found: Sequence[str], classes: Sequence[str], all_required: bool) -> None:
    """The class folders ``found`` under ``root`` must be ``classes`` (or, unless ``all_required``,
    some of them): a missing or extra folder would change what the labels mean."""
    known, present = set(classes), set(found)
    extra = [c for c in found if c not in known]
    absent = [c for c in classes if c not in present] if all_required else []
    if extra or absent:
        parts = ([f"missing {first_names(absent)}"] if absent else []) + ([f"unexpected {first_names(extra)}"] if extra else [])
        raise OODInputError(f"{what}: the class folders under {root} are not the benchmark's {len(classes)} classes: "
                            f"{'; '.join(parts)} (expected {first_names(classes, 10)})")
