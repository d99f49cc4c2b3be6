/**
 * radbridge.js — browser client for radbridge's live imaging events.
 *
 * One ES module, no dependencies, no build step. It follows a patient the way
 * radbridge's design asks ("snapshot, then stream"): load the patient's
 * current imaging as of sequence N over REST, then subscribe to the patient's
 * room over WebSocket (/ws, the browser room protocol) from N, so no event is
 * missed and none is seen twice — also across reconnects.
 *
 *   import { RadbridgeClient } from "/radbridge.js";
 *
 *   const client = new RadbridgeClient({ url: location.origin, token });
 *   const unsubscribe = client.subscribeToPatient("MRN4711", {
 *     onSnapshot(snapshot) {
 *       // { patient_id, as_of_sequence, studies: [ImagingStudy], orders: [ServiceRequest],
 *       //   reports: [DiagnosticReport], body_region_counts: {CHEST: 2, ...} }
 *     },
 *     onEvent(update) {
 *       // { event_type: "imaging.study.available", action, patient_id, resource_type,
 *       //   resource_id, resource: {FHIR R4}, sequence, severity, priority, message, ... }
 *     },
 *     onStatus(state, detail) {
 *       // "loading" | "connecting" | "live" | "reconnecting" | "unauthorized" | "closed"
 *     },
 *   });
 *   await client.publishViewed("MRN4711", "1.2.840.1", { name: "Dr Lee" });
 *   unsubscribe();
 *
 * Options: url (default location.origin), token (a string, or a function
 * returning a string or a promise of one, called before each connection so
 * an expired token can be refreshed), heartbeatMs (20000: a ping when
 * nothing was sent for that long), idleTimeoutMs (45000: no message at all
 * for that long means the connection is dead: reconnect), backoffMinMs (500)
 * and backoffMaxMs (30000) for reconnects (exponential, with jitter).
 *
 * The token travels in the Authorization header (REST) and in the first
 * WebSocket message ({"type":"auth"}), never in a URL: URLs end up in logs,
 * browser history and Referer headers.
 */

const RESOURCE_TYPES = ["ImagingStudy", "DiagnosticReport", "ServiceRequest", "AuditEvent"];
const AUTH_ERRORS = new Set(["AUTH_FAILED", "TOKEN_EXPIRED", "FORBIDDEN", "UNAUTHENTICATED", "PERMISSION_DENIED"]);

let subscriptionCounter = 0;

/** An HTTP error from the REST API, with the status and the server's message. */
export class RadbridgeError extends Error {
  constructor(status, message, body) {
    super(message);
    this.name = "RadbridgeError";
    this.status = status;
    this.body = body;
  }
}

