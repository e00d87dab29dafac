"""A Hugging Face GPT-2 trained with DFA by Lightning, alignment in TensorBoard.

The same model as ``gpt2_trainer.py`` (an unmodified ``GPT2LMHeadModel`` from a small
``GPT2Config``, no download, on characters), trained by ``lightning.pytorch``. The
``LightningModule`` holds the GPT-2 as ``self.model`` and its ``training_step`` calls it; the rule
is applied to that inner model, ``rule.apply(module.model, output="logits")``, because a rule
refuses feedback points that run outside its own model's forward pass. The
:class:`~feedback_alignment.integrations.lightning.AlignmentCallback` finds the inner model by
itself, measures every N steps on a fixed probe batch the angle between each layer's DFA update
and BP's, and writes it to the trainer's ``TensorBoardLogger`` (``alignment/angle/...``,
``alignment/angle_mean``, ``alignment/cosine/...``) beside the loss the module logs.

Measured 2026-12-05 (default run, 1 thread, 2 min): validation loss 3.27 nats per character
after 300 steps (a uniform guess over the 84 characters: 4.43), mean update angle of the
hidden layers 89 degrees; a short schedule, to show the plumbing, not a tuned model.

Text: Shakespeare's works when they are in the data cache (``feedback-alignment data fetch
shakespeare``), else (and always with ``--smoke``) a short passage built into this script.

Needs ``lightning``, ``transformers`` and ``tensorboard`` (``pip install lightning
"feedback-alignment[hf]" tensorboard``).

Run::

    python examples/gpt2_lightning.py --out runs/gpt2-lightning   # 300 steps, 2 min on 1 core
    tensorboard --logdir runs/gpt2-lightning
    python examples/gpt2_lightning.py --smoke                     # a tiny run, temp folder
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch

import feedback_alignment as fa

TEXT = """\
From fairest creatures we desire increase,
That thereby beauty's rose might never die,
But as the riper should by time decease,
His tender heir might bear his memory:
But thou, contracted to thine own bright eyes,
Feed'st thy light's flame with self-substantial fuel,
Making a famine where abundance lies,
Thy self thy foe, to thy sweet self too cruel.
"""


class Chunks(torch.utils.data.Dataset):
    """Consecutive windows of ``block`` characters; the model shifts ``labels`` itself."""

    def __init__(self, ids: torch.Tensor, block: int, stride: int) -> None:
        self.ids, self.block = ids, block
        self.starts = range(0, len(ids) - block, stride)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        window = self.ids[self.starts[i] : self.starts[i] + self.block]
        return {"input_ids": window, "labels": window}


def corpus(smoke: bool) -> tuple[str, torch.Tensor, torch.Tensor, int]:
    """(name, train ids, validation ids, vocabulary size): Shakespeare if cached, else TEXT."""
    from feedback_alignment import data

    if not smoke and data.is_cached("shakespeare"):
        text = data.load("shakespeare")
        return "shakespeare", text.train[:2_000_000], text.val[:50_000], text.vocab_size
    text = data.CharCorpus.from_text(TEXT * 4, fractions=(0.8, 0.2, 0.0))
    return "built-in sonnet", text.train, text.val, text.vocab_size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: a temp dir)"
    )
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default 300)")
    parser.add_argument("--align-every", type=int, default=None, help="default 25 (smoke: 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    steps = args.steps or (8 if args.smoke else 300)
    every = args.align_every or (4 if args.smoke else 25)
    if min(steps, every, args.threads) < 1:
        parser.error("--steps, --align-every and --threads must be >= 1")
    out = args.out or Path(tempfile.mkdtemp(prefix="fa-gpt2-lightning-"))
    torch.set_num_threads(args.threads)

    import lightning.pytorch as pl  # imported here so that --help stays fast
    import transformers
    from lightning.pytorch.loggers import TensorBoardLogger

    from feedback_alignment.integrations.lightning import AlignmentCallback

    class CharGPT(pl.LightningModule):
        """A LightningModule around a GPT-2; ``training_step`` calls the inner model."""

        def __init__(self, config: transformers.GPT2Config, lr: float) -> None:
            super().__init__()
            self.model = transformers.GPT2LMHeadModel(config)
            self.lr = lr

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            loss = self.model(**batch).loss  # the loss GPT-2 computes from labels
            self.log("train/loss", loss, prog_bar=True)
            return loss

        def validation_step(self, batch: dict, batch_idx: int) -> None:
            self.log("val/loss", self.model(**batch).loss, prog_bar=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=self.lr)

    transformers.logging.set_verbosity_error()
    name, train_ids, val_ids, vocab = corpus(args.smoke)
    block = 32 if args.smoke else 64
    config = transformers.GPT2Config(
        vocab_size=vocab,
        n_positions=block,
        n_embd=48 if args.smoke else 128,  # wider than the vocabulary: no bottleneck
        n_layer=2 if args.smoke else 4,
        n_head=2 if args.smoke else 4,
    )
    pl.seed_everything(args.seed, verbose=False)
    module = CharGPT(config, lr=1e-3)
    rule = fa.DFA(seed=args.seed)
    rule.apply(module.model, output="logits")  # the inner model: points transformer.h.*

    train = Chunks(train_ids, block, stride=block // 2)
    val = Chunks(val_ids, block, stride=block)
    print(f"{name}: {len(train)} training windows of {block} characters, vocabulary {vocab}")
    loader = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True)
    val_loader = torch.utils.data.DataLoader(val, batch_size=16)
    probe = next(iter(torch.utils.data.DataLoader(val, batch_size=8)))  # a fixed batch
    callback = AlignmentCallback(rule, probe, every_n_steps=every)
    logger = TensorBoardLogger(save_dir=str(out), name="tensorboard")
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[callback],
        log_every_n_steps=every,
        val_check_interval=min(steps, 100),  # optimizer steps, across epochs
        check_val_every_n_epoch=None,
        limit_val_batches=4 if args.smoke else 20,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_model_summary=not args.smoke,
        enable_progress_bar=not args.smoke,
        default_root_dir=str(out),
    )
    with warnings.catch_warnings():  # one process, no worker processes: on purpose
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, loader, val_loader)

    print(f"\nvalidation loss {trainer.callback_metrics['val/loss']:.3f} nats per character "
          f"after {trainer.global_step} steps")  # fmt: skip
    print("alignment with BP at the last measurement (degrees; < 90: DFA descends the loss):")
    for key, value in callback.last_metrics.items():
        if key.startswith("alignment/angle/transformer.h.") and key.endswith(("c_attn", "c_fc")):
            print(f"  {key.removeprefix('alignment/angle/'):<32} {value:6.1f}")
    print(f"  {'mean over hidden layers':<32} {callback.last_metrics['alignment/angle_mean']:6.1f}")
    events = sorted(Path(logger.log_dir).rglob("events.out.tfevents.*"))
    if not events:
        raise SystemExit(f"no TensorBoard event file was written under {logger.log_dir}")
    print(f"\nTensorBoard logs: tensorboard --logdir {logger.log_dir}")


if __name__ == "__main__":
    main()
