// The Image tab: one request per image (n=1), so images run side by side and each shows its own
// progress; streamed partial images where the server streams, else an indeterminate bar.

import { ApiError, blobUrl, isEventStream, postJson, randomSeed, readEvents } from "./api.js";
import { byId, fillSizeField, numberField, placeholder, textField } from "./form.js";

const GENERATIONS = "/v1/images/generations";
const PARTIAL_IMAGES = 2;
let streams = true; // until the server answers that it does not

export function setupImages(model) {
  fillSizeField("image", model);
  placeholder("image-steps", model.defaults.num_inference_steps);
  placeholder("image-guidance", model.defaults.guidance_scale);
  byId("image-seed-random").addEventListener("click", () => {
    byId("image-seed").value = randomSeed();
  });
  byId("image-form").addEventListener("submit", (event) => {
    event.preventDefault();
    generate();
  });
}

function generate() {
  byId("image-error").textContent = "";
  const body = { prompt: byId("image-prompt").value };
  textField(body, "negative_prompt", "image-negative");
  textField(body, "size", "image-size");
  numberField(body, "num_inference_steps", "image-steps");
  numberField(body, "guidance_scale", "image-guidance");
  const count = Math.max(1, Number(byId("image-n").value) || 1);
  const seedText = byId("image-seed").value.trim();
  // Image i uses seed + i, as the server does for n images, so each can be made again alone.
  const firstSeed = seedText === "" ? randomSeed() : Number(seedText);
  const grid = byId("image-grid");
  const cards = [];
  const [width, height] = (body.size || byId("image-size").placeholder).split(/[xX]/);
  for (let i = 0; i < count; i++) {
    const card = new ImageCard(firstSeed + i, `${Number(width) || 1} / ${Number(height) || 1}`);
    cards.push(card);
  }
  grid.prepend(...cards.map((card) => card.element));
  for (const card of cards) makeImage({ ...body, n: 1, seed: card.seed }, card);
}

async function makeImage(body, card) {
  const started = performance.now();
  try {
    let response = null;
    if (streams) {
      try {
        response = await postJson(GENERATIONS, {
          ...body,
          stream: true,
          partial_images: PARTIAL_IMAGES,
        });
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 400 && error.param === "stream")) {
          throw error;
        }
        streams = false;
      }
    }
    if (response === null) {
      card.waitWithoutSteps();
      response = await postJson(GENERATIONS, body);
    }
    if (isEventStream(response)) {
      await readImageEvents(response, card, started);
    } else {
      const answer = await response.json();
      const serverTime = response.headers.get("x-inference-time-s");
      card.finish(answer.data[0].b64_json, answer.output_format, started, serverTime);
    }
  } catch (error) {
    card.fail(error.message);
    byId("image-error").textContent = error.message;
  }
}

async function readImageEvents(response, card, started) {
  let finished = false;
  await readEvents(response, (name, data) => {
    const type = data.type || name;
    if (type === "image_generation.partial_image") {
      card.showPartial(data.b64_json, data.output_format, data.partial_image_index);
    } else if (type === "image_generation.completed") {
      card.finish(data.b64_json, data.output_format, started, null);
      finished = true;
    } else if (type === "error" || name === "error") {
      const error = data.error || data;
      throw new ApiError(0, error.message || "the server reported an error", error.param);
    }
  });
  if (!finished) throw new Error("the stream ended before the image was complete");
}

class ImageCard {
  constructor(seed, aspectRatio) {
    this.seed = seed;
    this.url = null;
    this.element = document.createElement("figure");
    this.element.className = "card";
    this.element.dataset.state = "running";
    this.image = document.createElement("img");
    this.image.alt = `Image with seed ${seed}`;
    this.image.hidden = true;
    this.blank = document.createElement("div"); // holds the image's place until it comes
    this.blank.className = "blank";
    this.blank.style.aspectRatio = aspectRatio;
    this.progress = document.createElement("progress");
    this.progress.max = PARTIAL_IMAGES + 1;
    this.progress.value = 0;
    this.progress.setAttribute("aria-label", `Progress of the image with seed ${seed}`);
    this.caption = document.createElement("figcaption");
    this.status = document.createElement("span");
    this.status.textContent = `seed ${seed}: generating`;
    this.caption.append(this.status);
    this.element.append(this.blank, this.image, this.progress, this.caption);
  }

  waitWithoutSteps() {
    this.progress.removeAttribute("value"); // indeterminate: no partial images to count
  }

  showPartial(base64, format, index) {
    this.show(base64, format);
    this.image.classList.add("partial");
    this.progress.value = index + 1;
    this.status.textContent = `seed ${this.seed}: preview ${index + 1} of ${PARTIAL_IMAGES}`;
  }

  finish(base64, format, started, serverTime) {
    const extension = format || "png";
    this.show(base64, extension);
    this.image.classList.remove("partial");
    this.progress.remove();
    this.element.dataset.state = "done";
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    let timing = `${seconds} s`;
    if (serverTime !== null) timing += ` (server ${Number(serverTime).toFixed(2)} s)`;
    this.image.addEventListener(
      "load",
      () => {
        const size = `${this.image.naturalWidth}x${this.image.naturalHeight}`;
        this.status.textContent = `seed ${this.seed} · ${size} · ${timing}`;
      },
      { once: true },
    );
    this.status.textContent = `seed ${this.seed} · ${timing}`;
    const link = document.createElement("a");
    link.href = this.url;
    link.download = `omni-${this.seed}.${extension}`;
    link.textContent = "Download";
    this.caption.append(" ", link);
  }

  fail(message) {
    this.blank.remove();
    this.progress.remove();
    this.element.dataset.state = "failed";
    this.status.textContent = `seed ${this.seed}: failed: ${message}`;
    this.status.className = "error";
  }

  show(base64, format) {
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = blobUrl(base64, `image/${format || "png"}`);
    this.image.src = this.url;
    this.image.hidden = false;
    this.blank.remove();
  }
}
