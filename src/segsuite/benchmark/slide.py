"""Section `slide`: sliding-window inference vs the same windows forwarded on their own."""

from __future__ import annotations

import math
from typing import Any

import torch

from segsuite.benchmark.nets import build_model
from segsuite.benchmark.timing import best_time

TARGET = 1.20  # sliding-window inference, at most this many times the bare windows' forwards


def measure(args, device: torch.device) -> dict[str, Any]:
    """`Inferencer(mode="slide")` vs forwarding the same windows, batched the same way, on their own."""
    from segsuite.inference import Inferencer, window_starts

    (img_h, img_w), (win_h, win_w) = args.slide_image, args.slide_window
    torch.manual_seed(0)
    model = build_model(args.slide_model, args.num_classes).to(device).eval().to(memory_format=torch.channels_last)
    image = torch.randn(1, 3, img_h, img_w, device=device)
    inferencer = Inferencer(mode="slide", crop_size=(win_h, win_w), window_batch=args.window_batch)
    boxes = [(y, x) for y in window_starts(img_h, win_h, inferencer.stride[0])
             for x in window_starts(img_w, win_w, inferencer.stride[1])]
    chunks = [boxes[i:i + args.window_batch] for i in range(0, len(boxes), args.window_batch)]
    crops = [torch.randn(len(c), 3, win_h, win_w, device=device) for c in chunks]

    def net(t: torch.Tensor) -> torch.Tensor:
        return model(t.contiguous(memory_format=torch.channels_last))

    def slide():
        with torch.inference_mode():
            inferencer(net, image)

    def whole():
        with torch.inference_mode():
            for c in crops:
                net(c).float()

    slide_s = whole_s = math.inf
    slide()  # warm-up
    whole()
    for _ in range(max(min(args.iters, 3), 1)):  # interleaved rounds: load changes hit both alike
        slide_s = min(slide_s, best_time(slide, 0, 1, device))
        whole_s = min(whole_s, best_time(whole, 0, 1, device))
    out = {"model": args.slide_model, "image": [img_h, img_w], "window": [win_h, win_w],
           "stride": list(inferencer.stride), "windows": len(boxes), "window_batch": args.window_batch,
           "slide_ms": slide_s * 1e3, "whole_windows_ms": whole_s * 1e3, "ratio": slide_s / whole_s}
    print(f"  slide {out['slide_ms']:.0f} ms vs {len(boxes)} whole-window forwards {out['whole_windows_ms']:.0f} ms: "
          f"{out['ratio']:.2f}x", flush=True)
    return out


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """Sliding-window inference within the target multiple of the bare forwards."""
    if "slide" not in results:
        return []
    r = results["slide"]
    return [(f"slide within {TARGET}x of whole-window forwards", f"{r['slide_ms']:.0f} ms",
             f"{r['ratio']:.2f}x", r["ratio"] <= TARGET)]


def render(results: dict[str, Any]) -> list[str]:
    """The sliding-window paragraph."""
    if "slide" not in results:
        return []
    r = results["slide"]
    return [(f"Sliding window ({r['model']}): {r['image'][0]}×{r['image'][1]} image, "
             f"{r['window'][0]}×{r['window'][1]} windows, stride {r['stride'][0]}×{r['stride'][1]} "
             f"({r['windows']} windows, {r['window_batch']} per pass): "
             f"{r['slide_ms']:.0f} ms vs {r['whole_windows_ms']:.0f} ms for the same windows forwarded alone = "
             f"{r['ratio']:.2f}x."), ""]
