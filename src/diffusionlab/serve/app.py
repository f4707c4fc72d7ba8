"""The playground's web app (FastAPI): the listed runs, sampling jobs streamed as server-sent events, inpainting and
SDEdit of an image from the browser, and the static page (serve/static/, shipped in the package, no CDN).

    GET    /                        the page
    GET    /api/runs                the runs it serves: family, image shape, classes or text, samplers, modes
    GET    /api/runs/{run}/example/{i}.png   image i of the run's test split (something to inpaint or edit)
    POST   /api/jobs                {run, mode: sample|inpaint|edit, sampler, steps, seed, n, class, prompt,
                                     guidance_scale, eta, image, mask, strength} -> {job}; checked before it queues
    GET    /api/jobs/{job}/events   text/event-stream: queued, started, step (x_t and x0_hat), done | failed | cancelled
    DELETE /api/jobs/{job}          cancel it

Only the runs given at start can be read: a request names a run by its id, never by a path. Every bad request gets
a JSON body {"error": "one line"} with a 4xx status; an internal failure a 500 with one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from ..api import Run
from ..errors import DiffusionLabError
from ..pages.html import data_uri
from ..validation import MAX_SAMPLING_STEPS
from ..viz import png_bytes
from .jobs import TERMINAL, Busy, Job, Worker

FRAME_INTERVAL = 0.1  # seconds between streamed frames of x_t and x0_hat (the last step is always sent)
MAX_N = 64  # images per request
MAX_UPLOAD = 4 << 20  # bytes of an uploaded image or mask (data URL)


class JobRequest(BaseModel):
    """What the page asks for; pydantic checks types and ranges, `Playground.check` the rest."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    run: str
    mode: Literal["sample", "inpaint", "edit"] = "sample"
    sampler: str | None = None
    steps: int | None = Field(None, ge=1, le=MAX_SAMPLING_STEPS)
    seed: int = Field(0, ge=0, lt=2**63)
    n: int = Field(1, ge=1, le=MAX_N)
    class_id: int | None = Field(None, alias="class", ge=0)
    prompt: str | None = Field(None, max_length=500)
    guidance_scale: float = Field(1.0, ge=0.0, le=100.0, allow_inf_nan=False)
    eta: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    image: str | None = Field(None, max_length=MAX_UPLOAD)
    mask: str | None = Field(None, max_length=MAX_UPLOAD)
    strength: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)


class BadRequest(DiffusionLabError):
    """A request the playground refuses (400)."""


@dataclass
class Served:
    """One run the playground serves, under its id."""

    id: str
    run: Run

    def info(self) -> dict[str, Any]:
        """What the page needs to build its form."""
        from ..paths import is_continuous
        from ..sampling import SAMPLERS

        run = self.run
        c, h, w = run.image_shape
        info: dict[str, Any] = {"id": self.id, "name": run.path.name, "family": run.family, "step": run.step,
                                "channels": c, "height": h, "width": w, "num_classes": run.num_classes,
                                "text": False, "samplers": [], "default_sampler": None, "default_steps": {},
                                "modes": ["sample"], "T": None}
        if run.baseline:
            return info
        process = run.loaded.process
        samplers = [s for s, spec in SAMPLERS.items() if spec.space != "time" or is_continuous(process.path)]
        default_sampler, _ = run.loaded.sampler_and_steps()  # the run's recommended sampler, else the family's
        info.update(text=run.loaded.tokenizer is not None, samplers=samplers, default_sampler=default_sampler,
                    default_steps={s: run.loaded.sampler_and_steps(s if s != default_sampler else None)[1]
                                   for s in samplers}, T=process.T)
        if run.loaded.codec.kind == "pixel":
            info["modes"] = ["sample", "inpaint", "edit"]
        return info


def data_url(images: torch.Tensor) -> str:
    """uint8 images (N, C, H, W) as a PNG data URL: one image at its own size, several as a grid."""
    return data_uri(png_bytes(images, padding=0 if len(images) == 1 else 1, min_tile=1))


def decode_png(url: str, what: str) -> Image.Image:
    """A data URL (or bare base64) of a PNG or JPEG from the page, as a PIL image."""
    payload = url.split(",", 1)[1] if url.startswith("data:") else url
    try:
        img = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
        img.load()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise BadRequest(f"{what} is not a base64 PNG or JPEG image") from None
    return img


