"""Send only pending samples through a stage; settled rows (already rejected) go around it."""

from __future__ import annotations

import apache_beam as beam

from clipcrawl.transforms.sample import Sample

_PENDING, _SETTLED = 0, 1


def _route(sample: Sample, _: int) -> int:
    return _PENDING if sample.pending else _SETTLED


class OnPending(beam.PTransform):
    """Applies ``stage`` to pending samples and flattens its output with the settled ones."""

    def __init__(self, stage: beam.PTransform) -> None:
        super().__init__()
        self._stage = stage

    def expand(self, samples: beam.PCollection) -> beam.PCollection:
        pending, settled = samples | "SplitPending" >> beam.Partition(_route, 2)
        processed = pending | "Process" >> self._stage
        return (processed, settled) | "Rejoin" >> beam.Flatten()
