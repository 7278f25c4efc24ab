"""Prints what a short training on data with missing values produces, for comparing two stacks.

CI runs it under NumPy 1 / pandas 2 and under the latest NumPy / pandas and requires the two
outputs to be identical: the filled interaction tensors (sha256 of each field), the test
metrics and the sha256 of the trained weights.
"""

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

torch.set_num_threads(1)

import recbole_hyper  # noqa: E402,F401
from recbole_hyper.quick_start import load_data_and_model, run_recbole_hyper  # noqa: E402


def write_data(folder: Path) -> None:
    (folder / "gaps").mkdir(parents=True)
    rows = ["user_id:token\titem_id:token\ttimestamp:float\tshop:token\tprice:float\ttags:token_seq"]
    for u in range(1, 41):
        for t in range(1, 13):
            item = (u * 7 + t * 3) % 37 + 1
            shop = "" if (u + t) % 4 == 0 else f"s{t % 5}"
            price = "" if (u * t) % 5 == 0 else f"{(u + t) % 9}.25"
            tags = "" if t % 3 == 0 else f"a{t % 4} b{u % 3}"
            rows.append(f"u{u}\ti{item}\t{t}\t{shop}\t{price}\t{tags}")
    (folder / "gaps" / "gaps.inter").write_text("\n".join(rows) + "\n")


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        write_data(Path(tmp) / "data")
        config = {
            "data_path": str(Path(tmp) / "data"), "load_col": None, "MAX_ITEM_LIST_LENGTH": 8,
            "hidden_size": 16, "d_state": 4, "epochs": 2, "train_batch_size": 16, "seed": 3,
            "train_mode": "full_sequence", "show_progress": False, "state": "ERROR",
        }
        result = run_recbole_hyper("Mamba4Rec", "gaps", config_dict=config, count_flops=False)
        _, model, dataset, _, _, _ = load_data_and_model(result["checkpoint"])
        out = {
            "inter_feat": {k: digest(v) for k, v in sorted(dataset.inter_feat.interaction.items())},
            "test": {k: float(v) for k, v in result["test_result"].items()},
            "weights": {k: digest(v) for k, v in sorted(model.state_dict().items())},
        }
    print(json.dumps(out, sort_keys=True, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
