"""`moorage pull` against the fake hub: whole pulls, resumes, corruption, stalls, refusals, cache hits."""

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hub_support import Puller, files_under, marker

from moorage.api.programs import ExitCode
from moorage.devcluster import tinymodel
from moorage.devcluster.fakehub import DEMO_TOKEN, TINY_DATASET, TINY_GATED, TINY_MODEL, FakeHub
from moorage.hub import snapshot
from moorage.jobs import pull

BIG = tinymodel.safetensors_bytes({"w": ("U8", (2**20,), bytes(range(256)) * 4096)})  # 1 MiB and a header
BIG_REPO = "org/big"


def snapshot_path(dest: Path, sha: str, repo: str = TINY_MODEL, kind: str = "models") -> Path:
    return dest / kind / repo / sha


def add_big(hub: FakeHub) -> str:
    return hub.add_repo(BIG_REPO, {"config.json": b"{}", "model.safetensors": BIG})


def test_full_pull(hub: FakeHub, run_pull: Puller) -> None:
    result = run_pull(f"hf://{TINY_MODEL}", revision="v1.0")
    assert result.code == ExitCode.OK, result.output
    sha = str(result.report.details["sha"])
    directory = snapshot_path(run_pull.dest, sha)
    expected = {k: v for k, v in tinymodel.model_files().items() if k != "README.md"}
    assert files_under(directory) == expected
    assert not list(directory.rglob("*.part"))
    manifest = marker(directory)
    assert manifest["sha"] == sha and manifest["total"] == sum(map(len, expected.values()))
    listed = manifest["files"]
    assert isinstance(listed, list)
    assert {f["path"]: f["sha256"] for f in listed}["model.safetensors"] == (
        hashlib.sha256(expected["model.safetensors"]).hexdigest()
    )
    assert result.report.ok and result.report.reason == "Pulled"
    details = result.report.details
    assert details["files"] == 6 and details["bytes"] == details["transferred"] == manifest["total"]
    assert isinstance(details["seconds"], float)
    # Resolution reads config.json once more.
    assert hub.bytes_sent() - len(expected["config.json"]) == manifest["total"]


def test_second_pull_of_a_sha_is_instant_and_offline(hub: FakeHub, run_pull: Puller) -> None:
    sha = run_pull(f"hf://{TINY_MODEL}").report.details["sha"]
    hub.reset_log()
    started = time.monotonic()
    result = run_pull(f"hf://{TINY_MODEL}", revision=str(sha))
    assert time.monotonic() - started < 0.5
    assert result.code == ExitCode.OK and result.report.details["cached"] is True
    assert result.report.details["transferred"] == 0
    assert hub.requests == []


def test_second_pull_as_a_process_is_under_a_second(hub: FakeHub, run_pull: Puller) -> None:
    sha = str(run_pull(f"hf://{TINY_MODEL}").report.details["sha"])
    hub.stop()  # no hub at all: the marker must be enough
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "moorage.jobs.pull",
        f"hf://{TINY_MODEL}",
        "--revision",
        sha,
        "--dest",
        str(run_pull.dest),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert elapsed < 1.0, elapsed
    assert "already complete" in done.stdout


def test_second_pull_of_a_branch_moves_no_file(hub: FakeHub, run_pull: Puller) -> None:
    run_pull(f"hf://{TINY_MODEL}")
    hub.reset_log()
    result = run_pull(f"hf://{TINY_MODEL}")
    assert result.code == ExitCode.OK and result.report.details["transferred"] == 0
    assert hub.bytes_sent("model.safetensors") == 0
    assert [r.path.rsplit("/", 1)[-1] for r in hub.downloads()] == ["config.json"]  # resolution only


def test_dataset_pull(hub: FakeHub, run_pull: Puller) -> None:
    result = run_pull(f"hf://datasets/{TINY_DATASET}")
    assert result.code == ExitCode.OK, result.output
    directory = snapshot_path(run_pull.dest, str(result.report.details["sha"]), TINY_DATASET, "datasets")
    assert files_under(directory) == tinymodel.chat_dataset_files()


def test_a_cut_connection_is_resumed_with_a_range(hub: FakeHub, run_pull: Puller) -> None:
    add_big(hub)
    hub.cut("model.safetensors", after_bytes=300_000)
    result = run_pull(f"hf://{BIG_REPO}")
    assert result.code == ExitCode.OK, result.output
    gets = [r for r in hub.downloads() if r.path.endswith("model.safetensors") and r.status in (200, 206)]
    assert [r.range for r in gets] == [None, f"bytes=300000-{len(BIG) - 1}"]
    assert hub.bytes_sent("model.safetensors") == len(BIG)
    assert files_under(snapshot_path(run_pull.dest, str(result.report.details["sha"]), BIG_REPO)) == {
        "config.json": b"{}",
        "model.safetensors": BIG,
    }


