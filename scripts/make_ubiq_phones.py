"""Trains ``ubiq-phones``: the phone recogniser behind ``ubiq listen --commands`` with no model.

One CTC model for any command list, trained once on speech of a broad vocabulary
(``ubiq/data/phones-vocabulary.txt``, 4000 common English words, plus random words of
PocketSphinx's CMU dictionary): espeak-ng in 6 English accents x 26 voice variants, and
flite's five voices built from real speakers (``--flite-clips``, labelled with the CMU
dictionary; without them the model hears espeak-ng well and real people not at all), at
speeds and pitches drawn at random, through white, pink and brown noise (0-30 dB), simulated rooms,
speed changes and level changes. The voices of ``benchmarks/speech_bar.py``
(``en-gb-scotland+m5``, ``en+f4``, ``en-us-nyc``) and the speeds it uses (130 and 170 wpm)
are never used: the accents Scottish and New York and the variants f4 and m5 are left out
altogether.

    .venv/bin/python scripts/make_ubiq_phones.py --out ubiq/data/models/ubiq-phones.onnx

writes the ONNX model (input ``features`` (1, 40, frames): log-mel features with each band's
mean removed; output ``log_probs`` (1, steps, 40): blank + 39 ARPAbet phones every 20 ms)
and its manifest ``.json``. Synthesised speech is cached in ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = (
    "", "m1", "m2", "m3", "m4", "m6", "m7", "m8", "f1", "f2", "f3", "f5", "klatt", "klatt2",
    "klatt3", "Andy", "Annie", "Michael", "Alex", "Alicia", "Andrea", "Denis", "Gene", "Lee",
    "Mike", "belinda",
)  # fmt: skip
HELD_OUT_SPEEDS = (130, 170)


def _voice(rng: np.random.Generator) -> str:
    accent = ACCENTS[rng.integers(len(ACCENTS))]
    variant = VARIANTS[rng.integers(len(VARIANTS))]
    return f"{accent}+{variant}" if variant else accent


def _speed(rng: np.random.Generator) -> int:
    while True:
        speed = int(rng.integers(95, 226))
        if all(abs(speed - held) > 3 for held in HELD_OUT_SPEEDS):
            return speed


def _texts(count: int, seed: int) -> list[str]:
    from ubiq.pipelines.speech.phones import cmu_dictionary, everyday_words

    vocabulary = list(everyday_words())
    rare = [word for word in cmu_dictionary() if re.fullmatch(r"[a-z]{3,12}", word)]
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(count):
        words = []
        for _ in range(int(rng.integers(1, 5))):
            pool = rare if rng.random() < 0.25 else vocabulary
            words.append(pool[rng.integers(len(pool))])
        texts.append(" ".join(words))
    return texts


FLITE_VOICES = ("slt", "rms", "awb", "kal16", "kal")
"""Flite's English voices, built from recordings of real speakers (kal is 8 kHz)."""


def _flite(job: tuple[str, str, float, float]) -> tuple[np.ndarray, list[str]] | None:
    """One clip by flite, labelled with the CMU dictionary's phones (flite's own lexicon)."""
    from ubiq.models.runtime.audio_features import read_wav, resample
    from ubiq.pipelines.speech.phones import PHONES, cmu_dictionary, to_phones

    text, voice, stretch, pitch = job
    phones: list[str] = []
    for word in text.split():
        known = cmu_dictionary().get(word)
        if known is None:
            done = subprocess.run(["espeak-ng", "-q", "-x", "-v", "en-us", "--", word],
                                  capture_output=True, text=True, check=False)  # fmt: skip
            known = to_phones(done.stdout)
        phones += [p for p in known if p in PHONES]
    with tempfile.TemporaryDirectory(prefix="ubiq-phones-") as folder:
        wav = Path(folder) / "s.wav"
        done = subprocess.run(
            ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.2f}", "--setf",
             f"int_f0_target_mean={pitch:.0f}", "-t", text, "-o", str(wav)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not wav.is_file():
            return None
        samples, rate = read_wav(wav)
    if not phones or len(samples) == 0:
        return None
    audio = resample(samples, rate, 16000)
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16), phones


def _flite_job(text: str, rng: np.random.Generator) -> tuple[str, str, float, float]:
    voice = FLITE_VOICES[rng.integers(len(FLITE_VOICES))]
    base = 170.0 if voice == "slt" else 105.0
    return text, voice, float(rng.uniform(0.75, 1.35)), float(base * rng.uniform(0.8, 1.25))


def _synthesize(job: tuple[str, str, int, int]) -> tuple[np.ndarray, list[str]] | None:
    from ubiq.models.runtime.audio_features import read_wav, resample
    from ubiq.pipelines.speech.phones import to_phones

    text, voice, speed, pitch = job
    with tempfile.TemporaryDirectory(prefix="ubiq-phones-") as folder:
        wav = Path(folder) / "s.wav"
        done = subprocess.run(
            ["espeak-ng", "-x", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav),
             "--", text],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not wav.is_file():
            return None
        samples, rate = read_wav(wav)
    phones = to_phones(done.stdout)
    if not phones or len(samples) == 0:
        return None
    audio = resample(samples, rate, 16000)
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16), phones


