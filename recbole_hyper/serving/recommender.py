"""Recommendations from a trained model, by the dataset's original tokens.

:class:`Recommender` loads a checkpoint written by RecBole's trainer (any of
the plugin's models, or one of RecBole's sequential models) and answers

* ``recommend(users, k)``: the top k items for known users, from their
  histories in the training data (the last ``MAX_ITEM_LIST_LENGTH`` items,
  as in evaluation);
* ``recommend_sequences(histories, k)``: the top k items after given
  histories of item tokens;
* streaming, for the plugin's models: ``start(user)`` gives the recurrent
  state after the user's history (or an empty one), ``step(state, item)``
  folds in one more item in O(1) time and memory (Mamba's recurrent form),
  ``topk(state, k)`` ranks.  A state holds the full recurrence, however
  long the sequence grows (it is not cut at ``MAX_ITEM_LIST_LENGTH``).

Everything serving needs besides the weights (the token maps, each user's
history and, for HM2Rec, the training graph's edges) is stored beside the
checkpoint in ``<checkpoint>.serving.pt``.  The runner writes that file after
training; for a checkpoint without it, :meth:`Recommender.from_checkpoint`
rebuilds it once from the dataset and saves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch

from recbole_hyper.compat import save_safely
from recbole_hyper.errors import describe_error

__all__ = ["Recommender", "ServingData", "ServingError", "serving_path", "UnknownTokenError"]

SUFFIX = ".serving.pt"


class UnknownTokenError(KeyError):
    """Users or items that the model does not know."""

    def __str__(self):  # KeyError would print the message with quotes
        return str(self.args[0])


class ServingError(ValueError):
    """A checkpoint or its serving data cannot be used; the message says why and what to do."""


ERRORS = ("raise", "ignore")


def _check_errors(errors) -> None:
    if errors not in ERRORS:
        raise ValueError(f"errors = {errors!r}: must be 'raise' or 'ignore'.")


def _check_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k = {k!r}: must be an integer >= 1.")


def serving_path(checkpoint) -> Path:
    return Path(str(checkpoint) + SUFFIX)


@dataclass
class ServingData:
    """Token maps (index = internal id, 0 is padding), each user's items in
    time order (CSR: ``items[indptr[u]:indptr[u + 1]]``) and the training
    split's unique (user, item) pairs."""

    user_tokens: List[str]
    item_tokens: List[str]
    indptr: torch.Tensor
    items: torch.Tensor
    train_edges: torch.Tensor

    @classmethod
    def from_dataset(cls, dataset) -> "ServingData":
        """From a RecBole dataset before ``build()`` (its table holds every interaction)."""
        inter = dataset.inter_feat
        uid, iid, time = dataset.uid_field, dataset.iid_field, dataset.time_field
        users = np.asarray(inter[uid], dtype=np.int64)
        items = np.asarray(inter[iid], dtype=np.int64)
        # RecBole orders each user's items by time read as float32, keeping file order among ties.
        times = np.asarray(inter[time], dtype=np.float32) if time in inter else np.zeros(len(users), np.float32)
        order = np.lexsort((times, users))
        counts = np.bincount(users, minlength=dataset.user_num)
        return cls(
            user_tokens=[str(t) for t in dataset.field2id_token[uid]],
            item_tokens=[str(t) for t in dataset.field2id_token[iid]],
            indptr=torch.as_tensor(np.r_[0, np.cumsum(counts)], dtype=torch.long),
            items=torch.as_tensor(items[order], dtype=torch.int32),
            train_edges=torch.zeros(0, 2, dtype=torch.int32),
        )

    def add_training_edges(self, train_dataset, config) -> None:
        from recbole_hyper.data import training_edges

        edges = training_edges(train_dataset)
        self.train_edges = torch.as_tensor(edges, dtype=torch.int32)

    def fingerprint(self) -> str:
        """sha256 of the user and item token maps: what ties serving data to a checkpoint."""
        import hashlib

        hasher = hashlib.sha256()
        for tokens in (self.user_tokens, self.item_tokens):
            hasher.update("\n".join(tokens).encode("utf-8"))
            hasher.update(b"\x00")
        return hasher.hexdigest()

    def save(self, path) -> None:
        save_safely(vars(self), path)

    @classmethod
    def load(cls, path) -> "ServingData":
        try:
            data = cls(**torch.load(path, weights_only=True))
        except Exception as exc:  # truncated, random bytes, another kind of file
            raise ServingError(
                f"The serving data {path} cannot be read ({describe_error(exc)}). Delete it: it is "
                f"rebuilt from the dataset the checkpoint was trained on."
            ) from None
        return data

    def history(self, user: int) -> torch.Tensor:
        return self.items[self.indptr[user] : self.indptr[user + 1]].long()