class Playground:
    """The served runs, the worker and the request checks."""

    def __init__(self, runs: dict[str, Run], frame_interval: float = FRAME_INTERVAL):
        self.runs = {rid: Served(rid, run) for rid, run in runs.items()}
        self.worker = Worker()
        self.frame_interval = frame_interval
        self._examples: dict[str, torch.Tensor] = {}

    def served(self, rid: str) -> Served:
        """The run with id `rid` (only the listed runs exist)."""
        if rid not in self.runs:
            raise BadRequest(f"no run {rid!r}; this playground serves {', '.join(self.runs)}")
        return self.runs[rid]

    def example(self, rid: str, i: int) -> torch.Tensor:
        """Image i (modulo the split's size) of the run's test split, uint8 (1, C, H, W)."""
        from ..evaluation.evaluate import load_split

        if rid not in self._examples:
            data = load_split(self.served(rid).run.loaded.config.data, "test")
            self._examples[rid] = data.images[:256]
        images = self._examples[rid]
        return images[i % len(images)][None]

    def image_tensor(self, url: str, served: Served) -> torch.Tensor:
        """The page's image as uint8 (1, C, H, W) of the run's image shape."""
        c, h, w = served.run.image_shape
        img = decode_png(url, "image").convert("L" if c == 1 else "RGB")
        if img.size != (w, h):
            raise BadRequest(f"image is {img.size[0]}x{img.size[1]}; this run makes {w}x{h} images")
        arr = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(arr.reshape(h, w, c).transpose(2, 0, 1).copy())[None]

    def mask_tensor(self, url: str, served: Served) -> torch.Tensor:
        """The page's mask (white = keep, black = generate) as the binary (1, H, W) mask, 1 = known."""
        from ..image_files import check_mask

        c, h, w = served.run.image_shape
        img = decode_png(url, "mask").convert("L")
        if img.size != (w, h):
            raise BadRequest(f"mask is {img.size[0]}x{img.size[1]}; this run makes {w}x{h} images")
        mask = check_mask((np.asarray(img) >= 128).astype(np.uint8), (c, h, w))
        if mask.min() == 1:
            raise BadRequest("the mask keeps every pixel: paint over the part of the image to generate")
        return mask

    def check(self, req: JobRequest) -> tuple[Served, dict[str, Any]]:
        """Everything about a request that can be checked before it queues; the keyword arguments of the call."""
        served = self.served(req.run)
        run, info = served.run, served.info()
        if req.mode not in info["modes"]:
            raise BadRequest(f"{req.mode} needs a pixel-space diffusion run; {served.id} is a {run.family} run"
                             + ("" if run.baseline else f" in {run.loaded.codec.kind} space"))
        kw: dict[str, Any] = {"seed": req.seed}
        if run.baseline:
            if req.sampler or req.steps:
                raise BadRequest(f"a {run.family} draws each image in one network pass: no sampler or steps")
        else:
            default = {"sample": None, "inpaint": "ddpm", "edit": "ddim"}[req.mode]
            if req.sampler is not None and req.sampler not in info["samplers"]:
                raise BadRequest(f"unknown sampler {req.sampler!r} for this run; choose from "
                                 f"{', '.join(info['samplers'])}")
            if req.mode != "sample" and (req.sampler or default) not in ("ddpm", "ddim"):
                raise BadRequest(f"{req.mode} runs with the ddpm or ddim sampler, not {req.sampler!r}")
            sampler, steps = run.loaded.sampler_and_steps(req.sampler or default, req.steps)
            kw.update(sampler=sampler, steps=steps, eta=req.eta)
        k, text = info["num_classes"], info["text"]
        if req.class_id is not None:
            if not k:
                raise BadRequest("this run is not class-conditional: leave the class out")
            if req.class_id >= k:
                raise BadRequest(f"class {req.class_id} is out of range: this run has classes 0..{k - 1}")
            kw["classes"] = req.class_id
        if req.prompt is not None and req.prompt.strip():
            if not text:
                raise BadRequest("this run is not text-conditional: leave the prompt out")
            kw["prompt"] = req.prompt.strip()
        if ("classes" in kw or "prompt" in kw) and not run.baseline:
            kw["guidance_scale"] = req.guidance_scale
        if req.mode == "sample":
            kw["n"] = req.n
        else:
            if not req.image:
                raise BadRequest(f"{req.mode} needs an image")
            kw["images"] = self.image_tensor(req.image, served)
            kw["n"] = req.n
            if req.mode == "inpaint":
                if not req.mask:
                    raise BadRequest("inpaint needs a mask: paint over the part of the image to generate")
                kw["mask"] = self.mask_tensor(req.mask, served)[0]
            else:
                if req.strength is None:
                    raise BadRequest("edit needs a strength in [0, 1]")
                kw["strength"] = req.strength
        return served, kw

    def submit(self, req: JobRequest) -> Job:
        """Check the request, then queue it."""
        served, kw = self.check(req)
        run, mode = served.run, req.mode
        interval = self.frame_interval

        def work(job: Job) -> dict[str, Any]:
            last = [-1.0]

            def on_step(frame: Any) -> None:  # every step of the first batch: stream it (at most every interval)
                job.check()
                now = time.perf_counter()
                if now - last[0] >= interval or frame.k == 1:
                    last[0] = now
                    from ..data import from_model_range

                    x_t, x0_hat = (from_model_range(x) for x in frame.pixels())
                    job.emit("step", step=frame.n_steps - frame.k + 1, steps=frame.n_steps, label=frame.label,
                             x_t=data_url(x_t), x0_hat=data_url(x0_hat), seconds=now - job.started)

            extra = {k: v for k, v in kw.items() if k not in ("n", "images", "mask", "strength")}
            if mode == "sample":
                images = run.sample(kw["n"], on_step=on_step, **extra)
            elif mode == "inpaint":
                images = run.inpaint(kw["images"], kw["mask"], kw["n"], on_step=on_step, **extra)
            else:
                images = run.edit(kw["images"], kw["strength"], kw["n"], on_step=on_step, **extra)
            return {"image": data_url(images), "nfe": run.last_nfe, "n": len(images),
                    "sampler": kw.get("sampler"), "steps": kw.get("steps"), "mode": mode, "run": served.id}

        return self.worker.submit(work)


