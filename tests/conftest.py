"""Shared fixtures: paths to the real crawl data and a Beam runner that needs no download."""

from __future__ import annotations

import pathlib

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

DATA = pathlib.Path(__file__).parent / "data"
WAT_2014 = DATA / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat"
WAT_2014_GZ = DATA / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat.gz"
WAT_WHIRLWIND = DATA / "whirlwind.warc.wat.gz"


def beam_options(*extra: str) -> PipelineOptions:
    """FnApiRunner: the DirectRunner's engine, without its attempt to download Prism."""
    return PipelineOptions(["--runner=FnApiRunner", *extra])


@pytest.fixture
def fnapi_options() -> PipelineOptions:
    return beam_options()


def pytest_configure(config: pytest.Config) -> None:
    # Beam's TestPipeline is a class named Test*: not a test.
    config.addinivalue_line("filterwarnings", "ignore:cannot collect test class 'TestPipeline'")
