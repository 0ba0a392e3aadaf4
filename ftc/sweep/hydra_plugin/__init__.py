"""Installed as ``hydra_plugins.ftc_search`` (pyproject package-dir): Hydra only instantiates sweepers defined
under the ``hydra_plugins`` namespace, so this thin subclass registers ftc's search sweeper there."""

from ftc.sweep.search import SearchSweeper


class FtcSearchSweeper(SearchSweeper):
    pass
