// The diffusionlab playground: pick a run and a sampler, watch x_t and the x0 prediction as the sampler runs
// (server-sent events), compare two samplers on the same seed, inpaint a painted mask, and edit with SDEdit.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { runs: [], run: null, jobs: [], example: 0, mask: null, busy: false };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

// ---- the run and its form -------------------------------------------------------------------------------------
function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  select.appendChild(o);
}

function currentMode() {
  return document.querySelector("input[name=mode]:checked").value;
}

function samplersFor(mode) {
  const run = state.run;
  if (mode === "sample") return run.samplers;
  return run.samplers.filter((s) => s === "ddpm" || s === "ddim");
}

function fillSamplers() {
  const run = state.run, mode = currentMode();
  const a = $("sampler-a"), b = $("sampler-b");
  const keepA = a.value, keepB = b.value;
  a.innerHTML = "";
  b.innerHTML = "";
  option(b, "", "(none)");
  const names = samplersFor(mode);
  names.forEach((s) => { option(a, s, s); option(b, s, s); });
  const preferred = mode === "inpaint" ? "ddpm" : mode === "edit" ? "ddim" : run.default_sampler;
  a.value = names.includes(keepA) ? keepA : preferred;
  b.value = names.includes(keepB) ? keepB : "";
  const none = names.length === 0;  // a GAN, VAE or flow: one network pass, no sampler
  [a, b, $("steps-a"), $("steps-b"), $("eta")].forEach((el) => { el.disabled = none; });
  defaultSteps("a");
  defaultSteps("b");
}

function defaultSteps(which) {
  const s = $(`sampler-${which}`).value, steps = state.run.default_steps[s];
  if (steps) $(`steps-${which}`).value = Math.min(steps, 50);
}

function selectRun() {
  const run = state.runs.find((r) => r.id === $("run").value);
  state.run = run;
  const cond = run.text ? `text-conditional` : run.num_classes ? `${run.num_classes} classes` : "unconditional";
  $("run-info").textContent = `${run.family}, step ${run.step}, ${run.channels}x${run.height}x${run.width}, ${cond}`;
  const klass = $("class");
  klass.innerHTML = "";
  option(klass, "", "(none)");
  for (let k = 0; k < (run.num_classes || 0); k++) option(klass, String(k), String(k));
  $("class-box").hidden = !run.num_classes;
  $("prompt-box").hidden = !run.text;
  $("guidance-box").hidden = !(run.num_classes || run.text) || run.samplers.length === 0;
  for (const mode of ["sample", "inpaint", "edit"]) {
    const input = $(`mode-${mode}`);
    input.disabled = !run.modes.includes(mode);
    if (input.disabled && input.checked) $("mode-sample").checked = true;
  }
  for (const c of [$("source"), $("mask")]) { c.width = run.width; c.height = run.height; }
  $("brush").value = Math.max(1, Math.round(run.width / 8));
  state.mask = new Uint8Array(run.width * run.height);  // 1 = generate (painted), 0 = keep
  fillSamplers();
  modeChanged();
}

function modeChanged() {
  const mode = currentMode();
  $("source-box").hidden = mode === "sample";
  $("mask-tools").hidden = mode !== "inpaint";
  $("mask").hidden = mode !== "inpaint";
  $("strength-box").hidden = mode !== "edit";
  fillSamplers();
  if (mode !== "sample" && !state.sourceLoaded) loadExample(state.example);
}

// ---- the source image and the mask -----------------------------------------------------------------------------
function drawSource(img) {
  const c = $("source"), ctx = c.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.clearRect(0, 0, c.width, c.height);
  ctx.drawImage(img, 0, 0, c.width, c.height);
  state.sourceLoaded = true;
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("could not load the image"));
    img.src = src;
  });
}

async function loadExample(i) {
  state.example = Math.max(0, i);
  $("example-label").textContent = `test image ${state.example}`;
  try {
    drawSource(await loadImage(`/api/runs/${encodeURIComponent(state.run.id)}/example/${state.example}.png`));
    $("source").dataset.loaded = String(state.example);
  } catch (e) {
    showError(`no test image: ${e.message}; upload one instead`);
  }
}

