"""Check `vllm serve` command lines against vLLM's own argument parser.

Run with the python of a venv that has vLLM installed (tests/contract/setup_vllm.sh makes one); no GPU is
needed. stdin holds one JSON array of argv lists, each what follows `vllm serve` in a pod
(the model path first, then flags):

    echo '[["/weights/m", "--dtype", "bfloat16"]]' | python check_vllm_args.py [--json]

Each argv is parsed the way `vllm serve` parses it: the `vllm` top-level parser with the `serve`
subcommand that vLLM itself registers, then the subcommand's own `validate()`. On top of the parser, two
checks that `vllm serve` makes only later, when it loads the model:

- --quantization must name one of vLLM's quantization methods (the parser takes any string);
- no deprecated flag may be used (vLLM only logs a warning, and removes the flag in a later release).

Prints one line per argv, `OK` or `FAIL` with the reason (or, with --json, a JSON array of
{"argv", "ok", "error"}), and exits 1 if any argv failed, 2 on bad input.
This file runs under vLLM's interpreter, never imports moorage and needs only the standard library
besides vLLM. vLLM is imported late, inside functions, so that the environment above and the stdout
redirection in main() are in place first.
"""

import argparse
import contextlib
import io
import json
import logging
import os
import sys
from typing import Any

os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def _flexible_parser_class() -> type[argparse.ArgumentParser]:
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser  # noqa: PLC0415
    except ImportError:  # vLLM before 0.11 kept it in vllm.utils
        from vllm.utils import FlexibleArgumentParser  # type: ignore[no-redef,attr-defined] # noqa: PLC0415
    return FlexibleArgumentParser  # type: ignore[no-any-return]


def _ensure_platform() -> None:
    """Without a GPU (and libcuda) a CUDA build of vLLM detects no platform, and building the parser fails
    ("Failed to infer device type"). Fall back to the CPU platform, as `vllm bench` does in vLLM's own
    cli/main.py. The flags and their choices do not depend on the platform; with a GPU nothing changes."""
    from vllm import platforms  # noqa: PLC0415

    if platforms.current_platform.is_unspecified():
        from vllm.platforms.cpu import CpuPlatform  # noqa: PLC0415

        platforms.current_platform = CpuPlatform()


class ServeParser:
    """`vllm serve`'s parser, built as vllm/entrypoints/cli/main.py builds it, serve subcommand only."""

    def __init__(self) -> None:
        _ensure_platform()
        from vllm.entrypoints.cli.serve import ServeSubcommand  # noqa: PLC0415

        parser_class = _flexible_parser_class()
        self.top = parser_class(prog="vllm", description="vLLM CLI")
        subparsers = self.top.add_subparsers(required=False, dest="subparser")
        self.command = ServeSubcommand()
        self.serve = self.command.subparser_init(subparsers)

    def check(self, argv: list[str]) -> str | None:
        """None if `vllm serve <argv>` gets past argument parsing, else why not."""
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                args = self.top.parse_args(["serve", *argv])
                self.command.validate(args)
        except SystemExit:  # argparse reports errors by printing usage and exiting
            lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
            return lines[-1] if lines else "the parser exited"
        except Exception as error:  # vLLM's own checks raise ValueError, TypeError, ...
            return f"{type(error).__name__}: {error}"
        return _quantization_error(args) or self._deprecated(args)

    def _deprecated(self, args: argparse.Namespace) -> str | None:
        """Like FlexibleArgumentParser's own warning: a deprecated action whose value is not its default."""
        marked = set(getattr(self.serve, "_deprecated", ()))
        used = [
            "/".join(action.option_strings) or action.dest
            for action in self.serve._actions
            if (action in marked or getattr(action, "deprecated", False))
            and getattr(args, action.dest, action.default) != action.default
        ]
        return f"deprecated: {', '.join(sorted(used))}" if used else None


def _quantization_error(args: argparse.Namespace) -> str | None:
    method = getattr(args, "quantization", None)
    if method is None:
        return None
    from vllm.model_executor.layers import quantization  # noqa: PLC0415

    known = list(quantization.QUANTIZATION_METHODS)
    if method not in known:
        return f"--quantization {method!r} is not one of vLLM's methods: {', '.join(known)}"
    if method in getattr(quantization, "DEPRECATED_QUANTIZATION_METHODS", ()):
        return f"deprecated: --quantization {method}"
    return None


def _read_argvs(text: str) -> list[list[str]]:
    data: Any = json.loads(text)
    if not isinstance(data, list) or not all(
        isinstance(argv, list) and all(isinstance(arg, str) for arg in argv) for argv in data
    ):
        raise ValueError("stdin must be a JSON array of arrays of strings")
    return data


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--json", action="store_true", help="print a JSON array of results")
    options = cli.parse_args()
    try:
        argvs = _read_argvs(sys.stdin.read())
    except ValueError as error:
        print(f"bad input: {error}", file=sys.stderr)
        return 2
    # vLLM logs to stdout; keep stdout for the results and send everything else to stderr.
    results_out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.disable(logging.WARNING)
    parser = ServeParser()
    results = [{"argv": argv, "ok": (error := parser.check(argv)) is None, "error": error} for argv in argvs]
    if options.json:
        print(json.dumps(results, indent=1), file=results_out)
    else:
        for result in results:
            line = " ".join(result["argv"])
            verdict = "OK  " if result["ok"] else f"FAIL {line}\n    "
            print(f"{verdict} {line if result['ok'] else result['error']}", file=results_out)
    results_out.flush()
    return 0 if all(result["ok"] for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
