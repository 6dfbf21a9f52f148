"""The command line as a new user meets it: no guessing at half-typed flags, a help that
lists each flag once, outputs that may be folders, files that are not files, and what a
run says at its start and its end."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from coral_mfg.commands.cli import main
from coral_mfg.config.flags import run_parser
from coral_mfg.config.settings import FLAG_HOME, flag_extra
from tests.conftest import ROOT, free_port, wait_for

APP = [sys.executable, "-m", "coral_mfg"]


def _cli(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*APP, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, env=os.environ.copy())


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    """Refused with status 2 in one error line, the last, and no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 3, lines
    assert "error: " in lines[-1], lines
    return lines[-1]


# --- flags are never guessed ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "suggested"),
    [(["--headles"], "--headless"), (["--worker_thresh", "0.4"], "--worker_threshold"),
     (["--max-frame", "3"], "--max-frames"), (["--no-realtim"], "--no-realtime")],
)
def test_an_abbreviated_flag_is_refused_with_the_full_one_suggested(
    argv: list[str], suggested: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        run_parser().parse_args(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"unrecognized arguments: {argv[0]}" in err
    assert f"did you mean {suggested}?" in err


@pytest.mark.parametrize(
    ("command", "needed"),
    [("doctor", []), ("report", ["--history", "h.sqlite"]), ("bench", []),
     ("train-classifier", ["crops"]), ("fetch-assets", [])],
)
def test_sub_commands_take_no_abbreviations_either(
    command: str, needed: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([command, *needed, "--hel"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --hel (did you mean --help?)" in capsys.readouterr().err


def test_an_unknown_sub_command_suggests_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctr"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("coral-mfg: error: unknown sub-command 'doctr' (did you mean "
                           "'doctor'?")
    assert main(["frobnicate"]) == 2
    line = capsys.readouterr().err.strip()
    assert "unknown sub-command 'frobnicate'" in line and "did you mean" not in line
    assert "fetch-assets" in line


# --- the help ---------------------------------------------------------------------------------


def test_help_lists_each_flag_once_grouped_with_examples_at_the_end() -> None:
    text = run_parser().format_help()
    listed = re.findall(r"^  (--\S+)", text, flags=re.MULTILINE)
    assert len(listed) == len(set(listed)), "a flag listed twice"
    names = {re.sub(r"^--(\[no-\])?", "", f) for f in listed}
    flags = {k for k in FLAG_HOME if flag_extra(k).get("kind", "value") != "none"}
    assert flags <= names
    assert "--worker-threshold" not in text and "--cpu_workers" not in text  # spellings
    assert "--[no-]realtime" in text
    for group in ("models and devices:", "inputs:", "output:", "window:", "log:"):
        assert f"\n{group}\n" in text
    assert text.rstrip().rsplit("\n\n", 1)[1].startswith("examples:")
    assert "coral-mfg doctor" in text.rsplit("examples:", 1)[1]
    # compact: under 2.75 lines a flag, examples and key help included (it was 272 lines
    # for 76 flags, each listed twice)
    assert len(text.splitlines()) < 2.75 * len(listed)


def test_dashed_spellings_and_aliases_still_work() -> None:
    args = run_parser().parse_args(["--worker-threshold", "0.4", "--cpu_workers", "1",
                                    "--no-snapshot-keepout"])
    assert args.worker_threshold == 0.4 and args.cpu_processes == 1
    assert args.snapshot_keepout is False


# --- outputs that are folders, inputs that are not files ------------------------------------


@pytest.mark.parametrize("form", ["existing", "slash"])
def test_output_naming_a_folder_records_a_new_file_in_it(tmp_path: Path, form: str) -> None:
    folder = tmp_path / "out"
    if form == "existing":
        folder.mkdir()
    given = str(folder) + ("/" if form == "slash" else "")
    doctor = _cli("doctor", "--output", given)
    assert re.search(rf"\[ok \] output coral-mfg-\d{{8}}-\d{{6}}\.mp4: {folder} writable",
                     doctor.stdout), doctor.stdout
    run = _cli("--headless", "--device", "cpu", "--no-realtime", "--max_frames", "3",
               "--output", given)
    assert run.returncode == 0, run.stderr
    (made,) = folder.iterdir()
    assert re.fullmatch(r"coral-mfg-\d{8}-\d{6}\.mp4", made.name)
    assert made.stat().st_size > 0
    assert not (tmp_path / "out.mp4").exists()


def test_output_folder_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "rec").mkdir()
    cfg = tmp_path / "site" / "station.toml"
    cfg.write_text('output = "rec"\n')
    from coral_mfg.config.flags import resolve_settings

    settings = resolve_settings(run_parser().parse_args(["--config", str(cfg)]))
    assert settings.output.output is not None
    assert settings.output.output.parent == tmp_path / "site" / "rec"


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_doctor_and_the_run_refuse_an_output_file_that_is_not_one(
    tmp_path: Path, kind: str
) -> None:
    target = tmp_path / "events.jsonl"
    if kind == "folder":
        target.mkdir()
        said = f"--events {target} is a folder: pass a file in it, like {target}/events.jsonl"
    else:
        os.mkfifo(target)
        said = f"--events {target} is a named pipe (FIFO): the run would block"
    run = _one_error(_cli("--headless", "--device", "cpu", "--events", str(target)))
    assert said in run
    doctor = _cli("doctor", "--events", str(target))
    assert doctor.returncode == 1
    assert f"[ERR] output events.jsonl: {said}" in doctor.stdout


@pytest.mark.parametrize(
    ("flag", "what"),
    [("--detection_model", "model file"), ("--classifier_labels", "labels file"),
     ("--keepout_points_path", "keep-out points file"), ("--config", "config file"),
     ("--worker_safety_input", "")],
)
@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_folder_or_fifo_where_a_file_is_read_is_named_for_what_it_is(
    tmp_path: Path, flag: str, what: str, kind: str
) -> None:
    thing = tmp_path / "thing"
    if kind == "folder":
        thing.mkdir()
    else:
        os.mkfifo(thing)  # nothing ever writes to it: opening it would wait for ever
    line = _one_error(_cli("--headless", "--device", "cpu", flag, str(thing), timeout=120))
    if kind == "folder":
        assert f"{thing} is a folder, not a" in line
    else:
        assert f"{thing} is a named pipe (FIFO)" in line
    assert line.startswith(f"coral-mfg: error: {what}".rstrip())
    assert "not found" not in line and "pass a" in line


# --- refused before the models load ----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--headless", "--http", "0.0.0.0:PORT"], {}, "is reachable from other machines: set "
         "a token"),
        (["--headless", "--http", "127.0.0.1:TAKEN"], {}, "cannot listen on 127.0.0.1:TAKEN"),
        (["--headless", "--http", "127.0.0.1:PORT"],
         {"CORAL_MFG_HTTP_TOKEN": "same", "CORAL_MFG_HTTP_ADMIN_TOKEN": "same"},
         "give admins a token of their own"),
        (["--max_frames", "3"], {"DISPLAY": ""}, "no display to open a window on"),
    ],
    ids=["http-without-token", "http-port-taken", "one-token-for-both", "no-display"],
)
def test_what_would_stop_the_run_later_is_refused_before_the_models_load(
        argv: list[str], env: dict[str, str], message: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        args = [a.replace("TAKEN", port).replace("PORT", str(free_port())) for a in argv]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CORAL_MFG_HTTP")}
        result = subprocess.run([*APP, *args], cwd=ROOT, capture_output=True, text=True,
                                timeout=300, check=False, env={**clean, **env})
    line = _one_error(result)
    assert message.replace("TAKEN", port) in line
    assert "detector:" not in result.stderr  # nothing was loaded


# --- what a run says at its start -------------------------------------------------------------


def _home_without_mobiledet(tmp_path: Path) -> Path:
    """An application home with the fallback detector only (as when MobileDet's source
    could not be reached)."""
    home = tmp_path / "home"
    for sub in ("models", "videos", "images", "configs"):
        (home / sub).mkdir(parents=True)
        for p in (ROOT / sub).iterdir():
            if "mobiledet" not in p.name:
                (home / sub / p.name).symlink_to(p.resolve())
    return home


def test_a_detector_not_installed_is_one_start_up_line(tmp_path: Path) -> None:
    home = _home_without_mobiledet(tmp_path)
    env = {**os.environ, "CORAL_MFG_HOME": str(home)}
    run = subprocess.run([*APP, "--headless", "--device", "cpu", "--no-realtime",
                          "--max_frames", "2"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, check=False, env=env)
    assert run.returncode == 0, run.stderr
    said = [line for line in run.stderr.splitlines() if "MobileDet" in line]
    assert len(said) == 1, said
    assert "SSDLite MobileDet not installed: using SSD MobileNet v1" in said[0]
    for noise in ("MISSING", "unreachable", "first available"):
        assert noise not in run.stderr
    fetch = subprocess.run([*APP, "fetch-assets", "--offline", "--from", str(tmp_path)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           check=False, env=env)
    assert fetch.returncode == 0, fetch.stderr
    assert "MISSING" not in fetch.stdout
    assert [line for line in fetch.stdout.splitlines() if "MobileDet" in line] == [
        "note     SSDLite MobileDet not installed: using SSD MobileNet v1 (optional: "
        "fetch-assets gets it once its source can be reached)"]


# --- however a run ends -----------------------------------------------------------------------


def _session_alive(sid: int) -> bool:
    """Whether a process of session ``sid`` (the run, its inference processes, Python's
    resource tracker) still runs."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            return True
    return False


@pytest.mark.parametrize("interrupts", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_no_shared_memory_warning_on_ctrl_c(tmp_path: Path, interrupts: int) -> None:
    """Ctrl-C as a terminal sends it: to the whole process group, the second while the first
    is still stopping the run."""
    log = tmp_path / "run.log"
    with log.open("w") as err:
        proc = subprocess.Popen([*APP, "--headless", "--device", "cpu", "--loop"], cwd=ROOT,
                                stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "camera visual_inspection" in log.read_text(), "the run to start",
                 timeout=180)
        os.killpg(proc.pid, signal.SIGINT)
        if interrupts == 2:
            wait_for(lambda: "SIGINT: stopping" in log.read_text(), "the first to be seen")
            os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: not _session_alive(proc.pid), "every process of the run to end",
             timeout=120)
    text = log.read_text()
    assert code in (0, 130), text
    for warning in ("resource_tracker", "leaked", "Traceback"):
        assert warning not in text


def test_a_signal_during_the_start_stops_the_run_even_when_the_shell_ignored_it(
        tmp_path: Path) -> None:
    """A non-interactive shell starts background jobs with SIGINT ignored, and a process
    keeps that until it sets a handler: the run sets its own before it logs anything, so
    a Ctrl-C (or SIGTERM) at any point of a long start is seen and stops the run as soon
    as it stands, with its summary."""
    log = tmp_path / "run.log"
    command = shlex.join([*APP, "--headless", "--device", "cpu", "--loop"])
    with log.open("w") as err:
        proc = subprocess.Popen(["sh", "-c", f"trap '' INT; exec {command}"], cwd=ROOT,
                                stdout=err, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "coral-mfg 0.1" in log.read_text(), "the first line of the run",
                 timeout=180)
        proc.send_signal(signal.SIGINT)  # the models are still loading
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 0, text
    assert "SIGINT: stopping" in text and "summary: {" in text
    assert "Traceback" not in text


def test_a_run_ends_with_a_short_summary_in_words(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    run = _cli("--headless", "--device", "cpu", "--no-realtime", "--max_frames", "3",
               "--events", str(events), "--output", f"{tmp_path}/rec/")
    assert run.returncode == 0, run.stderr
    tail = [x for x in run.stderr.splitlines() if x.startswith("coral-mfg: ")]
    assert tail[0] == "coral-mfg: processed 6 frames (worker_safety 3, visual_inspection 3)"
    assert tail[1].startswith("coral-mfg: keep-out entries 0; inspected ")
    (recording,) = (tmp_path / "rec").iterdir()
    assert f"recording {recording}" in tail[2] and f"events {events} (" in tail[2]
    assert any("summary: {" in x for x in run.stderr.splitlines())  # the JSON line stays


def test_every_sub_command_has_working_help() -> None:
    from coral_mfg.commands.cli import COMMANDS

    for name in COMMANDS:
        run = _cli(name, "--help")
        assert run.returncode == 0 and "usage:" in run.stdout, (name, run.stderr[-400:])
        assert "Traceback" not in run.stderr, name
