"""The case a user picked: a gallery case or an upload, and how to load a case again later (Curate's rerun)."""

from __future__ import annotations

from diffuse_core.studio.library import LoadedCase, load_library_case
from diffuse_core.studio.uploads import load_upload_case


def load_selected(source, gallery_key, files, slice_index, channel, window, gt_file) -> LoadedCase:
    """The case the Explore controls point at: ``source`` "upload" uses the upload controls, else the gallery key."""
    if source == "upload":
        return load_upload_case(files, slice_index, channel, window, gt_file)
    return load_library_case(gallery_key)


def reload_case(origin: dict) -> LoadedCase:
    """Load a case again from its ``LoadedCase.origin``."""
    if origin.get("kind") == "upload":
        return load_upload_case(origin["files"], origin["slice"], origin["channel"], origin["window"], origin["gt"])
    return load_library_case(origin.get("key"))
