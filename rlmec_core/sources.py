"""Task sources read through Hugging Face ``datasets``: the rows a task adapter turns into problems.

A source (config ``task.source.<split>``) is one of

* a local file ``.json`` (JSON Lines, or one JSON list of objects), ``.jsonl``, ``.csv`` or ``.parquet``,
  read with ``datasets.load_dataset("json" | "csv" | "parquet", data_files=...)``;
* a directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``, read with
  ``datasets.load_from_disk`` (a ``DatasetDict`` needs a split: the source's ``split``, else the name of
  the config split it is read for);
* an object ``{path, name, split, revision, data_dir}`` handed to ``datasets.load_dataset``: ``path`` is a
  hub data set id (``openai/gsm8k``) or a local folder of data files; ``split`` defaults to the config
  split's name. An object whose ``path`` is a local file or a ``save_to_disk`` directory is read as above.

A plain string is always a local path (a folder that ``save_to_disk`` did not write is read with
``load_dataset`` like the object form). ``task.columns`` maps the adapter's field names to the data set's
column names (``{question: problem}``) for sets whose field names differ.

``read_records`` yields ``(where, record)`` pairs for ``TaskAdapter.problems_from_records``: ``where`` is
``"<file or data set>: row <n>"`` with ``n`` counted from 1 over the data set's rows (in a JSON Lines file,
the n-th non-blank line; a line that is not JSON is reported by its line number). Dates that the JSON
reader turned into timestamps are handed on as ISO text. Errors about a source as a whole are ``ConfigError`` (the source cannot be
what the config says) or ``DataError`` (the data cannot be read); both start with the config key.

Local files and folders are converted in a throw-away cache directory unless ``cache_dir`` is given (the
data stage's outputs are the cache that matters); hub data sets use ``cache_dir`` or the ``datasets``
cache (``HF_DATASETS_CACHE``), which is also where ``HF_DATASETS_OFFLINE=1`` looks for them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rlmec_core.errors import ConfigError, DataError

if TYPE_CHECKING:  # datasets is imported only when a source is read (the demo task never needs it)
    from datasets import Dataset

#: File suffix -> the ``datasets`` packaged builder that reads it.
FILE_BUILDERS: dict[str, str] = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
#: The keys of a source given as an object (``config/schema.yaml``, ``$defs.source``).
SOURCE_KEYS: tuple[str, ...] = ("path", "name", "split", "revision", "data_dir")
_FORMAT_NAMES = {".json": "JSON", ".jsonl": "JSON Lines", ".csv": "CSV", ".parquet": "Parquet"}
# Keys of a source object that mean nothing for a local file or a save_to_disk directory.
_NOT_APPLICABLE = {"file": ("name", "split", "revision", "data_dir"), "saved": ("name", "revision", "data_dir")}

SourceKind = Literal["file", "saved", "folder", "hub"]
Source = str | os.PathLike[str] | Mapping[str, Any]


@dataclass(frozen=True)
class SourceSpec:
    """One ``task.source.<split>`` value in normal form.

    ``shorthand`` is true for a plain string, which always names a local path (never a hub id).
    """

    path: str
    name: str | None = None
    split: str | None = None
    revision: str | None = None
    data_dir: str | None = None
    shorthand: bool = False

    def given(self) -> dict[str, str]:
        """The optional keys that are set, in ``SOURCE_KEYS`` order."""
        return {k: getattr(self, k) for k in SOURCE_KEYS[1:] if getattr(self, k) is not None}


def parse_source(source: Source, key: str) -> SourceSpec:
    """``source`` (a path, or an object with ``SOURCE_KEYS``) as a ``SourceSpec``; ``ConfigError`` naming
    ``key`` for an unknown key, a missing ``path`` or a value that is not a string."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not path.strip():
            raise ConfigError(f"{key}: empty path")
        return SourceSpec(path=path, shorthand=True)
    if not isinstance(source, Mapping):
        raise ConfigError(f"{key}: expected a path or an object with keys {', '.join(SOURCE_KEYS)}, "
                          f"got {type(source).__name__}")
    unknown = sorted(set(source) - set(SOURCE_KEYS))
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {', '.join(map(str, unknown))} (known: {', '.join(SOURCE_KEYS)})")
    values: dict[str, str | None] = {}
    for name in SOURCE_KEYS:
        value = source.get(name)
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{key}.{name}: expected a string, got {type(value).__name__}")
        values[name] = None if value is None else os.fspath(value)
    path = values.pop("path")
    if not path or not path.strip():
        raise ConfigError(f"{key}.path: missing (a local file or directory, or a hub data set id)")
    return SourceSpec(path=path, **values)


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return (path / "dataset_dict.json").is_file() or ((path / "state.json").is_file()
                                                      and (path / "dataset_info.json").is_file())


