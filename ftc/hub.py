"""Models by Hugging Face id, through ``huggingface_hub`` (no torch): where the cache holds a snapshot, whether its
weights are on disk, and the download ``ftc train`` makes, with its size and progress, or one line saying why it
cannot (offline, gated, no such repository) instead of a library's retries and traceback.

The cache is the hub's own layout (``models--org--name/refs/<revision>``, ``snapshots/<sha>/``), read with
``try_to_load_from_cache`` so that a revision resolves as ``from_pretrained`` would resolve it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Iterator, Optional

from ftc.errors import UserError

# What a causal LM needs from its repository: config, safetensors weights and their index, tokenizer and template.
# Pickled weights (*.bin, *.pt), ONNX/GGUF copies and checkpoints of other frameworks are never downloaded.
MODEL_FILES = ("*.json", "*.safetensors", "tokenizer*", "*.model", "*.tiktoken", "*.txt", "*.jinja")


def hub_cache() -> Path:
    """The hub cache huggingface_hub reads now (``HF_HUB_CACHE``, else ``HF_HOME``/hub), from the environment at
    call time: a test or a user may set it after huggingface_hub was imported."""
    home = os.environ.get("HF_HUB_CACHE") or str(Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    return Path(home).expanduser()


def is_hub_id(path: str) -> bool:
    """``org/name``, not a directory here, a URI or an ftc asset."""
    return (path.count("/") == 1 and not path.startswith(("ftc:", "/", ".", "~")) and "://" not in path
            and not Path(path).expanduser().exists())


def offline() -> bool:
    """Whether huggingface_hub is offline in this process (it reads HF_HUB_OFFLINE once, when imported)."""
    from huggingface_hub import is_offline_mode

    return is_offline_mode()


def cached_snapshot(repo: str, revision: Optional[str] = None) -> Optional[Path]:
    """The cache's snapshot directory of ``repo`` at ``revision`` (a branch, tag or commit; default main) when it
    holds config.json; None when the cache has none (nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, "config.json", cache_dir=str(hub_cache()), revision=revision)
    except ValueError:  # not a valid repository id
        return None
    return Path(found).parent if isinstance(found, str) else None


# What the plan reads of a model outside ftc's catalog: its config and tokenizer (kilobytes to a few MB), never
# the weights (their sizes come from config.json through transformers' meta-device build).
PLAN_FILES = ("config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json", "*.model",
              "*.tiktoken", "*.jinja", "vocab.*", "merges.txt")


def fetch_config(repo: str, revision: Optional[str] = None) -> tuple[Optional[Path], Optional[str]]:
    """(the snapshot holding config.json, None), fetching config and tokenizer files only when the cache lacks
    them; (None, why) when they cannot be had (offline, gated, no such repository, no network)."""
    cached = cached_snapshot(repo, revision)
    if cached is not None:
        return cached, None
    if offline():
        return None, f"not in the Hugging Face cache ({hub_cache()}) and HF_HUB_OFFLINE is set"
    return _fetched(repo, revision, str(hub_cache()))


@functools.lru_cache(maxsize=32)
def _fetched(repo: str, revision: Optional[str], cache: str) -> tuple[Optional[Path], Optional[str]]:
    """``fetch_config``'s one trip to the hub per process (the plan and the rule that explains a failure ask
    twice; the network is not asked twice)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        found = Path(snapshot_download(repo, revision=revision, allow_patterns=list(PLAN_FILES), cache_dir=cache,
                                       etag_timeout=5))
    except GatedRepoError:
        return None, f"gated: accept its licence on https://huggingface.co/{repo} and set HF_TOKEN"
    except RepositoryNotFoundError:
        return None, "no such model on the Hugging Face hub (a private one needs HF_TOKEN)"
    except LocalEntryNotFoundError:
        return None, f"not in the Hugging Face cache ({cache}) and the hub cannot be reached from here"
    except Exception as e:  # noqa: BLE001 - any other refusal of the hub is said, and the plan goes on without it
        return None, f"the hub refused: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return (found, None) if (found / "config.json").is_file() else (None, "the repository has no config.json")


def weights_on_disk(directory: Path) -> bool:
    """Every safetensors file the directory's weights need is there (all shards of an index)."""
    import json

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError):
            return False
        return all((directory / s).is_file() for s in shards)
    return any(directory.glob("*.safetensors"))


