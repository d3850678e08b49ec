// The demo page: send an image to POST /detect with the API key kept in local storage,
// draw the boxes over the image, list them, and show what the call cost (x-tokens) and
// the balance left (x-balance). No build step, no third-party code.
"use strict";

const KEY_STORAGE = "yolo-edge.api-key";
// Vivid colours by class id, readable on photographs; labels are written in dark text.
const COLORS = ["#ff3b30", "#ffcc00", "#34c759", "#00c7be", "#30b0ff", "#af52de", "#ff2d92", "#ff9500"];
const $ = (id) => document.getElementById(id);

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

function number(text) {
  return text === null ? "–" : Number(text).toLocaleString("en-US");
}

async function loadModels() {
  try {
    const health = await (await fetch("/healthz")).json();
    const select = $("model");
    select.replaceChildren();
    for (const name of health.models || []) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name === health.default_model ? `${name} (default)` : name;
      option.selected = name === health.default_model;
      select.append(option);
    }
  } catch (e) {
    // The select keeps "default": the server then picks its default model.
  }
}

function draw(bitmap, answer) {
  const canvas = $("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const line = Math.max(3, Math.round(Math.max(bitmap.width, bitmap.height) / 200));
  const font = Math.max(12, line * 6);
  ctx.lineWidth = line;
  ctx.font = `600 ${font}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  const drawn = [];
  for (const d of answer.detections) {
    const [x1, y1, x2, y2] = d.bbox;
    const color = COLORS[d.class_id % COLORS.length];
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${d.class_name} ${(d.confidence * 100).toFixed(0)}%`;
    const width = ctx.measureText(label).width + 2 * line;
    const top = y1 - font - 2 * line >= 0 ? y1 - font - 2 * line : y1;
    ctx.fillStyle = color;
    ctx.fillRect(x1 - line / 2, top, width, font + 2 * line);
    ctx.fillStyle = "#111";
    ctx.fillText(label, x1 + line / 2, top + line);
    drawn.push({ class_name: d.class_name, bbox: d.bbox.map((v) => Math.round(v)) });
  }
  canvas.dataset.boxes = String(drawn.length);
  canvas.dataset.drawn = JSON.stringify(drawn);
}

function table(answer) {
  const rows = answer.detections.map((d, i) => {
    const tr = document.createElement("tr");
    for (const text of [i + 1, d.class_name, d.confidence.toFixed(3), `[${d.bbox.map((v) => v.toFixed(1)).join(", ")}]`]) {
      const td = document.createElement("td");
      td.textContent = String(text);
      tr.append(td);
    }
    tr.dataset.class = d.class_name;
    return tr;
  });
  $("detections").tBodies[0].replaceChildren(...rows);
}

async function detect(file) {
  const key = $("key").value.trim();
  if (!key) {
    setStatus("error", "Paste an API key first (yolo-edge keys create --tenant NAME --credit N prints one).");
    return;
  }
  setStatus("busy", `Detecting objects in ${file.name}…`);
  $("result").hidden = true;
  const params = new URLSearchParams();
  if ($("model").value) params.set("model", $("model").value);
  if ($("conf").value !== "") params.set("conf", $("conf").value);
  let response;
  let body;
  try {
    response = await fetch(`/detect?${params}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    body = await response.text();
  } catch (e) {
    setStatus("error", `The request failed: ${e.message}`);
    return;
  }
  const tokens = response.headers.get("x-tokens");
  const balance = response.headers.get("x-balance");
  $("tokens").textContent = number(tokens);
  $("balance").textContent = number(balance);
  const nn = response.headers.get("x-nn-us");
  $("nn").textContent = nn === null ? "–" : `${(Number(nn) / 1000).toFixed(1)} ms`;
  $("invocation").textContent = response.headers.get("x-invocation-id") || "–";
  let answer;
  try {
    answer = JSON.parse(body);
  } catch (e) {
    setStatus("error", `${response.status}: the answer is not JSON: ${body.slice(0, 200)}`);
    return;
  }
  if (!response.ok) {
    const error = answer.error || {};
    const cost = tokens === null ? "" : ` (${number(tokens)} tokens, ${number(balance)} left)`;
    setStatus("error", `${response.status} ${error.code || ""}: ${error.message || body}${cost}`);
    return;
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (e) {
    setStatus("error", `This browser cannot show ${file.name}: ${e.message}`);
    return;
  }
  $("result").hidden = false;
  draw(bitmap, answer);
  table(answer);
  $("caption").textContent = `${file.name}, ${answer.image.width}×${answer.image.height}, model ${answer.model}`;
  const n = answer.count;
  const cost = tokens === null ? "" : `; ${number(tokens)} tokens, ${number(balance)} left`;
  setStatus("done", `${n} ${n === 1 ? "object" : "objects"} found${cost}.`);
}

function init() {
  const key = $("key");
  key.value = localStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("input", () => localStorage.setItem(KEY_STORAGE, key.value.trim()));
  $("forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    key.value = "";
  });
  $("controls").addEventListener("submit", (e) => e.preventDefault());
  $("file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) detect(file);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) detect(file);
  });
  loadModels();
}

init();
