"""Evaluate methods of a task on a test suite (see conf/evaluate.yaml and fusiondiff.cli.evaluate).

python scripts/evaluate.py task=multifocus dataset=../shared/data/mfif/lytro output_dir=outputs/eval/lytro
python scripts/evaluate.py task=hdr dataset=data/hdr_synthetic methods='[model:runs/hdr/model.safetensors,linear_merge]'
"""

from fusiondiff.cli.main import evaluate_main

if __name__ == "__main__":
    evaluate_main()
