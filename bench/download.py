"""Download throughput per CPU second: clipcrawl's download stage against img2dataset.

A loopback web (``download_server.py``, its own process, so its CPU is never counted)
serves a deterministic mix (``download_corpus.py``): JPEG/PNG/WebP of 5 KB-2 MB, 5-50 ms
latency, ~5% 404s, ~2% answers slower than the timeout. The same URL list then goes through

* clipcrawl: the download DoFn's ``setup``/``process`` on batches, in a subprocess
  (``download_clipcrawl.py``), no Beam runner;
* img2dataset: its CLI from a separate venv (``bench/requirements-download.txt``), one
  process, the same thread count, image_size 256, border, jpg, quality 95.

CPU seconds are each subprocess's user+sys time from ``os.wait4`` (its own children
included). Each tool also runs on the first half of the list; the ``marginal`` columns are
(CPU(all) - CPU(half)) / (successes(all) - successes(half)): the cost of one more image
once the fixed costs (imports, spawned processes, start-up waits) are paid. Two scenarios, same URLs up to the host part:

* ``hosts``: URLs spread over ``--hosts`` loopback addresses (127.0.0.1, 127.0.0.2, ...),
  clipcrawl with its default politeness (per-host connections and rate, robots.txt);
* ``one-host``: every URL on 127.0.0.1, clipcrawl with per-host limits and robots.txt off.

With ``--compare-pillow`` a third row, ``clipcrawl-pillow``, runs clipcrawl with pyvips hidden
(every WebP decoded by Pillow at full size), so the scaled-WebP decoder's gain is measured in
the same run.

Usage: ``python bench/download.py [--count 1000] [--limit N] [--hosts 32] [--threads 16] [--compare-pillow] [--smoke]``
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import download_corpus  # a sibling script, not a package

from clipcrawl.transforms.download_config import DownloadConfig  # noqa: E402

TARGET_RATIO = 2.0
DEFAULT_VENV = Path(tempfile.gettempdir()) / "dl-bench-venv"
SMOKE = {"count": 60, "hosts": 4}
# thread_time() sees only the calling thread; libvips decodes in a worker thread of its own.
VIPS_NOTE = ", whose libvips worker-thread CPU counts in the loop but not in process_image"


@dataclasses.dataclass
class Run:
    """One tool over one URL list."""

    tool: str
    note: str = ""
    cpu_s: float = 0.0  # the subprocess's user+sys seconds, its children included
    wall_s: float = 0.0
    inner_cpu_s: float | None = None  # clipcrawl only: CPU of the download loop alone
    image_cpu_s: float | None = None  # clipcrawl only: CPU inside process_image (all threads)
    images: int = 0  # clipcrawl only: process_image calls
    decoder: str = ""  # clipcrawl only: which decoder large WebPs got
    outcomes: dict[str, tuple[bool, str]] = dataclasses.field(default_factory=dict)  # url -> (ok, reason)

    @property
    def successes(self) -> int:
        return sum(ok for ok, _ in self.outcomes.values())


def timed(command: list[str], cwd: Path, log: Path) -> tuple[int, float, float]:
    """Exit code, CPU seconds (user+sys, children included) and wall seconds of ``command``."""
    began = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_utime + usage.ru_stime, time.perf_counter() - began


def run_clipcrawl(urls: list[str], config: dict, work: Path, pillow_only: bool = False) -> Run:
    tool = "clipcrawl-pillow" if pillow_only else "clipcrawl"
    work.mkdir(parents=True, exist_ok=True)
    (work / "urls.txt").write_text("\n".join(urls) + "\n")
    (work / "config.json").write_text(json.dumps(config))
    command = [sys.executable, str(BENCH / "download_clipcrawl.py"), "urls.txt", "config.json", "result.json"]
    code, cpu_s, wall_s = timed(command + ["--pillow-only"] * pillow_only, work, work / "log.txt")
    if code != 0:
        return Run(tool, note=f"exit {code}: {(work / 'log.txt').read_text()[-2000:]}")
    result = json.loads((work / "result.json").read_text())
    outcomes = {url: (row["ok"], row["error"] or row["status"]) for url, row in result["rows"].items()}
    return Run(tool, cpu_s=cpu_s, wall_s=wall_s, inner_cpu_s=result["cpu_s"], image_cpu_s=result["image_cpu_s"],
               images=result["images"], decoder=result["webp_decoder"], outcomes=outcomes)


def run_img2dataset(urls: list[str], venv: Path, threads: int, timeout: float, work: Path) -> Run:
    executable = venv / "bin" / "img2dataset"
    if not executable.exists():
        return Run("img2dataset", note="not installed (see bench/README.md)")
    work.mkdir(parents=True, exist_ok=True)
    (work / "urls.txt").write_text("\n".join(urls) + "\n")
    command = [
        str(executable), "--url_list=urls.txt", "--output_folder=out", "--input_format=txt",
        "--processes_count=1", f"--thread_count={threads}", "--image_size=256", "--resize_mode=border",
        "--encode_format=jpg", "--encode_quality=95", f"--timeout={timeout:g}", "--output_format=webdataset",
        f"--number_sample_per_shard={max(len(urls), 10)}", "--enable_wandb=False", "--retries=0",
    ]
    code, cpu_s, wall_s = timed(command, work, work / "log.txt")
    shards = sorted((work / "out").glob("*.parquet"))
    if code != 0 or not shards:
        return Run("img2dataset", note=f"exit {code}: {(work / 'log.txt').read_text()[-2000:]}")
    outcomes = {}
    for shard in shards:
        for row in pq.read_table(shard, columns=["url", "status", "error_message"]).to_pylist():
            outcomes[row["url"]] = (row["status"] == "success", row["error_message"] or row["status"])
    return Run("img2dataset", cpu_s=cpu_s, wall_s=wall_s, outcomes=outcomes)


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    urls: list[str]
    config: dict  # DownloadConfig fields for clipcrawl


def scenarios(items: list[download_corpus.Item], origins: list[str], threads: int, timeout: float) -> list[Scenario]:
    hosts = [origin.split("//", 1)[1] for origin in origins]
    common = {"threads": threads, "connect_timeout": timeout, "read_timeout": timeout, "total_timeout": 5 * timeout,
              "allowed_hosts": hosts}  # the SSRF guard stays on; only the bench's servers are let through
    defaults = DownloadConfig()
    spread = Scenario(
        "hosts",
        f"{len(origins)} loopback hosts; clipcrawl politeness ON (defaults: {defaults.per_host_connections} "
        f"connections and {defaults.per_host_rate:g} requests/s per host, robots.txt fetched per host)",
        [origins[item.index % len(origins)] + item.path for item in items],
        common,
    )
    single = Scenario(
        "one-host",
        "1 loopback host; clipcrawl politeness OFF (per_host_connections=0, per_host_rate=0, "
        "respect_robots_txt=False): one host would otherwise throttle everything",
        [origins[0] + item.path for item in items],
        {**common, "per_host_connections": 0, "per_host_rate": 0, "respect_robots_txt": False},
    )
    return [spread, single]


def start_server(folder: Path, count: int, seed: int, hosts: int) -> tuple[subprocess.Popen, list[str]]:
    server = subprocess.Popen(
        [sys.executable, str(BENCH / "download_server.py"), str(folder), "--count", str(count), "--seed", str(seed),
         "--hosts", str(hosts)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    line = server.stdout.readline()
    if not line:
        raise SystemExit("the bench server did not start")
    return server, json.loads(line)["origins"]


def per_cpu(successes: int, cpu_s: float) -> float:
    return successes / cpu_s if cpu_s > 0 else float("nan")


def marginal(full: Run, half: Run | None) -> float | None:
    """CPU seconds per extra success between the half and the full list (fixed costs cancel)."""
    if half is None or half.note or full.note or full.successes <= half.successes:
        return None
    return (full.cpu_s - half.cpu_s) / (full.successes - half.successes)


def report(scenario: Scenario, runs: list[Run], halves: list[Run | None]) -> None:
    print(f"\n== scenario {scenario.name}: {len(scenario.urls)} URLs; {scenario.description}")
    print(f"{'tool':<16} {'successes':>9} {'wall s':>7} {'CPU s':>7} {'succ/CPU-s':>10} {'half: succ':>10} "
          f"{'CPU s':>6} {'marginal ms/succ':>16}")
    costs = []
    for run, half in zip(runs, halves):
        if run.note:
            print(f"{run.tool + ':':<16} {run.note}")
            costs.append(None)
            continue
        cost = marginal(run, half)
        costs.append(cost)
        half_cols = f"{half.successes:>10} {half.cpu_s:>6.2f}" if half is not None and not half.note else f"{'-':>10} {'-':>6}"
        print(f"{run.tool:<16} {run.successes:>9} {run.wall_s:>7.2f} {run.cpu_s:>7.2f} "
              f"{per_cpu(run.successes, run.cpu_s):>10.1f} {half_cols} "
              f"{'-' if cost is None else f'{cost * 1e3:.1f}':>16}")
        if run.inner_cpu_s is not None:
            print(f"{'':<16} (clipcrawl's download loop alone: {run.inner_cpu_s:.2f} CPU s, "
                  f"{per_cpu(run.successes, run.inner_cpu_s):.1f} successes/CPU-s; in process_image "
                  f"{run.image_cpu_s:.2f} CPU s = {1e3 * run.image_cpu_s / max(run.images, 1):.1f} ms x "
                  f"{run.images} images; large WebP by {run.decoder}{VIPS_NOTE if 'pyvips' in run.decoder else ''})")
    if len(runs) > 2 and not runs[0].note and not runs[2].note:
        scaled, pillow = runs[0], runs[2]
        line = (f"scaled WebP decoding (pyvips) vs Pillow only: "
                f"{per_cpu(scaled.successes, scaled.cpu_s) / per_cpu(pillow.successes, pillow.cpu_s):.2f}x "
                f"successes per CPU second; download loop "
                f"{per_cpu(scaled.successes, scaled.inner_cpu_s) / per_cpu(pillow.successes, pillow.inner_cpu_s):.2f}x")
        if costs[0] and costs[2]:
            line += f"; marginal {costs[2] / costs[0]:.2f}x"
        print(line)
    ours, theirs = runs[0], runs[1]
    if ours.note or theirs.note:
        return
    ratio = per_cpu(ours.successes, ours.cpu_s) / per_cpu(theirs.successes, theirs.cpu_s)
    line = f"ratio clipcrawl/img2dataset, successes per CPU second: {ratio:.2f}x"
    if costs[0] and costs[1]:
        line += f"; marginal (per extra image): {costs[1] / costs[0]:.2f}x"
    print(f"{line} (target >= {TARGET_RATIO:g}x)")
    compare_sets(scenario.urls, ours, theirs)


def compare_sets(urls: list[str], ours: Run, theirs: Run) -> None:
    only_ours = [url for url in urls if ours.outcomes.get(url, (False,))[0] and not theirs.outcomes.get(url, (False,))[0]]
    only_theirs = [url for url in urls if theirs.outcomes.get(url, (False,))[0] and not ours.outcomes.get(url, (False,))[0]]
    if not only_ours and not only_theirs:
        print(f"same set: yes, both succeeded on the same {ours.successes} URLs")
        return
    print(f"same set: no; {len(only_ours)} only clipcrawl, {len(only_theirs)} only img2dataset")
    for label, urls_, other in (("only clipcrawl", only_ours, theirs), ("only img2dataset", only_theirs, ours)):
        reasons = collections.Counter(other.outcomes.get(url, (False, "no row"))[1] for url in urls_)
        for reason, n in reasons.most_common(8):
            print(f"  {label}: {n} x the other said {reason!r:.160}")
        for url in urls_[:5]:
            print(f"    e.g. {url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="URLs in the mix")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N URLs of the mix")
    parser.add_argument("--hosts", type=int, default=32, help="loopback hosts of the 'hosts' scenario")
    parser.add_argument("--threads", type=int, default=DownloadConfig().threads, help="both tools' thread count")
    parser.add_argument("--timeout", type=float, default=2.0, help="connect/read timeout, seconds, both tools")
    parser.add_argument("--scenario", choices=("hosts", "one-host", "both"), default="both")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the venv holding img2dataset")
    parser.add_argument("--no-img2dataset", action="store_true", help="clipcrawl rows only")
    parser.add_argument("--no-marginal", action="store_true", help="skip the half-list runs")
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "clipcrawl-download-bench",
                        help="where the generated images are cached")
    parser.add_argument("--compare-pillow", action="store_true",
                        help="also run clipcrawl with pyvips hidden (Pillow decodes every WebP)")
    parser.add_argument("--smoke", action="store_true", help="60 URLs, 4 hosts, clipcrawl only, no half-list runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.count, args.hosts, args.no_marginal, args.no_img2dataset = SMOKE["count"], SMOKE["hosts"], True, True

    folder = args.corpus / f"{args.count}-{args.seed}"
    began = time.perf_counter()
    items = download_corpus.build(folder, args.count, args.seed)[: args.limit]
    kinds = collections.Counter(item.kind for item in items)
    formats = collections.Counter(item.ext for item in items if item.kind == "image")
    sizes = sorted((folder / Path(item.path).name).stat().st_size for item in items if item.kind == "image")
    print(f"mix: {len(items)} URLs: {kinds['image']} images ({', '.join(f'{n} {f}' for f, n in formats.items())}; "
          f"{sizes[0] / 1e3:.0f} KB .. {sizes[-1] / 1e6:.1f} MB, median {sizes[len(sizes) // 2] / 1e3:.0f} KB), "
          f"{kinds['404']} x 404, {kinds['slow']} slower than the {args.timeout:g} s timeout; 5-50 ms latency each "
          f"(corpus ready in {time.perf_counter() - began:.1f} s, cached in {folder})")
    print(f"both tools: {args.threads} threads, 1 process, image_size 256, border, jpg q95; CPU = subprocess "
          "user+sys (server excluded: own process)")
    img2dataset_installed = (args.venv / "bin" / "img2dataset").exists()
    if args.no_img2dataset:
        print("img2dataset: not run (--smoke or --no-img2dataset)" if img2dataset_installed
              else "img2dataset: not installed")

    server, origins = start_server(folder, args.count, args.seed, args.hosts)
    failed = False
    try:
        with tempfile.TemporaryDirectory(prefix="clipcrawl-dl-bench-") as tmp:
            work = Path(tmp)
            chosen = [s for s in scenarios(items, origins, args.threads, args.timeout)
                      if args.scenario in ("both", s.name)]
            for scenario in chosen:
                half_urls = scenario.urls[: len(scenario.urls) // 2]
                runs = [run_clipcrawl(scenario.urls, scenario.config, work / f"{scenario.name}-clipcrawl")]
                halves: list[Run | None] = [None, None]
                if not args.no_marginal:
                    halves[0] = run_clipcrawl(half_urls, scenario.config, work / f"{scenario.name}-clipcrawl-half")
                if args.no_img2dataset:
                    runs.append(Run("img2dataset", note="not run"))
                else:
                    runs.append(run_img2dataset(scenario.urls, args.venv, args.threads, args.timeout,
                                                work / f"{scenario.name}-img2dataset"))
                    if not args.no_marginal:
                        halves[1] = run_img2dataset(half_urls, args.venv, args.threads, args.timeout,
                                                    work / f"{scenario.name}-img2dataset-half")
                if args.compare_pillow:
                    pillow_work = work / f"{scenario.name}-pillow"
                    runs.append(run_clipcrawl(scenario.urls, scenario.config, pillow_work, pillow_only=True))
                    halves.append(None if args.no_marginal else run_clipcrawl(
                        half_urls, scenario.config, pillow_work.with_name(pillow_work.name + "-half"), pillow_only=True))
                failed |= bool(runs[0].note) or runs[0].successes == 0
                report(scenario, runs, halves)
    finally:
        server.stdin.close()
        server.terminate()
        server.wait(timeout=10)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
