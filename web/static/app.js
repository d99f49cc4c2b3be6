// The live imaging page: one patient's studies, orders, reports and body
// regions, kept current by radbridge.js. Everything from the server is
// inserted as text (textContent, attributes), never as HTML.

import { RadbridgeClient } from "/radbridge.js";

const RECENT_KEY = "radbridge.recentPatients";
const VIEWER_KEY = "radbridge.viewerName";
const PREFS_KEY = "radbridge.viewPrefs";
const TOKEN_KEY = "radbridge.token"; // sessionStorage: this tab only
const VIEW_TTL_MS = 10 * 60 * 1000;
const VIEWER_URL_EXTENSION = "https://radbridge.dev/fhir/StructureDefinition/viewer-url";
// The same extension as resources written before issue 15 name it.
const VIEWER_URL_EXTENSION_OLD = "https://radbridge.example/fhir/StructureDefinition/viewer-url";

// SNOMED CT body structures (DICOM PS3.16 CID 4031) back to the Body Part
// Examined terms radbridge counts regions by.
const SNOMED_REGION = {
  "818981001": "ABDOMEN", "818982008": "ABDOMENPELVIS", "70258002": "ANKLE", "12738006": "BRAIN",
  "76752008": "BREAST", "816094009": "CHEST", "416550000": "CHESTABDOMEN", "416775004": "CHESTABDPELV",
  "51299004": "CLAVICLE", "122494005": "CSPINE", "16953009": "ELBOW", "66019005": "EXTREMITY",
  "56459004": "FOOT", "85562004": "HAND", "69536005": "HEAD", "774007": "HEADNECK", "80891009": "HEART",
  "29836001": "HIP", "72696002": "KNEE", "122496007": "LSPINE", "45048000": "NECK", "816092008": "PELVIS",
  "16982005": "SHOULDER", "89546000": "SKULL", "421060004": "SPINE", "122495006": "TSPINE",
  "38266002": "WHOLEBODY", "74670003": "WRIST",
};

const EVENT_SEVERITY = {
  "imaging.study.available": "success",
  "imaging.study.updated": "info",
  "imaging.report.ready": "info",
  "imaging.report.updated": "info",
  "result.received": "success",
  "order.placed": "info",
  "order.updated": "info",
  "order.cancelled": "warning",
  "imaging.study.viewed": "info",
};

const $ = (sel) => document.querySelector(sel);

/** el builds an element; string children become text nodes. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

function load(storage, key, fallback) {
  try {
    const v = storage.getItem(key);
    return v === null ? fallback : JSON.parse(v);
  } catch {
    return fallback;
  }
}

function save(storage, key, value) {
  try {
    storage.setItem(key, JSON.stringify(value));
  } catch {
    /* private mode, quota: preferences are a convenience */
  }
}

// ---- FHIR helpers ---------------------------------------------------------

function identifierOfType(res, code) {
  for (const id of res.identifier || []) {
    for (const c of (id.type && id.type.coding) || []) if (c.code === code) return id.value || "";
  }
  return "";
}

function studyUID(study) {
  for (const id of study.identifier || []) {
    if (id.system === "urn:dicom:uid" && id.value) return String(id.value).replace(/^urn:oid:/, "");
  }
  return study.id;
}

function codeText(cc) {
  if (!cc) return "";
  if (cc.text) return cc.text;
  for (const c of cc.coding || []) if (c.display) return c.display;
  for (const c of cc.coding || []) if (c.code) return c.code;
  return "";
}