def download(repo: str, revision: Optional[str] = None) -> Path:
    """The snapshot of ``repo`` with its weights on disk: the cache's when complete, else downloaded by
    huggingface_hub (its progress bars on stderr; ``MODEL_FILES`` only). Raises UserError in one line when it
    cannot be had."""
    found = cached_snapshot(repo, revision)
    if found is not None and weights_on_disk(found):
        return found
    found = fetch(repo, list(MODEL_FILES), revision=revision)
    if not weights_on_disk(found):  # offline, huggingface_hub answers with the snapshot it has, weights or not
        raise UserError("ftc: " + not_on_disk(repo, revision, "model"))
    return found


def not_on_disk(repo: str, revision: Optional[str], kind: str) -> str:
    where = f"{repo}" + (f"@{revision}" if revision else "")
    why = "HF_HUB_OFFLINE is set" if offline() else "the hub cannot be reached from here"
    get = f"hf download {repo}" + (" --repo-type dataset" if kind == "dataset" else "")
    local = "the rows as a file (data=file data.path=...)" if kind == "dataset" else \
        "a local directory (model.path=/path/to/model)"
    return (f"{where} is not on disk and {why}; fix: `{get}` where the network is, into this machine's cache "
            f"({hub_cache()}), or {local}")


def fetch(repo: str, patterns: list[str], revision: Optional[str] = None, kind: str = "model") -> Path:
    """``snapshot_download`` of the files matching ``patterns`` (from the cache when it holds them, offline too),
    each refusal of the hub as one line: UserError for a model, DataError for a dataset (``kind``)."""
    from huggingface_hub import snapshot_download

    with refusals(repo, revision, kind):
        return Path(snapshot_download(repo, repo_type=kind, revision=revision, allow_patterns=patterns,
                                      cache_dir=str(hub_cache())))


@contextlib.contextmanager
def refusals(repo: str, revision: Optional[str], kind: str) -> Iterator[None]:
    """A call to the hub about ``repo`` whose refusals (gated, no such repository or revision, offline and not
    cached, a failed download) become one line with the fix: UserError for a model, DataError for a dataset."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from ftc.errors import DataError

    dataset = kind == "dataset"

    def refused(message: str) -> Exception:
        return DataError(message) if dataset else UserError("ftc: " + message)

    where = f"{repo}" + (f"@{revision}" if revision else "")
    page = f"https://huggingface.co/{'datasets/' if dataset else ''}{repo}"
    try:
        yield
    except GatedRepoError:
        raise refused(f"{where} is gated; fix: accept its terms on {page} and set HF_TOKEN (or `hf auth login`)") \
            from None
    except RepositoryNotFoundError:
        key = "data.name=<org>/<dataset>" if dataset else "model.path=<org/name or a local directory>"
        raise refused(f"{where}: no such {kind} on the Hugging Face hub (a private one needs HF_TOKEN); fix: {key}") \
            from None
    except RevisionNotFoundError:
        key = "data.revision" if dataset else "model.revision"
        raise refused(f"{where}: no such revision; fix: {key}=<branch, tag or commit>") from None
    except LocalEntryNotFoundError:  # offline, or the hub unreachable, and the cache lacks the files
        raise refused(not_on_disk(repo, revision, kind)) from None
    except (HfHubHTTPError, OSError) as e:
        raise refused(f"downloading {where} failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None


def download_note(repo: Optional[str], params: int, model_config: Optional[dict]) -> Optional[str]:
    """The console line for a hub model whose weights are not on this machine: their size (parameters at the dtype
    config.json stores them in; bf16 when it says none) and whether ``ftc train`` can fetch them. A fact of this
    machine, not of the plan (a Ray worker fetches on its own node): printed, never written into plan.json."""
    if not repo:
        return None
    config = model_config or {}
    dtype = config.get("torch_dtype") or config.get("dtype") or (config.get("text_config") or {}).get("dtype")
    size = params * (4 if dtype == "float32" else 2)
    shown = f"{size / 1e9:.3g} GB" if size >= 1e9 else f"{size / 1e6:.3g} MB"
    head = f"ftc: {repo}'s weights are not on this machine: ~{shown} to download"
    if offline():
        return (f"{head}, and HF_HUB_OFFLINE is set, so `ftc train` cannot fetch them (fix: `hf download {repo}` "
                f"where the network is, into {hub_cache()}; or model.path=<a local directory>)")
    return f"{head}; `ftc train` fetches them into {hub_cache()} first"
