"""Issue 14, documented commands: every ``focaldet`` command in a code block of README.md and
docs/*.md runs, on the tiny benchmark and with ``train.max_iters=1``-style overrides.

The blocks are parsed when the tests run (other people edit those files): a fenced block
(plain, ``bash``, ``sh``, ``shell`` or ``console``) contributes each line whose command is
``focaldet``, ``python -m focaldet`` or ``torchrun … -m focaldet`` (continuation lines joined,
``# comments`` and ``[optional …]`` groups dropped). Other lines (``make``, ``python
benchmarks/…``, output) are not focaldet commands and are left out. A command is either run or
matched by a rule of :data:`SKIPS`, each with its reason; an unknown upper-case placeholder fails
the test, so a new kind of documented command gets a rule or a placeholder value here.

Each document runs in its own empty folder (``configs/`` linked in), its commands in document order,
so that ``eval --weights runs/x/checkpoints/best.pt`` finds the run an earlier line trained. A
``torchrun`` line trains into a run directory of its own: the documents show it as an alternative
to the single-process line above it, not as its continuation (a run directory holds one run).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from focaldet.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^\s*```\s*([A-Za-z]*)\s*$")
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
COMMAND = re.compile(r"^(\$\s+)?((\.venv/bin/)?focaldet\s|python3?\s+-m\s+focaldet\s|torchrun\s)")

# (pattern searched in the command, reason): documented commands that cannot run here.
SKIPS = [
    (r"--nnodes=(?!1\b)", "several machines (multi-node rendezvous)"),
    (r"retinanet_r50_fpn_1x_coco\.yaml|lvis_efl_r50_2x\.yaml", "COCO / LVIS data and a GPU for days"),
    (r"--preset\s+paper-table1", "hours on a CPU (tests/analysis cover the preset's arms)"),
    (r"model\.preset=torchvision_v1", "downloads torchvision's weights (online only)"),
    (r"data make lt-stamps", "needs Debian's tuxpaint-stamps-default", "lt-stamps-missing"),
]
# Upper-case words that stand for a value the reader chooses.
PLACEHOLDERS = {"DIR": "some_dir"}
PHOTO_DIRS = ("my_photos", "photos")  # inputs that documented predict commands name


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands(path: Path) -> list[tuple[int, str]]:
    """``(line number, command)`` of every focaldet command in the fenced shell blocks of ``path``."""
    out, in_block, lang, pending, start = [], False, "", "", 0
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = FENCE.match(line)
        if m:
            in_block, lang = (not in_block, m.group(1).lower()) if not in_block else (False, "")
            continue
        if not in_block or lang not in SHELL_LANGS:
            continue
        text = line.rstrip()
        if pending:
            pending += " " + text.strip()
        elif COMMAND.match(text.strip()):
            pending, start = text.strip(), no
        else:
            continue
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        if not pending.lstrip("$ ").startswith("torchrun") or re.search(r"\s-m\s+focaldet\s", pending):
            out.append((start, pending))
        pending = ""
    return out


def with_comment_examples(commands: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Also run the ``# e.g. key=value …`` a comment suggests, appended to its command (the
    README's ``train configs/… [key=value ...]  # e.g. loss.name=equalized_focal loss.scale=8``)."""
    out = []
    for no, command in commands:
        out.append((no, command))
        m = re.search(r"#\s*e\.g\.\s*(.*)$", command)
        words = m.group(1).split() if m else []
        if words and all("=" in w for w in words):
            # an alternative to the line itself, not its continuation: a run directory of its own
            own_dir = [f"runtime.work_dir=runs/example_{no}"] if re.search(r"\strain\s", command) else []
            out.append((no, command[:m.start()] + " " + " ".join(words + own_dir)))
    return out


def to_argv(command: str) -> list[str]:
    """Tokens of ``command`` without comments, prompt and ``[optional]`` groups."""
    command = re.sub(r"^\$\s+", "", command)
    command = re.sub(r"\s\[[^\]]*\]", "", command)
    return shlex.split(command, comments=True)


def skip_reason(command: str, have_stamps: bool):
    for rule in SKIPS:
        pattern, reason = rule[0], rule[1]
        if len(rule) > 2 and have_stamps:
            continue  # a conditional rule that does not apply on this machine
        if re.search(pattern, command):
            return reason
    return None


def tiny_overrides(bench, subcommand: str) -> list[str]:
    data = [f"data.train_ann={bench.train_ann}", f"data.train_images={bench.train_images}",
            f"data.val_ann={bench.val_ann}", f"data.val_images={bench.val_images}", "data.num_workers=0",
            "runtime.threads=1"]
    if subcommand == "eval":
        return data
    return data + ["data.batch_size=2", "train.max_iters=1", "train.warmup_iters=0", "train.milestones=[]",
                   "train.eval_interval=0", "train.ckpt_interval=1", "runtime.log_interval=1"]


