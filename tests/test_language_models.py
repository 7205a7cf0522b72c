"""Language models: text data and BPTT batching, perplexity, LSTMs that carry their state, Born-Again over tokens."""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from pytorch_lightning import Callback, seed_everything

from lightning_kd import BornAgain, Classifier, VanillaKD
from lightning_kd.callbacks import Generations
from lightning_kd.cli import main
from lightning_kd.data import JaneAustenDataModule, TextDataModule
from lightning_kd.data.janeausten import prepare_jane_austen
from lightning_kd.data.rdata import read_lazy_load_database
from lightning_kd.data.text import batchify
from lightning_kd.errors import MissingFileRefusal, Refusal
from lightning_kd.models import LSTMLanguageModel, TransformerLanguageModel
from lightning_kd.models.language import begin_stream, parameter_count_of_preset
from tests.conftest import CONFIGS, write_tiny_corpus
from tests.helpers import cpu_trainer


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_tiny_corpus(tmp_path / "corpus")


def tiny_lstm(vocab_size: int = 20, seed: int = 0) -> LSTMLanguageModel:
    torch.manual_seed(seed)
    return LSTMLanguageModel(vocab_size, preset="small", hidden_size=12)


# -- data --------------------------------------------------------------------------------------------------
def standard_corpus(path: Path) -> tuple[dict[str, int], torch.Tensor]:
    """PyTorch's word_language_model ``Corpus.tokenize``, written out here as the reference (one file)."""
    dictionary: dict[str, int] = {}
    ids = []
    for line in path.read_text().splitlines():
        for word in [*line.split(), "<eos>"]:
            ids.append(dictionary.setdefault(word, len(dictionary)))
    return dictionary, torch.tensor(ids)


