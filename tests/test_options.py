"""Options are validated before any graph is built, with messages that name the flag."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from clipcrawl.pipelines.cli import main
from clipcrawl.pipelines.options import OPTION_GROUPS, OptionsError, resolve_config


def config_of(*args: str):
    return resolve_config(PipelineOptions(list(args)))


def test_defaults_follow_laion_and_img2dataset(tmp_path) -> None:
    config = config_of("--input=x.wat.gz", f"--output={tmp_path}")
    assert (config.clip.model_name, config.clip.pretrained, config.clip.threshold) == ("ViT-B-32", "openai", 0.28)
    assert (config.filters.min_caption_chars, config.filters.max_caption_chars) == (5, 2000)
    assert (config.download.image_size, config.download.resize_mode, config.download.encode_quality) == (256, "border", 95)
    assert config.download.allow_private_addresses is False
    assert config.writer.coordinator_url == f"sqlite:///{tmp_path}/clipcrawl.sqlite"


def test_png_gets_its_own_quality_default(tmp_path) -> None:
    config = config_of("--input=x", f"--output={tmp_path}", "--encode_format=png")
    assert config.download.encode_quality == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--input"),
        (["--input=x"], "--output"),
        (["--input_manifest=m", "--output=o"], "--input_base_url"),
        (["--input=x", "--output=o", "--limit=0"], "--limit"),
        (["--input=x", "--output=o", "--clip_threshold=1.5"], "--clip_threshold"),
        (["--input=x", "--output=o", "--image_size=0"], "image_size"),
        (["--input=x", "--output=o", "--download_threads=0"], "threads"),
        (["--input=x", "--output=o", "--min_caption_chars=50", "--max_caption_chars=10"], "max_caption_chars"),
        (["--input=x", "--output=o", "--read_timeout=-1"], "read_timeout"),
        (["--input=x", "--output=o", "--samples_per_part=0"], "samples_per_part"),
        (["--input=x", "--output=o", "--clip_batch_size=0"], "batch"),
        (["--input=x", "--output=s3://bucket/out"], "--coordinator"),
    ],
)
def test_bad_values_are_rejected_with_the_flag_named(args, message) -> None:
    with pytest.raises(OptionsError, match=message):
        config_of(*args)


def test_cli_turns_bad_options_into_a_usage_error(capsys, tmp_path) -> None:
    assert main(["run", "--input=x.wat.gz", f"--output={tmp_path}", "--clip_threshold=7"]) == 2
    assert "error: --clip_threshold" in capsys.readouterr().err


def test_cli_reports_missing_inputs_without_a_traceback(capsys, tmp_path) -> None:
    assert main(["run", f"--input={tmp_path}/nothing-*.wat.gz", f"--output={tmp_path}/out"]) == 2
    assert "matches no file" in capsys.readouterr().err


def test_run_help_documents_every_flag(capsys) -> None:
    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    import argparse

    parser = argparse.ArgumentParser()
    for group in OPTION_GROUPS:
        group._add_argparse_args(parser)
    flags = [opt for action in parser._actions for opt in action.option_strings if opt.startswith("--") and opt != "--help"]
    assert len(flags) >= 30
    for flag in flags:
        assert flag in text, flag
    assert "--runner" in text  # Beam's own options are mentioned as passing through


def test_beam_options_pass_through(tmp_path) -> None:
    options = PipelineOptions(["--input=x", f"--output={tmp_path}", "--direct_num_workers=3", "--runner=FnApiRunner"])
    resolve_config(options)
    assert options.get_all_options()["direct_num_workers"] == 3