def shrink(argv: list[str], bench) -> list[str]:
    """The documented argv, made tiny: overrides appended (later words win), fewer seeds / images."""
    argv = [PLACEHOLDERS.get(a, a) for a in argv]
    unknown = [a for a in argv if re.fullmatch(r"[A-Z][A-Z_]{1,}", a)]
    assert not unknown, f"placeholder(s) {unknown}: add a value to PLACEHOLDERS or a rule to SKIPS"
    if argv[0] == "torchrun":  # shrink the focaldet part; a run directory of its own (module doc)
        i = argv.index("-m") + 2
        return argv[:i] + shrink(argv[i:], bench) + ["runtime.work_dir=runs/torchrun"]
    sub = argv[0]
    if sub in ("train", "eval", "compare", "demo"):
        argv = argv + tiny_overrides(bench, sub)
    if sub in ("compare", "demo"):
        argv = argv + ["--seeds", "1"] + (["--quick"] if sub == "demo" else [])
    if sub == "data":
        argv = argv + ["--train", "3", "--val", "2", "--size", "64", "--quiet", "--workers", "0"]
    return argv


def run_one(argv: list[str], sandbox: Path) -> tuple[int, str]:
    """Run ``focaldet ARGV`` (in this process) or a torchrun line (a subprocess) in ``sandbox``."""
    if argv[0] == "torchrun":
        i = argv.index("-m")
        launcher = [a for a in argv[1:i] if not a.startswith(("--rdzv", "--node_rank", "--nnodes"))]
        cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "--master_port", str(free_port()),
               "-m", "focaldet", *argv[i + 2:]]
        env = dict(os.environ, OMP_NUM_THREADS="1", FOCALDET_COMPILE="0",
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run(cmd, cwd=sandbox, capture_output=True, text=True, env=env, timeout=900)
        return proc.returncode, proc.stderr[-3000:]
    return main(argv), ""


def free_port() -> int:
    """A TCP port nobody listens on now (other jobs on this machine run torchrun too)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def normalise(argv: list[str]) -> list[str]:
    """``focaldet …`` / ``python -m focaldet …`` → the subcommand's argv; torchrun stays whole."""
    if argv[0] == "torchrun":
        return argv
    if argv[0] in ("python", "python3"):
        return argv[3:]
    return argv[1:]


@pytest.mark.slow
@pytest.mark.parametrize("doc", documents(), ids=lambda p: p.name)
def test_every_documented_command_runs(doc, tiny_benchmark, tmp_path, monkeypatch, capsys):
    from focaldet.data.benchmark import default_kind

    have_stamps = default_kind() == "lt-stamps"
    commands = with_comment_examples(documented_commands(doc))
    if not commands:
        pytest.skip(f"{doc.name} documents no focaldet command")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "configs").symlink_to(ROOT / "configs")
    for name in PHOTO_DIRS:
        (sandbox / name).mkdir()
        for p in sorted(Path(tiny_benchmark.val_images).iterdir())[:2]:
            shutil.copy(p, sandbox / name / p.name)
    monkeypatch.chdir(sandbox)
    failures, ran, skipped = [], 0, []
    for no, command in commands:
        reason = skip_reason(command, have_stamps)
        if reason:
            skipped.append(f"{doc.name}:{no}: {reason}")
            continue
        argv = shrink(normalise(to_argv(command)), tiny_benchmark)
        code, err = run_one(argv, sandbox)
        captured = capsys.readouterr()
        ran += 1
        if code != 0:
            failures.append(f"{doc.name}:{no}: `{command}` exited {code}: {(captured.err + err)[-1500:]}")
    print(f"{doc.name}: ran {ran}, skipped {len(skipped)}: " + "; ".join(skipped))
    assert not failures, "\n".join(failures)


def test_the_parser_finds_the_readme_command_lines():
    """The control for the test above: the README's command-line block is found, continuation
    lines joined, comments and optional groups dropped."""
    commands = dict(documented_commands(ROOT / "README.md"))
    texts = list(commands.values())
    assert any(t.startswith("focaldet train configs/") for t in texts)
    joined = [t for t in texts if t.startswith("focaldet compare") and "--losses" in t]
    assert joined and "modified_focal.max_weight=100" in joined[0]  # the continuation line is part of it
    argv = to_argv("focaldet data make lt-stamps --out data/x [--train 600 --val 150]  # a comment")
    assert argv == ["focaldet", "data", "make", "lt-stamps", "--out", "data/x"]


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_choosing_any_loss_by_name_works_with_every_preset(preset, capsys):
    """The README's example `focaldet train configs/lt_stamps_cpu.yaml loss.name=equalized_focal
    loss.scale=8`: the preset's parameters of another loss (its `gamma`) must not break it."""
    from focaldet.config import load_config
    from focaldet.losses import loss_names

    for name in loss_names():  # loading checks the loss: it raises on a parameter the loss does not take
        assert load_config(ROOT / "configs" / preset, [f"loss.name={name}"]).loss.name == name
    cfg = load_config(ROOT / "configs" / preset, ["loss.name=equalized_focal", "loss.scale=8"])
    assert cfg.loss.params["scale"] == 8