def standard_batches(data: torch.Tensor, batch_size: int, bptt: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The reference's ``batchify`` (sequence-first) and ``get_batch``, transposed to batch-first."""
    steps = data.size(0) // batch_size
    source = data.narrow(0, 0, steps * batch_size).view(batch_size, -1).t().contiguous()
    batches = []
    for i in range(0, source.size(0) - 1, bptt):
        length = min(bptt, len(source) - 1 - i)
        batches.append((source[i : i + length].t(), source[i + 1 : i + 1 + length].t()))
    return batches


def test_bptt_batches_equal_the_standard_recipe_on_a_tiny_file(corpus: Path) -> None:
    module = TextDataModule(corpus, batch_size=3, eval_batch_size=2, bptt=5)
    module.setup()
    dictionary, ids = standard_corpus(corpus / "train.txt")
    assert module.read_vocabulary().tokens == list(dictionary)  # the vocabulary, in order of first appearance
    batches = list(module.train_dataloader())
    expected = standard_batches(ids, 3, 5)
    assert len(batches) == len(expected) == len(module.train_dataloader())
    for batch, (inputs, targets) in zip(batches, expected, strict=True):
        assert torch.equal(batch["input"], inputs) and torch.equal(batch["target"], targets)
    assert batches[-1]["input"].shape[1] <= 5  # the last window may be shorter
    indices = torch.cat([batch["index"] for batch in batches])
    assert len(set(indices.tolist())) == len(indices)  # a stable name for every window of every stream


def test_two_processes_take_the_streams_one_process_of_twice_the_batch_takes(corpus: Path) -> None:
    class FakeTrainer:
        world_size = 2

        def __init__(self, rank: int) -> None:
            self.global_rank = rank

    whole = TextDataModule(corpus, batch_size=4, bptt=4)
    whole.setup()
    reference = list(whole.train_dataloader())
    shares = []
    for rank in (0, 1):
        module = TextDataModule(corpus, batch_size=2, bptt=4)
        module.setup()
        module.trainer = FakeTrainer(rank)  # type: ignore[assignment]
        shares.append(list(module.train_dataloader()))
    assert len(shares[0]) == len(shares[1]) == len(reference)
    for batch, first, second in zip(reference, *shares, strict=True):
        assert torch.equal(batch["input"], torch.cat([first["input"], second["input"]]))
        assert torch.equal(batch["index"], torch.cat([first["index"], second["index"]]))
    assert torch.equal(batchify(torch.arange(7), 2), torch.tensor([[0, 3], [1, 4], [2, 5]]))


def test_wikitext_files_and_character_level_read_as_the_standard_recipe(tmp_path: Path) -> None:
    root = write_tiny_corpus(tmp_path / "wiki", layout="wikitext")
    module = TextDataModule(root, layout="wikitext", batch_size=2, bptt=3)
    module.setup()
    _, ids = standard_corpus(root / "wiki.train.tokens")
    assert torch.equal(module.splits["train"], ids)  # headings and blank lines are lines too
    characters = TextDataModule(root, layout="wikitext", level="char", batch_size=2, bptt=3)
    assert " " in characters.read_vocabulary().ids and characters.unit == "char"


def test_the_data_tell_the_cli_the_vocabulary(corpus: Path) -> None:
    facts = TextDataModule.data_facts(root=str(corpus), bptt=7)
    assert facts == {"num_classes": 20 + 1, "vocab_size": 21, "input_shape": (7,)}  # 19 words, <unk>, <eos>


def _set_up_with(root: Path, name: str, text: str) -> None:
    (root / name).write_text(text)
    TextDataModule(root).setup()


@pytest.mark.parametrize(("make", "message"), [
    (lambda root: JaneAustenDataModule(root / "missing").setup(), "lightning-kd data janeausten --root"),
    (lambda root: TextDataModule(root, bptt=0), "bptt must be >= 1"),
    (lambda root: _set_up_with(root, "valid.txt", ""), "valid split is empty"),
    (lambda root: _set_up_with(root, "test.txt", "\n\n"), "only empty lines"),
    (lambda root: TextDataModule(root, level="bytes"), "level must be 'word' or 'char'"),
])
def test_bad_text_data_are_refused_in_one_line(corpus: Path, make, message: str) -> None:
    with pytest.raises(Refusal, match=message.replace("(", r"\(")) as refusal:
        make(corpus)
    assert "\n" not in str(refusal.value)


def test_missing_corpus_files_name_the_command_that_writes_them(tmp_path: Path) -> None:
    with pytest.raises(MissingFileRefusal, match=r"no train\.txt or ptb\.train\.txt under .*lightning-kd data "
                                                 r"janeausten --root"):
        JaneAustenDataModule(tmp_path / "nowhere").setup()


def test_a_word_outside_the_training_vocabulary_without_unk_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    (root / "train.txt").write_text("a b c\n")
    (root / "valid.txt").write_text("a d\n")
    (root / "test.txt").write_text("a\n")
    with pytest.raises(Refusal, match="holds 'd', which the training split does not"):
        TextDataModule(root).setup()


# -- networks ----------------------------------------------------------------------------------------------
def test_the_papers_lstm_has_51m_parameters() -> None:
    assert round(parameter_count_of_preset("paper") / 1e6, 1) == 51.0  # the "52M LSTM" of Table 6
    assert parameter_count_of_preset("large") > parameter_count_of_preset("paper")  # untied: two 15M matrices


def test_an_lstm_carries_its_state_within_a_stream_and_starts_each_stream_afresh() -> None:
    model = tiny_lstm().eval()
    tokens = torch.randint(0, 20, (2, 6))
    with torch.no_grad():
        begin_stream(model, "reference")
        whole = model(tokens)  # one window of 6 ...
        begin_stream(model, "train")
        first = model(tokens[:, :3])
        begin_stream(model, "val")  # another stream in between: its own state, fresh
        torch.testing.assert_close(model(tokens[:, :3]), whole[:, :3])
        begin_stream(model, "train", fresh=False)  # back where the training stream was
        second = model(tokens[:, 3:])
        torch.testing.assert_close(torch.cat([first, second], dim=1), whole)  # ... equals two of 3, carried
        model.carry_state = False  # every window afresh
        assert not torch.allclose(model(tokens[:, 3:]), whole[:, 3:])


def test_the_state_is_cut_from_the_graph_between_batches() -> None:
    model = tiny_lstm()
    begin_stream(model, "train")
    model(torch.randint(0, 20, (2, 4))).sum().backward()
    second = model(torch.randint(0, 20, (2, 4)))
    second.sum().backward()  # a second backward through the first batch's graph would raise
    assert all(not part.requires_grad for part in model._states["train"])


def test_a_causal_transformer_never_looks_ahead() -> None:
    torch.manual_seed(0)
    model = TransformerLanguageModel(vocab_size=20, d_model=16, num_heads=2, num_layers=2).eval()
    tokens = torch.randint(0, 20, (2, 8))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 20
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[:, :5], model(changed)[:, :5])