def _looks_local(path: str) -> bool:
    """A path that can only be meant as a local one (absolute, ``./``, ``~``, or a data file's suffix)."""
    return (os.path.isabs(path) or path.startswith((".", "~"))
            or Path(path).suffix.lower() in FILE_BUILDERS)


def source_kind(spec: SourceSpec) -> SourceKind | None:
    """``file``, ``saved`` (a ``save_to_disk`` directory), ``folder`` (a local folder for ``load_dataset``),
    ``hub``, or None for a local path that does not exist."""
    local = Path(spec.path).expanduser()
    if local.is_file():
        return "file"
    if local.is_dir():
        return "saved" if is_saved_dataset(local) else "folder"
    if spec.shorthand or _looks_local(spec.path):
        return None
    return "hub"


def local_source_path(source: Source | None) -> str | None:
    """The local file or directory a source reads (None for a hub data set or no source): what a workflow
    declares as an input, so that editing it reruns the data stage. A local path that does not exist is
    returned too (the workflow then reports the missing input)."""
    if not source:
        return None
    spec = parse_source(source, "task.source")
    return None if source_kind(spec) == "hub" else spec.path


def local_source_inputs(source: Source | None) -> list[str]:
    """What a workflow declares as inputs for a source: ``local_source_path``, and for a directory every
    file under it too (hidden ones aside): a directory's own modification time does not change when a file
    in it is rewritten, so listing the files is what makes such an edit rerun the data stage."""
    root = local_source_path(source)
    if root is None:
        return []
    directory = Path(root).expanduser()
    if not directory.is_dir():
        return [root]
    files = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith("."))
    return [root, *files]


def describe_source(source: Source) -> str:
    """A short label of a source for messages: the path, plus the optional keys that are set."""
    spec = parse_source(source, "task.source")
    given = spec.given()
    return spec.path + (f" ({', '.join(f'{k} {v}' for k, v in given.items())})" if given else "")


# -- reading ---------------------------------------------------------------------------------------------
def read_records(
    source: Source,
    *,
    key: str,
    columns: Mapping[str, str] | None = None,
    default_split: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The rows of ``source`` as ``(where, record)`` pairs for ``TaskAdapter.problems_from_records``.

    Args:
        source: a local path, or an object with ``SOURCE_KEYS`` (see the module docstring).
        key: the config key the source comes from (``task.source.train``); every error starts with it.
        columns: adapter field name -> data set column name (``task.columns``). A mapped column is
            renamed in every record (its original name dropped); other columns are passed as they are.
        default_split: the split of a ``DatasetDict`` directory, a local folder or a hub data set when
            the source names none (the data stage passes the config split: train, validation or test).
        cache_dir: where ``datasets`` caches; default: a temporary directory for local sources, the
            ``datasets`` cache (``HF_DATASETS_CACHE``) for hub data sets.

    Returns:
        An iterator over the rows, in order; ``where`` is ``"<label>: row <n>"`` (1-based). The source
        is loaded, and its columns checked, before this function returns.

    Raises:
        ConfigError: a malformed source object, keys that do not apply to the kind of source, a split
            the data set does not have, an unsupported file suffix, a hub data set that cannot be reached
            (offline and not cached, or not found).
        DataError: a missing local file, a file ``datasets`` cannot read (for JSON and JSON Lines the
            message names the line), or a mapped column absent from the data set (naming the columns it has).
    """
    spec = parse_source(source, key)
    columns = dict(columns or {})
    for field, column in columns.items():
        if not isinstance(column, str) or not column:
            raise ConfigError(f"task.columns.{field}: expected a column name, got {column!r}")
    kind = source_kind(spec)
    if kind is None:
        raise DataError(f"{key}: {spec.path}: file not found")
    for name in _NOT_APPLICABLE.get(kind, ()):
        if getattr(spec, name) is not None:
            what = "a file" if kind == "file" else "a save_to_disk directory"
            applies = "a hub data set, a local dataset folder or a DatasetDict directory" if name == "split" \
                else "a hub data set or a local dataset folder"
            raise ConfigError(f"{key}.{name}: does not apply to {what} ({spec.path}); {name} is for {applies}")
    with _quiet_datasets():
        if kind == "file":
            dataset, label = _load_file(spec, key, cache_dir)
        elif kind == "saved":
            dataset, label = _load_saved(spec, key, default_split)
        else:
            dataset, label = _load_named(spec, kind, key, default_split, cache_dir)
    if dataset is None:
        return iter(())
    present = list(dataset.column_names)
    missing = {field: col for field, col in columns.items() if col not in present}
    if missing:
        wanted = ", ".join(f"{col!r} (for {field!r})" for field, col in missing.items())
        raise DataError(f"{key}: {label}: no column {wanted} in any row; task.columns maps it but the data set's "
                        f"columns are: {', '.join(present) or 'none'}")
    return _rows(dataset, label, columns)


def _rows(dataset: Dataset, label: str, columns: Mapping[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    renamed = set(columns.values())
    rows = iter(dataset)
    for n in itertools.count(1):
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 (a row datasets cannot decode)
            raise DataError(f"{label}: row {n}: cannot be decoded ({_root_cause(exc)})") from exc
        record = {k: _plain(v) for k, v in row.items() if k not in renamed}
        record.update({field: _plain(row[col]) for field, col in columns.items()})
        yield f"{label}: row {n}", record


def _plain(value: Any) -> Any:
    """``value`` with dates and times written back as ISO text (the JSON reader turns ``"2020-01-01"``
    strings into timestamps; adapters read text)."""
    if isinstance(value, _dt.datetime):
        if value.time() == _dt.time(0) and value.tzinfo is None:
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No progress bars and no log records from ``datasets`` while a source is read (its reader errors
    become this module's exceptions); the previous state is restored after."""
    import datasets
    from datasets.utils import logging as ds_logging

    bars_were_off = datasets.is_progress_bar_enabled() is False
    verbosity = ds_logging.get_verbosity()
    datasets.disable_progress_bars()
    ds_logging.set_verbosity(ds_logging.CRITICAL)
    try:
        yield
    finally:
        ds_logging.set_verbosity(verbosity)
        if not bars_were_off:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def _local_cache(cache_dir: str | os.PathLike[str] | None) -> Iterator[tuple[str, bool]]:
    """``(cache directory, keep in memory)``: ``cache_dir`` itself, or a temporary directory (removed after
    the load) whose data set is kept in memory."""
    if cache_dir is not None:
        yield os.fspath(cache_dir), False
        return
    with tempfile.TemporaryDirectory(prefix="rlmec-datasets-") as tmp:
        yield tmp, True


def _root_cause(exc: BaseException) -> str:
    """The innermost exception ``exc`` was raised from, as ``Type: message`` (datasets wraps reader errors)."""
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or exc.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        exc = nxt
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}" if text else type(exc).__name__


