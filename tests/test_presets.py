import typing

import psutil
import pytest

from dvla_hpc.config.loader import ConfigError, load_config
from dvla_hpc.config.schema import ModelConfig
from dvla_hpc.memory.heap import release_free_heap
from dvla_hpc.model.presets import PRESETS, count_parameters
from dvla_hpc.runtime.blueprint import Blueprint


def parameters(overrides: list[str]) -> int:
    cfg = load_config(None, overrides)
    return count_parameters(cfg.model, Blueprint.from_config(cfg).spec)


def test_presets_are_the_schema_choices_and_tiny_is_the_default():
    assert typing.get_args(typing.get_type_hints(ModelConfig)["preset"]) == tuple(PRESETS)
    defaults = ModelConfig()
    assert defaults.preset == "tiny"
    assert {key: getattr(defaults, key) for key in PRESETS["tiny"]} == PRESETS["tiny"]
    assert load_config() == load_config(None, ["model.preset=tiny"])


@pytest.mark.parametrize("image_size", [64, 128, 224])
@pytest.mark.parametrize("preset, target", [("1b", 1e9), ("7b", 7e9)])
def test_large_presets_are_within_ten_percent_of_their_names(preset, target, image_size):
    n = parameters([f"model.preset={preset}", f"env.image_size={image_size}"])
    assert abs(n - target) <= 0.1 * target, f"{preset} at {image_size}px: {n:,} parameters"


def test_presets_grow_in_sensible_steps():
    counts = [parameters([f"model.preset={name}"]) for name in PRESETS]
    assert counts == sorted(counts)
    small, base = counts[1], counts[2]
    assert 5e6 <= small <= 3e7 and 5e7 <= base <= 2e8


def test_explicit_keys_win_over_the_preset(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n  preset: base\n  width: 512\n  heads: 8\n")
    model = load_config(path, ["model.depth=3"]).model
    assert (model.width, model.heads, model.depth) == (512, 8, 3)
    assert model.ff_mult == PRESETS["base"]["ff_mult"]
    assert model.encoder_channels == PRESETS["base"]["encoder_channels"]
    quickstart = load_config(None, ["model.preset=7b"]).model  # quickstart.yaml sets encoder_channels: 16
    assert (quickstart.width, quickstart.encoder_channels) == (PRESETS["7b"]["width"], 16)


def test_unknown_preset_is_rejected_naming_the_key_and_choices():
    with pytest.raises(ConfigError, match=r"model\.preset: 'huge' is not one of tiny, small, base, 1b, 7b"):
        load_config(None, ["model.preset=huge"])


def test_counting_on_meta_matches_a_real_model_and_allocates_nothing():
    cfg = load_config()
    bp = Blueprint.from_config(cfg)
    assert count_parameters(cfg.model, bp.spec) == sum(p.numel() for p in bp.make_policy().parameters())
    big = load_config(None, ["model.preset=7b"])
    count_parameters(big.model, bp.spec)  # warm-up: imports, meta kernels
    process = psutil.Process()
    release_free_heap()
    before = process.memory_info().rss
    n = count_parameters(big.model, bp.spec)
    release_free_heap()
    grown = process.memory_info().rss - before
    assert n * 4 > 20 * 2**30  # would be tens of GiB if anything were allocated
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB"


def test_tiny_feed_forward_width_is_unchanged():
    model = Blueprint.from_config(load_config()).make_policy()
    assert model.trunk.layers[0].linear1.out_features == 2 * ModelConfig().width