export class RadbridgeClient {
  /**
   * @param {object} [options]
   * @param {string} [options.url] radbridge's HTTP origin, e.g. "https://imaging.example.org"
   * @param {string|function(): (string|Promise<string>)} [options.token] bearer token
   */
  constructor(options = {}) {
    const base = options.url ?? globalThis.location?.origin;
    if (!base) throw new TypeError("RadbridgeClient: url is required outside a browser page");
    this.url = new URL(base);
    this.token = options.token ?? null;
    this.heartbeatMs = options.heartbeatMs ?? 20000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 45000;
    this.backoffMinMs = options.backoffMinMs ?? 500;
    this.backoffMaxMs = options.backoffMaxMs ?? 30000;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** The current token, or null. */
  async currentToken() {
    const t = typeof this.token === "function" ? await this.token() : this.token;
    return t || null;
  }

  async request(method, path, body) {
    const headers = { Accept: "application/json" };
    const token = await this.currentToken();
    if (token) headers.Authorization = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await this.fetch(new URL(path, this.url), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
    const text = await resp.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!resp.ok) {
      throw new RadbridgeError(resp.status, (json && json.message) || `${method} ${path}: HTTP ${resp.status}`, json);
    }
    return json;
  }

  /**
   * The patient's current imaging: every page of GET /v1/patients/{id}/imaging
   * merged. A patient radbridge has no events for (404) is an empty snapshot
   * as of sequence 0.
   */
  async snapshot(patientId) {
    const out = { patient_id: patientId, as_of_sequence: 0, studies: [], orders: [], reports: [], body_region_counts: {}, report_priority: {} };
    let pageToken = "";
    for (let page = 0; page < 1000; page++) {
      const q = pageToken ? "?page_size=1000&page_token=" + encodeURIComponent(pageToken) : "?page_size=1000";
      let r;
      try {
        r = await this.request("GET", "/v1/patients/" + encodeURIComponent(patientId) + "/imaging" + q);
      } catch (err) {
        if (err instanceof RadbridgeError && err.status === 404 && page === 0) return out;
        throw err;
      }
      r = r || {};
      // The first page's sequence is the oldest state any page shows:
      // subscribing from it may repeat an event, never miss one.
      if (page === 0) out.as_of_sequence = Number(r.as_of_sequence || 0);
      out.studies.push(...(r.studies || []));
      out.orders.push(...(r.orders || []));
      out.reports.push(...(r.reports || []));
      Object.assign(out.body_region_counts, r.body_region_counts || {});
      Object.assign(out.report_priority, r.report_priority || {});
      if (!r.next_page_token) break;
      pageToken = r.next_page_token;
    }
    return out;
  }

  /**
   * Publishes IMAGING_STUDY_VIEWED: this viewer opened the study.
   * @param {string} patientId
   * @param {string} studyUid Study Instance UID
   * @param {string|{id?: string, name?: string}} viewer
   * @param {{accession?: string, clientEventId?: string}} [extra]
   * @returns {Promise<object>} the recorded event
   */
  publishViewed(patientId, studyUid, viewer, extra = {}) {
    const v = typeof viewer === "string" ? { name: viewer } : viewer || {};
    const body = { type: "IMAGING_STUDY_VIEWED", patient_id: patientId, study_instance_uid: studyUid };
    if (v.id) body.viewer_id = v.id;
    if (v.name) body.viewer_name = v.name;
    if (extra.accession) body.accession_number = extra.accession;
    body.client_event_id = extra.clientEventId || randomId();
    return this.request("POST", "/v1/events", body);
  }

  /**
   * A study's preview as an object URL (URL.createObjectURL of the image,
   * fetched with the Authorization header, which an <img src> could not
   * send), or null when there is none yet or it may not be seen. The
   * caller revokes it (URL.revokeObjectURL) when it is no longer shown.
   * @param {string} studyUid Study Instance UID
   * @returns {Promise<string|null>}
   */
  async thumbnailURL(studyUid) {
    const headers = {};
    const token = await this.currentToken();
    if (token) headers.Authorization = "Bearer " + token;
    const resp = await this.fetch(new URL("/v1/studies/" + encodeURIComponent(studyUid) + "/thumbnail", this.url), {
      headers,
      credentials: "omit",
      cache: "no-store",
    });
    if (!resp.ok) return null;
    return URL.createObjectURL(await resp.blob());
  }

  /**
   * Follows one patient: snapshot, then live updates. Returns a function
   * that ends the subscription.
   */
  subscribeToPatient(patientId, handlers = {}) {
    const sub = new PatientSubscription(this, patientId, handlers);
    sub.start();
    return () => sub.stop();
  }

  socketURL() {
    const u = new URL("/ws", this.url);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    u.search = "";
    u.hash = "";
    return u.toString();
  }
}

class PatientSubscription {
  constructor(client, patientId, handlers) {
    this.client = client;
    this.patientId = patientId;
    this.handlers = handlers;
    this.subscriptionId = "s" + ++subscriptionCounter + "-" + randomId().slice(0, 8);
    this.lastSequence = 0;
    this.snapshotLoaded = false;
    this.stopped = false;
    this.attempt = 0;
    this.ws = null;
    this.timers = {};
    this.state = "";
    this.onOnline = () => {
      if (!this.stopped && this.state === "reconnecting") this.reconnectNow();
    };
  }

  emit(name, ...args) {
    const fn = this.handlers[name];
    if (!fn) return;
    try {
      fn(...args);
    } catch (err) {
      console.error("radbridge: " + name + " handler", err);
    }
  }

  setStatus(state, detail) {
    if (this.state === state && detail === undefined) return;
    this.state = state;
    this.emit("onStatus", state, detail);
  }

  start() {
    globalThis.addEventListener?.("online", this.onOnline);
    this.run();
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    globalThis.removeEventListener?.("online", this.onOnline);
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      if (ws.readyState === 1) {
        try {
          ws.send(JSON.stringify({ type: "unsubscribe", data: { subscription_id: this.subscriptionId } }));
        } catch {
          /* closing anyway */
        }
      }
      ws.close(1000, "unsubscribed");
    }
    this.setStatus("closed");
  }

  clearTimers() {
    for (const k of Object.keys(this.timers)) {
      clearTimeout(this.timers[k]);
      clearInterval(this.timers[k]);
    }
    this.timers = {};
  }

