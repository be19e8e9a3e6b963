"""Every bench script still runs: each in its quick mode (tiny models and sizes, no ../shared), as
`make bench` runs it but with ``--quick``, must finish and print its report.

Only the report's labels are checked, never its numbers (quick-mode numbers mean nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from browser_support import CHROMIUM

ROOT = Path(__file__).resolve().parent.parent
BROWSER = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                             reason="browser benches need Debian's chromium (make test installs it)")

# script -> labels that must each start or appear in a line of its report
REPORTS = {
    "convoy.py": [
        "cpu: ",
        "a note of ",
        "beside                         torch threads                   trace ms  x alone             inside walk ms"
        "  x alone       trace in a worker ms  x alone inside walk in a worker ms  x alone",
        "alone ",
        "1 thread building figures ",
        "2 threads building figures ",
        "2 threads of torch products ",
        "the Embeddings page's plane of ",
        "  full SVD (before) ",
        "  principal_plane (the app) ",
    ],
    "trace.py": [
        "checkpoint:",
        " tokens  positions  windows  trace s  plain s  trace/plain  trace MB",
        " tokens: trace/plain = ",
        "trace size",
        "-token time (goal <=",
        "one head's weights on demand at ",
        "recomputed attention vs the model's own (eager copy): largest difference",
        "bf16 autocast at ",
        "largest attention difference",
        "optional captures at ",
        "+everything for 'Inside the model'",
        "offline start-up decision (hub unreachable here):",
        "start-up decision with a hub that accepts but never answers:",
    ],
    "attribution.py": [
        "checkpoint:",
        "Integrated gradients, 50 steps",
        "round 1 ours fp32",
        "round 1 ours bf16",
        "round 1 captum LIG defaults",
        "speed ratio captum / ours fp32, wall:",
        "speed ratio captum / ours bf16, wall:",
        "  ours fp32 ",
        "  ours bf16 ",
        "captum LIG, internal_batch_size=10",
        "captum LIG, ibs=10, SDPA model copy",
        "ours, 16 Gauss-Legendre steps (info)",
        "ours bf16, stop early at 1 % (info)",
        "ours fp32: speed ratio captum / ours",
        "goals at ",
        "Pseudo-log-likelihood",
        " positions, exact ",
        " positions, exact, bf16",
        " positions, stride 16 (",
        " positions, stride 16, bf16",
        "Every method of the Attribution page",
        " positions, integrated-gradients ",
        " positions, captum-integrated-gradients ",
        " positions, deeplift ",
        " positions, deeplift-shap ",
        " positions, gradient-shap ",
        " positions, smoothgrad ",
        " positions, smoothgrad-x-input ",
        " positions, smoothgrad-ig ",
        " positions, occlusion ",
        " positions, shapley-sampling ",
        " positions, kernel-shap ",
        " positions, lime ",
        "Whole notes (similarity",
        " pieces, Integrated Gradients fp32",
        " pieces, Integrated Gradients bf16",
        " pieces, leave one section out fp32",
        " pieces, leave one section out bf16",
        "load average",
    ],
    "patching.py": [
        "checkpoint:",
        "cpu:",
        "pair: ",
        " scan        runs  batched s  one-per-forward s  ratio  largest |difference|  share range",
        " residual ",
        " attention ",
        " ffn ",
        " heads ",
        "all four scans: batched ",
        "identical results: largest |difference|",
        "hooks left on the model afterwards: 0",
        "load average",
    ],
    "probes.py": [
        "model:",
        "cpu:",
        "data: ",
        " layer       accuracy (± fold sd)  control (± sd)  selectivity",
        " embeddings ",
        "majority baseline",
        "time: planning ",
        "one full pass per layer instead",
        "load average",
    ],
    "finetune.py": [
        "data:",
        "model:",
        "settings:",
        "steps:",
        "mean training loss per epoch:",
        "training + evaluation time:",
        "majority baseline",
        "validation accuracy:",
        "macro-F1:",
        "confusion matrix (rows = true, columns = predicted):",
    ],
    "device.py": [
        " bf16; torch ",
        "device: ",
        "checkpoint on cpu:",
        "trace, ",
        "Integrated Gradients, ",
        "fine-tune step (batch 16",
        "load average",
    ],
    "evaluate.py": [
        "cpu: ",
        "load average (1, 5, 15 min): ",
        "checkpoint: ",
        "  ours (batch engine, local) s: ",
        "  transformers pipeline s: ",
        "ours / pipeline (median wall) = ",
        "same predicted class: ",
        "  batch engine, tokens + embeddings + zero-shot s: ",
        "  plain batched forward s: ",
        "one pass / plain forward (median wall) = ",
        " rows zero-shot through the bundled model: predictions ",
    ],
    "ui.py": [
        "model:",
        "cold start (1 fresh server,",
        "  start 1: folder listing never shown; note box",
        " tokens | Attention page MB (heads / bertviz head / model view) | draw s (first / again / layer)",
        "largest Attention-page payload",
        "after a layer switch",
    ],
    "pretrain.py": [
        "data:",
        "model:",
        "settings:",
        "cpu:",
        "held-out pseudo-perplexity before training (step 0):",
        "held-out pseudo-perplexity after ",
        "budgeted run:",
        "pseudo-perplexity before / after ",
        "tokens per second over ",
        "speed ratio ours / Trainer:",
    ],
    "tagger.py": [
        "data:",
        "model:",
        "settings:",
        "cpu:",
        "tagger:",
        "held-out:",
        "all labels (micro)",
        "entity F1, all labels: tagger ",
        "tagger's wrong spans:",
    ],
    "load.py": [
        "sessions (1 long) x",
        "page time: median",
        "kind                  count  median s  p95 s  worst s  worst/median  p95/median  per minute",
        "short page",
        "Attribution explain",
        "head scan",
        "each page's slowest began at:",
        "other pieces of work in flight, on average, during each page's slowest visit",
        "once the server has warmed up",
        "server RSS:",
        "server status afterwards:",
        "cross-talk / failures:",
        "hooks left on the model afterwards:",
        "goal [scheduler]: worst short page",
        "goal [bypassed]: worst short page",
        "goal: throughput with the scheduler",
    ],
}
IN_BROWSER = {"ui.py", "load.py"}


def run_quick(script: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, f"bench/{script}", "--quick"], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=850)


@pytest.mark.parametrize("script", [pytest.param(name, marks=[BROWSER] if name in IN_BROWSER else [])
                                    for name in REPORTS])
def test_bench_script_runs_in_quick_mode(script: str) -> None:
    finished = run_quick(script)
    assert finished.returncode == 0, f"bench/{script} --quick failed:\n{finished.stderr[-4000:]}"
    lines = finished.stdout.splitlines()
    assert lines and lines[0].startswith("quick mode:"), finished.stdout[:500]
    missing = [label for label in REPORTS[script] if not any(label in line for line in lines)]
    assert not missing, f"bench/{script} --quick did not report {missing}:\n{finished.stdout}"


def test_every_bench_script_is_checked() -> None:
    scripts = {path.name for path in (ROOT / "bench").glob("*.py")} - {"common.py"}
    assert scripts == set(REPORTS)
