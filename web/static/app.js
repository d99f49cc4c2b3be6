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
// The same extension as resources written before the canonical base moved name it.
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

// Human labels of the FHIR status codes, per resource type: the page never
// shows a raw code (REGISTERED, REVOKED).
const STATUS_LABEL = {
  ImagingStudy: {
    registered: "Images arriving", available: "Available", cancelled: "Cancelled",
    "entered-in-error": "Entered in error", unknown: "Status unknown",
  },
  ServiceRequest: {
    draft: "Draft", active: "Ordered", "on-hold": "On hold", revoked: "Cancelled", completed: "Completed",
    "entered-in-error": "Entered in error", unknown: "Status unknown",
  },
  DiagnosticReport: {
    registered: "Awaiting report", partial: "Partial report", preliminary: "Preliminary", final: "Final",
    amended: "Amended", corrected: "Corrected", appended: "Addendum", cancelled: "Cancelled",
    "entered-in-error": "Entered in error", unknown: "Status unknown",
  },
};

// statusLabel is the human label of a resource's status code; a code the
// table lacks is spelled out in words, never shown raw.
function statusLabel(type, code) {
  if (!code) return "Status unknown";
  const t = STATUS_LABEL[type] || {};
  if (t[code]) return t[code];
  const words = String(code).replace(/[-_]+/g, " ").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

// ---- body map -------------------------------------------------------------

// The zones of the drawn body map and the Body Part Examined terms (DICOM
// PS3.16 annex L) each counts; a combined term counts in every zone it
// names. Terms of no zone count under "Other".
const ZONES = [
  { id: "HEAD", label: "Head", terms: ["HEAD", "BRAIN", "SKULL", "HEADNECK", "FACE", "ORBIT", "SINUS", "IAC", "JAW", "TMJ", "EAR", "NOSE"] },
  { id: "NECK", label: "Neck", terms: ["NECK", "HEADNECK", "THYROID", "LARYNX"] },
  { id: "CHEST", label: "Chest", terms: ["CHEST", "HEART", "BREAST", "CLAVICLE", "LUNG", "RIB", "STERNUM", "THORAX", "CHESTABDOMEN", "CHESTABDPELV"] },
  { id: "ABDOMEN", label: "Abdomen", terms: ["ABDOMEN", "LIVER", "KIDNEY", "PANCREAS", "GALLBLADDER", "SPLEEN", "STOMACH", "ABDOMENPELVIS", "CHESTABDOMEN", "CHESTABDPELV"] },
  { id: "PELVIS", label: "Pelvis", terms: ["PELVIS", "HIP", "BLADDER", "PROSTATE", "UTERUS", "OVARY", "ABDOMENPELVIS", "CHESTABDPELV"] },
  { id: "ARM", label: "Arms", terms: ["SHOULDER", "ELBOW", "WRIST", "HAND", "ARM", "FOREARM", "HUMERUS", "UPRLIMB", "FINGER", "THUMB"] },
  { id: "LEG", label: "Legs", terms: ["KNEE", "ANKLE", "FOOT", "LEG", "FEMUR", "TIBIA", "FIBULA", "LOWRLIMB", "THIGH", "TOE", "CALF"] },
  { id: "SPINE", label: "Spine", terms: ["SPINE", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "SACRUM", "COCCYX", "TLSPINE"] },
  { id: "WHOLEBODY", label: "Whole body", terms: ["WHOLEBODY"] },
  { id: "OTHER", label: "Other", terms: [] },
];
const ZONE_OF_TERM = {};
for (const z of ZONES) for (const t of z.terms) (ZONE_OF_TERM[t] ||= []).push(z.id);

function zonesOfTerm(term) {
  return ZONE_OF_TERM[term] || ["OTHER"];
}

// The figure, drawn front-on in a 220 x 420 box: each zone's shapes and
// where its count badge sits. Spine, whole body and other are chips below.
const SVG_NS = "http://www.w3.org/2000/svg";
const FIGURE = {
  HEAD: { shapes: [["ellipse", { cx: 110, cy: 38, rx: 24, ry: 28 }]], badge: [148, 30] },
  NECK: { shapes: [["rect", { x: 99, y: 64, width: 22, height: 16, rx: 4 }]], badge: [148, 72] },
  CHEST: { shapes: [["path", { d: "M72 84 Q110 74 148 84 L144 150 L76 150 Z" }]], badge: [110, 118] },
  ABDOMEN: { shapes: [["path", { d: "M76 152 L144 152 L140 200 L80 200 Z" }]], badge: [110, 177] },
  PELVIS: { shapes: [["path", { d: "M80 202 L140 202 L146 238 L110 250 L74 238 Z" }]], badge: [110, 226] },
  ARM: {
    shapes: [
      ["path", { d: "M70 86 L52 92 L34 200 L30 250 L44 252 L54 204 L72 120 Z" }],
      ["path", { d: "M150 86 L168 92 L186 200 L190 250 L176 252 L166 204 L148 120 Z" }],
    ],
    badge: [40, 160],
  },
  LEG: {
    shapes: [
      ["path", { d: "M76 240 L108 252 L104 330 L100 404 L80 404 L78 330 Z" }],
      ["path", { d: "M144 240 L112 252 L116 330 L120 404 L140 404 L142 330 Z" }],
    ],
    badge: [110, 330],
  },
};
const CHIPS = ["SPINE", "WHOLEBODY", "OTHER"];

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  for (const c of children) e.append(typeof c === "string" ? document.createTextNode(c) : c);
  return e;
}

