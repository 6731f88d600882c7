"""VLA size presets, from the CPU-sized default to 7B parameters, and parameter counts that allocate nothing.

A preset fills in the `model:` keys the user did not give (the loader applies it to the raw config,
so the schema stays the one source of truth for types and bounds). The transformer trunk holds
almost all parameters: (4 + 2 * ff_mult) * width^2 per layer, so 1b and 7b land within a few
percent of their names whatever the image size (the encoder and patch positions add < 1%)."""
from __future__ import annotations

from dvla_hpc.config.schema import ModelConfig
from dvla_hpc.envs.protocol import EnvSpec

PRESETS: dict[str, dict[str, int]] = {
    # tiny = ModelConfig's defaults exactly (test_presets checks it): existing configs are unchanged
    "tiny": {"width": 64, "depth": 2, "heads": 4, "ff_mult": 2, "encoder_channels": 16},
    "small": {"width": 384, "depth": 6, "heads": 6, "ff_mult": 4, "encoder_channels": 32},  # ~11M
    "base": {"width": 768, "depth": 12, "heads": 12, "ff_mult": 4, "encoder_channels": 64},  # ~86M
    "1b": {"width": 2048, "depth": 20, "heads": 16, "ff_mult": 4, "encoder_channels": 128},
    "7b": {"width": 4096, "depth": 34, "heads": 32, "ff_mult": 4, "encoder_channels": 128},
}


def apply_preset(model_section: dict, name: str) -> dict:
    """The raw `model:` section with the preset's values under the keys it does not set itself."""
    return {**PRESETS[name], **model_section}


def count_parameters(cfg: ModelConfig, spec: EnvSpec) -> int:
    """Parameters of `VLAPolicy(cfg, spec)`, built on the meta device: shapes only, no storage."""
    import torch  # here, not above: the config loader reads PRESETS on ranks that import no torch

    from dvla_hpc.model.vla import VLAPolicy
    with torch.device("meta"):
        model = VLAPolicy(cfg, spec)
    return sum(p.numel() for p in model.parameters())