class _ServingDataset:
    """What a model's constructor reads from a RecBole dataset: the counts and
    the training rows (HM2Rec builds its graph from them)."""

    def __init__(self, data: ServingData, config):
        from recbole.data.interaction import Interaction

        self.config = config
        self.data = data
        edges = data.train_edges.long()
        self.inter_feat = Interaction({
            config["USER_ID_FIELD"]: edges[:, 0],
            config["ITEM_ID_FIELD"]: edges[:, 1],
            config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]: torch.zeros(len(edges), 1, dtype=torch.long),
        })

    def num(self, field):
        if field == self.config["USER_ID_FIELD"]:
            return len(self.data.user_tokens)
        return len(self.data.item_tokens)


def _rebuild(config, checkpoint_path) -> ServingData:
    from recbole.data import data_preparation

    from recbole_hyper.data import create_dataset

    try:
        dataset = create_dataset(config)
        data = ServingData.from_dataset(dataset)
        train, _, _ = data_preparation(config, dataset)
        data.add_training_edges(train.dataset, config)
    except Exception as exc:
        raise ServingError(
            f"{checkpoint_path} has no serving data ({serving_path(checkpoint_path).name}) and it cannot be "
            f"rebuilt from dataset '{config['dataset']}' in {config['data_path']} ({describe_error(exc)}). "
            f"Restore the data the model was trained on, or copy the serving file that training wrote."
        ) from None
    return data


