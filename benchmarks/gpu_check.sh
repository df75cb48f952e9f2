#!/usr/bin/env bash
# The GPU check, prepared for the day a device is lent: the core tests on CUDA, then the tracing
# speed benchmarks in fp32 and bf16, in under 10 minutes on one H200.
#
#   bash benchmarks/gpu_check.sh --prepare   # here, once: the wheels the GPU image lacks, into .whl/
#   bash benchmarks/gpu_check.sh             # there: device run(command=..., carry=[".whl"], timeout_s=600)
#
# The GPU image has torch, transformers, einops, jaxtyping, pandas, scikit-learn, safetensors and
# accelerate, but not rouge-score (sdist only, so built here) and nltk; the package runs from the
# checkout (PYTHONPATH), not installed. Tests of TransformerLens bridges and nnsight are left out
# (neither is in the image); every other test of the core runs on the GPU, since load_model
# picks CUDA where present. Everything it prints also goes to $OUT/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    python3 -m pip wheel -q --no-deps -w .whl rouge-score
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 -d .whl nltk
    ls .whl
    exit 0
fi

log="${OUT:-/tmp}/gpu_check.log"
exec > >(tee "$log") 2>&1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" \
    || exit 1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv

status=0
echo "== core tests on CUDA"
timeout 300 python3 -m pytest -q -p no:cacheprovider -o addopts="--import-mode=importlib" -x \
    tests/test_tracing.py tests/test_architectures.py tests/test_average.py tests/test_localize.py \
    tests/test_unlearn.py tests/test_scoring.py \
    -k "not transformer_lens and not bridge and not nnsight" || status=1

for dtype in float32 bfloat16; do
    echo "== trace_facts speed, $dtype"
    timeout 120 python3 benchmarks/trace_facts_speed.py --device cuda --dtype "$dtype" --facts-per-batch 1,32,128 \
        || status=1
done
echo "== one fact, the engine on the GPT-2-small shape"
timeout 60 python3 benchmarks/trace_speed.py --methods engine --attribution-facts 0 || status=1
nvidia-smi --query-gpu=memory.used --format=csv
exit $status
