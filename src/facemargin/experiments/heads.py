"""Benchmark of the margin heads: fused vs plain vs the bare GEMM path vs pytorch-metric-learning.

For every size ``B×D×C`` (optionally ``@chunk`` for the fused path), every method does one
forward + backward of the classification head (gradients to the embeddings and to the class
weights, as in training). Methods:

* ``bare``: ``F.cross_entropy(F.linear(x, W), y)``, the floor every head is compared with;
  ``bare:K=3`` the same over ``3·C`` rows, the floor of a head with 3 rows per class (sub-centers);
* ``fused:<head>``: the head exactly as ``losses.build(head, ...)`` gives it, without an engine
  argument (the fused engine; chunked when the size says so);
* ``plain:<head>``: the head with the reference ``engine="plain"``;
* ``pml:<head>``: pytorch-metric-learning's equivalent loss with matching hyper-parameters
  (ArcFaceLoss, CosFaceLoss, SphereFaceLoss, LargeMarginSoftmaxLoss, NormalizedSoftmaxLoss), when
  the package is installed.

Times are taken in one process, interleaved (round-robin over the methods, every repetition),
all methods sharing one weight tensor; the report gives the minimum over the repetitions (what
the step costs when nothing else takes the cores; medians are kept in the JSON) and its ratios to
the bare path with the head's number of rows and to the pml equivalent. The load average of the
machine before and after the timing is recorded beside them. Peak memory is measured for every method in its own child process: on CPU
the resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` after the
inputs are allocated; ``ru_maxrss`` where that is unavailable) minus the resident set before the
step; on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before the step. So the
memory column is what one training step of the head costs on top of its inputs (``x``, ``y``,
``W``), gradient of ``W`` included.

Used by ``facemargin bench-heads`` and ``benchmarks/heads.py`` (:mod:`.heads_cli` reads their options
and calls :func:`run_sizes`).
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .. import losses
from ..io import write_json
from .head_sizes import DEFAULT_SIZES, QUICK_SIZES  # noqa: F401  (also importable from here)
# the size the targets refer to: every default-built margin head within 10 % of the bare GEMM path's
# time and memory (the bare path with as many rows), and well ahead of pytorch-metric-learning
TARGET_SIZE = "256x512x100000"
TARGETS = {"time_vs_bare": 1.10, "time_vs_pml": 0.65, "memory_vs_bare": 1.10}
# chunked sizes (1M classes): the recomputed blocks cost time, the full B×C logits they avoid save
# step memory (the peak also holds W and its gradient, the same in both paths, so it is reported only)
CHUNKED_TARGETS = {"time_vs_bare": 1.35, "memory_vs_bare": 0.7}


@dataclass(frozen=True)
class Size:
    """One benchmark case: batch ``B``, width ``D``, classes ``C``, fused ``chunk`` (None: whole)."""

    B: int
    D: int
    C: int
    chunk: Optional[int] = None

    @property
    def key(self) -> str:
        s = f"{self.B}x{self.D}x{self.C}"
        return s + (f"@{self.chunk}" if self.chunk else "")


_SIZE_RE = re.compile(r"^(?:(\d+)x(\d+)x)?(\d+)(?:@(\d+))?$")


def parse_size(text: str, batch: int = 256, dim: int = 512) -> Size:
    """``"C"``, ``"BxDxC"``, either with ``"@CHUNK"``: e.g. ``"256x512x1000000@65536"``."""
    m = _SIZE_RE.match(str(text).strip().replace("_", "").lower())
    if not m:
        raise ValueError(f"bad size {text!r}: expected C, BxDxC or either followed by @CHUNK (e.g. 256x512x100000)")
    B, D, C, chunk = m.groups()
    size = Size(int(B) if B else batch, int(D) if D else dim, int(C), int(chunk) if chunk else None)
    if min(size.B, size.D, size.C) < 1 or (size.chunk is not None and size.chunk < 1):
        raise ValueError(f"bad size {text!r}: B, D, C and the chunk must be positive")
    return size


# -- the methods ---------------------------------------------------------------------------------

def head_names() -> List[str]:
    """Every classification head of :mod:`facemargin.losses` (margin heads and their relatives)."""
    return [n for n in losses.available() if losses.is_head(n)]


def _pml_factories() -> Dict[str, Callable]:
    """pytorch-metric-learning's equivalent of each head, with matching hyper-parameters."""
    try:
        from pytorch_metric_learning import losses as pml
    except ImportError:  # the comparison peer is an optional (dev) dependency
        return {}
    sphere = lambda C, D: pml.SphereFaceLoss(num_classes=C, embedding_size=D, margin=4, scale=1)  # noqa: E731
    return {
        "arcface": lambda C, D: pml.ArcFaceLoss(num_classes=C, embedding_size=D, margin=math.degrees(0.5), scale=64),
        "cosface": lambda C, D: pml.CosFaceLoss(num_classes=C, embedding_size=D, margin=0.35, scale=64),
        "sphereface": sphere,
        "atl": sphere,
        "lsoftmax": lambda C, D: pml.LargeMarginSoftmaxLoss(num_classes=C, embedding_size=D, margin=4, scale=1),
        "normface": lambda C, D: pml.NormalizedSoftmaxLoss(num_classes=C, embedding_size=D, temperature=1 / 16),
        "subcenter_arcface": lambda C, D: pml.SubCenterArcFaceLoss(num_classes=C, embedding_size=D,
                                                                   margin=math.degrees(0.5), scale=64, sub_centers=3),
    }


