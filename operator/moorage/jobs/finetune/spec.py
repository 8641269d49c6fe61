"""Reads the spec.fineTune block the operator hands the program as a file."""

from pathlib import Path

import yaml
from pydantic import ValidationError

from moorage.api.finetune import FineTune
from moorage.jobs.finetune.errors import SPEC_INVALID, FineTuneError


def load_spec(path: Path) -> FineTune:
    """Parses YAML or JSON (JSON is YAML) holding exactly the CRD's fineTune block."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise FineTuneError(SPEC_INVALID, f"cannot read the spec file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise FineTuneError(
            SPEC_INVALID, f"the spec file {path} is not YAML or JSON: {_one_line(exc)}"
        ) from exc
    try:
        return FineTune.model_validate(raw)
    except ValidationError as exc:
        raise FineTuneError(SPEC_INVALID, describe_validation_error(exc)) from exc


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem as `fineTune.training.batchSize: <why>`, plus a count of the others."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(["fineTune", *(str(part) for part in first["loc"])])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