function drawMask() {
  const c = $("mask"), ctx = c.getContext("2d"), w = c.width, h = c.height;
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    if (state.mask[i]) { img.data[4 * i] = 230; img.data[4 * i + 1] = 40; img.data[4 * i + 2] = 60; img.data[4 * i + 3] = 170; }
  }
  ctx.putImageData(img, 0, 0);
}

function paint(event) {
  const c = $("mask"), rect = c.getBoundingClientRect();
  const x = Math.floor(((event.clientX - rect.left) / rect.width) * c.width);
  const y = Math.floor(((event.clientY - rect.top) / rect.height) * c.height);
  const size = Math.max(1, parseInt($("brush").value, 10) || 1), r0 = Math.floor((size - 1) / 2);
  for (let dy = 0; dy < size; dy++) {
    for (let dx = 0; dx < size; dx++) {
      const px = x - r0 + dx, py = y - r0 + dy;
      if (px >= 0 && py >= 0 && px < c.width && py < c.height) state.mask[py * c.width + px] = 1;
    }
  }
  drawMask();
}

function maskDataUrl() {  // white = keep, black = generate, at the run's own size
  const w = state.run.width, h = state.run.height, c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  const ctx = c.getContext("2d"), img = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const v = state.mask[i] ? 0 : 255;
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return c.toDataURL("image/png");
}

// ---- jobs ----------------------------------------------------------------------------------------------------
function request(which) {
  const mode = currentMode(), run = state.run;
  const body = { run: run.id, mode, seed: parseInt($("seed").value, 10), n: parseInt($("n").value, 10) };
  if (run.samplers.length) {
    body.sampler = $(`sampler-${which}`).value;
    body.steps = parseInt($(`steps-${which}`).value, 10);
    body.eta = parseFloat($("eta").value);
  }
  if (run.num_classes && $("class").value !== "") body.class = parseInt($("class").value, 10);
  if (run.text && $("prompt").value.trim()) body.prompt = $("prompt").value;
  if ((body.class !== undefined || body.prompt) && run.samplers.length) body.guidance_scale = parseFloat($("guidance").value);
  if (mode !== "sample") body.image = $("source").toDataURL("image/png");
  if (mode === "inpaint") body.mask = maskDataUrl();
  if (mode === "edit") body.strength = parseFloat($("strength").value);
  return body;
}