function formatDate(s) {
  if (!s) return "";
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return String(s);
  if (/^\d{4}-\d{2}-\d{2}$/.test(s)) return d.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric", timeZone: "UTC" });
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

// viewerURL is the study's viewer link (the radbridge viewer-url
// extension), only when it is an http(s) URL.
function viewerURL(study) {
  for (const x of study.extension || []) {
    if ((x.url !== VIEWER_URL_EXTENSION && x.url !== VIEWER_URL_EXTENSION_OLD) || typeof x.valueUrl !== "string") continue;
    try {
      const u = new URL(x.valueUrl);
      if (u.protocol === "https:" || u.protocol === "http:") return u.href;
    } catch {
      /* not a URL: no link */
    }
  }
  return "";
}

function modalities(study) {
  const out = [];
  for (const m of study.modality || []) if (m.code && !out.includes(m.code)) out.push(m.code);
  for (const s of study.series || []) {
    const c = s.modality && s.modality.code;
    if (c && !out.includes(c)) out.push(c);
  }
  return out;
}

function regionsOf(study) {
  const out = new Set();
  for (const s of study.series || []) {
    const b = s.bodySite;
    if (!b) continue;
    const r = SNOMED_REGION[b.code] || String(b.display || b.code || "").toUpperCase().replace(/[^A-Z0-9]/g, "");
    if (r) out.add(r);
  }
  return out;
}

function regionLabel(term) {
  return term.charAt(0) + term.slice(1).toLowerCase();
}

// ---- page state -----------------------------------------------------------

const state = {
  patientId: "",
  unsubscribe: null,
  client: null,
  studies: new Map(), // FHIR id -> ImagingStudy
  orders: new Map(), // id -> ServiceRequest
  reports: new Map(), // id -> DiagnosticReport
  reportPriority: new Map(), // report id -> "critical" | "stat"
  progress: new Map(), // study id -> {received, expected}
  viewers: new Map(), // study uid -> Map(viewer name -> time)
  ownViews: new Set(), // AuditEvent ids this tab published
  pendingViews: new Map(), // study uid -> publishes in flight
  extraRegions: {}, // snapshot counts not explained by the studies it listed
  opened: new Set(), // study ids whose card is expanded
  thumbs: new Map(), // study uid -> {version, url, tries}: previews as object URLs
  prefs: load(localStorage, PREFS_KEY, { modality: "", view: "grid" }),
};

function resetState() {
  state.studies.clear();
  state.orders.clear();
  state.reports.clear();
  state.reportPriority.clear();
  state.progress.clear();
  state.viewers.clear();
  state.extraRegions = {};
  state.opened.clear();
  for (const t of state.thumbs.values()) if (t.url) URL.revokeObjectURL(t.url);
  state.thumbs.clear();
}

// thumbnailSrc returns the object URL of a study's preview, fetched with
// the token in the Authorization header (REST takes no cookie), or null
// while there is none; it fetches again when the study changes and, while
// the preview is still being rendered, a few times more.
function thumbnailSrc(uid, version) {
  let t = state.thumbs.get(uid);
  if (t && t.version === version) return t.url;
  const previous = t ? t.url : null;
  t = { version, url: previous, tries: 0 };
  state.thumbs.set(uid, t);
  const load = () => {
    const client = state.client;
    if (!client) return;
    t.tries++;
    client.thumbnailURL(uid).catch(() => null).then((url) => {
      if (state.thumbs.get(uid) !== t || state.client !== client) {
        if (url) URL.revokeObjectURL(url);
        return;
      }
      if (!url) {
        if (t.tries < 6) setTimeout(() => { if (state.thumbs.get(uid) === t) load(); }, 500 * 2 ** t.tries);
        return;
      }
      if (t.url) URL.revokeObjectURL(t.url);
      t.url = url;
      renderStudies();
    });
  };
  load();
  return t.url;
}

function viewerName() {
  return ($("#viewer-name").value || "").trim() || "Clinician";
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || null;
}

// ---- following a patient --------------------------------------------------

function choosePatient(id) {
  id = (id || "").trim();
  if (!id) return;
  if (state.unsubscribe) state.unsubscribe();
  state.patientId = id;
  resetState();
  const recent = [id, ...load(localStorage, RECENT_KEY, []).filter((p) => p !== id)].slice(0, 5);
  save(localStorage, RECENT_KEY, recent);
  renderRecent();
  const url = new URL(location.href);
  url.searchParams.set("patient", id);
  history.replaceState(null, "", url);
  $("#patient-input").value = id;
  $('[data-testid="patient-id"]').textContent = id;
  $('[data-testid="patient-header"]').hidden = false;
  $('[data-testid="imaging-tab"]').hidden = false;
  $('[data-testid="no-patient"]').hidden = true;
  document.title = "radbridge · " + id;
  renderAll();

  state.client = new RadbridgeClient({ url: location.origin, token });
  state.unsubscribe = state.client.subscribeToPatient(id, {
    onSnapshot: applySnapshot,
    onEvent: applyUpdate,
    onStatus: showStatus,
  });
}

function applySnapshot(snap) {
  resetState();
  const conn = $('[data-testid="connection"]');
  conn.dataset.events = "0";
  conn.dataset.lastSequence = String(snap.as_of_sequence);
  for (const s of snap.studies) state.studies.set(s.id, s);
  for (const o of snap.orders) state.orders.set(o.id, o);
  for (const r of snap.reports) state.reports.set(r.id, r);
  // A critical result survives a reload: the snapshot says which reports
  // are critical (and each report carries it, see reportCritical).
  for (const [id, p] of Object.entries(snap.report_priority || {})) state.reportPriority.set(id, p);
  const computed = countRegions();
  for (const [k, v] of Object.entries(snap.body_region_counts || {})) {
    const extra = Number(v) - (computed[k] || 0);
    if (extra > 0) state.extraRegions[k] = extra;
  }
  renderAll();
}

function applyUpdate(u) {
  // For support and tests: how many updates this page applied, up to which sequence.
  const conn = $('[data-testid="connection"]');
  conn.dataset.events = String(Number(conn.dataset.events || 0) + 1);
  if (u.sequence) conn.dataset.lastSequence = String(u.sequence);
  const res = u.resource || {};
  const id = u.resource_id || res.id;
  switch (u.resource_type || res.resourceType) {
    case "ImagingStudy":
      if (!id) break;
      state.studies.set(id, res);
      if (u.event_type === "imaging.study.progress") {
        const m = /(\d+) of (\d+) instance/.exec(u.message || "");
        state.progress.set(id, {
          received: m ? Number(m[1]) : Number(res.numberOfInstances || 0),
          expected: m ? Number(m[2]) : 0,
        });
      } else if (res.status === "available" || res.status === "cancelled") {
        state.progress.delete(id);
      }
      renderStudies();
      renderRegions();
      break;
    case "ServiceRequest":
      if (!id) break;
      state.orders.set(id, res);
      renderOrders();
      renderStudies(); // stat and report links
      break;
    case "DiagnosticReport":
      if (!id) break;
      state.reports.set(id, res);
      if (u.priority === "critical" || u.priority === "stat") state.reportPriority.set(id, u.priority);
      else if (state.reportPriority.get(id) === "critical" && !reportCritical(res)) state.reportPriority.delete(id); // corrected
      renderReports();
      renderStudies();
      break;
    case "AuditEvent":
      if (u.event_type === "imaging.study.viewed" && !noteViewer(u)) return; // our own view
      break;
  }
  notify(u);
}

// noteViewer records who viewed a study; false for this tab's own views.
function noteViewer(u) {
  const res = u.resource || {};
  if (state.ownViews.has(u.resource_id || res.id)) return false;
  let uid = u.study_instance_uid || "";
  for (const e of res.entity || []) {
    const what = e.what || {};
    if (!uid && what.reference && what.reference.startsWith("ImagingStudy/")) uid = what.reference.slice("ImagingStudy/".length);
    if (!uid && what.identifier && what.identifier.system === "urn:dicom:uid") uid = String(what.identifier.value).replace(/^urn:oid:/, "");
  }
  if (!uid) return;
  const agent = (res.agent || [])[0] || {};
  // agent.name is the viewer's name as its page gave it; who is the
  // authenticated client (events recorded before: the name too).
  const who = agent.name || (agent.who && (agent.who.display || (agent.who.identifier && agent.who.identifier.value))) || "Someone";
  // The update can overtake the answer to our own publish.
  if ((state.pendingViews.get(uid) || 0) > 0 && who === viewerName()) {
    state.ownViews.add(u.resource_id || res.id);
    return false;
  }
  if (!state.viewers.has(uid)) state.viewers.set(uid, new Map());
  state.viewers.get(uid).set(who, Date.now());
  renderStudies();
  return true;
}

// ---- derived views --------------------------------------------------------

function countRegions() {
  const counts = {};
  for (const s of state.studies.values()) for (const r of regionsOf(s)) counts[r] = (counts[r] || 0) + 1;
  return counts;
}

function ordersByAccession() {
  const m = new Map();
  for (const o of state.orders.values()) {
    const acc = identifierOfType(o, "ACSN");
    if (acc) m.set(acc, o);
  }
  return m;
}

// reportCritical: the report carries a critical result (FHIR R4: a
// contained Observation interpreted HH, LL or AA, v3 ObservationInterpretation).
const CRITICAL_CODES = new Set(["HH", "LL", "AA"]);
function reportCritical(r) {
  return (r.contained || []).some((o) => o.resourceType === "Observation" &&
    (o.interpretation || []).some((i) => ((i && i.coding) || []).some((c) =>
      c.system === "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation" && CRITICAL_CODES.has(c.code))));
}

function reportPrio(r) {
  const p = state.reportPriority.get(r.id) || "";
  return p !== "critical" && reportCritical(r) ? "critical" : p;
}

function reportFor(study) {
  const acc = identifierOfType(study, "ACSN");
  const orderIds = new Set();
  if (acc) for (const o of state.orders.values()) if (identifierOfType(o, "ACSN") === acc) orderIds.add("ServiceRequest/" + o.id);
  // A study joined to its order by Study Instance UID may have no accession.
  for (const b of study.basedOn || []) orderIds.add(b.reference);
  const self = "ImagingStudy/" + study.id;
  let best = null;
  for (const r of state.reports.values()) {
    const linked = (acc && identifierOfType(r, "ACSN") === acc) || (r.basedOn || []).some((b) => orderIds.has(b.reference)) ||
      (r.imagingStudy || []).some((x) => x.reference === self);
    if (linked && (!best || (r.issued || "") >= (best.issued || ""))) best = r;
  }
  return best;
}

// ---- rendering ------------------------------------------------------------

function renderAll() {
  renderStudies();
  renderRegions();
  renderOrders();
  renderReports();
}

function renderStudies() {
  const gallery = $('[data-testid="gallery"]');
  const byAcc = ordersByAccession();
  const studies = [...state.studies.values()].sort((a, b) => (b.started || "").localeCompare(a.started || "") || a.id.localeCompare(b.id));

  // Modality filter: options from every study, the choice kept.
  const select = $("#modality-filter");
  const mods = [...new Set(studies.flatMap(modalities))].sort();
  if (state.prefs.modality && !mods.includes(state.prefs.modality)) mods.push(state.prefs.modality);
  const current = [...select.options].map((o) => o.value).slice(1);
  if (current.join() !== mods.join()) {
    select.replaceChildren(el("option", { value: "" }, "All"), ...mods.map((m) => el("option", { value: m }, m)));
  }
  select.value = state.prefs.modality;

  gallery.className = "gallery " + (state.prefs.view === "list" ? "list" : "grid");
  for (const b of document.querySelectorAll("[data-view]")) b.setAttribute("aria-pressed", String(b.dataset.view === state.prefs.view));

  const keep = new Set();
  let shown = 0;
  for (const s of studies) {
    const uid = studyUID(s);
    keep.add(uid);
    let card = gallery.querySelector(`[data-testid="study-card"][data-study-uid="${CSS.escape(uid)}"]`);
    if (!card) {
      card = el("article", { class: "card", "data-testid": "study-card", "data-study-uid": uid, tabindex: "0", role: "button" });
      card.addEventListener("click", () => openStudy(s.id, uid));
      card.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          openStudy(s.id, uid);
        }
      });
      gallery.append(card);
    }
    fillStudyCard(card, s, uid, byAcc);
    const visible = !state.prefs.modality || modalities(s).includes(state.prefs.modality);
    card.hidden = !visible;
    if (visible) shown++;
    gallery.append(card); // keeps the sort order; moves, never recreates
  }
  for (const card of [...gallery.children]) if (!keep.has(card.dataset.studyUid)) card.remove();
  $('[data-testid="study-total"]').textContent = String(studies.length);
  $('[data-testid="no-studies"]').hidden = shown > 0;
  $('[data-testid="no-studies"]').textContent = studies.length ? "No studies match the filter." : "No imaging studies yet.";
}

