// breastcad upload page: everything goes through the REST API (/api/v1); nothing is stored.
"use strict";
const $ = (id) => document.getElementById(id);
let models = [];

function headers() {
  const key = $("apikey").value;
  return key ? { "X-API-Key": key } : {};
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) throw new Error(`${response.status}: ${body.detail || response.statusText}`);
  return body;
}

function current() { return models.find((m) => m.id === $("model").value); }

function fmt(x) { return x === null || x === undefined ? "n/a" : Number(x).toFixed(3); }

function describe(m) {
  const parts = [`${m.kind} model <b>${m.name}</b> (${m.modality || ""}), classes: ${m.classes.join(", ")}`];
  const auc = m.metrics.macro_auc || m.metrics.auc_positive || m.metrics.auc || m.metrics.roc_auc;
  if (auc) parts.push(`AUC ${fmt(auc.value)} (95% CI ${fmt(auc.ci_low)}-${fmt(auc.ci_high)}; ${m.evaluation})`);
  if (m.threshold !== null) parts.push(`operating point: P(${m.positive_class}) &ge; ${fmt(m.threshold)} (${m.operating_point || ""})`);
  if (m.bilateral) parts.push(`each breast against the other breast: P(${m.positive_class}) &ge; ${fmt(m.bilateral.threshold)} (${m.bilateral.probability}, fitted on ${m.bilateral.chosen_on})`);
  if (m.init) parts.push(`initialisation: ${m.init}`);
  if (m.test_time_augmentation === "flip") parts.push("each image averaged with its mirror image (test-time flip)");
  parts.push(m.intended_use);
  $("card").innerHTML = parts.join("<br>");
}

function select() {
  const m = current();
  if (!m) return;
  describe(m);
  $("image-form").hidden = m.kind !== "image";
  $("other-drop").hidden = !m.bilateral;  // only models fitted on a woman's two breasts
  $("pair-result").hidden = true;
  $("tabular-form").hidden = m.kind !== "tabular";
  if (m.kind === "tabular") {
    $("feature-inputs").innerHTML = m.input.features
      .map((f) => `<label>${f}<input name="${f}" type="number" step="any" required></label>`).join("");
  }
  $("result").hidden = true;
}

function showResult(r) {
  $("prediction").textContent = r.prediction;
  const positive = r.positive_class || "malignant";
  $("decision").textContent = r.threshold === null ? "" :
    `Decided at the model's operating point: ${positive} when P(${positive}) ≥ ${fmt(r.threshold)}. ${r.notice}`;
  const probs = r.probabilities || { benign: 1 - r.p_malignant, malignant: r.p_malignant };
  $("prob-heading").textContent = r.probabilities ? "calibrated probability" : "probability";
  $("probabilities").querySelector("tbody").innerHTML = Object.entries(probs).map(([c, p]) => {
    const mark = c === positive && r.threshold !== null ? `<i style="left:${100 * r.threshold}%"></i>` : "";
    return `<tr><td>${c}</td><td>${fmt(p)}</td><td><div class="bar"><span style="width:${100 * p}%"></span>${mark}</div></td></tr>`;
  }).join("");
  const ex = r.explanation;
  $("input-figure").hidden = !ex;
  $("cam-figure").hidden = !ex;
  if (ex) {
    $("input-image").src = "data:image/png;base64," + ex.input_png;
    $("cam-image").src = "data:image/png;base64," + ex.overlay_png;
    $("cam-caption").textContent = ex.degenerate ? "Grad-CAM: no positive evidence at the explained layer" :
      `Grad-CAM over the upload: regions that raised "${ex.target}"`;
  }
  $("warning").textContent = r.warning ? "Warning: " + r.warning : "";
  $("warning").hidden = !r.warning;
  $("dicom").textContent = r.dicom ? "DICOM (de-identified header): " +
    Object.entries(r.dicom).map(([k, v]) => `${k} ${v}`).join(", ") : "";
  $("result").hidden = false;
}