function runJob(which, body) {
  const status = $(`status-${which}`), bar = $(`progress-${which}`);
  $(`title-${which}`).textContent = body.sampler ? `${which.toUpperCase()}: ${body.sampler}, ${body.steps} steps`
    : `${which.toUpperCase()}: ${state.run.family}`;
  for (const k of ["xt", "x0", "final"]) $(`${k}-${which}`).removeAttribute("src");
  bar.value = 0;
  status.textContent = "submitting";
  return api("/api/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
    .then(({ job }) => new Promise((resolve, reject) => {
      state.jobs.push(job);
      const events = new EventSource(`/api/jobs/${job}/events`);
      const finish = (fn, arg) => { events.close(); state.jobs = state.jobs.filter((j) => j !== job); fn(arg); };
      events.addEventListener("queued", (e) => {
        const d = JSON.parse(e.data);
        status.textContent = d.ahead ? `queued (${d.ahead} ahead)` : "starting";
      });
      events.addEventListener("started", () => { status.textContent = "running"; });
      events.addEventListener("step", (e) => {
        const d = JSON.parse(e.data);
        $(`xt-${which}`).src = d.x_t;
        $(`x0-${which}`).src = d.x0_hat;
        $(`label-${which}`).textContent = d.label;
        bar.max = d.steps;
        bar.value = d.step;
        status.textContent = `step ${d.step}/${d.steps} · ${d.seconds.toFixed(2)} s`;
      });
      events.addEventListener("done", (e) => {
        const d = JSON.parse(e.data);
        $(`final-${which}`).src = d.image;
        bar.max = 1;
        bar.value = 1;
        status.textContent = `done · NFE ${d.nfe} per image · ${d.seconds.toFixed(2)} s`;
        finish(resolve, d);
      });
      events.addEventListener("failed", (e) => {
        const d = JSON.parse(e.data);
        status.textContent = "failed";
        finish(reject, new Error(d.error));
      });
      events.addEventListener("cancelled", (e) => {
        const d = JSON.parse(e.data);
        status.textContent = `cancelled after ${d.seconds.toFixed(2)} s`;
        finish(resolve, null);
      });
      events.onerror = () => { if (events.readyState === EventSource.CLOSED) finish(reject, new Error("the server went away")); };
    }));
}

async function generate(event) {
  event.preventDefault();
  if (state.busy) return;
  showError("");
  const compare = state.run.samplers.length && $("sampler-b").value;
  $("panel-b").hidden = !compare;
  state.busy = true;
  $("generate").disabled = true;
  $("cancel").disabled = false;
  try {
    const a = await runJob("a", request("a"));
    if (compare && a) await runJob("b", request("b"));  // the same seed: A and B start from the same noise
  } catch (e) {
    showError(e.message);
  } finally {
    state.busy = false;
    $("generate").disabled = false;
    $("cancel").disabled = true;
  }
}

async function cancelJobs() {
  const jobs = state.jobs.slice();
  await Promise.all(jobs.map((j) => api(`/api/jobs/${j}`, { method: "DELETE" }).catch(() => null)));
}

// ---- wiring ----------------------------------------------------------------------------------------------------
function addPanel(which) {  // panel A or B from the template: ids such as final-a, status-b
  const panel = $("panel-template").content.firstElementChild.cloneNode(true);
  panel.id = `panel-${which}`;
  panel.querySelectorAll("[data-id]").forEach((el) => { el.id = `${el.dataset.id}-${which}`; });
  panel.querySelector("h2").textContent = which.toUpperCase();
  $("results").appendChild(panel);
  return panel;
}

async function init() {
  addPanel("a");
  addPanel("b").hidden = true;
  try {
    state.runs = (await api("/api/runs")).runs;
  } catch (e) {
    showError(e.message);
    return;
  }
  state.runs.forEach((r) => option($("run"), r.id, `${r.name} (${r.family})`));
  $("run").addEventListener("change", () => { state.sourceLoaded = false; selectRun(); });
  document.querySelectorAll("input[name=mode]").forEach((el) => el.addEventListener("change", modeChanged));
  $("sampler-a").addEventListener("change", () => defaultSteps("a"));
  $("sampler-b").addEventListener("change", () => defaultSteps("b"));
  $("form").addEventListener("submit", generate);
  $("cancel").addEventListener("click", cancelJobs);
  $("example-prev").addEventListener("click", () => loadExample(state.example - 1));
  $("example-next").addEventListener("click", () => loadExample(state.example + 1));
  $("use-result").addEventListener("click", async () => {
    const src = $("final-a").getAttribute("src");
    if (src) drawSource(await loadImage(src));
  });
  $("upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (file) drawSource(await loadImage(URL.createObjectURL(file)));
  });
  $("strength").addEventListener("input", () => { $("strength-value").textContent = Number($("strength").value).toFixed(2); });
  $("mask-clear").addEventListener("click", () => { state.mask.fill(0); drawMask(); });
  $("mask-half").addEventListener("click", () => {
    const w = state.run.width;
    state.mask.forEach((_, i) => { state.mask[i] = i % w >= w / 2 ? 1 : 0; });
    drawMask();
  });
  let painting = false;
  $("mask").addEventListener("pointerdown", (e) => { painting = true; paint(e); });
  $("mask").addEventListener("pointermove", (e) => { if (painting) paint(e); });
  window.addEventListener("pointerup", () => { painting = false; });
  selectRun();
  document.body.dataset.ready = "1";
}

init();