  async run() {
    if (this.stopped) return;
    if (!this.snapshotLoaded) {
      this.setStatus("loading");
      try {
        const snap = await this.client.snapshot(this.patientId);
        if (this.stopped) return;
        this.lastSequence = snap.as_of_sequence;
        this.snapshotLoaded = true;
        this.emit("onSnapshot", snap);
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof RadbridgeError && (err.status === 401 || err.status === 403)) {
          this.setStatus("unauthorized", err.message);
          return;
        }
        this.scheduleReconnect(err.message || String(err));
        return;
      }
    }
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    this.setStatus(this.attempt === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new this.client.WebSocket(this.client.socketURL());
    } catch (err) {
      this.scheduleReconnect(err.message || String(err));
      return;
    }
    this.ws = ws;
    this.lastReceived = Date.now();
    this.lastSent = Date.now();
    this.watchIdle();
    ws.onmessage = (e) => {
      if (ws !== this.ws) return;
      this.lastReceived = Date.now();
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return; // not ours
      }
      this.handle(ws, msg);
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.clearTimers();
      if (!this.stopped && this.state !== "unauthorized") this.scheduleReconnect(e.reason || "connection closed (" + e.code + ")");
    };
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  send(ws, msg) {
    if (ws.readyState !== 1) return;
    this.lastSent = Date.now();
    ws.send(JSON.stringify(msg));
  }

  async handle(ws, msg) {
    switch (msg.type) {
      case "welcome": {
        let token = null;
        try {
          token = await this.client.currentToken();
        } catch (err) {
          this.setStatus("unauthorized", "token: " + (err.message || err));
          ws.close(1000, "no token");
          return;
        }
        if (ws !== this.ws) return;
        if (token) this.send(ws, { type: "auth", data: { token } });
        this.send(ws, {
          type: "subscribe",
          data: {
            subscription_id: this.subscriptionId,
            patient_ids: [this.patientId],
            resource_types: RESOURCE_TYPES,
            since: this.lastSequence,
          },
        });
        break;
      }
      case "subscription":
        if (msg.data && msg.data.subscription_id && msg.data.subscription_id !== this.subscriptionId) break;
        this.attempt = 0;
        this.setStatus("live", { since: this.lastSequence });
        this.startHeartbeat(ws);
        break;
      case "update": {
        const d = msg.data || {};
        if (d.subscription_id && d.subscription_id !== this.subscriptionId) break;
        if (d.patient_id && d.patient_id !== this.patientId) break;
        const seq = Number(d.sequence || 0);
        if (seq > 0) {
          if (seq <= this.lastSequence) break; // already seen (snapshot or before a reconnect)
          this.lastSequence = seq;
        }
        d.sequence = seq;
        if (!d.timestamp && msg.timestamp) d.timestamp = msg.timestamp;
        this.emit("onEvent", d);
        break;
      }
      case "ping":
        this.send(ws, { type: "pong" });
        break;
      case "pong":
        break;
      case "error": {
        const code = msg.error || (msg.data && msg.data.code) || "ERROR";
        if (AUTH_ERRORS.has(code)) {
          if (code === "TOKEN_EXPIRED" && typeof this.client.token === "function") {
            ws.close(1000, code); // reconnect with a fresh token
            return;
          }
          this.setStatus("unauthorized", code);
          ws.close(1000, code);
          return;
        }
        // Anything else (too slow, server going away …): start over from
        // the last sequence seen.
        ws.close(1000, code);
        break;
      }
    }
  }

  startHeartbeat(ws) {
    clearInterval(this.timers.heartbeat);
    this.timers.heartbeat = setInterval(() => {
      if (ws === this.ws && Date.now() - this.lastSent >= this.client.heartbeatMs - 50) this.send(ws, { type: "ping" });
    }, Math.max(250, Math.floor(this.client.heartbeatMs / 4)));
  }

  watchIdle() {
    clearInterval(this.timers.idle);
    this.timers.idle = setInterval(() => {
      if (!this.ws || Date.now() - this.lastReceived < this.client.idleTimeoutMs) return;
      const ws = this.ws;
      this.ws = null;
      this.clearTimers();
      ws.onclose = null;
      ws.close(4000, "idle");
      this.scheduleReconnect("no message for " + Math.round(this.client.idleTimeoutMs / 1000) + "s");
    }, Math.max(250, Math.floor(this.client.idleTimeoutMs / 9)));
  }

  scheduleReconnect(reason) {
    if (this.stopped) return;
    this.clearTimers();
    const cap = Math.min(this.client.backoffMaxMs, this.client.backoffMinMs * 2 ** Math.min(this.attempt, 16));
    const delay = Math.round(cap / 2 + Math.random() * (cap / 2)); // exponential, jittered
    this.attempt++;
    this.setStatus("reconnecting", { reason, delayMs: delay, attempt: this.attempt });
    this.timers.reconnect = setTimeout(() => this.run(), delay);
  }

  reconnectNow() {
    this.clearTimers();
    this.run();
  }
}

function randomId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