def create_app(runs: dict[str, Run], frame_interval: float = FRAME_INTERVAL) -> FastAPI:
    """The playground's FastAPI app for `runs` (id -> loaded run)."""
    pg = Playground(runs, frame_interval)
    app = FastAPI(title="diffusionlab playground", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.playground = pg
    static = resources.files("diffusionlab.serve") / "static"

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse({"error": f"{where}: {first['msg']}" if where else first["msg"]}, status_code=422)

    @app.exception_handler(DiffusionLabError)
    async def refused(_: Request, exc: DiffusionLabError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=429 if isinstance(exc, Busy) else 400)

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    @app.get("/")
    def index() -> Response:
        return Response((static / "index.html").read_bytes(), media_type="text/html")

    @app.get("/api/runs")
    def list_runs() -> dict[str, Any]:
        return {"runs": [s.info() for s in pg.runs.values()]}

    @app.get("/api/runs/{rid}/example/{i}.png")
    def example(rid: str, i: int) -> Response:
        img = pg.example(rid, i)
        return Response(png_bytes(img, padding=0, min_tile=1), media_type="image/png")

    @app.post("/api/jobs")
    def submit(req: JobRequest) -> dict[str, str]:
        return {"job": pg.submit(req).id}

    @app.get("/api/jobs/{jid}/events")
    async def events(jid: str, request: Request) -> StreamingResponse:
        job = pg.worker.jobs.get(jid)
        if job is None:
            raise BadRequest(f"no job {jid!r}")

        async def stream():  # server-sent events; a client that goes away cancels its job
            try:
                while True:
                    event = await asyncio.to_thread(job.next_event, 0.5)
                    if event is None:
                        if await request.is_disconnected():
                            return
                        yield ": waiting\n\n"  # a comment line keeps the connection alive
                        continue
                    yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                    if event["type"] in TERMINAL:
                        return
            finally:
                if not job.finished:
                    job.cancel.set()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.delete("/api/jobs/{jid}")
    def cancel(jid: str) -> dict[str, Any]:
        job = pg.worker.jobs.get(jid)
        if job is None:
            raise BadRequest(f"no job {jid!r}")
        job.cancel.set()
        return {"job": jid, "cancelled": not job.finished or job.state == "cancelled"}

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


def run_ids(paths: list[Path]) -> list[str]:
    """Short unique ids for run directories: their names, numbered where two share one."""
    ids: list[str] = []
    for p in paths:
        base, k = p.name or "run", 2
        rid = base
        while rid in ids:
            rid, k = f"{base}-{k}", k + 1
        ids.append(rid)
    return ids


__all__ = ["FRAME_INTERVAL", "JobRequest", "Playground", "create_app", "data_url", "run_ids"]
