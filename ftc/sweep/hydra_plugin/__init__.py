"""Installed as ``hydra_plugins.ftc_search`` (pyproject package-dir): Hydra only instantiates sweepers defined
under the ``hydra_plugins`` namespace, so this thin subclass registers ftc's search sweeper there."""

from ftc.sweep.search import SearchSweeper


class FtcSearchSweeper(SearchSweeper):
    pass


def register() -> None:
    """Hydra discovers plugins by scanning the ``hydra_plugins`` directories, which an editable install does not
    expose; registering the class directly makes ``hydra/sweeper=ftc_search`` work from a checkout too. Called
    only where sweeps start (``ftc train -m``), so planning never imports the sweep machinery."""
    from hydra.core.plugins import Plugins

    Plugins.instance()._register(FtcSearchSweeper)
