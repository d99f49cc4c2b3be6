// The exceptions worklist (/ops): GET /v1/exceptions, and corrections by
// POST /v1/reconcile (operators only). No build step; text only goes into
// the page through textContent.
const TOKEN_KEY = "radbridge.token"; // sessionStorage, as the imaging page

const $ = (s) => document.querySelector(s);

function headers(json) {
  const h = {};
  const t = sessionStorage.getItem(TOKEN_KEY);
  if (t) h.Authorization = "Bearer " + t;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

function say(text) {
  $("#ops-status").textContent = text;
}

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function label(r) {
  switch (r.action) {
    case "move": return "Move study to " + r.patient;
    case "retry": return "Retry record " + r.seq;
    case "link": return "Link to order " + r.order;
    default: return r.action;
  }
}

async function act(body) {
  const resp = await fetch("/v1/reconcile", { method: "POST", headers: headers(true), body: JSON.stringify(body) });
  const out = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    say("Not done: " + (out.error || resp.status));
    return false;
  }
  say("Recorded as ingest record " + out.ingest_seq + "; " + (out.events || []).length + " event(s).");
  await load();
  return true;
}

function row(it) {
  const tr = el("tr", null, { "data-testid": "item", "data-kind": it.kind, "data-id": it.id });
  tr.append(el("td", it.kind));
  const about = [];
  if (it.patient_id) about.push("patient " + it.patient_id);
  if (it.study_instance_uid) about.push("study " + it.study_instance_uid);
  if (it.accession_number) about.push("accession " + it.accession_number);
  if (it.order_id) about.push("order " + it.order_id);
  if (it.report_id) about.push("report " + it.report_id);
  if (it.ingest_seq) about.push("ingest record " + it.ingest_seq);
  tr.append(el("td", about.join(", ")));
  tr.append(el("td", it.evidence));
  const td = el("td");
  td.append(el("p", it.action));
  if (it.resolve) {
    const f = el("form", null, { "data-testid": "resolve-form", "aria-label": "Resolve " + it.kind });
    const id = "reason-" + it.id.replace(/[^A-Za-z0-9]/g, "-");
    const lab = el("label", "Reason", { for: id });
    const reason = el("input", null, { id, required: "", maxlength: "1000", "data-testid": "resolve-reason" });
    const btn = el("button", label(it.resolve), { type: "submit", "data-testid": "resolve-button" });
    f.append(lab, reason, btn);
    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      btn.disabled = true;
      await act({ ...it.resolve, reason: reason.value });
      btn.disabled = false;
    });
    td.append(f);
  }
  tr.append(td);
  return tr;
}

async function load() {
  const resp = await fetch("/v1/exceptions", { headers: headers(false) });
  if (!resp.ok) {
    say("Cannot load the worklist: " + resp.status + (resp.status === 401 ? " (give an access token)" : ""));
    return;
  }
  const data = await resp.json();
  const counts = $("[data-testid=counts]");
  counts.replaceChildren(...Object.entries(data.counts).map(([k, n]) => el("li", k + ": " + n, { "data-kind": k })));
  const body = $("[data-testid=items] tbody");
  body.replaceChildren(...data.items.map(row));
  $("[data-testid=no-items]").hidden = data.items.length > 0;
  document.body.dataset.loaded = String(data.applied_sequence);
}

$("[data-testid=token-form]").addEventListener("submit", (e) => {
  e.preventDefault();
  const t = $("#token-input").value.trim();
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
  $("#token-input").value = "";
  load();
});
$("#refresh").addEventListener("click", () => load());
$("#act-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const body = { action: f.get("action"), study: f.get("study"), reason: f.get("reason") };
  if (f.get("order")) body.order = f.get("order");
  if (f.get("patient")) body.patient = f.get("patient");
  if (await act(body)) e.target.reset();
});
load();
