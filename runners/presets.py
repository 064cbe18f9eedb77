"""Runner presets by name: ``--preset=NAME`` picks one, and the user's own flags win over it.

A preset only adds arguments (runners never hold pipeline logic), and only those the user
did not give. ``pipelines/build_dataset.with_local_defaults`` applies them: without
``--preset`` and without ``--runner`` the local ``direct`` preset applies; with ``--runner``
and no preset the arguments pass to Beam untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from clipcrawl.runners import dask, dataflow, direct, flags, flink

PRESETS: dict[str, Callable[[Sequence[str]], list[str]]] = {
    "direct": direct.preset_args,
    "dataflow": dataflow.preset_args,
    "flink": flink.preset_args,
    "dask": dask.preset_args,
}


def pop_preset(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """The preset named by ``--preset`` (the last one wins) and the arguments without it."""
    name = flags.value(argv, "preset")
    rest, skip = [], False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--preset":
            skip = index + 1 < len(argv) and not argv[index + 1].startswith("--")
            continue
        if not arg.startswith("--preset="):
            rest.append(arg)
    return name, rest


def preset_args(name: str, argv: Sequence[str]) -> list[str]:
    """The named preset's arguments for ``argv`` (which no longer holds ``--preset``)."""
    if name not in PRESETS:
        raise flags.PresetError(f"unknown --preset={name}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name](argv)
