"""Ready experiments, installed as the Hydra config group ``recipe`` (package ``ftc.conf.recipe``)."""