def _device(device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ServingError(f"device = {device!r}: {exc}; use e.g. 'cpu' or 'cuda'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ServingError(f"device = '{device}': no CUDA device is available here; use device='cpu'.")
    return device


def _read_checkpoint(path: Path, device) -> dict:
    from recbole_hyper.compat import load_checkpoint

    try:
        checkpoint = load_checkpoint(path, map_location=device)
    except Exception as exc:  # truncated, random bytes, not a torch file
        raise ServingError(f"{path} cannot be read as a checkpoint ({describe_error(exc)}).") from None
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "state_dict" not in checkpoint:
        raise ServingError(f"{path} is not a checkpoint written by training (it has no config and weights).")
    return checkpoint


def _check_sizes(path, state_dict, data: ServingData) -> None:
    """Without a fingerprint (checkpoints before 0.2): the item table must have one row per item."""
    rows = state_dict.get("item_embedding.weight")
    if rows is not None and rows.shape[0] != len(data.item_tokens):
        raise ServingError(
            f"Dataset in use has {len(data.item_tokens) - 1} items, but {path} was trained on "
            f"{rows.shape[0] - 1}: restore the data the model was trained on."
        )


class Recommender:
    """Top-k recommendations and streaming updates from a trained model."""

    def __init__(self, model, config, data: ServingData):
        self.model = model.eval()
        self.config = config
        self.data = data
        self.device = next(model.parameters()).device
        self.max_len = config["MAX_ITEM_LIST_LENGTH"]
        self.user_index = {t: i for i, t in enumerate(data.user_tokens) if i > 0}
        self.item_index = {t: i for i, t in enumerate(data.item_tokens) if i > 0}
        self.n_items = len(data.item_tokens)

    @classmethod
    def from_checkpoint(cls, path, device: str = "cpu") -> "Recommender":
        """Load a checkpoint and what serving needs (``<path>.serving.pt``, made once if missing).

        The serving data must be the checkpoint's: a checkpoint records the fingerprint of its
        token maps (:meth:`ServingData.fingerprint`), and serving data that differ (another
        serving file, or a dataset that changed since training) are an error naming both.
        """
        from recbole.utils import ModelType

        from recbole_hyper.registry import get_model_class

        path = Path(path)
        device = _device(device)
        if not path.is_file():
            raise FileNotFoundError(f"No checkpoint at {path}.")
        checkpoint = _read_checkpoint(path, device)
        config = checkpoint["config"]
        config["device"] = device
        cls_ = get_model_class(config["model"])
        if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
            raise ServingError(
                f"{path} holds {config['model']}, not a sequential model: recommendations here rank items "
                f"after a user's history; use RecBole's own full_sort_topk for {config['model']}."
            )
        expected = checkpoint.get("serving_fingerprint")
        sidecar = serving_path(path)
        if sidecar.is_file():
            data = ServingData.load(sidecar)
            if expected and data.fingerprint() != expected:
                raise ServingError(
                    f"The serving data {sidecar} do not belong to {path}: their user and item tokens differ from "
                    f"the ones the model was trained with. Delete {sidecar.name} to rebuild it from the training data."
                )
        else:
            data = _rebuild(config, path)
            if expected and data.fingerprint() != expected:
                raise ServingError(
                    f"Dataset '{config['dataset']}' in {config['data_path']} has changed since {path} was trained "
                    f"(its user and item tokens map to other ids), so its recommendations would be other items. "
                    f"Restore the data the model was trained on, or train again."
                )
            if expected is None:
                _check_sizes(path, checkpoint["state_dict"], data)
            try:
                data.save(sidecar)
            except OSError:
                pass  # a read-only folder: rebuild next time
        try:
            model = cls_(config, _ServingDataset(data, config)).to(device)
            model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as exc:
            raise ServingError(
                f"The weights in {path} do not fit {config['model']} on this data ({describe_error(exc)})."
            ) from None
        model.load_other_parameter(checkpoint.get("other_parameter"))
        return cls(model, config, data)

    # --------------------------------------------------------------- tokens
    def _ids(self, tokens: Iterable, index: Dict[str, int], kind: str, errors: str):
        tokens = [str(t) for t in tokens]
        unknown = [t for t in tokens if t not in index]
        if unknown and errors != "ignore":
            shown = ", ".join(repr(t) for t in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise UnknownTokenError(
                f"Unknown {kind} token(s): {shown} ({len(unknown)} in all). The model knows "
                f"{len(index)} {kind}s from its training data; to skip unknown ones pass errors='ignore' "
                f"(on the command line: --ignore-unknown)."
            )
        return [(t, index[t]) for t in tokens if t in index]

    # -------------------------------------------------------------- ranking
    def _scores(self, histories: Sequence[torch.Tensor], batch: int = 1024) -> torch.Tensor:
        """Scores of every item after each history (its last MAX_ITEM_LIST_LENGTH items)."""
        from recbole.data.interaction import Interaction

        model = self.model
        out = []
        for lo in range(0, len(histories), batch):
            chunk = [h[-self.max_len :] for h in histories[lo : lo + batch]]
            seq = torch.zeros(len(chunk), self.max_len, dtype=torch.long)
            for row, h in enumerate(chunk):
                seq[row, : len(h)] = h
            lengths = torch.tensor([len(h) for h in chunk], dtype=torch.long)
            inter = Interaction({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: lengths}).to(self.device)
            with torch.no_grad():
                out.append(model.full_sort_predict(inter).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.n_items)

    def _exclusions(self, scores, seen: Optional[Sequence[torch.Tensor]], exclude) -> torch.Tensor:
        scores[:, 0] = -torch.inf  # padding
        if seen is not None:
            for row, items in enumerate(seen):
                scores[row, items] = -torch.inf
        if exclude:
            ids = [i for _, i in self._ids(exclude, self.item_index, "item", "ignore")]
            scores[:, ids] = -torch.inf
        return scores

    def _frame(self, labels, label_name, scores, k):
        import pandas as pd

        k = min(k, self.n_items - 1)
        values, ids = torch.topk(scores, k, dim=1)
        rows = []
        for label, v, i in zip(labels, values.tolist(), ids.tolist()):
            for rank, (score, item) in enumerate(zip(v, i), start=1):
                if score == -float("inf"):
                    break  # fewer than k items left after the exclusions
                rows.append((label, rank, self.data.item_tokens[item], score))
        return pd.DataFrame(rows, columns=[label_name, "rank", "item", "score"])

    def recommend(self, users, k: int = 10, exclude_seen: bool = True, exclude=None, errors: str = "raise"):
        """Top ``k`` items for each user (original tokens), as a DataFrame
        ``user, rank, item, score``; ``exclude_seen`` drops every item of the
        user's history, ``exclude`` more items for everyone."""
        _check_k(k)
        _check_errors(errors)
        if isinstance(users, (str, int)):
            users = [users]
        known = self._ids(users, self.user_index, "user", errors)
        histories = [self.data.history(uid) for _, uid in known]
        empty = [t for (t, _), h in zip(known, histories) if len(h) == 0]
        if empty:
            raise ValueError(f"User(s) {', '.join(map(repr, empty))} have no history to recommend from.")
        scores = self._exclusions(self._scores(histories), histories if exclude_seen else None, exclude)
        return self._frame([t for t, _ in known], "user", scores, k)

    def recommend_sequences(self, sequences, k: int = 10, exclude_seen: bool = True, exclude=None,
                            errors: str = "raise"):
        """Top ``k`` items after each history of item tokens; the DataFrame's
        first column ``sequence`` is the history's index in ``sequences``."""
        _check_k(k)
        _check_errors(errors)
        histories = []
        for index, seq in enumerate(sequences):
            if isinstance(seq, (str, int)):
                raise TypeError("recommend_sequences takes a list of histories, each a list of item tokens.")
            ids = [i for _, i in self._ids(seq, self.item_index, "item", errors)]
            if not ids:
                raise ValueError(
                    f"History {index} is empty{' after dropping unknown items' if seq else ''}: "
                    f"a model needs at least one item to recommend from."
                )
            histories.append(torch.tensor(ids, dtype=torch.long))
        scores = self._exclusions(self._scores(histories), histories if exclude_seen else None, exclude)
        return self._frame(list(range(len(histories))), "sequence", scores, k)

    # ------------------------------------------------------------ streaming
    def _check_streaming(self):
        if not hasattr(self.model, "stream_step"):
            raise TypeError(
                f"Streaming updates need a recurrent model of recbole_hyper; {type(self.model).__name__} "
                f"has none. Use recommend_sequences() instead."
            )

    def start(self, users: Union[None, str, Sequence[str]] = None, errors: str = "raise") -> dict:
        """Recurrent state after each user's whole history (``None``: one empty sequence)."""
        self._check_streaming()
        _check_errors(errors)
        if users is None:
            histories, labels = [torch.zeros(0, dtype=torch.long)], [None]
        else:
            if isinstance(users, (str, int)):
                users = [users]
            known = self._ids(users, self.user_index, "user", errors)
            histories, labels = [self.data.history(uid) for _, uid in known], [t for t, _ in known]
        state = self.model.stream_start(len(histories), device=self.device)
        state["users"] = labels
        state["seen"] = torch.zeros(len(histories), self.n_items, dtype=torch.bool)
        for row, h in enumerate(histories):
            state["seen"][row, h] = True
        longest = max((len(h) for h in histories), default=0)
        for t in range(longest):
            # Rows whose history is shorter keep their state (masked update).
            active = torch.tensor([len(h) > t for h in histories])
            items = torch.tensor([int(h[t]) if len(h) > t else 1 for h in histories], device=self.device)
            with torch.no_grad():
                stepped = self.model.stream_step(items, state)
            state = _masked(state, stepped, active.to(self.device))
        return state

    def step(self, state: dict, items) -> dict:
        """Fold one more item (a token per row of the state) into the state."""
        self._check_streaming()
        if isinstance(items, (str, int)):
            items = [items]
        if len(items) != len(state["position"]):
            raise ValueError(f"step() takes one item per state row: {len(state['position'])}, got {len(items)}.")
        unknown = [str(t) for t in items if str(t) not in self.item_index]
        if unknown:
            raise UnknownTokenError(
                f"Unknown item token(s): {', '.join(map(repr, unknown[:10]))}: step() needs an item the model knows "
                f"for every row (the model knows {len(self.item_index)} items from its training data)."
            )
        ids = [self.item_index[str(t)] for t in items]
        with torch.no_grad():
            stepped = self.model.stream_step(torch.tensor(ids, device=self.device), state)
        stepped["users"], stepped["seen"] = state["users"], state["seen"].clone()
        stepped["seen"][torch.arange(len(ids)), ids] = True
        return stepped

    def topk(self, state: dict, k: int = 10, exclude_seen: bool = True, exclude=None):
        """Top ``k`` items for each row of a streaming state (DataFrame ``row, user, rank, item, score``)."""
        self._check_streaming()
        _check_k(k)
        if state.get("output") is None or bool((state["position"] == 0).any()):
            raise ValueError("A state needs at least one item before it can rank: call step() first.")
        with torch.no_grad():
            scores = self.model.score_all(state["output"]).float().cpu()
        seen = [row.nonzero().view(-1) for row in state["seen"]] if exclude_seen else None
        frame = self._frame(list(range(len(scores))), "row", self._exclusions(scores, seen, exclude), k)
        frame.insert(1, "user", [state["users"][r] for r in frame["row"]])
        return frame

    @staticmethod
    def concat(states: Sequence[dict]) -> dict:
        """One batched state from several (e.g. to step many users at once)."""
        states = list(states)
        if not states:
            raise ValueError("concat() needs at least one state.")
        return {
            "layers": [
                {key: torch.cat([s["layers"][i][key] for s in states]) for key in states[0]["layers"][i]}
                for i in range(len(states[0]["layers"]))
            ],
            "position": torch.cat([s["position"] for s in states]),
            "output": None if any(s["output"] is None for s in states) else torch.cat([s["output"] for s in states]),
            "users": [u for s in states for u in s["users"]],
            "seen": torch.cat([s["seen"] for s in states]),
        }


def _masked(old: dict, new: dict, active: torch.Tensor) -> dict:
    """``new`` where ``active``, ``old`` elsewhere (rows of a batched state)."""

    def pick(a, b):
        if a is None:
            return b
        shape = (-1,) + (1,) * (b.dim() - 1)
        return torch.where(active.view(shape), b, a)

    merged = dict(old)
    merged["layers"] = [{k: pick(lo[k], ln[k]) for k in ln} for lo, ln in zip(old["layers"], new["layers"])]
    merged["position"] = pick(old["position"], new["position"])
    merged["output"] = pick(old["output"], new["output"])
    return merged
