"""Task ``digits``: the demo as a reproduction task (BP vs DFA vs Shallow on the bundled digits)."""

from __future__ import annotations

from feedback_alignment.experiments import demo
from feedback_alignment.experiments.registry import RunOptions, TaskReport, register_task


@register_task("digits", "tanh MLP on scikit-learn's digits: BP, DFA, Shallow (seconds)")
def run(options: RunOptions) -> TaskReport:
    config = demo.DemoConfig(seeds=options.seeds, epochs=10 if options.quick else 30)
    results, config = demo.run(config, progress=options.progress)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    path = options.out_dir / "results.json"
    demo.write_json(results, config, path)
    markdown = "### digits (sanity check; no paper figure)\n\n" + demo.summary_table(
        results, config
    )
    return TaskReport("digits", markdown, [path])