# -- metrics -----------------------------------------------------------------------------------------------
class Bigram(torch.nn.Module):
    """A deterministic stand-in language model: logits from a fixed table of the previous token."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.num_classes = vocab_size
        self.table = torch.nn.Parameter(torch.randn(vocab_size, vocab_size, generator=torch.Generator().manual_seed(3)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens]


def hand_perplexity(model: torch.nn.Module, ids: torch.Tensor, streams: int) -> float:
    """exp(total NLL / total tokens) over the whole split, batched as the recipe does, computed by hand."""
    source = batchify(ids, streams)
    with torch.no_grad():
        logits = model(source[:-1].T)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), source[1:].T.reshape(-1), reduction="sum")
    return math.exp(float(nll) / ((source.shape[0] - 1) * streams))


def test_perplexity_is_exp_of_the_total_nll_over_the_total_tokens(corpus: Path) -> None:
    module = TextDataModule(corpus, batch_size=4, eval_batch_size=3, bptt=4)
    module.setup()
    task = Classifier(Bigram(module.num_classes))
    (result,) = cpu_trainer().validate(task, datamodule=module, verbose=False)
    expected = hand_perplexity(task.net, module.splits["valid"], 3)
    assert result["val/ppl"] == pytest.approx(expected, rel=1e-6)
    assert result["val/nll"] == pytest.approx(math.log(expected), rel=1e-6)
    # val/loss, each batch weighted by its tokens (the last window is shorter), is the same token mean
    assert result["val/loss"] == pytest.approx(math.log(expected), rel=1e-5)


def _shared_corpus(folder: Path) -> Path:
    """The tiny corpus in ``folder``, written by rank 0 while the other waits: both ranks writing the same files
    at once let one read a test split the other had just truncated ("the test split is empty", seen in CI)."""
    if torch.distributed.get_rank() == 0:
        write_tiny_corpus(folder / "corpus")
    torch.distributed.barrier()
    return folder / "corpus"


def _perplexity_under_ddp(folder: Path) -> None:
    module = TextDataModule(_shared_corpus(folder), batch_size=2, eval_batch_size=2, bptt=4)
    module.setup()  # 2 streams per process, 4 in all
    torch.manual_seed(0)
    task = Classifier(Bigram(module.num_classes))
    trainer = cpu_trainer(devices=2, strategy="ddp")
    (result,) = trainer.validate(task, datamodule=module, verbose=False)
    if trainer.global_rank == 0:
        torch.save({"net": task.net.state_dict(), "ppl": result["val/ppl"]}, folder / "result.pt")


@pytest.mark.ddp(scenario=_perplexity_under_ddp)
def test_perplexity_under_two_process_ddp_is_the_whole_splits(ddp_run: Path) -> None:
    module = TextDataModule(ddp_run / "corpus", batch_size=2, eval_batch_size=2, bptt=4)
    module.setup()
    result = torch.load(ddp_run / "result.pt", weights_only=True)
    net = Bigram(module.num_classes)
    net.load_state_dict(result["net"])
    assert result["ppl"] == pytest.approx(hand_perplexity(net, module.splits["valid"], 4), rel=1e-6)


def test_bits_per_character_for_character_models(corpus: Path) -> None:
    module = TextDataModule(corpus, level="char", batch_size=2, eval_batch_size=2, bptt=8)
    module.setup()
    task = Classifier(Bigram(module.num_classes))
    (result,) = cpu_trainer().validate(task, datamodule=module, verbose=False)
    assert result["val/bpc"] == pytest.approx(math.log2(result["val/ppl"]), rel=1e-6)


# -- distillation over tokens ------------------------------------------------------------------------------
def test_a_teacher_with_another_vocabulary_is_refused_naming_both_sizes(corpus: Path, tmp_path: Path) -> None:
    module = TextDataModule(corpus, batch_size=2, bptt=4)
    task = VanillaKD(tiny_lstm(module.num_classes), teacher=tiny_lstm(module.num_classes + 5))
    with pytest.raises(Refusal, match=r"teacher network .*predicts \(26,\) outputs per position but the data has "
                                      r"21 classes \(tokens\)"):
        cpu_trainer(max_steps=1).fit(task, datamodule=module)


class ServedTokens(Callback):
    """At every training batch: the teacher's outputs the task is served, against the teacher run on that batch
    in training's order (its state carried from batch to batch, as online distillation carries it)."""

    def __init__(self) -> None:
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.teachers:
            (served,) = pl_module.teacher_outputs(batch)
            (online,) = pl_module.teachers.outputs(batch["input"])
            self.pairs.append((served.logits, online.logits))


