from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import MODELS, WeightsInvalid
from models.loader import load_descriptor
from tests.conftest import mirror_dir

ANIME_FILE = mirror_dir() / "realesr-animevideov3.pth"


def test_real_animevideov3_loads_as_compact_x4() -> None:
    descriptor = load_descriptor(MODELS.get("realesr-animevideov3"), ANIME_FILE)
    assert descriptor.architecture.id == "Compact" and descriptor.scale == 4
    assert not descriptor.model.training


def test_a_file_of_another_architecture_is_refused() -> None:
    with pytest.raises(WeightsInvalid, match="holds a Compact x4 network; realesrgan-x4plus is ESRGAN x4"):
        load_descriptor(MODELS.get("realesrgan-x4plus"), ANIME_FILE)


def test_non_weights_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsInvalid, match="not a loadable weights file"):
        load_descriptor(MODELS.get("realesr-animevideov3"), garbage)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pickle code ran",))


def test_pickled_code_is_never_executed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil = tmp_path / "evil.pth"
    torch.save({"params": _Payload()}, evil)
    with pytest.raises(WeightsInvalid):
        load_descriptor(MODELS.get("realesr-animevideov3"), evil)
    assert "pickle code ran" not in capsys.readouterr().out
