"""Run NVIDIA ModelOpt's ONNX PTQ (`modelopt.onnx.quantization.quantize`) on a model with given
calibration feeds: the side-by-side rows of benchmarks/targets.py (`--modelopt`).

Runs in ModelOpt's own virtual environment (not the project's; nothing here imports onnxcomp):

    python -m venv /work/venv_modelopt && /work/venv_modelopt/bin/pip install "nvidia-modelopt[onnx]==0.47.0"
    /work/venv_modelopt/bin/python benchmarks/modelopt_quantize.py MODEL FEEDS.npz OUT.onnx --mode int8

FEEDS.npz holds the calibration batches as `<batch index>/<input name>` arrays (benchmarks/targets.py
writes the model's built-in calibration feeds there), read through a CalibrationDataReader so ModelOpt
calibrates on exactly the batches onnxcomp does. Calibration runs on the CPU execution provider.
Prints one JSON line: the ModelOpt version and the options used.
"""

import argparse
import json
import sys

import numpy as np
from onnxruntime.quantization.calibrate import CalibrationDataReader


class Feeds(CalibrationDataReader):
    def __init__(self, path):
        data = np.load(path)
        batches: dict[int, dict] = {}
        for key in data.files:
            index, name = key.split("/", 1)
            batches.setdefault(int(index), {})[name] = data[key]
        self.batches = [batches[i] for i in sorted(batches)]
        self.rewind()

    def get_next(self):
        return next(self.iterator, None)

    def rewind(self):
        self.iterator = iter(self.batches)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("feeds")
    parser.add_argument("out")
    parser.add_argument("--mode", choices=("int8", "int4"), default="int8")
    parser.add_argument("--method", help="ModelOpt's calibration method (default: its own per mode)")
    args = parser.parse_args()
    import modelopt
    from modelopt.onnx.quantization import quantize

    options = {
        "quantize_mode": args.mode,
        "calibration_eps": ["cpu"],
        "high_precision_dtype": "fp32",  # compared with fp32 in ONNX Runtime CPU, like onnxcomp's outputs
        **({"calibration_method": args.method} if args.method else {}),
    }
    quantize(args.model, calibration_data_reader=Feeds(args.feeds), output_path=args.out, **options)
    print(json.dumps({"modelopt": modelopt.__version__, **options}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
