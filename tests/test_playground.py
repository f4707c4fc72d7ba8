"""`diffusionlab serve`, the web playground: its HTTP API (what it streams, what it refuses) and the page itself,
driven end to end in a real headless browser (Debian's chromium, through Playwright).

The server runs as `diffusionlab serve RUN... --port 0` in a subprocess, on tiny runs trained here. The images it
returns are the API's (`dl.load_run(...).sample`, `.inpaint`, `.edit`) for the same seed, bit for bit.

Set DIFFUSIONLAB_PLAYGROUND_RUNS=runs/a:runs/b to drive the page on real runs instead; the screenshots then go into
docs/ (that is how the README's screenshot is made). Without chromium the browser test fails with the install
command: it never skips.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from PIL import Image

import diffusionlab as dl

from helpers import TINY

ROOT = Path(__file__).resolve().parents[1]
REAL_RUNS = os.environ.get("DIFFUSIONLAB_PLAYGROUND_RUNS")


def chromium() -> str:
    """Debian's chromium, or a failure that says how to install it (never a skip)."""
    path = os.environ.get("DIFFUSIONLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("the browser test needs Debian's chromium: apt-get install -y chromium "
                    "(or set DIFFUSIONLAB_CHROMIUM to a Chromium binary)")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny runs: unconditional and class-conditional DDPM on digits, and a VAE (a baseline: no sampler)."""
    root = tmp_path_factory.mktemp("playground")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {
        "uncond": dl.train({**TINY, "train": {**TINY["train"], "steps": 8}}, root / "uncond", progress=False).path,
        "cond": dl.train({**TINY, "train": {**TINY["train"], "steps": 4, "class_conditional": True}}, root / "cond",
                         progress=False).path,
        "vae": dl.train({"train": {"steps": 2, "checkpoint_every": 2}, "model": {"base_channels": 8, "latent_dim": 4}},
                        root / "vae", preset="digits-vae", progress=False).path,
    }
    torch.set_num_threads(before)
    return out


class Server:
    """`diffusionlab serve` in a subprocess, on a free port."""

    def __init__(self, *args: str):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "diffusionlab.cli", "serve", *args, "--port", "0",
                                      "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        line = self.proc.stdout.readline()  # "playground: http://127.0.0.1:PORT/ ..." once it listens
        if not line.startswith("playground: "):
            self.proc.kill()
            raise AssertionError(f"serve did not start: {line!r} {self.proc.stderr.read()}")
        self.url = line.split()[1].rstrip("/")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        """(status, JSON body) of a request."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def events(self, job: str) -> Iterator[dict[str, Any]]:
        """The job's server-sent events, parsed, until its last one."""
        with urllib.request.urlopen(f"{self.url}/api/jobs/{job}/events", timeout=120) as r:
            kind = None
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    event = json.loads(line[6:])
                    assert event["type"] == kind
                    yield event
                    if kind in ("done", "failed", "cancelled"):
                        return

    def job(self, **body: Any) -> list[dict[str, Any]]:
        """Submit a job and read all its events."""
        status, res = self.call("POST", "/api/jobs", body)
        assert status == 200, res
        return list(self.events(res["job"]))


@pytest.fixture(scope="module")
def server(runs: dict[str, Path]) -> Iterator[Server]:
    s = Server(*(str(p) for p in runs.values()), "--frame-interval", "0")
    yield s
    s.stop()


