"""The failures the fine-tune program explains to the user rather than retrying."""

from moorage.api.programs import ExitCode


class FineTuneError(Exception):
    """A failure with a condition reason and a one-line message for status.

    PERMANENT by default: bad input does not get better by retrying the Job.
    """

    def __init__(self, reason: str, message: str, exit_code: ExitCode = ExitCode.PERMANENT) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code


# Condition reasons, kept together so the operator and the docs can list them.
SPEC_INVALID = "SpecInvalid"
USAGE_INVALID = "UsageInvalid"
DATASET_NOT_FOUND = "DatasetNotFound"
DATASET_INVALID = "DatasetInvalid"
DATASET_EMPTY = "DatasetEmpty"
SEQUENCE_TOO_LONG = "SequenceTooLong"
BASE_WEIGHTS_MISSING = "BaseWeightsMissing"
OUT_OF_MEMORY = "OutOfMemory"
TRAINING_FAILED = "TrainingFailed"
TRAINING_STACK_MISSING = "TrainingStackMissing"
TRAINED = "Trained"
