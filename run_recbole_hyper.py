"""Train and evaluate a model with RecBole's pipeline and the plugin's models.

    python run_recbole_hyper.py --model=Mamba4Rec --dataset=ml-100k
    python run_recbole_hyper.py --model=Mamba4Rec --dataset=ml-1m --data_path=/data --epochs=50

Any ``--key=value`` sets that RecBole parameter.
"""

import sys

import recbole_hyper  # noqa: F401  (registers the models)
from recbole_hyper.cli import main

if __name__ == "__main__":
    sys.exit(main())