def png(url: str) -> np.ndarray:
    """A PNG data URL as a uint8 array (H, W) or (H, W, C)."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def png_url(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ---- the HTTP API ------------------------------------------------------------------------------------------------

def test_lists_the_runs_with_what_each_can_do(server: Server):
    status, res = server.call("GET", "/api/runs")
    assert status == 200
    by_id = {r["id"]: r for r in res["runs"]}
    assert set(by_id) == {"uncond", "cond", "vae"}
    u = by_id["uncond"]
    assert (u["family"], u["channels"], u["height"], u["width"], u["T"]) == ("ddpm", 1, 8, 8, 100)
    assert u["modes"] == ["sample", "inpaint", "edit"] and "dpmpp2m" in u["samplers"]
    assert not any(s.startswith("ode-") for s in u["samplers"])  # a discrete DDPM has no PF-ODE in time
    assert by_id["cond"]["num_classes"] == 10
    assert by_id["vae"]["modes"] == ["sample"] and by_id["vae"]["samplers"] == []


def test_a_job_streams_every_step_and_returns_the_api_images(server: Server, runs: dict[str, Path]):
    events = server.job(run="uncond", sampler="ddim", steps=5, seed=3, n=2)
    kinds = [e["type"] for e in events]
    assert kinds == ["queued", "started"] + ["step"] * 5 + ["done"]
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5] and all(e["steps"] == 5 for e in steps)
    assert png(steps[0]["x_t"]).shape == png(steps[0]["x0_hat"]).shape == (10, 19)  # 2 images in a 1 px frame
    done = events[-1]
    assert done["nfe"] == 5 and done["n"] == 2 and done["seconds"] > 0
    expected = dl.load_run(runs["uncond"]).sample(2, sampler="ddim", steps=5, seed=3)
    grid = png(done["image"])
    assert np.array_equal(grid[1:9, 1:9], expected[0, 0].numpy())
    assert np.array_equal(grid[1:9, 10:18], expected[1, 0].numpy())
    # the final x0 prediction is the image itself (DDIM's last step returns x0_hat)
    assert np.array_equal(png(steps[-1]["x0_hat"])[1:9, 1:9], expected[0, 0].numpy())


def test_one_image_comes_at_its_own_size(server: Server, runs: dict[str, Path]):
    done = server.job(run="cond", sampler="dpmpp2m", steps=4, seed=1, **{"class": 7}, guidance_scale=2.0)[-1]
    expected = dl.load_run(runs["cond"]).sample(1, sampler="dpmpp2m", steps=4, seed=1, classes=7, guidance_scale=2.0)
    assert np.array_equal(png(done["image"]), expected[0, 0].numpy())
    vae = server.job(run="vae", seed=2, n=1)
    assert [e["type"] for e in vae] == ["queued", "started", "done"] and vae[-1]["nfe"] == 1
    assert np.array_equal(png(vae[-1]["image"]), dl.load_run(runs["vae"]).sample(1, seed=2)[0, 0].numpy())


def _example(server: Server, run: str, i: int) -> np.ndarray:
    with urllib.request.urlopen(f"{server.url}/api/runs/{run}/example/{i}.png") as r:
        return np.array(Image.open(io.BytesIO(r.read())))


def test_inpainting_keeps_the_known_pixels_and_equals_the_api(server: Server, runs: dict[str, Path]):
    image = _example(server, "uncond", 5)
    assert image.shape == (8, 8) and image.dtype == np.uint8
    mask = np.full((8, 8), 255, np.uint8)
    mask[:, 4:] = 0  # generate the right half
    done = server.job(run="uncond", mode="inpaint", sampler="ddpm", steps=10, seed=4, image=png_url(image),
                      mask=png_url(mask))[-1]
    out = png(done["image"])
    assert np.array_equal(out[:, :4], image[:, :4])  # RePaint's last step imposes the known pixels exactly
    keep = torch.from_numpy((mask == 255).astype(np.float32))
    expected = dl.load_run(runs["uncond"]).inpaint(torch.from_numpy(image)[None, None], keep, sampler="ddpm",
                                                   steps=10, seed=4)
    assert np.array_equal(out, expected[0, 0].numpy()) and done["nfe"] == 10


def test_edit_strength_zero_returns_the_image(server: Server, runs: dict[str, Path]):
    image = _example(server, "uncond", 2)
    done = server.job(run="uncond", mode="edit", steps=10, image=png_url(image), strength=0.0)[-1]
    assert np.array_equal(png(done["image"]), image)
    half = server.job(run="uncond", mode="edit", steps=10, seed=1, image=png_url(image), strength=0.5)
    assert sum(e["type"] == "step" for e in half) == 5  # SDEdit starts at t = s T: 5 of the 10 steps
    expected = dl.load_run(runs["uncond"]).edit(torch.from_numpy(image)[None, None], 0.5, steps=10, seed=1)
    assert np.array_equal(png(half[-1]["image"]), expected[0, 0].numpy())


def test_a_running_job_can_be_cancelled(server: Server):
    status, res = server.call("POST", "/api/jobs", {"run": "uncond", "sampler": "heun", "steps": 20000, "n": 16})
    assert status == 200
    seen = []
    for event in server.events(res["job"]):
        seen.append(event)
        if event["type"] == "step" and event["step"] == 3:
            assert server.call("DELETE", f"/api/jobs/{res['job']}")[1]["cancelled"]
    assert seen[-1]["type"] == "cancelled" and seen[-2]["type"] == "step" and seen[-2]["step"] < 20000
    # the worker is free again at once
    assert server.job(run="uncond", sampler="ddim", steps=2)[-1]["type"] == "done"


@pytest.mark.parametrize("body, status, words", [
    ({"run": "nope"}, 400, "no run 'nope'"),
    ({"run": "../../etc"}, 400, "no run"),
    ({"run": "uncond", "steps": 0}, 422, "steps"),
    ({"run": "uncond", "steps": 10**9}, 422, "steps"),
    ({"run": "uncond", "seed": -1}, 422, "seed"),
    ({"run": "uncond", "n": 1000}, 422, "n"),
    ({"run": "uncond", "path": "/etc/passwd"}, 422, "path"),
    ({"run": "uncond", "sampler": "ode-rk45"}, 400, "unknown sampler 'ode-rk45' for this run"),
    ({"run": "uncond", "sampler": "ddim", "steps": 500}, 400, "more than the model's T = 100"),
    ({"run": "uncond", "class": 3}, 400, "not class-conditional"),
    ({"run": "cond", "class": 10}, 400, "classes 0..9"),
    ({"run": "uncond", "prompt": "a seven"}, 400, "not text-conditional"),
    ({"run": "vae", "sampler": "ddim"}, 400, "one network pass"),
    ({"run": "vae", "mode": "inpaint"}, 400, "pixel-space diffusion run"),
    ({"run": "uncond", "mode": "inpaint"}, 400, "needs an image"),
    ({"run": "uncond", "mode": "edit", "image": "bm90IGFuIGltYWdl", "strength": 0.5}, 400, "not a base64 PNG"),
    ({"run": "uncond", "mode": "edit", "image": png_url(np.zeros((9, 8), np.uint8)), "strength": 0.5}, 400,
     "image is 8x9; this run makes 8x8"),
    ({"run": "uncond", "mode": "edit", "image": png_url(np.zeros((8, 8), np.uint8))}, 400, "strength"),
    ({"run": "uncond", "mode": "edit", "image": png_url(np.zeros((8, 8), np.uint8)), "strength": 1.5}, 422,
     "strength"),
    ({"run": "uncond", "mode": "inpaint", "sampler": "heun", "image": png_url(np.zeros((8, 8), np.uint8))}, 400,
     "ddpm or ddim"),
    ({"run": "uncond", "mode": "inpaint", "image": png_url(np.zeros((8, 8), np.uint8)),
      "mask": png_url(np.full((8, 8), 255, np.uint8))}, 400, "keeps every pixel"),
])
def test_bad_requests_get_one_clear_json_line(server: Server, body: dict, status: int, words: str):
    got, res = server.call("POST", "/api/jobs", body)
    assert got == status and set(res) == {"error"}
    assert words in res["error"] and "\n" not in res["error"] and "Traceback" not in res["error"]


def test_malformed_requests_and_paths_outside_the_runs(server: Server):
    got, res = server.call("POST", "/api/jobs", raw=b"{not json")
    assert got == 422 and set(res) == {"error"}
    for path in ("/static/../../pyproject.toml", "/static/%2e%2e/%2e%2e/pyproject.toml",
                 "/api/runs/..%2F..%2Fetc/example/0.png"):
        try:
            with urllib.request.urlopen(server.url + path) as r:
                raise AssertionError(f"{path} answered {r.status}")
        except urllib.error.HTTPError as e:
            assert e.code in (400, 404), (path, e.code)
    assert server.call("GET", "/api/jobs/999/events")[0] == 400
    assert server.call("DELETE", "/api/jobs/999")[0] == 400


def test_serve_refuses_bad_input_in_one_line(runs: dict[str, Path], tmp_path: Path):
    from helpers import run_cli

    for args, words in ((["serve", str(tmp_path / "missing")], "does not exist"),
                        (["serve", str(runs["uncond"]), "--port", "70000"], "--port"),
                        (["serve", str(runs["uncond"]), "--frame-interval", "nan"], "finite"),
                        (["serve", str(runs["uncond"]), "--host", "203.0.113.7"], "cannot listen on 203.0.113.7")):
        res = run_cli(*args)
        assert res.returncode == 2 and words in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    empty = run_cli("serve", cwd=tmp_path)
    assert empty.returncode == 2 and "no runs to serve" in empty.stderr


# ---- the page, in a real browser -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def page(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """The playground page in headless chromium, on the tiny runs (or on DIFFUSIONLAB_PLAYGROUND_RUNS)."""
    exe = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs Playwright's Python package: pip install 'diffusionlab[test]' "
                    "(it drives Debian's chromium; no browser is downloaded)")
    paths = REAL_RUNS.split(":") if REAL_RUNS else [str(p) for p in runs.values()]
    s = Server(*paths, "--frame-interval", "0.05")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        p = browser.new_page(viewport={"width": 1180, "height": 640})
        p.goto(s.url + "/")
        p.wait_for_selector("body[data-ready='1']", timeout=30_000)
        yield p
        browser.close()
    s.stop()


def _wait_done(page: Any, which: str, timeout: float = 60_000) -> None:
    page.wait_for_function(f"document.getElementById('status-{which}').textContent.startsWith('done')",
                           timeout=timeout)


def _natural(page: Any, img: str) -> tuple[int, int, bool]:
    return tuple(page.evaluate(f"(() => {{ const i = document.getElementById('{img}'); "
                               f"return [i.naturalWidth, i.naturalHeight, i.complete]; }})()"))


def _shot(page: Any, name: str, tmp: Path) -> Path:
    """A screenshot: into docs/ when the page shows real runs (the README's), else into the test's folder."""
    out = (ROOT / "docs" / name) if REAL_RUNS else tmp / name
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(out))
    assert Image.open(out).size == (1180, 640)
    return out


def test_browser_samples_two_samplers_side_by_side(page: Any, tmp_path: Path):
    run = page.evaluate("state.run")
    page.select_option("#sampler-a", "ddim")
    page.fill("#steps-a", "8")
    page.select_option("#sampler-b", "dpmpp2m")
    page.fill("#steps-b", "4")
    page.fill("#seed", "1")
    page.click("#generate")
    _wait_done(page, "a")
    _wait_done(page, "b")
    for img in ("final-a", "final-b", "xt-a", "x0-a", "xt-b", "x0-b"):
        w, h, complete = _natural(page, img)
        assert complete and (w, h) == (run["width"], run["height"]), img  # a decoded picture of the run's size
    assert "NFE 8" in page.inner_text("#status-a") and "NFE 4" in page.inner_text("#status-b")
    assert page.inner_text("#title-b").startswith("B: dpmpp2m, 4 steps")
    _shot(page, "playground.png", tmp_path)


def test_browser_inpaints_a_painted_mask(page: Any, tmp_path: Path):
    page.check("#mode-inpaint")
    page.wait_for_selector("#source[data-loaded]")
    page.select_option("#sampler-a", "ddpm")
    page.select_option("#sampler-b", "")
    page.fill("#steps-a", "10")
    page.click("#mask-clear")
    box = page.locator("#mask").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + 2)  # paint a stroke down the right side
    page.mouse.down()
    for f in np.linspace(0.02, 0.98, 12):
        page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * f)
    page.mouse.up()
    painted = page.evaluate("Array.from(state.mask).reduce((a, b) => a + b, 0)")
    assert painted > 0
    page.click("#generate")
    _wait_done(page, "a")
    # every pixel left unpainted is the source's own
    changed = page.evaluate("""(() => {
        const w = state.run.width, h = state.run.height, c = document.createElement('canvas');
        c.width = w; c.height = h;
        const ctx = c.getContext('2d');
        ctx.drawImage(document.getElementById('final-a'), 0, 0);
        const out = ctx.getImageData(0, 0, w, h).data;
        const src = document.getElementById('source').getContext('2d').getImageData(0, 0, w, h).data;
        let bad = 0;
        for (let i = 0; i < w * h; i++) if (!state.mask[i] && out[4 * i] !== src[4 * i]) bad++;
        return bad;
    })()""")
    assert changed == 0
    _shot(page, "playground-inpaint.png", tmp_path)


def test_browser_edits_with_the_strength_slider(page: Any):
    page.check("#mode-edit")
    page.evaluate("(() => { const s = document.getElementById('strength'); s.value = '0.3'; "
                  "s.dispatchEvent(new Event('input')); })()")
    assert page.inner_text("#strength-value") == "0.30"
    page.select_option("#sampler-a", "ddim")
    page.fill("#steps-a", "10")
    page.click("#generate")
    _wait_done(page, "a")
    assert _natural(page, "final-a")[:2] == (page.evaluate("state.run.width"), page.evaluate("state.run.height"))
    assert "NFE 3" in page.inner_text("#status-a")  # s = 0.3 of 10 steps


def test_browser_shows_errors_and_cancels(page: Any):
    page.check("#mode-sample")
    runs = page.evaluate("state.runs")
    ddpm = next(r for r in runs if r["T"])
    page.select_option("#run", ddpm["id"])
    page.select_option("#sampler-a", "ddim")
    page.fill("#steps-a", str(ddpm["T"] + 1))
    page.click("#generate")
    page.wait_for_selector("#error:not([hidden])")
    assert f"more than the model's T = {ddpm['T']}" in page.inner_text("#error")
    page.select_option("#sampler-a", "heun")
    page.fill("#steps-a", "20000")
    page.fill("#n", "16")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status-a').textContent.startsWith('step')")
    page.click("#cancel")
    page.wait_for_function("document.getElementById('status-a').textContent.startsWith('cancelled')")
    assert page.is_enabled("#generate") and page.is_hidden("#error")
    page.fill("#n", "1")
    baseline = next((r for r in runs if not r["samplers"]), None)
    if baseline is not None:  # a GAN, VAE or flow: no sampler, one network pass (the tiny runs include a VAE)
        page.select_option("#run", baseline["id"])
        assert page.is_disabled("#sampler-a") and page.is_disabled("#mode-inpaint")
        page.click("#generate")
        _wait_done(page, "a")
        assert "NFE 1" in page.inner_text("#status-a")
        assert _natural(page, "final-a")[:2] == (baseline["width"], baseline["height"])


def test_browser_renders_the_explain_page(page: Any, runs: dict[str, Path], tmp_path: Path):
    """`explain`'s page in the same browser: every figure a decoded picture (the last browser test: it leaves the
    playground). On DIFFUSIONLAB_PLAYGROUND_RUNS, the first run's page and the README's screenshot (docs/explain.png)."""
    from helpers import run_cli

    run = REAL_RUNS.split(":")[0] if REAL_RUNS else str(runs["cond"])
    out = tmp_path / "explain"
    res = run_cli("explain", run, "--out", str(out), timeout=900)
    assert res.returncode == 0, res.stderr
    page.goto((out / "index.html").resolve().as_uri())
    sizes = page.evaluate("Array.from(document.images).map((i) => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) >= 4 and all(c and w > 0 and h > 0 for c, w, h in sizes), sizes
    page.set_viewport_size({"width": 1180, "height": 640})
    _shot(page, "explain.png", tmp_path)