def test_the_teacher_cache_serves_every_token_what_the_teacher_gives_there(corpus: Path) -> None:
    from lightning_kd.callbacks import TeacherOutputCache

    module = TextDataModule(corpus, batch_size=3, eval_batch_size=2, bptt=5)  # the last window is shorter
    for cache in (TeacherOutputCache(), TeacherOutputCache(precision="topk", top_k=4)):
        spy = ServedTokens()
        task = VanillaKD(tiny_lstm(21, seed=1), teacher=tiny_lstm(21), temperature=1.0)
        cpu_trainer(max_epochs=2, callbacks=[cache, spy]).fit(task, datamodule=module)
        assert len(spy.pairs) == 2 * len(module.train_dataloader()) and cache.fills == 1
        assert {served.shape[1] for served, _ in spy.pairs} == {5, spy.pairs[-1][1].shape[1]}
        for served, online in spy.pairs:
            assert served.shape == online.shape
            if cache.precision == "fp32":
                assert torch.equal(served, online)
            else:  # the top 4 tokens' probabilities exactly, the rest of the mass spread over the others
                top = online.topk(4, dim=-1).indices
                p, q = served.softmax(-1), online.softmax(-1)
                torch.testing.assert_close(p.gather(-1, top), q.gather(-1, top))
                torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
    assert cache.entries["teacher"]["values"].shape[1:] == (1, 5, 4)  # window x view x step x k


def test_a_cached_born_again_lstm_run_trains_exactly_as_the_uncached_one(corpus: Path, tmp_path: Path) -> None:
    from lightning_kd.callbacks import TeacherOutputCache

    module = TextDataModule(corpus, batch_size=4, eval_batch_size=2, bptt=6)
    students = {}
    for name, extra in (("online", []), ("cached", [cache := TeacherOutputCache()])):
        seed_everything(0)
        task = BornAgain(tiny_lstm(21), loss="ban+l", optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
                         lr_scheduler="none")
        schedule = Generations(generations=2, epochs=1, dirpath=tmp_path / name, print_table=False)
        cpu_trainer(gradient_clip_val=0.25, callbacks=[schedule, *extra], max_epochs=None).fit(task, datamodule=module)
        students[name] = task.student.state_dict()
    assert cache.fills == 2  # filled again for the promoted teacher of generation 2
    assert all(torch.equal(students["online"][k], students["cached"][k]) for k in students["online"])