def _is_no_data(exc: BaseException) -> bool:
    """The error ``datasets`` raises for a file without rows (blank JSON Lines, ``[]``, a header-only CSV)."""
    return isinstance(exc, ValueError) and "corresponds to no data" in str(exc)


def _load_file(spec: SourceSpec, key: str, cache_dir: str | os.PathLike[str] | None) -> tuple[Dataset | None, str]:
    import datasets

    path = Path(spec.path).expanduser()
    label = spec.path
    suffix = path.suffix.lower()
    builder = FILE_BUILDERS.get(suffix)
    if builder is None:
        raise ConfigError(f"{key}: {label}: unsupported file type {path.suffix or '(no suffix)'!r}; a source file "
                          f"ends in {', '.join(FILE_BUILDERS)} (or give a save_to_disk directory)")
    try:
        if path.stat().st_size == 0:
            return None, label
    except OSError as exc:
        raise DataError(f"{key}: {label}: cannot be read ({exc.strerror or exc})") from exc
    if builder == "parquet" and _parquet_rows(path) == 0:  # datasets cannot load a Parquet file without rows
        return None, label
    try:
        with _local_cache(cache_dir) as (cache, in_memory):
            dataset = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache,
                                            keep_in_memory=in_memory)
            dataset.data.table.validate(full=True)  # e.g. bytes that are not UTF-8 in a string column
    except Exception as exc:  # noqa: BLE001 (every reader error becomes a DataError naming the file)
        if _is_no_data(exc):
            return None, label
        if builder == "json":
            _diagnose_json(path, label, key)
        raise DataError(f"{key}: {label}: datasets cannot read it as {_FORMAT_NAMES[suffix]} "
                        f"({_root_cause(exc)})") from exc
    return dataset, label


