"""Checks of a dataset's atomic files before RecBole reads them.

RecBole reads ``<data_path>/<dataset>/<dataset>.inter`` only when the dataset
is built, long after the configuration, and reports bad data late and
obscurely (``[timestamp] is not exist in interaction``, a pandas parser error,
an empty-array error deep in the filters), or not at all (an empty item is
trained on as padding, an empty time gets the column's mean).
:func:`inspect_dataset` reads the header and then every row once
(:func:`check_rows`), while the configuration is built, and raises
:class:`DataError` with the file, the line and the fix, so a run fails before
anything is written.  A missing dataset that RecBole knows is downloaded
first (:func:`locate_inter`).

It also provides the default ``load_col`` for a dataset that has no yaml:
RecBole's default loads only the user and item columns, which makes every
sequential model fail on the user's own data.  When the user sets no
``load_col`` and no dataset yaml adds the time field, every column of the
``.inter`` file is loaded (:func:`default_load_col`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Optional

__all__ = [
    "DataError",
    "DatasetNotFoundError",
    "AtomicFile",
    "inter_path",
    "locate_inter",
    "read_header",
    "inspect_dataset",
    "default_load_col",
    "check_load_col_has_time",
    "check_not_filtered_away",
    "FIELD_TYPES",
    "ATOMIC_SUFFIXES",
]

# RecBole's FeatureType values, as written in atomic file headers.
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")

# The kinds of RecBole atomic files, by their suffix.
ATOMIC_SUFFIXES = (".inter", ".user", ".item", ".kg", ".link", ".net")


class DataError(ValueError):
    """A dataset's atomic files cannot be used as they are; the message says why and what to do."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The dataset's atomic files are not where the configuration points."""


@dataclass(frozen=True)
class AtomicFile:
    """The header of one atomic file: its path and its (name, type) fields."""

    path: Path
    fields: List[str]
    types: List[str]

    def has(self, field: Optional[str]) -> bool:
        return field is not None and field in self.fields


def inter_path(data_path: Optional[str], dataset: str, benchmark: Optional[List[str]] = None) -> Path:
    """Where RecBole reads the interactions of ``dataset`` (the first part file for pre-split data)."""
    folder = Path(data_path or "dataset/") / dataset
    if benchmark:
        return folder / f"{dataset}.{benchmark[0]}.inter"
    return folder / f"{dataset}.inter"


def _open(path: Path, encoding: str = "utf-8"):
    try:
        return open(path, encoding=encoding)
    except OSError as exc:  # permission denied, a folder, ...
        raise DataError(f"{path} cannot be read ({exc.strerror or exc}).") from None


def _not_text(path: Path, encoding: str, exc: UnicodeDecodeError, data: bytes = None) -> DataError:
    newline = b"\n"
    line = "" if data is None else f" on line {data[: exc.start].count(newline) + 1}"
    return DataError(
        f"{path} is not {encoding} text: byte 0x{exc.object[exc.start]:02x}{line} cannot be decoded. "
        f"Save the file as {encoding}, or set encoding to the one it uses."
    )


def read_header(path: Path, separator: str = "\t", encoding: str = "utf-8") -> AtomicFile:
    """Parse the ``name:type`` header of an atomic file and check that data follows it."""
    with _open(path, encoding) as f:
        try:
            header = f.readline().rstrip("\r\n")
            first_row = f.readline().strip()
        except UnicodeDecodeError:
            data = path.read_bytes()
            try:
                data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise _not_text(path, encoding, exc, data) from None
            raise
    if header.startswith("\ufeff"):
        raise DataError(
            f"{path} starts with a byte-order mark (BOM), which RecBole would read as part of the first "
            f"column's name. Save the file as UTF-8 without BOM."
        )
    if not header.strip():
        raise DataError(
            f"{path} is empty. An atomic .inter file starts with a header line such as "
            f"'user_id:token{separator!s}item_id:token{separator!s}timestamp:float' "
            f"followed by one interaction per line."
        )
    fields, types, bad = [], [], []
    for column in header.split(separator):
        name, colon, ftype = column.strip().partition(":")
        if not colon or not name or ftype not in FIELD_TYPES:
            bad.append(column)
            continue
        fields.append(name)
        types.append(ftype)
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        raise DataError(
            f"{path}: the first line must be RecBole's header, {_sep_name(separator)}-separated "
            f"'name:type' fields with type one of {', '.join(FIELD_TYPES)} "
            f"(e.g. 'user_id:token{separator}item_id:token{separator}timestamp:float'); "
            f"these columns are not: {shown}. Add the types to the header "
            f"(or set field_separator if the file uses another separator)."
        )
    duplicated = sorted({f for f in fields if fields.count(f) > 1})
    if duplicated:
        raise DataError(f"{path}: the header names {', '.join(map(repr, duplicated))} more than once; name each column once.")
    if not first_row:
        raise DataError(f"{path} has a header but no interactions: add one interaction per line.")
    return AtomicFile(path, fields, types)


def check_rows(atomic: AtomicFile, config: Mapping, ordered: bool) -> None:
    """Every interaction has its user and item, and (``ordered``) a numeric time; the file decodes.

    RecBole would otherwise keep an empty item as ``[PAD]`` in training, give an empty time the
    column's mean (moving the row to the end of the sequence, where it becomes a validation or
    test target), or stop in pandas with a traceback.
    """
    separator = config.get("field_separator") or "\t"
    encoding = config.get("encoding") or "utf-8"
    required = [config.get("USER_ID_FIELD"), config.get("ITEM_ID_FIELD")]
    time_field = config.get("TIME_FIELD") if ordered else None
    # A file that passed is not read again while it is unchanged (a tuning search, or every
    # process of a distributed run, builds its configuration many times).
    stat = atomic.path.stat()
    key = (str(atomic.path.resolve()), stat.st_size, stat.st_mtime_ns, separator, encoding, *required, time_field)
    if key in _ROWS_CHECKED:
        return
    _check_rows(atomic, separator, encoding, required, time_field)
    _ROWS_CHECKED.add(key)


_ROWS_CHECKED: set = set()


def _check_rows(atomic: AtomicFile, separator: str, encoding: str, required, time_field) -> None:
    data = atomic.path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise _not_text(atomic.path, encoding, exc, data) from None
    columns = {name: i for i, name in enumerate(atomic.fields)}
    needed = [(name, columns[name]) for name in required if name in columns]
    timed = columns.get(time_field)
    width = len(atomic.fields)
    for number, line in enumerate(text.splitlines()[1:], start=2):
        if not line.strip():
            continue
        cells = line.split(separator)
        if len(cells) != width:
            raise DataError(
                f"{atomic.path}, line {number}: {len(cells)} fields where the header has {width} "
                f"({_sep_name(separator)}-separated)."
            )
        for name, i in needed:
            if not cells[i].strip():
                raise DataError(
                    f"{atomic.path}, line {number}: the {name} cell is empty; every interaction needs a user and "
                    f"an item (RecBole would train on it as padding). Fill it in or drop the line."
                )
        if timed is not None:
            value = cells[timed].strip()
            try:
                ok = value != "" and float(value) == float(value)  # not empty, not NaN
            except ValueError:
                ok = False
            if not ok:
                raise DataError(
                    f"{atomic.path}, line {number}: {time_field} {value!r} is not a number; each user's "
                    f"interactions are ordered by it (RecBole would give it the column's mean, which moves "
                    f"the row). Fill in a time (or the position in the user's sequence)."
                )


def check_side_files(inter: Path, dataset: str) -> None:
    """A ``.user`` or ``.item`` file next to the interactions that RecBole would load must not be empty."""
    for suffix in (".user", ".item"):
        side = inter.parent / f"{dataset}{suffix}"
        if side.is_file() and side.stat().st_size == 0:
            raise DataError(f"{side} is empty: delete it, or give it a header and one row per {suffix[1:]}.")


def _sep_name(separator: str) -> str:
    return {"\t": "tab", ",": "comma", " ": "space"}.get(separator, repr(separator))


def locate_inter(config: Mapping, dataset: str) -> Optional[Path]:
    """The ``.inter`` file RecBole will read for ``dataset`` under ``config`` (its
    ``data_path`` and ``benchmark_filename``), or None for RecBole's bundled ``ml-100k``.

    A missing dataset that RecBole knows (or that has a ``download_url``) is
    downloaded first unless ``allow_download`` is False (:mod:`recbole_hyper.data.download`).
    Raises :class:`DatasetNotFoundError` when the file is missing and cannot be downloaded.
    """
    if dataset == "ml-100k":
        return None
    benchmark = config.get("benchmark_filename")
    path = inter_path(config.get("data_path"), dataset, benchmark)
    if path.is_file():
        return path
    from recbole_hyper.data.download import download_dataset, known_url

    url = config.get("download_url") or known_url(dataset)
    if url and not benchmark and config.get("allow_download") is not False:
        download_dataset(
            dataset, path.parent.parent, url, sha256=config.get("download_sha256"),
            progress=config.get("show_progress") is not False,
        )
        if path.is_file():
            return path
    hint = (
        "or leave allow_download on to download it from RecBole's address (needs internet access)"
        if url and not benchmark
        else "or set download_url to the address of a zip of its atomic files"
    )
    raise DatasetNotFoundError(
        f"Dataset '{dataset}' not found: expected the atomic file {path}.\n"
        f"Point data_path at the folder that contains '{dataset}/' "
        f"(e.g. --data_path=/path/to/datasets), {hint}."
    )


def inspect_dataset(config: Mapping, dataset: str, sequential: bool) -> Optional[AtomicFile]:
    """Check the dataset's ``.inter`` file against the configuration.

    ``config`` is the merged configuration (RecBole's keys).  Returns the
    header, or None for RecBole's bundled ``ml-100k`` (nothing to check).
    Raises :class:`DatasetNotFoundError` or :class:`DataError`.
    """
    path = locate_inter(config, dataset)
    if path is None:
        return None
    atomic = read_header(path, config.get("field_separator") or "\t", config.get("encoding") or "utf-8")
    for key, what in (("USER_ID_FIELD", "user"), ("ITEM_ID_FIELD", "item")):
        name = config.get(key)
        if not atomic.has(name):
            raise DataError(
                f"{path} has no {what} column '{name}' (its columns: {', '.join(atomic.fields)}). "
                f"Name the column '{name}:token' in the header, or set {key} to the name of "
                f"your {what} column."
            )
    time_field = config.get("TIME_FIELD")
    if sequential and not atomic.has(time_field):
        raise DataError(
            f"{path} has no time column '{time_field}' (its columns: {', '.join(atomic.fields)}). "
            f"Sequential models order each user's interactions by it: add a column "
            f"'{time_field}:float' (a Unix time, or the position of the interaction in the "
            f"user's sequence), or set TIME_FIELD to the name of your time column."
        )
    check_rows(atomic, config, sequential)
    check_side_files(path, dataset)
    return atomic


def default_load_col(atomic: AtomicFile, load_col, time_field: Optional[str]):
    """The ``load_col`` to use when the user set none.

    RecBole's default, ``{inter: [user_id, item_id]}``, lacks the time field
    sequential models need; when the configured ``load_col`` does not load a
    time field that the file has, every column of the ``.inter`` file is
    loaded instead.  Returns None when the configured value is fine.
    """
    if load_col is None or not atomic.has(time_field):
        return None  # None loads every column of every file already
    inter = (load_col or {}).get("inter") or []
    if time_field in inter:
        return None
    return dict(load_col, inter=list(atomic.fields))


def check_load_col_has_time(load_col, time_field: Optional[str], dataset: str) -> None:
    """An explicit ``load_col`` is kept as it is, but one that drops the time field is reported."""
    if load_col is None or time_field is None:
        return
    inter = (load_col or {}).get("inter")
    if inter is not None and time_field not in inter:
        raise DataError(
            f"load_col['inter'] for '{dataset}' is {list(inter)}: it does not load the time "
            f"field '{time_field}', which sequential models need to order interactions. "
            f"Add '{time_field}' to load_col['inter'] (or leave load_col unset to load every column)."
        )


def check_not_filtered_away(dataset) -> None:
    """Raise :class:`DataError` when the filters left no interaction (call after filtering)."""
    if len(dataset.inter_feat) > 0:
        return
    config = dataset.config
    filters = {
        key: config[key]
        for key in ("user_inter_num_interval", "item_inter_num_interval", "val_interval", "rm_dup_inter")
        if config[key] not in (None, "[0,inf)")
    }
    shown = ", ".join(f"{k}={v!r}" for k, v in filters.items()) or "the configured filters"
    raise DataError(
        f"Every interaction of '{dataset.dataset_name}' was filtered away ({shown}). "
        f"Loosen the filters (e.g. --user_inter_num_interval='[1,inf)'), or check that the "
        f"dataset has enough interactions per user and item."
    )