class ServedTokensReport(ServedTokens):
    """:class:`ServedTokens` under DDP: each process writes how many batches it checked and the largest gap."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def on_train_end(self, trainer, pl_module) -> None:
        gap = max(float((served - online).abs().max()) for served, online in self.pairs)
        streams = list(range(4))[trainer.datamodule.train_dataloader().dataset.columns]
        report = {"batches": len(self.pairs), "gap": gap, "streams": streams}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


def _token_cache_under_ddp(folder: Path) -> None:
    from lightning_kd.callbacks import TeacherOutputCache

    module = TextDataModule(_shared_corpus(folder), batch_size=2, eval_batch_size=2, bptt=5)
    task = VanillaKD(tiny_lstm(21, seed=1), teacher=tiny_lstm(21))  # 2 streams per process, 4 in all
    cpu_trainer(devices=2, strategy="ddp", max_epochs=2, limit_val_batches=0,
                callbacks=[TeacherOutputCache(), ServedTokensReport(folder)]).fit(task, datamodule=module)


@pytest.mark.ddp(scenario=_token_cache_under_ddp)
def test_under_ddp_each_process_caches_and_is_served_its_own_streams(ddp_run: Path) -> None:
    tmp_path = ddp_run
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["streams"] for r in reports] == [[0, 1], [2, 3]]
    assert all(r["gap"] == 0.0 and r["batches"] > 2 for r in reports)


def test_a_full_vocabulary_token_cache_over_its_limit_is_refused_with_the_estimate(corpus: Path) -> None:
    from lightning_kd.callbacks import TeacherOutputCache

    module = TextDataModule(corpus, batch_size=3, bptt=5)
    task = VanillaKD(tiny_lstm(21), teacher=tiny_lstm(21))
    cache = TeacherOutputCache(max_megabytes=0.001)
    with pytest.raises(Refusal, match=r"the teacher cache would take 0 MB \(\d+ token positions x 1 teacher\(s\), "
                                      r"fp32, 21 classes\), over max_megabytes 0; precision: topk \(top_k 10\) would "
                                      r"take 0 MB; or raise max_megabytes"):
        cpu_trainer(max_steps=1, callbacks=[cache]).fit(task, datamodule=module)
    windows, steps = module.training_windows()
    assert (windows, steps) == (3 * len(module.train_dataloader()), 5)


def test_word_level_kd_trains_a_student_lstm(corpus: Path) -> None:
    module = TextDataModule(corpus, batch_size=4, eval_batch_size=2, bptt=6)
    seed_everything(0)
    teacher = Classifier(tiny_lstm(21), optimizer=lambda p: torch.optim.Adam(p, lr=0.02), lr_scheduler="none")
    cpu_trainer(max_epochs=6, gradient_clip_val=0.5).fit(teacher, datamodule=module)
    student = VanillaKD(tiny_lstm(21, seed=1), teacher=teacher.net, alpha=0.5, temperature=1.0,
                        optimizer=lambda p: torch.optim.Adam(p, lr=0.02), lr_scheduler="none")
    (before,) = cpu_trainer().validate(student, datamodule=module, verbose=False)
    cpu_trainer(max_epochs=6, gradient_clip_val=0.5).fit(student, datamodule=module)
    (after,) = cpu_trainer().validate(student, datamodule=module, verbose=False)
    assert after["val/ppl"] < 0.8 * before["val/ppl"]
    assert "val/teacher/acc" in after and "val/agreement" in after  # per token


def _every_method(vocab: int) -> dict[str, object]:
    from lightning_kd import DecoupledKD, DeepMutualLearning, MultiTeacherKD, TeacherFreeKD, TokenKD

    teacher = tiny_lstm(vocab, seed=5)
    return {
        "TeacherFreeKD": lambda: TeacherFreeKD(tiny_lstm(vocab), label_smoothing=0.1),
        "MultiTeacherKD": lambda: MultiTeacherKD(tiny_lstm(vocab), teacher=[teacher, tiny_lstm(vocab, seed=6)],
                                                 weighting="ae-kd"),
        "DeepMutualLearning": lambda: DeepMutualLearning([tiny_lstm(vocab), tiny_lstm(vocab, seed=1)],
                                                         gradient_clip_val=0.25),
        "DecoupledKD": lambda: DecoupledKD(tiny_lstm(vocab), teacher=teacher),
        "TokenKD": lambda: TokenKD(tiny_lstm(vocab), teacher=teacher, divergence="reverse_kl"),
    }


@pytest.mark.parametrize("method", ["TeacherFreeKD", "MultiTeacherKD", "DeepMutualLearning", "DecoupledKD", "TokenKD"])
def test_every_method_trains_a_language_model_and_reports_perplexity(corpus: Path, method: str) -> None:
    module = TextDataModule(corpus, batch_size=4, eval_batch_size=2, bptt=6)
    seed_everything(0)
    task = _every_method(21)[method]()
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=4, **({} if method == "DeepMutualLearning" else
                                                                  {"gradient_clip_val": 0.25}))
    trainer.fit(task, datamodule=module)
    logged = trainer.callback_metrics
    assert math.isfinite(float(logged["val/ppl"])) and float(logged["val/ppl"]) > 1
    assert math.isfinite(float(logged["train/loss"]))


class Promotions(Callback):
    """Each generation's network as it ends, and the teacher as the next generation starts, with their outputs."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens, self.ends, self.teachers = tokens, {}, {}

    def _outputs(self, network: torch.nn.Module) -> torch.Tensor:
        was = network.training
        network.eval()
        begin_stream(network, "probe")
        with torch.no_grad():
            out = network(self.tokens)
        network.train(was)
        return out

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        state = {k: v.clone() for k, v in pl_module.student.state_dict().items()}
        self.ends[pl_module.generation] = (state, self._outputs(pl_module.student))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if pl_module.teacher is not None and pl_module.generation not in self.teachers:
            state = {k: v.clone() for k, v in pl_module.teacher.state_dict().items()}
            self.teachers[pl_module.generation] = (state, self._outputs(pl_module.teacher))


