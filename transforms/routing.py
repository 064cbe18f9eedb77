"""Send only pending samples through a stage; settled rows (already rejected) go around it."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.typehints import no_annotations

from clipcrawl.transforms.sample import Sample

PENDING = "pending"
SETTLED = "settled"


@no_annotations  # a bare TaggedOutput is no type Beam can use: the types are given in OnPending
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
        # Both outputs carry Samples. Said explicitly rather than read from _route's annotation,
        # whose bare TaggedOutput Beam cannot use (it warns, or takes it for the main type).
        split = beam.FlatMap(_route).with_input_types(Sample).with_output_types(Sample)
        routed = samples | "SplitPending" >> split.with_outputs(SETTLED, main=PENDING)
        processed = routed[PENDING] | "Process" >> self._stage
        return (processed, routed[SETTLED]) | "Rejoin" >> beam.Flatten()