def _parquet_rows(path: Path) -> int | None:
    """The row count in a Parquet file's footer, or None when it cannot be read (``datasets`` then reports)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows
    except Exception:  # noqa: BLE001
        return None


def _diagnose_json(path: Path, label: str, key: str) -> None:
    """Raise a ``DataError`` naming the line (or list item) that makes a JSON(L) file unreadable, if any."""
    from rlmec_core.io import iter_jsonl, read_json

    try:
        with path.open("rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith(b"["):
            data = read_json(path)
            if not isinstance(data, list):  # pragma: no cover - a '[' always parses to a list
                raise DataError(f"{label}: expected a JSON list of objects")
            for i, item in enumerate(data, start=1):
                if not isinstance(item, dict):
                    raise DataError(f"{label}: item {i}: expected a JSON object, got {type(item).__name__}")
        else:
            for _ in iter_jsonl(path):
                pass
    except DataError as exc:
        message = str(exc)
        if message.startswith(str(path)) and str(path) != label:
            message = label + message[len(str(path)):]
        raise DataError(f"{key}: {message}") from None
    except OSError as exc:
        raise DataError(f"{key}: {label}: cannot be read ({exc.strerror or exc})") from None


def _load_saved(spec: SourceSpec, key: str, default_split: str | None) -> tuple[Dataset | None, str]:
    """A ``save_to_disk`` directory; of a ``DatasetDict`` only the chosen split's subdirectory is read."""
    import datasets

    directory, label = Path(spec.path).expanduser(), spec.path
    splits_file = directory / "dataset_dict.json"
    if splits_file.is_file():
        try:
            names = [str(name) for name in json.loads(splits_file.read_text(encoding="utf-8"))["splits"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{key}: {spec.path}: {splits_file.name} cannot be read ({_root_cause(exc)})") from exc
        split = spec.split or default_split
        listed = ", ".join(names) or "none"
        if split is None:
            raise ConfigError(f"{key}.split: {spec.path} is a DatasetDict (splits: {listed}); name the split to read")
        if split not in names:
            which = f"{key}.split" if spec.split else key
            raise ConfigError(f"{which}: {spec.path} is a DatasetDict without a split {split!r} (splits: {listed})"
                              + ("" if spec.split else f"; set {key}.split"))
        directory, label = directory / split, f"{spec.path} (split {split})"
    if _saved_is_empty(directory):  # datasets cannot load a data set saved without rows
        return None, label
    try:
        loaded = datasets.load_from_disk(str(directory))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{key}: {label}: cannot be read with datasets.load_from_disk ({_root_cause(exc)})") from exc
    if not isinstance(loaded, datasets.Dataset):  # pragma: no cover - a split directory holds one Dataset
        raise DataError(f"{key}: {label}: expected one data set, got {type(loaded).__name__}")
    if (spec.split is not None and not splits_file.is_file() and loaded.split is not None
            and str(loaded.split) != spec.split):
        raise ConfigError(f"{key}.split: {spec.path} holds the split {str(loaded.split)!r}, not {spec.split!r}")
    return loaded, label


def _saved_is_empty(directory: Path) -> bool:
    """Whether a ``Dataset.save_to_disk`` directory lists no data file (a data set saved without rows)."""
    try:
        state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("_data_files") == []


def _offline() -> bool:
    import datasets.config

    return bool(datasets.config.HF_HUB_OFFLINE)


def _load_named(spec: SourceSpec, kind: SourceKind, key: str, default_split: str | None,
                cache_dir: str | os.PathLike[str] | None) -> tuple[Dataset, str]:
    """A local dataset folder or a hub data set, through ``datasets.load_dataset``."""
    import datasets

    split = spec.split or default_split
    if split is None:
        raise ConfigError(f"{key}.split: name the split of {spec.path} to read")
    label = describe_source({**spec.given(), "path": spec.path, "split": split})
    path = str(Path(spec.path).expanduser()) if kind == "folder" else spec.path
    cache: contextlib.AbstractContextManager[tuple[str | None, bool]]
    cache = _local_cache(cache_dir) if kind == "folder" else contextlib.nullcontext(
        (None if cache_dir is None else os.fspath(cache_dir), False))
    try:
        with cache as (where, in_memory):
            dataset = datasets.load_dataset(path, name=spec.name, split=split, revision=spec.revision,
                                            data_dir=spec.data_dir, cache_dir=where, keep_in_memory=in_memory)
    except Exception as exc:  # noqa: BLE001
        cause = _root_cause(exc)
        if isinstance(exc, ValueError) and "Unknown split" in str(exc):
            which = f"{key}.split" if spec.split else key
            raise ConfigError(f"{which}: {label}: {' '.join(str(exc).split())}") from exc
        if kind == "folder":
            if _is_no_data(exc):
                raise DataError(f"{key}: {label}: no data files for this split") from exc
            raise DataError(f"{key}: {label}: datasets.load_dataset cannot read this folder ({cause})") from exc
        if _offline():
            raise ConfigError(
                f"{key}: hub data set {label} is not in the datasets cache and offline mode is on (HF_DATASETS_OFFLINE "
                f"or HF_HUB_OFFLINE), so it cannot be downloaded ({cause}); load it once with network access into "
                f"the same cache, or point {key} at a local copy (data files or a save_to_disk directory)"
            ) from exc
        raise ConfigError(f"{key}: hub data set {label} could not be loaded (no local file or directory "
                          f"{spec.path!r} either): {cause}") from exc
    return dataset, label