function fillStudyCard(card, s, uid, byAcc) {
  const acc = identifierOfType(s, "ACSN");
  const order = acc ? byAcc.get(acc) : null;
  const report = reportFor(s);
  const stat = order && (order.priority === "stat" || order.priority === "asap");
  const critical = report && reportPrio(report) === "critical";
  const mods = modalities(s);
  const prog = state.progress.get(s.id);
  const arriving = prog && s.status !== "available" && s.status !== "cancelled";

  card.dataset.status = s.status || "";
  card.dataset.accession = acc;
  card.classList.toggle("stat", !!stat);
  card.classList.toggle("critical", !!critical);
  card.classList.toggle("open", state.opened.has(s.id));
  card.setAttribute("aria-expanded", String(state.opened.has(s.id)));

  const badges = el("div", { class: "badges" });
  if (critical) badges.append(el("span", { class: "badge critical", "data-testid": "critical-badge" }, "CRITICAL"));
  if (stat) badges.append(el("span", { class: "badge stat", "data-testid": "stat-badge" }, "STAT"));
  badges.append(el("span", { class: "badge status-" + (s.status || "unknown"), "data-testid": "study-status" }, s.status || "unknown"));

  // The preview exists once the study is available (rendered in the
  // background); a missing one hides itself.
  const thumbURL = s.status === "available"
    ? thumbnailSrc(uid, [s.status, s.numberOfSeries || 0, s.numberOfInstances || 0].join("/"))
    : null;
  const thumb = thumbURL
    ? el("img", { class: "thumb", "data-testid": "study-thumbnail", width: "96", height: "96",
        alt: "Preview of " + (s.description || mods.join(" / ") || "imaging study"),
        src: thumbURL,
        onerror: (e) => { e.target.hidden = true; } })
    : null;
  const children = [
    el("div", { class: "card-top" },
      el("div", { class: "modality", "data-testid": "modality" }, mods.join(" / ") || "—"),
      badges),
    el("h3", { class: "description", "data-testid": "study-description" }, s.description || "Imaging study"),
    el("div", { class: "meta" },
      el("span", { "data-testid": "study-date" }, formatDate(s.started) || "date unknown"),
      acc ? el("span", { class: "acc" }, "Acc " + acc) : null),
    el("div", { class: "counts" },
      el("span", {}, el("strong", { "data-testid": "series-count" }, String(s.numberOfSeries || 0)), " series"),
      el("span", {}, el("strong", { "data-testid": "instance-count" }, String(s.numberOfInstances || 0)), " images")),
    el("div", { class: "report-line", "data-testid": "study-report-status", "data-status": report ? report.status : "none" },
      report ? "Report: " + report.status : "No report yet"),
  ];
  if (thumb) children.unshift(thumb);
  const viewer = viewerURL(s);
  if (viewer) {
    // A link inside the card: its click and keys must not open the card too.
    const stop = (e) => e.stopPropagation();
    children.push(el("a", { class: "viewer-link", "data-testid": "viewer-link", href: viewer, target: "_blank", rel: "noopener noreferrer", onclick: stop, onkeydown: stop }, "Open in viewer"));
  }
  if (arriving) {
    const exp = prog.expected || 0;
    const received = Math.max(prog.received, Number(s.numberOfInstances || 0));
    children.push(el("div", { class: "progress", "data-testid": "study-progress" },
      el("div", { class: "progress-label" }, exp ? `Images received: ${received}/${exp}` : `Images received: ${received}`),
      el("div", { class: "bar" + (exp ? "" : " indeterminate"), role: "progressbar", "aria-valuemin": "0", "aria-valuemax": exp || undefined, "aria-valuenow": received },
        el("div", { class: "fill" }))));
  }
  const viewers = activeViewers(uid);
  if (viewers.length) {
    children.push(el("div", { class: "viewers", "data-testid": "viewers" }, "Also viewing: " + viewers.join(", ")));
  }
  if (state.opened.has(s.id)) {
    const list = el("ul", { class: "series-list", "data-testid": "series-list" });
    for (const se of s.series || []) {
      list.append(el("li", {},
        el("span", {}, [se.number ? "#" + se.number : "", se.modality && se.modality.code, se.description].filter(Boolean).join(" · ")),
        el("span", { class: "muted" }, [se.bodySite ? codeText({ coding: [se.bodySite] }) : "", (se.numberOfInstances || 0) + " images"].filter(Boolean).join(" · "))));
    }
    children.push(list);
  }
  card.replaceChildren(...children);
  // Widths are set as properties: the CSP allows no style attributes.
  const fill = card.querySelector(".fill");
  if (fill && arriving && prog.expected) fill.style.width = Math.min(100, Math.round((100 * Math.max(prog.received, Number(s.numberOfInstances || 0))) / prog.expected)) + "%";
}

