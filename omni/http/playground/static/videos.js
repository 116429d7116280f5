// The Video tab: jobs are created with POST /v1/videos (the seed's multipart fields) and listed
// from GET /v1/videos, polled while any is queued or running; a completed job plays in the page.

import { getJson, randomSeed, request } from "./api.js";
import { byId, fillSizeField, placeholder } from "./form.js";

const VIDEOS = "/v1/videos";
const LIST_LIMIT = 20;
const ACTIVE_POLL_MS = 1000; // while a job is queued or running
const IDLE_POLL_MS = 5000; // jobs made by other clients show up too
const ACTIVE = new Set(["queued", "in_progress"]);

const rows = new Map(); // job id -> JobRow
const madeHere = new Set(); // jobs this page created: each plays once it completes
let pollTimer = null;
let playing = null; // the JobRow in the player

export function setupVideos(model) {
  const defaults = model.defaults;
  fillSizeField("video", model);
  placeholder("video-frames", defaults.num_frames);
  placeholder("video-fps", defaults.fps);
  placeholder("video-steps", defaults.num_inference_steps);
  placeholder("video-guidance", defaults.guidance_scale);
  const reference = byId("video-reference");
  reference.required = Boolean(model.takes_image);
  if (model.takes_image) {
    reference.labels[0].textContent = "Reference image (this model needs one)";
  }
  byId("video-seed-random").addEventListener("click", () => {
    byId("video-seed").value = randomSeed();
  });
  byId("video-form").addEventListener("submit", (event) => {
    event.preventDefault();
    create();
  });
  refreshVideos();
}

async function create() {
  showError("");
  const form = new FormData();
  for (const input of byId("video-form").querySelectorAll("[name]")) {
    if (input.type === "file") {
      if (input.files.length > 0) form.append(input.name, input.files[0]);
    } else if (input.type === "checkbox") {
      if (input.checked) form.append(input.name, "true");
    } else if (input.value.trim() !== "") {
      form.append(input.name, input.value.trim());
    }
  }
  try {
    const job = await (await request(VIDEOS, { method: "POST", body: form })).json();
    madeHere.add(job.id);
  } catch (error) {
    showError(error.message);
  }
  await refreshVideos();
}

export async function refreshVideos() {
  clearTimeout(pollTimer);
  let wait = IDLE_POLL_MS;
  try {
    const page = await getJson(`${VIDEOS}?limit=${LIST_LIMIT}`);
    render(page.data);
    if (page.data.some((job) => ACTIVE.has(job.status))) wait = ACTIVE_POLL_MS;
  } catch (error) {
    showError(error.message);
    if (error.status === 401) return; // the key form shows; entering a key starts over
  }
  pollTimer = setTimeout(refreshVideos, wait);
}

function render(jobs) {
  const list = byId("video-jobs");
  const seen = new Set();
  jobs.forEach((job, index) => {
    seen.add(job.id);
    let row = rows.get(job.id);
    if (!row) {
      row = new JobRow(job.id);
      rows.set(job.id, row);
    }
    row.update(job);
    if (list.children[index] !== row.element) list.insertBefore(row.element, list.children[index]);
    if (job.status === "completed" && madeHere.delete(job.id)) row.play();
  });
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.element.remove();
      rows.delete(id);
    }
  }
}

function showError(message) {
  byId("video-error").textContent = message;
}

class JobRow {
  constructor(id) {
    this.id = id;
    this.url = null; // an object URL of the MP4, once fetched
    this.element = document.createElement("li");
    this.element.dataset.id = id;
    this.title = document.createElement("p");
    this.title.className = "job-title";
    this.meta = document.createElement("p");
    this.progress = document.createElement("progress");
    this.progress.max = 100;
    this.problem = document.createElement("p");
    this.problem.className = "error";
    this.actions = document.createElement("div");
    this.actions.className = "row";
    this.playButton = this.button("Play", "play", () => this.play());
    this.downloadButton = this.button("Download", "download", () => this.download());
    const remove = this.button("Delete", "delete", () => this.remove());
    this.actions.append(this.playButton, this.downloadButton, remove);
    this.element.append(this.title, this.meta, this.progress, this.problem, this.actions);
  }

  button(text, className, onClick) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = className;
    button.textContent = text;
    button.addEventListener("click", onClick);
    return button;
  }

  update(job) {
    this.element.dataset.status = job.status;
    this.title.textContent = job.prompt;
    const status = job.status.replace("_", " ");
    this.meta.textContent = `${job.size} · ${job.seconds} s · ${status} · ${job.progress}%`;
    this.progress.value = job.progress;
    this.progress.hidden = !ACTIVE.has(job.status);
    this.progress.setAttribute("aria-label", `Progress of "${job.prompt}"`);
    this.problem.textContent = job.error ? job.error.message : "";
    const done = job.status === "completed";
    this.playButton.hidden = !done;
    this.downloadButton.hidden = !done;
    for (const button of [this.playButton, this.downloadButton]) {
      button.setAttribute("aria-label", `${button.textContent} "${job.prompt}"`);
    }
  }

  async content() {
    if (this.url === null) {
      const response = await request(`${VIDEOS}/${this.id}/content`);
      this.url = URL.createObjectURL(await response.blob());
    }
    return this.url;
  }

  // The player gets the MP4 as an object URL: a <video src> could not send the API key.
  async play() {
    try {
      const player = byId("video-player");
      const url = await this.content();
      if (player.getAttribute("src") !== url) player.src = url;
      player.hidden = false;
      playing = this;
      byId("video-player-caption").textContent = this.title.textContent;
    } catch (error) {
      showError(error.message);
    }
  }

  async download() {
    try {
      const link = document.createElement("a");
      link.href = await this.content();
      link.download = `${this.id}.mp4`;
      link.click();
    } catch (error) {
      showError(error.message);
    }
  }

  async remove() {
    try {
      await request(`${VIDEOS}/${this.id}`, { method: "DELETE" });
    } catch (error) {
      showError(error.message);
      return;
    }
    if (playing === this) {
      const player = byId("video-player");
      player.removeAttribute("src");
      player.load();
      player.hidden = true;
      byId("video-player-caption").textContent = "";
      playing = null;
    }
    if (this.url !== null) URL.revokeObjectURL(this.url);
    await refreshVideos();
  }
}