def test_a_killed_pull_resumes_where_it_stopped(hub: FakeHub, run_pull: Puller) -> None:
    sha = add_big(hub)
    hub.stall("model.safetensors", after_bytes=400_000, seconds=30)
    path = snapshot_path(run_pull.dest, sha, BIG_REPO) / "model.safetensors"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moorage.jobs.pull",
            f"hf://{BIG_REPO}",
            "--dest",
            str(run_pull.dest),
            "--stall-timeout",
            "30",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30  # a busy machine starts Python slowly; a checkpoint comes every 2 s
        while snapshot.read_state(path, len(BIG)) != [(0, 400_000)] and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert snapshot.read_state(path, len(BIG)) == [(0, 400_000)], "the pull never got to the stall"
    assert snapshot.part_path(path).read_bytes()[:400_000] == BIG[:400_000]
    hub.clear_faults()
    hub.reset_log()

    result = run_pull(f"hf://{BIG_REPO}")
    assert result.code == ExitCode.OK, result.output
    assert [r.range for r in hub.downloads() if r.path.endswith("model.safetensors") and r.status == 206] == [
        f"bytes=400000-{len(BIG) - 1}"
    ]
    assert hub.bytes_sent("model.safetensors") == len(BIG) - 400_000
    assert result.report.details["transferred"] == len(BIG) - 400_000  # config.json was in place already
    assert path.read_bytes() == BIG
    assert not snapshot.state_path(path).exists()


def test_a_stall_is_detected_and_retried(hub: FakeHub, run_pull: Puller) -> None:
    add_big(hub)
    hub.stall("model.safetensors", after_bytes=100_000, seconds=20)
    started = time.monotonic()
    result = run_pull(f"hf://{BIG_REPO}", "--stall-timeout", "0.3")
    assert result.code == ExitCode.OK, result.output
    assert time.monotonic() - started < 5
    assert "stalled" in result.output
    # The stalled request is still hanging in the hub (it logs a request when it ends): only the resume shows.
    resumed = [r for r in hub.downloads() if r.path.endswith("model.safetensors") and r.status == 206]
    assert [(r.range, r.sent) for r in resumed] == [(f"bytes=100000-{len(BIG) - 1}", len(BIG) - 100_000)]


def test_stalls_every_time_give_a_retryable_failure(hub: FakeHub, run_pull: Puller) -> None:
    add_big(hub)
    hub.stall("model.safetensors", after_bytes=10, seconds=20, times=None)
    result = run_pull(f"hf://{BIG_REPO}", "--stall-timeout", "0.2")
    assert result.code == ExitCode.RETRYABLE
    assert result.report.reason == "DownloadFailed" and "stalled" in result.report.message
    directory = snapshot_path(run_pull.dest, hub.repos[("model", BIG_REPO)].refs["main"], BIG_REPO)
    assert not (directory / ".moorage-complete.json").exists()
    assert (directory / "model.safetensors.part").exists()  # kept for the next try to resume


def test_corruption_once_is_retried(hub: FakeHub, run_pull: Puller) -> None:
    add_big(hub)
    hub.corrupt("model.safetensors", times=1)
    result = run_pull(f"hf://{BIG_REPO}")
    assert result.code == ExitCode.OK, result.output
    assert hub.bytes_sent("model.safetensors") == 2 * len(BIG)


def test_persistent_corruption_is_permanent_and_nothing_is_kept(hub: FakeHub, run_pull: Puller) -> None:
    sha = add_big(hub)
    hub.corrupt("model.safetensors", times=None)
    result = run_pull(f"hf://{BIG_REPO}")
    assert result.code == ExitCode.PERMANENT
    assert result.report.reason == "ChecksumMismatch"
    assert "model.safetensors" in result.report.message
    directory = snapshot_path(run_pull.dest, sha, BIG_REPO)
    assert not (directory / "model.safetensors").exists()
    assert not (directory / "model.safetensors.part").exists()
    assert not (directory / ".moorage-complete.json").exists()
    assert len([r for r in hub.downloads() if r.path.endswith("model.safetensors") and r.sent]) == 2