function activeViewers(uid) {
  const m = state.viewers.get(uid);
  if (!m) return [];
  const now = Date.now();
  for (const [who, t] of m) if (now - t > VIEW_TTL_MS) m.delete(who);
  return [...m.keys()].sort();
}

async function openStudy(id, uid) {
  if (state.opened.has(id)) state.opened.delete(id);
  else state.opened.add(id);
  renderStudies();
  if (!state.opened.has(id) || !state.client) return;
  const s = state.studies.get(id);
  state.pendingViews.set(uid, (state.pendingViews.get(uid) || 0) + 1);
  try {
    const ev = await state.client.publishViewed(state.patientId, uid, { name: viewerName() }, { accession: s ? identifierOfType(s, "ACSN") : "" });
    if (ev && ev.resource_id) state.ownViews.add(ev.resource_id);
  } catch (err) {
    toast("warning", "Could not record that you opened this study: " + (err.message || err));
  } finally {
    // Our update may still be on its way: keep recognising it a little longer.
    setTimeout(() => state.pendingViews.set(uid, state.pendingViews.get(uid) - 1), 5000);
  }
}

function renderRegions() {
  const list = $('[data-testid="regions"]');
  const counts = { ...state.extraRegions };
  for (const [k, v] of Object.entries(countRegions())) counts[k] = (counts[k] || 0) + v;
  const keys = Object.keys(counts).filter((k) => counts[k] > 0).sort((a, b) => counts[b] - counts[a] || a.localeCompare(b));
  const max = Math.max(1, ...keys.map((k) => counts[k]));
  const keep = new Set(keys);
  for (const k of keys) {
    let li = list.querySelector(`[data-region="${CSS.escape(k)}"]`);
    if (!li) {
      li = el("li", { "data-testid": "region-count", "data-region": k },
        el("span", { class: "region-name" }, regionLabel(k)),
        el("span", { class: "region-bar" }, el("span", { class: "region-fill" })),
        el("strong", { class: "region-value", "data-testid": "region-value" }));
    }
    const value = li.querySelector(".region-value");
    if (value.textContent !== String(counts[k])) {
      value.textContent = String(counts[k]);
      li.classList.remove("changed");
      void li.offsetWidth; // restart the highlight
      li.classList.add("changed");
    }
    li.dataset.count = String(counts[k]);
    li.querySelector(".region-fill").style.width = Math.round((100 * counts[k]) / max) + "%";
    list.append(li);
  }
  for (const li of [...list.children]) if (!keep.has(li.dataset.region)) li.remove();
  $('[data-testid="no-regions"]').hidden = keys.length > 0;
}

