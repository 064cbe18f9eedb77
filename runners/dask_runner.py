"""Beam's DaskRunner with the two ParDo translation faults that clipcrawl's graph hits fixed.

Beam 2.77 turns each ParDo into ``map_partitions`` over a ``dask.bag``, and as shipped:

1. Tags are lost. A bundle's results are collected as ``[v.value for v in receivers]``, which
   turns a ``TaggedOutput`` into its bare value, and every consumer reads the producer's whole
   bag. So each output of a ``with_outputs`` ParDo receives the elements of all outputs.
   clipcrawl routes settled rows around stages and shard errors past the writer that way.
2. ``finish_bundle`` output is dropped: results are collected before ``finish_bundle`` runs.
   ``BatchElements`` (under RunInference) hands on its last batch there, and so does the
   downloader with the downloads still in flight. (Beam 2.78 fixed this one; 1 remains.)

Both show on a three-line pipeline (a ``with_outputs`` split, a DoFn that emits from
``finish_bundle``); ``tests/test_dask_runner.py`` runs it. Here each partition gets its own
DoFn copy and receivers, results keep their tags until a consumer selects its own, and
``finish_bundle`` output is kept. Windows are dropped between steps exactly as in Beam's
runner (batch, global window). Everything else (GroupByKey, Flatten, Create) is Beam's.
"""

from __future__ import annotations

import collections
import functools
from typing import Any

import apache_beam as beam
import dask.bag as db
from apache_beam import pvalue
from apache_beam.internal import pickler
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import dask_runner, transform_evaluator
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.core import DoFn
from apache_beam.transforms.sideinputs import SideInputMap


def _run_partition(items: Any, spec: tuple) -> list[Any]:
    """One Dask partition as one Beam bundle; returns raw main outputs and ``TaggedOutput``s."""
    fn_bytes, label, window_fn, side_inputs, args, kwargs = spec
    receivers = transform_evaluator.OneReceiver()
    handler = _OutputHandler(
        window_fn=window_fn,
        main_receivers=receivers[None],
        tagged_receivers=receivers,
        per_element_output_counter=None,
        output_batch_converter=None,
        process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(pickler.loads(fn_bytes)),
        handler,
        context=DoFnContext(label, state=None),
        side_inputs=side_inputs,
        input_args=args,
        input_kwargs=kwargs,
        user_state_context=None,
        bundle_finalizer_param=DoFn.BundleFinalizerParam(),
    )
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(item)
    invoker.invoke_finish_bundle()  # before the results are read: its output counts
    invoker.invoke_teardown()
    return [
        pvalue.TaggedOutput(out.tag, out.value.value) if isinstance(out, pvalue.TaggedOutput) else out.value
        for out in receivers.values
    ]


class _ParDo(transform_evaluator.DaskBagOp):
    def apply(self, input_bag: db.Bag, side_inputs: list[SideInputMap] | None = None) -> db.Bag:
        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        spec = (pickler.dumps(transform.fn), transform.label, window_fn, side_inputs, list(args), kwargs)
        windowed = input_bag.map(transform_evaluator.get_windowed_value, window_fn)
        return windowed.map_partitions(_run_partition, spec)


_TRANSLATIONS = {**transform_evaluator.TRANSLATIONS, beam.ParDo: _ParDo}


def _is_output(item: Any, tag: str | None) -> bool:
    if isinstance(item, pvalue.TaggedOutput):
        return item.tag == tag
    return tag is None


def _untag(item: Any) -> Any:
    return item.value if isinstance(item, pvalue.TaggedOutput) else item


class _BagVisitor(PipelineVisitor):
    """Builds one bag per leaf transform; a consumer reads only the output it was given."""

    def __init__(self, bag_kwargs: dict) -> None:
        self.bags: dict[AppliedPTransform, db.Bag] = collections.OrderedDict()
        self._bag_kwargs = bag_kwargs

    def _bag_of(self, pcoll: pvalue.PValue) -> db.Bag | None:
        producer = pcoll.producer
        if producer not in self.bags:
            return None
        bag = self.bags[producer]
        if len(producer.outputs) > 1:  # a multi-output ParDo: keep this output's elements only
            bag = bag.filter(functools.partial(_is_output, tag=pcoll.tag)).map(_untag)
        return bag

    def visit_transform(self, node: AppliedPTransform) -> None:
        op = _TRANSLATIONS.get(node.transform.__class__, transform_evaluator.NoOp)(node, bag_kwargs=self._bag_kwargs)
        inputs = []
        for pcoll in node.inputs:
            if isinstance(pcoll, pvalue.PBegin):
                inputs.append(None)
            elif (bag := self._bag_of(pcoll)) is not None:
                inputs.append(bag)
        if len(inputs) == 1 and not isinstance(op, transform_evaluator.Flatten):
            input_bag: Any = inputs[0]
        else:
            input_bag = inputs or None
        side_inputs = [
            SideInputMap(
                type(side), side._view_options(),
                transform_evaluator.DaskBagWindowedIterator(self._bag_of(side.pvalue), side._window_mapping_fn),
            )
            for side in node.side_inputs
        ]
        self.bags[node] = op.apply(input_bag=input_bag, side_inputs=side_inputs or None)


class _Result(dask_runner.DaskRunnerResult):
    """Closes its Dask client once the job has ended (Beam's leaves it open, reconnecting)."""

    def wait_until_finish(self, duration: float | None = None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            if self._state in (PipelineState.DONE, PipelineState.FAILED):
                self.client.close()


class DaskRunner(dask_runner.DaskRunner):
    """Beam's DaskRunner, with tagged outputs and ``finish_bundle`` output kept."""

    @staticmethod
    def to_dask_bag_visitor(bag_kwargs: dict | None = None, lazy_side_inputs: bool = False) -> PipelineVisitor:
        """``lazy_side_inputs`` (Beam 2.78's ``--dask_lazy_side_inputs``) is accepted and ignored:
        side inputs are read through Beam's windowed iterator either way."""
        return _BagVisitor(bag_kwargs or {})

    def run_pipeline(self, pipeline: Any, options: Any) -> _Result:
        result = super().run_pipeline(pipeline, options)
        return _Result(result.client, result.futures)
