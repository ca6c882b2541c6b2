"""Run NVIDIA ModelOpt's ONNX PTQ (`modelopt.onnx.quantization.quantize`) on a model with given
calibration feeds: the side-by-side rows of benchmarks/targets.py (`--modelopt`).

Runs in ModelOpt's own virtual environment (not the project's; nothing here imports onnxcomp):

    python -m venv /work/venv_modelopt && /work/venv_modelopt/bin/pip install "nvidia-modelopt[onnx]==0.47.0"
    /work/venv_modelopt/bin/python benchmarks/modelopt_quantize.py MODEL FEEDS.npz OUT.onnx --mode int8
    ... --mode int8 --options '{"op_types_to_exclude": ["Add"]}'   # more quantize() arguments

FEEDS.npz holds the calibration batches as `<batch index>/<input name>` arrays (benchmarks/targets.py
writes the model's built-in calibration feeds there), read through a CalibrationDataReader so ModelOpt
calibrates on the batches onnxcomp does (int4 concatenates them: padded with zeros to one sequence
length, i.e. pad tokens with attention mask 0). Calibration runs on the CPU execution provider.
Prints one JSON line: the ModelOpt version and the options used.
"""

import argparse
import json
import sys

import numpy as np
from onnxruntime.quantization.calibrate import CalibrationDataReader


class Feeds(CalibrationDataReader):
    def __init__(self, path, pad: bool = False):
        data = np.load(path)
        batches: dict[int, dict] = {}
        for key in data.files:
            index, name = key.split("/", 1)
            batches.setdefault(int(index), {})[name] = data[key]
        self.batches = [batches[i] for i in sorted(batches)]
        if pad:  # int4 concatenates the batches: pad axis 1 (sequence) with zeros (pad id, mask 0) to one length
            width = max(array.shape[1] for batch in self.batches for array in batch.values())
            self.batches = [
                {name: np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)) for name, a in b.items()}
                for b in self.batches
            ]
        self.rewind()

    def get_next(self):
        return next(self.iterator, None)

    def get_first(self):
        return self.batches[0]

    def rewind(self):
        self.iterator = iter(self.batches)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("feeds")
    parser.add_argument("out")
    parser.add_argument("--mode", choices=("int8", "int4"), default="int8")
    parser.add_argument("--method", help="ModelOpt's calibration method (default: its own per mode)")
    parser.add_argument("--options", default="{}", help='more quantize() arguments, JSON: {"disable_mha_qdq": true}')
    args = parser.parse_args()
    try:
        extra = json.loads(args.options)
    except json.JSONDecodeError as exc:
        parser.error(f"--options is not JSON ({exc}): {args.options!r}")
    if not isinstance(extra, dict):
        parser.error(f"--options must be a JSON object of quantize() arguments, not {args.options!r}")
    import modelopt
    from modelopt.onnx.quantization import quantize

    options = {
        "quantize_mode": args.mode,
        "calibration_eps": ["cpu"],
        "high_precision_dtype": "fp32",  # compared with fp32 in ONNX Runtime CPU, like onnxcomp's outputs
        **({"calibration_method": args.method} if args.method else {}),
        **extra,
    }
    feeds = Feeds(args.feeds, pad=args.mode == "int4")
    quantize(args.model, calibration_data_reader=feeds, output_path=args.out, **options)
    print(json.dumps({"modelopt": modelopt.__version__, **options}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