function renderOrders() {
  const list = $('[data-testid="orders"]');
  const orders = [...state.orders.values()].sort((a, b) => (b.authoredOn || "").localeCompare(a.authoredOn || "") || a.id.localeCompare(b.id));
  list.replaceChildren(...orders.map((o) => {
    const acc = identifierOfType(o, "ACSN");
    const stat = o.priority === "stat" || o.priority === "asap";
    return el("li", { class: "order" + (stat ? " stat" : "") + " status-" + o.status, "data-testid": "order", "data-accession": acc, "data-order-id": o.id, "data-priority": o.priority || "routine" },
      el("div", { class: "row" },
        el("span", { class: "title" }, codeText(o.code) || "Imaging order"),
        stat ? el("span", { class: "badge stat", "data-testid": "stat-badge" }, o.priority.toUpperCase()) : null),
      el("div", { class: "row meta" },
        el("span", { class: "badge status-" + o.status, "data-testid": "order-status" }, o.status || "unknown"),
        acc ? el("span", {}, "Acc " + acc) : null,
        o.authoredOn ? el("span", {}, formatDate(o.authoredOn)) : null),
      o.reasonCode && o.reasonCode[0] ? el("div", { class: "reason muted" }, codeText(o.reasonCode[0])) : null);
  }));
  $('[data-testid="order-total"]').textContent = String(orders.length);
  $('[data-testid="no-orders"]').hidden = orders.length > 0;
}