def test_born_again_promotes_an_lstm_language_model_bit_for_bit(corpus: Path, tmp_path: Path) -> None:
    seed_everything(0)
    module = TextDataModule(corpus, batch_size=4, eval_batch_size=2, bptt=6)
    spy = Promotions(torch.randint(0, 21, (2, 9)))
    task = BornAgain(tiny_lstm(21), loss="ban+l", optimizer=lambda p: torch.optim.SGD(p, lr=1.0), lr_scheduler="none")
    schedule = Generations(generations=2, epochs=1, dirpath=tmp_path, print_table=False)
    cpu_trainer(gradient_clip_val=0.25, callbacks=[schedule, spy], max_epochs=None).fit(task, datamodule=module)
    for generation in (1, 2):
        teacher_state, teacher_out = spy.teachers[generation]
        student_state, student_out = spy.ends[generation - 1]
        assert teacher_state.keys() == student_state.keys()
        assert all(torch.equal(teacher_state[k], student_state[k]) for k in teacher_state)
        assert torch.equal(teacher_out, student_out)
    rows = schedule.results["generations"]
    assert all("val/ppl" in row and "test/ppl" in row for row in rows)
    assert [row["ensemble/generations"] for row in schedule.results["ensembles"]] == [1, 2]
    assert all("ensemble/test/ppl" in row for row in schedule.results["ensembles"])


