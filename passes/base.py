"""The base class of every onnxcomp pass and the context passes share."""

from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx_ir as ir

from onnxcomp.calibration.requests import Request, Statistics
from onnxcomp.emit.targets import ORT_CPU, Target
from onnxcomp.errors import OnnxcompError

CALIBRATION_HINT = "pass --calib FILE (or --model-kind with built-in text; calibration= in the Python API)"


@dataclass
class Context:
    """What passes share during one compression run."""

    calibration: Any = None  # a re-iterable reader of feeds, or None
    statistics: Statistics = field(default_factory=Statistics)
    use_cache: bool = True
    precision_plan: Any = None  # an onnxcomp.precision.PrecisionPlan that overrides the presets' rule
    input_bytes: int | None = None  # the input file's size (size budgets given as a fraction of it)
    graph_bytes: int = 0  # the input file's bytes outside initializer data (nodes, names, shapes)
    size_budget: int | None = None  # bytes the written model may take (set by plan_precision, checked by compress)
    error_feeds: list | None = None  # feeds on which compress measures the final model's output error
    target: Target = ORT_CPU  # the runtime the output is for (onnxcomp.emit.targets); passes adapt to it
    reference: Any = None  # the input model (onnx.ModelProto) as compress read it, for passes that compare with it


class CompressionPass(ir.passes.InPlacePass):
    """A graph rewrite (or analysis) with declared options, requirements and guarantees.

    Subclasses set `name`, `options` (name -> default), `needs_calibration`, and implement
    `call(model)`. Requirements are checked in `requires(model)`, which onnx-ir's pass machinery
    runs before `call`; a failure is one `OnnxcompError` line. Statistics a pass needs are declared
    in `statistic_requests(model)` and collected by the pass manager before the pass runs (see
    `onnxcomp.passes.manager`). A pass may fill `self.details` (JSON-able) for the report and
    override `summary()` for the CLI's one-line account of it.
    """

    name: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    needs_calibration: ClassVar[bool] = False

    def __init__(self, context: Context | None = None, **options: Any):
        super().__init__()
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise OnnxcompError(f"pass {self.name!r}: unknown option {unknown[0]!r} (known: {known})")
        for key, value in options.items():  # types that follow from the default (others: validate_options)
            expected = _expected_type(self.options[key])
            if expected is not None and not _has_type(value, expected):
                raise OnnxcompError(f"pass {self.name!r}: {key} must be {expected}, not {value!r}")
        self.context = context or Context()
        self.opts = {**self.options, **options}
        self.details: dict[str, Any] = {}
        self.validate_options()

    def fail(self, message: str) -> OnnxcompError:
        return OnnxcompError(f"pass {self.name!r}: {message}")

    def validate_options(self) -> None:
        """Raise OnnxcompError for an option value out of range."""

    def preflight(self, model: ir.Model) -> None:
        """Raise OnnxcompError for what is wrong with this pass's options on the input model, before any pass runs."""

    def statistic_requests(self, model: ir.Model) -> list[Request]:
        """What this pass needs measured on the calibration data, on the model as it is now."""
        return []

    def requires(self, model: ir.Model) -> None:
        """Calibration data when the pass needs it, and an answer to each of its statistic requests."""
        if self.needs_calibration and self.context.calibration is None:
            raise OnnxcompError(f"pass {self.name!r} needs calibration data: {CALIBRATION_HINT}")
        self.context.statistics.require(self.statistic_requests(model), self.name)

    @classmethod
    def summary(cls, details: dict) -> str | None:
        """One line for the CLI about what a run of the pass did, from its report details (None: no line)."""
        return None

    def __call__(self, model_or_result, /) -> ir.passes.PassResult:
        try:
            return super().__call__(model_or_result)
        except ir.passes.PreconditionError as exc:  # keep our one-line error, not onnx-ir's wrapper
            if isinstance(exc.__cause__, OnnxcompError):
                raise exc.__cause__ from None
            raise


def _expected_type(default: Any) -> str | None:
    """'a list' / 'true or false' / 'an integer' when the default says so; None: not checked here."""
    if isinstance(default, list | tuple):
        return "a list"  # a string there would be read letter by letter
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    return None


def _has_type(value: Any, expected: str) -> bool:
    if expected == "a list":
        return isinstance(value, list | tuple)
    if expected == "true or false":
        return isinstance(value, bool)
    return isinstance(value, int) and not isinstance(value, bool)
