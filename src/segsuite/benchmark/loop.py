"""Section `loop`: images/s of the Lightning training loop (`trainer.fit`) vs the bare step."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segsuite.benchmark.nets import total_loss
from segsuite.benchmark.timing import autocast, sync
from segsuite.utils.paths import config_dir

TARGET = 0.90  # the loop's share of the bare step's images/s


def compose_train(overrides: list[str]):
    """The train config with `overrides`, composed as `python -m segsuite.train` does."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from segsuite.utils.resolvers import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg


def measure(args, device: torch.device) -> dict[str, Any]:
    """Images/s of `trainer.fit` (batches after the warm-up ones) vs the bare step on one batch."""
    with tempfile.TemporaryDirectory() as tmp:
        return _measure(args, device, Path(tmp))


def _measure(args, device: torch.device, workdir: Path) -> dict[str, Any]:
    import pytorch_lightning as pl

    from segsuite.build import build_components
    from segsuite.optim import build_optimizer

    crop = args.loop_crop
    steps = args.loop_batches
    overrides = [
        f"model={args.ref_model}", "dataset=synthetic", f"dataset.image_size=[{crop},{crop}]",
        f"dataset.crop_size=[{crop},{crop}]", f"dataset.num_classes={min(args.num_classes, 31)}",
        *([f"data.batch_size={args.loop_batch}"] if args.loop_batch else []),
        f"data.num_workers={args.loop_workers}", "loss=ce",
        f"paths.output_dir={workdir}", f"paths.log_dir={workdir}",
        "~callbacks", "~logger",
    ]
    if device.type == "cpu":
        overrides.append("trainer=cpu")
    cfg = compose_train(overrides)
    batch_size = int(cfg.data.batch_size)
    pl.seed_everything(0, workers=True)
    datamodule, module = build_components(cfg)

    class StepClock(pl.Callback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            sync(device)
            self.stamps.append(time.perf_counter())

    clock = StepClock()
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision, max_epochs=1,
        limit_train_batches=steps + args.loop_skip, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
        default_root_dir=str(workdir),
    )
    # the bare step: same net, loss, optimizer, precision, memory format and batch; timed before and
    # after the Lightning run (medians of both), so a change of machine load hits both sides alike
    net = module.net.to(device)
    datamodule.setup("fit")
    batch = datamodule.to_model_input(next(iter(datamodule.train_dataloader())))
    x = batch["image"].to(device)
    if module.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = batch["mask"].to(device)
    optimizer = build_optimizer(module.optimizer_factory, net, module.lr, module.weight_decay, module.backbone_lr_mult)
    precision = "bf16" if str(cfg.trainer.precision).startswith("bf16") else "fp32"
    net.train()

    def bare_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, device):
            loss = total_loss(module.criterion, net(x), y)
        loss.backward()
        optimizer.step()

    def bare_times(n: int) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            bare_step()
            sync(device)
            times.append(time.perf_counter() - start)
        return times

    half = max(steps // 2, 1)
    warm = max(args.loop_skip, 10)  # oneDNN primitives and the allocator settle over the first steps
    bare = bare_times(warm + half)[warm:]
    trainer.fit(module, datamodule=datamodule)
    net.to(device)  # Lightning moves the module back to the CPU when fit ends
    bare += bare_times(half)
    gaps = np.diff(clock.stamps[args.loop_skip - 1:])
    loop_ips = batch_size / float(np.median(gaps))
    loop_best_ips = batch_size / float(gaps.min())
    bare_ips = batch_size / float(np.median(bare))
    out = {"model": args.ref_model, "crop": [crop, crop], "batch": batch_size, "precision": str(cfg.trainer.precision),
           "channels_last": bool(module.channels_last), "num_workers": datamodule.num_workers,
           "batches_timed": len(gaps), "loop_ips": loop_ips, "loop_best_ips": loop_best_ips, "bare_ips": bare_ips,
           "bare_best_ips": batch_size / min(bare), "ratio": loop_ips / bare_ips,
           "ratio_best": loop_best_ips / (batch_size / min(bare))}
    print(f"  Lightning loop {loop_ips:.2f} img/s (median batch; best {loop_best_ips:.2f}) vs bare step "
          f"{bare_ips:.2f} img/s median: {out['ratio']:.0%}", flush=True)
    return out


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """The loop within the target share of the bare step."""
    if "loop" not in results:
        return []
    r = results["loop"]
    return [(f"Lightning loop >= {TARGET:.0%} of bare step", f"{r['loop_ips']:.2f} vs {r['bare_ips']:.2f} img/s",
             f"{r['ratio']:.0%}", r["ratio"] >= TARGET)]


def render(results: dict[str, Any]) -> list[str]:
    """The loop paragraph."""
    if "loop" not in results:
        return []
    r = results["loop"]
    return [(f"Lightning loop ({r['model']}, batch {r['batch']}, {r['crop'][0]}×{r['crop'][1]}, "
             f"{r['precision']}, channels_last={r['channels_last']}, {r['num_workers']} workers, "
             f"{r['batches_timed']} batches): "
             f"{r['loop_ips']:.2f} img/s median (best batch {r['loop_best_ips']:.2f}) vs bare step "
             f"{r['bare_ips']:.2f} img/s median (best {r['bare_best_ips']:.2f}) = {r['ratio']:.0%} "
             f"({r['ratio_best']:.0%} best against best)."), ""]
