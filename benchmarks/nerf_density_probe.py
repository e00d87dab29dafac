"""Follow each NeRF field's density over a short run: is a field dead (no positive raw density),
alive at the surface only (BP's sparse geometry) or alive everywhere (a fog)?

Why: the ``nerf-authors`` task uses the DFA authors' ReLU density, under which a field can start
dead (``nerf.density_at_init``) or, under DFA, fill the volume with a uniform density that never
sparsifies. This prints, every 50 steps, the training loss and each field's fraction of positive
raw densities and mean raw density on the task's own batches, and the PSNR of test view 0 every
250 steps, for one rule and seed, so that a failed run can be told apart from a dead start.

    python benchmarks/nerf_density_probe.py --rule DFA --seed 0 --steps 500          # authors' field
    python benchmarks/nerf_density_probe.py --rule BP --seed 0 --steps 250 --lr 2e-3
    python benchmarks/nerf_density_probe.py --field ours --rule DFA --seed 0         # softplus field

The training loop is the task's (``nerf.train_one``: Adam, NeRF's exponential decay, coarse +
fine loss), without its test-view renders. One thread; 500 steps took 106 s on one core of
the 2-core AMD EPYC (2026-12-06, authors' field, DFA, beside another job).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from feedback_alignment.experiments import nerf
from feedback_alignment.experiments.nerf_scene import load_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--field", choices=("authors", "ours"), default="authors")
    parser.add_argument("--rule", choices=nerf.RULES, default="DFA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=None, help="default: the task's hand-set rate")
    parser.add_argument("--eps", type=float, default=1e-8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = replace(nerf.AUTHORS if args.field == "authors" else nerf.NeRFTaskConfig(),
                     steps=args.steps)  # fmt: skip
    rate = config.lr[args.rule] if args.lr is None else args.lr
    scene = load_scene(config.scene, config.downscale)
    torch.manual_seed(args.seed)
    model = nerf.build_model(config, scene)
    print("alive at init (probe batch):", nerf.density_at_init(model, scene))
    nerf.place_rule(args.rule, model, args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=rate, eps=args.eps)
    generator = torch.Generator().manual_seed(args.seed)
    seen: dict[str, tuple[float, float]] = {}
    for name, module in (("coarse", model.field), ("fine", model.fine)):
        module.register_forward_hook(
            lambda _m, _i, raw, name=name: seen.__setitem__(
                name, ((raw[..., 3] > 0).float().mean().item(), raw[..., 3].mean().item())
            )
        )
    start = time.perf_counter()
    for step in range(args.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = rate * config.final_lr_factor ** (step / args.steps)
        index = torch.randint(0, len(scene.colours), (config.rays,), generator=generator)
        rgb, target = model(scene.origins[index], scene.directions[index]), scene.colours[index]
        loss = F.mse_loss(model.coarse_rgb, target) + F.mse_loss(rgb, target)
        if step % 50 == 0 or step == args.steps:
            fields = "  ".join(f"{k} alive {a:.3f} mean {m:+.3f}" for k, (a, m) in seen.items())
            view = ""
            if step % 250 == 0 or step == args.steps:
                view = f"  PSNR {nerf.psnr(nerf.render_view(model, scene, 0), scene.test_images[0]):.2f}"
            print(f"step {step:5d}  loss {loss.item():.4f}  {fields}{view}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
        if step == args.steps:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


if __name__ == "__main__":
    main()
