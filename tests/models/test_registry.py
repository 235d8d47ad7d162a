from __future__ import annotations

import pytest

from models import MODELS, UnknownModel
from models.registry import DEFAULT_MODEL, ModelRegistry


def test_registry_has_the_four_official_models() -> None:
    assert set(MODELS.names()) == {
        "realesrgan-x4plus",
        "realesrgan-x2plus",
        "realesr-animevideov3",
        "realesr-general-x4v3",
    }
    assert DEFAULT_MODEL in MODELS
    for spec in MODELS:
        assert spec.url.startswith("https://github.com/xinntao/Real-ESRGAN/releases/download/")
        assert spec.url.endswith("/" + spec.filename)
        assert len(spec.sha256) == 64 and spec.size > 1_000_000


def test_lookup_is_case_insensitive_and_unknown_names_are_refused() -> None:
    assert MODELS.get(" RealESRGAN-x2plus ").scale == 2
    with pytest.raises(UnknownModel, match="unknown model 'waifu2x'.*realesrgan-x4plus") as info:
        MODELS.get("waifu2x")
    assert info.value.code == "INPUT_INVALID"


def test_registry_refuses_duplicates() -> None:
    registry = ModelRegistry()
    spec = MODELS.get("realesr-animevideov3")
    registry.add(spec)
    with pytest.raises(ValueError, match="already registered"):
        registry.add(spec)