function escaped(text) {  // a name the user chose: shown as text, never as markup
  const span = document.createElement("span");
  span.textContent = text;
  return span.innerHTML;
}

function showPair(r) {
  const positive = r.positive_class;
  $("pair-alone").textContent = `P(${positive}) alone`;
  $("pair-both").textContent = `P(${positive}) against the other`;
  $("pair-table").querySelector("tbody").innerHTML = [r.image, r.other].map((side) =>
    `<tr><td>${escaped(side.filename)}</td><td>${fmt(side.probabilities[positive])}</td><td>${side.prediction}</td>` +
    `<td>${fmt(side.p_bilateral)}</td><td><b>${side.prediction_bilateral}</b></td></tr>`).join("");
  $("pair-decision").textContent = `Against the other breast: ${positive} when P(${positive}) ≥ ` +
    `${fmt(r.threshold_bilateral)} (${r.bilateral_fit}). ${r.notice}`;
  $("pair-images").replaceChildren(...[r.image, r.other].filter((side) => side.explanation).map((side) => {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.className = "cam";
    img.alt = "Grad-CAM overlay";
    img.src = "data:image/png;base64," + side.explanation.overlay_png;
    const caption = document.createElement("figcaption");
    caption.textContent = side.explanation.degenerate ? `${side.filename}: no positive evidence at the explained layer` :
      `${side.filename} alone: regions that raised "${side.explanation.target}"`;
    figure.append(img, caption);
    return figure;
  }));
  const warned = [r.image, r.other].filter((side) => side.warning);
  $("pair-warning").textContent = warned.map((side) => `Warning, ${side.filename}: ${side.warning}`).join(" ");
  $("pair-warning").hidden = !warned.length;
  const dicom = [r.image, r.other].filter((side) => side.dicom);
  $("pair-dicom").textContent = dicom.length ? "DICOM (de-identified headers): " + dicom.map((side) =>
    Object.entries(side.dicom).map(([k, v]) => `${k} ${v}`).join(", ")).join(" | ") : "";
  $("result").hidden = true;
  $("pair-result").hidden = false;
}

async function classifyImage(event) {
  event.preventDefault();
  showError("");
  const file = $("file").files[0];
  if (!file) { showError("Choose an image first."); return; }
  const other = current().bilateral ? $("other").files[0] : undefined;
  const form = new FormData();
  form.append("file", file);
  if (other) form.append("other", other);
  $("submit").disabled = true;
  try {
    const query = new URLSearchParams({ model: current().id, explain: $("explain").checked });
    const answer = await api(`/api/v1/predict${other ? "/pair" : ""}?${query}`, { method: "POST", body: form });
    if (other) { showPair(answer); } else { showResult(answer); $("pair-result").hidden = true; }
  } catch (e) { showError(e.message); $("result").hidden = true; $("pair-result").hidden = true; }
  finally { $("submit").disabled = false; }
}

async function classifyTabular(event) {
  event.preventDefault();
  showError("");
  const features = {};
  for (const input of $("feature-inputs").querySelectorAll("input")) features[input.name] = Number(input.value);
  try {
    showResult(await api("/api/v1/predict/tabular", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: current().id, features }),
    }));
  } catch (e) { showError(e.message); $("result").hidden = true; }
}

async function load() {
  try {
    models = await api("/api/v1/models");
    $("model").innerHTML = models.map((m) => `<option value="${m.id}">${m.id}</option>`).join("");
    select();
  } catch (e) { showError(`Could not list the models (${e.message}). Enter the API key if the server needs one.`); }
}

for (const [area, input] of [["drop", "file"], ["other-drop", "other"]]) {
  const drop = $(area);
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files.length) { $(input).files = e.dataTransfer.files; }
  });
}
$("model").addEventListener("change", select);
$("upload").addEventListener("submit", classifyImage);
$("features").addEventListener("submit", classifyTabular);
$("apikey").addEventListener("change", load);
load();