def synthesize(
    count: int, seed: int, workdir: Path, engine: str = "espeak"
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from tqdm import tqdm

    from ubiq.pipelines.speech.phones import phone_ids

    cache = workdir / (f"speech-{count}-{seed}.npz" if engine == "espeak" else
                       f"{engine}-{count}-{seed}.npz")  # fmt: skip
    if cache.is_file():
        data = np.load(cache)
        audio = np.split(data["audio"], data["audio_ends"][:-1])
        labels = np.split(data["labels"], data["label_ends"][:-1])
        return audio, labels
    rng = np.random.default_rng(seed)
    if engine == "espeak":
        jobs = [
            (text, _voice(rng), _speed(rng), int(rng.integers(25, 76)))
            for text in _texts(count, seed)
        ]
    else:
        jobs = [_flite_job(text, rng) for text in _texts(count, seed + 1)]
    work = _synthesize if engine == "espeak" else _flite
    audio, labels = [], []
    with ProcessPoolExecutor(2) as pool:
        results = pool.map(work, jobs, chunksize=32)
        for result in tqdm(results, total=count, desc=engine):
            if result is not None:
                audio.append(result[0])
                labels.append(phone_ids(result[1]))
    workdir.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        audio=np.concatenate(audio),
        audio_ends=np.cumsum([len(a) for a in audio]),
        labels=np.concatenate(labels),
        label_ends=np.cumsum([len(x) for x in labels]),
    )
    return audio, labels


def _room(rng: np.random.Generator) -> np.ndarray:
    from ubiq.models.datasets.speech import room_impulse_response

    return room_impulse_response(rng)


_NOISE: dict[str, np.ndarray] = {}


def _noise(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random stretch of a minute of unit-RMS noise of ``kind`` (made once)."""
    from ubiq.models.datasets.speech import colored_noise

    if kind not in _NOISE:
        _NOISE[kind] = colored_noise(kind, 60 * 16000, np.random.default_rng(len(kind)))
    start = int(rng.integers(0, len(_NOISE[kind]) - length))
    return _NOISE[kind][start : start + length]


def augment(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One training view of a clip: speed, room, padding, noise, level."""
    from scipy.signal import fftconvolve

    x = clip.astype(np.float32) / 32767
    if rng.random() < 0.5:
        factor = rng.uniform(0.88, 1.12)
        grid = np.arange(0, len(x) - 1, factor)
        x = np.interp(grid, np.arange(len(x)), x).astype(np.float32)
    if rng.random() < 0.25:
        x = fftconvolve(x, _room(rng))[: len(x) + 2400].astype(np.float32)
    speech_power = float(np.mean(x**2)) + 1e-10
    before, after = (int(rng.uniform(0.05, 0.35) * 16000) for _ in range(2))
    x = np.concatenate([np.zeros(before, np.float32), x, np.zeros(after, np.float32)])
    if rng.random() < 0.85:
        snr = rng.uniform(0, 30)
        kind = ("white", "pink", "brown")[rng.integers(3)]
        x = x + _noise(kind, len(x), rng) * math.sqrt(speech_power / 10 ** (snr / 10))
    else:
        x = x + rng.normal(0, 1e-4, len(x)).astype(np.float32)
    x = x * rng.uniform(0.1, 1.0) / max(float(np.abs(x).max()), 1e-6)
    return x.astype(np.float32)


def build_model(width: int = 128, blocks: int = 6):
    import torch
    from torch import nn

    from ubiq.pipelines.speech.phones import PHONES

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv1d(width, width, 9, padding=4, groups=width, bias=False),
                nn.BatchNorm1d(width),
                nn.Conv1d(width, width, 1, bias=False),
                nn.BatchNorm1d(width),
                nn.ReLU(),
                nn.Dropout(0.1),
            )

        def forward(self, x):
            return x + self.body(x)

    class PhoneNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv1d(40, width, 5, stride=2, padding=2, bias=False),
                nn.BatchNorm1d(width),
                nn.ReLU(),
            )
            self.blocks = nn.Sequential(*[Block() for _ in range(blocks)])
            self.head = nn.Conv1d(width, len(PHONES) + 1, 1)

        def forward(self, features):
            x = self.head(self.blocks(self.stem(features)))
            return torch.log_softmax(x, dim=1).transpose(1, 2)

    return PhoneNet()