function renderReports() {
  const list = $('[data-testid="reports"]');
  const reports = [...state.reports.values()].sort((a, b) => (b.issued || "").localeCompare(a.issued || "") || a.id.localeCompare(b.id));
  list.replaceChildren(...reports.map((r) => {
    const acc = identifierOfType(r, "ACSN");
    const prio = reportPrio(r);
    const conclusion = r.conclusion || "";
    const interpreter = (r.resultsInterpreter || [])[0];
    return el("li", { class: "report " + prio + " status-" + r.status, "data-testid": "report", "data-accession": acc, "data-report-id": r.id, "data-status": r.status, "data-priority": prio || undefined },
      el("div", { class: "row" },
        el("span", { class: "title" }, codeText(r.code) || "Imaging report"),
        prio ? el("span", { class: "badge " + prio, "data-testid": "report-priority" }, prio.toUpperCase()) : null),
      el("div", { class: "row meta" },
        el("span", { class: "badge status-" + r.status, "data-testid": "report-status" }, r.status || "unknown"),
        acc ? el("span", {}, "Acc " + acc) : null,
        r.issued ? el("span", {}, formatDate(r.issued)) : null,
        interpreter && interpreter.display ? el("span", {}, interpreter.display) : null),
      conclusion ? el("p", { class: "conclusion", "data-testid": "report-conclusion", title: conclusion }, conclusion.length > 180 ? conclusion.slice(0, 177) + "…" : conclusion) : null);
  }));
  $('[data-testid="report-total"]').textContent = String(reports.length);
  $('[data-testid="no-reports"]').hidden = reports.length > 0;
}

