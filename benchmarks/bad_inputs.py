"""A campaign of bad inputs, each given to its own ``loce`` process, as a new user would.

Every case must end with exit status 2, a message ``loce CMD: error: ...`` at the end of
stderr (argparse's own errors included; an annotation file's problems follow it as a list of
up to five), no Python traceback, and every file it could have replaced unchanged. The
cases are grouped in classes (configs, flags, ground truth, results, output paths,
checkpoints, images, training data, resuming).

    python benchmarks/bad_inputs.py

Writes ``benchmarks/results/bad_inputs.{json,md}``; exits 1 when a case breaks the promise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "engine"))

from engine_utils import SYNTH_CONFIG, tiny_overrides  # noqa: E402

Case = tuple[str, str, list[str], list[Path]]  # class, description, argv, protected files


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LOCE_FAULT"}
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"]
                                             if env.get("PYTHONPATH") else "")
    return env


def _digest(paths: list[Path]) -> dict[str, str | None]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in paths}


def _sets(overrides: list[str]) -> list[str]:
    return sum((["--set", o] for o in overrides), [])


def _write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def _cases(work: Path, data: Path, ckpt: Path) -> list[Case]:  # noqa: PLR0915 - a flat list
    import numpy as np
    import torch
    from PIL import Image

    cases: list[Case] = []

    def add(cls: str, what: str, argv: list, protected: list[Path] = ()) -> None:
        cases.append((cls, what, [str(a) for a in argv], list(protected)))

    blocker = work / "a_file"
    blocker.write_text("in the way")
    sysdir = Path("/sys") if os.geteuid() == 0 else work / "read_only"
    if sysdir != Path("/sys"):
        sysdir.mkdir()
        sysdir.chmod(0o555)

    # ---- configs
    cfgdir = work / "configs"
    cfgdir.mkdir()
    (cfgdir / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (cfgdir / "syntax.yaml").write_text("solver:\n  lr: [1\n")
    (cfgdir / "list.yaml").write_text("- 1\n")
    (cfgdir / "cycle_a.yaml").write_text("base: cycle_b.yaml\n")
    (cfgdir / "cycle_b.yaml").write_text("base: cycle_a.yaml\n")
    (cfgdir / "base_int.yaml").write_text("base: 3\n")
    (cfgdir / "binary.yaml").write_bytes(bytes(range(256)))
    for what, argv in [
        ("unknown key", ["configs", SYNTH_CONFIG, "--set", "solver.warmup=3"]),
        ("unknown section", ["configs", SYNTH_CONFIG, "--set", "optim.lr=1"]),
        ("wrong type", ["configs", SYNTH_CONFIG, "--set", "solver.epochs=abc"]),
        ("lr .inf", ["configs", SYNTH_CONFIG, "--set", "solver.lr=.inf"]),
        ("lr .nan", ["configs", SYNTH_CONFIG, "--set", "solver.lr=.nan"]),
        ("weight decay -.inf", ["configs", SYNTH_CONFIG, "--set", "solver.weight_decay=-.inf"]),
        ("grad_clip .nan", ["configs", SYNTH_CONFIG, "--set", "solver.grad_clip=.nan"]),
        ("norcal .inf", ["configs", SYNTH_CONFIG, "--set", "model.test.norcal_gamma=.inf"]),
        ("negative lr", ["configs", SYNTH_CONFIG, "--set", "solver.lr=-1"]),
        ("decreasing steps", ["configs", SYNTH_CONFIG, "--set", "solver.steps=[2,1]"]),
        ("flip_prob 2", ["configs", SYNTH_CONFIG, "--set", "data.flip_prob=2"]),
        ("--set without =", ["configs", SYNTH_CONFIG, "--set", "solver.lr"]),
        ("--set empty key", ["configs", SYNTH_CONFIG, "--set", "=3"]),
        ("empty trainable", ["configs", SYNTH_CONFIG, "--set", "train.trainable=[]"]),
        ("blank reinit", ["configs", SYNTH_CONFIG, "--set", "train.reinit=['']"]),
        ("non-UTF-8 YAML", ["configs", cfgdir / "latin1.yaml"]),
        ("YAML syntax error", ["configs", cfgdir / "syntax.yaml"]),
        ("top-level list", ["configs", cfgdir / "list.yaml"]),
        ("base cycle", ["configs", cfgdir / "cycle_a.yaml"]),
        ("base not a name", ["configs", cfgdir / "base_int.yaml"]),
        ("binary file", ["configs", cfgdir / "binary.yaml"]),
        ("missing config", ["configs", cfgdir / "missing.yaml"]),
        ("a folder as config", ["configs", cfgdir]),
        ("misspelt bundled name", ["configs", "mask_rcnn_r18_synthetic"]),
    ]:
        add("config", what, argv)

    # ---- flags
    for what, argv in [
        ("--res for --resume", ["train", SYNTH_CONFIG, "--res"]),
        ("--g for --gt", ["eval", "--g", "gt.json", "--results", "r.json"]),
        ("--check for --checkpoint", ["predict", "--check", ckpt, "--images", data / "val",
                                      "--out", work / "r.json"]),
        ("unknown command", ["fit", SYNTH_CONFIG]),
        ("--max-dets 0", ["eval", "--gt", "g", "--results", "r", "--max-dets", "0"]),
        ("--max-dets abc", ["eval", "--gt", "g", "--results", "r", "--max-dets", "abc"]),
        ("--iou-type foo", ["eval", "--gt", "g", "--results", "r", "--iou-type", "foo"]),
        ("--preset huge", ["synth", "--out", work / "s", "--preset", "huge"]),
        ("--images and --gt", ["predict", "--checkpoint", ckpt, "--images", "a", "--gt", "b",
                               "--out", "o"]),
    ]:
        add("flags", what, argv)

    # ---- ground truth of loce eval
    val = json.loads((data / "annotations" / "val.json").read_text())
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 1.0} for a in val["annotations"]]
    res = _write_json(work / "results.json", results)
    metrics = work / "metrics.json"
    metrics.write_text('{"kept": true}')

    def gt_case(what: str, change: Callable[[dict], None]) -> None:
        gt = json.loads(json.dumps(val))
        change(gt)
        path = _write_json(work / f"gt_{len(cases)}.json", gt)
        add("ground truth", what, ["eval", "--gt", path, "--results", res, "--out", metrics],
            [metrics])

    a0 = lambda g: g["annotations"][0]  # noqa: E731
    gt_case("negative box width", lambda g: a0(g).update(bbox=[1, 1, -4, 3]))
    gt_case("undeclared category_id", lambda g: a0(g).update(category_id=9999))
    gt_case("undeclared image_id", lambda g: a0(g).update(image_id=9999))
    gt_case("duplicate annotation id", lambda g: a0(g).update(id=g["annotations"][1]["id"]))
    gt_case("duplicate image id", lambda g: g["images"][1].update(id=g["images"][0]["id"]))
    gt_case("unknown neg_category_ids", lambda g: g["images"][0].update(neg_category_ids=[9999]))
    gt_case("unknown not_exhaustive", lambda g: g["images"][0].update(
        not_exhaustive_category_ids=[9999]))
    gt_case("garbage RLE", lambda g: a0(g).update(segmentation={
        "size": [g["images"][0]["height"], g["images"][0]["width"]], "counts": "zz!!"}))
    gt_case("bbox of 3 numbers", lambda g: a0(g).update(bbox=[1, 2, 3]))
    gt_case("string category id", lambda g: g["categories"][0].update(id="1"))
    gt_case("boolean image id", lambda g: g["images"][0].update(id=True))
    gt_case("no frequency", lambda g: g["categories"][0].pop("frequency"))
    gt_case("no height", lambda g: g["images"][0].pop("height"))
    gt_case("no neg_category_ids", lambda g: g["images"][0].pop("neg_category_ids"))
    gt_case("odd polygon", lambda g: a0(g).update(segmentation=[[1, 2, 3, 4, 5]]))
    gt_case("no categories", lambda g: g.update(categories=[]))
    (work / "gt_not_json.json").write_text("{images: [")
    (work / "gt_latin1.json").write_bytes(b'{"images": "\xe9"}')
    _write_json(work / "gt_list.json", results)
    for what, path in [("not JSON", work / "gt_not_json.json"),
                       ("non-UTF-8 JSON", work / "gt_latin1.json"),
                       ("a results file as ground truth", work / "gt_list.json"),
                       ("missing file", work / "missing.json"), ("a folder", work)]:
        add("ground truth", what, ["eval", "--gt", path, "--results", res, "--out", metrics],
            [metrics])

    # ---- results (formats the evaluation refuses)
    gt_path = data / "annotations" / "val.json"
    for what, payload in [("not a list", {"a": 1}), ("empty list", []),
                          ("unknown image id", [{**results[0], "image_id": 99999}]),
                          ("bbox of 2 numbers", [{**results[0], "bbox": [1, 2]}])]:
        path = _write_json(work / f"res_{len(cases)}.json", payload)
        add("results", what, ["eval", "--gt", gt_path, "--results", path, "--out", metrics],
            [metrics])

    # ---- output paths
    add("output paths", "eval --out a folder",
        ["eval", "--gt", gt_path, "--results", res, "--out", work])
    add("output paths", "eval --out below a file",
        ["eval", "--gt", gt_path, "--results", res, "--out", blocker / "m.json"], [blocker])
    add("output paths", "eval --out read-only",
        ["eval", "--gt", gt_path, "--results", res, "--out", sysdir / "m.json"])
    predict_out = work / "predictions.json"
    predict_out.write_text('[{"kept": true}]')
    for what, out in [("predict --out a folder", work), ("predict --out below a file",
                                                        blocker / "r.json"),
                      ("predict --out read-only", sysdir / "r.json")]:
        add("output paths", what, ["predict", "--checkpoint", ckpt, "--images", data / "val",
                                   "--out", out], [blocker])
    add("output paths", "predict --visualize below a file",
        ["predict", "--checkpoint", ckpt, "--images", data / "val", "--out", predict_out,
         "--visualize", blocker / "v"], [predict_out, blocker])
    add("output paths", "train output_dir a file", ["train", SYNTH_CONFIG, *_sets(
        tiny_overrides(data, blocker))], [blocker])
    add("output paths", "train output_dir read-only", ["train", SYNTH_CONFIG, *_sets(
        tiny_overrides(data, sysdir / "run"))])
    add("output paths", "synth --out a file", ["synth", "--out", blocker, "--preset", "tiny"],
        [blocker])
    add("output paths", "synth --out read-only", ["synth", "--out", sysdir / "synth",
                                                  "--preset", "tiny"])
    add("output paths", "synth --out not empty", ["synth", "--out", work, "--preset", "tiny"])

    # ---- checkpoints given to loce predict
    state = torch.load(ckpt, weights_only=True)

    def ckpt_case(what: str, payload) -> None:
        path = work / f"ckpt_{len(cases)}.pth"
        torch.save(payload, path)
        add("checkpoints", what, ["predict", "--checkpoint", path, "--images", data / "val",
                                  "--out", predict_out], [predict_out])

    nan_state = {**state, "model": {k: (v.clone().fill_(float("nan")) if v.is_floating_point()
                                        else v) for k, v in state["model"].items()}}
    ckpt_case("all-NaN weights", nan_state)
    ckpt_case("stored config a list", {**state, "config": ["x"]})
    ckpt_case("stored config a string", {**state, "config": "solver: 1"})
    ckpt_case("category_ids a string", {**state, "category_ids": "1,2"})
    ckpt_case("duplicate category_ids", {**state, "category_ids": [1] * len(state["category_ids"])})
    ckpt_case("category_names too short", {**state, "category_names": ["a"]})
    ckpt_case("no category table", {k: v for k, v in state.items() if k != "category_ids"})
    ckpt_case("no config", {k: v for k, v in state.items() if k != "config"})
    ckpt_case("a list", [1, 2])
    ckpt_case("weights of another shape", {**state, "model": {
        k: (torch.zeros(3) if k.endswith("cls_score.weight") else v)
        for k, v in state["model"].items()}})
    (work / "text.pth").write_text("not a checkpoint")
    add("checkpoints", "a text file", ["predict", "--checkpoint", work / "text.pth", "--images",
                                       data / "val", "--out", predict_out], [predict_out])
    add("checkpoints", "missing file", ["predict", "--checkpoint", work / "none.pth", "--images",
                                        data / "val", "--out", predict_out], [predict_out])

    # ---- images given to loce predict
    def folder(name: str, make: Callable[[Path], None]) -> Path:
        path = work / name
        path.mkdir()
        make(path)
        return path

    def png(path: Path, w: int, h: int) -> None:
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(path)

    corrupt = folder("img_corrupt", lambda p: (png(p / "a.png", 64, 48),
                                               (p / "b.png").write_bytes(b"\x89PNG garbage")))
    bomb = folder("img_bomb", lambda p: Image.new("L", (14000, 14000)).save(p / "big.png"))
    empty = folder("img_empty", lambda p: (p / "notes.txt").write_text("x"))
    truncated = folder("img_trunc", lambda p: png(p / "a.png", 64, 48))
    (truncated / "a.png").write_bytes((truncated / "a.png").read_bytes()[:60])
    for what, images in [("a corrupt image", corrupt), ("a 14000 x 14000 image", bomb),
                         ("no images", empty), ("a truncated image", truncated),
                         ("missing folder", work / "none")]:
        add("images", what, ["predict", "--checkpoint", ckpt, "--images", images, "--out",
                             predict_out], [predict_out])
    other = json.loads(json.dumps(val))
    other["categories"] = other["categories"][:-1]
    other["annotations"] = [a for a in other["annotations"]
                            if a["category_id"] in {c["id"] for c in other["categories"]}]
    add("images", "--gt with other categories", [
        "predict", "--checkpoint", ckpt, "--gt", _write_json(work / "other.json", other),
        "--image-root", data, "--out", predict_out], [predict_out])

    # ---- training data
    train = json.loads((data / "annotations" / "train.json").read_text())

    def train_case(what: str, change: Callable[[dict], None], *extra: str) -> None:
        ann = json.loads(json.dumps(train))
        change(ann)
        path = _write_json(work / f"train_{len(cases)}.json", ann)
        add("training data", what, ["train", SYNTH_CONFIG, *_sets(tiny_overrides(
            data, work / f"run_{len(cases)}", **{"data.train_ann": str(path)})), *extra])

    t0 = lambda g: g["annotations"][0]  # noqa: E731
    train_case("garbage RLE counts", lambda g: t0(g).update(segmentation={
        "size": [g["images"][0]["height"], g["images"][0]["width"]], "counts": "garbage!"}))
    train_case("RLE of the wrong size", lambda g: t0(g).update(segmentation={
        "size": [3, 3], "counts": [9]}))
    train_case("NaN box", lambda g: t0(g).update(bbox=[float("nan"), 1, 2, 3]))
    train_case("undeclared category", lambda g: t0(g).update(category_id=9999))
    train_case("image without a file name", lambda g: g["images"][0].pop("coco_url"))
    add("training data", "image root missing", ["train", SYNTH_CONFIG, *_sets(tiny_overrides(
        data, work / "run_root", **{"data.train_images": str(work / "none")}))])
    if not torch.cuda.is_available():
        add("training data", "device cuda without a GPU", ["train", SYNTH_CONFIG, *_sets(
            tiny_overrides(data, work / "run_cuda", **{"train.device": "cuda"}))])
    add("training data", "init_from missing", ["train", SYNTH_CONFIG, *_sets(tiny_overrides(
        data, work / "run_init", **{"train.init_from": str(work / "none.pth")}))])
    nan_path = work / "nan_init.pth"
    torch.save(nan_state, nan_path)
    add("training data", "init_from NaN weights", ["train", SYNTH_CONFIG, *_sets(tiny_overrides(
        data, work / "run_nan", **{"train.init_from": str(nan_path)}))])

    # ---- resuming
    def resume_case(what: str, prepare: Callable[[Path], None], **extra) -> None:
        rundir = work / f"resume_{len(cases)}"
        (rundir / "checkpoints").mkdir(parents=True)
        prepare(rundir / "checkpoints")
        add("resuming", what, ["train", SYNTH_CONFIG, "--resume", *_sets(tiny_overrides(
            data, rundir, **extra))])

    def pointer_to(name: str, payload=None):
        def prepare(d: Path) -> None:
            if payload is not None:
                torch.save(payload, d / name)
            (d / "last_checkpoint").write_text(name + "\n")
        return prepare

    resume_case("weights-only file", pointer_to("w.pth", {"model": state["model"]}))
    resume_case("trainable changed", pointer_to("epoch_1.pth", state),
                **{"train.trainable": "[rpn]"})
    resume_case("pointer to a missing file", pointer_to("epoch_9.pth"))
    resume_case("pointer outside the folder", pointer_to("../../x.pth"))
    resume_case("NaN weights", pointer_to("epoch_1.pth", nan_state))
    resume_case("rng of the wrong type", pointer_to("epoch_1.pth", {**state, "rng": 3}))
    resume_case("epoch a string", pointer_to("epoch_1.pth", {**state, "epoch": "1"}))
    resume_case("corrupt checkpoint", lambda d: ((d / "c.pth").write_bytes(b"PK\x03\x04junk"),
                                                 (d / "last_checkpoint").write_text("c.pth")))
    return cases


def _run_case(case: Case) -> dict:
    cls, what, argv, protected = case
    before = _digest(protected)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "loce", *argv], env=_env(), capture_output=True,
                          text=True, timeout=600)
    err = proc.stderr
    # The message is the end of stderr, from its "loce CMD: error:" line on (after any
    # progress bar); an annotation file's problems follow that line as a list.
    lines = [line.split("\r")[-1] for line in err.strip().splitlines()]
    heads = [i for i, line in enumerate(lines)
             if line.startswith((f"loce {argv[0]}: error: ", "loce: error: "))]
    message = lines[heads[-1]:] if heads else lines[-1:]
    untouched = _digest(protected) == before
    passed = proc.returncode == 2 and "Traceback" not in err and bool(heads) and untouched
    return {"class": cls, "input": what, "exit": proc.returncode, "passed": passed,
            "untouched": untouched, "message": " / ".join(message)[:400],
            "message_lines": len(message), "seconds": round(time.perf_counter() - start, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    wall = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="loce_bad_inputs_") as tmp:
        work = Path(tmp)
        from loce.data.synthetic import PRESETS, generate

        data = work / "data"
        generate(data, PRESETS["tiny"], workers=1)
        stage = work / "stage1"
        subprocess.run([sys.executable, "-m", "loce", "train", SYNTH_CONFIG, *_sets(
            tiny_overrides(data, stage, **{"train.max_iters_per_epoch": 1}))], env=_env(),
            check=True, capture_output=True)
        cases = _cases(work, data, stage / "checkpoints" / "epoch_1.pth")
        rows = [_run_case(c) for c in cases]
        ro = work / "read_only"
        if ro.is_dir():
            ro.chmod(0o755)
            shutil.rmtree(ro)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    classes = sorted({r["class"] for r in rows})
    report = {
        "inputs": len(rows), "passed": sum(r["passed"] for r in rows), "classes": classes,
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1),
        "cases": rows,
    }
    lines = ["# Bad inputs: one `loce` process each", "",
             f"{report['passed']} of {report['inputs']} inputs in {len(classes)} classes end "
             "with exit status 2, a `loce CMD: error:` message last, no traceback and protected "
             f"files unchanged ({report['cpu_seconds']:.0f} CPU s, {report['wall_seconds']:.0f} s "
             "wall; `benchmarks/bad_inputs.py`).", "",
             "| class | input | exit | ok | lines | message |", "|---|---|---:|---|---:|---|"]
    for r in rows:
        msg = r["message"].replace("|", "\\|")
        lines.append(f"| {r['class']} | {r['input']} | {r['exit']} | "
                     f"{'yes' if r['passed'] else 'NO'} | {r['message_lines']} | {msg} |")
    from loce.fileio import atomic_write_json, atomic_write_text

    out = Path(args.out)
    atomic_write_json(out / "bad_inputs.json", report)
    atomic_write_text(out / "bad_inputs.md", "\n".join(lines) + "\n")
    print("\n".join(lines[:3]))
    for r in rows:
        if not r["passed"]:
            print(f"FAILED {r['class']} / {r['input']}: exit {r['exit']}: {r['message']}")
    return 0 if report["passed"] == report["inputs"] else 1


if __name__ == "__main__":
    sys.exit(main())
