"""Load a verified weights file into a spandrel model descriptor.

Pickles are never executed: ``torch.load(weights_only=True)``. The loaded
architecture, scale and input size multiple must match the registry entry, so a
file renamed to another model's name is refused rather than run.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import spandrel
import torch

from models.errors import WeightsInvalid
from models.registry import ModelSpec


def load_descriptor(spec: ModelSpec, path: Path) -> spandrel.ImageModelDescriptor[torch.nn.Module]:
    """Read ``path`` as ``spec``'s network, on the CPU, in eval mode."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsInvalid(f"{path} is not a loadable weights file: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsInvalid(f"{path} holds a {type(state).__name__}, not a state dict")
    try:
        descriptor = spandrel.MAIN_REGISTRY.load(state)
    except (spandrel.UnsupportedModelError, KeyError, RuntimeError, ValueError) as exc:
        raise WeightsInvalid(f"{path} is not a {spec.arch} network: {exc}") from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise WeightsInvalid(f"{path} is not an image-to-image model")
    found = (descriptor.architecture.id, descriptor.scale)
    if found != (spec.arch, spec.scale):
        raise WeightsInvalid(
            f"{path} holds a {found[0]} x{found[1]} network; {spec.name} is {spec.arch} x{spec.scale}"
        )
    multiple = max(1, int(descriptor.size_requirements.multiple_of))
    if multiple != spec.multiple:  # the engine pads by the registry's figure without loading the module
        raise WeightsInvalid(f"{path} needs sizes in multiples of {multiple}, not {spec.multiple}")
    descriptor.model.eval()
    return descriptor
