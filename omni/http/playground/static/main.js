// The page's start: ask for the API key when the server wants one, read the model's card from
// /v1/models, then set up the tabs the model can use.

import { getJson, setApiKey, whenUnauthorized } from "./api.js";
import { byId } from "./form.js";
import { setupImages } from "./images.js";
import { refreshVideos, setupVideos } from "./videos.js";

const LOADING_RETRY_MS = 1000;
let started = false;

whenUnauthorized((message) => {
  byId("key-form").hidden = false;
  byId("key-error").textContent = message;
  byId("api-key").focus();
});

byId("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey(byId("api-key").value.trim());
  byId("key-form").hidden = true;
  start();
});

async function start() {
  let model;
  try {
    model = (await getJson("/v1/models")).data[0];
  } catch (error) {
    byId("model-info").textContent = error.message;
    return;
  }
  if (!model.kind) {
    // Not loaded yet, or it failed to load: /health says which, and it needs no key.
    const health = await fetch("/health").then((response) => response.json());
    const why = health.error ? health.error.message : "loading";
    byId("model-info").textContent = `${model.id}: ${why}`;
    setTimeout(start, LOADING_RETRY_MS);
    return;
  }
  const defaults = model.defaults;
  const parts = [`${defaults.size}`, `${defaults.num_inference_steps} steps`];
  if (defaults.guidance_scale !== null) parts.push(`guidance ${defaults.guidance_scale}`);
  if (defaults.num_frames !== null) parts.push(`${defaults.num_frames} frames at ${defaults.fps} fps`);
  byId("model-info").textContent = `${model.id} · ${model.kind} model · defaults: ${parts.join(", ")}`;
  byId("app").hidden = false;
  if (started) {
    if (model.kind === "video") refreshVideos();
    return;
  }
  started = true;
  setupImages(model);
  if (model.kind === "video") {
    byId("tab-video").hidden = false;
    setupVideos(model);
    select(byId("tab-video"));
  }
  setupTabs();
}

function tabs() {
  return [...document.querySelectorAll('[role="tab"]')].filter((tab) => !tab.hidden);
}

function select(chosen) {
  for (const tab of tabs()) {
    const selected = tab === chosen;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    byId(tab.getAttribute("aria-controls")).hidden = !selected;
  }
}

// WAI-ARIA tabs: one tab stop; arrows, Home and End move between tabs.
function setupTabs() {
  for (const tab of tabs()) {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      const all = tabs();
      const index = all.indexOf(tab);
      const next = {
        ArrowRight: all[(index + 1) % all.length],
        ArrowLeft: all[(index - 1 + all.length) % all.length],
        Home: all[0],
        End: all[all.length - 1],
      }[event.key];
      if (next) {
        event.preventDefault();
        select(next);
        next.focus();
      }
    });
  }
}

start();
