"""Send only pending samples through a stage; settled rows (already rejected) go around it."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam

from clipcrawl.transforms.sample import Sample

PENDING = "pending"
SETTLED = "settled"


def _route(sample: Sample) -> Iterator[Sample | beam.pvalue.TaggedOutput]:
    yield sample if sample.pending else beam.pvalue.TaggedOutput(SETTLED, sample)


class OnPending(beam.PTransform):
    """Applies ``stage`` to pending samples and flattens its output with the settled ones.

    Routing uses a ParDo whose two outputs are both consumed (``Partition`` would leave an
    empty main output dangling), so the pipeline keeps a single leaf.
    """

    def __init__(self, stage: beam.PTransform) -> None:
        super().__init__()
        self._stage = stage

    def expand(self, samples: beam.PCollection) -> beam.PCollection:
        # Both outputs carry Samples. Said explicitly: Beam 2.78 reads a bare TaggedOutput in the
        # return annotation as part of the main output's type and then rejects the next stage.
        split = beam.FlatMap(_route).with_output_types(Sample)
        routed = samples | "SplitPending" >> split.with_outputs(SETTLED, main=PENDING)
        processed = routed[PENDING] | "Process" >> self._stage
        return (processed, routed[SETTLED]) | "Rejoin" >> beam.Flatten()