// buildBodyMap draws the figure once: one focusable group per zone
// (role button, toggling the gallery's region filter), its count badge
// hidden while the zone has no study.
function buildBodyMap() {
  const box = $('[data-testid="body-map"]');
  const root = svg("svg", { viewBox: "0 0 220 470", class: "body-map", role: "group", "aria-labelledby": "regions-title", focusable: "false" });
  root.append(svg("title", {}, "Body map: imaging studies by region"));
  const zone = (id, shapes, badge) => {
    const z = ZONES.find((x) => x.id === id);
    const g = svg("g", { class: "zone", "data-testid": "region-count", "data-region": id, "data-count": "0" });
    const area = svg("g", { class: "zone-area" });
    for (const [tag, a] of shapes) area.append(svg(tag, a));
    g.append(area);
    const [bx, by] = badge;
    g.append(svg("g", { class: "zone-badge", "aria-hidden": "true" },
      svg("circle", { cx: bx, cy: by, r: 12 }),
      svg("text", { x: bx, y: by + 4.5, "text-anchor": "middle", "data-testid": "region-value" }, "0")));
    g.addEventListener("click", () => toggleRegion(id));
    g.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        toggleRegion(id);
      }
    });
    g.dataset.label = z.label;
    return g;
  };
  root.append(svg("path", { class: "outline", d: "M110 10 C84 10 84 66 110 66 C136 66 136 10 110 10 Z M99 64 L70 84 L34 92 L26 252 L50 256 L76 160 L74 240 L78 408 L104 408 L110 262 L116 408 L142 408 L146 240 L144 160 L170 256 L194 252 L186 92 L150 84 L121 64 Z", "aria-hidden": "true" }));
  for (const [id, f] of Object.entries(FIGURE)) root.append(zone(id, f.shapes, f.badge));
  CHIPS.forEach((id, i) => {
    const x = 6 + i * 72;
    const z = ZONES.find((q) => q.id === id);
    const g = zone(id, [["rect", { x, y: 420, width: 66, height: 40, rx: 8 }]], [x + 52, 440]);
    g.append(svg("text", { x: x + 6, y: 445, class: "chip-label", "aria-hidden": "true" }, z.label === "Whole body" ? "Whole" : z.label));
    root.append(g);
  });
  box.replaceChildren(root);
}

function toggleRegion(id) {
  state.regionFilter = state.regionFilter === id ? "" : id;
  renderRegions();
  renderStudies();
}

