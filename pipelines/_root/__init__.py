"""clipcrawl: Common Crawl WAT shards -> CLIP-filtered image-text datasets, on Apache Beam.

Subpackages: ``clipcrawl.io`` (sources, sinks, coordinator), ``clipcrawl.transforms``
(PTransforms and the pure functions behind them), ``clipcrawl.pipelines`` (runnable
pipelines and the CLI) and ``clipcrawl.runners`` (runner presets).
"""

__version__ = "0.1.0"