// ---- status and notifications ---------------------------------------------

const STATUS_TEXT = {
  loading: "loading…",
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  unauthorized: "not authorized",
  closed: "not connected",
};

function showStatus(s, detail) {
  const c = $('[data-testid="connection"]');
  c.dataset.state = s;
  c.textContent = STATUS_TEXT[s] || s;
  c.title = detail && detail.reason ? detail.reason : typeof detail === "string" ? detail : "";
  if (s === "unauthorized") toast("error", "Not authorized to follow this patient" + (typeof detail === "string" ? " (" + detail + ")" : "") + ".");
}

function notify(u) {
  // Progress and a report's link to its order or study update in place:
  // the report was announced when it arrived.
  if (u.event_type === "imaging.study.progress" || u.event_type === "imaging.report.updated") return;
  const sev = u.severity || EVENT_SEVERITY[u.event_type] || "info";
  const text = u.message || (u.event_type || "update").replace(/\./g, " ");
  toast(sev, text, u);
}

function toast(severity, text, u = {}) {
  const box = $('[data-testid="notifications"]');
  const prio = u.priority && u.priority !== "routine" ? u.priority : "";
  const n = el("div", { class: `notification ${severity} ${prio}`, "data-testid": "notification", "data-severity": severity, "data-event-type": u.event_type, "data-priority": prio || undefined, role: severity === "error" ? "alert" : "status" },
    el("span", { class: "sev", "aria-hidden": "true" }),
    el("span", { class: "text" }, text),
    el("button", { type: "button", class: "close", "aria-label": "Dismiss", onclick: () => n.remove() }, "×"));
  box.append(n);
  while (box.children.length > 5) box.firstElementChild.remove();
  setTimeout(() => n.remove(), severity === "error" || prio === "critical" ? 20000 : 8000);
}

// ---- chrome ---------------------------------------------------------------

function renderRecent() {
  const box = $('[data-testid="recent-patients"]');
  const recent = load(localStorage, RECENT_KEY, []);
  box.replaceChildren(...recent.map((p) => el("button", { type: "button", class: "chip" + (p === state.patientId ? " current" : ""), "data-testid": "recent-patient", onclick: () => choosePatient(p) }, p)));
}

function init() {
  $('[data-testid="patient-form"]').addEventListener("submit", (e) => {
    e.preventDefault();
    choosePatient($("#patient-input").value);
  });
  const name = $("#viewer-name");
  name.value = load(localStorage, VIEWER_KEY, "");
  name.addEventListener("change", () => save(localStorage, VIEWER_KEY, name.value.trim()));
  $("#token-apply").addEventListener("click", () => {
    const t = $("#token-input").value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
    $("#token-input").value = "";
    if (state.patientId) choosePatient(state.patientId);
  });
  $("#modality-filter").addEventListener("change", (e) => {
    state.prefs.modality = e.target.value;
    save(localStorage, PREFS_KEY, state.prefs);
    renderStudies();
  });
  for (const b of document.querySelectorAll("[data-view]")) {
    b.addEventListener("click", () => {
      state.prefs.view = b.dataset.view;
      save(localStorage, PREFS_KEY, state.prefs);
      renderStudies();
    });
  }
  setInterval(() => state.viewers.size && renderStudies(), 60000); // viewers age out
  renderRecent();
  const fromQuery = new URLSearchParams(location.search).get("patient");
  if (fromQuery) choosePatient(fromQuery);
}

init();
