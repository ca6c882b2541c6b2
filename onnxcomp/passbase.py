"""The base class of every onnxcomp pass and the context passes share."""

from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx_ir as ir

from .calibration.collectors import TensorStats
from .errors import OnnxcompError


@dataclass
class Context:
    """What passes share during one compression run."""

    calibration: Any = None  # a re-iterable reader of feeds, or None
    statistics: dict[str, TensorStats] = field(default_factory=dict)
    use_cache: bool = True
    pending: list["CompressionPass"] = field(default_factory=list)  # passes still to run


class CompressionPass(ir.passes.InPlacePass):
    """A graph rewrite (or analysis) with declared options, requirements and guarantees.

    Subclasses set `name`, `options` (name -> default), `requires` (e.g. "calibration") and
    implement `call(model)`. They may fill `self.details` (JSON-able) for the report, and
    override `statistics_needed(model)` to name tensors a preceding `calibrate` must observe.
    """

    name: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    requires_context: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: Context | None = None, **options: Any):
        super().__init__()
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise OnnxcompError(f"pass {self.name!r}: unknown option {unknown[0]!r} (known: {known})")
        self.context = context or Context()
        self.opts = {**self.options, **options}
        self.details: dict[str, Any] = {}
        self.validate_options()

    def validate_options(self) -> None:
        """Raise OnnxcompError for an option value out of range."""

    def statistics_needed(self, model: ir.Model) -> list[str]:
        return []
