"""A Hugging Face GPT-2 trained with DFA by ``transformers.Trainer``, alignment in TensorBoard.

The model is an unmodified ``GPT2LMHeadModel`` built from a small ``GPT2Config`` (no weights are
downloaded) on characters. ``fa.DFA().apply(model, output="logits")`` makes each transformer
block a feedback point and injects the output error at the vocabulary head; the model still
computes its own loss from ``labels``, and the ordinary ``Trainer`` trains it. The
:class:`~feedback_alignment.integrations.huggingface.AlignmentCallback` measures, every N steps
on a fixed probe batch, the angle between each layer's DFA update and BP's, and logs it through
the Trainer to TensorBoard (``report_to="tensorboard"``) beside the loss: look for
``train/alignment/angle/transformer.h.0.attn.c_attn``, ``train/alignment/angle_mean`` and
``train/alignment/cosine/transformer.h.1`` (the Trainer files training logs under ``train/``).

Measured 2026-12-05 (default run, 1 thread, 2 min): validation loss 3.21 nats per character
after 300 steps (a uniform guess over the 84 characters: 4.43), mean update angle of the
hidden layers 82 degrees; a short schedule, to show the plumbing, not a tuned model.

Text: Shakespeare's works when they are in the data cache (``feedback-alignment data fetch
shakespeare``), else (and always with ``--smoke``) a short passage built into this script.

Needs ``transformers``, ``accelerate`` and ``tensorboard`` (``pip install
"feedback-alignment[hf]" accelerate tensorboard``).

Run::

    python examples/gpt2_trainer.py --out runs/gpt2     # 300 steps (2 min on 1 core)
    tensorboard --logdir runs/gpt2
    python examples/gpt2_trainer.py --smoke             # a tiny run into a temporary folder
"""

from __future__ import annotations

import argparse
import tempfile
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
    out = args.out or Path(tempfile.mkdtemp(prefix="fa-gpt2-trainer-"))
    torch.set_num_threads(args.threads)

    import transformers  # imported here so that --help stays fast

    from feedback_alignment.integrations.huggingface import AlignmentCallback

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
    transformers.set_seed(args.seed)
    model = transformers.GPT2LMHeadModel(config)
    rule = fa.DFA(seed=args.seed)
    rule.apply(model, output="logits")  # points: transformer.h.*; error at lm_head

    train = Chunks(train_ids, block, stride=block // 2)
    val = Chunks(val_ids, block, stride=block)
    print(f"{name}: {len(train)} training windows of {block} characters, vocabulary {vocab}")
    training = transformers.TrainingArguments(
        output_dir=str(out),
        logging_dir=str(out / "tensorboard"),
        report_to="tensorboard",
        max_steps=steps,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        warmup_steps=min(20, steps // 10),
        logging_steps=every,
        save_strategy="no",
        use_cpu=True,
        seed=args.seed,
        disable_tqdm=args.smoke,
        dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(
        model=model, args=training, train_dataset=train, eval_dataset=val
    )
    probe = next(iter(torch.utils.data.DataLoader(val, batch_size=8)))  # a fixed batch
    callback = AlignmentCallback(rule, probe, every_n_steps=every).attach(trainer)
    trainer.train()
    evaluation = trainer.evaluate()

    print(f"\nvalidation loss {evaluation['eval_loss']:.3f} nats per character after {steps} steps")
    print("alignment with BP at the last measurement (degrees; < 90: DFA descends the loss):")
    for key, value in callback.last_metrics.items():
        if key.startswith("alignment/angle/transformer.h.") and key.endswith(("c_attn", "c_fc")):
            print(f"  {key.removeprefix('alignment/angle/'):<32} {value:6.1f}")
    print(f"  {'mean over hidden layers':<32} {callback.last_metrics['alignment/angle_mean']:6.1f}")
    events = sorted((out / "tensorboard").rglob("events.out.tfevents.*"))
    if not events:
        raise SystemExit(f"no TensorBoard event file was written under {out / 'tensorboard'}")
    print(f"\nTensorBoard logs: tensorboard --logdir {out / 'tensorboard'}")


if __name__ == "__main__":
    main()
