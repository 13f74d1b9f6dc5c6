"""Training speed of advmed's SegmentationModule through Lightning against the same U-Net in a bare
PyTorch loop, side by side in one process.

Both train the same network (advmed.nets.UNet, same initial weights) with SGD (lr 0.1, momentum
0.99, as Pervin et al.) and pixel-wise cross-entropy on the same in-memory batches, for the same
number of steps. Lightning's time runs from ``on_train_start`` to ``on_train_end`` (its per-step
hooks, logging and loss check included; building the Trainer excluded); the bare loop's from
its first to its last step. Rounds alternate; the ratio is the median over rounds of
bare time / Lightning time (= our throughput relative to the bare loop), throughput from the best
round. With ``--bf16`` / ``--channels-last`` (GPU) both sides use them.

    python experiments/benchmarks/unet.py --image-size 128 --batch 16 --steps 20 --device cpu
    python experiments/benchmarks/unet.py --image-size 128 --batch 16 --steps 100 --device cuda --bf16 --channels-last

Target: ours / bare throughput >= 0.95.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from advmed.models.segmentation import SegmentationModule

CLASS_NAMES = ["background", "liver", "spleen", "kidneys", "pancreas"]


class _TrainClock(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self.seconds = time.perf_counter() - self.start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lightning_round(template: SegmentationModule, loader: DataLoader, steps: int, device: str, bf16: bool) -> float:
    model = copy.deepcopy(template)
    clock = _TrainClock()
    trainer = L.Trainer(
        max_steps=steps, accelerator=device, devices=1, precision="bf16-mixed" if bf16 else "32-true",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, train_dataloaders=loader)
    return clock.seconds


def bare_round(template: SegmentationModule, loader: DataLoader, steps: int, device: str, bf16: bool) -> float:
    net = copy.deepcopy(template.net).to(device).train()
    channels_last = template.hparams.channels_last
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.99)
    dev = torch.device(device)
    _sync(dev)
    start = time.perf_counter()
    done = 0
    while done < steps:
        for x, y in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    _sync(dev)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batches", type=int, default=8, help="distinct batches in the in-memory dataset")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, s = args.batch * args.batches, args.image_size
    data = TensorDataset(torch.rand(n, 1, s, s), torch.randint(0, len(CLASS_NAMES), (n, s, s)))
    loader = DataLoader(data, batch_size=args.batch, shuffle=False, drop_last=True, pin_memory=args.device == "cuda")
    template = SegmentationModule(
        num_classes=len(CLASS_NAMES), in_channels=1, class_names=CLASS_NAMES, image_size=s,
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.99}, channels_last=args.channels_last,
    )
    rounds = {"lightning": [], "bare": []}
    runs = {"lightning": lightning_round, "bare": bare_round}
    for fn in runs.values():  # warm-up
        fn(template, loader, 2, args.device, args.bf16)
    for r in range(args.repeats):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            rounds[name].append(runs[name](template, loader, args.steps, args.device, args.bf16))
    images = args.steps * args.batch
    ours, bare = images / min(rounds["lightning"]), images / min(rounds["bare"])
    ratio = statistics.median(b / a for a, b in zip(rounds["lightning"], rounds["bare"]))
    setting = f"{args.device}, {s} px, batch {args.batch}, {args.steps} steps" + (", bf16" if args.bf16 else "") + (
        ", channels_last" if args.channels_last else "")
    print(f"[unet train step] {setting}: ours (Lightning) {ours:.1f} img/s, bare loop {bare:.1f} img/s, "
          f"ratio ours/bare {ratio:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
