"""Loading Kyutai's safetensors checkpoints: from a local path or a Hugging Face repository,
strict and key for key, into a model built without allocating its weights twice."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model (or cannot be read), with every difference."""


class HubError(OSError):
    """A file of a Hugging Face repository that cannot be had: offline and not cached, the Hub
    unreachable, no such repository. Said once, in one line, within seconds."""


class HubFileMissing(HubError, FileNotFoundError):
    """The repository exists but holds no such file (callers may look for another name)."""


HUB_PROBE_SECONDS = 3.0  # how long the reachability probe waits for the Hub's host


def resolve_file(filename: str, checkpoint: str | os.PathLike | None = None,
                 hf_repo: str | None = None) -> Path:
    """The local path of ``filename``: ``checkpoint`` itself when it is a file, inside it when it
    is a folder, else downloaded from ``hf_repo`` into (or found in) the Hugging Face cache.
    ``HF_HUB_OFFLINE=1`` is honoured by huggingface_hub: only the cache is looked at."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if path.is_dir():
            path = path / filename
        if not path.exists():
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        return path
    if hf_repo is None:
        raise ValueError("give a local checkpoint or a Hugging Face repository")
    return hub_file(hf_repo, filename)


def hub_file(repo: str, filename: str) -> Path:
    """``filename`` of the Hugging Face repository ``repo``: from the cache when it is there
    (no network), else downloaded. Failures raise one HubError saying which case it is.

    huggingface_hub alone would retry an unreachable Hub for about a minute and then report
    "not found" (its offline error is a subclass of EntryNotFoundError), so the cache is
    tried first, offline mode and reachability are checked before downloading, and its
    errors are caught most specific first."""
    import huggingface_hub
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(huggingface_hub.hf_hub_download(repo, filename, local_files_only=True))
    except LocalEntryNotFoundError:  # not cached: go online
        pass
    except EntryNotFoundError:  # the cache remembers the repository has no such file
        raise HubFileMissing(f"{repo} has no file {filename}") from None
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise HubError(f"{repo}: {filename} is not in the Hugging Face cache and "
                       "HF_HUB_OFFLINE=1 forbids downloading it (download it once online, or "
                       "give a local checkpoint)")
    if (reason := hub_unreachable()) is not None:
        raise HubError(f"cannot reach the Hugging Face Hub ({reason}) and {repo}: {filename} "
                       "is not in the cache (check the network, or give a local checkpoint)")
    try:
        return Path(huggingface_hub.hf_hub_download(repo, filename))
    except GatedRepoError:  # a RepositoryNotFoundError: before it
        raise HubError(f"{repo} is gated: accept its terms on the Hub and log in "
                       "(`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise HubError(f"no repository {repo} on the Hugging Face Hub (a private one needs "
                       "`hf auth login`)") from None
    except RevisionNotFoundError:
        raise HubError(f"{repo} has no main revision") from None
    except LocalEntryNotFoundError:  # an EntryNotFoundError: the network failed mid-way
        raise HubError(f"lost the connection to the Hugging Face Hub while fetching {repo}: "
                       f"{filename}; try again") from None
    except EntryNotFoundError:
        raise HubFileMissing(f"{repo} has no file {filename}") from None


def hub_unreachable(timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """None when the Hub's host takes a TCP connection within ``timeout`` s, else why not.
    With a proxy configured the probe is skipped (the proxy decides)."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}: {e.strerror or e}"
    return None


def read_json(path: str | os.PathLike) -> dict:
    with open(path) as f:
        return json.load(f)


def load_state_dict(path: str | os.PathLike, dtype: torch.dtype | None = None,
                    keep_dtype: Callable[[str], bool] = lambda key: False,
                    device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Reads a safetensors file tensor by tensor, casting floating tensors to ``dtype`` except
    the keys ``keep_dtype`` selects. Pickled checkpoints are never read.

    Tensors are read with plain file reads into memory of their own, not memory-mapped: a
    tensor converted later (dtype cast, device copy, packed or quantized weights) then frees
    its bytes at once, so loading peaks near the model's final size instead of the final size
    plus the whole mapped file."""
    state = {}
    try:
        with open(path, "rb") as f:
            for key, (stored, shape, start, end) in _safetensors_index(f):
                tensor = torch.empty(shape, dtype=stored)
                buffer = tensor.reshape(-1).view(torch.uint8)
                if buffer.numel() != end - start:
                    raise ValueError(f"tensor {key} has {end - start} bytes for shape {shape} "
                                     f"{stored}")
                f.seek(start)
                if buffer.numel() and f.readinto(buffer.numpy()) != buffer.numel():
                    raise ValueError(f"the file ends inside tensor {key}")
                if dtype is not None and tensor.is_floating_point() and not keep_dtype(key):
                    tensor = tensor.to(dtype)
                state[key] = tensor.to(device)
    except (OSError, ValueError, KeyError, TypeError) as e:  # ValueError: JSON, layout
        raise CheckpointError(f"cannot read safetensors checkpoint {path}: {e}") from e
    return state


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


def _safetensors_index(f: BinaryIO) -> list[tuple[str, tuple[torch.dtype, list[int], int, int]]]:
    """The tensors of an open safetensors file: key -> (dtype, shape, start, end) in file
    order. Layout: u64 little-endian header size N, N bytes of JSON, then the data."""
    prefix = f.read(8)
    size = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
    file_size = os.fstat(f.fileno()).st_size
    if not 2 <= size <= min(100_000_000, file_size - 8):
        raise ValueError("not a safetensors file (bad header)")
    header = json.loads(f.read(size))
    index = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {key} has unsupported dtype {info['dtype']}")
        begin, end = (8 + size + o for o in info["data_offsets"])
        if not 8 + size <= begin <= end <= file_size:
            raise ValueError(f"tensor {key} lies outside the file")
        index.append((key, (_SAFETENSORS_DTYPES[info["dtype"]], info["shape"], begin, end)))
    return sorted(index, key=lambda item: item[1][2])


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "") -> None:
    """Raises one CheckpointError naming every missing, unexpected and mis-shaped key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)}, model {expected[k]}"
        for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k]
    )
    if missing or unexpected or misshaped:
        parts = [f"checkpoint {source} does not fit the model:" if source
                 else "checkpoint does not fit the model:"]
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("mis-shaped keys", misshaped)):
            if keys:
                parts.append(f"  {len(keys)} {title}: {_abbreviate(keys)}")
        raise CheckpointError("\n".join(parts))


def load_into(model: M, state: dict[str, torch.Tensor], source: str = "") -> M:
    """Strict load that adopts the given tensors (``assign``), so a model built on the meta
    device costs no second copy of its weights."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def build_on_meta(factory: Callable[[], M]) -> M:
    """Builds a module without allocating its parameters (they are assigned by ``load_into``)."""
    with torch.device("meta"):
        return factory()


def save_state_dict(model: nn.Module, path: str | os.PathLike,
                    metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)


def _abbreviate(items: Iterable[str], limit: int = 12) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
