"""Task ``digits``: the demo as a reproduction task (BP vs DFA vs Shallow on the bundled digits)."""

from __future__ import annotations

from dataclasses import replace

from feedback_alignment.experiments import demo, presets
from feedback_alignment.experiments.registry import RunOptions, TaskReport, register_task
from feedback_alignment.experiments.results import write_results, write_table

run_experiment = demo.run
"""Every (rule, seed) of a :class:`~.demo.DemoConfig`: the demo's loop."""

summary = demo.summary
"""The demo's table."""


def config_for(options: RunOptions) -> demo.DemoConfig:
    """The run's settings: preset ``options.preset`` of ``presets/digits.json`` (``quick``: 10
    epochs; ``full``: the demo's 30) with the run's seeds."""
    return replace(presets.preset("digits", options.preset, demo.DemoConfig()), seeds=options.seeds)


@register_task("digits", "tanh MLP on scikit-learn's digits: BP, DFA, Shallow (seconds)")
def run(options: RunOptions) -> TaskReport:
    results, config = run_experiment(config_for(options), progress=options.progress)
    table = summary(results, config, options.quick)
    path = write_results(
        options.out_dir, "digits", options.quick, options.seeds, config=config, runs=results
    )
    files = [path, *write_table(options.out_dir, table, options.seeds)]
    markdown = "### digits (sanity check; no paper figure)\n\n" + table.to_markdown()
    return TaskReport("digits", markdown, files)
