"""``clipcrawl run --watch``: files that appear between cycles are processed, done ones never again."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from clipcrawl.io.coordinator import Coordinator
from clipcrawl.io.hot_folder import HotFolder, is_input_name
from clipcrawl.io.inputs import InputError
from clipcrawl.pipelines.cli import main
from clipcrawl.pipelines.demo import make_demo_inputs
from clipcrawl.pipelines.image_server import ImageServer
from clipcrawl.pipelines.options import OptionsError, resolve_config
from clipcrawl.pipelines.watch import watch

COMMON = [
    "--clip_model=clipcrawl-tiny", "--clip_pretrained=", "--allow_private_addresses", "--per_host_rate=0",
    "--image_size=64", "--direct_running_mode=in_memory", "--direct_num_workers=1",
    "--watch_interval=0", "--watch_settle=0",
]


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """The demo's three WATs in a staging folder, delivered into the hot folder by rename."""
    with ImageServer({}) as server:
        staging = tmp_path_factory.mktemp("staging")
        make_demo_inputs(server, str(staging))
        yield staging


def deliver(staging, folder, name: str) -> None:
    shutil.copy(staging / name, folder / f".{name}.tmp")  # a partial copy is never taken...
    os.rename(folder / f".{name}.tmp", folder / name)  # ...only the renamed, complete file


def test_files_appearing_between_cycles_are_processed_once(staged, tmp_path) -> None:
    folder, output = tmp_path / "incoming", tmp_path / "dataset"
    folder.mkdir()
    deliver(staged, folder, "demo-00.warc.wat.gz")
    (folder / "notes.txt").write_text("not an input")
    (folder / "demo-01.warc.wat.gz.part").write_bytes(b"still downloading")

    def arrive(cycle: int, summary, seconds: float) -> None:
        if cycle == 1:
            deliver(staged, folder, "demo-01.warc.wat.gz")
            deliver(staged, folder, "demo-no-images.warc.wat.gz")

    args = [f"--watch={folder}", f"--output={output}", "--nickname=hot", *COMMON]
    summaries = watch([*args, "--watch_cycles=3"], on_cycle=arrive)

    assert [s.shards_processed for s in summaries] == [(0,), (1, 2), ()]
    coordinator = Coordinator(f"sqlite:///{output}/clipcrawl.sqlite")
    rows = coordinator.shards()
    coordinator.close()
    assert [os.path.basename(row["uri"]) for row in rows] == [
        "demo-00.warc.wat.gz", "demo-01.warc.wat.gz", "demo-no-images.warc.wat.gz"]
    assert [(row["status"], row["attempts"]) for row in rows] == [("done", 1)] * 3

    # A new watcher on the same folder (a restart) registers nothing new and redoes nothing.
    (again,) = watch([*args, "--watch_cycles=1"])
    assert again.shards_processed == () and again.ledger["shards"]["done"] == 3


def test_sigterm_stops_the_watch_after_the_current_cycle(tmp_path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    previous = signal.getsignal(signal.SIGTERM)
    cycles = []

    def stop_me(cycle: int, summary, seconds: float) -> None:
        cycles.append(cycle)
        os.kill(os.getpid(), signal.SIGTERM)  # the first one only asks to stop

    summaries = watch([f"--watch={folder}", f"--output={tmp_path / 'dataset'}", *COMMON], on_cycle=stop_me)
    assert cycles == [1] and len(summaries) == 1
    assert signal.getsignal(signal.SIGTERM) is previous


def test_the_run_command_dispatches_to_watch_mode(tmp_path, capsys) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    assert main(["run", f"--watch={folder}", f"--output={tmp_path / 'dataset'}", "--watch_cycles=1", *COMMON]) == 0
    assert "--- watch cycle 1" in capsys.readouterr().out
    assert main(["run", f"--watch={tmp_path / 'missing'}", f"--output={tmp_path / 'dataset'}", *COMMON]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_a_file_still_growing_or_empty_is_not_taken_yet(tmp_path) -> None:
    (tmp_path / "growing.wat.gz").write_bytes(b"x" * 10)
    (tmp_path / "empty.wat.gz").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "done.warc.gz").write_bytes(b"y" * 10)

    class StillCopying(HotFolder):
        def listing(self):  # the copy goes on between the two listings
            files = super().listing()
            with open(tmp_path / "growing.wat.gz", "ab") as handle:
                handle.write(b"more")
            return files

    assert StillCopying(str(tmp_path)).settled(set(), settle=0.01) == [str(tmp_path / "sub" / "done.warc.gz")]
    folder = HotFolder(str(tmp_path))
    assert folder.settled(set(), settle=0.01) == [str(tmp_path / "growing.wat.gz"), str(tmp_path / "sub" / "done.warc.gz")]
    assert folder.settled({str(tmp_path / "growing.wat.gz"), str(tmp_path / "sub" / "done.warc.gz")}, settle=0) == []


@pytest.mark.parametrize(
    ("name", "taken"),
    [("CC-MAIN-1.warc.wat.gz", True), ("x.warc", True), ("urls.parquet", True), ("laion.csv.gz", True),
     ("shard.tar", True), ("x.wat.gz.part", False), (".x.wat.gz", False), ("_SUCCESS", False),
     ("notes.txt", False), ("x.wat.gz.tmp", False)],
)
def test_only_input_names_are_taken(name, taken) -> None:
    assert is_input_name(f"/in/{name}") is taken


def test_watch_options_are_checked(tmp_path) -> None:
    config = resolve_config(PipelineOptions([f"--watch={tmp_path}", f"--output={tmp_path}/out", "--watch_cycles=2"]))
    assert config.watch.source == str(tmp_path) and config.watch.cycles == 2 and config.inputs == ()
    with pytest.raises(OptionsError, match="--force"):
        resolve_config(PipelineOptions([f"--watch={tmp_path}", f"--output={tmp_path}/out", "--force"]))
    with pytest.raises(OptionsError, match="--watch_interval"):
        resolve_config(PipelineOptions([f"--watch={tmp_path}", f"--output={tmp_path}/out", "--watch_interval=-1"]))
    with pytest.raises(InputError, match="not a directory"):
        HotFolder(str(tmp_path / "missing"))
