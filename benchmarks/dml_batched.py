"""Deep Mutual Learning's batched path (``vmap`` over identical peers) against the loop, step time vs K.

One training step of the simultaneous scheme (forward of every peer, the DML loss, one backward), timed
for the loop and for :class:`~lightning_kd.models.stacked.StackedForward`, interleaved (loop, batched,
loop, ...) so that both see the same machine state; reports the median of each and their ratio, and
writes ``benchmarks/results/dml_batched.json``.

    python benchmarks/dml_batched.py --peers 2 4 8 --repeats 30
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from seed_records import write_record

from lightning_kd.losses.mutual import dml_loss
from lightning_kd.models import MLP, SmallCNN
from lightning_kd.models.stacked import StackedForward

REPO = Path(__file__).resolve().parents[1]
NETWORKS = {
    "MLP [256] on 28x28": (lambda: MLP((1, 28, 28), hidden_sizes=(256,), num_classes=10), (1, 28, 28)),
    "SmallCNN [32, 64] on 28x28": (lambda: SmallCNN(widths=(32, 64), num_classes=10), (1, 28, 28)),
}


def step_time(forward, peers: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor, device: str) -> float:
    for peer in peers:
        peer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    logits = forward(x)
    dml_loss(list(logits), y)["loss"].backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(build, shape: tuple[int, ...], count: int, batch: int, repeats: int, device: str) -> dict[str, float]:
    torch.manual_seed(0)
    peers = [build().to(device).train() for _ in range(count)]
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    stacked = StackedForward(peers)
    forwards = {"loop": lambda inputs: [peer(inputs) for peer in peers], "batched": lambda inputs: stacked(inputs)}
    times: dict[str, list[float]] = {"loop": [], "batched": []}
    for _ in range(3):  # warm-up
        for forward in forwards.values():
            step_time(forward, peers, x, y, device)
    for _ in range(repeats):
        for name, forward in forwards.items():
            times[name].append(step_time(forward, peers, x, y, device))
    loop, batched = statistics.median(times["loop"]), statistics.median(times["batched"])
    return {"loop_ms": 1000 * loop, "batched_ms": 1000 * batched, "batched_over_loop": batched / loop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    started = time.time()
    results = {}
    print(f"{'network':<28} {'K':>3} {'loop ms':>9} {'batched ms':>11} {'batched/loop':>13}")
    for name, (build, shape) in NETWORKS.items():
        for count in args.peers:
            row = measure(build, shape, count, args.batch, args.repeats, args.device)
            results[f"{name}, K={count}"] = row
            print(f"{name:<28} {count:>3} {row['loop_ms']:9.2f} {row['batched_ms']:11.2f} "
                  f"{row['batched_over_loop']:13.2f}")
    output = args.output or REPO / "benchmarks" / "results" / f"dml_batched_{args.device}.json"
    write_record(output, command="python benchmarks/dml_batched.py --peers " + " ".join(map(str, args.peers))
                 + f" --batch {args.batch} --repeats {args.repeats} --device {args.device}",
                 metric="median wall time of one simultaneous DML training step (forward, loss, backward), "
                        "loop and batched interleaved", started=started, device=args.device, results=results)


if __name__ == "__main__":
    main()
