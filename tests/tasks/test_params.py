"""UPSCALE parameters and the task registry: what is accepted, what is refused and how."""

from __future__ import annotations

from typing import Any

import pytest

from tasks import TASKS, InvalidParameters, TaskRegistry, UnknownTask, UpscaleTask
from tasks.upscale import UpscaleParams


def parse(raw: dict[str, Any]) -> UpscaleParams:
    return UpscaleTask().parse(raw)


def test_defaults_follow_the_spec() -> None:
    params = parse({})
    assert (params.scale_factor, params.model, params.quality, params.device) == (
        4,
        "realesrgan-x4plus",
        23,
        "auto",
    )
    assert params.tile is None and params.codec is None


@pytest.mark.parametrize("key", ["scale_factor", "scaleFactor"])
def test_both_spellings_of_the_scale(key: str) -> None:
    assert parse({key: 2}).scale_factor == 2


def test_device_is_case_insensitive() -> None:
    assert parse({"device": "GPU"}).device == "gpu"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"scale_factor": 3}, "scale_factor"),
        ({"model": "esrgan-9000"}, "model"),
        ({"quality": 52}, "quality"),
        ({"tile": 8}, "tile"),
        ({"codec": "vp9"}, "codec"),
        ({"device": "tpu"}, "device"),
        ({"scale": 2, "sclae_factor": 4}, "sclae_factor"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParameters) as caught:
        parse(raw)
    assert caught.value.code == "INPUT_INVALID"
    assert field in str(caught.value)


def test_registry_lookup_is_case_insensitive_and_refuses_unknown_and_duplicates() -> None:
    assert isinstance(TASKS.get("upscale"), UpscaleTask)
    assert "Upscale" in TASKS
    with pytest.raises(UnknownTask) as caught:
        TASKS.get("TRANSCODE")
    assert caught.value.code == "INPUT_INVALID"
    registry = TaskRegistry()
    registry.add(UpscaleTask())
    with pytest.raises(ValueError, match="already registered"):
        registry.add(UpscaleTask())


@pytest.mark.parametrize(
    ("task", "raw"),
    [
        ("UPSCALE", {"scaleFactor": 2, "model": None, "tile": None, "captions": None, "codec": None}),
        ("CAPTION_RENDER", {"scenario": None, "scenarioS3Key": "s/a.json", "options": None}),
        ("VISUALIZE", {"coverS3Key": "c.png", "style": None, "resolution": None, "fps": None}),
    ],
)
def test_null_parameters_count_as_left_out(task: str, raw: dict[str, Any]) -> None:
    params = TASKS.get(task).parse(raw)
    defaults = TASKS.get(task).parse({key: value for key, value in raw.items() if value is not None})
    assert params == defaults


def test_upscale_device_defaults_to_the_queue_and_an_explicit_one_wins() -> None:
    from tasks import Resources, UpscaleTask

    task = UpscaleTask()
    tiers = Resources(default_models={"gpu": "realesrgan-x4plus", "cpu": "realesr-general-x4v3"})
    assert task.parse({**task.defaults("gpu", tiers)}).device == "gpu"
    assert task.parse({**task.defaults("gpu", tiers), "device": "cpu"}).device == "cpu"
    assert task.parse({**task.defaults("cpu", tiers), "device": None}).device == "auto"  # null: left out
    assert task.parse({**task.defaults("gpu", tiers)}).model == "realesrgan-x4plus"
    assert task.parse({**task.defaults("cpu", tiers)}).model == "realesr-general-x4v3"
    given = {"model": "realesr-animevideov3"}
    assert (
        task.parse({**task.defaults("cpu", tiers), **given}).model == "realesr-animevideov3"
    )  # explicit wins
    assert (
        task.parse({**task.defaults("cpu", Resources())}).model == "realesrgan-x4plus"
    )  # no tiers: DEFAULT_MODEL
