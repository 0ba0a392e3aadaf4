"""ftc's Hydra config tree, installed as the package ``ftc.conf`` (see pyproject.toml)."""
