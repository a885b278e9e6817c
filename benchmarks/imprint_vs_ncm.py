"""Few-shot learning on the device: ubiq's imprinting against a nearest-class-mean baseline.

```bash
.venv/bin/python benchmarks/imprint_vs_ncm.py [--workdir DIR] [--episodes 40]
.venv/bin/python benchmarks/imprint_vs_ncm.py --embedder real.onnx --data pictures/
```

Without ``--embedder``, two embedders are made from our own backbones, each trained on
classes that the evaluation never uses, and exported with ``ubiq export --task embed``:

- ``digits0-4``: MobileNetV2-0.5 classifier on scikit-learn's real handwritten digits
  0-4 (32 px), evaluated on the digits 5-9;
- ``photos3``: MobileNetV2-0.5 classifier on crops of cat, cup and rocket from ``ubiq
  data synth`` (real photographs composited on real backgrounds, 64 px), evaluated on
  crops of motorcycle, astronaut and coin.

and the embedder that ships with ubiq, ``ubiq-embed-mnv2`` (the trunk of the shipped
detector), on the ten digits (classes it never saw) and on ``ubiq data objects`` pictures
of the six classes its detector was trained on (not a novel-class test: there the
detector's features already separate the classes).

With ``--embedder FILE`` (repeatable) and ``--data DIR`` (one sub-folder per class, or
``DIR/train`` + ``DIR/val`` class folders), the given embedders are evaluated on ``DIR``.

Per episode and shots ``k``: ``k`` random support pictures per class, every other picture
of those classes as a query. Methods, all on the same embeddings:

- ``NCM``: the baseline, the class mean of the support pictures' raw embeddings, queries
  to the nearest mean in Euclidean distance;
- ``imprint``: ubiq's default (``build_head``: two views per picture, centring, unit
  length, cosine);
- ``imprint+refine``: the same with 20 numpy refinement steps (``--refine 20``);
- open set, with one class left out of the learned ones in turn: the share of known
  queries accepted (cosine at or above their answer's threshold) and of the left-out
  class's queries answered ``unknown``.

It also times ``ubiq learn --embedder ubiq-embed-mnv2 --threads 1`` on 10 classes x 5
pictures (the digits) through the CLI, start-up included.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ubiq.models.runtime.embed import Embedder  # noqa: E402
from ubiq.models.runtime.imprint import build_head, example_views  # noqa: E402
from ubiq.models.runtime.model import resolve_model_path  # noqa: E402

CLASS_NAMES = ("cat", "cup", "rocket", "motorcycle", "astronaut", "coin")


def ubiq(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ubiq", *args], check=True, capture_output=True)


def crop_set(synth: Path, out: Path, min_side: int = 24) -> Path:
    """Class folders of the labelled boxes of a ``ubiq data synth`` set."""
    for split in ("train", "val"):
        for image_path in sorted((synth / "images" / split).glob("*")):
            image = cv2.imread(str(image_path))
            height, width = image.shape[:2]
            labels = synth / "labels" / split / f"{image_path.stem}.txt"
            rows = labels.read_text().split("\n") if labels.exists() else []
            for index, row in enumerate(r for r in rows if r.strip()):
                cls, x, y, w, h = map(float, row.split()[:5])
                if w * width < min_side or h * height < min_side:
                    continue
                x1, y1 = max(0, int((x - w / 2) * width)), max(0, int((y - h / 2) * height))
                x2, y2 = int((x + w / 2) * width), int((y + h / 2) * height)
                folder = out / split / CLASS_NAMES[int(cls)]
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / f"{image_path.stem}_{index}.png"), image[y1:y2, x1:x2])
    return out


def subset(root: Path, out: Path, classes: list[str]) -> Path:
    for split in ("train", "val"):
        for name in classes:
            shutil.copytree(root / split / name, out / split / name, dirs_exist_ok=True)
    return out


def train_embedder(data: Path, run: Path, imgsz: int, epochs: int) -> Path:
    ubiq(
        "train", "--task", "classify", "--data", str(data), "--out", str(run),
        "--backbone", "mobilenet_v2", "--width", "0.5", "--epochs", str(epochs),
        "--imgsz", str(imgsz), "--batch", "32", "--threads", "1", "--quiet",
    )  # fmt: skip
    out = run / "embedder.onnx"
    ubiq("export", str(run / "weights" / "best.pt"), "--task", "embed", "--out", str(out))
    return out


def pictures(root: Path, classes: list[str] | None = None) -> dict[str, list[np.ndarray]]:
    """Every picture of a class-folder tree (both splits when it has them)."""
    roots = [root / "train", root / "val"] if (root / "train").is_dir() else [root]
    names = classes or sorted({p.name for r in roots for p in r.iterdir() if p.is_dir()})
    found = {}
    for name in names:
        paths = sorted(p for r in roots for p in (r / name).glob("*") if p.is_file())
        images = [cv2.imread(str(p)) for p in paths]
        found[name] = [image for image in images if image is not None]
    return found


def evaluate(embedder: Embedder, data: dict[str, list[np.ndarray]], shots, episodes, seed):
    names = list(data)
    start = time.perf_counter()
    views = {
        c: np.stack([[embedder(v) for v in example_views(im)] for im in data[c]]) for c in names
    }
    count = sum(len(v) for v in views.values()) * 2
    per_view_ms = (time.perf_counter() - start) / count * 1e3
    rng = np.random.default_rng(seed)
    rows = []
    for k in shots:
        scores: dict[str, list[float]] = {}
        for _ in range(episodes):
            support = {c: rng.choice(len(views[c]), k, replace=False) for c in names}
            queries, truth = [], []
            for index, name in enumerate(names):
                keep = np.ones(len(views[name]), bool)
                keep[support[name]] = False
                queries.append(views[name][keep, 0])
                truth += [index] * int(keep.sum())
            queries, truth = np.concatenate(queries), np.asarray(truth)
            means = np.stack([views[c][support[c], 0].mean(axis=0) for c in names])
            distance = ((queries[:, None, :] - means[None]) ** 2).sum(-1)
            scores.setdefault("NCM", []).append(float((distance.argmin(1) == truth).mean()))
            examples = {c: list(views[c][support[c]]) for c in names}
            for method, steps in (("imprint", 0), ("imprint+refine", 20)):
                head = build_head(examples, refine_steps=steps)
                answer = head.decide(queries)[0]
                scores.setdefault(method, []).append(float((answer == truth).mean()))
            if len(names) >= 3:
                left_out = names[int(rng.integers(len(names)))]
                known = [c for c in names if c != left_out]
                head = build_head({c: examples[c] for c in known})
                _, _, accepted = head.decide(queries)
                novel = truth == names.index(left_out)
                scores.setdefault("known accepted", []).append(float(accepted[~novel].mean()))
                scores.setdefault("novel rejected", []).append(float((~accepted[novel]).mean()))
        summary = {m: 100 * float(np.mean(v)) for m, v in scores.items()}
        # paired by episode: the same support and queries for both
        gain = 100 * (np.asarray(scores["imprint"]) - np.asarray(scores["NCM"]))
        margin = 2 * gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else 0.0
        summary["imprint - NCM (2 s.e.)"] = f"{gain.mean():+.1f} ({margin:.1f})"
        rows.append((k, summary))
    return rows, per_view_ms


def time_cli_learn(embedder: Path, digits: Path, work: Path) -> tuple[float, int]:
    data = work / "learn10x5"
    for name in sorted(p.name for p in (digits / "train").iterdir()):
        folder = data / name
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted((digits / "train" / name).glob("*.png"))[:5]:
            shutil.copy(path, folder / path.name)
    out = work / "learned10x5"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    ubiq("learn", "--embedder", str(embedder), "--data", str(data), "--out", str(out),
         "--threads", "1")  # fmt: skip
    return time.perf_counter() - start, 50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, help="keep data and embedders here")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--embedder", action="append", type=Path, help="embedder file(s)")
    parser.add_argument("--data", type=Path, help="class folders to evaluate --embedder on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="imprint-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cases = []
    if args.embedder:
        if not args.data:
            parser.error("--embedder needs --data")
        for path in args.embedder:
            cases.append((path.name, path, pictures(args.data)))
    else:
        digits = work / "digits"
        if not digits.exists():
            ubiq("data", "digits", "--out", str(digits), "--size", "32")
        synth = work / "synth"
        if not synth.exists():
            ubiq("data", "synth", "--out", str(synth), "--train", "400", "--val", "150",
                 "--imgsz", "256", "--seed", "3")  # fmt: skip
        crops = work / "crops"
        if not crops.exists():
            crop_set(synth, crops)
        for name, data, base, novel, imgsz, epochs in (
            ("digits0-4", digits, list("01234"), list("56789"), 32, 8),
            ("photos3", crops, list(CLASS_NAMES[:3]), list(CLASS_NAMES[3:]), 64, 10),
        ):
            run = work / f"run-{name}"
            if not (run / "embedder.onnx").exists():
                shutil.rmtree(run, ignore_errors=True)
                print(f"training the {name} embedder ...", flush=True)
                train_embedder(subset(data, work / f"base-{name}", base), run, imgsz, epochs)
            cases.append((name, run / "embedder.onnx", pictures(data, novel)))
        objects = work / "objects"
        if not objects.exists():
            ubiq("data", "objects", "--out", str(objects), "--train", "5", "--val", "40",
                 "--seed", "1")  # fmt: skip
        shipped = resolve_model_path("ubiq-embed-mnv2")
        cases.append(("ubiq-embed-mnv2 (novel: digits)", shipped, pictures(digits)))
        cases.append(("ubiq-embed-mnv2 (its detector's own classes)", shipped, pictures(objects)))
    for name, path, data in cases:
        embedder = Embedder.load(path, num_threads=1)
        sizes = ", ".join(f"{c} {len(v)}" for c, v in data.items())
        print(f"\n{name} ({embedder.dim} values) on {sizes} pictures, {args.episodes} episodes")
        rows, per_view_ms = evaluate(embedder, data, args.shots, args.episodes, args.seed)
        methods = list(rows[0][1])
        print("| shots | " + " | ".join(methods) + " |")
        print("|---" * (len(methods) + 1) + "|")
        for k, scores in rows:
            cells = [v if isinstance(v, str) else f"{v:.1f}" for v in map(scores.get, methods)]
            print(f"| {k} | " + " | ".join(cells) + " |")
        print(
            f"embedding: {per_view_ms:.2f} ms a view, {2 * per_view_ms:.2f} ms a picture (1 thread)"
        )
    if not args.embedder:
        seconds, count = time_cli_learn(shipped, digits, work)
        print(
            f"\nubiq learn --embedder ubiq-embed-mnv2 --threads 1, 10 classes x 5 pictures: "
            f"{seconds:.2f} s for the whole command (start-up included), "
            f"{seconds / count * 1e3:.0f} ms a picture"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
