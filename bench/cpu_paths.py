"""CPU fast paths for the segmentation step, each as a ratio against fp32 in one run (same batch, same model).

    python bench/cpu_paths.py [--res 128 256] [--steps 6] [--compile]

Times forward + backward + AdamW step of Unet/resnet18 (29 classes, batch 8) on a ready batch, for: fp32;
bf16 autocast (fast where the CPU has AVX512-BF16/AMX); channels_last; a lighter decoder
(``model.decoder_channels=[128,64,32,16,8]`` vs smp's 256..16); their combinations; ``torch.compile``
(``--compile``; slow to start); and 1 vs all threads. Prints one table; figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bonekit.accel import cpu_bf16_native  # noqa: E402
from bonekit.losses import segmentation_loss  # noqa: E402
from bonekit.models import make_segmenter  # noqa: E402

LIGHT = [128, 64, 32, 16, 8]


def step_time(res: int, steps: int, bf16=False, cl=False, light=False, compile_=False, batch=8) -> float:
    torch.manual_seed(0)
    model = make_segmenter("unet", "resnet18", 1, 29, LIGHT if light else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, res, res)
    y = (torch.rand(batch, 29, res, res) > 0.9).float()
    if cl:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile_:
        model = torch.compile(model)
    loss_fn = segmentation_loss("bce_dice")

    def one():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = loss_fn(logits.float(), y, None, None)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    one()  # warm-up (allocations, compile)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, hardware bf16: {cpu_bf16_native()} "
          "(without it, precision=bf16 runs fp32: bonekit/accel.py)")
    variants = [("fp32", {}), ("bf16 autocast", {"bf16": True}), ("channels_last", {"cl": True}),
                ("bf16 + channels_last", {"bf16": True, "cl": True}), ("light decoder", {"light": True}),
                ("light decoder + bf16", {"light": True, "bf16": True}),
                ("light decoder + bf16 + channels_last", {"light": True, "bf16": True, "cl": True})]
    if a.compile:
        variants += [("torch.compile", {"compile_": True}), ("bf16 + torch.compile", {"bf16": True, "compile_": True}),
                     ("bf16 + channels_last + torch.compile", {"bf16": True, "cl": True, "compile_": True})]
    for res in a.res:
        base = step_time(res, a.steps)
        print(f"\nUnet/resnet18 {res}px batch 8, forward+backward+AdamW step, mean of {a.steps}:")
        print(f"  {'fp32':40s} {base * 1000:8.0f} ms  1.00x")
        for name, kw in variants[1:]:
            t = step_time(res, a.steps, **kw)
            print(f"  {name:40s} {t * 1000:8.0f} ms  {base / t:.2f}x")
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        t1 = step_time(res, a.steps)
        torch.set_num_threads(n)
        print(f"  {'fp32, 1 thread (vs ' + str(n) + ')':40s} {t1 * 1000:8.0f} ms  {base / t1:.2f}x")


if __name__ == "__main__":
    main()