def test_a_born_again_lstm_run_killed_mid_generation_resumes_bit_identically(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    settings = yaml.safe_load((CONFIGS / "janeausten_lstm_ban_l.yaml").read_text())
    settings["trainer"]["callbacks"][1]["init_args"]["epochs"] = 2  # generations 0..3 in epochs 0-1, ..., 6-7
    settings["trainer"]["logger"] = False
    settings["model"]["init_args"]["student"]["init_args"]["hidden_size"] = 12
    quick = ["--trainer.enable_progress_bar", "false", "--data.init_args.batch_size", "4",
             "--data.init_args.eval_batch_size", "2", "--data.init_args.bptt", "6"]
    for folder in ("whole", "killed"):
        (tmp_path / folder).mkdir()
        write_tiny_corpus(tmp_path / folder / "data/janeausten")
        (tmp_path / folder / "ban.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.chdir(tmp_path / "whole")
    main(["fit", "--config", "ban.yaml", *quick])
    monkeypatch.chdir(tmp_path / "killed")
    with pytest.raises(RuntimeError, match="simulated kill"):  # killed in the middle of generation 2
        main(["fit", "--config", "ban.yaml", *quick, "--trainer.callbacks+=tests.helpers.KillAtEpoch",
              "--trainer.callbacks.epoch", "5"])
    main(["fit", "--config", "ban.yaml", *quick, "--ckpt_path", "last"])  # the newest run's last.ckpt
    runs = "checkpoints/janeausten_lstm_ban_l/latest"
    for generation in range(4):
        name = f"{runs}/generation_{generation}.ckpt"
        whole = torch.load(tmp_path / "whole" / name, weights_only=True)["state_dict"]
        resumed = torch.load(tmp_path / "killed" / name, weights_only=True)["state_dict"]
        assert whole.keys() == resumed.keys()
        assert all(torch.equal(whole[k], resumed[k]) for k in whole if isinstance(whole[k], torch.Tensor)), generation
    table = f"{runs}/generations.json"
    whole_rows = json.loads((tmp_path / "whole" / table).read_text())["generations"]
    assert json.loads((tmp_path / "killed" / table).read_text())["generations"] == whole_rows
    assert all(row["test/ppl"] > 1 for row in whole_rows)


# -- the Jane Austen corpus --------------------------------------------------------------------------------
def _xdr_strings(values: list[str]) -> bytes:
    """R's XDR serialization of a character vector (STRSXP of UTF-8 CHARSXPs), written from R's format."""
    body = struct.pack(">ii", 16, len(values))
    for value in values:
        data = value.encode()
        body += struct.pack(">ii", 0x8009, len(data)) + data  # CHARSXP, UTF-8 flag
    return body


def _xdr(item: bytes) -> bytes:
    return b"X\n" + struct.pack(">iii", 3, 0x40200, 0x30500) + struct.pack(">i", 5) + b"UTF-8" + item


def _block(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + zlib.compress(data)


def write_tiny_rdata(folder: Path, novels: dict[str, list[str]]) -> Path:
    """A lazy-load database in R's format: ``Rdata.rdb`` (blocks) and ``Rdata.rdx`` (gzip'd index) of the novels."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    blob, offsets = b"", {}
    for name, lines in novels.items():
        block = _block(_xdr(_xdr_strings(lines)))
        offsets[name] = (len(blob), len(block))
        blob += block
    (folder / "Rdata.rdb").write_bytes(blob)
    # index: list(variables = list(<name> = c(offset, length), ...), references = list(), compressed = TRUE)
    variables = struct.pack(">ii", 19 | (1 << 9), len(offsets))  # VECSXP with attributes
    for offset, length in offsets.values():
        variables += struct.pack(">iiii", 13, 2, offset, length)
    variables += _names_attribute(list(offsets))
    index = struct.pack(">ii", 19 | (1 << 9), 3) + variables + struct.pack(">ii", 19, 0) + struct.pack(">iii", 10, 1, 1)
    index += _names_attribute(["variables", "references", "compressed"])
    (folder / "Rdata.rdx").write_bytes(gzip.compress(_xdr(index)))
    return folder / "Rdata"


def _names_attribute(names: list[str]) -> bytes:
    """A pairlist ``names = c(...)`` (LISTSXP with a tag), ended by R_NilValue."""
    symbol = struct.pack(">i", 1) + struct.pack(">ii", 0x40009, 5) + b"names"
    return struct.pack(">i", 2 | (1 << 10)) + symbol + _xdr_strings(names) + struct.pack(">i", 254)


def tiny_novels() -> dict[str, list[str]]:
    novels = {}
    for number, name in enumerate(("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey",
                                   "persuasion")):
        lines = [name.upper(), "", "by Jane Austen", ""]
        for chapter in range(1, 5):
            lines += [f"CHAPTER {chapter}", "", f"Mr. Smith's {number} cats--said \u201cno!\u201d She", "agreed.",
                      "", f"_It_ was {chapter + number} o'clock in {1811 + number}."]
        novels[name] = [*lines, "", "THE END"]
    return novels


def test_the_r_database_reader_reads_what_r_writes(tmp_path: Path) -> None:
    stem = write_tiny_rdata(tmp_path / "janeaustenr/data", {"emma": ["EMMA", "", "CHAPTER I", "Emma \u00e9"]})
    assert read_lazy_load_database(stem) == {"emma": ["EMMA", "", "CHAPTER I", "Emma \u00e9"]}


def test_the_austen_corpus_is_made_by_chapter_with_ptb_style_tokens(tmp_path: Path) -> None:
    write_tiny_rdata(tmp_path / "pkg/usr/lib/R/site-library/janeaustenr/data", tiny_novels())
    manifest = prepare_jane_austen(tmp_path / "corpus", tmp_path / "pkg")
    assert manifest["chapters"] == 24 and manifest["recipe"] == "janeausten-1"
    train = (tmp_path / "corpus/train.txt").read_text().splitlines()
    assert train[:3] == ["mr. smith's N cats -- said \" no ! \"", "she agreed .", "it was N o'clock in N ."]
    # chapters 8 and 18 (of 0..23) are validation, 9 and 19 test: 2 of every 10, whole chapters
    assert len((tmp_path / "corpus/valid.txt").read_text().splitlines()) == 2 * 3
    assert len((tmp_path / "corpus/test.txt").read_text().splitlines()) == 2 * 3
    again = prepare_jane_austen(tmp_path / "corpus", tmp_path / "pkg")  # its own output: replaced, the same
    assert again == manifest
    module = JaneAustenDataModule(tmp_path / "corpus", batch_size=2, bptt=4)
    module.setup()
    assert module.num_classes == manifest["vocabulary"] - 1  # no rare word here: no <unk>


def test_the_prepare_command_never_overwrites_other_files(tmp_path: Path) -> None:
    write_tiny_rdata(tmp_path / "pkg/janeaustenr/data", tiny_novels())
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus/train.txt").write_text("someone else's file\n")
    with pytest.raises(Refusal, match="not written by this command"):
        prepare_jane_austen(tmp_path / "corpus", tmp_path / "pkg")
    assert (tmp_path / "corpus/train.txt").read_text() == "someone else's file\n"


def test_the_prepare_command_says_how_to_get_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingFileRefusal, match="apt-get download r-cran-janeaustenr"):
        main(["data", "janeausten", "--root", "corpus", "--source", str(tmp_path / "nothing")])
    write_tiny_rdata(tmp_path / "pkg/janeaustenr/data", tiny_novels())
    main(["data", "janeausten", "--root", "corpus", "--source", str(tmp_path / "pkg")])
    assert "corpus/train.txt" in capsys.readouterr().out
    assert json.loads((tmp_path / "corpus/janeausten.json").read_text())["splits"]["train"]["tokens"] > 0


# -- Hugging Face models -----------------------------------------------------------------------------------
def test_a_tiny_transformers_causal_lm_distils_into_another(corpus: Path) -> None:
    pytest.importorskip("transformers")
    from lightning_kd import TokenKD
    from lightning_kd.models import HuggingFaceCausalLM

    module = TextDataModule(corpus, batch_size=4, eval_batch_size=2, bptt=6)
    torch.manual_seed(0)
    teacher = HuggingFaceCausalLM("gpt2", dict(n_embd=16, n_layer=1, n_head=2, n_positions=16), vocab_size=21)
    student = HuggingFaceCausalLM("llama", dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, num_key_value_heads=2,
                                                max_position_embeddings=16), vocab_size=21)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    task = TokenKD(student, teacher=teacher, divergence="jsd", beta=0.5, alpha=0.5,
                   optimizer=lambda p: torch.optim.Adam(p, lr=0.01), lr_scheduler="none")
    (before,) = cpu_trainer().validate(task, datamodule=module, verbose=False)
    cpu_trainer(max_epochs=3).fit(task, datamodule=module)
    (after,) = cpu_trainer().validate(task, datamodule=module, verbose=False)
    assert after["val/ppl"] < 0.8 * before["val/ppl"]  # the student learnt
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())  # the teacher did not


# -- the character-aware model (the paper's ConvLSTM) ---------------------------------------------------------
class TrainingLosses(Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.values.append(float(trainer.callback_metrics["train/loss"]))


def test_the_papers_convlstm_has_19_4m_parameters() -> None:
    from lightning_kd.models import CharCNNLSTM

    with torch.device("meta"):
        model = CharCNNLSTM(vocab_size=10_000, char_vocab_size=51, preset="large")
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 19.4  # Kim et al.'s "LSTM-CharCNN-Large"


def test_words_are_served_as_their_characters_and_the_model_reads_them(corpus: Path) -> None:
    from lightning_kd.models import CharCNNLSTM

    words = TextDataModule(corpus, batch_size=2, bptt=4)
    chars = TextDataModule(corpus, batch_size=2, bptt=4, characters=True)
    words.setup()
    chars.setup()
    spellings = chars.spellings()
    for word_batch, char_batch in zip(words.train_dataloader(), chars.train_dataloader(), strict=True):
        assert torch.equal(char_batch["input"], spellings.table[word_batch["input"]])  # (B, T, L)
        assert torch.equal(char_batch["target"], word_batch["target"])  # the next word, as before
    w3 = words.read_vocabulary().ids["w3"]
    characters = {index: character for character, index in spellings.ids.items()}
    assert [characters[i] for i in spellings.table[w3].tolist() if i] == list("{w3}")  # 0 pads
    facts = TextDataModule.data_facts(root=str(corpus), characters=True)
    assert facts["char_vocab_size"] == spellings.size and facts["input_shape"] == (35, spellings.table.shape[1])
    seed_everything(0)
    task = Classifier(CharCNNLSTM(chars.num_classes, spellings.size, preset="small", dropout=0.0),
                      optimizer=lambda p: torch.optim.Adam(p, lr=0.003), lr_scheduler="none")
    losses = TrainingLosses()
    cpu_trainer(max_epochs=5, callbacks=[losses]).fit(task, datamodule=chars)
    assert losses.values[-1] < 0.9 * losses.values[0]  # it learns (a 4M-parameter model overfits 300 tokens fast)
    with pytest.raises(Refusal, match="characters=True spells each word"):
        TextDataModule(corpus, level="char", characters=True)