def pml_available(head: str) -> bool:
    """Whether pytorch-metric-learning has (and this machine has installed) an equivalent of ``head``."""
    return head in _pml_factories()


class Method:
    """One timed callable: ``step()`` runs forward + backward; ``zero()`` clears the gradients."""

    def __init__(self, name: str, step: Callable[[], None], params: Sequence[torch.Tensor]):
        self.name, self._step, self._params = name, step, list(params)

    def zero(self) -> None:
        for p in self._params:
            p.grad = None

    def step(self) -> None:
        self._step()


def make_inputs(size: Size, device="cpu", seed: int = 0):
    """``x`` (B, D) requiring grad, labels ``y`` and a class-weight parameter ``W`` (C, D)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size.B, size.D, generator=g).to(device).requires_grad_(True)
    y = torch.randint(0, size.C, (size.B,), generator=g).to(device)
    W = torch.empty(size.C, size.D)
    bound = math.sqrt(6.0 / (size.C + size.D))  # xavier-uniform, like the heads
    W.uniform_(-bound, bound, generator=g)
    return x, y, torch.nn.Parameter(W.to(device))


def rows_per_class(head: str) -> int:
    """The class rows of ``head`` per class (K sub-centers; 1 for most heads)."""
    return int(losses.build(head, embedding_size=2, num_classes=2).rows_per_class)


def bare_name(K: int) -> str:
    """The bare method over ``K·C`` rows: the floor of a head with ``K`` rows per class."""
    return "bare" if K == 1 else f"bare:K={K}"


def make_method(name: str, size: Size, x, y, W) -> Method:
    """Build method ``name`` (``bare``, ``bare:K=<k>``, ``fused:<head>``, ``plain:<head>``,
    ``pml:<head>``) on shared inputs."""
    if name == "bare":
        def step():
            F.cross_entropy(F.linear(x, W), y).backward()
        return Method(name, step, [x, W])
    if name.startswith("bare:K="):
        K = int(name.partition("=")[2])
        WK = torch.nn.Parameter(W.detach().repeat_interleave(K, dim=0))  # K rows per class, own gradient

        def step():
            F.cross_entropy(F.linear(x, WK), y).backward()
        return Method(name, step, [x, WK])
    kind, _, head = name.partition(":")
    if kind in ("fused", "plain"):
        if head not in head_names():
            raise ValueError(f"unknown head {head!r}; available: {', '.join(head_names())}")
        opts = {"chunk_size": size.chunk} if (kind == "fused" and size.chunk) else {}
        # "fused" is what losses.build gives without an engine argument: measure exactly that
        kw = {"engine": "plain"} if kind == "plain" else {}
        if opts:
            kw["engine_options"] = opts
        module = losses.build(head, embedding_size=size.D, num_classes=size.C, **kw)
        if module.engine.name != kind:
            raise RuntimeError(f"{head}: built with engine {module.engine.name!r}, expected {kind!r}")
        if module.rows_per_class == 1:  # every method shares one weight tensor (the head's own is freed)
            module.weight = W
        if getattr(module, "bias", None) is not None:
            module.bias = torch.nn.Parameter(torch.zeros(size.C, device=W.device))
        module.to(W.device).train()

        def step():
            module(x, y).backward()
        return Method(name, step, [x, *module.parameters()])
    if kind == "pml":
        factories = _pml_factories()
        if head not in factories:
            raise ValueError(f"pytorch-metric-learning has no equivalent of {head!r} (or is not installed)")
        module = factories[head](1, size.D)
        module.num_classes = size.C
        if head == "subcenter_arcface":  # K = 3 rows per class: its own (D, 3C) weights
            module.W = torch.nn.Parameter(torch.randn(size.D, 3 * size.C) * math.sqrt(2.0 / (size.D + 3 * size.C)))
        else:
            module.W = torch.nn.Parameter(W.detach().t())  # same numbers, pml's (D, C) layout, own grad
        module.to(W.device)

        def step():
            module(x, y).backward()
        return Method(name, step, [x, *module.parameters()])
    raise ValueError(f"unknown method {name!r}: expected bare, fused:<head>, plain:<head> or pml:<head>")


def methods_for(size: Size, heads: Sequence[str], kinds: Sequence[str]) -> List[str]:
    """The method names benchmarked at ``size``: chunked sizes run only ``bare`` and ``fused``; a
    head with ``K`` rows per class brings the bare path over ``K·C`` rows."""
    out = ["bare"] if "bare" in kinds else []
    if "bare" in kinds:
        out += sorted({bare_name(K) for K in (rows_per_class(h) for h in heads) if K > 1})
    for h in heads:
        if "fused" in kinds:
            out.append(f"fused:{h}")
        if size.chunk is None:
            if "plain" in kinds:
                out.append(f"plain:{h}")
            if "pml" in kinds and pml_available(h):
                out.append(f"pml:{h}")
    return out


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# -- timing ----------------------------------------------------------------------------------------

def time_methods(size: Size, names: Sequence[str], repeats: int, warmup: int = 1, device="cpu",
                 progress: bool = True) -> Dict[str, List[float]]:
    """Seconds of one forward+backward per method, round-robin over ``repeats`` rounds."""
    from tqdm import tqdm

    x, y, W = make_inputs(size, device)
    methods = [make_method(n, size, x, y, W) for n in names]
    times: Dict[str, List[float]] = {n: [] for n in names}
    total = (warmup + repeats) * len(methods)
    with tqdm(total=total, desc=f"time {size.key}", disable=not progress, file=sys.stderr, leave=False) as bar:
        for r in range(warmup + repeats):
            # rotate the order every round so that no method always follows the same one
            k = r % len(methods)
            for m in methods[k:] + methods[:k]:
                m.zero()
                _sync(device)
                t0 = time.perf_counter()
                m.step()
                _sync(device)
                dt = time.perf_counter() - t0
                if r >= warmup:
                    times[m.name].append(dt)
                m.zero()
                bar.update(1)
    return times


# -- memory (one child process per method) --------------------------------------------------------------

def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb if sys.platform == "darwin" else kb * 1024


def measure_memory_here(name: str, size: Size, device="cpu") -> Dict[str, float]:
    """Peak memory of one step of ``name`` in *this* process (call it in a fresh one).

    One step on a tiny problem first pages in the code and lazily built state every method
    touches once (tens of MB of shared-library pages count as resident memory), so that the
    measured step counts only what scales with the problem.
    """
    tiny = Size(4, size.D, 8, None if size.chunk is None else 3)
    tx, ty, tW = make_inputs(tiny, device)
    make_method(name, tiny, tx, ty, tW).step()
    del tx, ty, tW
    x, y, W = make_inputs(size, device)
    method = make_method(name, size, x, y, W)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        method.step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"peak_mb": peak / 2**20, "delta_mb": (peak - base) / 2**20, "how": "cuda.max_memory_allocated"}
    how = "VmHWM" if _reset_hwm() else "ru_maxrss"
    base = _rss_bytes()
    method.step()
    peak = _hwm_bytes()
    return {"peak_mb": peak / 2**20, "delta_mb": max(0, peak - base) / 2**20, "how": how}


def measure_memory(name: str, size: Size, device="cpu", timeout: float = 1800) -> Dict[str, float]:
    """Run :func:`measure_memory_here` in its own Python process and return its result."""
    payload = json.dumps({"name": name, "size": asdict(size), "device": str(device)})
    cmd = [sys.executable, "-m", "facemargin.experiments.heads", "--child", payload]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"child exited with {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the whole benchmark --------------------------------------------------------------------------------

def _median(v: Sequence[float]) -> Optional[float]:
    return statistics.median(v) if v else None


def _min(v: Sequence[float]) -> Optional[float]:
    return min(v) if v else None


def load_average() -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages (None where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _ratio(a, b) -> Optional[float]:
    return None if a is None or b in (None, 0) else a / b


def run_benchmark(sizes: Sequence[Size], heads: Optional[Sequence[str]] = None,
                  kinds: Sequence[str] = ("bare", "fused", "plain", "pml"), repeats: int = 5,
                  large_repeats: int = 2, warmup: int = 1, memory: bool = True, device="cpu",
                  progress: bool = True) -> dict:
    """Time (and measure the memory of) every method at every size; returns the JSON-able report.

    Chunked sizes use ``large_repeats`` and no warm-up round (each step takes seconds).
    """
    heads = list(heads) if heads else head_names()
    unknown = [h for h in heads if h not in head_names()]
    if unknown:
        raise ValueError(f"unknown head(s) {unknown}; available: {', '.join(head_names())}")
    bad = [k for k in kinds if k not in ("bare", "fused", "plain", "pml")]
    if bad:
        raise ValueError(f"unknown method kind(s) {bad}; expected bare, fused, plain, pml")
    if repeats < 1 or large_repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats} and {large_repeats}")
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "device": str(device)},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "statistic": "min",
        "targets": dict(TARGETS, size=TARGET_SIZE, chunked=CHUNKED_TARGETS),
        "load_before": load_average(),
        "sizes": [],
    }
    for size in sizes:
        names = methods_for(size, heads, kinds)
        chunked = size.chunk is not None
        times = time_methods(size, names, large_repeats if chunked else repeats,
                             0 if chunked else warmup, device, progress)
        rows = []
        mem = {}
        if memory:
            from tqdm import tqdm

            for n in tqdm(names, desc=f"memory {size.key}", disable=not progress, file=sys.stderr, leave=False):
                mem[n] = measure_memory(n, size, device)
        for n in names:
            kind, _, head = n.partition(":")
            # a head is held against the bare path with as many rows (sub-centers: K·C)
            ref = bare_name(rows_per_class(head)) if kind in ("fused", "plain", "pml") else n
            ref = ref if ref in times else "bare"
            bare_t = _min(times.get(ref, []))
            bare_m = mem.get(ref, {}).get("delta_mb")
            bare_p = mem.get(ref, {}).get("peak_mb")
            t = _min(times[n])
            pml_t = _min(times.get(f"pml:{head}", [])) if kind != "pml" else None
            m = mem.get(n, {})
            rows.append({
                "method": n, "kind": kind, "head": None if kind == "bare" else (head or None),
                "reference": ref, "min_s": t, "median_s": _median(times[n]), "times_s": times[n],
                "time_vs_bare": _ratio(t, bare_t), "time_vs_pml": _ratio(t, pml_t),
                "peak_mb": m.get("peak_mb"), "delta_mb": m.get("delta_mb"),
                "memory_vs_bare": _ratio(m.get("delta_mb"), bare_m),
                "peak_vs_bare": _ratio(m.get("peak_mb"), bare_p), "memory_how": m.get("how"),
                "memory_error": m.get("error"),
            })
        report["sizes"].append({"size": size.key, "B": size.B, "D": size.D, "C": size.C, "chunk": size.chunk,
                                "repeats": large_repeats if chunked else repeats, "rows": rows})
    report["load_after"] = load_average()
    report["verdict"] = verdict(report)
    return report


def verdict(report: dict) -> List[dict]:
    """The targets (``TARGETS``) checked on the measured numbers (default-built heads only)."""
    out = []
    for s in report["sizes"]:
        for r in s["rows"]:
            if r["kind"] != "fused":
                continue
            if s["chunk"] is None and s["size"] == TARGET_SIZE:
                checks = {
                    "time_vs_bare": (r["time_vs_bare"], TARGETS["time_vs_bare"]),
                    "time_vs_pml": (r["time_vs_pml"], TARGETS["time_vs_pml"]),
                    "memory_vs_bare": (r["memory_vs_bare"], TARGETS["memory_vs_bare"]),
                }
            elif s["chunk"] is not None:
                checks = {what: (r.get(what), limit) for what, limit in CHUNKED_TARGETS.items()}
            else:
                continue
            for what, (value, limit) in checks.items():
                if value is None:
                    continue
                out.append({"size": s["size"], "head": r["head"], "check": what, "value": value,
                            "limit": limit, "met": bool(value <= limit)})
    return out


def format_table(report: dict) -> str:
    """The report as plain-text tables, one per size."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = []
    m = report["machine"]
    lines.append(f"# bench-heads  {report['date']}  {m['platform']}  {m['cpu_count']} cpus  "
                 f"torch {m['torch']} ({m['torch_threads']} threads)  device {m['device']}")
    load = [report.get("load_before"), report.get("load_after")]
    if any(load):
        lines.append("# load average (1, 5, 15 min) before the timing: "
                     + " / ".join("-" if v is None else ", ".join(f"{x:.2f}" for x in v) for v in load[:1])
                     + "; after: " + ("-" if load[1] is None else ", ".join(f"{x:.2f}" for x in load[1])))
    for s in report["sizes"]:
        lines.append("")
        lines.append(f"B={s['B']} D={s['D']} C={s['C']}" + (f" chunk={s['chunk']}" if s["chunk"] else "")
                     + f"  (minimum of {s['repeats']}, forward+backward; x bare: the bare path with as many rows)")
        lines.append(f"{'method':<24}{'min s':>9}{'median s':>10}{'x bare':>8}{'x pml':>8}{'step MB':>10}{'x bare':>8}"
                     f"{'peak MB':>10}{'x bare':>8}")
        for r in s["rows"]:
            lines.append(f"{r['method']:<24}{f(r.get('min_s'), '.3f'):>9}{f(r['median_s'], '.3f'):>10}"
                         f"{f(r['time_vs_bare'], '.2f'):>8}"
                         f"{f(r['time_vs_pml'], '.2f'):>8}{f(r['delta_mb'], '.0f'):>10}"
                         f"{f(r['memory_vs_bare'], '.2f'):>8}{f(r['peak_mb'], '.0f'):>10}"
                         f"{f(r.get('peak_vs_bare'), '.2f'):>8}")
            if r.get("memory_error"):
                lines.append(f"    memory: {r['memory_error']}")
    v = report.get("verdict") or []
    if v:
        missed = [c for c in v if not c["met"]]
        lines.append("")
        lines.append(f"targets: {len(v) - len(missed)}/{len(v)} met"
                     + ("" if not missed else "; missed: " + ", ".join(
                         f"{c['head']} {c['check']}={c['value']:.2f} (limit {c['limit']}) at {c['size']}" for c in missed)))
    return "\n".join(lines)


