"""diffusionlab: train, sample and evaluate diffusion-family generative models.

    import diffusionlab as dl
    run = dl.load_run("runs/digits")                              # any trained run (api.py)
    images = run.sample(16, sampler="dpmpp2m", steps=10, seed=0)  # uint8 (N, C, H, W)
    dl.save_grid(images, "grid.png")

The command line is `diffusionlab` (cli/); docs/architecture.md maps every module, and README.md where each
equation lives.
"""

__version__ = "0.1.0"

# The Python API (api.py), imported on first use so that `import diffusionlab` stays light (no torch at import).
_API = {"load_run": "api", "train": "api", "Run": "api", "save_grid": "viz"}


def __getattr__(name: str) -> object:
    """diffusionlab.load_run, .train, .Run (api.py) and .save_grid (viz.py), imported when first used."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'diffusionlab' has no attribute {name!r}")


__all__ = ["Run", "__version__", "load_run", "save_grid", "train"]
