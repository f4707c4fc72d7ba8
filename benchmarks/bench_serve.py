"""The playground: how long from `diffusionlab serve RUN` to the first image, on a trained run (issue 19).

    python benchmarks/bench_serve.py --run RUN_DIR [--repeats 5] [--write]

Each repeat starts `diffusionlab serve RUN --port 0` cold (a new process: Python, torch and the run load from
scratch), asks for what the page asks by default (the family's own sampler, min(its default steps, 50), seed 0, one
image), and times: the server listening, the first streamed frame of x_t, and the finished image. Medians over the
repeats, one server at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, publish  # noqa: E402

HEADING = "## The playground: from `serve` to the first image (issue 19)"


def once(run: str) -> dict[str, float]:
    """One cold start: seconds to listening, to the first frame and to the image; the job's own seconds and NFE."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "diffusionlab.cli", "serve", run, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        line = proc.stdout.readline()
        if not line.startswith("playground: "):
            sys.exit(f"serve did not start: {line}{proc.stderr.read()}")
        listening = time.perf_counter() - t0
        url = line.split()[1].rstrip("/")
        with urllib.request.urlopen(url + "/api/runs") as r:
            info = json.loads(r.read())["runs"][0]
        body = {"run": info["id"], "seed": 0, "n": 1}
        if info["samplers"]:
            sampler = info["default_sampler"]
            body.update(sampler=sampler, steps=min(info["default_steps"][sampler], 50))
        req = urllib.request.Request(url + "/api/jobs", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            job = json.loads(r.read())["job"]
        first_frame = None
        with urllib.request.urlopen(f"{url}/api/jobs/{job}/events") as r:
            for raw in r:
                text = raw.decode()
                if text.startswith("data: "):
                    event = json.loads(text[6:])
                    if event["type"] == "step" and first_frame is None:
                        first_frame = time.perf_counter() - t0
                    if event["type"] == "done":
                        return {"listening": listening, "first_frame": first_frame or float("nan"),
                                "image": time.perf_counter() - t0, "job": event["seconds"], "nfe": event["nfe"],
                                "sampler": f"{body.get('sampler', info['family'])} {body.get('steps', '')}".strip()}
                    if event["type"] in ("failed", "cancelled"):
                        sys.exit(f"job {event['type']}: {event}")
        sys.exit("the event stream ended without an image")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a trained run (e.g. of the digits preset)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--write", action="store_true", help="put the section into BENCHMARKS.md")
    args = p.parse_args()
    rows = [once(args.run) for _ in range(args.repeats)]
    for r in rows:
        print(json.dumps(r), flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in ("listening", "first_frame", "image", "job")}
    config = json.loads((Path(args.run) / "config.json").read_text())
    body = "\n".join([
        f"- Machine: {machine()}; date {time.strftime('%Y-%m-%d')}",
        f"- Command: `python benchmarks/bench_serve.py --run RUN --repeats {args.repeats} --write`, RUN a "
        f"`{config.get('preset', '?')}` preset run; each repeat a cold `diffusionlab serve RUN --port 0` (default "
        "threads and precision), then the page's default request: "
        f"{rows[0]['sampler']} steps, one image, seed 0 (NFE {rows[0]['nfe']})",
        "",
        "| from `serve` to ... (median of {} cold starts) | seconds |".format(args.repeats),
        "|---|---|",
        f"| listening (Python, torch, FastAPI and the run loaded) | {med['listening']:.2f} |",
        f"| the first streamed x_t frame | {med['first_frame']:.2f} |",
        f"| the finished image | {med['image']:.2f} |",
        f"| (the sampling job itself) | {med['job']:.2f} |",
    ])
    publish(HEADING, body, args.write)


if __name__ == "__main__":
    main()