def run_sizes(sizes: Sequence[str], *, batch: int = 256, dim: int = 512, heads: Optional[Sequence[str]] = None,
              methods: Sequence[str] = ("bare", "fused", "plain", "pml"), repeats: int = 5, large_repeats: int = 2,
              memory: bool = True, device: str = "auto", progress: bool = True,
              json_path: Optional[str] = None) -> dict:
    """Run the benchmark on ``sizes`` (as :func:`parse_size` reads them, ``C`` alone taking
    ``batch`` and ``dim``), print the table and, with ``json_path``, write the report there.

    ``device="auto"`` is CUDA when available. Returns the report of :func:`run_benchmark`."""
    cases = [parse_size(s, batch, dim) for s in sizes]
    device = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    report = run_benchmark(cases, heads, methods, repeats, large_repeats, memory=memory, device=device,
                           progress=progress)
    print(format_table(report))
    if json_path:
        write_json(json_path, report)
        print(f"\nwrote {json_path}")
    return report


def child_main(argv: Sequence[str]) -> int:
    """One memory measurement in a process of its own (see :func:`measure_memory`): ``argv`` is
    ``["--child", JSON]`` with the method, size and device; prints the result as one JSON line."""
    if len(argv) != 2 or argv[0] != "--child":
        print("python -m facemargin.experiments.heads runs one memory measurement of the head benchmark "
              "(--child JSON); the benchmark itself is 'facemargin bench-heads' or benchmarks/heads.py",
              file=sys.stderr)
        return 2
    spec = json.loads(argv[1])
    result = measure_memory_here(spec["name"], Size(**spec["size"]), spec["device"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
