"""utils.config: full's values by default, the smaller profiles' changes in one block, overrides checked by
name and type with the knobs listed."""

from dataclasses import dataclass, field

import pytest

from utils import config


@dataclass(frozen=True)
class Knobs:
    n_images: int | None = None  # test images; None: all
    lr: float = 1e-3  # peak learning rate
    grid: list[float] = field(default_factory=lambda: [0.1, 0.2])  # a list knob
    pair: tuple[int, int] = (21, 12)


SMALLER = {"quick": dict(n_images=500), "smoke": dict(n_images=32, grid=[0.1]), "rehearsal": dict(n_images=2)}


def test_full_is_the_default_and_smaller_profiles_change_only_what_they_list():
    assert config.resolve(Knobs, "full", SMALLER) == Knobs()  # no GPU needed: the plan resolves full
    assert config.resolve(Knobs, "quick", SMALLER) == Knobs(n_images=500)
    assert config.resolve(Knobs, "smoke", SMALLER) == Knobs(n_images=32, grid=[0.1])


def test_an_override_beats_the_profiles_value_and_an_int_is_a_float():
    cfg = config.resolve(Knobs, "quick", SMALLER, {"n_images": 100, "lr": 1})
    assert (cfg.n_images, cfg.lr) == (100, 1)


def test_an_unknown_knob_is_one_line_listing_the_knobs():
    listing = r"knobs: n_images: int \| None, lr: float"
    with pytest.raises(KeyError, match=rf"unknown override 'n_imgs' .*{listing}"):
        config.resolve(Knobs, "quick", SMALLER, {"n_imgs": 3})


@pytest.mark.parametrize("key, value", [("n_images", "100"), ("lr", "fast"), ("grid", [0.1, "x"]),
                                        ("pair", [21, 12]), ("n_images", 1.5)])
def test_a_value_of_the_wrong_type_is_an_error_naming_knob_and_type(key, value):
    with pytest.raises(TypeError, match=rf"override {key}=.* is not a .*; knobs: n_images"):
        config.resolve(Knobs, "smoke", SMALLER, {key: value})


def test_a_typo_in_a_profiles_table_and_an_unknown_profile_fail_at_once():
    with pytest.raises(KeyError, match="unknown quick value 'n_image'"):
        config.resolve(Knobs, "quick", {"quick": {"n_image": 5}})
    with pytest.raises(KeyError, match="unknown profile 'fast'; profiles: smoke, quick, full, rehearsal"):
        config.resolve(Knobs, "fast", SMALLER)


def test_describe_prints_one_knob_per_line():
    assert config.describe(Knobs(n_images=3)).splitlines() == [
        "n_images = 3", "lr = 0.001", "grid = [0.1, 0.2]", "pair = (21, 12)"]
