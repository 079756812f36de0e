"""The benchmark's report: medians per side, the ratios the issue asks for with their verdicts, and the table."""

import statistics

# ratio name: (numerator side, denominator side, its threshold in cfg.targets or None: shown, not judged):
# throughput, higher is better
RATIOS = {
    "a_over_b": ("a", "b", "min_a_over_b"),
    "a_over_c": ("a", "c", "min_a_over_c"),
    "eval_vae_lab_over_loop": ("eval_vae_lab", "eval_loop", "min_eval_ratio"),
    "s_over_b": ("s", "b", None),  # with schedule.steps_per_call set (the benchmark's steps_per_call; 1: off)
    "a_over_s": ("a", "s", None),  # what the default steps_per_call (auto) gains over the one set for s
    "s_over_l": ("s", "l", None),  # steps per call off (s at 1): vae_lab's own cost over a bare Trainer on b's body
    "a_over_l": ("a", "l", None),
    "l_over_b": ("l", "b", None),  # the bare Trainer's cost against the hand loop
}
MEDIANS = ("images_per_s", "images_per_cpu_s", "median_step_s", "first_step_s", "import_s", "peak_rss_mb",
           "flops_per_image", "matmul_tflops")
NAMES = {"a": "a  vae_lab train.py", "s": "s  a, steps_per_call set", "b": "b  hand loop, tensor", "c": "c  seeds' DataLoader", "l": "l  bare L.Trainer",
         "imports": "   import torch+L+tv", "eval_vae_lab": "   IWAE vae_lab", "eval_loop": "   IWAE plain loop"}


def _median(reports: list[dict], key: str) -> float | None:
    values = [r[key] for r in reports if r.get(key) is not None]
    return statistics.median(values) if values else None


def families(runs: dict) -> list[str]:
    """The model families with their own IWAE rows, as the suffix of their side names (" prior=vamp")."""
    return [key[len("eval_vae_lab"):] for key in runs if key.startswith("eval_vae_lab ")]


def side_name(side: str) -> str:
    """A side's label in the table; a family's IWAE rows carry the family."""
    base, _, family = side.partition(" ")
    return f"{NAMES[base]} {family}".rstrip() if base in NAMES else side


def targets(cfg) -> dict:
    """cfg.targets with each null throughput threshold taken from issue_targets[device][arch] (else the fallback)."""
    from omegaconf import OmegaConf

    wanted = OmegaConf.to_container(cfg.targets, resolve=True)
    issue = OmegaConf.to_container(cfg.issue_targets, resolve=True)
    names = ("min_a_over_b", "min_a_over_c", "min_eval_ratio")
    defaults = dict(zip(names, issue.get(cfg.device, {}).get(cfg.arch, issue["fallback"])))
    return {key: defaults[key] if value is None and key in defaults else value for key, value in wanted.items()}


def summary(cfg, runs: dict[str, list[dict]]) -> dict:
    """Medians per side, the ratios the issue asks for, and each target with its verdict."""
    sides = {side: {k: m for k in MEDIANS if (m := _median(reports, k)) is not None} for side, reports in runs.items()}
    ratios, verdicts, t = {}, {}, targets(cfg)
    for name, (top, bottom, threshold) in RATIOS.items():
        if top not in sides or bottom not in sides:
            continue
        ratios[name] = sides[top]["images_per_s"] / sides[bottom]["images_per_s"]  # the ratio of the medians
        ratios[f"{name}_per_repeat"] = [a["images_per_s"] / b["images_per_s"] for a, b in zip(runs[top], runs[bottom])]
        ratios[f"{name}_cpu"] = sides[top]["images_per_cpu_s"] / sides[bottom]["images_per_cpu_s"]
        if sides[top].get("median_step_s") and sides[bottom].get("median_step_s"):  # same batch size every side
            ratios[f"{name}_median_step"] = sides[bottom]["median_step_s"] / sides[top]["median_step_s"]
        if threshold is not None and t[threshold] is not None:
            verdicts[name] = (ratios[name], f">= {t[threshold]}", ratios[name] >= t[threshold])
    if "a" in sides and "imports" in sides:
        value = ratios["first_step_a_over_imports"] = sides["a"]["first_step_s"] / sides["imports"]["import_s"]
        limit = t["max_first_step_over_imports"]
        verdicts["first_step_a_over_imports"] = (value, f"<= {limit}", value <= limit)
    if "a" in sides and "b" in sides:
        limit = t["rss_factor"] * sides["b"]["peak_rss_mb"] + t["rss_margin_mb"]
        value = sides["a"]["peak_rss_mb"]
        rule = f"<= {t['rss_factor']} x b + {t['rss_margin_mb']} = {limit:.0f}"
        verdicts["peak_rss_a_mb"] = (value, rule, value <= limit)
    flops = sides.get("b", {}).get("flops_per_image")
    if flops:  # achieved training FLOP/s, against the datasheet peak if given, else the large-matmul yardstick
        peak = cfg.peak_tflops or sides["b"]["matmul_tflops"]
        for side in ("a", "s", "b", "c", "l"):
            if side in sides:
                sides[side]["tflops"] = sides[side]["images_per_s"] * flops / 1e12
                sides[side]["share_of_peak"] = sides[side]["tflops"] / peak
    for family in ["", *families(runs)]:  # the same for the IWAE sides: FLOPs of the loop, yardstick of its child
        fast, loop = f"eval_vae_lab{family}", f"eval_loop{family}"
        flops = sides.get(loop, {}).get("flops_per_image")
        if flops:
            peak = cfg.peak_tflops or sides[loop]["matmul_tflops"]
            for side in (fast, loop):
                if side in sides:
                    sides[side]["tflops"] = sides[side]["images_per_s"] * flops / 1e12
                    sides[side]["share_of_peak"] = sides[side]["tflops"] / peak
        if family and fast in sides and loop in sides:  # shown, not judged: a family's evaluation overhead
            name = f"eval_vae_lab_over_loop{family}"
            ratios[name] = sides[fast]["images_per_s"] / sides[loop]["images_per_s"]
            ratios[f"{name}_per_repeat"] = [a["images_per_s"] / b["images_per_s"]
                                            for a, b in zip(runs[fast], runs[loop])]
            ratios[f"{name}_cpu"] = sides[fast]["images_per_cpu_s"] / sides[loop]["images_per_cpu_s"]
    return {"sides": sides, "ratios": ratios,
            "targets": {k: {"value": v, "target": s, "met": ok} for k, (v, s, ok) in verdicts.items()}}


