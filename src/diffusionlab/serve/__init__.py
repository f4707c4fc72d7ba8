"""`diffusionlab serve`: a local web playground for trained runs (FastAPI on 127.0.0.1, the page in static/).

  app.py    the routes, the request checks and the streamed sampling jobs
  jobs.py   the one worker thread, the job events and cancellation
  static/   index.html, app.js, style.css: shipped in the package, nothing from a CDN

FastAPI and uvicorn come with the `serve` extra (pip install 'diffusionlab[serve]'); importing this package does not
import them, so the rest of the library works without.
"""