def _batch(audio, labels, indices, rng):
    import torch

    from ubiq.pipelines.speech.phones import FEATURES, normalize_features

    clips = [augment(audio[i], rng) for i in indices]
    longest = max(len(c) for c in clips)
    padded = np.zeros((len(clips), longest), np.float32)
    for k, c in enumerate(clips):
        padded[k, : len(c)] = c
    mel = FEATURES(padded)  # one batched call
    frames = [FEATURES(c[:480]).shape[1] + (len(c) - 480) // 160 for c in clips]
    x = np.empty_like(mel)
    for k, n in enumerate(frames):
        x[k, :, :n] = normalize_features(mel[k, :, :n])
        x[k, :, n:] = x[k, :, n - 1 : n]  # pad with the last frame (the noise floor)
    steps = [(n + 1) // 2 for n in frames]
    targets = [torch.from_numpy(labels[i]) for i in indices]
    return (
        torch.from_numpy(x),
        torch.tensor(steps),
        torch.cat(targets),
        torch.tensor([len(t) for t in targets]),
    )


def _greedy_errors(log_probs, steps, targets_list) -> tuple[int, int]:
    errors = total = 0
    best = log_probs.argmax(-1).numpy()
    for row, n, target in zip(best, steps, targets_list):
        path = row[:n]
        decoded = [int(p) for k, p in enumerate(path) if p != 0 and (k == 0 or p != path[k - 1])]
        errors += _edit_distance(decoded, list(target))
        total += len(target)
    return errors, total


def _edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("ubiq/data/models/ubiq-phones.onnx"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ubiq-phones"))
    parser.add_argument("--clips", type=int, default=20000)
    parser.add_argument("--flite-clips", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from ubiq.pipelines.speech.phones import FEATURES, PHONES

    if shutil.which("espeak-ng") is None:
        print("error: espeak-ng is not installed", file=sys.stderr)
        return 1
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.time()
    audio, labels = synthesize(args.clips, args.seed, args.workdir)
    if args.flite_clips:
        if shutil.which("flite") is None:
            print("error: flite is not installed (sudo apt-get install flite)", file=sys.stderr)
            return 1
        more_audio, more_labels = synthesize(args.flite_clips, args.seed, args.workdir, "flite")
        audio += more_audio
        labels += more_labels
    print(f"{len(audio)} clips, {sum(len(a) for a in audio) / 16000 / 3600:.1f} h")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(audio))
    val, train = order[:400], order[400:]
    model = build_model()
    print(f"{sum(p.numel() for p in model.parameters())} parameters")
    steps_per_epoch = len(train) // args.batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, 3e-3, total_steps=args.epochs * steps_per_epoch, pct_start=0.1
    )
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    val_rng = np.random.default_rng(1234)
    val_batches = [
        _batch(audio, labels, val[k : k + 50], val_rng) + (val[k : k + 50],)
        for k in range(0, len(val), 50)
    ]
    best = math.inf
    for epoch in range(args.epochs):
        model.train()
        # Similar lengths together: less padding, faster steps.
        shuffled = rng.permutation(train)
        chunks = [
            shuffled[k : k + args.batch * 50] for k in range(0, len(shuffled), args.batch * 50)
        ]
        batches = []
        for chunk in chunks:
            chunk = chunk[np.argsort([len(audio[i]) for i in chunk])]
            batches += [chunk[k : k + args.batch] for k in range(0, len(chunk), args.batch)]
        total = 0.0
        tick = time.time()
        for step, index in enumerate(rng.permutation(len(batches))[:steps_per_epoch]):
            x, steps, targets, target_lengths = _batch(audio, labels, batches[index], rng)
            log_probs = model(x)
            loss = ctc(log_probs.transpose(0, 1), targets, steps, target_lengths)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            schedule.step()
            total += float(loss)
            if step % 100 == 0:
                mean = total / (step + 1)
                print(f"  epoch {epoch + 1} step {step}/{steps_per_epoch} loss {mean:.3f} "
                      f"({time.time() - tick:.0f} s)", flush=True)  # fmt: skip
        model.eval()
        errors = count = 0
        with torch.no_grad():
            for x, steps, _, _, indices in val_batches:
                e, n = _greedy_errors(model(x), steps, [labels[i] for i in indices])
                errors += e
                count += n
        per = errors / count
        print(f"epoch {epoch + 1}: loss {total / steps_per_epoch:.3f}, phone error rate {per:.3f}, "
              f"{time.time() - started:.0f} s", flush=True)  # fmt: skip
        if per < best:
            best = per
            torch.save(model.state_dict(), args.workdir / "best.pt")
    model.load_state_dict(torch.load(args.workdir / "best.pt"))
    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(1, 40, 200),),
        str(args.out),
        input_names=["features"],
        output_names=["log_probs"],
        dynamic_axes={"features": {2: "frames"}, "log_probs": {1: "steps"}},
        opset_version=17,
        dynamo=False,
    )
    manifest = {
        "name": args.out.stem,
        "task": "phones",
        "format": "onnx",
        "labels": ["<blank>", *PHONES],
        "features": FEATURES.to_dict(),
        "normalize": "per-band mean over the utterance removed",
        "stride": 2,
        "training": {
            "clips": len(audio),
            "hours": round(sum(len(a) for a in audio) / 16000 / 3600, 2),
            "epochs": args.epochs,
            "seed": args.seed,
            "phone_error_rate": round(best, 4),
            "flite_clips": args.flite_clips,
            "flite_voices": list(FLITE_VOICES),
            "accents": list(ACCENTS),
            "variants": [v for v in VARIANTS if v],
            "held_out": "accents en-gb-scotland and en-us-nyc, variants f4 and m5, speeds 130 "
            "and 170 wpm",
            "script": "scripts/make_ubiq_phones.py",
        },
    }
    args.out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.out} (phone error rate {best:.3f} on 400 training-voice clips)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