// zonesOfStudy are the body map zones a study counts in.
function zonesOfStudy(study) {
  const out = new Set();
  for (const term of regionsOf(study)) for (const z of zonesOfTerm(term)) out.add(z);
  return out;
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
  regionFilter: "", // a body map zone the gallery is limited to
  zoneCounts: {}, // zone -> count last drawn, to highlight a rise
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
  state.regionFilter = "";
  state.zoneCounts = {};
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
      card = el("div", { class: "card", "data-testid": "study-card", "data-study-uid": uid, tabindex: "0", role: "button" });
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
    const visible = (!state.prefs.modality || modalities(s).includes(state.prefs.modality)) &&
      (!state.regionFilter || zonesOfStudy(s).has(state.regionFilter));
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
  badges.append(el("span", { class: "badge status status-" + (s.status || "unknown"), "data-testid": "study-status", "data-status": s.status || "unknown" }, statusLabel("ImagingStudy", s.status)));

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
      report ? "Report: " + statusLabel("DiagnosticReport", report.status) : "No report yet"),
  ];
  if (thumb) children.unshift(thumb);
  const viewer = viewerURL(s);
  if (viewer) {
    // A link inside the card: its click and keys must not open the card too.
    const stop = (e) => e.stopPropagation();
    children.push(el("a", { class: "viewer-link", "data-testid": "viewer-link", href: viewer, target: "_blank", rel: "noopener noreferrer", onclick: stop, onkeydown: stop }, "Open in viewer"));
  }
  if (arriving) {
    // N/M with a bar when the expected count is known (MPPS, IAN); the
    // count alone otherwise: an empty bar would say nothing.
    const exp = prog.expected || 0;
    const received = Math.max(prog.received, Number(s.numberOfInstances || 0));
    const label = exp ? `Images received: ${received}/${exp}` : `Images received: ${received}`;
    children.push(el("div", { class: "progress", "data-testid": "study-progress", "data-received": received, "data-expected": exp || undefined },
      el("div", { class: "progress-label", id: "progress-" + s.id }, label),
      exp ? el("div", { class: "bar", role: "progressbar", "aria-labelledby": "progress-" + s.id, "aria-valuemin": "0", "aria-valuemax": exp, "aria-valuenow": Math.min(received, exp) },
        el("div", { class: "fill" })) : null));
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
  if (!document.querySelector('[data-testid="body-map"] svg')) buildBodyMap();
  const terms = { ...state.extraRegions };
  for (const [k, v] of Object.entries(countRegions())) terms[k] = (terms[k] || 0) + v;
  // A study counts once per zone, whatever number of its terms fall in it.
  const counts = {};
  for (const st of state.studies.values()) for (const z of zonesOfStudy(st)) counts[z] = (counts[z] || 0) + 1;
  for (const [k, v] of Object.entries(state.extraRegions)) for (const z of zonesOfTerm(k)) counts[z] = (counts[z] || 0) + v;
  const other = Object.keys(terms).filter((k) => zonesOfTerm(k)[0] === "OTHER" && terms[k] > 0).map(regionLabel).sort();
  let any = false;
  for (const g of document.querySelectorAll('[data-testid="body-map"] .zone')) {
    const id = g.dataset.region;
    const n = counts[id] || 0;
    const prev = state.zoneCounts[id] || 0;
    any ||= n > 0;
    g.dataset.count = String(n);
    g.querySelector('[data-testid="region-value"]').textContent = String(n);
    g.classList.toggle("empty", n === 0);
    g.classList.toggle("selected", state.regionFilter === id);
    const what = id === "OTHER" && other.length ? `Other (${other.join(", ")})` : g.dataset.label;
    if (n > 0) {
      g.setAttribute("role", "button");
      g.setAttribute("tabindex", "0");
      g.setAttribute("aria-pressed", String(state.regionFilter === id));
      g.setAttribute("aria-label", `${what}: ${n} ${n === 1 ? "study" : "studies"}` + (state.regionFilter === id ? ", shown alone; press to show all" : "; press to show only these"));
      g.removeAttribute("aria-hidden");
    } else {
      for (const a of ["role", "tabindex", "aria-pressed", "aria-label"]) g.removeAttribute(a);
      g.setAttribute("aria-hidden", "true");
    }
    if (n > prev) {
      // A new study in this zone: highlight it.
      g.classList.remove("changed");
      void g.getBoundingClientRect();
      g.classList.add("changed");
    }
    state.zoneCounts[id] = n;
  }
  if (state.regionFilter && !(counts[state.regionFilter] > 0)) state.regionFilter = "";
  $('[data-testid="no-regions"]').hidden = any;
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
        el("span", { class: "badge status status-" + o.status, "data-testid": "order-status", "data-status": o.status || "unknown" }, statusLabel("ServiceRequest", o.status)),
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
        el("span", { class: "badge status status-" + r.status, "data-testid": "report-status", "data-status": r.status || "unknown" }, statusLabel("DiagnosticReport", r.status)),
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
