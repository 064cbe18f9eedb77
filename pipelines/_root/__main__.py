"""``python -m clipcrawl`` is the ``clipcrawl`` console script."""

from clipcrawl.pipelines.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