def test_gated_without_token(hub: FakeHub, run_pull: Puller) -> None:
    result = run_pull(f"hf://{TINY_GATED}")
    assert result.code == ExitCode.PERMANENT
    assert result.report.reason == "AccessDenied"
    assert "spec.source.tokenSecretRef" in result.report.message


def test_the_token_is_never_printed(hub: FakeHub, run_pull: Puller, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "hf_wrongButSecret1234567890"
    monkeypatch.setenv("HF_TOKEN", secret)
    result = run_pull(f"hf://{TINY_GATED}")
    assert result.code == ExitCode.PERMANENT and result.report.reason == "AccessDenied"
    assert secret not in result.output
    assert secret not in run_pull.log.read_text()


def test_gated_with_token(hub: FakeHub, run_pull: Puller, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", DEMO_TOKEN)
    result = run_pull(f"hf://{TINY_GATED}")
    assert result.code == ExitCode.OK, result.output
    assert DEMO_TOKEN not in result.output
    assert all(r.authorized for r in hub.downloads() if "/resolve/" in r.path)


def test_not_enough_disk(hub: FakeHub, run_pull: Puller, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "free_bytes", lambda directory: 1000)
    hub.reset_log()
    result = run_pull(f"hf://{TINY_MODEL}")
    assert result.code == ExitCode.PERMANENT
    assert result.report.reason == "InsufficientDisk" and "spec.cache" in result.report.message
    assert hub.bytes_sent("model.safetensors") == 0


def test_disk_check_counts_only_what_is_missing(
    hub: FakeHub, run_pull: Puller, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = add_big(hub)
    hub.cut("model.safetensors", after_bytes=len(BIG) - 1000, times=1)
    assert run_pull(f"hf://{BIG_REPO}", "--retries", "1").code == ExitCode.RETRYABLE
    monkeypatch.setattr(snapshot, "free_bytes", lambda directory: 1002)
    result = run_pull(f"hf://{BIG_REPO}", revision=sha)
    assert result.code == ExitCode.OK, result.output


def test_missing_repo_and_revision(hub: FakeHub, run_pull: Puller) -> None:
    assert run_pull("hf://org/missing").report.reason == "RepoNotFound"
    result = run_pull(f"hf://{TINY_MODEL}", revision="nope")
    assert (result.code, result.report.reason) == (ExitCode.PERMANENT, "RevisionNotFound")


def test_hub_down_is_retryable(hub: FakeHub, run_pull: Puller) -> None:
    hub.fail(503, times=None)
    result = run_pull(f"hf://{TINY_MODEL}")
    assert (result.code, result.report.reason) == (ExitCode.RETRYABLE, "HubUnreachable")


def test_progress_lines(hub: FakeHub, run_pull: Puller) -> None:
    add_big(hub)
    result = run_pull(f"hf://{BIG_REPO}", "--progress-seconds", "0")
    lines = [line for line in result.output.splitlines() if line.startswith("pull: ") and "/s," in line]
    assert len(lines) >= 2
    assert lines[-1].startswith("pull: 1.0 MiB / 1.0 MiB (100.0%)") and lines[-1].endswith("2/2 files")


def test_a_different_selection_of_the_same_commit_is_completed(hub: FakeHub, run_pull: Puller) -> None:
    first = run_pull(f"hf://{TINY_MODEL}", "--include", "*.json")
    directory = snapshot_path(run_pull.dest, str(first.report.details["sha"]))
    assert "model.safetensors" not in files_under(directory)
    hub.reset_log()
    second = run_pull(f"hf://{TINY_MODEL}")
    assert second.code == ExitCode.OK
    assert "model.safetensors" in files_under(directory)
    assert marker(directory)["include"] is None
    assert second.report.details["transferred"] == len(tinymodel.model_files()["model.safetensors"])


def test_main_parses_the_documented_command_line() -> None:
    args = pull.parse_args(
        [
            "hf://a/b",
            "--revision",
            "v1",
            "--dest",
            "/weights",
            "--include",
            "*.json",
            "--include",
            "*.safetensors",
        ]
    )
    assert (args.source, args.revision, str(args.dest), args.include) == (
        "hf://a/b",
        "v1",
        "/weights",
        ["*.json", "*.safetensors"],
    )


RANGED = ["--min-range-mib", "0.25"]
"""Ranges of 256 KiB: BIG comes in five of them, fetched at once."""
RANGE = 256 * 1024


def big_gets(hub: FakeHub) -> list[tuple[str | None, int]]:
    return sorted(
        (r.range, r.sent)
        for r in hub.downloads()
        if r.path.endswith("model.safetensors") and r.status in (200, 206)
    )


def test_a_big_file_comes_in_ranges_at_once_from_where_the_hub_redirects(
    hub: FakeHub, run_pull: Puller
) -> None:
    sha = add_big(hub)
    result = run_pull(f"hf://{BIG_REPO}", *RANGED)
    assert result.code == ExitCode.OK, result.output
    starts = range(0, len(BIG), RANGE)
    assert big_gets(hub) == sorted(
        (f"bytes={s}-{min(s + RANGE, len(BIG)) - 1}", min(RANGE, len(BIG) - s)) for s in starts
    )
    downloads = [r for r in hub.downloads() if r.path.endswith("model.safetensors")]
    # The hub is asked once; every range goes to the CDN URL it redirected to.
    assert [r.status for r in downloads if "/resolve/" in r.path] == [302]
    assert all(r.path.startswith("/cdn/") for r in downloads if r.status == 206)
    directory = snapshot_path(run_pull.dest, sha, BIG_REPO)
    assert (directory / "model.safetensors").read_bytes() == BIG
    assert not snapshot.state_path(directory / "model.safetensors").exists()


def test_a_failed_range_is_all_a_later_pull_fetches(hub: FakeHub, run_pull: Puller) -> None:
    sha = add_big(hub)
    # Only the first range stalls (its request is the first); the others land whole meanwhile.
    hub.stall("model.safetensors", after_bytes=100_000, seconds=20, times=1)
    failed = run_pull(f"hf://{BIG_REPO}", *RANGED, "--retries", "1", "--stall-timeout", "1")
    assert (failed.code, failed.report.reason) == (ExitCode.RETRYABLE, "DownloadFailed")
    path = snapshot_path(run_pull.dest, sha, BIG_REPO) / "model.safetensors"
    assert snapshot.read_state(path, len(BIG)) == [(0, 100_000), (RANGE, len(BIG))]
    hub.reset_log()

    result = run_pull(f"hf://{BIG_REPO}", *RANGED)
    assert result.code == ExitCode.OK, result.output
    assert big_gets(hub) == [(f"bytes=100000-{RANGE - 1}", RANGE - 100_000)]
    assert result.report.details["transferred"] == RANGE - 100_000
    assert path.read_bytes() == BIG


def test_corruption_in_one_range_fetches_the_file_again(hub: FakeHub, run_pull: Puller) -> None:
    add_big(hub)
    hub.corrupt("model.safetensors", times=1)  # the first range's first byte
    result = run_pull(f"hf://{BIG_REPO}", *RANGED)
    assert result.code == ExitCode.OK, result.output
    assert "checksum mismatch" in result.output
    assert hub.bytes_sent("model.safetensors") == 2 * len(BIG)


def test_persistent_corruption_in_ranges_is_permanent_and_nothing_is_kept(
    hub: FakeHub, run_pull: Puller
) -> None:
    sha = add_big(hub)
    hub.corrupt("model.safetensors", times=None)
    result = run_pull(f"hf://{BIG_REPO}", *RANGED)
    assert (result.code, result.report.reason) == (ExitCode.PERMANENT, "ChecksumMismatch")
    directory = snapshot_path(run_pull.dest, sha, BIG_REPO)
    assert sorted(p.name for p in directory.iterdir()) == ["config.json"]
    assert hub.bytes_sent("model.safetensors") == 2 * len(BIG)


def test_a_refused_cdn_url_is_asked_for_again_at_the_hub(hub: FakeHub, run_pull: Puller) -> None:
    add_big(hub)
    hub.fail(403, path="model.safetensors", times=1, api=False)  # an expired signed URL
    result = run_pull(f"hf://{BIG_REPO}")
    assert result.code == ExitCode.OK, result.output
    resolves = [r.status for r in hub.downloads() if "/resolve/" in r.path and "model" in r.path]
    assert resolves == [302, 302]


def test_many_small_files_go_at_once(hub: FakeHub, run_pull: Puller) -> None:
    files = {f"part-{i:02d}.json": bytes([i]) * 1000 for i in range(40)}
    hub.add_repo("org/many", files, repo_type="dataset")
    hub.stall("part-00.json", after_bytes=10, seconds=2.0)  # then cut: a slow file holds up no other
    result = run_pull("hf://datasets/org/many", "--stall-timeout", "5")
    assert result.code == ExitCode.OK, result.output
    logged = [r.path.rsplit("/", 1)[-1] for r in hub.downloads() if r.path.endswith(".json")]
    assert set(logged[:39]) == set(files) - {"part-00.json"}  # the stalled request ends last
