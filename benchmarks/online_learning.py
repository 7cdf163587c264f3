"""Online learning, one pass, same frames in the same order: FF through ffcore.online against its
frozen control and the rivals a user would pick instead.

Each training image is a "boring video" of ``repeat`` frames; ``streams`` streams take images in
turn and advance one frame per step. Conditions:
  (a) service -- the embedded system (REST API, Redis, wake and sleep workers), default
      settings, the same streams posted over HTTP (``ffstream replay``; ``--service``);
  (b) service-frozen -- the same with FFS_FREEZE=true (``--service``);
      ``--service-variants``: (a) again with other settings, in the same run;
  (c) interleaved -- ffcore.online: every step's positive gradient applied at once, then the
      negatives computed on the updated weights and applied (staleness 0);
  (d) wake-sleep -- the service's rhythm in-process: positives accumulated over ``window``
      frames, a dream of ``sleep_sample`` of them, the negatives applied before the next step;
      ``--staleness`` > 0 applies them that many positive steps late; "deferred" holds the
      positive step back with its negatives (the service's rhythm: the sleep worker dreams on
      the weights the step would make, ``OnlineLearner.lookahead``, which include the step
      before it; frames stepped meanwhile see weights one whole step old);
      ``--matched-windows``: (c) and the deferred (d) with steps of the same size, side by side;
  (ff-frozen) -- (d) with the FF layers frozen: only the readout learns;
  (e) logistic regression on raw pixels, SGD, one image at a time;
  (f) a backprop MLP of the same widths, Adam, one image at a time.
Every condition is scored on the same held-out test images.

    python benchmarks/online_learning.py --data-dir ../shared/data/mnist --images 50000 --out docs/online_learning.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffcore.data.datasets import load_dataset
from ffcore.experiment import hardware
from ffcore.metrics import error_rate
from ffcore.checkpoint import load_bytes_into, to_bytes
from ffcore.online import FFGradient, OnlineLearner, negative_gradient
from ffcore.recurrent import RecurrentFF
from service import model as model_io
from service.settings import Settings


def ff_online(settings: Settings, x, y, x_test, y_test, *, streams: int, repeat: int, window: int, staleness: int,
              seed: int, defer: bool = False, learner: OnlineLearner | None = None,
              step_frames: int | None = None) -> dict:
    """(c), (d) and the frozen control through ffcore.online, with the service's model settings.
    ``learner``: learn this one's model (say, to go on from it afterwards) instead of a new one.
    ``step_frames``: a step of fewer frames is scaled down as if it had this many (the service's
    ``FFS_WAKE_WINDOW``, for windows closed early); None: ``window``, every step a full mean."""
    torch.manual_seed(seed)
    if learner is None:
        learner = OnlineLearner(RecurrentFF(model_io.recurrent_config(settings)), model_io.online_config(settings))
    learner.config = dataclasses.replace(learner.config, step_frames=step_frames or window)
    model = learner.model
    dtype = model_io.DREAM_DTYPES[settings.dream_dtype]
    gen = torch.Generator().manual_seed(seed)
    pending, hits, start = [], 0, time.perf_counter()
    state = model.initial_state(x[:streams])
    for i in range(0, len(x) - streams + 1, streams):
        xb, yb = x[i : i + streams], y[i : i + streams]
        for _ in range(repeat):
            out = learner.learn_step(xb, yb, state)
            state, hits = out.state, hits + int((out.logits.argmax(1) == yb).sum())
            if learner.positive.count >= window:
                positive, sample = learner.take_positive(), learner.take_replay()
                # Deferred, the service steps only once the last dream's negatives are back
                # (service.wake.rhythm): the steps still pending go in before the new dream's
                # weights are made, so with staleness 1 those weights include the step before.
                while defer and pending and len(pending) >= staleness:
                    for g in pending.pop(0):
                        learner.apply(g)
                if defer:  # the service's rhythm: the dream's weights look ahead, the live ones wait
                    ahead = learner.lookahead(positive)
                    if dtype != torch.float32:  # what FFS_DREAM_DTYPE does to the weights on the way
                        ahead = load_bytes_into(ahead, to_bytes(ahead, dtype))
                else:
                    learner.apply(positive)
                    ahead = model
                grads = [positive] if defer else []
                if not settings.freeze:
                    wrong = ahead.negative_labels(sample.frames, sample.labels, gen)
                    negative = negative_gradient(ahead, sample.frames, wrong, settings.sleep_iterations, sample.state)
                    if defer and dtype != torch.float32:  # ... and to the gradient coming back
                        negative = FFGradient.from_bytes(negative.to_bytes(dtype))
                    grads.append(negative)
                pending.append(grads)
                while len(pending) > staleness:
                    for g in pending.pop(0):
                        learner.apply(g)
    seconds = time.perf_counter() - start
    frames = (len(x) // streams) * streams * repeat
    return {"test_error": error_rate(model.predict_fast(x_test).argmax(1), y_test),
            "prequential_error": 1 - hits / frames, "frames": frames, "seconds": seconds}


def service_run(args, freeze: bool, settings_env: dict[str, str] | None = None) -> dict:
    """The embedded system on free ports, fed by ``ffstream replay``'s streams over HTTP;
    ``settings_env``: FFS_* settings of its processes besides the defaults."""
    import tempfile

    from rich.console import Console

    from service.embedded import free_port
    from service.replay import run_replay

    start = time.perf_counter()
    # Redis's files and the checkpoints: removed when done, whatever happens
    with tempfile.TemporaryDirectory(prefix="ffs-online-", ignore_cleanup_errors=True) as tmp:
        workdir = Path(tmp)
        # the embedded system's processes read their settings from the environment, as in production
        env = {"FFS_FREEZE": str(freeze).lower(), "FFS_PORT": str(free_port()),
               "FFS_WAKE_METRICS_PORT": str(free_port()), "FFS_SLEEP_METRICS_PORT": str(free_port()),
               "FFS_CHECKPOINT_DIR": str(workdir), "FFS_MAX_STREAM_FPS": "1e6", **(settings_env or {})}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            out = workdir / "replay.json"
            code = run_replay(Settings(), data_dir=args.data_dir, dataset=args.dataset,
                              frames=args.images * args.repeat, streams=args.streams, repeat=args.repeat,
                              test_size=args.test_size, evaluations=5, out=out, console=Console(stderr=True))
            replay = json.loads(out.read_text()) if not code else None
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    if code:
        raise SystemExit(f"replay failed with status {code}")
    return {"test_error": replay["curve"][-1]["test_error"], "prequential_error": float("nan"),
            "curve": replay["curve"], "frames_per_second": replay["frames_per_second"],
            **{k: replay[k] for k in ("positive_steps", "negatives_applied", "negatives_missed",
                                      "negatives_rejected_stale")},
            "seconds": time.perf_counter() - start}


def logistic_regression(x, y, x_test, y_test, *, num_classes: int, lr: float = 0.01) -> dict:
    w = torch.zeros(x.shape[1] + 1, num_classes)
    xa = torch.cat([x, torch.ones(len(x), 1)], 1)
    hits, start = 0, time.perf_counter()
    for i in range(len(x)):
        logits = xa[i] @ w
        hits += int(logits.argmax() == y[i])
        p = torch.softmax(logits, 0)
        p[y[i]] -= 1
        w -= lr * torch.outer(xa[i], p)
    pred = (torch.cat([x_test, torch.ones(len(x_test), 1)], 1) @ w).argmax(1)
    return {"test_error": error_rate(pred, y_test), "prequential_error": 1 - hits / len(x),
            "seconds": time.perf_counter() - start}


def backprop_mlp(x, y, x_test, y_test, *, widths, num_classes: int, seed: int) -> dict:
    torch.manual_seed(seed)
    dims = (x.shape[1], *widths)
    layers = [m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
    net = nn.Sequential(*layers, nn.Linear(dims[-1], num_classes))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    hits, start = 0, time.perf_counter()
    for i in range(len(x)):
        logits = net(x[i : i + 1])
        hits += int(logits.argmax() == y[i])
        loss = F.cross_entropy(logits, y[i : i + 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = net(x_test).argmax(1)
    return {"test_error": error_rate(pred, y_test), "prequential_error": 1 - hits / len(x),
            "seconds": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=2, help="frames per image")
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--staleness", type=int, nargs="*", default=[1])
    ap.add_argument("--windows", type=int, nargs="*", default=[],
                    help="also (d) with these windows (frames per positive step; the service's own is larger "
                    "than FFS_WAKE_WINDOW when a step waits for the sleep worker)")
    ap.add_argument("--deferred-windows", type=int, nargs="*", default=[],
                    help="also the deferred rhythm (staleness 1) with positive steps of this many frames, each "
                    "phase's step sized as the service sizes it (the mean over its frames, at least FFS_WAKE_WINDOW)")
    ap.add_argument("--matched-windows", type=int, nargs="*", default=[],
                    help="also (c) and the deferred rhythm (d) with positive steps of these many frames each, "
                    "every step a full mean: what separating the phases costs at a matched step size")
    ap.add_argument("--learning-rates", type=float, nargs="*", default=[],
                    help="also (c), (d) and (d) deferred with these FFS_LEARNING_RATE values")
    ap.add_argument("--dream-dtypes", nargs="*", default=[], choices=list(model_io.DREAM_DTYPES),
                    help="also the deferred rhythm with dreams (weights out, gradient back) in these precisions")
    ap.add_argument("--test-size", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-rivals", action="store_true")
    ap.add_argument("--service", action="store_true", help="also (a) and (b): the service through its REST API")
    ap.add_argument("--service-variants", nargs="*", default=[], metavar="NAME:FFS_X=V,FFS_Y=W",
                    help="also the service with these settings (say, the rhythm's FFS_WAKE_WINDOW_MAX)")
    ap.add_argument("--out", type=Path, default=Path("docs/online_learning.json"))
    args = ap.parse_args()
    variants = {}
    for spec in args.service_variants:
        name, _, pairs = spec.partition(":")
        try:
            env = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
        except ValueError:
            ap.error(f"--service-variants {spec!r}: expected NAME:FFS_X=V,FFS_Y=W")
        if not name or not env or not all(k.startswith("FFS_") for k in env):
            ap.error(f"--service-variants {spec!r}: expected NAME:FFS_X=V,FFS_Y=W")
        variants[name] = env
    torch.set_num_threads(1)

    os.environ.setdefault("FFS_INPUT_DIM", "784")
    settings = Settings()
    data = load_dataset(args.dataset, args.data_dir, seed=args.seed)
    x, y = data.train_x[: args.images], data.train_y[: args.images]
    x_test, y_test = data.test_x[: args.test_size], data.test_y[: args.test_size]
    results = {}

    def report(name, r):
        results[name] = r
        print(f"{name:28s} test error {100 * r['test_error']:6.2f}%  prequential {100 * r['prequential_error']:6.2f}%"
              f"  ({r['seconds']:.0f} s)", flush=True)

    if args.service:
        for name, freeze in (("a service", False), ("b service-frozen", True)):
            report(name, service_run(args, freeze))
    for name, env in variants.items():
        report(f"a service, {name}", {**service_run(args, False, env), "settings": env})
    common = dict(streams=args.streams, repeat=args.repeat, seed=args.seed)
    report("c interleaved", ff_online(settings, x, y, x_test, y_test, window=args.streams, staleness=0, **common))
    report("d wake-sleep", ff_online(settings, x, y, x_test, y_test, window=settings.wake_window, staleness=0,
                                     **common))
    for s in args.staleness:
        report(f"d wake-sleep staleness {s}", ff_online(settings, x, y, x_test, y_test, window=settings.wake_window,
                                                         staleness=s, **common))
    for s in args.staleness:
        report(f"d deferred staleness {s}", ff_online(settings, x, y, x_test, y_test, window=settings.wake_window,
                                                       staleness=s, defer=True, **common))
    for dtype in args.dream_dtypes:
        at = settings.model_copy(update={"dream_dtype": dtype})
        report(f"d deferred, {dtype} dreams", ff_online(at, x, y, x_test, y_test, window=at.wake_window, staleness=1,
                                                        defer=True, **common))
    for w in args.windows:
        report(f"d wake-sleep window {w}", ff_online(settings, x, y, x_test, y_test, window=w, staleness=0,
                                                     step_frames=settings.wake_window, **common))
    for w in args.deferred_windows:
        report(f"d deferred window {w}", ff_online(settings, x, y, x_test, y_test, window=w, staleness=1, defer=True,
                                                   step_frames=settings.wake_window, **common))
    for w in args.matched_windows:
        report(f"c interleaved, steps of {w}", ff_online(settings, x, y, x_test, y_test, window=w, staleness=0,
                                                         **common))
        report(f"d deferred, steps of {w}", ff_online(settings, x, y, x_test, y_test, window=w, staleness=1,
                                                      defer=True, **common))
    for lr in args.learning_rates:
        at = settings.model_copy(update={"learning_rate": lr})
        report(f"c interleaved lr {lr:g}", ff_online(at, x, y, x_test, y_test, window=args.streams, staleness=0,
                                                     **common))
        report(f"d wake-sleep lr {lr:g}", ff_online(at, x, y, x_test, y_test, window=at.wake_window, staleness=0,
                                                    **common))
        report(f"d deferred lr {lr:g}", ff_online(at, x, y, x_test, y_test, window=at.wake_window, staleness=1,
                                                  defer=True, **common))
    frozen = settings.model_copy(update={"freeze": True})
    report("ff-frozen", ff_online(frozen, x, y, x_test, y_test, window=settings.wake_window, staleness=0, **common))
    if not args.skip_rivals:
        report("e logistic regression", logistic_regression(x, y, x_test, y_test, num_classes=data.num_classes))
        report("f backprop MLP", backprop_mlp(x, y, x_test, y_test, widths=settings.widths,
                                              num_classes=data.num_classes, seed=args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "hardware": hardware(), "args":
                                    {k: str(v) for k, v in vars(args).items()},
                                    "settings": settings.model_dump(exclude={"redis_url", "api_keys"}),
                                    "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