def table(result: dict) -> str:
    """The benchmark's result as the text it prints: settings, one row per side, each ratio with its verdict."""
    s = result["settings"]
    lines = [
        f"\nvae_lab benchmark: {s['arch']} on {s['dataset']} {s['data_shape']}, batch {s['batch_size']}, "
        f"{s['steps']} timed steps after {s['warmup_steps']}, {s['device']} {s['precision']}, "
        f"median of {s['repeats']}; torch threads {s['torch_threads']}",
        f"load average (1, 5, 15 min): before {result['load_before']}, after {result['load_after']}",
        f"{'side':<36}{'images/s':>10}{'per CPU-s':>11}{'step ms':>9}{'first step s':>14}{'peak RSS MB':>13}"
        f"{'TFLOP/s':>9}{'of peak':>9}",
    ]
    shown = lambda v, key, fmt: format(v[key], fmt) if key in v else "-"  # noqa: E731
    for side, v in result["summary"]["sides"].items():
        first = shown(v, "first_step_s", ".2f") if "first_step_s" in v else shown(v, "import_s", ".2f")
        share = f"{100 * v['share_of_peak']:.1f}%" if "share_of_peak" in v else "-"
        step = f"{1000 * v['median_step_s']:.2f}" if "median_step_s" in v else "-"
        lines.append(f"{side_name(side):<36}{shown(v, 'images_per_s', '.1f'):>10}"
                     f"{shown(v, 'images_per_cpu_s', '.1f'):>11}"
                     f"{step:>9}{first:>14}{v['peak_rss_mb']:>13.0f}{shown(v, 'tflops', '.4f'):>9}{share:>9}")
    b = result["summary"]["sides"].get("b", {})
    if "flops_per_image" in b:
        lines.append(f"training FLOPs per image: {b['flops_per_image'] / 1e6:.1f} M; large-matmul yardstick: "
                     f"{b['matmul_tflops'] * 1000:.0f} GFLOP/s")
    ev = result["summary"]["sides"].get("eval_loop", {})
    if "flops_per_image" in ev:
        k = s["evaluation"]["iwae_samples"]
        lines.append(f"IWAE-{k} FLOPs per image: {ev['flops_per_image'] / 1e9:.2f} G; large-matmul yardstick in that "
                     f"child: {ev['matmul_tflops'] * 1000:.0f} GFLOP/s")
    ratios = result["summary"]["ratios"]

    def details(name: str) -> str:
        per_repeat = ", ".join(f"{r:.3f}" for r in ratios[f"{name}_per_repeat"])
        by_step = f"; by median step {ratios[f'{name}_median_step']:.3f}" if f"{name}_median_step" in ratios else ""
        return f"per repeat {per_repeat}; per CPU-s {ratios[f'{name}_cpu']:.3f}{by_step}"

    for name, target in result["summary"]["targets"].items():
        verdict = "ok  " if target["met"] else "MISS"
        extra = f"; {details(name)}" if name in RATIOS else ""
        lines.append(f"  {verdict} {name:<26} {target['value']:.3f}  (target {target['target']}{extra})")
    shown_ratios = [*RATIOS, *(f"eval_vae_lab_over_loop{family}" for family in families(result["runs"]))]
    for name in shown_ratios:
        if name in ratios and name not in result["summary"]["targets"]:
            lines.append(f"  info {name:<26} {ratios[name]:.3f}  ({details(name)})")
    per_repeat = {side: ", ".join(f"{r['images_per_s']:.0f}" for r in reports)
                  for side, reports in result["runs"].items() if reports and "images_per_s" in reports[0]}
    lines.append("per-repeat images/s: " + "; ".join(f"{side} {values}" for side, values in per_repeat.items()))
    lines.append(f"JSON: {result['out']}")
    return "\n".join(lines)
