"""Calibration data readers. Each is re-iterable and yields feeds: {input name: array}.

Accepted sources (`make_reader`):
- a folder of `.npz` files, one sample or batch per file, keys = the model's input names;
- a `.txt` file, one sentence per line, batched through the model's tokenizer;
- a folder of images (png/jpg/bmp), resized to the model's NCHW input, scaled to [0, 1];
- `module:function`, a Python callable returning an iterable of feeds.
Every feed is validated against the model's inputs (names, dtype, rank, finite values).
"""

import importlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.extras import require
from onnxcomp.ir.graph import InputSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def validate_feed(feed: dict, specs: list[InputSpec], source: str) -> dict:
    """Check one feed against the model inputs; cast same-kind dtypes; raise a one-line error."""
    if not isinstance(feed, dict):
        raise OnnxcompError(f"{source}: a calibration sample must be a dict of input name -> array")
    names = {s.name for s in specs}
    unknown = sorted(set(feed) - names)
    if unknown:
        raise OnnxcompError(f"{source}: unknown input name {unknown[0]!r} (model inputs: {sorted(names)})")
    checked = {}
    for spec in specs:
        if spec.name not in feed:
            raise OnnxcompError(f"{source}: missing model input {spec.name!r}")
        arr = np.asarray(feed[spec.name])
        if arr.ndim != len(spec.shape):
            raise OnnxcompError(
                f"{source}: input {spec.name!r} has rank {arr.ndim}, the model expects rank {len(spec.shape)}"
            )
        if arr.dtype.kind != spec.dtype.kind and not (arr.dtype.kind in "iu" and spec.dtype.kind in "iu"):
            raise OnnxcompError(f"{source}: input {spec.name!r} has dtype {arr.dtype}, the model expects {spec.dtype}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise OnnxcompError(f"{source}: input {spec.name!r} contains NaN or Inf")
        for got, want in zip(arr.shape, spec.shape):
            if want is not None and got != want:
                raise OnnxcompError(
                    f"{source}: input {spec.name!r} has shape {arr.shape}, the model expects {spec.shape}"
                )
        checked[spec.name] = arr.astype(spec.dtype, copy=False)
    return checked


class NpzReader:
    def __init__(self, files: list[Path], specs: list[InputSpec]):
        self.files, self.specs = files, specs

    def __iter__(self) -> Iterator[dict]:
        for path in self.files:
            try:
                with np.load(path, allow_pickle=False) as data:
                    feed = {k: data[k] for k in data.files}
            except Exception as exc:
                raise OnnxcompError(f"{path}: not a readable .npz file ({exc})") from None
            yield validate_feed(feed, self.specs, str(path))


class TextFileReader:
    """Lines of a text file, tokenized in batches (padding to the longest, truncation at max_length)."""

    def __init__(self, path: Path, specs: list[InputSpec], tokenizer, batch_size: int = 8, max_length: int = 128):
        if tokenizer is None:
            raise OnnxcompError(f"{path}: text calibration needs the model's tokenizer (pass --model-kind)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise OnnxcompError(f"{path}: calibration text is not UTF-8 (byte {exc.start}: {exc.reason})") from None
        except OSError as exc:
            raise OnnxcompError(f"{path}: cannot read calibration text ({exc.strerror})") from None
        self.lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if not self.lines:
            raise OnnxcompError(f"{path}: calibration text file has no non-empty lines")
        self.path, self.specs, self.tokenizer = path, specs, tokenizer
        self.batch_size, self.max_length = batch_size, max_length

    def __iter__(self) -> Iterator[dict]:
        names = {s.name for s in self.specs}
        for i in range(0, len(self.lines), self.batch_size):
            try:
                enc = self.tokenizer(
                    self.lines[i : i + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="np",
                )
            except Exception as exc:
                raise OnnxcompError(
                    f"{self.path} batch {i // self.batch_size}: the tokenizer failed ({_first_line(exc)})"
                ) from None
            yield validate_feed(
                {k: v for k, v in enc.items() if k in names}, self.specs, f"{self.path} batch {i // self.batch_size}"
            )


class ImageFolderReader:
    """Images resized to the single NCHW float input of the model, values scaled to [0, 1]."""

    def __init__(self, folder: Path, specs: list[InputSpec]):
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise OnnxcompError(f"{folder}: calibration folder has no images or .npz files")
        if len(specs) != 1 or len(specs[0].shape) != 4 or None in specs[0].shape[1:]:
            raise OnnxcompError(f"{folder}: image calibration needs one NCHW input with fixed C, H, W")
        self.spec = specs[0]

    def __iter__(self) -> Iterator[dict]:
        Image = require("PIL.Image", "images", "image calibration")
        _, channels, height, width = self.spec.shape
        for path in self.files:
            try:
                img = Image.open(path).convert("L" if channels == 1 else "RGB").resize((width, height))
            except Exception as exc:
                raise OnnxcompError(f"{path}: not a readable image ({exc})") from None
            arr = np.asarray(img, dtype=np.float32) / 255.0
            arr = arr[None, None] if channels == 1 else arr.transpose(2, 0, 1)[None]
            yield validate_feed({self.spec.name: arr}, [self.spec], str(path))


class CallableReader:
    def __init__(self, func: Callable[[], Iterable[dict]], specs: list[InputSpec], name: str):
        self.func, self.specs, self.name = func, specs, name

    def __iter__(self) -> Iterator[dict]:
        try:
            produced = self.func()
        except Exception as exc:  # the user's code: any failure is bad input, named
            raise OnnxcompError(f"{self.name}: raised {_first_line(exc)}") from None
        try:
            feeds = iter(produced)
        except TypeError:
            raise OnnxcompError(
                f"{self.name}: must return an iterable of feeds (dicts of input name -> array)"
            ) from None
        i = 0
        while True:
            try:
                feed = next(feeds)
            except StopIteration:
                return
            except Exception as exc:
                raise OnnxcompError(f"{self.name}: raised {_first_line(exc)} while giving sample {i}") from None
            yield validate_feed(feed, self.specs, f"{self.name} sample {i}")
            i += 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def load_callable(spec: str) -> Callable:
    """Import `module:function`; clear error when either part is missing."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise OnnxcompError(f"{spec}: cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # a syntax error or a raise at import time in the user's module
        raise OnnxcompError(f"{spec}: importing module {module_name!r} raised {_first_line(exc)}") from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise OnnxcompError(f"{spec}: module {module_name!r} has no callable {attr!r}")
    return func


def make_reader(source, specs: list[InputSpec], tokenizer=None):
    """Build the reader for a path, a `module:function` string, or a Python callable/iterable."""
    if callable(source) and not isinstance(source, str | Path):
        return CallableReader(source, specs, getattr(source, "__name__", "calibration callable"))
    if isinstance(source, list | tuple):
        return CallableReader(lambda: source, specs, "calibration list")
    if isinstance(source, dict):
        raise OnnxcompError("calibration: got one dict; pass a list of feeds ([{input name: array}, ...])")
    if isinstance(source, Iterator):  # read once per calibration step: a generator would be empty the second time
        raise OnnxcompError(
            "calibration: got a one-shot iterator; pass a list of feeds or a function that returns a fresh iterable"
        )
    if not isinstance(source, str | Path):
        raise OnnxcompError(
            f"calibration: expected a path, module:function, a list of feeds or a callable, not {type(source).__name__}"
        )
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if files:
            return NpzReader(files, specs)
        if not any(path.iterdir()):
            raise OnnxcompError(f"{path}: calibration folder is empty")
        return ImageFolderReader(path, specs)
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return NpzReader([path], specs)
        return TextFileReader(path, specs, tokenizer)
    if isinstance(source, str) and ":" in source and not path.exists():
        return CallableReader(load_callable(source), specs, source)
    raise OnnxcompError(f"{source}: calibration data not found (expected a folder, a .txt file or module:function)")
