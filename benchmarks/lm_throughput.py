"""Tokens per second of Born-Again (BAN+L) LSTM language-model training: ``BornAgain`` against a bare PyTorch loop.

Both train a born-again generation on the same stream batches: the frozen teacher LSTM's softmax (no gradient)
and the labels teach a student LSTM of the same size (``CE + soft CE``, BAN+L), gradients clipped at 0.25,
plain SGD; both carry each LSTM's hidden state across batches (truncated BPTT). Only the training steps are
timed (forward, losses, backward, clipping, optimizer step), over ``--batches`` batches, the two variants
interleaved round by round; the median of each, and their ratio, are written to
``benchmarks/results/lm_throughput.json``. The target: the task within 5% of the bare loop.

    python benchmarks/lm_throughput.py --rounds 3 --batches 40
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from cache_throughput import timing_trainer
from pytorch_lightning import seed_everything
from seed_records import REPO, StepTimer, interleave, write_record

from lightning_kd import BornAgain
from lightning_kd.data import TextDataModule
from lightning_kd.models import LSTMLanguageModel
from lightning_kd.models.language import begin_stream


def write_corpus(root: Path, vocabulary: int, tokens: int) -> None:
    generator = torch.Generator().manual_seed(0)
    words = torch.randint(0, vocabulary, (tokens,), generator=generator).tolist()
    lines = [" ".join(f"w{w}" for w in words[i : i + 20]) for i in range(0, tokens, 20)]
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        (root / f"{split}.txt").write_text("\n".join(lines if split == "train" else lines[:50]) + "\n")


def lstm(vocabulary: int, hidden: int) -> LSTMLanguageModel:
    return LSTMLanguageModel(vocabulary, preset="small", hidden_size=hidden, tie_weights=True, dropout=0.2)


class Runs:
    def __init__(self, root: Path, hidden: int, batches: int, device: str) -> None:
        self.data = TextDataModule(root, batch_size=20, bptt=35)
        self.data.setup()
        self.vocabulary, self.hidden, self.batches_wanted, self.device = self.data.num_classes, hidden, batches, device
        seed_everything(0)
        self.teacher = lstm(self.vocabulary, hidden)
        self.batches = [(b["input"], b["target"]) for _, b in zip(range(batches), self.data.train_dataloader(),
                                                                     strict=False)]
        self.tokens = sum(x.numel() for x, _ in self.batches)

    def lightning(self, _: object) -> float:
        timer = StepTimer()
        task = BornAgain(lstm(self.vocabulary, self.hidden), teacher=self.teacher, loss="ban+l",
                         optimizer=lambda p: torch.optim.SGD(p, lr=20.0), lr_scheduler="none")
        trainer = timing_trainer(self.device, [timer])
        trainer.limit_train_batches = self.batches_wanted
        trainer.gradient_clip_val = 0.25
        trainer.fit(task, datamodule=self.data)
        return self.tokens / timer.epoch_seconds[0]

    def bare(self, _: object) -> float:
        student, teacher = lstm(self.vocabulary, self.hidden).to(self.device), self.teacher.to(self.device).eval()
        optimizer = torch.optim.SGD(student.parameters(), lr=20.0)
        begin_stream(student, "train")
        begin_stream(teacher, "train")
        seconds = 0.0
        for x, y in self.batches:
            x, y = x.to(self.device), y.to(self.device)
            if self.device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            with torch.no_grad():
                target = teacher(x).softmax(-1).reshape(-1, self.vocabulary)
            logits = student(x).reshape(-1, self.vocabulary)
            loss = F.cross_entropy(logits, y.reshape(-1)) - (target * logits.log_softmax(-1)).sum(-1).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 0.25)
            optimizer.step()
            if self.device == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - started
        return self.tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--vocabulary", type=int, default=10_000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/lm_throughput.json")
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads is not None:  # one thread leaves a core to the rest of the machine: steadier timings
        torch.set_num_threads(args.threads)
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        write_corpus(Path(scratch), args.vocabulary, 20 * 35 * (args.batches + 2))
        runs = Runs(Path(scratch), args.hidden, args.batches, args.device)
        times = interleave({"lightning": runs.lightning, "bare": runs.bare}, None, args.rounds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["lightning"] / medians["bare"]
    print(f"tokens/s: BornAgain {medians['lightning']:.0f}, bare loop {medians['bare']:.0f}, ratio {ratio:.3f}")
    write_record(args.output,
                 f"python benchmarks/lm_throughput.py --rounds {args.rounds} --batches {args.batches} "
                 f"--hidden {args.hidden} --device {args.device} --output {args.output.name}"
                 + (f" --threads {args.threads}" if args.threads is not None else ""),
                 "tokens per second (median of rounds)", started,
                 rounds=times, medians=medians, ratio_task_over_bare=round(ratio, 4),
                 setup=f"2 x {args.hidden} tied LSTMs, {runs.vocabulary} tokens, batch 20 x 35, BAN+L",
                 threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
