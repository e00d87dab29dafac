"""Task ``digits``: the demo as a reproduction task (BP vs DFA vs Shallow on the bundled digits)."""

from __future__ import annotations

from feedback_alignment.experiments import demo
from feedback_alignment.experiments.registry import RunOptions, TaskReport, register_task
from feedback_alignment.experiments.results import write_results, write_table


@register_task("digits", "tanh MLP on scikit-learn's digits: BP, DFA, Shallow (seconds)")
def run(options: RunOptions) -> TaskReport:
    config = demo.DemoConfig(seeds=options.seeds, epochs=10 if options.quick else 30)
    results, config = demo.run(config, progress=options.progress)
    table = demo.summary(results, config, options.quick)
    path = write_results(
        options.out_dir, "digits", options.quick, options.seeds, config=config, runs=results
    )
    files = [path, *write_table(options.out_dir, table, options.seeds)]
    markdown = "### digits (sanity check; no paper figure)\n\n" + table.to_markdown()
    return TaskReport("digits", markdown, files)
