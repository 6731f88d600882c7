"""Supervised warm start: behaviour-clone the VLA policy on demonstrations, then start RL from it.

    python -m dvla_hpc.sft --data FILE.hdf5 [FILE|DIR ...] --out DIR [--config CFG] [--epochs N]
        [--batch-size B] [--lr LR] [--key-map dataset_key=policy_input ...] [--only-successful]
        [section.key=value ...]
    python -m dvla_hpc.main --init-from DIR ...

Demonstrations are LIBERO/robomimic demo files or dvla_hpc trajectories (output/demo_loader.py says
how keys map to the policy's inputs). DIR gets checkpoints/ckpt_0.pt (the format of
output/checkpoint.py, with the config), config.yaml and sft_curve.json. Bad input ends with a
message naming the problem and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from dvla_hpc.config.loader import DEFAULT_CONFIG, ConfigError, load_config
from dvla_hpc.config.schema import Config

CURVE_FILE = "sft_curve.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dvla_hpc.sft", description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, metavar="PATH",
                        help="demo files (.hdf5), dvla_hpc trajectory or run directories, "
                             "or directories of demo files")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: quickstart)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: learn.lr)")
    parser.add_argument("--key-map", nargs="+", default=[], metavar="KEY=INPUT",
                        help="dataset obs key -> camera name or 'proprio' (proprio keys in order), e.g. "
                             "agentview_rgb=agentview eye_in_hand_rgb=wrist ee_pos=proprio ee_ori=proprio")
    parser.add_argument("--only-successful", action="store_true",
                        help="skip demos recorded as failures (demos that do not say are kept)")
    parser.add_argument("--keep-image-orientation", action="store_true",
                        help="do not rotate LIBERO's upside-down (opengl) frames to the env adapter's view")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_intermixed_args(argv)
    # --data and --key-map take several values and so swallow the overrides that follow them
    for name in ("data", "key_map"):
        values = getattr(args, name)
        args.overrides += [item for item in values if is_override(item)]
        setattr(args, name, [item for item in values if not is_override(item)])
    return args


def is_override(item: str) -> bool:
    """section.key=value with a config section (dataset keys must not look like one)."""
    key, sep, _ = item.partition("=")
    section, dot, _ = key.partition(".")
    return bool(sep and dot) and section in {field.name for field in dataclasses.fields(Config)}


def parse_key_map(items: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, target = item.partition("=")
        if not sep or not key or not target:
            raise ConfigError(f"--key-map {item!r} must look like dataset_key=policy_input")
        pairs.append((key, target))
    return pairs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from dvla_hpc.learn.behaviour_cloning import DemoMismatch
    from dvla_hpc.output.demo_loader import DemoFileError
    try:
        if args.epochs < 1 or args.batch_size < 1:
            raise ConfigError("--epochs and --batch-size must be at least 1")
        return train(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
    except (DemoFileError, DemoMismatch) as err:
        print(f"data error: {err}", file=sys.stderr)
    return 2


def train(args: argparse.Namespace) -> int:
    import torch

    from dvla_hpc.learn.behaviour_cloning import clone, cloning_set, evaluate
    from dvla_hpc.output.checkpoint import capture_rng_state, checkpoint_path, save_checkpoint
    from dvla_hpc.output.demo_loader import load_demos
    from dvla_hpc.runtime.blueprint import Blueprint
    from dvla_hpc.runtime.devices import DeviceError, local_device, uses_bf16
    from dvla_hpc.runtime.run_dir import config_yaml, prepare_run_dir

    cfg = load_config(args.config, args.overrides)
    key_map = parse_key_map(args.key_map)
    try:
        bp = Blueprint.from_config(cfg)
        device = local_device(cfg.run.device)
    except (ValueError, ImportError, DeviceError) as err:
        raise ConfigError(str(err)) from None
    spec, k = bp.spec, cfg.model.action_chunk
    torch.set_num_threads(cfg.run.torch_threads)

    demos = load_demos(args.data, key_map, [name for name, _ in spec.proprio_keys],
                       upright=not args.keep_image_orientation)
    if args.only_successful:
        demos = [demo for demo in demos if demo.success is not False]
        if not demos:
            raise ConfigError("--only-successful: none of the demos succeeded")
    data = cloning_set(demos, spec, k, bp.bins, cfg.model.vocab_size, cfg.model.max_instruction_tokens)
    print(f"sft: {len(demos)} demos, {len(data)} samples, action chunk {k}, device {device}")

    out = Path(args.out)
    prepare_run_dir(cfg, out)
    policy = bp.initial_policy().to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.lr if args.lr is not None else cfg.learn.lr)
    bf16 = uses_bf16(device, cfg.run)
    started = time.perf_counter()

    def report(point: dict) -> None:
        print(f"epoch {point['epoch']:>3}/{args.epochs}  loss {point['loss']:.4f}  "
              f"token accuracy {point['token_accuracy']:.3f}  {point['seconds']:.1f} s", flush=True)

    curve = clone(policy, optimizer, data, args.epochs, args.batch_size, cfg.learn.max_grad_norm,
                  cfg.run.seed, device, bf16, report)
    final_loss, final_accuracy = evaluate(policy, data, args.batch_size, device, bf16)
    wall = time.perf_counter() - started

    ckpt = checkpoint_path(out / "checkpoints", 0)
    save_checkpoint(ckpt, {name: tensor.cpu() for name, tensor in policy.state_dict().items()},
                    optimizer.state_dict(),
                    {"version": 0, "env_steps": 0, "episodes": 0, "updates": 0,
                     "sft_epochs": args.epochs, "sft_samples": len(data)},
                    capture_rng_state(), config_yaml(cfg))
    summary = {"data": [str(path) for path in args.data], "demos": len(demos), "samples": len(data),
               "action_chunk": k, "epochs": args.epochs, "batch_size": args.batch_size,
               "lr": optimizer.param_groups[0]["lr"], "wall_s": round(wall, 2), "curve": curve,
               "final": {"loss": final_loss, "token_accuracy": final_accuracy}, "checkpoint": str(ckpt)}
    (out / CURVE_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"sft: loss {curve[0]['loss']:.4f} -> {final_loss:.4f}, token accuracy "
          f"{curve[0]['token_accuracy']:.3f} -> {final_accuracy:.3f} in {wall:.1f} s")
    print(f"checkpoint: {ckpt}\nstart RL from it: python -m dvla_hpc.main --init-from {out} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
